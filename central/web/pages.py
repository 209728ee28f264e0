"""Pages for people: server-rendered with Jinja2, brought to life by static/app.js."""

from __future__ import annotations

import datetime as dt
import logging
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from central.enrolment import DEFAULT_DAYS
from central.plan.model import TIERS
from central.web.api import EVENT_KINDS, BadParam, ascii_id, cursor_param, date_param, encode_cursor, param
from central.web.auth import Session, clear_session_cookie, client_address, safe_next, session_for_anonymous, set_session_cookie, user_of
from central.web.chart import completion_chart
from central.web.csrf import csrf_protected
from central.web.i18n import LANG_COOKIE, LANGUAGES, Translator, negotiate
from central.web.logins import GateBusy, LoginThrottle, PasswordGate
from central.web.views import HISTORY_DAYS, AckRefused, Dashboard

_LOGGER = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).with_name("templates")
EVENT_PAGE_LIMIT = 300
DETAILS_MAX_CHARS = 300  # 300 rows of at most this: the events page stays under a megabyte
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600
_DETAIL_SKIP = {"agent", "eseq", "kind", "source", "ts", "received_ts", "replayed", "unplanned"}


def make_environment(asset_version: str, tz: ZoneInfo) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["asset_version"] = asset_version
    env.filters.update(time_filters(tz))
    return env


def time_filters(tz: ZoneInfo) -> dict[str, Any]:
    """UTC ms to the control room's local time; "–" for none, and for a time no calendar holds (an agent's
    clock can say anything, and its events are stored all the same)."""

    def local(ms: Any) -> dt.datetime | None:
        if not isinstance(ms, (int, float)):
            return None
        try:
            return dt.datetime.fromtimestamp(ms / 1000, tz)
        except (OverflowError, ValueError, OSError):
            return None

    def clock(ms: Any) -> str:
        d = local(ms)
        return d.strftime("%H:%M:%S") if d else "–"

    def hm(ms: Any) -> str:
        d = local(ms)
        return d.strftime("%H:%M") if d else "–"

    def datetime_(ms: Any) -> str:
        d = local(ms)
        return d.strftime("%Y-%m-%d %H:%M:%S") if d else "–"

    return {"clock": clock, "hm": hm, "datetime": datetime_}


def translator(request: Request) -> Translator:
    return Translator(negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE)))


