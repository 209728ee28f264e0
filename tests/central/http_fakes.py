"""Real local HTTP servers for notifications and cameras, each on a free port of its own.

``Receiver``: what Apprise's ``json://`` posts to (a webhook robot's stand-in).
``FakeCamera``: a snapshot URL in the ways real cameras answer: a JPEG behind
Basic or Digest auth, a 500, a hang.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The smallest JPEG anyone needs: SOI, a comment, EOI (the server never decodes it).
JPEG = b"\xff\xd8\xff\xfe\x00\x0bgridpatrol\xff\xd9"


@dataclass(frozen=True)
class Received:
    at: float  # time.time() when it arrived
    path: str
    title: str
    body: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        assert self._server is not None or self._port
        return self._server.server_address[1] if self._server is not None else self._port

    def start(self) -> "_Base":
        self.stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self._handler())
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class Receiver(_Base):
    """Records every JSON notification posted to it."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.messages: list[Received] = []
        self._lock = threading.Lock()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def url(self, path: str = "alarms") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                data: Any = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.messages.append(Received(time.time(), self.path, str(data.get("title", "")),
                                                   str(data.get("message", ""))))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class FakeCamera(_Base):
    """``mode``: ``basic`` | ``digest`` | ``open`` (a JPEG), ``500``, ``hang``, ``html``."""

    def __init__(self, mode: str = "digest", *, user: str = "admin", password: str = "pass word") -> None:
        super().__init__()
        self.mode = mode
        self.user = user
        self.password = password
        self.realm = "IP Camera(C1234)"
        self.nonce = secrets.token_hex(16)
        self.hits: list[tuple[float, bool]] = []  # (when, answered with a JPEG)
        self.jpeg = JPEG

    def url(self, path: str = "/ISAPI/Streaming/channels/101/picture", *, credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password.replace(' ', '%20')}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}{path}"

    def jpegs_served(self) -> int:
        return sum(1 for _, ok in self.hits if ok)

    def _digest_ok(self, header: str, method: str) -> bool:
        if not header.lower().startswith("digest "):
            return False
        fields: dict[str, str] = {}
        for part in header[7:].split(","):
            key, _, value = part.strip().partition("=")
            fields[key] = value.strip('"')
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = md5(f"{method}:{fields.get('uri', '')}")
        want = md5(f"{ha1}:{self.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:{fields.get('qop')}:{ha2}")
        return fields.get("username") == self.user and fields.get("nonce") == self.nonce and fields.get("response") == want

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in {"content-type": ctype, "content-length": str(len(body)), **(extra or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                auth = self.headers.get("authorization", "")
                if cam.mode == "hang":
                    cam.hits.append((time.time(), False))
                    cam.stopping.wait(30)
                    return
                if cam.mode == "500":
                    cam.hits.append((time.time(), False))
                    self._answer(500, b"internal error", "text/plain")
                    return
                if cam.mode == "basic":
                    import base64
                    want = "Basic " + base64.b64encode(f"{cam.user}:{cam.password}".encode()).decode()
                    if auth != want:
                        self._answer(401, b"", "text/plain", {"www-authenticate": f'Basic realm="{cam.realm}"'})
                        return
                if cam.mode == "digest" and not cam._digest_ok(auth, "GET"):
                    self._answer(401, b"", "text/plain", {"www-authenticate":
                                 f'Digest realm="{cam.realm}", qop="auth", nonce="{cam.nonce}", algorithm=MD5'})
                    return
                if cam.mode == "html":
                    self._answer(200, b"<html>login</html>", "text/html")
                    return
                cam.hits.append((time.time(), True))
                self._answer(200, cam.jpeg, "image/jpeg")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
