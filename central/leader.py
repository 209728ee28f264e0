"""One leader per group of centrals, elected through the store.

Work that must happen once however many centrals share the agents (escalation
timers, offline alarms, telling agents of acknowledgements, the completion
publication, Home Assistant, central's own status) is done by the leader. The
leader is whoever holds a PostgreSQL session-level advisory lock named after
the group, on a connection of its own. A leader that dies, or loses its
connection to the database, loses the lock with its session: the server frees
it as soon as it notices the connection is gone (at once for a killed process,
whose kernel closes the socket), and another member takes it at its next try,
every TRY_EVERY_S.

A leader checks every TRY_EVERY_S that its connection still answers; if it
does not, it steps down before anything else can take over, so two members
never both believe they lead for longer than that.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable

from central.store import Store, StoreError

_LOGGER = logging.getLogger(__name__)

TRY_EVERY_S = 1.0


def lock_key(group: str) -> int:
    """The advisory lock's key: a stable signed 64-bit number from the group's name."""
    digest = hashlib.blake2b(f"gridpatrol-leader:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    """Tries to lead ``group``; calls ``on_gain`` / ``on_loss`` on its own thread as that changes."""

    def __init__(self, store: Store, group: str, *, on_gain: Callable[[], None], on_loss: Callable[[], None],
                 try_every_s: float = TRY_EVERY_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._key = lock_key(group)
        self.group = group
        self._on_gain = on_gain
        self._on_loss = on_loss
        self._every_s = try_every_s
        self._monotonic = monotonic
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat = monotonic()
        self.gained = 0  # times this member became the leader

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def alive(self, stall_s: float) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._monotonic() - self.last_beat < stall_s

    def _run(self) -> None:
        conn = None
        failures: tuple[type[BaseException], ...] = (StoreError, *self._store.errors)
        try:
            while not self._stop.is_set():
                self.last_beat = self._monotonic()
                try:
                    if conn is None:
                        conn = self._store.connect()
                    if self.leading:
                        conn.execute("SELECT 1").fetchone()  # still connected, so still holding the lock
                    elif conn.execute("SELECT pg_try_advisory_lock(?)", (self._key,)).fetchone()[0]:
                        self._gain()
                except failures as exc:
                    _LOGGER.warning("leadership of group %s: the store does not answer (%s)", self.group, exc)
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # already broken
                            pass
                        conn = None
                    self._lose()
                self._stop.wait(self._every_s)
        finally:
            self._lose()
            if conn is not None:
                conn.close()  # ends the session, and with it the lock

    def _gain(self) -> None:
        _LOGGER.warning("this central leads group %s now", self.group)
        self._leading.set()
        self.gained += 1
        try:
            self._on_gain()
        except Exception:
            _LOGGER.exception("taking over the leader's duties failed")

    def _lose(self) -> None:
        if not self.leading:
            return
        self._leading.clear()
        _LOGGER.warning("this central no longer leads group %s", self.group)
        try:
            self._on_loss()
        except Exception:
            _LOGGER.exception("handing over the leader's duties failed")
