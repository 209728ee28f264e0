"""The broker crashes (SIGKILL) again and again under a steady stream from several agents.

Mosquitto keeps its queues in memory and snapshots them only now and then, so
a crash loses whatever it held: queued messages, central's persistent
session, retained statuses. The agents' outboxes and central's acks must
cover all of it.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultSite, Numbers, Toggler, assert_one_alarm_per_alarm_event, assert_one_event_per_transition, settle, stored_eseqs
from tests.support import wait_until

pytestmark = pytest.mark.slow

AGENTS = ("gate-a", "gate-b", "gate-c")
KILLS = 4
STREAM_BETWEEN_KILLS_S = 2.0  # how far central must have got between two crashes
DOWN_S = 1.0  # how long the broker stays dead each time (the outage itself)


@pytest.mark.parametrize("central_store", ["sqlite", "postgresql"], indirect=True)
def test_broker_sigkilled_four_times_under_a_stream(make_site, central_store, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    """On either store: on PostgreSQL the redeliveries after each crash meet ON CONFLICT DO NOTHING, and the
    ack point after each reconnect comes from the server."""
    _sigkill_broker_under_a_stream(make_site(), numbers)
    numbers.details.update(store="sqlite" if central_store is None else "postgresql")


def test_broker_sigkilled_four_times_under_a_stream_over_tls(make_tls_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    """The same on the production broker: every reconnect is a TLS handshake with a client certificate, every
    publish passes the ACL, and central's persistent session is the one of its certificate's name."""
    site: FaultSite = make_tls_site(AGENTS)
    _sigkill_broker_under_a_stream(site, numbers)
    log = site.broker.log.read_text()  # type: ignore[attr-defined]
    assert "Denied PUBLISH" not in log and "not authorised" not in log.lower()
    numbers.details.update(transport="TLS, client certificates, ACL (pki broker-config)")


def _sigkill_broker_under_a_stream(site: FaultSite, numbers: Numbers) -> None:
    site.start_central()
    for agent_id in AGENTS:
        site.add_agent(agent_id, resend_s=2, keepalive_s=5)
        site.start_agent(agent_id)
    togglers = [Toggler(site.agents[a]).start() for a in AGENTS]
    try:
        for _ in range(KILLS):
            # Let the stream reach central first, so every crash cuts into live traffic.
            marks = {a: len(stored_eseqs(site.store, a)) for a in AGENTS}
            wait_until(lambda marks=marks: all(len(stored_eseqs(site.store, a)) >= marks[a] + 20 for a in AGENTS),
                       timeout=30, interval=0.1, message="the stream reaching central between crashes")
            site.broker.kill()
            time.sleep(DOWN_S)  # the outage: events made now can only wait in the outboxes
            site.broker.start()
        restarted = time.monotonic()
    finally:
        for t in togglers:
            t.stop()
    settle(site, list(AGENTS), numbers, since=restarted, timeout=90, togglers=togglers)
    assert_one_event_per_transition(site, togglers)
    numbers.details.update(assert_one_alarm_per_alarm_event(site, list(AGENTS)))
    numbers.details.update(kills=KILLS, down_s=DOWN_S, agent_count=len(AGENTS),
                           transitions_driven=sum(t.transitions for t in togglers),
                           recovery_from="last broker restart (the stream stops there)")
