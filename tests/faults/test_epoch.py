"""An agent whose outbox is new (a replaced SD card): its next panic is stored and raised, its old record stays.

Issue 11: a re-imaged Pi, a wiped or truncated outbox, a lost WAL, and the
agent starts again at eseq 1; central dropped its events as conflicting
duplicates of the old eseq 1, 2, ... The contract's answer is the ``epoch``:
made once when the outbox is created, carried by every event, and part of
the key central stores events on.

The agent streams a little and presses its panic (acknowledged by staff),
is stopped, its outbox files are deleted, and it starts again with a new,
empty outbox. Shows: its next panic is stored and raises a new alarm; the
old epoch's events are all still listed by ``gridpatrol events --json`` beside
the new epoch's, which number from 1 again; ``agents --json`` names the new
epoch, and its ack covers what the new outbox made (the outbox drains).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.harness import FaultSite, Numbers, Toggler, assert_one_alarm_per_alarm_event, cli_json, outbox_state
from tests.support import Processes, run_cli, wait_until

pytestmark = pytest.mark.slow

AGENT = "gate-e"
PANIC_PIN = 27
PANIC_HOLD_S = 0.75  # hold_ms is 600 (tests/e2e/site.py)
OUTBOX_FILES = ("outbox.db", "outbox.db-wal", "outbox.db-shm", "outbox.db-journal")


def _press(site: FaultSite) -> None:
    a = site.agents[AGENT]
    a.drive(PANIC_PIN, "low")
    time.sleep(PANIC_HOLD_S)  # the press itself
    a.drive(PANIC_PIN, "high")


def _events(site: FaultSite) -> list[dict[str, Any]]:
    return list(cli_json(site, "events", "--agent", AGENT))


def _drained(site: FaultSite, n_events: int) -> bool:
    last, rows = outbox_state(site.agents[AGENT].directory)
    return rows == 0 and last > 0 and len(_events(site)) >= n_events + last


@pytest.mark.timeout(150)
def test_a_new_outbox_is_a_new_epoch(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    site.start_central()
    a = site.add_agent(AGENT, resend_s=2, keepalive_s=5)
    site.start_agent(AGENT)
    # The old card's life: a stream and a panic, all stored; staff answer the panic.
    toggler = Toggler(a).start()
    try:
        wait_until(lambda: len(_events(site)) >= 20, timeout=20, interval=0.3, message="the stream at central")
    finally:
        toggler.stop()
    _press(site)
    old_alarm = wait_until(lambda: [x for x in cli_json(site, "alarms") if x["agent"] == AGENT and x["kind"] == "panic"],
                           timeout=20, interval=0.3, message="the first panic's alarm")[0]
    r = run_cli("alarms", "ack", str(old_alarm["id"]), "--by", "fault-suite", "--config", str(site.central_conf))
    assert r.returncode == 0, r.stderr
    wait_until(lambda: _drained(site, 0), timeout=20, interval=0.3, message="the old outbox drained")
    # The SD card is replaced: the agent stops, its outbox is gone, it starts with a new one.
    assert a.proc is not None
    assert Processes.terminate(a.proc) == 0, site.log(AGENT)
    old_last, unacked = outbox_state(a.directory)
    # Stopping switches the outputs off: an event or two made as the agent went, maybe not sent. A replaced card
    # loses those; what central got is the old epoch's record.
    try:
        wait_until(lambda: len(_events(site)) >= old_last, timeout=5, interval=0.3, message="the stop's events")
    except AssertionError:
        pass
    old = _events(site)
    assert [e["eseq"] for e in old] == list(range(1, len(old) + 1)) and len(old) >= old_last - unacked, (
        unacked, old_last, len(old))
    for name in OUTBOX_FILES:
        (a.directory / name).unlink(missing_ok=True)
    site.start_agent(AGENT)
    started_ms = int(time.time() * 1000)
    _press(site)
    # Its next panic is stored and raised.
    try:
        new_panic = wait_until(lambda: [e for e in _events(site) if e["kind"] == "panic" and e["ts"] >= started_ms],
                               timeout=20, interval=0.3, message="the new outbox's panic stored")[0]
    except AssertionError:
        raise AssertionError(f"the panic of {AGENT}'s new outbox was never stored: central holds "
                             f"{len(_events(site))} events of it, the old outbox made {old_last}; the new outbox has made "
                             f"{outbox_state(a.directory)[0]} (eseq 1 again) and holds {outbox_state(a.directory)[1]} unacked"
                             ) from None
    new_alarm = wait_until(lambda: [x for x in cli_json(site, "alarms") if x["agent"] == AGENT and x["kind"] == "panic"
                                    and x["state"] == "active"],
                           timeout=10, interval=0.3, message="the new panic's alarm")
    assert [x["id"] for x in new_alarm] != [old_alarm["id"]]
    old_epoch, new_epoch = old[0]["epoch"], new_panic["epoch"]
    assert isinstance(old_epoch, str) and isinstance(new_epoch, str) and old_epoch != new_epoch, (old_epoch, new_epoch)
    # The new outbox drains and central's record of it is 1..last, its ack at last (the agent may still be making
    # an event or two, say an output switching off: read both ends until they agree).
    seen: list[tuple[int, list[dict[str, Any]], dict[str, Any]]] = []

    def caught_up() -> bool:
        last, rows = outbox_state(a.directory)
        events = _events(site)
        agent = next(x for x in cli_json(site, "agents") if x["agent"] == AGENT)
        seen[:] = [(last, events, agent)]
        return (rows == 0 and outbox_state(a.directory) == (last, 0) and agent["acked_eseq"] == last
                and [e["eseq"] for e in events if e["epoch"] == new_epoch] == list(range(1, last + 1)))

    try:
        wait_until(caught_up, timeout=20, interval=0.3, message="the new outbox drained and acked")
    except AssertionError:
        last, events, agent = seen[0]
        raise AssertionError(f"the new epoch did not catch up: outbox last {last}, central holds "
                             f"{[e['eseq'] for e in events if e['epoch'] == new_epoch]} of it, agents --json: {agent}") from None
    new_last, now, agent = seen[0]
    # Both epochs listed: the old one whole and unchanged, the new one from eseq 1; the agent is in the new one.
    epochs = list(dict.fromkeys(e["epoch"] for e in now))
    assert set(epochs) == {old_epoch, new_epoch}, epochs
    assert [e for e in now if e["epoch"] == old_epoch] == old
    assert agent["epoch"] == new_epoch, agent
    counts = assert_one_alarm_per_alarm_event(site, [AGENT])
    numbers.made = old_last + new_last  # the stop's unsent event (if any) went with the old card
    numbers.stored = len(now)
    numbers.details.update(counts)
    numbers.details.update(old_epoch_events=old_last, new_epoch_events=new_last, old_epoch=old_epoch, new_epoch=new_epoch)

