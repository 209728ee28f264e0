"""`gridpatrol demo --agents 12 --minutes 3`, run as a user runs it.

At the end the store holds the alarms and rounds the script made happen, every
event once, and no process the demo started is left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gridpatrol import district as D
from tests.support import run_cli

pytestmark = pytest.mark.slow

AGENTS = 12
MINUTES = 3


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.mark.timeout(420)
def test_demo_runs_a_district_and_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gridpatrol.cli", "demo", "--agents", str(AGENTS), "--minutes", str(MINUTES), "--dir", str(directory)],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Dashboard: http://127.0.0.1:" in result.stdout and "login: demo / " in result.stdout
    assert result.stdout.rstrip().endswith("Demo stopped; every process it started has ended.")
    assert _processes_mentioning(str(directory)) == []

    conf = str(directory / "central" / "central.toml")
    plan = (directory / "plan.toml").read_text()
    agent_ids = [line.split('"')[1] for line in plan.splitlines() if line.strip().startswith("{ id =") and "unit =" in line and "name =" in line and "agent =" not in line and "tier" not in line]
    assert len(agent_ids) == AGENTS

    events = json.loads(run_cli("events", "--config", conf, "--json").stdout)
    by_agent: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for e in events:
        by_agent.setdefault(e["agent"], []).append(e)
    # Every agent came online at central; each eseq is stored once and gap-free.
    presence = json.loads(run_cli("agents", "--config", conf, "--json").stdout)
    assert sorted(a["agent"] for a in presence) == sorted(agent_ids)
    assert all(a["bdseq"] >= 1 and a["state"] in ("disconnected", "offline") for a in presence), presence
    assert set(by_agent) <= set(agent_ids)
    for agent, mine in by_agent.items():
        assert [e["eseq"] for e in mine] == list(range(1, len(mine) + 1)), agent

    breach, panic, cut = agent_ids[1], agent_ids[2], agent_ids[4]  # district.incident_agents
    kinds = {(e["agent"], e["kind"], e["source"]) for e in events}
    assert {(breach, "alarm", "perimeter"), (breach, "restore", "perimeter"), (panic, "panic", "office-panic"),
            (cut, "alarm", "perimeter"), (cut, "restore", "perimeter")} <= kinds
    # What the cut-off agent made while its network was down came later, as replayed backlog.
    cut_zone = [e for e in by_agent[cut] if e["source"] == "perimeter"]
    assert cut_zone and all(e["replayed"] for e in cut_zone)

    alarms = json.loads(run_cli("alarms", "--config", conf, "--all", "--json").stdout)
    raised = {(a["agent"], a["kind"], a["source"]) for a in alarms}
    assert {(breach, "alarm", "perimeter"), (panic, "panic", "office-panic"), (cut, "alarm", "perimeter"),
            (cut, "agent-offline", cut)} <= raised
    assert all(a["state"] == "active" and a["unit"] for a in alarms if a["kind"] in ("alarm", "panic"))

    report = json.loads(run_cli("report", "completion", "--config", conf, "--format", "json").stdout)
    # Routes in plan order, as district.build made them; each team behaves as the script says.
    routes = [line.split('"')[1] for line in plan.splitlines() if line.startswith("id = ") and line.endswith('-night"')]
    expected = {route: D.behaviour(i) for i, route in enumerate(routes)}
    closed = [r for r in report["rounds"] if r["status"] != "open"]
    assert closed, "no round had ended when the demo stopped"
    slots = {route: sorted(r["slot_start"] for r in report["rounds"] if r["route"] == route) for route in routes}
    for r in closed:
        does, k = expected[r["route"]], slots[r["route"]].index(r["slot_start"])
        # The late team's first round is walked whole in its tolerance, which also completes its second.
        want = {"on-time": "complete", "skip": "incomplete", "missed": "missed" if k == 0 else "complete",
                "late": "complete" if k == 1 else "late"}[does]
        assert r["status"] == want, (r, does, k)
    # Every status is there (tests/test_district.py checks, without processes, that the late team stays late).
    assert {r["status"] for r in report["rounds"]} == {"complete", "late", "incomplete", "missed", "open"}
    first_slot = min(r["slot_start"] for r in report["rounds"])
    district = next(u for u in report["units"] if u["tier"] == "district")
    assert district["rollup"]["rounds_scheduled"] == len(report["rounds"])

    with sqlite3.connect(f"file:{directory / 'central' / 'central.db'}?mode=ro", uri=True) as db:
        unknown = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'scan' AND fields LIKE ?", (f'%{D.UNKNOWN_TAG}%',)).fetchone()[0]
    assert unknown >= 1, "the card of no team was recorded"
    assert dt.datetime.fromisoformat(first_slot).utcoffset() == dt.timedelta(hours=8)
