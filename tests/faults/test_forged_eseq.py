"""A forged far-future eseq on an agent's topic: quarantined, and the agent's gaps still replayed.

Issue 11: one well-formed event with eseq 2**63-1 on an agent's evt topic made
central give the "gap" below it up after about a minute and ack 2**63-1 from
then on, across restarts; the agent took that ack for its whole outbox, so
events later lost in transit were never sent again (84 of 100 in one run).

The forgery copies a real event of the agent (its boot id, its keys; an
epoch if it has one) and changes only ``eseq``, so it passes every check of
form: only the agent can say it never made it (its answer to ``replay``
carries ``last``). Then messages are lost in transit for real: the broker
holds at most QUEUE_LIMIT messages for central and drops the newest beyond,
and central is frozen (SIGSTOP) while the agent streams, as in the slow
collector scenario.

Shows: every ack central sends the agent (watched on the ``ack`` topic from
the start) stays at or below what the agent really made; the forged event is
in ``gridpatrol quarantine --json`` (its eseq, the agent, the evt topic) and
not among the events; a ``suspicious`` alarm is raised for the agent; and
every event made before and after, including those the broker dropped, is
stored once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.faults.harness import FaultSite, Numbers, Toggler, cli_json, outbox_state, stored_eseqs
from tests.support import run_cli, wait_until
from wire.codec import pack, unpack

pytestmark = pytest.mark.slow

AGENT = "gate-f"
FORGED_ESEQ = 2**63 - 1
QUEUE_LIMIT = 10
BROKER_EXTRA = [f"max_queued_messages {QUEUE_LIMIT}", "max_inflight_messages 5", "sys_interval 1"]
FROZEN_S = 4.0  # central frozen while the agent streams: the broker drops what passes its queue
# Today's central gives a gap up after 12 replay requests 5 s apart: watch longer than that before going on, so a
# central that would move its ack past the gap on its own shows it here.
FORGED_WATCH_S = 75.0


class Wire:
    """The test's own MQTT client: watches the agent's acks and events, and publishes the forgery."""

    def __init__(self, port: int) -> None:
        self.acks: list[int] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fault-suite-forger")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"gridpatrol/v1/{AGENT}/ack", 1), (f"gridpatrol/v1/{AGENT}/evt", 1)])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the test's client did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = unpack(bytes(msg.payload))
        with self._lock:
            if msg.topic.endswith("/ack"):
                self.acks.append(int(body["eseq"]))
            elif body.get("eseq") != FORGED_ESEQ:
                self.events.append(body)

    def highest_ack(self) -> int:
        with self._lock:
            return max(self.acks, default=0)

    def forge(self) -> dict[str, Any]:
        """A real event of the agent, eseq changed to FORGED_ESEQ, published on its evt topic."""
        with self._lock:
            real = dict(self.events[-1])
        forged = {**real, "eseq": FORGED_ESEQ, "ts": int(time.time() * 1000), "replayed": False}
        self.client.publish(f"gridpatrol/v1/{AGENT}/evt", pack(forged), qos=1).wait_for_publish(10)
        return forged

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _dropped(site: FaultSite) -> int:
    """The broker's count of messages it dropped for full queues ($SYS, refreshed every second)."""
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(site.broker.port), "-t",
                        "$SYS/broker/publish/messages/dropped", "-C", "1", "-W", "5"],
                       capture_output=True, text=True, timeout=10)
    return int(r.stdout.strip() or 0)


