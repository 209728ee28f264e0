"""The completion report of one date: rounds, per-unit counts, rollups, rendering.

Each round is judged by the plan version in force at its slot's start, so a
plan change in the middle of a night judges the rounds before it by the old
plan and those after it by the new one. The unit tree is the union of the
versions that governed the date (a newer version's parent links win), so a unit
dropped by the new plan still shows the rounds it had.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from central.completion import Round, RoundStatus, Scan, Slot, index_scans, judge, local_midnight_ms, route_scans, slots_for
from central.plan.model import Route, Tier, Unit
from central.plan.registry import PlanHistory, PlanVersion

DAY_MS = 86_400_000


@dataclass(slots=True, frozen=True)
class Counts:
    complete: int = 0
    late: int = 0
    incomplete: int = 0
    missed: int = 0
    open: int = 0

    @property
    def scheduled(self) -> int:
        return self.complete + self.late + self.incomplete + self.missed + self.open

    @property
    def completion(self) -> float | None:
        """(complete + late) / (scheduled - open); None while no round has closed."""
        closed = self.scheduled - self.open
        return (self.complete + self.late) / closed if closed else None

    def plus(self, status: RoundStatus, n: int = 1) -> Counts:
        name = str(status)
        return replace(self, **{name: getattr(self, name) + n})

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.complete + other.complete, self.late + other.late, self.incomplete + other.incomplete,
                      self.missed + other.missed, self.open + other.open)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds_scheduled": self.scheduled,
            "rounds_complete": self.complete,
            "rounds_late": self.late,
            "rounds_incomplete": self.incomplete,
            "rounds_missed": self.missed,
            "rounds_open": self.open,
            "completion": self.completion,
        }


@dataclass(slots=True, frozen=True)
class UnitRow:
    unit: str
    tier: Tier
    name: str
    own: Counts  # the unit's own routes
    rollup: Counts  # the unit and everything below it

    def to_json(self) -> dict[str, Any]:
        head = {"unit": self.unit, "tier": str(self.tier)}
        return {**head, **self.own.to_json(), "rollup": {**head, **self.rollup.to_json()}}


@dataclass(slots=True, frozen=True)
class CompletionReport:
    date: dt.date
    units: tuple[UnitRow, ...]
    rounds: tuple[Round, ...]

    def to_json(self, tier: Tier | None = None) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "units": [u.to_json() for u in self.units if tier is None or u.tier is tier],
            "rounds": [r.to_json() for r in self.rounds],
        }


# -- which rounds a date has ---------------------------------------------------


def planned_slots(history: PlanHistory, day: dt.date) -> list[tuple[PlanVersion, Route, Slot]]:
    """Every round of ``day`` with the version and route that judge it."""
    out: list[tuple[PlanVersion, Route, Slot]] = []
    utc_midnight = int(dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.timezone.utc).timestamp() * 1000)
    # Wide enough for any zone's offset and a window opening late and lasting a day.
    for v in history.between(utc_midnight - DAY_MS, utc_midnight + 3 * DAY_MS):
        tz = v.plan.tz
        for route in v.plan.routes:
            for slot in slots_for(route, tz, day):
                if history.at(slot.start_ms) is v:
                    out.append((v, route, slot))
    out.sort(key=lambda x: (x[2].start_ms, x[2].route, x[2].window))
    return out


def scan_range(slots: Iterable[tuple[PlanVersion, Route, Slot]]) -> tuple[int, int] | None:
    """``[lo, hi)`` of scan times that can count for these rounds."""
    starts, closes = [], []
    for _, _, s in slots:
        starts.append(s.start_ms)
        closes.append(s.close_ms)
    return (min(starts), max(closes)) if starts else None


def unit_tree(history: PlanHistory, day: dt.date, extra: Iterable[PlanVersion] = ()) -> dict[str, Unit]:
    """Units of every version governing ``day`` (and ``extra``), newer entries winning."""
    latest = history.latest
    if latest is None:
        return {}
    lo = local_midnight_ms(day, latest.plan.tz)
    versions = {v.version: v for v in history.between(lo, lo + 2 * DAY_MS)}
    versions.update({v.version: v for v in extra})
    if not versions:
        at = history.at(lo) or latest
        versions[at.version] = at
    units: dict[str, Unit] = {}
    for v in sorted(versions.values(), key=lambda v: (v.start_ms, v.version)):
        for u in v.plan.units:
            units.pop(u.id, None)  # re-insert: keep the newer version's order
            units[u.id] = u
    return units


def tree_order(units: Mapping[str, Unit]) -> list[str]:
    """Each top unit followed depth-first by what lies below it."""
    kids: dict[str, list[str]] = {uid: [] for uid in units}
    tops = []
    for u in units.values():
        if u.parent is not None and u.parent in kids and u.parent != u.id:
            kids[u.parent].append(u.id)
        else:
            tops.append(u.id)
    out: list[str] = []
    seen: set[str] = set()
    stack = list(reversed(tops))
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen.add(uid)
        out.append(uid)
        stack.extend(reversed(kids[uid]))
    return out


def rollup(units: Mapping[str, Unit], own: Mapping[str, Counts]) -> list[UnitRow]:
    order = tree_order(units)
    total: dict[str, Counts] = {uid: own.get(uid, Counts()) for uid in order}
    for uid in reversed(order):  # children come after their parent: add them up first
        parent = units[uid].parent
        if parent is not None and parent in total and parent != uid:
            total[parent] = total[parent] + total[uid]
    return [UnitRow(uid, units[uid].tier, units[uid].name, own.get(uid, Counts()), total[uid]) for uid in order]


# -- the report ----------------------------------------------------------------


def build_report(history: PlanHistory, day: dt.date, scans: Iterable[Scan], now_ms: int) -> CompletionReport:
    """Judge every round of ``day`` from ``scans`` (by time they happened)."""
    planned = planned_slots(history, day)
    return judge_planned(history, day, planned, scans, now_ms)


def judge_planned(history: PlanHistory, day: dt.date, planned: list[tuple[PlanVersion, Route, Slot]],
                  scans: Iterable[Scan], now_ms: int) -> CompletionReport:
    scans = list(scans)
    by_version: dict[int, dict[str, list[tuple[int, str, str | None]]]] = {}
    rounds: list[Round] = []
    tally: dict[str, dict[str, int]] = {}
    for v, route, slot in planned:
        by_cp = by_version.get(v.version)
        if by_cp is None:
            by_cp = by_version[v.version] = index_scans(scans, v.plan.checkpoint_at)
        rs = route_scans(route, by_cp, slot.start_ms, slot.close_ms)
        r = judge(route, slot, rs, now_ms, authorised=v.plan.route_tags[route.id], plan_version=v.version)
        rounds.append(r)
        per_unit = tally.setdefault(route.unit, {})
        per_unit[r.status] = per_unit.get(r.status, 0) + 1
    own = {unit: Counts(**{str(k): n for k, n in t.items()}) for unit, t in tally.items()}
    units = unit_tree(history, day, {v.version: v for v, _, _ in planned}.values())
    return CompletionReport(day, tuple(rollup(units, own)), tuple(rounds))


def scans_between(store: Any, lo_ms: int, hi_ms: int) -> list[Scan]:
    """Scans in central's store that happened (``ts_est``) in ``[lo, hi)``."""
    return [Scan(ts=ts, agent=agent, reader=source, tag=tag, eseq=eseq, fmt=fmt if isinstance(fmt, str) else None)
            for agent, source, ts, eseq, tag, fmt in store.scan_rows(lo_ms, hi_ms) if isinstance(tag, str)]


