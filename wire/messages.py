"""Typed, immutable messages of protocol version 1 and their payload forms.

Each class has ``to_payload()`` (bytes for MQTT) and ``from_payload(bytes)``
(strict: raises :class:`~wire.errors.DecodeError` with the key at fault).
Unknown extra keys are ignored so that the protocol can grow.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Callable, Mapping

from wire.codec import pack, unpack
from wire.errors import DecodeError

NAME_MAX_LEN = 64
_TAG_RE = re.compile(r"^[0-9A-F]{2,32}\Z")  # \Z: "$" would also match before a final newline
_MAX_DETAIL_LEN = 512
_INT64_MAX = 2**63 - 1
# An outbox's epoch: a short token, "" for agents older than epochs.
EPOCH_MAX_LEN = 64
_EPOCH_RE = re.compile(r"^[A-Za-z0-9_-]{0,64}\Z")
# A replay answer's ``gone``: at most this many [from, to] ranges, the lowest
# first; central asks again from past the last one for more.
GONE_MAX_RANGES = 256


class EventKind(StrEnum):
    ALARM = "alarm"
    RESTORE = "restore"
    TAMPER = "tamper"
    PANIC = "panic"
    SCAN = "scan"
    FAULT = "fault"
    OUTPUT = "output"


class ScanFormat(StrEnum):
    """A scan's ``fmt``: what its ``tag`` is. Optional on the wire (older agents omit it)."""

    EM4100 = "em4100"
    ISO14443A = "iso14443a"
    WIEGAND26 = "wiegand26"
    WIEGAND34 = "wiegand34"


# Kinds the outbox never drops, even when full, and that go out ahead of backlog.
CRITICAL_KINDS = frozenset({EventKind.ALARM, EventKind.PANIC, EventKind.TAMPER, EventKind.SCAN})
# Kinds that raise an alarm at central.
ALARM_KINDS = frozenset({EventKind.ALARM, EventKind.TAMPER, EventKind.PANIC})


class AgentState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the MQTT Will: the connection died
    DISCONNECTED = "disconnected"  # a clean, deliberate shutdown


class CommandName(StrEnum):
    REBIRTH = "rebirth"
    REPLAY = "replay"
    OUTPUT = "output"
    ALARM_ACK = "alarm-ack"
    PING = "ping"
    FEEDBACK = "feedback"  # central's verdict on a scan, shown at the reader (docs/readers.md)


# -- field readers: each names the key and the expected form -----------------


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise DecodeError(f"{what}: missing key {key!r}") from None


def _int(d: Mapping[str, Any], key: str, what: str, *, minimum: int = 0) -> int:
    value = _get(d, key, what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}: {key!r} must be an integer, not {type(value).__name__}")
    if not minimum <= value <= _INT64_MAX:
        raise DecodeError(f"{what}: {key!r} = {value} is out of range")
    return value


def _signed_int(d: Mapping[str, Any], key: str, what: str) -> int:
    value = _get(d, key, what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}: {key!r} must be an integer, not {type(value).__name__}")
    if not -_INT64_MAX <= value <= _INT64_MAX:
        raise DecodeError(f"{what}: {key!r} = {value} is out of range")
    return value


def _bool(d: Mapping[str, Any], key: str, what: str) -> bool:
    value = _get(d, key, what)
    if not isinstance(value, bool):
        raise DecodeError(f"{what}: {key!r} must be a boolean, not {type(value).__name__}")
    return value


def _str(d: Mapping[str, Any], key: str, what: str, *, max_len: int = NAME_MAX_LEN, empty: bool = False) -> str:
    value = _get(d, key, what)
    if not isinstance(value, str):
        raise DecodeError(f"{what}: {key!r} must be a string, not {type(value).__name__}")
    if len(value) > max_len:
        raise DecodeError(f"{what}: {key!r} is longer than {max_len} characters")
    if not value and not empty:
        raise DecodeError(f"{what}: {key!r} must not be empty")
    return value


def _epoch(d: Mapping[str, Any], what: str) -> str:
    """The optional ``epoch``: absent means ``""``, the epoch of agents older than epochs."""
    if "epoch" not in d:
        return ""
    value = _str(d, "epoch", what, max_len=EPOCH_MAX_LEN, empty=True)
    if not _EPOCH_RE.match(value):
        raise DecodeError(f"{what}: 'epoch' must be letters, digits, '_' or '-', not {value!r}")
    return value


