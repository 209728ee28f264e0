"""What each page and API answer shows, for one staff member's scope.

Pure composition of the store reader, the plan and the completion report;
no HTTP here. Every method takes the :class:`Scope` and returns plain dicts
with docs/reference.md's field names (plus display keys such as ``unit_name``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable
from zoneinfo import ZoneInfo

from central.alarms import AlarmError
from central.cameras.address import public_address
from central.completion import Authorised, RoundStatus, admitter, judge, slots_for
from central.enrolment import DEFAULT_DAYS, UnknownCard, unknown_cards
from central.plan.model import TIERS, Order, Plan, Route, Team
from central.report import CompletionReport
from central.store.dashboard import StoreReader
from central.web.ports import AlarmActions, CompletionReports, PlanSource
from central.web.scope import TEAM_SCOPE_PREFIX, Scope

_LOGGER = logging.getLogger(__name__)

# The night's date (the date its windows opened) turns over at local noon:
# at 03:00 the control room still looks at the night that began yesterday.
NIGHT_TURNS_AT_HOUR = 12
HISTORY_DAYS = 28
# A past night's report changes only when a late replay arrives; a few
# minutes' staleness in a four-week chart is fine and spares 28 rebuilds.
HISTORY_CACHE_S = 300.0
_STATE_ORDER = {"offline": 0, "disconnected": 1, "unknown": 2, "online": 3}
REPORT_COUNT_KEYS = ("rounds_scheduled", "rounds_complete", "rounds_late", "rounds_incomplete", "rounds_missed", "rounds_open")


class AckRefused(Exception):
    """An acknowledgement that cannot be made; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str, alarm: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.alarm = alarm


