"""Central crashes (SIGKILL) during ingest, and stays away for a while, while agents keep producing.

Central's persistent session keeps what arrives meanwhile at the broker, but
nothing counts on it: an event leaves an agent's outbox only when central's
ack covers it, and central acks only what it has committed. The outage here
is 20 s (a real one may last hours; 20 s keeps CI short and already holds
over a thousand events in the outboxes).

The same runs with the store on PostgreSQL, where a kill aborts central's
open transaction on the server instead of leaving a WAL to recover, and the
ack point is read back from another process's database. Its outage is 5 s:
the backlog is smaller, but the drain goes through the same duplicate
handling, and CI time stays short (about 12 s for this variant).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    FaultSite,
    Numbers,
    Toggler,
    assert_one_alarm_per_alarm_event,
    assert_one_event_per_transition,
    outbox_state,
    settle,
    store_integrity,
    stored_eseqs,
)
from tests.support import Processes, wait_until

pytestmark = pytest.mark.slow

AGENTS = ("gate-a", "gate-b", "gate-c")
CENTRAL_DOWN_S = {"sqlite": 20.0, "postgresql": 5.0}
HELD_PER_S = 10  # events each agent's outbox gains per second of the outage, at least (it makes ~20)


def _progress(site: FaultSite, n: int) -> None:
    marks = {a: len(stored_eseqs(site.store, a)) for a in AGENTS}
    wait_until(lambda: all(len(stored_eseqs(site.store, a)) >= marks[a] + n for a in AGENTS),
               timeout=30, interval=0.1, message="the stream reaching central")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("central_store", ["sqlite", "postgresql"], indirect=True)
def test_central_sigkilled_during_ingest_then_kept_down(make_site, central_store, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    down_s = CENTRAL_DOWN_S["sqlite" if central_store is None else "postgresql"]
    site: FaultSite = make_site()
    site.start_central()
    for agent_id in AGENTS:
        site.add_agent(agent_id, resend_s=2, keepalive_s=5)
        site.start_agent(agent_id)
    togglers = [Toggler(site.agents[a]).start() for a in AGENTS]
    try:
        # 1. A crash in the middle of ingest, restarted at once.
        _progress(site, 30)
        assert site.central_proc is not None
        Processes.kill(site.central_proc)
        assert store_integrity(site.store) == "ok"
        site.start_central()
        # 2. Another crash, and central stays away while the agents go on.
        _progress(site, 30)
        Processes.kill(site.central_proc)
        assert store_integrity(site.store) == "ok"
        held_at_crash = {a: outbox_state(site.agents[a].directory)[1] for a in AGENTS}
        down_at = time.monotonic()
        # Nothing is acked while central is away: the outboxes only grow.
        wait_until(lambda: all(outbox_state(site.agents[a].directory)[1] >= held_at_crash[a] + HELD_PER_S * down_s
                               for a in AGENTS), timeout=down_s, message="outboxes holding what central has not acked")
        time.sleep(max(0.0, down_at + down_s - time.monotonic()))  # the rest of the outage
        held = {a: outbox_state(site.agents[a].directory)[1] for a in AGENTS}
        site.start_central()
        restarted = time.monotonic()
    finally:
        for t in togglers:
            t.stop()
    settle(site, list(AGENTS), numbers, since=restarted, timeout=90, togglers=togglers)
    assert_one_event_per_transition(site, togglers)
    numbers.details.update(assert_one_alarm_per_alarm_event(site, list(AGENTS)))
    numbers.details.update(central_kills=2, central_down_s=down_s, agent_count=len(AGENTS),
                           store="sqlite" if central_store is None else "postgresql",
                           held_in_outboxes_at_restart=sum(held.values()),
                           transitions_driven=sum(t.transitions for t in togglers),
                           recovery_from="central's restart after the outage (the stream stops there)")