def _ranges(d: Mapping[str, Any], key: str, what: str, *, last: int | None) -> tuple[tuple[int, int], ...]:
    """A list of ``[from, to]`` eseq ranges: ascending, apart, within 1..2**63-1 (and ``last``, if given)."""
    value = _get(d, key, what)
    if not isinstance(value, list):
        raise DecodeError(f"{what}: {key!r} must be a list of [from, to] ranges, not {type(value).__name__}")
    if len(value) > GONE_MAX_RANGES:
        raise DecodeError(f"{what}: {key!r} has {len(value)} ranges, more than {GONE_MAX_RANGES}")
    ranges: list[tuple[int, int]] = []
    top = _INT64_MAX if last is None else last
    for item in value:
        if (not isinstance(item, list) or len(item) != 2
                or any(isinstance(n, bool) or not isinstance(n, int) for n in item)):
            shown = repr(item) if len(repr(item)) <= 48 else repr(item)[:48] + "..."  # a payload holds 64 KB of it
            raise DecodeError(f"{what}: {key!r} items must be [from, to] pairs of integers, not {shown}")
        low, high = item
        if not 1 <= low <= high <= top:
            raise DecodeError(f"{what}: {key!r} range {item!r} is not within 1..{top} with from <= to")
        if ranges and low <= ranges[-1][1] + 1:
            raise DecodeError(f"{what}: {key!r} ranges must be ascending and apart, not {ranges[-1][1]} then {low}")
        ranges.append((low, high))
    return tuple(ranges)


