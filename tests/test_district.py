"""The demo's script (gridpatrol/district.py) judged by central's own report, without processes:
every round status within two minutes of the start, whatever second the district came up at,
and each team keeps its behaviour round after round."""

from __future__ import annotations

import datetime as dt

import pytest

from central.completion import Scan
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanHistory, PlanVersion
from central.report import build_report
from gridpatrol import district as D

STATUSES = {"complete", "late", "incomplete", "missed", "open"}


def judged(n_agents: int, up: dt.datetime, minutes: float, at_s: float) -> dict[str, list[str]]:
    """Each route's round statuses ``at_s`` seconds after the district came up at ``up``."""
    d = D.build(n_agents, now=up, minutes=minutes)
    plan = parse_plan_bytes(D.plan_toml(d).encode())
    assert plan.effective is not None
    start = int(dt.datetime.combine(plan.effective, dt.time(0), tzinfo=plan.tz).timestamp() * 1000)
    history = PlanHistory((PlanVersion(1, 0, "demo", plan, start),))
    started = up + dt.timedelta(seconds=2)  # the plan import takes a moment; the script starts after it
    t0 = started.timestamp()
    actions = D.timeline(d, started=started, minutes=minutes)
    assert min(a.at for a in actions) >= D.WALK_LEAD_S  # nothing before the district is up
    scans = [Scan(ts=int((t0 + a.at) * 1000), agent=a.agent, reader="gate-reader", tag=a.arg, eseq=i + 1)
             for i, a in enumerate(actions) if a.what == "tap"]
    report = build_report(history, (d.window_start - dt.timedelta(minutes=1)).date(), scans, int((t0 + at_s) * 1000))
    out: dict[str, list[str]] = {}
    for r in sorted(report.rounds, key=lambda r: r.slot.start_ms):
        out.setdefault(r.slot.route, []).append(str(r.status))
    return out


@pytest.mark.parametrize("agents", [5, 6, 12])
@pytest.mark.parametrize("second", [0, 10, 27, 28, 45, 59])
def test_every_status_within_two_minutes_whatever_second_the_district_comes_up(agents: int, second: int) -> None:
    up = dt.datetime(2026, 12, 6, 14, 7, second, 500_000, tzinfo=dt.timezone.utc)
    rounds = judged(agents, up, 2, 120)
    assert {s for statuses in rounds.values() for s in statuses} == STATUSES, rounds


@pytest.mark.parametrize("second", [0, 28, 59])
def test_each_team_keeps_its_behaviour_round_after_round(second: int) -> None:
    up = dt.datetime(2026, 12, 6, 14, 7, second, tzinfo=dt.timezone.utc)
    rounds = judged(12, up, 6, 6 * 60 + 120)
    walked = {route.split("-")[0]: statuses[:5] for route, statuses in rounds.items()}  # the rounds walked in 6 min
    assert walked == {
        "chengzhou": ["incomplete"] * 5,  # skips its second checkpoint
        "xinhua": ["late", "complete", "late", "late", "late"],  # late; its first late walk completes the second
        "baozhou": ["complete"] * 5,
        "fuqiao": ["missed"] + ["complete"] * 4,
    }


def test_four_agents_give_one_checkpoint_routes_and_no_incomplete_round() -> None:
    rounds = judged(4, dt.datetime(2026, 12, 6, 14, 7, 5, tzinfo=dt.timezone.utc), 2, 120)
    assert {s for statuses in rounds.values() for s in statuses} == STATUSES - {"incomplete"}


@pytest.mark.parametrize("agents", [5, 6, 12])
def test_no_card_is_tapped_on_the_agent_whose_power_is_cut(agents: int) -> None:
    up = dt.datetime(2026, 12, 6, 14, 7, 30, tzinfo=dt.timezone.utc)
    d = D.build(agents, now=up, minutes=10)
    _, _, cut = D.incident_agents(d)
    assert [a for a in D.timeline(d, started=up, minutes=10) if a.what == "tap" and a.agent == cut] == []
