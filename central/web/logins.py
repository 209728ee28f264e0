"""Who may try a password, and how many argon2 checks run at once.

Both are decided before any hashing, because the hash is what costs: one
argon2id check takes ``memory_cost`` KiB (docs/security.md) and a core.

* :class:`LoginThrottle`: failures are counted per (name, address). After
  ``free_tries`` failures that pair waits ``base_s``, then twice as long
  after each further failure, up to ``max_s``; a success clears it. Nothing
  ever locks a name out from every address: the night shift can still log
  in from its own desk while someone guesses its password from another. An
  address that fails for many names (a spray) is slowed the same way on its
  own count, which again touches nobody else.
* :class:`PasswordGate`: at most ``concurrency`` checks hash at once and at
  most ``queue`` wait; anyone past that is told "busy" (503) at once, so a
  burst costs a fixed amount of memory however large it is.

Concurrent tries count too: a (name, address) pair may have one check under
way and an address ``ADDRESS_IN_FLIGHT``; more at the same moment answer 429
before the gate. So a burst from one address takes at most two places of the
gate and the night shift's desk still finds one free.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

FREE_TRIES = 3  # a typo or two, and a caps-lock, before any wait
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
ADDRESS_FREE_TRIES = 30  # one desk's address may serve a whole shift's typos
FORGET_AFTER_S = 3600.0  # a pair with no failure for an hour starts afresh
MAX_ENTRIES = 10_000  # pairs and addresses remembered; the oldest are forgotten first
ADDRESS_IN_FLIGHT = 2  # checks under way for one address at a time
PASSWORD_CHECKS_AT_ONCE = 2
PASSWORD_CHECKS_WAITING = 32  # a waiting try holds a socket and a coroutine, no hash: at most 32 x 0.13 s / 2 = 2 s of wait here


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class LoginThrottle:
    def __init__(self, *, free_tries: int = FREE_TRIES, address_free_tries: int = ADDRESS_FREE_TRIES,
                 base_s: float = BACKOFF_BASE_S, max_s: float = BACKOFF_MAX_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_tries = free_tries
        self.address_free_tries = address_free_tries
        self.base_s = base_s
        self.max_s = max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._in_flight: dict[tuple[str, str], int] = {}

    @staticmethod
    def _keys(name: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("pair", f"{name[:128]}\x00{address}"), ("address", address)

    def _wait(self, entry: _Failures | None, free: int, now: float) -> float:
        if entry is None or entry.count < free:
            return 0.0
        delay = min(self.max_s, self.base_s * 2 ** min(entry.count - free, 30))
        return max(0.0, entry.last + delay - now)

    def retry_after(self, name: str, address: str) -> float:
        """Seconds before this name may be tried from this address; 0: now."""
        now = self._clock()
        pair, addr = self._keys(name, address)
        with self._lock:
            self._forget(now)
            return max(self._wait(self._entries.get(pair), self.free_tries, now),
                       self._wait(self._entries.get(addr), self.address_free_tries, now))

    def begin(self, name: str, address: str) -> bool:
        """Reserve a check for this try; False when the pair, or the address, already has its share under way.
        Every True must be followed by :meth:`end`."""
        pair, addr = self._keys(name, address)
        with self._lock:
            if self._in_flight.get(pair, 0) >= 1 or self._in_flight.get(addr, 0) >= ADDRESS_IN_FLIGHT:
                return False
            for key in (pair, addr):
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
            return True

    def end(self, name: str, address: str) -> None:
        with self._lock:
            for key in self._keys(name, address):
                left = self._in_flight.get(key, 0) - 1
                if left > 0:
                    self._in_flight[key] = left
                else:
                    self._in_flight.pop(key, None)

    def failed(self, name: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(name, address):
                entry = self._entries.pop(key, None) or _Failures(0, now)
                entry.count += 1
                entry.last = now
                self._entries[key] = entry  # to the young end
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def succeeded(self, name: str, address: str) -> None:
        pair, _ = self._keys(name, address)
        with self._lock:
            self._entries.pop(pair, None)

    def _forget(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.last < FORGET_AFTER_S:
                break
            del self._entries[key]


class GateBusy(Exception):
    """Too many password checks running and waiting; try again shortly."""


class PasswordGate:
    """A bounded room for password checks; ``run`` on the web server's event loop."""

    def __init__(self, *, concurrency: int = PASSWORD_CHECKS_AT_ONCE, queue: int = PASSWORD_CHECKS_WAITING) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._semaphore: asyncio.Semaphore | None = None
        self._inside = 0
        self.refused = 0

    async def run(self, check: Callable[[], T]) -> T:
        """``check`` on a worker thread once a place is free; GateBusy when the room is full."""
        from starlette.concurrency import run_in_threadpool

        if self._inside >= self.concurrency + self.queue:
            self.refused += 1
            raise GateBusy
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        self._inside += 1
        try:
            async with self._semaphore:
                return await run_in_threadpool(check)
        finally:
            self._inside -= 1