def report_from_store(store: Any, history: PlanHistory, day: dt.date, now_ms: int) -> CompletionReport:
    """The report with scans read from central's store, counted by when they happened."""
    planned = planned_slots(history, day)
    span = scan_range(planned)
    scans = scans_between(store, span[0], span[1]) if span is not None else []
    return judge_planned(history, day, planned, scans, now_ms)


# -- rendering -----------------------------------------------------------------


def render_json(report: CompletionReport, tier: Tier | None = None) -> str:
    return json.dumps(report.to_json(tier), ensure_ascii=False, indent=2)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _flag_text(r: Round) -> str:
    parts = []
    if r.out_of_order:
        parts.append("out-of-order")
    for cp, n in sorted(r.repeated.items()):
        parts.append(f"{cp} x{n}")
    if r.min_gap_s is not None:
        parts.append(f"min-gap {r.min_gap_s:g}s")
    if r.unauthorised:
        parts.append("unauthorised " + " ".join(r.unauthorised))
    return "; ".join(parts)


_COUNT_HEAD = ("scheduled", "complete", "late", "incomplete", "missed", "open", "completion")


def _count_cells(c: Counts) -> list[str]:
    return [str(c.scheduled), str(c.complete), str(c.late), str(c.incomplete), str(c.missed), str(c.open), _pct(c.completion)]


def render_table(report: CompletionReport, tier: Tier | None = None) -> str:
    units = [u for u in report.units if tier is None or u.tier is tier]
    rows = [["unit", "tier", *_COUNT_HEAD, "rollup", "rollup %"]]
    for u in units:
        indent = "  " * u.tier.rank if tier is None else ""
        rows.append([indent + u.unit, str(u.tier), *_count_cells(u.own), str(u.rollup.scheduled), _pct(u.rollup.completion)])
    out = [f"Patrol completion for {report.date.isoformat()}", "", *_columns(rows), ""]
    rows = [["route", "unit", "slot start", "status", "scanned", "missing", "flags"]]
    for r in report.rounds:
        rows.append([r.slot.route, r.slot.unit, r.slot.start_iso, str(r.status), " ".join(r.scanned) or "-",
                     " ".join(r.missing) or "-", _flag_text(r)])
    out += _columns(rows) if report.rounds else ["no rounds scheduled"]
    return "\n".join(out) + "\n"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


_CSV_HEAD = ["record", "date", "unit", "tier", "route", "slot_start", "status", "scanned", "missing", "flags",
             "rounds_scheduled", "rounds_complete", "rounds_late", "rounds_incomplete", "rounds_missed", "rounds_open",
             "completion", "rollup_scheduled", "rollup_complete", "rollup_late", "rollup_incomplete", "rollup_missed",
             "rollup_open", "rollup_completion"]


def render_csv(report: CompletionReport, tier: Tier | None = None) -> str:
    """One table: ``record`` is ``unit`` or ``round``; fractions unrounded, empty for none."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_HEAD)
    day = report.date.isoformat()

    def counts(c: Counts) -> list[Any]:
        return [c.scheduled, c.complete, c.late, c.incomplete, c.missed, c.open, "" if c.completion is None else repr(c.completion)]

    for u in report.units:
        if tier is None or u.tier is tier:
            w.writerow(["unit", day, u.unit, str(u.tier), "", "", "", "", "", "", *counts(u.own), *counts(u.rollup)])
    for r in report.rounds:
        w.writerow(["round", day, r.slot.unit, "", r.slot.route, r.slot.start_iso, str(r.status), " ".join(r.scanned),
                    " ".join(r.missing), _flag_text(r), *[""] * 14])
    return buf.getvalue()
