"""The JSON API (docs/api.md): every answer cut to the caller's scope.

Store reads run on the thread pool; the event loop only routes and encodes.
Query parameters are outside input: a bad one is a 400 that names it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from central.report import render_csv
from central.web import WebError
from central.web.auth import json_error, user_of
from central.web.csrf import csrf_protected
from central.web.reader import EVENTS_MAX_LIMIT
from central.web.views import AckRefused, Dashboard

_LOGGER = logging.getLogger(__name__)

EVENT_KINDS = ("alarm", "restore", "tamper", "panic", "scan", "fault", "output")
MAX_PARAM_CHARS = 128
# Nights the dashboard will talk about; beyond these a date is a typo (and
# date arithmetic at year 1 or 9999 would overflow).
DATE_MIN, DATE_MAX = dt.date(2000, 1, 1), dt.date(2099, 12, 31)


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
        "limit": int_param(request, "limit", lo=1, hi=EVENTS_MAX_LIMIT) or 500,
    }


def bad_params(endpoint):  # type: ignore[no-untyped-def]
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


def _scope(request: Request):  # type: ignore[no-untyped-def]
    return dashboard(request).scope(user_of(request).unit)


@bad_params
async def api_agents(request: Request) -> Response:
    d = dashboard(request)
    return JSONResponse(await run_in_threadpool(lambda: d.agents(_scope(request))))


@bad_params
async def api_alarms(request: Request) -> Response:
    d = dashboard(request)
    include_closed = bool_param(request, "all")
    return JSONResponse(await run_in_threadpool(lambda: d.alarms(_scope(request), include_closed=include_closed)))


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
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise BadParam(f"snapshot number: expected 1, 2, ..., got {raw[:32]!r}")
    d = dashboard(request)
    jpeg = await run_in_threadpool(lambda: d.snapshot(_scope(request), alarm_id, int(raw)))
    if jpeg is None:
        return json_error(f"alarm {alarm_id} has no snapshot {int(raw)}", 404)
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
async def api_events(request: Request) -> Response:
    filters = event_filters(request)
    d = dashboard(request)
    return JSONResponse(await run_in_threadpool(lambda: d.events(_scope(request), **filters)))


@bad_params
async def api_units(request: Request) -> Response:
    date = date_param(request)
    d = dashboard(request)

    def build() -> list[dict[str, Any]]:
        return d.units_tree(_scope(request), date or d.tonight())

    return JSONResponse(await run_in_threadpool(build))


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
    scope = await run_in_threadpool(lambda: _scope(request))
    return StreamingResponse(hub.stream(scope), media_type="text/event-stream",
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
        Route("/api/units", api_units),
        Route("/api/completion", api_completion),
        Route("/api/stream", api_stream),
    ]
