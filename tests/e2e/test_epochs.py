"""Issue 11's agent side end to end: real broker, real central, real agent processes.

A new outbox is a new epoch that central stores beside the old one, and a
latched panic outlives an agent's crash until the control room answers it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.site import Site, kinds
from tests.support import run_cli, wait_until

pytestmark = pytest.mark.slow

BUTTON = 27


def _panics(site: Site, agent_id: str) -> int:
    return sum(1 for e in site.events("--agent", agent_id) if e["kind"] == "panic")


def _press(site: Site, agent_id: str) -> None:
    """Press and hold the panic button until central has the panic, then let go."""
    before = _panics(site, agent_id)
    a = site.agents[agent_id]
    a.drive(BUTTON, "low")
    wait_until(lambda: _panics(site, agent_id) > before, timeout=20, interval=0.2, message="the panic at central")
    a.drive(BUTTON, "high")


def _outbox(directory: Path) -> tuple[str, int, int]:
    """(epoch, last_eseq, acked_eseq) of an agent's outbox, read-only."""
    with closing(sqlite3.connect(f"file:{directory / 'outbox.db'}?mode=ro", uri=True, timeout=5)) as db:
        (epoch,) = db.execute("SELECT value FROM epoch").fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return epoch, int(meta["last_eseq"]), int(meta["acked_eseq"])


def _alarms(site: Site) -> list[dict]:  # type: ignore[type-arg]
    r = run_cli("alarms", "--config", str(site.central_conf), "--all", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_replaced_sd_card_is_a_new_epoch_whose_panic_is_stored_and_raised(site: Site) -> None:
    site.start_central()
    a = site.add_agent("school-9-gate-1")
    site.start_agent(a.agent_id)
    _press(site, a.agent_id)
    wait_until(lambda: _outbox(a.directory)[1] == _outbox(a.directory)[2] > 0, timeout=20, interval=0.2,
               message="the first epoch drained")
    old_epoch, old_last, _ = _outbox(a.directory)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGKILL)
    a.proc.wait(timeout=10)
    for path in a.directory.glob("*.db*"):  # the card is replaced: outbox and memory gone
        path.unlink()

    site.start_agent(a.agent_id)
    _press(site, a.agent_id)
    new_epoch = _outbox(a.directory)[0]
    assert new_epoch != old_epoch
    events = site.events("--agent", a.agent_id)
    by_epoch = {epoch: [e["eseq"] for e in events if e["epoch"] == epoch] for epoch in (old_epoch, new_epoch)}
    # The old epoch's events stay listed; the new one numbers from 1 again, and its panic is stored.
    assert by_epoch[old_epoch] == list(range(1, old_last + 1))
    assert by_epoch[new_epoch][0] == 1
    assert ("panic", "office-panic") in [(e["kind"], e["source"]) for e in events if e["epoch"] == new_epoch]
    # Central acks in the new epoch: the new outbox drains.
    wait_until(lambda: _outbox(a.directory)[1] == _outbox(a.directory)[2] > 0, timeout=20, interval=0.2,
               message="the new epoch drained")
    panics = [al for al in _alarms(site) if al["agent"] == a.agent_id and al["kind"] == "panic"]
    assert panics and panics[-1]["state"] == "active"
    assert next(r for r in site.agents_json() if r["agent"] == a.agent_id)["epoch"] == new_epoch


def test_a_latched_panic_outlives_an_agent_crash_until_the_control_room_answers(site: Site) -> None:
    site.start_central()
    a = site.add_agent("school-9-gate-1")
    site.start_agent(a.agent_id)
    _press(site, a.agent_id)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGKILL)  # no goodbye: the indicator simply loses power with the process
    a.proc.wait(timeout=10)
    mark = len(site.events("--agent", a.agent_id))

    site.start_agent(a.agent_id)

    def lamp(on: bool) -> bool:
        later = site.events("--agent", a.agent_id)[mark:]
        return any(e["kind"] == "output" and e.get("output") == "panic-led" and e.get("on") is on for e in later)

    # Lit again by the new process, before anyone answered.
    wait_until(lambda: lamp(True), timeout=20, interval=0.2, message="the indicator lit again after the crash")
    assert not lamp(False)
    [alarm] = [al for al in _alarms(site) if al["agent"] == a.agent_id and al["kind"] == "panic"]
    r = run_cli("alarms", "ack", str(alarm["id"]), "--by", "duty-officer", "--config", str(site.central_conf))
    assert r.returncode == 0, r.stderr
    wait_until(lambda: lamp(False), timeout=20, interval=0.2, message="the indicator off on the control room's ack")
    assert kinds(site.events("--agent", a.agent_id)).count(("panic", "office-panic")) == 1
