"""Hard bounds on what browsers (or anyone) can make the dashboard hold.

The dashboard shares central's process with ingest and the alarm path
(docs/web.md says why), so what a connection costs must have a ceiling that
no client can raise:

* :class:`GuardedH11Protocol`: at most ``max_connections`` open connections.
  Past it, the connection that has been idle longest (no request in flight,
  not a live stream) is closed to make room, so a flood of idle sockets
  cannot shut out /healthz or a desk; when none is idle, the newcomer gets a
  plain 503 at once. A connection that has not sent a whole request head
  within ``HEAD_TIMEOUT_S`` is closed (slowloris).
* :class:`BodyLimit`: no request body beyond ``MAX_BODY_BYTES``, counted as
  it arrives, so a lying or absent Content-Length buys nothing.
* :class:`ClientAddress`: the client's address (and https) from
  ``X-Forwarded-For``/``-Proto`` only when the peer is a configured proxy.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

_LOGGER = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 10.0  # a browser sends its request head in milliseconds; 10 s covers a bad mobile link
# The biggest thing anyone posts is the login form or an account form: well under a kilobyte.
MAX_BODY_BYTES = 16 * 1024
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; a session cookie is under 300 bytes
# The backstop for any answer with a length (pages, reports): lists stop at
# api.MAX_LIST_BYTES by themselves; nothing the dashboard builds comes near this.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_REFUSAL_BODY = b"dashboard busy: too many open connections, try again shortly\n"
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 5\r\n"
           b"connection: close\r\ncontent-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


class ConnectionStats:
    """Counters the guarded protocol keeps (shown on /healthz)."""

    def __init__(self) -> None:
        self.open = 0
        self.evicted = 0
        self.refused = 0
        self.head_timeouts = 0

    def to_json(self) -> dict[str, int]:
        return {"open": self.open, "evicted": self.evicted, "refused": self.refused, "head_timeouts": self.head_timeouts}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a deadline for the request head.

    ``guarded_protocol(max_connections, stats)`` makes the class uvicorn is given.
    """

    max_connections = 256
    stats = ConnectionStats()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.stats.open += 1
        self._idle_since = self.loop.time()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_deadline)
        if len(self.connections) > self.max_connections:
            victim = self._idlest()
            if victim is not None:
                self.stats.evicted += 1
                victim.transport.close()
            else:
                self.stats.refused += 1
                transport.write(REFUSAL)
                transport.close()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _idlest(self) -> GuardedH11Protocol | None:
        best: GuardedH11Protocol | None = None
        for conn in self.connections:
            if conn is self or not isinstance(conn, GuardedH11Protocol) or conn.transport.is_closing():
                continue
            if conn._idle() and (best is None or conn._idle_since < best._idle_since):
                best = conn
        return best

    def _head_deadline(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.stats.head_timeouts += 1
            self.transport.close()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        self._head_timer.cancel()
        super().connection_lost(exc)


def guarded_protocol(max_connections: int, stats: ConnectionStats) -> type[GuardedH11Protocol]:
    return type("GuardedH11", (GuardedH11Protocol,), {"max_connections": max_connections, "stats": stats})


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, however it is sent."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _too_large(send)
                return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"error":"request body too large"}'
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class ClientAddress:
    """ASGI middleware: believe X-Forwarded-For/-Proto only from ``trusted`` proxies.

    The client is the rightmost address of X-Forwarded-For that is not itself
    a trusted proxy (each proxy appends the peer it saw; anything to the left
    of that came from the client and may be forged).
    """

    def __init__(self, app: ASGIApp, *, trusted: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            client = scope.get("client")
            if client and self._is_trusted(client[0]):
                headers = {name: value.decode("latin-1") for name, value in scope["headers"]
                           if name in (b"x-forwarded-for", b"x-forwarded-proto")}
                hops = [h.strip() for h in headers.get(b"x-forwarded-for", "").split(",") if h.strip()]
                while hops and self._is_trusted(hops[-1]):
                    hops.pop()
                scope = dict(scope)
                if hops:
                    scope["client"] = (hops[-1][:64], 0)
                proto = headers.get(b"x-forwarded-proto", "").strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = proto
        await self.app(scope, receive, send)


class ResponseCap:
    """ASGI middleware: an answer longer than ``max_bytes`` is replaced by a 500 that says so.

    A backstop: every list already pages and cuts itself well below it. The
    live stream has no length and is bounded message by message instead.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def capped_send(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                        refused = True
                        _LOGGER.error("refused to send %s bytes for %s (limit %s)", value.decode(), scope["path"], self.max_bytes)
                        body = b'{"error":"answer too large; ask for less (?limit=, a date, a filter)"}'
                        await send({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                        await send({"type": "http.response.body", "body": body})
                        return
            await send(message)

        await self.app(scope, receive, capped_send)
