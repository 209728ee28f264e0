"""The foundation, end to end: real broker, real central, real agent processes.

Issue 2's "what must be shown", each against the command line a user has.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.site import Site, assert_once_in_order, kinds
from tests.support import wait_until

pytestmark = pytest.mark.slow

ZONE, BUTTON = 17, 27


def test_loop_opened_then_closed_gives_alarm_then_restore(site: Site) -> None:
    site.start_central()
    a = site.add_agent("school-9-gate-1")
    site.start_agent(a.agent_id)
    a.drive(ZONE, "high")  # an nc loop reads high when opened or cut
    events = site.wait_events(lambda ev: ("alarm", "north-fence") in kinds(ev), message="alarm")
    alarm = next(e for e in events if e["kind"] == "alarm")
    assert alarm["agent"] == "school-9-gate-1" and alarm["replayed"] is False
    assert isinstance(alarm["ts"], int) and isinstance(alarm["received_ts"], int)
    a.drive(ZONE, "low")
    events = site.wait_events(lambda ev: ("restore", "north-fence") in kinds(ev), message="restore")
    zone_events = [k for k in kinds(events) if k[1] == "north-fence"]
    assert zone_events == [("alarm", "north-fence"), ("restore", "north-fence")]
    assert_once_in_order(events, a.agent_id)


def test_panic_needs_the_hold_and_gives_exactly_one_event(site: Site) -> None:
    site.start_central()
    a = site.add_agent("school-9-gate-1")
    site.start_agent(a.agent_id)
    # A brush: pressed for well under hold_ms (600 ms).
    a.drive(BUTTON, "low")
    a.drive(BUTTON, "high")
    # A real press, held three times as long as needed: one panic, not three.
    a.drive(BUTTON, "low")
    deadline = time.monotonic() + 1.8
    events = site.wait_events(lambda ev: ("panic", "office-panic") in kinds(ev), message="panic")
    while time.monotonic() < deadline:
        time.sleep(0.05)  # keep the button held for the whole 1.8 s: this is the press itself
    a.drive(BUTTON, "high")
    # The siren went on with the panic: its output event is the positive
    # control that the agent had time to report everything about this press.
    events = site.wait_events(lambda ev: ("output", "siren") in kinds(ev), message="siren output event")
    assert kinds(events).count(("panic", "office-panic")) == 1


def _outbox_depth(agent_dir: Path) -> int:
    with sqlite3.connect(f"file:{agent_dir / 'outbox.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_broker_killed_events_made_meanwhile_all_arrive_once(site: Site) -> None:
    site.start_central()
    a = site.add_agent("gate-2")
    site.start_agent(a.agent_id)
    a.drive(ZONE, "high")
    site.wait_events(lambda ev: len(ev) >= 1, message="first alarm")
    site.broker.kill()
    for level in ("low", "high", "low", "high", "low"):
        a.drive(ZONE, level)
        time.sleep(0.05)  # apart by more than the 20 ms debounce: each is a real transition
    site.broker.start()
    events = site.wait_events(lambda ev: len([e for e in ev if e["source"] == "north-fence"]) >= 6, timeout=40, message="all six zone events")
    assert [k for k in kinds(events) if k[1] == "north-fence"] == [("alarm", "north-fence"), ("restore", "north-fence")] * 3
    assert_once_in_order(events, a.agent_id)
    assert any(e["replayed"] for e in events), "events made while the broker was down are flagged replayed"
    wait_until(lambda: _outbox_depth(a.directory) == 0, timeout=30, message="outbox drained")


def test_central_stopped_events_wait_in_the_outbox_until_acked(site: Site) -> None:
    site.start_central()
    a = site.add_agent("gate-3")
    site.start_agent(a.agent_id)
    a.drive(ZONE, "high")
    site.wait_events(lambda ev: len(ev) >= 1, message="first alarm")
    site.stop_central()
    for level in ("low", "high", "low"):
        a.drive(ZONE, level)
        time.sleep(0.05)
    # Central is away: nothing acknowledges these, so they stay in the outbox
    # (the broker's PUBACK is not enough) however long we wait for them to leave.
    wait_until(lambda: _outbox_depth(a.directory) >= 3, timeout=10, message="3 events waiting in the outbox")
    site.start_central()
    events = site.wait_events(lambda ev: len([e for e in ev if e["source"] == "north-fence"]) >= 4, timeout=40, message="backlog after central restart")
    assert_once_in_order(events, a.agent_id)
    assert [k for k in kinds(events) if k[1] == "north-fence"] == [("alarm", "north-fence"), ("restore", "north-fence")] * 2
    wait_until(lambda: _outbox_depth(a.directory) == 0, timeout=30, message="outbox drained after central's acks")


def test_agent_sigkilled_mid_burst_loses_nothing_committed(site: Site) -> None:
    site.start_central()
    a = site.add_agent("gate-4", extra="", resend_s=1)
    site.start_agent(a.agent_id)
    stop = threading.Event()
    driven = []

    def burst() -> None:
        level = "high"
        while not stop.is_set():
            try:
                a.drive(ZONE, level)
            except OSError:
                return  # the agent is gone
            driven.append(level)
            level = "low" if level == "high" else "high"
            time.sleep(0.03)

    t = threading.Thread(target=burst)
    t.start()
    try:
        wait_until(lambda: len(driven) >= 20, timeout=20, message="burst under way")
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
    finally:
        stop.set()
        t.join(timeout=10)
    with sqlite3.connect(a.directory / "outbox.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    committed = _last_eseq(a.directory)
    assert committed >= 10
    site.start_agent(a.agent_id)
    a.drive(ZONE, "low")
    a.drive(ZONE, "high")
    # The restarted agent numbers on from the last committed eseq: none reused.
    events = site.wait_events(
        lambda ev: any(e["agent"] == a.agent_id and e["eseq"] > committed for e in ev), timeout=40, message="an event after the restart"
    )
    wait_until(lambda: _outbox_depth(a.directory) == 0, timeout=30, message="outbox drained")
    events = site.events()
    seqs = assert_once_in_order(events, a.agent_id)
    # Nothing committed was lost: everything the outbox ever numbered is at central.
    assert seqs[-1] == _last_eseq(a.directory)
    assert seqs[-1] > committed


def _last_eseq(agent_dir: Path) -> int:
    with sqlite3.connect(f"file:{agent_dir / 'outbox.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'last_eseq'").fetchone()[0])


def test_garbage_on_an_evt_topic_is_counted_and_ingest_goes_on(site: Site) -> None:
    site.start_central()
    a = site.add_agent("gate-5")
    site.start_agent(a.agent_id)
    topic = f"gridpatrol/v1/{a.agent_id}/evt"
    site.broker.pub(topic, b"not msgpack at all \xc1\xff")
    site.broker.pub(topic, b"\x89\xa4eseq\x01")  # a map of nine entries, cut after one key
    site.broker.pub(topic, b"\x80" * (1024 * 1024))  # 1 MB
    a.drive(ZONE, "high")
    events = site.wait_events(lambda ev: ("alarm", "north-fence") in kinds(ev), message="the next real event")
    # eseq 1 is the alarm (the siren's output event follows it): nothing of the
    # garbage took a number or a row.
    assert [(e["eseq"], e["kind"]) for e in events if e["agent"] == a.agent_id][0] == (1, "alarm")
    assert_once_in_order(events, a.agent_id)
    assert site.central_proc is not None and site.central_proc.poll() is None
    with sqlite3.connect(f"file:{site.root / 'central' / 'central.db'}?mode=ro", uri=True) as db:
        dropped = sum(v for (v,) in db.execute("SELECT value FROM counters WHERE name LIKE 'bad_message.%'"))
    assert dropped == 3
