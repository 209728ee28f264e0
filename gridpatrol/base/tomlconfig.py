"""Reading TOML configuration: the rules agent and central share.

Unknown keys are rejected, types are exact (a boolean is never a number, an
integer is accepted where a number is asked for), and every problem becomes
one line naming the source and the key path (``agent.toml: zone[1].pin: ...``).
A leaf module: agent and central both use it and never import each other.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

Fail = Callable[[str, str], ValueError]
Check = Callable[[Any], "str | None"]

_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}


def read_bytes(path: str | Path, error: type[ValueError]) -> bytes:
    """The file's bytes, or ``error`` naming the file and what went wrong."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None


def parse_toml(data: bytes | str, *, source: str, error: type[ValueError]) -> tuple[dict[str, Any], Fail]:
    """Decode TOML text; return the document and a ``fail(key, problem)`` that builds ``error``."""
    if isinstance(data, str):
        data = data.encode()

    def fail(key: str, problem: str) -> ValueError:
        return error(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")

    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:  # TOMLDecodeError, and int()'s own limit: an integer of more than 4300 digits
        raise error(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise error(f"{source}: not valid TOML: nested too deeply") from None
    return raw, fail


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Table:
    """A TOML table being read: tracks which keys were used, names the path."""

    def __init__(self, raw: Any, path: str, fail: Fail) -> None:
        if not isinstance(raw, dict):
            raise fail(path, f"must be a table, not {type(raw).__name__}")
        self.raw = raw
        self.path = path
        self.fail = fail
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, check: Check | None = None) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is ...:
                raise self.fail(self.key(key), "missing key")
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(self.key(key), f"must be {kind_name(kinds)}, not a boolean")
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
            # TOML integers are 64-bit; tomllib reads any size, which no float
            # conversion or message formatting downstream should have to meet.
            raise self.fail(self.key(key), "is out of range (TOML integers are 64-bit)")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(self.key(key), f"must be {kind_name(kinds)}, not {type(value).__name__}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(self.key(key), problem)
        return value

    def table(self, key: str) -> Table:
        """A sub-table (``[mqtt]``); an absent one reads as empty."""
        return Table(self.get(key, dict, {}), self.key(key), self.fail)

    def items(self, key: str) -> list[Table]:
        """An array of tables (``[[zone]]``), each named ``key[i]``."""
        return [Table(item, f"{key}[{i}]", self.fail) for i, item in enumerate(self.get(key, list, []))]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise self.fail(self.key(unknown[0]), "unknown key")


def kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


# -- checks: each returns None when the value is fine, else the problem --------


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, not {value}"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must not be negative, not {value}"


def not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def port(value: int) -> str | None:
    return None if 0 < value < 65536 else f"port {value} is out of range (1 to 65535)"


def in_range(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"{value} is out of range ({low} to {high})"

    return check


def one_of(options: tuple[str, ...]) -> Check:
    def check(value: str) -> str | None:
        return None if value in options else f"{value!r} is not one of {', '.join(options)}"

    return check


def opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)
