"""Logging what a sender controls: escaped, clipped and rate-limited.

A payload's text reaches our logs through error messages and names (a txn, a
command's source). Written raw, a newline in it forges a log line of its own;
a flood of bad messages writes a line each. :func:`shown` escapes and clips a
value (``repr``: no raw control character survives), and :class:`LogLimiter`
lets a few lines per kind through per period and says how many it held back.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable

SHOWN_MAX_CHARS = 120
LINES_PER_PERIOD = 5
PERIOD_S = 60.0
# Kinds of line a limiter tracks: the kinds are ours (fixed strings), but a
# limiter must not grow without bound whatever its callers do.
KINDS_MAX = 64


def shown(value: Any, limit: int = SHOWN_MAX_CHARS) -> str:
    """``value`` as a log may show it: ``repr`` (quotes, ``\\n`` escaped), clipped to ``limit`` characters."""
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}...({len(text) - limit} more)"
    return text


def escaped(text: str, limit: int = 4 * SHOWN_MAX_CHARS) -> str:
    """A message built from what a sender controls (an exception's text): control characters escaped, clipped."""
    out = text.encode("unicode_escape", "backslashreplace").decode("ascii") if not text.isprintable() else text
    if len(out) > limit:
        return f"{out[:limit]}...({len(out) - limit} more)"
    return out


class LogLimiter:
    """At most ``lines`` log lines per kind in each ``period_s``; the next one let through says how many were held."""

    def __init__(self, logger: logging.Logger, *, lines: int = LINES_PER_PERIOD, period_s: float = PERIOD_S,
                 clock: Callable[[], float] = time.monotonic, counters: dict[str, int] | None = None,
                 counter: str = "log_lines_held", kinds_max: int = KINDS_MAX) -> None:
        self.logger = logger
        self._counters = counters
        self._counter = counter
        self.lines = lines
        self.period_s = period_s
        self._clock = clock
        self._kinds_max = kinds_max
        self._windows: dict[Hashable, list[float | int]] = {}  # kind -> [window start, lines in it, held back]
        self.held = 0  # lines held back in all, for a counter

    def log(self, level: int, kind: Hashable, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless ``kind`` has had its lines this period; True when it was written.

        A kind is any hashable: a fixed string, or (what, agent) where one
        agent's flood must not silence another's lines.
        """
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window[0] >= self.period_s:
            held = int(window[2]) if window is not None else 0
            if window is None and len(self._windows) >= self._kinds_max:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[kind] = [now, 0, 0]
            if held:
                msg = f"{msg} ({held} more like it held back in the last {self.period_s:g} s)"
        if window[1] >= self.lines:
            window[2] += 1
            self.held += 1
            if self._counters is not None:
                self._counters[self._counter] = self._counters.get(self._counter, 0) + 1
            return False
        window[1] += 1
        self.logger.log(level, msg, *args)
        return True

    def warning(self, kind: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def info(self, kind: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, kind, msg, *args)
