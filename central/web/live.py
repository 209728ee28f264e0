"""Live updates: bus notices to server-sent events on /api/stream.

The bus calls back on ingest's and the alarm book's threads; the hub puts
each notice in a bounded queue, wakes its asyncio loop (one wake-up for a
burst, not one per notice) and returns. One pump task turns the notices into
messages, a batch at a time (reading current rows from the store on a worker
thread, so every browser sees the same whole object), and offers each to
every connected stream whose scope covers it. A browser that falls behind by
``CLIENT_QUEUE_MAX`` messages is told to reload and dropped, so one stuck tab
never holds memory or slows the others.

The hub listens to the bus only while a stream is open: with no browser
connected, a flood of scans costs the dashboard nothing (the collector's
CPU is what carries an alarm from the socket to the store).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from anyio import CapacityLimiter, to_thread

from central.bus import Bus, Notice
from central.web.scope import Scope

_LOGGER = logging.getLogger(__name__)

CLIENT_QUEUE_MAX = 1000
# Streams at once. With one stream per browser (live-worker.js) this is a
# hundred control-room browsers; past it a stream is refused (503) so live
# streams can never take every connection (guard.py cannot evict a stream).
MAX_STREAMS = 100
NOTICE_QUEUE_MAX = 10_000
PREPARE_BATCH = 500  # notices shaped in one trip to the worker thread
# Events not sent live (a flood past the bus bridge's budget): the pages read
# their lists again this long after the last skip, and at least this often
# while the flood lasts.
SKIPPED_QUIET_S = 1.0
SKIPPED_EVERY_S = 5.0
KEEPALIVE_S = 10.0  # also how soon a vanished browser is noticed (the write fails)
RETRY_MS = 2000  # EventSource's reconnect delay


@dataclass(slots=True, frozen=True)
class LiveMessage:
    """One SSE message. ``unit``/``agent`` decide who may see it; ``None`` unit: top scopes only."""

    event: str
    data: dict[str, Any]
    agent: str | None = None
    unit: str | None = None
    everyone: bool = False  # plan and completion hints carry nothing scoped


Prepare = Callable[[Notice], list[LiveMessage]]
_CLOSE = object()
_RESYNC = object()


@dataclass(eq=False)
class _Client:
    scope: Scope
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE_MAX))

    def sees(self, msg: LiveMessage) -> bool:
        if msg.everyone:
            return True
        if msg.unit is not None:
            return self.scope.sees_unit(msg.unit)
        if msg.agent is not None:
            return self.scope.sees_agent(msg.agent)
        return self.scope.is_top


class LiveHub:
    """Fan-out of bus notices to SSE streams; lives on the web server's loop."""

    def __init__(self, bus: Bus, prepare: Prepare) -> None:
        self._bus = bus
        self._prepare = prepare
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Filled on the publishers' threads, emptied by the pump (deque's append and popleft are thread-safe).
        self._notices: deque[Notice] = deque()
        self._woken = False  # a wake-up is on its way to the loop: the publishers need not send another
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ids = itertools.count(1)
        self._pump_limiter: CapacityLimiter | None = None  # made on the loop, in start()
        self._overflowed = False
        self.dropped_notices = 0
        self._skips_since: float | None = None  # loop time of the first skip not yet answered with a refresh
        self._skips_timer: asyncio.TimerHandle | None = None

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pump_limiter = CapacityLimiter(1)
        self._wake = asyncio.Event()
        self._pump_task = asyncio.create_task(self._pump(), name="gridpatrol-live-pump")

    def _add_client(self, client: _Client) -> None:
        self._clients.add(client)
        if self._unsubscribe is None:
            self._unsubscribe = self._bus.subscribe(self._on_notice)

    def _remove_client(self, client: _Client) -> None:
        self._clients.discard(client)
        if not self._clients and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_notice(self, notice: Notice) -> None:
        """On the publisher's thread: queue, wake the loop if nobody has yet, return at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if len(self._notices) >= NOTICE_QUEUE_MAX:
            self.dropped_notices += 1
            self._overflowed = True
        else:
            self._notices.append(notice)
        if not self._woken:
            self._woken = True
            try:
                loop.call_soon_threadsafe(self._set_wake)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _set_wake(self) -> None:
        assert self._wake is not None
        self._wake.set()

    def _prepare_all(self, notices: list[Notice]) -> list[LiveMessage]:
        """On the pump's worker thread: each notice alone, so one that fails costs only itself."""
        messages: list[LiveMessage] = []
        for notice in notices:
            try:
                messages.extend(self._prepare(notice))
            except Exception:
                _LOGGER.exception("could not prepare a live %s notice", notice.topic)
        return messages

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._woken = False  # from here on a new notice wakes the loop again
            if self._overflowed:
                self._overflowed = False
                _LOGGER.warning("live notice queue full: dropped notices; browsers will resync")
                for client in list(self._clients):
                    self._offer(client, _RESYNC)
            while self._notices:
                batch = [self._notices.popleft() for _ in range(min(PREPARE_BATCH, len(self._notices)))]
                topics = {n.topic for n in batch}
                if "events-skipped" in topics or "resync" in topics:
                    batch = [n for n in batch if n.topic not in ("events-skipped", "resync")]
                # A thread of its own: a flood of page requests holding the shared
                # workers must not hold up a new alarm on its way to the desks.
                messages = await to_thread.run_sync(self._prepare_all, batch, limiter=self._pump_limiter)
                for msg in messages:
                    for client in list(self._clients):
                        if client.sees(msg):
                            self._offer(client, msg)
                if "resync" in topics:  # notices were lost on the way (a group's feed): after what came, reload
                    for client in list(self._clients):
                        self._offer(client, _RESYNC)
                if "events-skipped" in topics:
                    self._events_skipped()

    def _events_skipped(self) -> None:
        """Events went unsent: tell the pages to read their lists again once it eases (one refresh per burst)."""
        assert self._loop is not None
        now = self._loop.time()
        if self._skips_since is None:
            self._skips_since = now
        if self._skips_timer is not None:
            self._skips_timer.cancel()
        delay = min(SKIPPED_QUIET_S, max(0.0, self._skips_since + SKIPPED_EVERY_S - now))
        self._skips_timer = self._loop.call_later(delay, self._refresh_events)

    def _refresh_events(self) -> None:
        self._skips_since = None
        self._skips_timer = None
        msg = LiveMessage("refresh", {"topic": "events"}, everyone=True)
        for client in list(self._clients):
            self._offer(client, msg)

    def _offer(self, client: _Client, item: Any) -> None:
        try:
            client.queue.put_nowait(item)
        except asyncio.QueueFull:
            _LOGGER.warning("a browser fell %d live messages behind; telling it to reload", CLIENT_QUEUE_MAX)
            self._remove_client(client)
            # Make room for the one message that tells it why the stream ends.
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(_RESYNC)

    async def stream(self, scope: Scope, *, still_valid: Callable[[], bool] | None = None) -> AsyncIterator[bytes]:
        """The SSE byte stream of one browser.

        ``still_valid`` is asked (on a worker thread) at each keepalive: a
        session ended by logout, or by its account being disabled, ends its
        stream within KEEPALIVE_S.
        """
        client = _Client(scope)
        self._add_client(client)
        try:
            yield f"retry: {RETRY_MS}\n: gridpatrol live\n\n".encode()
            yield _frame("hello", {"clients": len(self._clients)}, next(self._ids))
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if still_valid is not None and not await to_thread.run_sync(still_valid):
                        return
                    yield b": keepalive\n\n"
                    continue
                if item is _CLOSE:
                    return
                if item is _RESYNC:
                    yield _frame("resync", {}, next(self._ids))
                    return
                yield _frame(item.event, item.data, next(self._ids))
        finally:
            self._remove_client(client)

    def close_streams(self) -> None:
        """End every open stream (server shutdown); thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def close_all() -> None:
            for client in list(self._clients):
                self._remove_client(client)
                try:
                    client.queue.put_nowait(_CLOSE)
                except asyncio.QueueFull:
                    client.queue.get_nowait()
                    client.queue.put_nowait(_CLOSE)

        try:
            loop.call_soon_threadsafe(close_all)
        except RuntimeError:
            pass

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._skips_timer is not None:
            self._skips_timer.cancel()
            self._skips_timer = None
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        self._loop = None


def _frame(event: str, data: dict[str, Any], ident: int) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {ident}\nevent: {event}\ndata: {body}\n\n".encode()
