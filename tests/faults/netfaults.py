"""A TcpProxy whose black hole is a true half-open link.

gridpatrol.netsim's ``blackhole()`` swallows data both ways, but a close from
one end (the broker giving up on its keepalive) still crosses the proxy and
reaches the other end as a FIN, so the agent would learn of the dead link
from the broker's timeout instead of its own. Behind a dead Wi-Fi link no FIN
crosses either: here the closing end goes, and the other stays open and dead
until it gives up itself. :attr:`client_gave_up_at` records when the agent's
end first closed (its keepalive noticed), in ``time.monotonic()``.
"""

from __future__ import annotations

import socket
import time

from gridpatrol.netsim import LinkMode, TcpProxy


class HalfOpenProxy(TcpProxy):
    def __init__(self, target: tuple[str, int], *, port: int = 0) -> None:
        super().__init__(target, port=port)
        self._clients: set[socket.socket] = set()
        self.client_gave_up_at: float | None = None

    def _accept(self, mode: LinkMode) -> None:
        before = set(self._peers)
        super()._accept(mode)
        # The agent's end is the accepted one: its local port is the proxy's.
        for sock in set(self._peers) - before:
            if sock.getsockname()[1] == self.port:
                self._clients.add(sock)

    def _forward(self, sock: socket.socket, mode: LinkMode) -> None:
        if mode is not LinkMode.BLACKHOLE and sock not in self._dead:
            super()._forward(sock, mode)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # swallowed: nothing crosses a dead link
        # This end closed. Its close does not cross either: the other end stays open, dead.
        if sock in self._clients and self.client_gave_up_at is None:
            self.client_gave_up_at = time.monotonic()
        peer = self._peers.pop(sock, None)
        self._clients.discard(sock)
        self._dead.discard(sock)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()
        if peer is not None and peer is not sock:
            self._peers[peer] = peer  # closed at heal(), like every dead connection
            self._dead.add(peer)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        self._clients.discard(sock)
        if peer is not None:
            self._clients.discard(peer)
        super()._close_pair(sock)
