"""Derived work off the ingest thread: a listener behind a bounded queue and a thread of its own.

Ingest tells its listeners after each commit, on its own thread; anything a
listener does there delays the next batch, and with it the next alarm. A
:class:`Relay` takes the notice, queues it and returns: the completion
tracker, Home Assistant and the dashboard's event feed each run behind one.
Alarms never wait here: they are written in ingest's transaction and
announced by the alarm book itself.

The queue is bounded. Past the bound a notice is dropped and counted, and the
listener's ``resync()`` (where it has one) is called once the queue has room
again, so it rebuilds what it keeps from the store instead of missing events.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Sequence

_LOGGER = logging.getLogger(__name__)

PENDING_MAX = 2000  # notices waiting; a batch of events is one notice


class Relay:
    def __init__(self, listener: Any, *, name: str, pending_max: int = PENDING_MAX) -> None:
        self.listener = listener
        self.name = name
        self._pending_max = pending_max
        self._items: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._cond = threading.Condition()
        self._resync = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failures = 0

    # -- what ingest calls (its thread: queue and return) ----------------------------

    def events_stored(self, events: Sequence[Any]) -> None:
        self._put("events_stored", (events,))

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        self._put("presence_changed", (agent, state, ts))

    @property
    def depth(self) -> int:
        return len(self._items)

    def _put(self, method: str, args: tuple[Any, ...]) -> None:
        if not hasattr(self.listener, method):
            return
        with self._cond:
            if len(self._items) >= self._pending_max:
                self.dropped += 1
                self._resync = True
                return
            self._items.append((method, args))
            self._cond.notify()

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOGGER.error("relay %s did not finish within %s s", self.name, timeout)
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping and not self._resync:
                    self._cond.wait()
                if not self._items and self._stopping:
                    return
                item = self._items.popleft() if self._items else None
                resync = self._resync and not self._items
                if resync:
                    self._resync = False
            if item is not None:
                self._call(*item)
            if resync:
                _LOGGER.warning("relay %s: %s notices dropped over the bound so far; %s reads the store again",
                                self.name, self.dropped, self.name)
                if hasattr(self.listener, "resync"):
                    self._call("resync", ())

    def _call(self, method: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(self.listener, method)(*args)
        except Exception:
            self.failures += 1
            _LOGGER.exception("%s failed in %s", self.name, method)