class Renderer:
    """Renders a page with what every page needs (user, scope, language, CSRF token, tz)."""

    def __init__(self, env: Environment, dashboard: Dashboard) -> None:
        self.env = env
        self.dashboard = dashboard

    def render(self, request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
        t = translator(request)
        user = request.scope.get("user_obj")
        session = request.scope.get("session_obj")
        base: dict[str, Any] = {"request": request, "t": t, "lang": t.lang, "user": user,
                                "csrf": session.csrf if session else ""}
        if user is not None:
            base["scope_name"] = self.dashboard.unit_name(self.dashboard.plan(), user.unit)
            base["is_admin"] = self.dashboard.scope(user.unit).is_top
            base["js_config"] = {"lang": t.lang, "tz": self.dashboard.tz.key, "csrf": base["csrf"],
                                 "asset": self.env.globals.get("asset_version", ""),
                                 "page": context.get("page", ""), "i18n": t.js_catalog(),
                                 "active": [a["id"] for a in context.get("_active", ())]}
        html = self.env.get_template(name).render({**base, **context})
        return HTMLResponse(html, status_code=status)


def renderer(request: Request) -> Renderer:
    return request.app.state.renderer


def _scope(request: Request):
    return request.app.state.dashboard.scope(user_of(request).unit)


# --- login, logout, language ---------------------------------------------------


async def login_page(request: Request) -> Response:
    now = request.app.state.clock()
    session, fresh = session_for_anonymous(request, now)
    if request.scope.get("user_obj") is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    request.scope["session_obj"] = session
    response = renderer(request).render(request, "login.html", {
        "next": safe_next(request.query_params.get("next")), "error": None, "name": ""})
    if fresh:
        set_session_cookie(response, request, request.app.state.codec, session)
    return response


@csrf_protected
async def login_submit(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=8)
    name, password = str(form.get("name", ""))[:128], str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    throttle: LoginThrottle = request.app.state.throttle
    address = client_address(request)
    t = translator(request)
    # Throttled before any hashing: a refused try costs no argon2 memory or CPU.
    wait = throttle.retry_after(name, address)
    if wait == 0:
        if throttle.begin(name, address):
            try:
                return await _check_password(request, name, password, target, address)
            finally:
                throttle.end(name, address)
        wait = 1.0  # this name from this address (or too much from this address) is being checked right now
    _LOGGER.warning("login for %r from %s refused: too many failures or tries at once", name, address)
    response = renderer(request).render(request, "login.html", {
        "next": target, "name": name, "error": t("Too many failed logins; try again in {s} s.", s=int(wait) + 1)},
        status=429)
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


async def _check_password(request: Request, name: str, password: str, target: str, address: str) -> Response:
    """The argon2 check inside the gate, then the session: what login_submit does once the throttle let it through."""
    throttle: LoginThrottle = request.app.state.throttle
    gate: PasswordGate = request.app.state.password_gate
    t = translator(request)
    response: Response
    try:
        user = await gate.run(lambda: request.app.state.users.verify(name, password))
    except GateBusy:
        _LOGGER.warning("login for %r from %s refused: too many password checks under way", name, address)
        response = renderer(request).render(request, "login.html", {
            "next": target, "name": name, "error": t("Busy; try again in a few seconds.")}, status=503)
        response.headers["Retry-After"] = "2"
        return response
    if user is None:
        throttle.failed(name, address)
        _LOGGER.warning("failed login for %r from %s", name, address)
        return renderer(request).render(request, "login.html", {
            "next": target, "name": name, "error": t("Wrong name or password.")}, status=401)
    throttle.succeeded(name, address)
    _LOGGER.info("%s logged in from %s", user.name, address)
    # A new token at login: a token planted before it (session fixation) is worthless after.
    response = RedirectResponse(target, status_code=303)
    codec = request.app.state.codec
    sid = await run_in_threadpool(request.app.state.users.start_session, user.name, codec.max_age_s)
    set_session_cookie(response, request, codec, Session.fresh(user.name, request.app.state.clock(), sid))
    return response


@csrf_protected
async def logout(request: Request) -> Response:
    """Ends the session server-side: the cookie, even if kept or copied, never works again."""
    session = request.scope.get("session_obj")
    if session is not None and session.sid is not None:
        await run_in_threadpool(request.app.state.users.end_session, session.sid)
        _LOGGER.info("%s logged out", session.user)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, request)
    return response


async def switch_language(request: Request) -> Response:
    """GET /lang?to=zh-CN&next=/agents: a preference cookie, no account state, so a link will do."""
    lang = request.query_params.get("to")
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE_S, path="/", samesite="strict",
                            httponly=True, secure=request.url.scheme == "https")
    return response


# --- pages --------------------------------------------------------------------


def _common(d: Dashboard, scope: Any, page: str) -> dict[str, Any]:
    active = d.alarms(scope)
    return {"page": page, "active_count": len(active), "_active": active, "team_scope": scope.team}


async def alarms_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard
    scope = _scope(request)
    if scope.team is not None:  # a team leader's home is the team's page
        return RedirectResponse(f"/teams/{quote(scope.team, safe='')}", status_code=303)

    def build() -> dict[str, Any]:
        scope = _scope(request)
        ctx = _common(d, scope, "alarms")
        everything = d.alarms(scope, include_closed=True)
        agents = d.agents(scope)
        plan = scope.plan
        day_ago = int((d.clock() - 86400) * 1000)
        scans = d.events(scope, kind="scan", since_ts=day_ago, limit=20, by_time=True)
        return {**ctx, "active": sorted(ctx["_active"], key=card_order),
                "recent": [a for a in everything if a["state"] != "active"][:30],
                "down": [a for a in agents if a["state"] != "online"][:50],
                "counts": _counts(agents), "scans": list(reversed(scans)),
                "agent_names": {a["agent"]: a["name"] for a in agents},
                "member_names": _member_names(plan, scans),
                "no_plan": plan is None}

    return renderer(request).render(request, "alarms.html", await run_in_threadpool(build))


