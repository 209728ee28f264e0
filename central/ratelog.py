"""Log lines whose words a sender controls: escaped, and at most one per key this often.

An agent (or anyone who can publish on its topics) decides what a conflicting
duplicate, a refused command or a forged message says, and how often. Each
such line is cut to a bounded length with every control character escaped
(no newline from a payload starts a fake log line), and a flood of them
becomes one line per key per ``every_s`` that says how many were held back;
the counters keep the full tally.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable

EVERY_S = 10.0
KEYS_MAX = 4096  # keys remembered; past this the memory is cleared (a forger may invent any number)
ARG_MAX_CHARS = 300


def escape(value: Any, limit: int = ARG_MAX_CHARS) -> Any:
    """``value`` safe for one log line: numbers as they are, anything else printable and cut to ``limit``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"...[{len(text) - limit} more]"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, every_s: float = EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every_s = every_s
        self._monotonic = monotonic
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def warning(self, key: Hashable, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, key, msg, args)

    def info(self, key: Hashable, msg: str, *args: Any) -> None:
        self._log(logging.INFO, key, msg, args)

    def _log(self, level: int, key: Hashable, msg: str, args: tuple[Any, ...]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = self._monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._last) >= KEYS_MAX:
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        suffix = f" (and {held} more like it in the last {self._every_s:g} s)" if held else ""
        self._logger.log(level, msg + suffix, *(escape(a) for a in args))