def _number(d: Mapping[str, Any], key: str, what: str) -> float:
    value = _get(d, key, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{what}: {key!r} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int past any float
        raise DecodeError(f"{what}: {key!r} = {value} is out of range") from None
    if not math.isfinite(number):  # JSON has no NaN nor infinity: every page and API answer showing it would fail
        raise DecodeError(f"{what}: {key!r} must be a finite number, not {value}")
    return number


def _free_scalar(value: Any) -> bool:
    """A value an event may carry in a key of its own: a small scalar JSON can write (no NaN, no infinity)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (bool, int)) or (isinstance(value, str) and len(value) <= NAME_MAX_LEN)


# -- events -------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Event:
    """One event of an agent, numbered by its gap-free, never reused ``eseq``.

    ``ts`` is UTC milliseconds by the agent's clock when it happened,
    ``mono_ms`` the agent's monotonic clock at that moment, and
    ``clock_synced`` says whether ``ts`` can be trusted. ``fields`` holds the
    kind's own keys: ``tag`` (and ``fmt``, a :class:`ScanFormat`, when sent) for a scan, ``code`` and ``detail`` for a fault,
    ``output`` and ``on`` for an output; others are free but small.
    """

    eseq: int
    boot_id: str
    kind: EventKind
    source: str
    ts: int
    mono_ms: int
    clock_synced: bool
    replayed: bool = False
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    epoch: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.fields, MappingProxyType):
            object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def to_map(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.fields)
        body.update(
            eseq=self.eseq,
            boot_id=self.boot_id,
            kind=str(self.kind),
            source=self.source,
            ts=self.ts,
            mono_ms=self.mono_ms,
            clock_synced=self.clock_synced,
            replayed=self.replayed,
            epoch=self.epoch,
        )
        return body

    def to_payload(self) -> bytes:
        return pack(self.to_map())

    def content(self) -> dict[str, Any]:
        """The map without ``replayed``: what a legitimate resend keeps identical."""
        body = self.to_map()
        del body["replayed"]
        return body

    @classmethod
    def from_payload(cls, payload: bytes) -> Event:
        return cls.from_map(unpack(payload))

    @classmethod
    def from_map(cls, d: Mapping[str, Any]) -> Event:
        # Central decodes thousands a second: a well-formed map takes the
        # fast path; anything it does not accept goes the checked way, which
        # says what is wrong (the fast path accepts nothing the checked one
        # would refuse, and builds the same event).
        event = _event_fast(d)
        return event if event is not None else cls._from_map_checked(d)

    @classmethod
    def _from_map_checked(cls, d: Mapping[str, Any]) -> Event:
        what = "event"
        kind_name = _str(d, "kind", what)
        try:
            kind = EventKind(kind_name)
        except ValueError:
            raise DecodeError(f"event: unknown kind {kind_name!r}") from None
        fields = _kind_fields(kind, d)
        return cls(
            eseq=_int(d, "eseq", what, minimum=1),
            boot_id=_str(d, "boot_id", what),
            kind=kind,
            source=_str(d, "source", what),
            ts=_signed_int(d, "ts", what),
            mono_ms=_int(d, "mono_ms", what),
            clock_synced=_bool(d, "clock_synced", what),
            replayed=_bool(d, "replayed", what),
            fields=fields,
            epoch=_epoch(d, what),
        )


# The envelope's keys; "epoch" is optional (older agents), so it is counted apart.
_EVENT_KEYS = frozenset({"eseq", "boot_id", "kind", "source", "ts", "mono_ms", "clock_synced", "replayed", "epoch"})


def _kind_fields(kind: EventKind, d: Mapping[str, Any]) -> dict[str, Any]:
    what = f"{kind} event"
    fields: dict[str, Any] = {}
    if kind is EventKind.SCAN:
        tag = _str(d, "tag", what, max_len=32)
        if not _TAG_RE.match(tag):
            raise DecodeError(f"{what}: 'tag' must be upper-case hex, not {tag!r}")
        fields["tag"] = tag
    elif kind is EventKind.FAULT:
        fields["code"] = _str(d, "code", what)
        fields["detail"] = _str(d, "detail", what, max_len=_MAX_DETAIL_LEN, empty=True)
    elif kind is EventKind.OUTPUT:
        fields["output"] = _str(d, "output", what)
        fields["on"] = _bool(d, "on", what)
    _add_free_keys(d, fields)
    return fields


def _add_free_keys(d: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """Other small scalar keys travel along (a tamper's 'state', say); nested or
    large values, and floats JSON cannot write (NaN, infinity), are not the
    protocol's and are ignored: the event itself, an alarm say, is kept."""
    for key, value in d.items():
        if key not in _EVENT_KEYS and key not in fields and _free_scalar(value):
            fields[key] = value


def slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of ``names``, slots of the frozen dataclass ``cls``, for building one without its __init__.

    Only for hot paths: a frozen dataclass's __init__ goes through
    object.__setattr__ per field and __post_init__ copies mappings, which
    costs more than all the checks of an event together. The caller owns
    what __post_init__ would have checked or copied.
    """
    return tuple(cls.__dict__[name].__set__ for name in names)


_KIND_BY_NAME: dict[str, EventKind] = {str(k): k for k in EventKind}
_BASE_KEY_COUNT = len(_EVENT_KEYS) - 1  # without "epoch"
_NO_EPOCH = object()
_new = object.__new__
(_set_eseq, _set_boot_id, _set_kind, _set_source, _set_ts, _set_mono_ms, _set_clock_synced, _set_replayed,
 _set_fields, _set_epoch) = slot_setters(Event, "eseq", "boot_id", "kind", "source", "ts", "mono_ms", "clock_synced",
                                         "replayed", "fields", "epoch")


def _event_fast(d: Mapping[str, Any]) -> Event | None:
    """The event of a well-formed map, or None when any check of Event.from_map might fail.

    Exactly the checks of the field readers above, written inline; msgpack
    gives exact ``str``, ``int`` and ``bool``, so anything else (or any
    doubt) returns None and the caller takes the checked path.
    """
    get = d.get
    name = get("kind")
    if type(name) is not str:
        return None
    kind = _KIND_BY_NAME.get(name)
    eseq = get("eseq")
    boot_id = get("boot_id")
    source = get("source")
    ts = get("ts")
    mono_ms = get("mono_ms")
    clock_synced = get("clock_synced")
    replayed = get("replayed")
    epoch = get("epoch", _NO_EPOCH)
    if epoch is _NO_EPOCH:
        epoch = ""
        base_keys = _BASE_KEY_COUNT
    elif type(epoch) is str and len(epoch) <= EPOCH_MAX_LEN and _EPOCH_RE.match(epoch):
        base_keys = _BASE_KEY_COUNT + 1
    else:
        return None
    if (
        kind is None
        or type(eseq) is not int or not 1 <= eseq <= _INT64_MAX
        or type(boot_id) is not str or not 0 < len(boot_id) <= NAME_MAX_LEN
        or type(source) is not str or not 0 < len(source) <= NAME_MAX_LEN
        or type(ts) is not int or not -_INT64_MAX <= ts <= _INT64_MAX
        or type(mono_ms) is not int or not 0 <= mono_ms <= _INT64_MAX
        or (clock_synced is not True and clock_synced is not False)
        or (replayed is not True and replayed is not False)
    ):
        return None
    fields: dict[str, Any]
    if kind is EventKind.SCAN:
        tag = get("tag")
        if type(tag) is not str or not 0 < len(tag) <= 32 or not _TAG_RE.match(tag):
            return None
        fields = {"tag": tag}
    elif kind is EventKind.FAULT:
        code = get("code")
        detail = get("detail")
        if (type(code) is not str or not 0 < len(code) <= NAME_MAX_LEN
                or type(detail) is not str or len(detail) > _MAX_DETAIL_LEN):
            return None
        fields = {"code": code, "detail": detail}
    elif kind is EventKind.OUTPUT:
        output = get("output")
        on = get("on")
        if type(output) is not str or not 0 < len(output) <= NAME_MAX_LEN or (on is not True and on is not False):
            return None
        fields = {"output": output, "on": on}
    else:
        fields = {}
    if len(d) != base_keys + len(fields):
        _add_free_keys(d, fields)  # all the base and kind keys are present, so there are extra ones
    event = _new(Event)
    _set_eseq(event, eseq)
    _set_boot_id(event, boot_id)
    _set_kind(event, kind)
    _set_source(event, source)
    _set_ts(event, ts)
    _set_mono_ms(event, mono_ms)
    _set_clock_synced(event, clock_synced)
    _set_replayed(event, replayed)
    _set_fields(event, MappingProxyType(fields))
    _set_epoch(event, epoch)
    return event


# -- birth, state, telemetry --------------------------------------------------

INVENTORY_KINDS = ("zones", "buttons", "readers", "outputs")
# Containers inside an inventory item (an agent's configs as maps): a few
# levels at most. msgpack nests ~1000 deep in a few KB, and central writes
# births as JSON, which recursion that deep makes fail.
_ITEM_DEPTH_MAX = 16


def _shallow(value: Any, depth: int = _ITEM_DEPTH_MAX) -> bool:
    """``value`` holds no container more than ``depth`` levels down (checked without recursion)."""
    level: list[Any] = [value]
    for _ in range(depth + 1):
        deeper: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                deeper.extend(v.values())
            elif isinstance(v, (list, tuple)):
                deeper.extend(v)
        if not deeper:
            return True
        level = deeper
    return False


@dataclass(slots=True, frozen=True)
class Birth:
    """Sent on every connect: who the agent is and what it has."""

    bdseq: int
    boot_id: str
    fw: str
    inventory: Mapping[str, tuple[Mapping[str, Any], ...]]
    config_hash: str = ""
    versions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    mono_ms: int = 0
    ts: int = 0
    clock_synced: bool = False
    epoch: str = ""

    def names(self, kind: str) -> tuple[str, ...]:
        return tuple(item["name"] for item in self.inventory.get(kind, ()))

    def to_payload(self) -> bytes:
        return pack(
            {
                "bdseq": self.bdseq,
                "boot_id": self.boot_id,
                "fw": self.fw,
                "inventory": {k: [dict(i) for i in v] for k, v in self.inventory.items()},
                "config_hash": self.config_hash,
                "versions": dict(self.versions),
                "mono_ms": self.mono_ms,
                "ts": self.ts,
                "clock_synced": self.clock_synced,
                "epoch": self.epoch,
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Birth:
        d = unpack(payload)
        what = "birth"
        raw_inv = _get(d, "inventory", what)
        if not isinstance(raw_inv, dict):
            raise DecodeError("birth: 'inventory' must be a map")
        inventory: dict[str, tuple[Mapping[str, Any], ...]] = {}
        for kind in INVENTORY_KINDS:
            items = raw_inv.get(kind, [])
            if not isinstance(items, list):
                raise DecodeError(f"birth: inventory {kind!r} must be a list")
            checked = []
            for item in items:
                if not isinstance(item, dict):
                    raise DecodeError(f"birth: inventory {kind!r} items must be maps")
                _str(item, "name", f"birth inventory {kind!r} item")
                if not _shallow(item):
                    raise DecodeError(f"birth: inventory {kind!r} item nests deeper than {_ITEM_DEPTH_MAX} levels")
                checked.append(MappingProxyType(dict(item)))
            inventory[kind] = tuple(checked)
        versions = d.get("versions", {})
        if not isinstance(versions, dict) or not _shallow(versions):
            raise DecodeError(f"birth: 'versions' must be a map nesting at most {_ITEM_DEPTH_MAX} levels")
        return cls(
            bdseq=_int(d, "bdseq", what),
            boot_id=_str(d, "boot_id", what),
            fw=_str(d, "fw", what),
            inventory=MappingProxyType(inventory),
            config_hash=str(d.get("config_hash", ""))[:NAME_MAX_LEN],
            versions=MappingProxyType({str(k): str(v) for k, v in versions.items()}),
            mono_ms=_int(d, "mono_ms", what) if "mono_ms" in d else 0,
            ts=_signed_int(d, "ts", what) if "ts" in d else 0,
            clock_synced=_bool(d, "clock_synced", what) if "clock_synced" in d else False,
            epoch=_epoch(d, what),
        )


@dataclass(slots=True, frozen=True)
class StateSnapshot:
    """Retained snapshot of every input and output, published on change."""

    ts: int
    inputs: Mapping[str, str]
    outputs: Mapping[str, bool]
    latched: tuple[str, ...] = ()

    def to_payload(self) -> bytes:
        return pack(
            {"ts": self.ts, "inputs": dict(self.inputs), "outputs": dict(self.outputs), "latched": list(self.latched)}
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> StateSnapshot:
        d = unpack(payload)
        inputs = _get(d, "inputs", "state")
        outputs = _get(d, "outputs", "state")
        if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
            raise DecodeError("state: 'inputs' must map names to state strings")
        if not isinstance(outputs, dict) or not all(isinstance(v, bool) for v in outputs.values()):
            raise DecodeError("state: 'outputs' must map names to booleans")
        latched = d.get("latched", [])
        if not isinstance(latched, list) or not all(isinstance(v, str) for v in latched):
            raise DecodeError("state: 'latched' must be a list of names")
        return cls(
            ts=_signed_int(d, "ts", "state"),
            inputs=MappingProxyType(inputs),
            outputs=MappingProxyType(outputs),
            latched=tuple(latched),
        )


@dataclass(slots=True, frozen=True)
class Telemetry:
    """Health, QoS 0, never in the outbox."""

    uptime_s: float
    outbox_depth: int
    reconnects: int
    clock_synced: bool
    ts: int
    mono_ms: int
    cpu_temp_c: float | None = None
    rss_kb: int | None = None
    counters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def to_payload(self) -> bytes:
        body: dict[str, Any] = {
            "uptime_s": self.uptime_s,
            "outbox_depth": self.outbox_depth,
            "reconnects": self.reconnects,
            "clock_synced": self.clock_synced,
            "ts": self.ts,
            "mono_ms": self.mono_ms,
            "counters": dict(self.counters),
        }
        if self.cpu_temp_c is not None:
            body["cpu_temp_c"] = self.cpu_temp_c
        if self.rss_kb is not None:
            body["rss_kb"] = self.rss_kb
        return pack(body)

    @classmethod
    def from_payload(cls, payload: bytes) -> Telemetry:
        d = unpack(payload)
        what = "tele"
        counters = d.get("counters", {})
        if not isinstance(counters, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in counters.values()
        ):
            raise DecodeError("tele: 'counters' must map names to integers")
        temp = _number(d, "cpu_temp_c", what) if d.get("cpu_temp_c") is not None else None
        rss = d.get("rss_kb")
        if rss is not None and (isinstance(rss, bool) or not isinstance(rss, int)):
            raise DecodeError("tele: 'rss_kb' must be an integer")
        return cls(
            uptime_s=_number(d, "uptime_s", what),
            outbox_depth=_int(d, "outbox_depth", what),
            reconnects=_int(d, "reconnects", what),
            clock_synced=_bool(d, "clock_synced", what),
            ts=_signed_int(d, "ts", what),
            mono_ms=_int(d, "mono_ms", what),
            cpu_temp_c=temp,
            rss_kb=rss,
            counters=MappingProxyType(counters),
        )


# -- commands -----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Command:
    """Central to agent: ``{cmd, txn, ...}``."""

    cmd: CommandName
    txn: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_payload(self) -> bytes:
        body = dict(self.args)
        body.update(cmd=str(self.cmd), txn=self.txn)
        return pack(body)

    @classmethod
    def from_payload(cls, payload: bytes) -> Command:
        d = unpack(payload)
        name = _str(d, "cmd", "command")
        try:
            cmd = CommandName(name)
        except ValueError:
            raise DecodeError(f"command: unknown cmd {name!r}") from None
        txn = _str(d, "txn", "command")
        what = f"{cmd} command"
        args: dict[str, Any] = {}
        if cmd is CommandName.REPLAY:
            args["from"] = _int(d, "from", what, minimum=1)
            if "epoch" in d:  # absent: the epoch "" of agents older than epochs (read it with .get("epoch", ""))
                args["epoch"] = _epoch(d, what)
        elif cmd is CommandName.OUTPUT:
            args["output"] = _str(d, "output", what)
            args["on"] = _bool(d, "on", what)
            if "seconds" in d:
                seconds = _number(d, "seconds", what)
                if not 0 <= seconds <= 86_400:
                    raise DecodeError(f"{what}: 'seconds' = {seconds} is out of range")
                args["seconds"] = seconds
        elif cmd is CommandName.ALARM_ACK:
            args["source"] = _str(d, "source", what)
        elif cmd is CommandName.FEEDBACK:
            args["source"] = _str(d, "source", what)
            args["verdict"] = _str(d, "verdict", what)
            if "eseq" in d:
                args["eseq"] = _int(d, "eseq", what, minimum=1)
        return cls(cmd=cmd, txn=txn, args=MappingProxyType(args))


@dataclass(slots=True, frozen=True)
class CommandResponse:
    """Agent to central: ``{txn, ok, error?}``; an answer to ``replay`` also has ``last`` and ``gone``.

    ``last`` is the highest eseq the agent has made in the epoch asked about;
    ``gone`` the ``[from, to]`` ranges of it that the agent no longer holds
    (ascending, apart, at most :data:`GONE_MAX_RANGES`, the lowest first).
    """

    txn: str
    ok: bool
    error: str | None = None
    last: int | None = None
    gone: tuple[tuple[int, int], ...] | None = None

    def to_payload(self) -> bytes:
        body: dict[str, Any] = {"txn": self.txn, "ok": self.ok}
        if self.error is not None:
            body["error"] = self.error
        if self.last is not None:
            body["last"] = self.last
        if self.gone is not None:
            body["gone"] = [[low, high] for low, high in self.gone]
        return pack(body)

    @classmethod
    def from_payload(cls, payload: bytes) -> CommandResponse:
        d = unpack(payload)
        what = "command response"
        error = d.get("error")
        if error is not None and not isinstance(error, str):
            raise DecodeError("command response: 'error' must be a string")
        last = _int(d, "last", what) if "last" in d else None
        gone = _ranges(d, "gone", what, last=last) if "gone" in d else None
        return cls(txn=_str(d, "txn", what), ok=_bool(d, "ok", what), error=error, last=last, gone=gone)


@dataclass(slots=True, frozen=True)
class Ack:
    """Central to agent: the highest eseq central holds with no gap below it, in the agent's ``epoch``."""

    eseq: int
    epoch: str = ""

    def to_payload(self) -> bytes:
        return pack({"eseq": self.eseq, "epoch": self.epoch})

    @classmethod
    def from_payload(cls, payload: bytes) -> Ack:
        d = unpack(payload)
        return cls(eseq=_int(d, "eseq", "ack"), epoch=_epoch(d, "ack"))


# -- JSON status payloads -----------------------------------------------------

_MAX_STATUS_BYTES = 1024


def _json_map(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > _MAX_STATUS_BYTES:
        raise DecodeError(f"{what}: payload of {len(payload)} bytes is too large")
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what}: payload is not JSON: {exc}") from None
    except RecursionError:
        # 1 KB of '[' nests deeper than Python's recursion limit allows json to follow.
        raise DecodeError(f"{what}: payload nests too deeply") from None
    if not isinstance(d, dict):
        raise DecodeError(f"{what}: payload must be a JSON object")
    return d


@dataclass(slots=True, frozen=True)
class AgentStatus:
    """Retained JSON ``{"state", "bdseq", "ts"}``; the offline form is the Will."""

    state: AgentState
    bdseq: int
    ts: int

    def to_payload(self) -> bytes:
        return json.dumps({"state": str(self.state), "bdseq": self.bdseq, "ts": self.ts}).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> AgentStatus:
        d = _json_map(payload, "status")
        name = _str(d, "state", "status")
        try:
            state = AgentState(name)
        except ValueError:
            raise DecodeError(f"status: unknown state {name!r}") from None
        return cls(state=state, bdseq=_int(d, "bdseq", "status"), ts=_signed_int(d, "ts", "status"))


@dataclass(slots=True, frozen=True)
class CentralStatus:
    """Central's retained JSON ``{"online", "ts"}``; its Will says offline."""

    online: bool
    ts: int

    def to_payload(self) -> bytes:
        return json.dumps({"online": self.online, "ts": self.ts}).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> CentralStatus:
        d = _json_map(payload, "central status")
        return cls(online=_bool(d, "online", "central status"), ts=_signed_int(d, "ts", "central status"))
