"""Live updates: bus notices to server-sent events on /api/stream.

The bus calls back on ingest's and the alarm book's threads; the hub hands
each notice to its asyncio loop with ``call_soon_threadsafe`` and returns.
One pump task turns a notice into a message (reading the current row from
the store on a worker thread, so every browser sees the same whole object)
and offers it to each connected stream whose scope covers it. A browser that
falls behind by ``CLIENT_QUEUE_MAX`` messages is told to reload and dropped,
so one stuck tab never holds memory or slows the others.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
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
        self._notices: asyncio.Queue[Notice | None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ids = itertools.count(1)
        self._pump_limiter: CapacityLimiter | None = None  # made on the loop, in start()
        self.dropped_notices = 0

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pump_limiter = CapacityLimiter(1)
        self._notices = asyncio.Queue(NOTICE_QUEUE_MAX)
        self._pump_task = asyncio.create_task(self._pump(), name="gridpatrol-live-pump")
        self._unsubscribe = self._bus.subscribe(self._on_notice)

    def _on_notice(self, notice: Notice) -> None:
        """On the publisher's thread: hand over and return at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, notice)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _enqueue(self, notice: Notice) -> None:
        assert self._notices is not None
        try:
            self._notices.put_nowait(notice)
        except asyncio.QueueFull:
            self.dropped_notices += 1
            _LOGGER.warning("live notice queue full: dropped a %s notice; browsers will resync", notice.topic)
            for client in self._clients:
                self._offer(client, _RESYNC)

    async def _pump(self) -> None:
        assert self._notices is not None
        while (notice := await self._notices.get()) is not None:
            if notice.topic == "resync":  # notices were lost on the way (a group's feed): every browser reloads
                for client in list(self._clients):
                    self._offer(client, _RESYNC)
                continue
            try:
                # A thread of its own: a flood of page requests holding the shared
                # workers must not hold up a new alarm on its way to the desks.
                messages = await to_thread.run_sync(self._prepare, notice, limiter=self._pump_limiter)
            except Exception:
                _LOGGER.exception("could not prepare a live %s notice", notice.topic)
                continue
            for msg in messages:
                for client in list(self._clients):
                    if client.sees(msg):
                        self._offer(client, msg)

    def _offer(self, client: _Client, item: Any) -> None:
        try:
            client.queue.put_nowait(item)
        except asyncio.QueueFull:
            _LOGGER.warning("a browser fell %d live messages behind; telling it to reload", CLIENT_QUEUE_MAX)
            self._clients.discard(client)
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
        self._clients.add(client)
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
            self._clients.discard(client)

    def close_streams(self) -> None:
        """End every open stream (server shutdown); thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def close_all() -> None:
            for client in list(self._clients):
                self._clients.discard(client)
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
        if self._notices is not None and self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        self._loop = None


def _frame(event: str, data: dict[str, Any], ident: int) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {ident}\nevent: {event}\ndata: {body}\n\n".encode()
