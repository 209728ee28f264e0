"""A log budget: no flood of one message can fill the disk central writes to.

1,100 idle connections once wrote 584 MB of the same accept error in 40 s.
:class:`LogBudget` lets through at most ``per_window`` records of each
(logger, message template) in ``window_s``; the rest are counted, and the
first record after the window says how many were left out. Installed on the
loggers a browser can make speak: the dashboard's own, uvicorn's and asyncio's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

PER_WINDOW = 10
WINDOW_S = 60.0
MAX_KEYS = 1000  # distinct templates remembered; a flood of distinct ones resets the table
LOGGERS = ("uvicorn", "uvicorn.error", "asyncio")


class LogBudget(logging.Filter):
    def __init__(self, *, per_window: int = PER_WINDOW, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[float]] = {}  # key: [window start, passed, suppressed]
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                if entry is not None and entry[2]:
                    record.msg = f"{record.msg} [{int(entry[2])} more like this left out of the log in the last {int(now - entry[0])} s]"
                if len(self._seen) >= MAX_KEYS:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                return True
            if entry[1] < self.per_window:
                entry[1] += 1
                return True
            entry[2] += 1
            self.suppressed += 1
            return False


def install(budget: LogBudget, names: Iterable[str] = ()) -> Callable[[], None]:
    """Put ``budget`` on those loggers and on every ``central.web`` one; returns the undo."""
    wanted = set(LOGGERS) | set(names)
    wanted |= {n for n in logging.root.manager.loggerDict if n == "central.web" or n.startswith("central.web.")}
    loggers = [logging.getLogger(n) for n in sorted(wanted)]
    for logger in loggers:
        logger.addFilter(budget)

    def undo() -> None:
        for logger in loggers:
            logger.removeFilter(budget)

    return undo
