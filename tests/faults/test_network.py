"""The link between an agent and the broker cut and healed, and then left half-open.

The agent reaches the broker through a proxy (its ``mqtt.port`` is the
proxy's); central is on the broker directly. A cut closes the connections
(the broker publishes the agent's Will at once); a half-open link swallows
everything and lets no close through, so each end has only its keepalive to
go by: the agent (keepalive_s = 3) must notice by itself, and the broker
(after 1.5 keepalives) publishes the Will. Central must show the agent
offline each time, and everything made meanwhile must arrive after the heal.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.harness import FaultSite, Numbers, Toggler, assert_one_alarm_per_alarm_event, assert_one_event_per_transition, settle, stored_eseqs
from tests.faults.netfaults import HalfOpenProxy
from tests.support import run_cli, wait_until

pytestmark = pytest.mark.slow

AGENT = "gate-n"
KEEPALIVE_S = 3
OUTAGE_S = 2.0  # how long each outage lasts once central has seen it


def _state(site: FaultSite) -> str | None:
    r = run_cli("agents", "--config", str(site.central_conf), "--json")
    assert r.returncode == 0, r.stderr
    return next((a["state"] for a in json.loads(r.stdout) if a["agent"] == AGENT), None)


@pytest.mark.timeout(150)
def test_link_cut_then_half_open_then_healed(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    _cut_then_half_open_then_heal(make_site(), numbers)


@pytest.mark.timeout(150)
def test_link_cut_then_half_open_then_healed_over_tls(make_tls_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    """The same on the production broker: the proxy carries TLS it cannot read, the agent's keepalive still
    finds the dead link, and each heal is a new handshake with the agent's certificate."""
    _cut_then_half_open_then_heal(make_tls_site([AGENT]), numbers)
    numbers.details.update(transport="TLS, client certificates, ACL (pki broker-config)")


def _cut_then_half_open_then_heal(site: FaultSite, numbers: Numbers) -> None:
    proxy = HalfOpenProxy(("127.0.0.1", site.broker.port)).start()
    try:
        site.start_central()
        a = site.add_agent(AGENT, port=proxy.port, resend_s=2, keepalive_s=KEEPALIVE_S)
        site.start_agent(AGENT)
        wait_until(lambda: _state(site) == "online", timeout=20, interval=0.2, message="agent online")
        toggler = Toggler(a).start()
        try:
            # 1. A clean cut: both ends see the close.
            wait_until(lambda: len(stored_eseqs(site.store_path, AGENT)) >= 20, timeout=20, message="stream at central")
            cut_at = time.monotonic()
            proxy.cut()
            wait_until(lambda: _state(site) == "offline", timeout=15, interval=0.2, message="central shows the agent offline after the cut")
            offline_after_cut_s = time.monotonic() - cut_at
            time.sleep(OUTAGE_S)  # the outage goes on; the stream fills the outbox
            proxy.heal()
            wait_until(lambda: _state(site) == "online", timeout=30, interval=0.2, message="agent online after the heal")
            back_after_cut_heal_s = time.monotonic() - cut_at - offline_after_cut_s - OUTAGE_S
            # 2. Half-open: nothing crosses and no close either.
            mark = len(stored_eseqs(site.store_path, AGENT))
            wait_until(lambda: len(stored_eseqs(site.store_path, AGENT)) >= mark + 20, timeout=20, message="stream at central again")
            hole_at = time.monotonic()
            proxy.blackhole()
            wait_until(lambda: proxy.client_gave_up_at is not None, timeout=4 * KEEPALIVE_S,
                       message="the agent noticing the dead link by its keepalive")
            assert proxy.client_gave_up_at is not None
            agent_noticed_s = proxy.client_gave_up_at - hole_at
            wait_until(lambda: _state(site) == "offline", timeout=20, interval=0.2,
                       message="central shows the agent offline (the broker's Will)")
            offline_after_hole_s = time.monotonic() - hole_at
            time.sleep(OUTAGE_S)
            proxy.heal()
            healed = time.monotonic()
        finally:
            toggler.stop()
        tallies = settle(site, [AGENT], numbers, since=healed, timeout=60, togglers=[toggler])
        wait_until(lambda: _state(site) == "online", timeout=20, interval=0.2, message="agent online at the end")
    finally:
        proxy.close()
    assert_one_event_per_transition(site, [toggler])
    numbers.details.update(assert_one_alarm_per_alarm_event(site, [AGENT]))
    # Two keepalives at most: one of silence before the PINGREQ, one waiting for its answer.
    assert agent_noticed_s <= 2 * KEEPALIVE_S + 1.5
    numbers.details.update(
        keepalive_s=KEEPALIVE_S, outage_s_after_detection=OUTAGE_S, transitions_driven=toggler.transitions,
        cut_to_central_offline_s=round(offline_after_cut_s, 2), cut_heal_to_online_s=round(back_after_cut_heal_s, 2),
        halfopen_to_agent_noticed_s=round(agent_noticed_s, 2), halfopen_to_central_offline_s=round(offline_after_hole_s, 2),
        made_by_agent=tallies[0].made, recovery_from="the heal of the half-open link",
    )
