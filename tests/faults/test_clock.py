"""Agents whose wall clocks are far wrong: one in 1970 and offline, one three hours ahead.

A Pi has no real-time clock: it may boot in 1970 and learn the time from NTP
later, or run hours off. Central keeps ``ts`` as the agent said and dates
each event itself (``ts_est``, flagged ``ts_estimated``): from the offset of a
synced sample of the same boot, else from the live messages' arrival.

``gate-past`` boots in 1970 with its link to the broker cut: a volunteer taps
its checkpoint, its clock then syncs, a second member taps there too, and
only then does the link come back (its backlog arrives replayed, dated by the
synced birth). ``gate-ahead`` runs three hours fast, never synced, online (dated
by arrival). A strict round over both checkpoints must be judged complete,
which it could not be by the agents' own clocks. The agents' clocks are
set by tests/faults/skewed_agent.py.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from agent.inputs.readers.sim import SimulatedRdm6300
from gridpatrol.netsim import TcpProxy
from tests.faults.harness import FaultSite, Numbers, outbox_state, settle, stored_rows
from tests.faults.skewed_agent import CLOCK_FILE_ENV, set_clock
from tests.support import FOUR_TIERS, run_cli, wait_until

pytestmark = pytest.mark.slow

TZ = ZoneInfo("Asia/Shanghai")
CARD = "67003B51C6"
CARD_2 = "67003B51C7"  # a second member of the team, walking with the first
AHEAD_S = 3 * 3600
# The taps and their round fall in one minute: with fewer seconds left than
# this, the taps wait for the next minute (the round closes at its end).
LAST_TAP_SECOND = 50
ESTIMATE_TOLERANCE_MS = 2000


@pytest.fixture
def readers() -> Iterator[dict[str, SimulatedRdm6300]]:
    made = {name: SimulatedRdm6300() for name in ("gate-past", "gate-ahead")}
    try:
        yield made
    finally:
        for r in made.values():
            r.close()


def _plan(start: dt.datetime, every_min: int) -> str:
    end_min = start.hour * 60 + start.minute + every_min
    end = "24:00" if end_min == 1440 else f"{end_min // 60 % 24:02d}:{end_min % 60:02d}"
    # Imported after the taps: effective from their day, so the slot that holds them has a plan.
    return f"""timezone = "Asia/Shanghai"
effective = "{start:%Y-%m-%d}"
{FOUR_TIERS}agent = [
  {{ id = "gate-past", unit = "chengzhou-g1", name = "booted in 1970" }},
  {{ id = "gate-ahead", unit = "chengzhou-g1", name = "three hours fast" }},
]
checkpoint = [
  {{ id = "cp-past", unit = "chengzhou-g1", agent = "gate-past", reader = "gate-1" }},
  {{ id = "cp-ahead", unit = "chengzhou-g1", agent = "gate-ahead", reader = "gate-1" }},
]

[[team]]
id = "volunteers-7"
unit = "chengzhou"
members = [ {{ name = "Lin", tag = "{CARD}" }}, {{ name = "Wang", tag = "{CARD_2}" }} ]