def card_order(alarm: dict[str, Any]) -> tuple[int, int, int]:
    """Where an active card stands: panics first, then by the time raised, oldest first.
    A new alarm or an escalation never moves a card that is already shown (app.js keeps the same order)."""
    return (0 if alarm.get("kind") == "panic" else 1, int(alarm.get("raised_ts") or 0), int(alarm.get("id") or 0))


def _counts(agents: list[dict[str, Any]]) -> dict[str, int]:
    online = sum(1 for a in agents if a["state"] == "online")
    return {"online": online, "offline": len(agents) - online}


def _member_names(plan: Any, scans: list[dict[str, Any]]) -> dict[str, str]:
    """The member holding each scanned card, enrolled by tag or by printed number."""
    names: dict[str, str] = {}
    for e in scans if plan is not None else ():
        tag, fmt = e.get("tag"), e.get("fmt")
        if not isinstance(tag, str):
            continue
        hit = plan.member_of(tag, fmt if isinstance(fmt, str) else None)
        if hit is not None:
            names[tag] = hit[1].name
    return names


async def agents_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard

    def build() -> dict[str, Any]:
        scope = _scope(request)
        agents = d.agents(scope)
        return {**_common(d, scope, "agents"), "agents": agents, "counts": _counts(agents),
                "quarantine": d.quarantined(scope, limit=50)}

    return renderer(request).render(request, "agents.html", await run_in_threadpool(build))


async def units_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard
    date = _date_or_400(request)
    if isinstance(date, Response):
        return date

    def build() -> dict[str, Any]:
        scope = _scope(request)
        day = date or d.tonight()
        plan = scope.plan
        return {**_common(d, scope, "units"), "tree": d.units_tree(scope, day), "date": day.isoformat(),
                "route_names": {r.id: r.name for r in plan.routes} if plan else {}}

    return renderer(request).render(request, "units.html", await run_in_threadpool(build))


def _date_or_400(request: Request) -> dt.date | None | Response:
    try:
        return date_param(request)
    except BadParam as exc:
        return HTMLResponse(f"<p>{escape(str(exc))}</p>", status_code=400)


async def route_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard
    date = _date_or_400(request)
    if isinstance(date, Response):
        return date
    route_id = request.path_params["route_id"]

    def build() -> dict[str, Any] | None:
        scope = _scope(request)
        route = d.route(scope, route_id)
        if route is None:
            return None
        plan = scope.plan
        assert plan is not None
        day = date or d.tonight()
        now_ms = int(d.clock() * 1000)
        rounds = d.timeline(scope, route, day)
        for r in rounds:
            span = max(1, r["close"] - r["slot_start"])
            # Percentages of the strip: the slot, then its tolerance.
            r["end_x"] = round((r["slot_end"] - r["slot_start"]) / span * 100, 2)
            r["now_x"] = round((now_ms - r["slot_start"]) / span * 100, 2) if r["slot_start"] <= now_ms < r["close"] else None
            for n, v in enumerate(r["visits"], 1):
                v["n"] = n
                v["x"] = round(min(98.5, max(1.5, (v["ts"] - r["slot_start"]) / span * 100)), 2) if v["ts"] is not None else None
            r["missing"] = [v for v in r["visits"] if v["ts"] is None and not r["is_open"]]
        teams = {tm.id: tm.name or tm.id for tm in plan.teams}
        return {**_common(d, scope, "route"), "route": route, "rounds": rounds, "date": day.isoformat(),
                "prev_date": (day - dt.timedelta(days=1)).isoformat(), "next_date": (day + dt.timedelta(days=1)).isoformat(),
                "unit_name": d.unit_name(plan, route.unit), "teams": [teams.get(x, x) for x in route.teams],
                "windows": [{"span": f"{w.start_min // 60:02d}:{w.start_min % 60:02d}–{w.end_min // 60:02d}:{w.end_min % 60:02d}",
                             "every": w.every_min, "tolerance": w.tolerance_min} for w in route.windows]}

    ctx = await run_in_threadpool(build)
    if ctx is None:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    return renderer(request).render(request, "route.html", ctx)


