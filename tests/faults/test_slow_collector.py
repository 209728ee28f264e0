"""A collector slower than the producers, behind a broker with a small queue.

The broker may hold 50 messages for central (``max_queued_messages 50``, 10 in
flight), and drops what comes beyond, newest first, silently to the sender.
Two real ways of being slow: central frozen (SIGSTOP: its connection stays
open, as with a stuck disk or a long pause) while agents stream, and central
stopped (its persistent session waits at the broker) while they burst far
more than 50. What the broker drops must come back through the agents' resends,
central's gap replays and the full resend when central returns. The broker's
own count of dropped messages ($SYS) shows the fault really happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
    stored_eseqs,
)
from tests.support import wait_until

pytestmark = pytest.mark.slow

AGENTS = ("gate-a", "gate-b", "gate-c")
QUEUE_LIMIT = 50
FROZEN_S = 6.0  # central frozen while ~360 events stream in
BROKER_EXTRA = [f"max_queued_messages {QUEUE_LIMIT}", "max_inflight_messages 10", "sys_interval 1"]


def _dropped(site: FaultSite) -> int:
    """The broker's count of messages it dropped for full queues ($SYS, refreshed every second)."""
    r = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(site.broker.port), "-t", "$SYS/broker/publish/messages/dropped",
         "-C", "1", "-W", "5"],
        capture_output=True, text=True, timeout=10,
    )
    return int(r.stdout.strip() or 0)


@pytest.mark.timeout(150)
def test_slow_collector_and_a_small_broker_queue(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site(broker_extra=BROKER_EXTRA)
    site.start_central()
    for agent_id in AGENTS:
        site.add_agent(agent_id, resend_s=2, keepalive_s=5)
        site.start_agent(agent_id)
    togglers = [Toggler(site.agents[a]).start() for a in AGENTS]
    assert site.central_proc is not None
    central_pid = site.central_proc.pid
    try:
        wait_until(lambda: all(len(stored_eseqs(site.store_path, a)) >= 20 for a in AGENTS), timeout=20, message="stream at central")
        # 1. Central frozen: its connection stays up, nothing it gets is acknowledged.
        os.killpg(central_pid, signal.SIGSTOP)
        try:
            time.sleep(FROZEN_S)  # the freeze itself
        finally:
            os.killpg(central_pid, signal.SIGCONT)
        thawed = time.monotonic()
        wait_until(lambda: _dropped(site) > 0, timeout=15, interval=0.5, message="the broker dropping for frozen central")
        dropped_frozen = _dropped(site)
        # 2. Central stopped while the agents burst well past the queue limit.
        marks = {a: len(stored_eseqs(site.store_path, a)) for a in AGENTS}
        wait_until(lambda: all(len(stored_eseqs(site.store_path, a)) >= marks[a] + 20 for a in AGENTS),
                   timeout=30, message="central catching up after the freeze")
        site.stop_central()
        held = {a: outbox_state(site.agents[a].directory)[1] for a in AGENTS}
        wait_until(lambda: all(outbox_state(site.agents[a].directory)[1] >= held[a] + 2 * QUEUE_LIMIT for a in AGENTS),
                   timeout=30, message="each agent bursting past the queue limit while central is away")
        site.start_central()
        restarted = time.monotonic()
    finally:
        for t in togglers:
            t.stop()
    settle(site, list(AGENTS), numbers, since=restarted, timeout=90, togglers=togglers)
    wait_until(lambda: _dropped(site) > dropped_frozen, timeout=15, interval=0.5, message="the broker dropping for stopped central")
    dropped_total = _dropped(site)
    assert_one_event_per_transition(site, togglers)
    numbers.details.update(assert_one_alarm_per_alarm_event(site, list(AGENTS)))
    numbers.details.update(
        queue_limit=QUEUE_LIMIT, frozen_s=FROZEN_S, broker_dropped_while_frozen=dropped_frozen,
        broker_dropped_total=dropped_total, transitions_driven=sum(t.transitions for t in togglers),
        recovery_from="central's restart after the burst (the stream stops there)",
        thaw_to_restart_s=round(restarted - thawed, 2),
    )
