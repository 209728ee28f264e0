"""Sessions in signed cookies, and the login gate.

A session is a small signed JSON object in one cookie (itsdangerous, HMAC
SHA-1 over a per-installation secret): the user name, the CSRF token bound to
it, when it was issued and, once logged in, a random session id. The cookie is
HttpOnly and SameSite=Strict, and Secure whenever the request came over https.
A logged-in session also lives server-side (the ``sessions`` table, by the
hash of its id): every request looks it up, so logout, disabling, removing an
account or a new password ends it for good, and a restart of central does not.
An anonymous session (the login page's CSRF token) is only the cookie.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
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
PUBLIC_PATHS = frozenset({"/healthz", "/login", "/lang"})
METRICS_PATH = "/metrics"  # like the API: 401 without a login, unless [web] metrics = "open"
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
    sid: str | None = None  # the server-side session's id; None for an anonymous session

    @classmethod
    def fresh(cls, user: str | None, now: float, sid: str | None = None) -> Session:
        return cls(user, secrets.token_urlsafe(32), now, sid)


class SessionCodec:
    def __init__(self, secret: bytes, *, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="gridpatrol-session")
        self.max_age_s = max_age_s

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "c": session.csrf, "i": session.issued_ts, "s": session.sid})

    def loads(self, value: str) -> Session | None:
        """None for anything not signed by us, expired or malformed."""
        if len(value) > 4096:
            return None
        try:
            data = self._serializer.loads(value, max_age=int(self.max_age_s))
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user, csrf, issued, sid = data.get("u"), data.get("c"), data.get("i"), data.get("s")
        if not (user is None or isinstance(user, str)) or not isinstance(csrf, str) or not isinstance(issued, (int, float)):
            return None
        if not (sid is None or isinstance(sid, str)):
            return None
        return Session(user, csrf, float(issued), sid)


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


class LoginGate:
    """ASGI middleware: puts ``session`` and ``user`` in the scope; refuses the anonymous.

    Pages answer a redirect to the login page, the API (and the live stream)
    401 JSON. Only /healthz, the login page, the language switch and the static
    files answer without a login.
    """

    def __init__(self, app: ASGIApp, *, codec: SessionCodec, users: UserBook,
                 public_paths: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.codec = codec
        self.users = users
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        raw = conn.cookies.get(SESSION_COOKIE)
        session = self.codec.loads(raw) if raw else None
        user: User | None = None
        if session is not None and session.user is not None and session.sid is not None:
            # One indexed lookup: the session is live and its user enabled (logout, disable, remove end it).
            user = self.users.session_user(session.sid)
            if user is not None and user.name != session.user:
                user = None
        scope["session_obj"] = session
        scope["user_obj"] = user
        path: str = scope["path"]
        if user is None and path not in self.public_paths and not path.startswith(PUBLIC_PREFIXES):
            response: Response
            if path.startswith("/api/") or path == METRICS_PATH:
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
    """The peer, or the client a trusted proxy names (guard.ClientAddress has set it)."""
    return conn.client.host if conn.client else "unknown"


def session_for_anonymous(conn: HTTPConnection, now: float) -> tuple[Session, bool]:
    """The request's session, or a fresh anonymous one (True: it must be set as a cookie)."""
    session = session_of(conn)
    if session is not None:
        return session, False
    return Session.fresh(None, now), True


def json_error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)
