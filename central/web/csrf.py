"""Cross-site request forgery defence for every POST.

Two checks, both required: the request carries the CSRF token bound to its
session (a form field ``csrf`` or the ``X-CSRF-Token`` header) and, when the
browser names an origin (``Origin``, else ``Referer``), it is this site.
SameSite=Strict cookies already stop most forgeries in current browsers; the
token covers older ones and same-site attackers (another app on the host).
"""

from __future__ import annotations

import functools
import hmac
import logging
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from central.web.auth import json_error, session_of

_LOGGER = logging.getLogger(__name__)

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# A form with an ack button is a few hundred bytes; refuse to parse anything big.
MAX_FORM_BYTES = 16 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin."""
    here = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == here
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == here
    # Neither header: not a browser form or fetch (a script with the token); the token decides.
    return True


async def presented_token(request: Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        length = request.headers.get("content-length")
        if length is None or not length.isascii() or not length.isdigit() or int(length) > MAX_FORM_BYTES:
            return None
        form = await request.form(max_files=0, max_fields=32)
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def csrf_protected(endpoint: Endpoint) -> Endpoint:
    """Wrap a POST endpoint: refuse (403) unless origin and token both check out."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if not same_origin(request):
            _LOGGER.warning("refused %s %s: cross-origin (Origin %s)", request.method, request.url.path,
                            request.headers.get("origin") or request.headers.get("referer"))
            return json_error("cross-origin request refused", 403)
        session = session_of(request)
        token = await presented_token(request)
        if session is None or token is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            _LOGGER.warning("refused %s %s: missing or wrong CSRF token", request.method, request.url.path)
            return json_error("missing or wrong CSRF token", 403)
        return await endpoint(request)

    guarded.csrf_protected = True  # type: ignore[attr-defined]  # a test walks the routes for this mark
    return guarded
