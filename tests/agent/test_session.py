"""The MQTT session against a real Mosquitto, with the test playing central on the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt

from tests.agent.conftest import STAMP, Harness, wait_until
from tests.support import AGENT_ID as AGENT
from tests.support import Broker, CentralSide
from wire import topics
from wire.messages import AgentState, AgentStatus, Command, CommandName, CommandResponse, Event, EventKind, StateSnapshot, Telemetry


def _eseqs(events: list[Event]) -> list[int]:
    return [e.eseq for e in events]


def _first_seen(events: list[Event]) -> list[int]:
    seen: dict[int, None] = {}
    for e in events:
        seen.setdefault(e.eseq)
    return list(seen)


def test_connect_publishes_status_birth_state_and_tele(harness: Harness, central: CentralSide, broker: Broker) -> None:
    session = harness.session().start()
    wait_until(lambda: central.received(topics.Channel.TELE), message="tele")
    assert central.statuses() == [AgentStatus(AgentState.ONLINE, 1, central.statuses()[0].ts)]
    births = central.births()
    assert [(b.bdseq, b.boot_id, b.fw, b.names("zones")) for b in births] == [(1, "b00t1d", "0.1.0", ("north-fence",))]
    state = central.received(topics.Channel.STATE)
    assert [StateSnapshot.from_payload(r.payload) for r in state] == [
        StateSnapshot(ts=1, inputs={"north-fence": "normal"}, outputs={"siren": False})
    ]
    assert Telemetry.from_payload(central.received(topics.Channel.TELE)[0].payload).outbox_depth == 0
    # Status and state are retained: a client arriving later still learns them.
    late = CentralSide(broker, announce=False)
    try:
        wait_until(lambda: len(late.received(topics.Channel.STATE)) == 1 and late.statuses(), message="retained")
        assert late.received(topics.Channel.STATE)[0].retain
        assert late.statuses()[0].state is AgentState.ONLINE
    finally:
        late.close()
    assert session.connected and session.central_online


def test_state_is_published_again_only_when_it_changes(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: len(central.received(topics.Channel.STATE)) == 1, message="first state")
    session.state_changed()  # nothing changed: no new publish
    harness.inputs["north-fence"] = "alarm"
    session.state_changed()
    wait_until(lambda: len(central.received(topics.Channel.STATE)) == 2, message="changed state")
    snaps = [StateSnapshot.from_payload(r.payload).inputs["north-fence"] for r in central.received(topics.Channel.STATE)]
    assert snaps == ["normal", "alarm"]


def test_backlog_goes_out_flagged_replayed_and_leaves_only_on_ack(harness: Harness, central: CentralSide) -> None:
    stored = [harness.append(), harness.append(EventKind.RESTORE), harness.append(EventKind.SCAN, "gate-1", tag="67003B51C6")]
    harness.session().start()
    wait_until(lambda: len(central.events()) >= 3, message="the backlog")
    assert central.events()[:3] == [e.__class__(**{**_fields(e), "replayed": True}) for e in stored]
    assert harness.outbox.depth == 3  # published and PUBACKed, but central has not acked
    central.ack(2)
    wait_until(lambda: harness.outbox.depth == 1, message="ack 2 to drain two")
    central.ack(3)
    wait_until(lambda: harness.outbox.depth == 0, message="ack 3 to drain the rest")


def _fields(e: Event) -> dict[str, Any]:
    return {k: getattr(e, k) for k in e.__slots__}  # type: ignore[attr-defined]


def test_a_live_event_is_not_flagged_replayed(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    event = harness.append(EventKind.PANIC, "office-panic")
    wait_until(lambda: central.events(), message="the live event")
    assert central.events() == [event]


def test_unacked_events_are_sent_again_after_resend_s(harness: Harness, central: CentralSide) -> None:
    session = harness.session(resend_s=0.3).start()
    wait_until(lambda: session.connected, message="connected")
    event = harness.append()
    wait_until(lambda: len(central.events()) >= 3, message="two resends")
    copies = central.events()[:3]
    assert [e.replayed for e in copies] == [False, True, True]
    assert all(e.content() == event.content() for e in copies)
    central.ack(event.eseq)
    wait_until(lambda: harness.outbox.depth == 0, message="the ack")


def test_backlog_is_replayed_in_order_after_the_broker_restarts(harness: Harness, central: CentralSide, broker: Broker) -> None:
    session = harness.session(resend_s=60.0).start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    first = harness.append()
    wait_until(lambda: central.events(), message="first event")
    broker.kill()
    wait_until(lambda: not session.connected, message="the session to notice")
    for _ in range(20):
        harness.append(EventKind.SCAN, "gate-1", tag="67003B51C6")
    mark = central.mark()
    broker.start()
    # Whoever of the two comes back first, the agent's connect or central's
    # "online" brings the whole unacked backlog, in order, flagged replayed.
    wait_until(lambda: set(range(1, 22)) <= set(_eseqs(central.events(mark))), timeout=30, message="the backlog")
    after = central.events(mark)
    assert _first_seen(after)[:21] == list(range(1, 22))
    assert all(e.replayed for e in after)
    assert after[0].content() == first.content()
    assert session.reconnects == 1
    # A new bdseq for the new connection; its retained online status reaches
    # central however the two reconnects interleaved (its birth may not).
    assert session.bdseq > central.births()[0].bdseq
    wait_until(lambda: central.statuses()[-1].bdseq == session.bdseq, message="the new online status")
    assert central.statuses()[-1].state is AgentState.ONLINE


def test_central_turning_online_brings_a_full_resend(harness: Harness, central: CentralSide) -> None:
    session = harness.session(resend_s=60.0).start()
    wait_until(lambda: session.central_online, message="central's retained status")
    for _ in range(4):
        harness.append()
    wait_until(lambda: len(central.events()) == 4, message="four live events")
    central.ack(1)
    central.set_online(False)
    mark = central.mark()
    central.set_online(True)
    wait_until(lambda: len(central.events(mark)) == 3, message="the full resend")
    assert [(e.eseq, e.replayed) for e in central.events(mark)] == [(2, True), (3, True), (4, True)]


def _cmd(**body: Any) -> bytes:
    return msgpack.packb(body)


def test_commands_are_answered(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    for _ in range(3):
        harness.append()
    wait_until(lambda: len(central.events()) == 3, message="events")
    central.command(Command(CommandName.PING, "t-ping").to_payload())
    central.command(Command(CommandName.REBIRTH, "t-rebirth").to_payload())
    mark = central.mark()
    central.command(Command(CommandName.REPLAY, "t-replay", {"from": 2, "epoch": harness.outbox.epoch}).to_payload())
    central.command(Command(CommandName.OUTPUT, "t-out", {"output": "siren", "on": True, "seconds": 5.0}).to_payload())
    wait_until(lambda: len(central.responses()) == 4, message="four responses")
    assert central.responses() == [CommandResponse("t-ping", True), CommandResponse("t-rebirth", True),
                                   CommandResponse("t-replay", True, last=3, gone=()), CommandResponse("t-out", True)]
    assert [(b.bdseq) for b in central.births()] == [1, 1]
    assert [(e.eseq, e.replayed) for e in central.events(mark)] == [(2, True), (3, True)]
    assert harness.commands == [Command(CommandName.OUTPUT, "t-out", {"output": "siren", "on": True, "seconds": 5.0})]


def test_refused_and_malformed_commands_are_counted_and_answered_when_possible(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    harness.command_error = "no output is named 'bell'"
    central.command(Command(CommandName.OUTPUT, "t-1", {"output": "bell", "on": True}).to_payload())
    central.command(_cmd(cmd="explode", txn="t-2"))
    central.command(_cmd(cmd="replay", txn="t-3"))
    central.command(b"\xc1 not msgpack")
    central.command(_cmd(cmd="ping"))  # no txn: nobody to answer
    central.command(_cmd(cmd="ping", txn=7))
    central.command(Command(CommandName.PING, "t-last").to_payload())
    wait_until(lambda: len(central.responses()) == 4, message="responses")
    assert central.responses() == [
        CommandResponse("t-1", False, "no output is named 'bell'"),
        CommandResponse("t-2", False, "command: unknown cmd 'explode'"),
        CommandResponse("t-3", False, "replay command: missing key 'from'"),
        CommandResponse("t-last", True),
    ]
    assert session.counters["bad_commands"] == 6


def test_hostile_acks_and_central_status_are_counted_not_fatal(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected, message="connected")
    harness.append()
    central.client.publish(topics.ack(AGENT), b"\x92\x01\x02", qos=1)
    central.client.publish(topics.ack(AGENT), _cmd(eseq=-1), qos=1)
    central.client.publish(topics.CENTRAL_STATUS, b"{not json", qos=1, retain=True)
    central.client.publish(topics.CENTRAL_STATUS, json.dumps({"online": "yes", "ts": 1}).encode(), qos=1)
    central.ack(1)
    wait_until(lambda: harness.outbox.depth == 0, message="the good ack after the bad ones")
    wait_until(lambda: session.counters["bad_central_status"] == 2, message="bad statuses counted")
    assert session.counters["bad_acks"] == 2
    assert session.connected


def test_stop_publishes_retained_disconnected(harness: Harness, central: CentralSide, broker: Broker) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected, message="connected")
    session.stop()
    wait_until(lambda: len(central.statuses()) == 2, message="the goodbye")
    assert [(s.state, s.bdseq) for s in central.statuses()] == [(AgentState.ONLINE, 1), (AgentState.DISCONNECTED, 1)]
    late = CentralSide(broker, announce=False)
    try:
        wait_until(lambda: late.statuses(), message="the retained status")
        # A clean DISCONNECT: the Will (offline) was not published over it.
        assert [s.state for s in late.statuses()] == [AgentState.DISCONNECTED]
    finally:
        late.close()


def test_without_a_broker_it_keeps_trying_with_a_new_bdseq_each_time(tmp_path: Path, broker: Broker) -> None:
    harness = Harness(tmp_path, broker)
    try:
        broker.kill()
        session = harness.session().start()
        wait_until(lambda: session.counters["connect_failures"] >= 2, message="two failed attempts")
        assert harness.outbox.bdseq >= 2
        broker.start()
        central = CentralSide(broker)
        try:
            wait_until(lambda: central.births(), timeout=15, message="a connect once the broker is back")
            assert central.births()[0].bdseq == harness.outbox.bdseq
        finally:
            central.close()
    finally:
        harness.close()


def test_a_large_backlog_drains_through_the_window(harness: Harness, central: CentralSide) -> None:
    for _ in range(2000):
        harness.outbox.append(EventKind.SCAN, "gate-1", {"tag": "67003B51C6"}, **STAMP)  # type: ignore[arg-type]
    session = harness.session().start()

    def acking() -> bool:
        events = central.events()
        if events:
            central.ack(max(e.eseq for e in events))
        return harness.outbox.depth == 0

    wait_until(acking, timeout=60, interval=0.05, message="2000 events drained")
    assert _first_seen(central.events()) == list(range(1, 2001))
    assert session.publisher.in_flight <= session.window


def test_every_connect_publishes_status_birth_and_state_again(harness: Harness, central: CentralSide, broker: Broker) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="first connect")
    # Another client with the agent's id takes its session over: the broker
    # drops the agent's connection while central stays connected throughout.
    intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=AGENT, protocol=mqtt.MQTTv5)
    intruder.connect(broker.host, broker.port)
    intruder.disconnect()  # sends DISCONNECT right after CONNECT, and closes its socket
    assert intruder.socket() is None
    wait_until(lambda: len(central.births()) == 2, timeout=15, message="a second birth")
    assert [b.bdseq for b in central.births()] == [1, 2]
    online = [s.bdseq for s in central.statuses() if s.state is AgentState.ONLINE]
    assert online == [1, 2]
    wait_until(lambda: len(central.received(topics.Channel.STATE)) == 2, message="state again")
    assert session.reconnects == 1
