"""The JSON API (docs/api.md): every answer cut to the caller's scope.

Store reads run on the thread pool; the event loop only routes and encodes.
Query parameters are outside input: a bad one is a 400 that names it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from central.report import render_csv
from central.store.dashboard import EVENTS_MAX_LIMIT
from central.web import WebError
from central.web.auth import json_error, user_of
from central.web.csrf import csrf_protected
from central.web.live import MAX_STREAMS
from central.web.views import AckRefused, Dashboard

_LOGGER = logging.getLogger(__name__)

EVENT_KINDS = ("alarm", "restore", "tamper", "panic", "scan", "fault", "output")
MAX_PARAM_CHARS = 128
# Nights the dashboard will talk about; beyond these a date is a typo (and
# date arithmetic at year 1 or 9999 would overflow).
DATE_MIN, DATE_MAX = dt.date(2000, 1, 1), dt.date(2099, 12, 31)
DEFAULT_LIMIT = 200
# No list answer is larger than this: a page ends early (with its cursor) when
# its items would pass it. One event is at most a 64 KiB wire message, so the
# first item always fits.
MAX_LIST_BYTES = 1024 * 1024
MAX_CURSOR_CHARS = 512


class BadParam(WebError, ValueError):
    """A query or path parameter that is not what the API takes; the message names it."""


def dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


def param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_PARAM_CHARS or any(ord(c) < 32 for c in value):
        raise BadParam(f"{name}: expected a short printable value")
    return value


def int_param(request: Request, name: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int | None:
    value = param(request, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadParam(f"{name}: expected an integer, got {value[:32]!r}") from None
    if not lo <= number <= hi:
        raise BadParam(f"{name}: expected {lo}..{hi}, got {number}")
    return number


def date_param(request: Request, name: str = "date") -> dt.date | None:
    value = param(request, name)
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise BadParam(f"{name}: expected YYYY-MM-DD, got {value[:32]!r}") from None
    if not DATE_MIN <= day <= DATE_MAX:
        raise BadParam(f"{name}: expected a date from {DATE_MIN} to {DATE_MAX}, got {day}")
    return day


def bool_param(request: Request, name: str) -> bool:
    value = param(request, name)
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def event_filters(request: Request) -> dict[str, Any]:
    kind = param(request, "kind")
    if kind is not None and kind not in EVENT_KINDS:
        raise BadParam(f"kind: expected one of {', '.join(EVENT_KINDS)}, got {kind[:32]!r}")
    return {
        "agent": param(request, "agent"), "kind": kind, "source": param(request, "source"),
        "since_ts": int_param(request, "since"), "until_ts": int_param(request, "until"),
        "limit": limit_param(request),
    }


def limit_param(request: Request) -> int:
    """``?limit=``: 1 to 1000, 200 when absent."""
    return int_param(request, "limit", lo=1, hi=EVENTS_MAX_LIMIT) or DEFAULT_LIMIT


def encode_cursor(value: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(value), separators=(",", ":")).encode()).decode().rstrip("=")


def cursor_param(request: Request, shape: Sequence[type]) -> list[Any] | None:
    """``?before=``: a cursor a previous page gave (opaque to clients), checked against ``shape``."""
    raw = request.query_params.get("before")
    if not raw:
        return None
    bad = BadParam("before: expected a cursor from a previous page's Link header")
    if len(raw) > MAX_CURSOR_CHARS or not raw.isascii():
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise bad from None
    if not isinstance(value, list) or len(value) != len(shape):
        raise bad
    for item, kind in zip(value, shape):
        if type(item) is not kind or (isinstance(item, int) and not 0 <= item < 2**63):
            raise bad
    return value


def paged(request: Request, items: Sequence[dict[str, Any]], *, full: bool, cursor_of: Callable[[dict[str, Any]], Sequence[Any]],
          order: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None) -> Response:
    """A JSON list page: ``items`` in paging order (the next page follows the last), cut at MAX_LIST_BYTES.

    ``full``: the query hit its limit, so there may be more. The next page's
    URL is in ``Link: <...>; rel="next"`` and its cursor in ``X-Next-Before``.
    ``order`` puts the kept items in the order the answer shows them.
    """
    kept: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    size = 2
    cut = False
    for item in items:
        body = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        if kept and size + len(body) + 1 > MAX_LIST_BYTES:
            cut = True
            break
        kept.append(item)
        encoded.append(body)
        size += len(body) + 1
    headers = {}
    if kept and (cut or full):
        cursor = encode_cursor(cursor_of(kept[-1]))
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "before"] + [("before", cursor)]
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
        headers["X-Next-Before"] = cursor
    if order is not None:
        shown = order(kept)
        index = {id(item): body for item, body in zip(kept, encoded)}
        encoded = [index[id(item)] for item in shown]
    return Response(b"[" + b",".join(encoded) + b"]", media_type="application/json", headers=headers)


def bad_params(endpoint):
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadParam as exc:
            return json_error(str(exc), 400)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    if getattr(endpoint, "csrf_protected", False):
        guarded.csrf_protected = True  # type: ignore[attr-defined]
    return guarded


def _scope(request: Request):
    return dashboard(request).scope(user_of(request).unit)


def _offset_page(request: Request, items: list[dict[str, Any]]) -> Response:
    """Paging of a list built whole in memory from the plan (agents, units): the cursor is a position."""
    limit = limit_param(request)
    start = (cursor_param(request, (int,)) or [0])[0]
    window = items[start:start + limit]
    for n, item in enumerate(window):
        item["_pos"] = start + n + 1
    response = paged(request, window, full=start + limit < len(items), cursor_of=lambda item: [item["_pos"]])
    for item in window:
        del item["_pos"]
    return response


@bad_params
async def api_agents(request: Request) -> Response:
    d = dashboard(request)
    cursor_param(request, (int,))
    agents = await run_in_threadpool(lambda: d.agents(_scope(request)))
    return _offset_page(request, agents)


@bad_params
async def api_alarms(request: Request) -> Response:
    """Newest first; each with only the last step of its trail (the alarm's own route has all of it)."""
    d = dashboard(request)
    include_closed = bool_param(request, "all")
    limit = limit_param(request)
    before = cursor_param(request, (int,))
    alarms, full = await run_in_threadpool(lambda: d.alarm_page(_scope(request), include_closed=include_closed,
                                                                 before_id=before[0] if before else None, limit=limit))
    return paged(request, alarms, full=full, cursor_of=lambda a: [a["id"]])


@bad_params
async def api_alarm(request: Request) -> Response:
    alarm_id = _alarm_id(request)
    d = dashboard(request)
    alarm = await run_in_threadpool(lambda: d.alarm(_scope(request), alarm_id))
    return JSONResponse(alarm) if alarm else json_error(f"alarm {alarm_id} not found", 404)


def ascii_id(raw: str) -> int | None:
    """An id from a URL: ASCII digits only. ``str.isdigit`` also says yes to "²" and "٣",
    which ``int`` then refuses (or reads as Arabic-Indic digits): that answered 500."""
    if not 1 <= len(raw) <= 18 or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def _alarm_id(request: Request) -> int:
    raw = request.path_params["alarm_id"]
    number = ascii_id(raw)
    if number is None:
        raise BadParam(f"alarm id: expected a number, got {raw[:32]!r}")
    return number


@bad_params
async def api_snapshot(request: Request) -> Response:
    """GET /api/alarms/<id>/snapshots/<n>: a JPEG kept with the alarm (issue 14), never fetched from the camera here."""
    alarm_id = _alarm_id(request)
    raw = request.path_params["n"]
    n = ascii_id(raw) if len(raw) <= 9 else None
    if not n:
        raise BadParam(f"snapshot number: expected 1, 2, ..., got {raw[:32]!r}")
    d = dashboard(request)
    jpeg = await run_in_threadpool(lambda: d.snapshot(_scope(request), alarm_id, n))
    if jpeg is None:
        return json_error(f"alarm {alarm_id} has no snapshot {n}", 404)
    return Response(jpeg, media_type="image/jpeg")  # no-store (SecurityHeaders): control-room PCs are shared


@bad_params
@csrf_protected
async def api_ack(request: Request) -> Response:
    """POST /api/alarms/<id>/ack: acknowledged by the logged-in user, now."""
    alarm_id = _alarm_id(request)
    d = dashboard(request)
    user = user_of(request)
    try:
        alarm = await run_in_threadpool(lambda: d.acknowledge(d.scope(user.unit), alarm_id, user.name))
    except AckRefused as exc:
        return json_error(str(exc), exc.status, alarm=exc.alarm)
    _LOGGER.info("alarm %s acknowledged by %s", alarm_id, user.name)
    return JSONResponse(alarm)


@bad_params
async def api_quarantine(request: Request) -> Response:
    """Newest first, without the payloads (``gridpatrol quarantine --json`` has them)."""
    d = dashboard(request)
    limit = limit_param(request)
    before = cursor_param(request, (int,))
    rows = await run_in_threadpool(lambda: d.quarantined(_scope(request), before_id=before[0] if before else None,
                                                         limit=limit + 1))
    return paged(request, rows[:limit], full=len(rows) > limit, cursor_of=lambda q: [q["id"]])


@bad_params
async def api_events(request: Request) -> Response:
    """docs/reference.md's order (by agent, then eseq) within a page; pages go back in time."""
    filters = event_filters(request)
    before = cursor_param(request, (int, str, int))
    d = dashboard(request)
    events, more = await run_in_threadpool(lambda: d.events_page(_scope(request), **filters, by_time=True,
                                                                 before=tuple(before) if before else None))
    newest_first = list(reversed(events))
    return paged(request, newest_first, full=more,
                 cursor_of=lambda e: [e["ts"], e["agent"], e["eseq"]],
                 order=lambda kept: sorted(kept, key=lambda e: (e["agent"], e["eseq"])))


@bad_params
async def api_units(request: Request) -> Response:
    date = date_param(request)
    d = dashboard(request)

    def build() -> list[dict[str, Any]]:
        return d.units_tree(_scope(request), date or d.tonight())

    cursor_param(request, (int,))
    return _offset_page(request, await run_in_threadpool(build))


@bad_params
async def api_completion(request: Request) -> Response:
    date = date_param(request)
    fmt = param(request, "format") or "json"
    if fmt not in ("json", "csv"):
        raise BadParam(f"format: expected json or csv, got {fmt[:32]!r}")
    d = dashboard(request)
    day = date or d.tonight()
    if fmt == "csv":
        scoped = await run_in_threadpool(lambda: d.scoped_report(_scope(request), day))
        if scoped is None:
            return json_error("no plan imported yet", 404)
        # The same CSV as `gridpatrol report completion --format csv`, with a BOM
        # so that the spreadsheet the office opens it in reads Chinese names right.
        body = "\ufeff" + render_csv(scoped)
        return Response(body.encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="completion-{day.isoformat()}.csv"'})
    report = await run_in_threadpool(lambda: d.report(_scope(request), day))
    if report is None:
        return json_error("no plan imported yet", 404)
    return JSONResponse(report)


async def api_stream(request: Request) -> Response:
    hub = request.app.state.hub
    if hub.client_count >= MAX_STREAMS:
        return JSONResponse({"error": "too many live streams"}, status_code=503, headers={"Retry-After": "10"})
    scope = await run_in_threadpool(lambda: _scope(request))
    session = request.scope.get("session_obj")
    users = request.app.state.users
    name = user_of(request).name

    def still_valid() -> bool:
        user = users.session_user(session.sid) if session is not None and session.sid else None
        return user is not None and user.name == name

    return StreamingResponse(hub.stream(scope, still_valid=still_valid), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def api_routes() -> list[Route]:
    return [
        Route("/healthz", healthz),
        Route("/api/agents", api_agents),
        Route("/api/alarms", api_alarms),
        Route("/api/alarms/{alarm_id}", api_alarm),
        Route("/api/alarms/{alarm_id}/ack", api_ack, methods=["POST"]),
        Route("/api/alarms/{alarm_id}/snapshots/{n}", api_snapshot),
        Route("/api/events", api_events),
        Route("/api/quarantine", api_quarantine),
        Route("/api/units", api_units),
        Route("/api/completion", api_completion),
        Route("/api/stream", api_stream),
    ]
