"""The link-cutting proxy the demo and the fault tests rely on."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

from gridpatrol.netsim import LinkMode, TcpProxy


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass  # closed at teardown

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield port
    finally:
        stop.set()
        t.join(timeout=5)
        server.close()
        for conn in conns:
            conn.close()


def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_forwards_cuts_and_heals(echo_server: int) -> None:
    proxy = TcpProxy(("127.0.0.1", echo_server)).start()
    try:
        assert _roundtrip(proxy.port) == b"ping"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as live:
            live.sendall(b"a")
            assert live.recv(10) == b"a"
            proxy.cut()
            assert proxy.mode is LinkMode.CUT
            # The open connection is closed by the cut (EOF or reset).
            try:
                assert live.recv(10) == b""
            except ConnectionResetError:
                pass
        with pytest.raises(OSError):
            _roundtrip(proxy.port)
        proxy.heal()
        assert _roundtrip(proxy.port, b"again") == b"again"
    finally:
        proxy.close()


def test_blackhole_keeps_connections_open_but_silent(echo_server: int) -> None:
    proxy = TcpProxy(("127.0.0.1", echo_server)).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            proxy.blackhole()
            s.sendall(b"lost")
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recv(10)
        proxy.heal()
        # Positive control: the same proxy forwards again once healed.
        assert _roundtrip(proxy.port, b"back") == b"back"
    finally:
        proxy.close()


def test_connections_made_while_black_holed_are_dead_and_closed_on_heal(echo_server: int) -> None:
    proxy = TcpProxy(("127.0.0.1", echo_server)).start()
    try:
        proxy.blackhole()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            s.sendall(b"into the void")
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recv(10)
            proxy.heal()
            # The connection born dead is closed by the heal, as a client
            # behind a link that died would find out on its next attempt.
            s.settimeout(5)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        assert _roundtrip(proxy.port, b"alive") == b"alive"
    finally:
        proxy.close()