def _day_ms(request: Request, name: str, tz: Any, *, end: bool) -> tuple[int | None, str | None]:
    """A local date filter as UTC ms: its midnight, or the next midnight for an end."""
    day = date_param(request, name)
    if day is None:
        return None, None
    text = day.isoformat()
    if end:
        day += dt.timedelta(days=1)
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp() * 1000), text


async def events_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard
    error = None
    try:
        kind = param(request, "kind")
        if kind is not None and kind not in EVENT_KINDS:
            raise BadParam(f"kind: expected one of {', '.join(EVENT_KINDS)}")
        f = {"agent": param(request, "agent"), "kind": kind, "source": param(request, "source")}
        since, f["since_date"] = _day_ms(request, "since_date", d.tz, end=False)
        until, f["until_date"] = _day_ms(request, "until_date", d.tz, end=True)
        before = cursor_param(request, (int, str, int))
    except BadParam as exc:
        error, f, since, until, before = str(exc), {}, None, None, None

    def build() -> dict[str, Any]:
        scope = _scope(request)
        agents = d.agents(scope)
        events, more = d.events_page(scope, agent=f.get("agent"), kind=f.get("kind"), source=f.get("source"),
                                     since_ts=since, until_ts=until, limit=EVENT_PAGE_LIMIT, by_time=True,
                                     before=tuple(before) if before else None)
        older = None
        if more and events:
            oldest = events[0]
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "before"]
            query.append(("before", encode_cursor([oldest["ts"], oldest["agent"], oldest["eseq"]])))
            older = "/events?" + urlencode(query)
        for e in events:
            details = " ".join(f"{k}={' '.join(v) if isinstance(v, list) else v}"
                               for k, v in e.items() if k not in _DETAIL_SKIP)
            # A row shows the start; the event's whole text is one click away in the API.
            e["details"] = details if len(details) <= DETAILS_MAX_CHARS else details[:DETAILS_MAX_CHARS] + "…"
            hit = scope.plan.member_of(e["tag"], e.get("fmt")) if scope.plan and isinstance(e.get("tag"), str) else None
            if hit is not None:
                e["details"] += f" ({hit[1].name})"
        return {**_common(d, scope, "events"), "events": list(reversed(events)), "f": f, "kinds": EVENT_KINDS,
                "agent_choices": agents, "agent_names": {a["agent"]: a["name"] for a in agents},
                "live": until is None and before is None, "error": error, "older": older}

    return renderer(request).render(request, "events.html", await run_in_threadpool(build))


async def team_page(request: Request) -> Response:
    """A team's own page, for the leader's phone: tonight's rounds of its routes, refreshed live."""
    d: Dashboard = request.app.state.dashboard

    def build() -> dict[str, Any] | None:
        scope = _scope(request)
        team = d.team(scope, request.path_params["team_id"])
        if team is None:
            return None
        day = d.tonight()
        return {**_common(d, scope, "team"), "team": team, "routes": d.team_rounds(scope, team, day),
                "date": day.isoformat()}

    ctx = await run_in_threadpool(build)
    if ctx is None:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    return renderer(request).render(request, "team.html", ctx)


async def cards_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard

    def build() -> dict[str, Any]:
        scope = _scope(request)
        return {**_common(d, scope, "cards"), "cards": d.unknown_cards(scope), "days": DEFAULT_DAYS}

    return renderer(request).render(request, "cards.html", await run_in_threadpool(build))


