"""``WebServer``: the dashboard under uvicorn, on a thread of central's process.

Every resource a browser can make it hold is bounded here or in guard.py:
connections (``web.max_connections``, the idlest closed past it, else 503),
the request head (16 KiB, 10 s), worker threads (``WEB_THREADS``), and the
log (logbudget.py). docs/web.md has the figures and why one process.

The listening socket is bound here, before the thread starts, so ``port`` is
known at once (``127.0.0.1:0`` picks a free one) and a port already taken
fails ``start()`` with a clear error instead of inside a thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from central.web import WebError
from central.web.guard import MAX_HEAD_BYTES, ConnectionStats, guarded_protocol
from central.web.logbudget import LogBudget, install

_LOGGER = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# Open live streams are ended by the hub first; this bounds what is left.
GRACEFUL_SHUTDOWN_S = 2
DEFAULT_MAX_CONNECTIONS = 256
LISTEN_BACKLOG = 128


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; port 0 means any free port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise WebError(f"web.listen {listen!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class WebServer:
    def __init__(self, app: Starlette, listen: str, *, max_connections: int | None = None) -> None:
        self.app = app
        web = getattr(getattr(app.state, "config", None), "web", None)
        self.max_connections: int = max_connections or int(getattr(web, "max_connections", DEFAULT_MAX_CONNECTIONS))
        self.stats = ConnectionStats()
        app.state.connection_stats = self.stats
        self.log_budget = LogBudget()
        self._undo_budget = lambda: None
        self.host, self._requested_port = parse_listen(listen)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise WebError("web server not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise WebError(f"web.listen {self.host}:{self._requested_port}: cannot listen: {exc.strerror or exc}") from None
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        # X-Forwarded-* are read by guard.ClientAddress from configured proxies only, not by uvicorn.
        # limit_concurrency is a backstop: the guarded protocol keeps connections at the cap.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, proxy_headers=False,
                                http=guarded_protocol(self.max_connections, self.stats), ws="none",
                                limit_concurrency=self.max_connections + 1,
                                h11_max_incomplete_event_size=MAX_HEAD_BYTES, server_header=False)
        self._undo_budget = install(self.log_budget)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="gridpatrol-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise WebError(f"web server did not start on {self.host}:{self._requested_port}: {self._failure!r}")
            time.sleep(0.01)
        _LOGGER.info("dashboard listening on %s", self.url)

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start() or stop(), not lost in a thread
            self._failure = exc
            _LOGGER.exception("web server failed")

    def stop(self) -> None:
        if self._server is not None:
            hub = getattr(self.app.state, "hub", None)
            if hub is not None:
                hub.close_streams()
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                _LOGGER.warning("web server thread still running after %s s", STOP_TIMEOUT_S)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
        self._undo_budget()