class Dashboard:
    def __init__(self, *, reader: StoreReader, plan: PlanSource, alarms: AlarmActions,
                 reports: CompletionReports | None, tz: ZoneInfo, clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.plan_source = plan
        self.alarm_actions = alarms
        self.reports = reports
        self.tz = tz
        self.clock = clock
        self._history_lock = threading.Lock()
        self._history: dict[dt.date, tuple[float, dict[str, Any]]] = {}

    def plan(self) -> Plan | None:
        return self.plan_source.current()

    def scope(self, unit: str) -> Scope:
        return Scope.of(unit, self.plan())

    def unit_name(self, plan: Plan | None, unit: str | None) -> str:
        if plan is not None and unit is not None and unit.startswith(TEAM_SCOPE_PREFIX):
            team = next((t for t in plan.teams if t.id == unit[len(TEAM_SCOPE_PREFIX):]), None)
            return (team.name or team.id) if team is not None else unit
        if plan is None or unit is None or unit not in plan.unit_by_id:
            return unit or ""
        return plan.unit_by_id[unit].name or unit

    # --- agents -------------------------------------------------------------

    def quarantined(self, scope: Scope, *, before_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The quarantine rows of agents the scope sees (a row of no agent: the whole district's desk only)."""
        rows = self.reader.quarantined(before_id=before_id, limit=limit)
        return [r for r in rows if (scope.sees_agent(r["agent"]) if r["agent"] else scope.is_top)]

    def agents(self, scope: Scope) -> list[dict[str, Any]]:
        """Visible agents, the ones needing attention (offline, disconnected) on top."""
        plan = scope.plan
        rows = {row["agent"]: row for row in self.reader.agents() if scope.sees_agent(row["agent"])}
        if plan is not None:
            for entry in plan.agents:  # planned but never heard from: that is news too
                if entry.id not in rows and scope.sees_agent(entry.id):
                    rows[entry.id] = {"agent": entry.id, "state": "unknown", "bdseq": None, "last_seen": None,
                                      "acked_eseq": 0, "first_seen": None, "outbox_depth": None,
                                      "clock_synced": None, "reconnects": None}
        names = {a.id: a.name for a in plan.agents} if plan else {}
        out = []
        for agent, row in rows.items():
            unit = scope.agent_unit(agent)
            out.append({**row, "unit": unit, "unit_name": self.unit_name(plan, unit), "name": names.get(agent, ""),
                        "planned": plan is not None and plan.is_planned(agent)})
        out.sort(key=lambda a: (_STATE_ORDER.get(a["state"], 2), a["agent"]))
        return out

    # --- alarms -------------------------------------------------------------

    def alarms(self, scope: Scope, *, include_closed: bool = False) -> list[dict[str, Any]]:
        return [self._decorate(scope, a) for a in self.reader.alarms(include_closed=include_closed) if scope.sees_alarm(a)]

    def alarm_page(self, scope: Scope, *, include_closed: bool, before_id: int | None,
                   limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` visible alarms older than ``before_id``, newest first; True when there may be more.

        The store is read in batches of ``limit`` and cut to the scope here,
        so a community desk still gets whole pages; at most 20 batches are read
        for one page, which then ends short with its cursor.
        """
        out: list[dict[str, Any]] = []
        cursor = before_id
        for _ in range(20):
            rows = self.reader.alarm_page(include_closed=include_closed, before_id=cursor, limit=limit)
            for row in rows:
                if scope.sees_alarm(row):
                    out.append(self._decorate(scope, row))
                    if len(out) == limit:
                        return out, True
            if len(rows) < limit:
                return out, False
            cursor = rows[-1]["id"]
        return out, True

    def alarm(self, scope: Scope, alarm_id: int) -> dict[str, Any] | None:
        alarm = self.reader.alarm(alarm_id)
        if alarm is None or not scope.sees_alarm(alarm):
            return None
        return self._decorate(scope, alarm)

    def _decorate(self, scope: Scope, alarm: dict[str, Any]) -> dict[str, Any]:
        plan = scope.plan
        names = {a.id: a.name for a in plan.agents} if plan else {}
        alarm["unit_name"] = self.unit_name(plan, alarm.get("unit") or scope.agent_unit(alarm["agent"]))
        alarm["agent_name"] = names.get(alarm["agent"], "")
        alarm["escalated_name"] = self.unit_name(plan, alarm.get("escalated_to")) if alarm.get("escalated_to") else ""
        for step in alarm.get("trail", ()):
            step["unit_name"] = self.unit_name(plan, step.get("unit"))
        # Issue 14: the cameras that watch this input, their streams without credentials.
        cams = plan.cameras_at.get((alarm["agent"], alarm["source"]), ()) if plan else ()
        alarm["cameras"] = [{"id": c.id, "stream": public_address(c.stream) if c.stream else ""} for c in cams]
        return alarm

    def snapshot(self, scope: Scope, alarm_id: int, n: int) -> bytes | None:
        """A snapshot of an alarm the scope sees (issue 14)."""
        if self.alarm(scope, alarm_id) is None:
            return None
        return self.reader.snapshot(alarm_id, n)

    def acknowledge(self, scope: Scope, alarm_id: int, by: str) -> dict[str, Any]:
        """Acknowledge through the alarm book; the alarm as it now stands."""
        alarm = self.alarm(scope, alarm_id)
        if alarm is None:
            # Another unit's alarm answers as an unknown one: no telling what exists elsewhere.
            raise AckRefused(404, f"alarm {alarm_id} not found")
        if alarm["state"] != "active":
            raise AckRefused(409, f"alarm {alarm_id} is already {alarm['state']}", alarm)
        try:
            self.alarm_actions.acknowledge(alarm_id, by, self.clock())
        except AlarmError as exc:  # the book refuses a double ack (a colleague was quicker); any other error is no 409
            now = self.alarm(scope, alarm_id)
            if now is not None and now["state"] != "active":
                raise AckRefused(409, f"alarm {alarm_id} is already {now['state']}", now) from None
            _LOGGER.warning("acknowledging alarm %s failed: %s", alarm_id, exc)
            raise AckRefused(409, f"alarm {alarm_id}: {exc}", now) from None
        return self.alarm(scope, alarm_id) or alarm

    # --- events -------------------------------------------------------------

    def events(self, scope: Scope, **filters: Any) -> list[dict[str, Any]]:
        """:meth:`events_page` without its "more" flag."""
        return self.events_page(scope, **filters)[0]

    def events_page(self, scope: Scope, *, agent: str | None = None, kind: str | None = None, source: str | None = None,
                    since_ts: int | None = None, until_ts: int | None = None, limit: int = 200,
                    by_time: bool = False, before: tuple[int, str, int] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The scope's newest ``limit`` matching events older than ``before``; True when there may be more."""
        known = [a["agent"] for a in self.reader.agents()]
        plan = scope.plan
        if plan is not None:
            known += [a for a in plan.planned_agents if a not in known]
        visible = scope.agent_filter(known)
        if agent is not None:
            visible = [a for a in visible if a == agent]
        return self.reader.events_page(agents=visible, kind=kind, source=source, since_ts=since_ts, until_ts=until_ts,
                                       limit=limit, by_time=by_time, before=before)

    # --- a team's own page -------------------------------------------------

    def team(self, scope: Scope, team_id: str) -> Team | None:
        """The team, if this user may see it: its leader, or staff who see its unit."""
        plan = scope.plan
        team = next((t for t in plan.teams if t.id == team_id), None) if plan is not None else None
        if team is None:
            return None
        return team if scope.team == team_id or (scope.team is None and scope.sees_unit(team.unit)) else None

    def team_rounds(self, scope: Scope, team: Team, date: dt.date) -> list[dict[str, Any]]:
        """The team's routes with their rounds of ``date``, each checkpoint ticked, missing or still to walk."""
        plan = scope.plan
        assert plan is not None
        now_ms = int(self.clock() * 1000)
        out = []
        for route in plan.routes:
            if team.id not in route.teams:
                continue
            rounds = self.timeline(scope, route, date)
            for r in rounds:
                r["now"] = r["slot_start"] <= now_ms < r["close"]
            out.append({"route": route, "rounds": rounds})
        return out

    # --- cards --------------------------------------------------------------

    def unknown_cards(self, scope: Scope, days: int = DEFAULT_DAYS) -> list[UnknownCard]:
        """Cards no member holds, seen at the checkpoints this user sees, in the last ``days`` days."""
        plan = scope.plan
        if plan is None:
            return []
        seen = [s for s in self.reader.card_sightings(int((self.clock() - days * 86_400) * 1000))
                if (cp := plan.checkpoint_at.get((s.agent, s.reader))) is not None and scope.sees_unit(cp.unit)]
        return unknown_cards(plan, seen)

    # --- completion ---------------------------------------------------------

    def tonight(self) -> dt.date:
        local = dt.datetime.fromtimestamp(self.clock(), self.tz)
        return local.date() if local.hour >= NIGHT_TURNS_AT_HOUR else local.date() - dt.timedelta(days=1)

    def _report_obj(self, date: dt.date) -> CompletionReport | None:
        if self.reports is None or self.plan() is None:
            return None
        return self.reports.completion(date)

    def _report(self, date: dt.date) -> dict[str, Any] | None:
        report = self._report_obj(date)
        return None if report is None else report.to_json()

    def scoped_report(self, scope: Scope, date: dt.date) -> CompletionReport | None:
        """The completion report cut to the units and rounds the scope covers."""
        report = self._report_obj(date)
        if report is None:
            return None
        return replace(report, units=tuple(u for u in report.units if scope.sees_unit(u.unit)),
                       rounds=tuple(r for r in report.rounds if scope.sees_unit(r.slot.unit)))

    def report(self, scope: Scope, date: dt.date) -> dict[str, Any] | None:
        """docs/reference.md's report JSON, cut to the scope, with each unit's ``name`` added."""
        report = self.scoped_report(scope, date)
        if report is None:
            return None
        body = report.to_json()
        for u in body["units"]:
            u["name"] = self.unit_name(scope.plan, u.get("unit"))
        return body

    def units_tree(self, scope: Scope, date: dt.date) -> list[dict[str, Any]]:
        """Units of the scope in tree order with depth, own and rolled-up completion."""
        plan = scope.plan
        if plan is None or scope.unit not in plan.unit_by_id:
            return []
        report = self.report(scope, date) or {"units": []}
        stats = {u["unit"]: u for u in report["units"]}
        base = len(plan.lineage(scope.unit))
        out = []
        for unit_id in plan.subtree(scope.unit):
            unit = plan.unit_by_id[unit_id]
            s = stats.get(unit_id, {})
            out.append({
                "unit": unit_id, "name": unit.name, "tier": str(unit.tier), "parent": unit.parent,
                "depth": len(plan.lineage(unit_id)) - base,
                "routes": [r.id for r in plan.routes if r.unit == unit_id],
                **{k: s.get(k) for k in (*REPORT_COUNT_KEYS, "completion")},
                "rollup": s.get("rollup") or {},
            })
        return out

    def history(self, scope: Scope, days: int = HISTORY_DAYS) -> dict[str, Any]:
        """Per tier, each night's mean completion over the scope's units of that tier (rolled up)."""
        last = self.tonight() - dt.timedelta(days=1)  # tonight is still open
        dates = [last - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]
        series: dict[str, list[float | None]] = {}
        plan = scope.plan
        tiers = [str(t) for t in TIERS] if plan else []
        for tier in tiers:
            series[tier] = []
        for date in dates:
            full = self._cached_report(date)
            by_tier: dict[str, list[float]] = {}
            for u in (full or {}).get("units", ()):
                rollup = u.get("rollup") or {}
                if scope.sees_unit(u.get("unit")) and isinstance(rollup.get("completion"), (int, float)):
                    by_tier.setdefault(str(u.get("tier")), []).append(float(rollup["completion"]))
            for tier in tiers:
                values = by_tier.get(tier)
                series[tier].append(sum(values) / len(values) if values else None)
        return {"dates": [d.isoformat() for d in dates], "series": {t: v for t, v in series.items() if any(x is not None for x in v)}}

    def _cached_report(self, date: dt.date) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._history_lock:
            hit = self._history.get(date)
            if hit and now - hit[0] < HISTORY_CACHE_S:
                return hit[1]
        report = self._report(date)
        if report is not None:
            with self._history_lock:
                self._history[date] = (now, report)
                for old in [d for d, (t, _) in self._history.items() if now - t >= HISTORY_CACHE_S]:
                    del self._history[old]
        return report

    # --- a route's rounds ---------------------------------------------------

    def route(self, scope: Scope, route_id: str) -> Route | None:
        plan = scope.plan
        if plan is None or route_id not in plan.route_by_id:
            return None
        route = plan.route_by_id[route_id]
        return route if scope.sees_unit(route.unit) else None

    def timeline(self, scope: Scope, route: Route, date: dt.date) -> list[dict[str, Any]]:
        """Each round of the night: its verdict (the completion engine's) and each checkpoint's visit."""
        plan = scope.plan
        assert plan is not None
        slots = slots_for(route, plan.tz, date)
        if not slots:
            return []
        lo, hi = min(s.start_ms for s in slots), max(s.close_ms for s in slots)
        scans = self._route_scans(plan, route, lo, hi)
        authorised: Authorised = plan.route_tags.get(route.id, frozenset())
        now_ms = int(self.clock() * 1000)
        rounds = []
        for slot in slots:
            verdict = judge(route, slot, scans, now_ms, authorised=authorised)
            visits = self._visits(plan, route, slot.start_ms, slot.end_ms, slot.close_ms, scans, authorised)
            rounds.append({
                "slot_start": slot.start_ms, "slot_end": slot.end_ms, "close": slot.close_ms,
                "status": str(verdict.status), "out_of_order": verdict.out_of_order,
                "unauthorised": list(verdict.unauthorised), "visits": visits,
                "is_open": verdict.status is RoundStatus.OPEN,
            })
        return rounds

    def _route_scans(self, plan: Plan, route: Route, lo_ms: int, hi_ms: int) -> list[tuple[int, str, str, str | None]]:
        where = {(c.agent, c.reader): c.id for c in plan.checkpoints if c.id in route.checkpoints}
        out = []
        for ts, agent, reader, tag, fmt in self.reader.scans({agent for agent, _ in where}, lo_ms, hi_ms):
            cp = where.get((agent, reader))
            if cp is not None:
                out.append((ts, cp, tag, fmt))
        out.sort(key=lambda s: s[0])
        return out

    @staticmethod
    def _visits(plan: Plan, route: Route, start: int, end: int, close: int,
                scans: list[tuple[int, str, str, str | None]], authorised: Authorised) -> list[dict[str, Any]]:
        admit = admitter(authorised)
        first: dict[str, tuple[int, str, str | None]] = {}
        for ts, cp, tag, fmt in scans:
            if start <= ts < close and cp not in first and admit(tag, fmt):
                first[cp] = (ts, tag, fmt)
        visits = []
        latest_before = -1
        for cp in route.checkpoints:
            hit = first.get(cp)
            who = plan.member_of(hit[1], hit[2]) if hit else None
            member = who[1].name if who else None
            # Out of order: scanned before a checkpoint the route puts earlier.
            out_of_order = bool(hit and route.order is not Order.ANY and hit[0] < latest_before)
            if hit and route.order is Order.STRICT:
                latest_before = max(latest_before, hit[0])
            elif hit and route.order is Order.START_THEN_ANY and cp == route.checkpoints[0]:
                latest_before = hit[0]
            cp_obj = plan.checkpoint_by_id.get(cp)
            visits.append({"checkpoint": cp, "name": cp_obj.name if cp_obj else "", "ts": hit[0] if hit else None,
                           "member": member, "late": bool(hit and hit[0] >= end), "out_of_order": out_of_order})
        return visits