async def report_page(request: Request) -> Response:
    d: Dashboard = request.app.state.dashboard
    date = _date_or_400(request)
    if isinstance(date, Response):
        return date
    tier = request.query_params.get("tier") or None
    if tier not in (None, *(str(x) for x in TIERS)):
        tier = None
    t = translator(request)

    def build() -> dict[str, Any]:
        scope = _scope(request)
        plan = scope.plan
        day = date or d.tonight()
        report = d.report(scope, day)
        ctx: dict[str, Any] = {**_common(d, scope, "report"), "date": day.isoformat(), "report": report,
                               "prev_date": (day - dt.timedelta(days=1)).isoformat(),
                               "next_date": (day + dt.timedelta(days=1)).isoformat(),
                               "tiers": [str(x) for x in TIERS], "tier": tier, "history_days": HISTORY_DAYS}
        if report is None or plan is None:
            return ctx
        depth0 = len(plan.lineage(scope.unit))
        order = {u: i for i, u in enumerate(plan.tree_order())}
        units = sorted(report["units"], key=lambda u: order.get(u["unit"], 1 << 30))
        for u in units:
            u["depth"] = len(plan.lineage(u["unit"])) - depth0
        ctx["units"] = [u for u in units if tier is None or u.get("tier") == tier]
        for r in report["rounds"]:
            try:
                r["slot_start_local"] = dt.datetime.fromisoformat(r["slot_start"]).astimezone(d.tz).strftime("%m-%d %H:%M")
            except (TypeError, ValueError):
                r["slot_start_local"] = str(r.get("slot_start"))
        ctx["rounds"] = sorted(report["rounds"], key=lambda r: (r.get("slot_start", ""), r.get("route", "")))
        ctx["route_names"] = {r.id: r.name for r in plan.routes}
        ctx["unit_names"] = {u.id: u.name for u in plan.units}
        ctx["cp_names"] = {c.id: c.name for c in plan.checkpoints if c.name}
        history = d.history(scope)
        ctx["chart"] = completion_chart(history["dates"], history["series"], label=t, empty_text=t("no data"))
        return ctx

    return renderer(request).render(request, "report.html", await run_in_threadpool(build))


async def alarm_fragment(request: Request) -> Response:
    """One alarm card, as the alarms page shows it; the live script swaps it in."""
    raw = request.path_params["alarm_id"]
    d: Dashboard = request.app.state.dashboard
    alarm = None
    alarm_id = ascii_id(raw)
    if alarm_id is not None:
        alarm = await run_in_threadpool(lambda: d.alarm(_scope(request), alarm_id))
    if alarm is None:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    return renderer(request).render(request, "alarm_fragment.html", {"a": alarm})


async def alarm_page(request: Request) -> Response:
    """One alarm on a page of its own: the link in a notification (issue 14)."""
    raw = request.path_params["alarm_id"]
    d: Dashboard = request.app.state.dashboard

    def build() -> dict[str, Any] | None:
        scope = _scope(request)
        alarm_id = ascii_id(raw)
        alarm = d.alarm(scope, alarm_id) if alarm_id is not None else None
        return None if alarm is None else {**_common(d, scope, "alarm"), "a": alarm}

    ctx = await run_in_threadpool(build)
    if ctx is None:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    return renderer(request).render(request, "alarm.html", ctx)


@csrf_protected
async def ack_form(request: Request) -> Response:
    """The no-script fallback of the acknowledge button: POST, then back to the alarms."""
    raw = request.path_params["alarm_id"]
    d: Dashboard = request.app.state.dashboard
    user = user_of(request)
    alarm_id = ascii_id(raw)
    if alarm_id is None:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    if alarm_id is not None:
        try:
            await run_in_threadpool(lambda: d.acknowledge(d.scope(user.unit), alarm_id, user.name))
        except AckRefused as exc:
            if exc.status == 404:
                return HTMLResponse(translator(request)("Not found."), status_code=404)
    return RedirectResponse(f"/#alarm-{quote(raw)}", status_code=303)


def page_routes() -> list[Route]:
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/lang", switch_language, methods=["GET"]),
        Route("/", alarms_page),
        Route("/agents", agents_page),
        Route("/units", units_page),
        Route("/routes/{route_id}", route_page),
        Route("/events", events_page),
        Route("/cards", cards_page),
        Route("/teams/{team_id}", team_page),
        Route("/report", report_page),
        Route("/alarms/{alarm_id}", alarm_page),
        Route("/alarms/{alarm_id}/ack", ack_form, methods=["POST"]),
        Route("/fragments/alarm/{alarm_id}", alarm_fragment),
    ]

