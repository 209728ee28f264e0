"""Sessions in signed cookies, the login gate and a simple login rate limit.

A session is a small signed JSON object in one cookie (itsdangerous, HMAC
SHA-1 over a per-installation secret): the user name, the CSRF token bound to
it, and when it was issued. The cookie is HttpOnly and SameSite=Strict, and
Secure whenever the request came over https. Nothing about the session is kept
server-side, so a restart of central does not log the control room out; a
deleted account is refused at once, because every request looks the user up.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from central.web.users import User, UserBook

_LOGGER = logging.getLogger(__name__)

SESSION_COOKIE = "gp_session"
# A night shift and its hand-over; after that the desk logs in again.
SESSION_MAX_AGE_S = 14 * 3600
SECRET_BYTES = 32
LOGIN_USER_FAILURES = 5  # failed logins per name ...
LOGIN_IP_FAILURES = 20  # ... and per address (a desk shares one) ...
LOGIN_WINDOW_S = 300.0  # ... within this many seconds before the next try waits
PUBLIC_PATHS = frozenset({"/healthz", "/login", "/lang"})
PUBLIC_PREFIXES = ("/static/",)


def load_secret(path: Path) -> bytes:
    """The signing secret, created (0600) on first use so sessions survive a restart."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path}: web session secret is shorter than {SECRET_BYTES} bytes") from None
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


@dataclass(slots=True, frozen=True)
class Session:
    user: str | None
    csrf: str
    issued_ts: float

    @classmethod
    def fresh(cls, user: str | None, now: float) -> Session:
        return cls(user, secrets.token_urlsafe(32), now)


class SessionCodec:
    def __init__(self, secret: bytes, *, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="gridpatrol-session")
        self.max_age_s = max_age_s

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "c": session.csrf, "i": session.issued_ts})

    def loads(self, value: str) -> Session | None:
        """None for anything not signed by us, expired or malformed."""
        if len(value) > 4096:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user, csrf, issued = data.get("u"), data.get("c"), data.get("i")
        if not (user is None or isinstance(user, str)) or not isinstance(csrf, str) or not isinstance(issued, (int, float)):
            return None
        return Session(user, csrf, float(issued))


def is_https(conn: HTTPConnection) -> bool:
    """Served over https (directly or, with uvicorn's proxy headers, behind a proxy), or configured so."""
    if conn.url.scheme in ("https", "wss"):
        return True
    app = conn.scope.get("app")
    return bool(getattr(getattr(app, "state", None), "force_secure_cookie", False))


def set_session_cookie(response: Response, conn: HTTPConnection, codec: SessionCodec, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, codec.dumps(session), max_age=int(codec.max_age_s), path="/",
        httponly=True, samesite="strict", secure=is_https(conn),
    )


def clear_session_cookie(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(conn))


class LoginLimiter:
    """Failed logins counted per key (``user:NAME``, ``ip:ADDR``) in a sliding window."""

    def __init__(self, *, user_failures: int = LOGIN_USER_FAILURES, ip_failures: int = LOGIN_IP_FAILURES,
                 window_s: float = LOGIN_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {"user": user_failures, "ip": ip_failures}
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, str]:
        return f"user:{name[:128]}", f"ip:{address}"

    def _prune(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def retry_after(self, keys: tuple[str, ...]) -> float:
        """Seconds to wait before another try is heard; 0 when one may try now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._prune(key, now)
                if len(times) >= self._limits[key.split(":", 1)[0]]:
                    wait = max(wait, times[0] + self._window_s - now)
        return wait

    def failed(self, keys: tuple[str, ...]) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
                # Bound memory against a spray of names: the limit is all we need to remember.
                times = self._failures[key]
                while len(times) > self._limits[key.split(":", 1)[0]]:
                    times.popleft()
            if len(self._failures) > 100_000:
                self._failures.clear()

    def succeeded(self, user_key: str) -> None:
        with self._lock:
            self._failures.pop(user_key, None)


class LoginGate:
    """ASGI middleware: puts ``session`` and ``user`` in the scope; refuses the anonymous.

    Pages answer a redirect to the login page, the API (and the live stream)
    401 JSON. Only /healthz, the login page, the language switch and the static
    files answer without a login.
    """

    def __init__(self, app: ASGIApp, *, codec: SessionCodec, users: UserBook) -> None:
        self.app = app
        self.codec = codec
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        raw = conn.cookies.get(SESSION_COOKIE)
        session = self.codec.loads(raw) if raw else None
        user: User | None = None
        if session is not None and session.user is not None:
            user = self.users.get(session.user)
        scope["session_obj"] = session
        scope["user_obj"] = user
        path: str = scope["path"]
        if user is None and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            response: Response
            if path.startswith("/api/"):
                response = JSONResponse({"error": "login required"}, status_code=401,
                                        headers={"WWW-Authenticate": 'Cookie realm="gridpatrol"'})
            else:
                target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def safe_next(target: str | None) -> str:
    """Only a local path may follow a login, never another site (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def session_of(conn: HTTPConnection) -> Session | None:
    return conn.scope.get("session_obj")


def user_of(conn: HTTPConnection) -> User:
    user = conn.scope.get("user_obj")
    assert user is not None, "the login gate lets no anonymous request this far"
    return user


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def session_for_anonymous(conn: HTTPConnection, now: float) -> tuple[Session, bool]:
    """The request's session, or a fresh anonymous one (True: it must be set as a cookie)."""
    session = session_of(conn)
    if session is not None:
        return session, False
    return Session.fresh(None, now), True


def json_error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)
