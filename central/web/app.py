"""``build_app``: the dashboard's ASGI application from central's objects."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from anyio import to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.bus import Bus
from central.store import Store
from central.store.dashboard import StoreReader
from central.web.admin import admin_routes
from central.web.api import api_routes
from central.web.auth import METRICS_PATH, PUBLIC_PATHS, SESSION_MAX_AGE_S, LoginGate, SessionCodec, load_secret
from central.web.guard import BodyLimit, ClientAddress, ResponseCap
from central.web.live import LiveHub
from central.web.logins import LoginThrottle, PasswordGate
from central.web.notices import NoticeShaper
from central.web.pages import Renderer, make_environment, page_routes
from central.web.ports import AlarmActions, CompletionReports, PlanSource
from central.web.users import UserBook
from central.web.views import Dashboard

if TYPE_CHECKING:
    from central.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
SECRET_FILE = "web-secret"
# Worker threads for the dashboard's blocking calls (store reads, password checks).
WEB_THREADS = 8
# Everything the pages use is served from here: no CDN, no inline script.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the headers above to every answer, and no-store to everything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _asset_version() -> str:
    """Changes whenever a static file does, so browsers fetch the new one after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_app(*, config: Any, store: Any, bus: Bus, plan: PlanSource, alarms: AlarmActions,
              report: CompletionReports | None, clock: Callable[[], float] = time.time,
              users: UserBook | None = None, throttle: LoginThrottle | None = None,
              gate: PasswordGate | None = None, metrics: Metrics | None = None) -> Starlette:
    """The dashboard for ``config`` (a CentralConfig: ``data_dir``, ``timezone``, ``web``).

    ``store`` needs only its ``path`` (the web reads it read-only); ``plan``
    gives the plan in force, ``alarms`` acknowledges, ``report`` builds the
    completion report. ``users``, ``throttle`` and ``gate`` default to the real ones.
    ``metrics``, when given, is served at ``/metrics`` to whom ``web.metrics``
    says: staff with a session (``login``, the default) or anyone (``open``).
    """
    # The store itself (either engine), or, from a test, anything with the path of a SQLite store.
    where = store if isinstance(store, Store) else Path(store.path)
    users = users or UserBook(where)
    web = getattr(config, "web", None)
    secret_key = getattr(web, "secret_key", None)
    secret = secret_key.encode() if secret_key else load_secret(Path(config.data_dir) / SECRET_FILE)
    codec = SessionCodec(secret, max_age_s=getattr(web, "session_max_age_s", SESSION_MAX_AGE_S))
    dashboard = Dashboard(reader=StoreReader(where), plan=plan, alarms=alarms, reports=report,
                          tz=config.tz, clock=clock)
    hub = LiveHub(bus, NoticeShaper(dashboard))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every blocking call of the dashboard (store reads, password checks,
        # the live pump) shares these threads: a flood of requests waits for
        # one of them instead of each holding its own thread and query result.
        to_thread.current_default_thread_limiter().total_tokens = WEB_THREADS
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    routes: list[BaseRoute] = [*api_routes(), *page_routes(), *admin_routes(),
                               Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    public_paths = PUBLIC_PATHS
    if metrics is not None:
        routes.append(Route(METRICS_PATH, _metrics_endpoint(metrics), methods=["GET"]))
        if getattr(web, "metrics", "login") == "open":
            public_paths = public_paths | {METRICS_PATH}
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ClientAddress, trusted=getattr(web, "trusted_proxies", ())), Middleware(BodyLimit), Middleware(ResponseCap),
                    Middleware(SecurityHeaders), Middleware(LoginGate, codec=codec, users=users, public_paths=public_paths)],
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    app.state.renderer = Renderer(make_environment(_asset_version(), dashboard.tz), dashboard)
    app.state.codec = codec
    app.state.users = users
    app.state.throttle = throttle or LoginThrottle()
    app.state.password_gate = gate or PasswordGate()
    app.state.config = config
    app.state.hub = hub
    app.state.clock = clock
    app.state.force_secure_cookie = bool(getattr(web, "cookie_secure", False))
    return app


def _metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        # The sources read the store: off the event loop, as every store read of the web.
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=metrics.content_type)

    return endpoint
