"""The connection cap, the head timeout and the body limit, on a real uvicorn (guard.py)."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from central.web import guard
from central.web.server import WebServer
from tests.support import wait_until
from tests.web.conftest import BASE, Stream, World, csrf_of

CAP = 16


@pytest.fixture
def small_server(world: World) -> Iterator[WebServer]:
    srv = WebServer(world.build_app(), "127.0.0.1:0", max_connections=CAP)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _connect(server: WebServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_past_the_cap_the_idlest_connection_makes_room(small_server: WebServer) -> None:
    idle = [_connect(small_server) for _ in range(CAP)]
    try:
        wait_until(lambda: small_server.stats.open == CAP, timeout=5, message="every idle connection accepted")
        assert small_server.stats.evicted == 0
        probe = _connect(small_server)
        assert _get(probe, "/healthz").startswith(b"HTTP/1.1 200 ")
        probe.close()
        assert small_server.stats.evicted >= 1
        # The oldest idle one went first.
        wait_until(lambda: _closed_by_server(idle[0]), timeout=5, message="the oldest idle connection closed")
        assert not _closed_by_server(idle[-1])
    finally:
        for s in idle:
            s.close()


def test_past_the_cap_with_nothing_idle_a_newcomer_gets_503(small_server: WebServer) -> None:
    streams = [Stream(small_server, "duty") for _ in range(CAP)]  # live streams are never evicted
    try:
        wait_until(lambda: small_server.app.state.hub.client_count == CAP, timeout=10)
        newcomer = _connect(small_server)
        answer = newcomer.recv(65536)
        newcomer.close()
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"too many open connections" in answer
        assert small_server.stats.refused >= 1
    finally:
        for s in streams:
            s.close()


def test_a_request_head_that_never_completes_is_cut_off(small_server: WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "HEAD_TIMEOUT_S", 0.3)
    slow = _connect(small_server)
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        started = time.monotonic()
        wait_until(lambda: _closed_by_server(slow), timeout=5, message="the slow connection closed")
        assert time.monotonic() - started < 3
        assert small_server.stats.head_timeouts == 1
    finally:
        slow.close()


def test_a_request_body_past_16_kib_is_refused(world: World) -> None:
    with TestClient(world.build_app(), base_url=BASE) as c:
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"csrf": token, "name": "duty", "password": "x" * 20_000})
        assert (r.status_code, r.json()) == (413, {"error": "request body too large"})
        r = c.post("/login", content=b"a" * 10, headers={"content-length": "²".encode("latin-1")})
        assert r.status_code == 413  # a length that is not ASCII digits is no length