[[route]]
id = "clock-loop"
unit = "chengzhou-g1"
teams = ["volunteers-7"]
order = "strict"
checkpoints = ["cp-past", "cp-ahead"]
window = {{ start = "{start:%H:%M}", end = "{end}", every_min = {every_min}, tolerance_min = 0 }}
"""


def _tap(reader: SimulatedRdm6300, card: str = CARD) -> int:
    """One presentation of a card; returns the real time of it (UTC ms)."""
    at = int(time.time() * 1000)
    reader.tap(card, hold_s=0.3)
    return at


def _scans(site: FaultSite, agent: str) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in stored_rows(site.store_path, agent) if r["kind"] == "scan"]


@pytest.mark.timeout(150)
def test_wrong_clocks_are_dated_by_central_and_the_round_judged_right(make_site, readers, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    proxy = TcpProxy(("127.0.0.1", site.broker.port)).start()
    try:
        proxy.cut()  # gate-past boots without a link
        site.start_central()
        clocks: dict[str, Path] = {}
        for agent_id, offset, port in (("gate-past", 86_400 - time.time(), proxy.port), ("gate-ahead", AHEAD_S, None)):
            clocks[agent_id] = site.root / f"{agent_id}.clock"
            set_clock(clocks[agent_id], offset_s=offset, synced=False)
            extra = f'[[reader]]\nname = "gate-1"\nport = "{readers[agent_id].path}"\nprotocol = "rdm6300"\n'
            site.add_agent(agent_id, port=port, env={CLOCK_FILE_ENV: str(clocks[agent_id])}, extra=extra)
        site.start_agent("gate-ahead", launcher="tests.faults.skewed_agent")
        site.start_agent("gate-past", launcher="tests.faults.skewed_agent")
        now = dt.datetime.now(TZ)
        if now.second >= LAST_TAP_SECOND:
            next_minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1, milliseconds=300)
            time.sleep((next_minute - now).total_seconds())  # waiting for the wall clock itself

        # gate-past, 1970 and offline: the scan waits in its outbox.
        t_past = _tap(readers["gate-past"])
        wait_until(lambda: outbox_state(site.agents["gate-past"].directory)[0] >= 1, timeout=5, message="scan in gate-past's outbox")
        # gate-ahead, three hours fast, online.
        t_ahead = _tap(readers["gate-ahead"])
        wait_until(lambda: len(_scans(site, "gate-ahead")) == 1, timeout=10, interval=0.1, message="gate-ahead's scan at central")
        # gate-past's clock syncs; the second member taps there too.
        set_clock(clocks["gate-past"], offset_s=0.0, synced=True)
        t_past_synced = _tap(readers["gate-past"], CARD_2)
        wait_until(lambda: outbox_state(site.agents["gate-past"].directory)[0] >= 2, timeout=5, message="second scan in gate-past's outbox")
        proxy.heal()
        healed = time.monotonic()
        settle(site, ["gate-past", "gate-ahead"], numbers, since=healed, timeout=60)
    finally:
        proxy.close()

    past, ahead = _scans(site, "gate-past"), _scans(site, "gate-ahead")
    assert [(r["replayed"], r["clock_synced"], r["ts_estimated"]) for r in past] == [(1, 0, 1), (1, 1, 0)]
    assert [(r["replayed"], r["clock_synced"], r["ts_estimated"]) for r in ahead] == [(0, 0, 1)]
    # ts is kept as the agent said; ts_est is when it really happened.
    assert past[0]["ts"] < 2 * 86_400_000, "the 1970 clock's stamp is kept as sent"
    assert abs(ahead[0]["ts"] - t_ahead - AHEAD_S * 1000) < ESTIMATE_TOLERANCE_MS
    errors = {"past_unsynced": past[0]["ts_est"] - t_past, "past_synced": past[1]["ts_est"] - t_past_synced,
              "ahead": ahead[0]["ts_est"] - t_ahead}
    assert all(abs(e) < ESTIMATE_TOLERANCE_MS for e in errors.values()), errors

    # The round: import a plan whose one-minute slot holds the taps, wait for it to close, judge it.
    first = dt.datetime.fromtimestamp(t_past / 1000, TZ).replace(second=0, microsecond=0)
    last = dt.datetime.fromtimestamp(max(t_past, t_ahead, t_past_synced) / 1000, TZ)
    every_min = 1 if last < first + dt.timedelta(minutes=1) else 2
    plan = site.root / "plan.toml"
    plan.write_text(_plan(first, every_min))
    r = run_cli("plan", "import", str(plan), "--config", str(site.central_conf))
    assert r.returncode == 0, r.stderr
    closes = first + dt.timedelta(minutes=every_min)
    wait_until(lambda: dt.datetime.now(TZ) >= closes + dt.timedelta(seconds=1), timeout=150, interval=0.2,
               message="the round's slot to close")
    r = run_cli("report", "completion", "--config", str(site.central_conf), "--date", first.date().isoformat(),
                "--format", "json")
    assert r.returncode == 0, r.stderr
    rounds = [x for x in json.loads(r.stdout)["rounds"] if x["route"] == "clock-loop"]
    this = [x for x in rounds if x["slot_start"] == first.isoformat()]
    assert this == [{"route": "clock-loop", "unit": "chengzhou-g1", "slot_start": first.isoformat(), "status": "complete",
                     "scanned": ["cp-past", "cp-ahead"], "missing": []}], rounds
    numbers.details.update(
        estimate_error_ms=errors, agent_ts_error_ms={"past": past[0]["ts"] - t_past, "ahead": ahead[0]["ts"] - t_ahead},
        round=this[0]["status"], slot_start=first.isoformat(), every_min=every_min,
        recovery_from="the heal of gate-past's link (its clock synced before)",
    )