@pytest.mark.timeout(240)
def test_a_forged_far_future_eseq_is_quarantined_and_gaps_still_replayed(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site(broker_extra=BROKER_EXTRA)
    site.start_central()
    a = site.add_agent(AGENT, resend_s=2, keepalive_s=5)
    # No siren on the loop: its max_on_s would switch it off a minute later, an event of the agent, and any new
    # event counts as progress below the forged gap (today's central then starts counting its give-up again).
    # The agent stays quiet after the forgery, as the one of the issue did.
    conf = a.config.read_text()
    assert 'debounce_ms = 20\nsiren = "siren"\n' in conf
    a.config.write_text(conf.replace('debounce_ms = 20\nsiren = "siren"\n', "debounce_ms = 20\n", 1))
    wire = Wire(site.broker.port)
    try:
        site.start_agent(AGENT)

        def ack_within_made() -> None:
            made, highest = outbox_state(a.directory)[0], wire.highest_ack()
            assert highest <= made, (f"central acked eseq {highest} to {AGENT}, past the {made} it really made: "
                                     "everything in its outbox is gone with that ack")

        toggler = Toggler(a).start()
        try:
            wait_until(lambda: len(stored_eseqs(site.store_path, AGENT)) >= 20, timeout=20, message="the stream at central")
        finally:
            toggler.stop()
        wait_until(lambda: wire.highest_ack() == outbox_state(a.directory)[0], timeout=20, message="the stream acked")
        made_at_forgery = outbox_state(a.directory)[0]
        forged = wire.forge()
        forged_at = time.monotonic()

        # The agent stays quiet: a gap that no event of it ever fills is the one today's central gave up.
        def quarantined() -> list[dict[str, Any]]:
            ack_within_made()
            return [q for q in _quarantine(site) if q["agent"] == AGENT and q.get("eseq") == FORGED_ESEQ]

        entries = wait_until(quarantined, timeout=FORGED_WATCH_S, interval=0.5,
                             message="the forged event in gridpatrol quarantine --json (while the ack stays within "
                                     "what the agent made)")
        quarantined_s = time.monotonic() - forged_at
        suspicious = wait_until(lambda: [x for x in cli_json(site, "alarms") if x["agent"] == AGENT
                                         and x["kind"] == "suspicious"],
                                timeout=10, interval=0.5, message="a suspicious alarm for the agent")
        # Losses in transit: central frozen behind a broker queue of QUEUE_LIMIT while the agent streams.
        dropped_before = _dropped(site)
        toggler = Toggler(a).start()
        try:
            assert site.central_proc is not None
            os.killpg(site.central_proc.pid, signal.SIGSTOP)
            try:
                time.sleep(FROZEN_S)  # the freeze itself
            finally:
                os.killpg(site.central_proc.pid, signal.SIGCONT)
            time.sleep(1.0)  # a little more of the stream after the thaw
        finally:
            toggler.stop()
        thawed = time.monotonic()
        wait_until(lambda: _dropped(site) > dropped_before, timeout=15, interval=0.5, message="the broker dropping messages")

        def everything_stored() -> bool:
            ack_within_made()
            last, rows = outbox_state(a.directory)
            return rows == 0 and stored_eseqs(site.store_path, AGENT) == list(range(1, last + 1))

        try:
            wait_until(everything_stored, timeout=60, interval=0.2, message="everything the agent made stored once")
        except AssertionError as exc:
            if "past the" in str(exc):
                raise
            last, rows = outbox_state(a.directory)
            missing = sorted(set(range(1, last + 1)) - set(stored_eseqs(site.store_path, AGENT)))
            raise AssertionError(f"events lost in transit were not replayed: made {last}, {rows} in the outbox, "
                                 f"missing {len(missing)}: {missing[:10]}") from None
        recovered_s = time.monotonic() - thawed
        ack_within_made()
    finally:
        wire.close()
    assert entries[0]["topic"] == f"gridpatrol/v1/{AGENT}/evt" and entries[0]["reason"], entries
    assert len(suspicious) >= 1
    assert FORGED_ESEQ not in [e["eseq"] for e in cli_json(site, "events", "--agent", AGENT)]
    # Central's ack of the agent is exactly what it made: past nothing it never made, short of nothing it did.
    wait_until(lambda: next(x for x in cli_json(site, "agents") if x["agent"] == AGENT)["acked_eseq"]
               == outbox_state(a.directory)[0], timeout=20, interval=0.3, message="central's ack at the agent's last eseq")
    last = outbox_state(a.directory)[0]
    numbers.made = last
    numbers.stored = len(stored_eseqs(site.store_path, AGENT))
    numbers.recovery_s = recovered_s
    numbers.details.update(
        forged_eseq=FORGED_ESEQ, forged_keys=sorted(forged), made_at_forgery=made_at_forgery,
        forgery_to_quarantine_s=round(quarantined_s, 2), highest_ack_seen=wire.highest_ack(),
        broker_dropped=_dropped(site) - dropped_before, frozen_s=FROZEN_S, queue_limit=QUEUE_LIMIT,
        recovery_from="central's thaw",
    )


def _quarantine(site: FaultSite) -> list[dict[str, Any]]:
    """``gridpatrol quarantine --json``; [] from a central that has no such command yet (the ack check runs on)."""
    r = run_cli("quarantine", "--config", str(site.central_conf), "--json")
    if r.returncode == 2 and "invalid choice: 'quarantine'" in r.stderr:
        return []
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))
