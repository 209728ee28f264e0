"""A TCP proxy that can unplug a link: for the demo and the fault tests.

``cut()`` closes every connection and refuses new ones at once (a cable pulled
at a switch that sends resets); ``blackhole()`` keeps connections open but
forwards nothing, as a Wi-Fi link that died without a FIN does, so the ends
only learn of it from their keepalives; ``heal()`` restores forwarding for new
connections. Loopback only: the proxy listens on 127.0.0.1.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from enum import StrEnum

_LOGGER = logging.getLogger(__name__)
_CHUNK_BYTES = 65536


class LinkMode(StrEnum):
    UP = "up"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; the link can be cut and healed."""

    def __init__(self, target: tuple[str, int], *, port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._dead: set[socket.socket] = set()  # accepted while black-holed: never forwarded
        self._mode = LinkMode.UP
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = False
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)

    @property
    def mode(self) -> LinkMode:
        with self._lock:
            return self._mode

    def start(self) -> TcpProxy:
        self._running = True
        self._thread.start()
        return self

    def cut(self) -> None:
        self._set(LinkMode.CUT)

    def blackhole(self) -> None:
        self._set(LinkMode.BLACKHOLE)

    def heal(self) -> None:
        self._set(LinkMode.UP)

    def close(self) -> None:
        if not self._running:
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            self._selector.close()
            return
        self._running = False
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the thread is already gone and has closed it
        self._thread.join(timeout=5)

    def _set(self, mode: LinkMode) -> None:
        with self._lock:
            self._mode = mode
        self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while self._running:
                mode = self.mode
                if mode is LinkMode.CUT:
                    self._drop_all()
                elif mode is LinkMode.UP:
                    # Connections opened while black-holed are dead; close them.
                    for sock in list(self._dead):
                        self._close_pair(sock)
                for key, _ in self._selector.select(timeout=0.5):
                    # The mode is read for each socket, not once a pass: a
                    # connection that arrives just after heal() is forwarded.
                    if key.data == "wake":
                        key.fileobj.recv(4096)  # type: ignore[union-attr]
                    elif key.fileobj is self._listener:
                        self._accept(self.mode)
                    elif key.fileobj in self._peers:
                        self._forward(key.fileobj, self.mode)  # type: ignore[arg-type, unused-ignore]
        finally:
            self._drop_all()
            for sock in (self._listener, self._wake_r, self._wake_w):
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
                sock.close()
            self._selector.close()

    def _accept(self, mode: LinkMode) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if mode is LinkMode.CUT:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # a reset: the connection is refused
            return
        if mode is LinkMode.BLACKHOLE:
            # Accepted but never forwarded: the client waits for a CONNACK
            # that never comes, as behind a dead link.
            client.setblocking(False)
            self._dead.add(client)
            self._peers[client] = client
            self._selector.register(client, selectors.EVENT_READ, "peer")
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError as exc:
            _LOGGER.debug("proxy: target %s unreachable: %s", self.target, exc)
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self._selector.register(client, selectors.EVENT_READ, "peer")
        self._selector.register(upstream, selectors.EVENT_READ, "peer")

    def _forward(self, sock: socket.socket, mode: LinkMode) -> None:
        try:
            data = sock.recv(_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pair(sock)
            return
        if mode is LinkMode.BLACKHOLE or sock in self._dead:
            return  # swallowed: nothing crosses a dead link
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        if peer is not None and peer is not sock:
            self._peers.pop(peer, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._dead.discard(s)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError, OSError):
                pass
            s.close()

    def _drop_all(self) -> None:
        for sock in list(self._peers):
            if sock in self._peers:
                self._close_pair(sock)
