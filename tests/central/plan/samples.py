"""Plans and helpers shared by the plan, completion, report, tracker and alarm tests."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from central.completion import Scan, to_ms
from central.plan.model import Plan
from central.plan.parse import parse_plan_bytes
from central.plan.registry import _NEVER, PlanHistory, PlanVersion

TZ = ZoneInfo("Asia/Shanghai")
LIN, WU, ZHAO, STRANGER = "67003B51C6", "67003B51C7", "0A0B0C0D", "DEADBEEF01"

# docs/reference.md's example, with the two checkpoints its route names and a second team.
DESIGN_PLAN = """
timezone = "Asia/Shanghai"

unit = [
  { id = "fengze",       tier = "district",  name = "Fengze District" },
  { id = "quanxiu",      tier = "street",    parent = "fengze",    name = "Quanxiu Street" },
  { id = "chengzhou",    tier = "community", parent = "quanxiu",   name = "Chengzhou Community" },
  { id = "chengzhou-g1", tier = "grid",      parent = "chengzhou", name = "Grid 1" },
]

agent = [
  { id = "school-9-gate-1", unit = "chengzhou-g1", name = "No. 9 Middle School, east gate" },
]

checkpoint = [
  { id = "cp-east-gate",   unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-1" },
  { id = "cp-north-fence", unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-2" },
  { id = "cp-library",     unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-3" },
]

[[team]]
id = "volunteers-7"
unit = "chengzhou"
members = [ { name = "Lin", tag = "67003B51C6" }, { name = "Wu", tag = "67003B51C7" } ]

[[team]]
id = "volunteers-8"
unit = "chengzhou"
members = [ { name = "Zhao", tag = "0A0B0C0D" } ]

[[route]]
id = "night-loop"
unit = "chengzhou-g1"
teams = ["volunteers-7"]
order = "strict"
checkpoints = ["cp-east-gate", "cp-north-fence", "cp-library"]
window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }
"""

AGENT = "school-9-gate-1"
READER = {"cp-east-gate": "gate-1", "cp-north-fence": "gate-2", "cp-library": "gate-3"}


def plan(text: str = DESIGN_PLAN, **kw: object) -> Plan:
    return parse_plan_bytes(text.encode(), **kw)  # type: ignore[arg-type]


def history(*plans: Plan, imported: tuple[int, ...] = ()) -> PlanHistory:
    """Versions as the registry would hold them (first: since always)."""
    versions = []
    for i, p in enumerate(plans):
        imported_ms = imported[i] if i < len(imported) else 0
        if i == 0:
            start = _NEVER
        elif p.effective is not None:
            start = to_ms(dt.datetime.combine(p.effective, dt.time(0, 0), tzinfo=p.tz))
        else:
            start = imported_ms
        versions.append(PlanVersion(i + 1, imported_ms, f"v{i + 1}", p, start))
    return PlanHistory(tuple(versions))


def at(day: int, hh: int, mm: int = 0, ss: int = 0, *, month: int = 5) -> int:
    """UTC ms of a Shanghai wall-clock time in May 2024."""
    return to_ms(dt.datetime(2024, month, day, hh, mm, ss, tzinfo=TZ))


def scan(cp: str, ts: int, tag: str = LIN, *, agent: str = AGENT, eseq: int = 0) -> Scan:
    return Scan(ts=ts, agent=agent, reader=READER.get(cp, cp), tag=tag, eseq=eseq)


def with_route(order: str, window: str = '{ start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }') -> str:
    return DESIGN_PLAN.replace('order = "strict"', f'order = "{order}"').replace(
        'window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }', f"window = {window}")


# Four tiers with a route at each of grid and community (reports and the tracker roll them up).
TIERED = """
timezone = "Asia/Shanghai"
unit = [
  { id = "d",  tier = "district" },
  { id = "s1", tier = "street", parent = "d" },
  { id = "s2", tier = "street", parent = "d" },
  { id = "c1", tier = "community", parent = "s1" },
  { id = "c2", tier = "community", parent = "s2" },
  { id = "g1", tier = "grid", parent = "c1" },
  { id = "g2", tier = "grid", parent = "c1" },
  { id = "g3", tier = "grid", parent = "c2" },
]
checkpoint = [
  { id = "a", unit = "g1", agent = "ag-1", reader = "r1" },
  { id = "b", unit = "g2", agent = "ag-2", reader = "r1" },
  { id = "c", unit = "c1", agent = "ag-3", reader = "r1" },
  { id = "e", unit = "g3", agent = "ag-4", reader = "r1" },
  { id = "f", unit = "s2", agent = "ag-5", reader = "r1" },
]
team = [ { id = "t", unit = "d", members = [ { name = "Lin", tag = "67003B51C6" } ] } ]
route = [
  { id = "r-g1", unit = "g1", teams = ["t"], checkpoints = ["a"], window = { start = "22:00", end = "02:00", every_min = 120, tolerance_min = 10 } },
  { id = "r-g2", unit = "g2", teams = ["t"], checkpoints = ["b"], window = { start = "22:00", end = "02:00", every_min = 120, tolerance_min = 10 } },
  { id = "r-c1", unit = "c1", teams = ["t"], checkpoints = ["c"], window = { start = "22:00", end = "02:00", every_min = 120, tolerance_min = 10 } },
  { id = "r-g3", unit = "g3", teams = ["t"], checkpoints = ["e"], window = { start = "22:00", end = "02:00", every_min = 120, tolerance_min = 10 } },
  { id = "r-s2", unit = "s2", teams = ["t"], checkpoints = ["f"], window = { start = "22:00", end = "02:00", every_min = 120, tolerance_min = 10 } },
]
"""
