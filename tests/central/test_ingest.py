"""Ingest against a real Mosquitto: store once, ack, replay, presence, bad input."""

from __future__ import annotations

import select
import sqlite3
import subprocess
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator, Sequence

import paho.mqtt.client as mqtt
import pytest

from central.ingest import Ingest
from central.store import Store, StoredEvent, transaction
from tests.support import BOOT, T0, Broker, FakeAgent, hang_up, make_ingest, wait_until
from wire import topics
from wire.codec import pack
from wire.messages import AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, Event, EventKind, Telemetry


class Recorder:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.presence: list[tuple[str, str]] = []

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        self.events.extend(events)

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        self.presence.append((agent, state))




@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ingest(broker: Broker, store: Store, recorder: Recorder) -> Iterator[Ingest]:
    ing = make_ingest(broker, store, listeners=[recorder], gap_grace_s=0.2, replay_interval_s=0.5)
    ing.start()
    try:
        assert ing.wait_connected(10)
        yield ing
    finally:
        ing.stop()


@pytest.fixture
def agent(broker: Broker) -> Iterator[FakeAgent]:
    a = FakeAgent(broker, "school-9-gate-1")
    try:
        yield a
    finally:
        a.close()


def stored(store: Store, agent: str | None = None) -> list[StoredEvent]:
    return store.list_events(agent=agent)


def test_events_are_stored_once_and_acked_after_the_commit(broker: Broker, store: Store, recorder: Recorder,
                                                           ingest: Ingest, agent: FakeAgent) -> None:
    seen_at_ack: list[int] = []
    # Read the store (another connection) the moment each ack arrives: the commit must already be visible.
    original = agent._on_message

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == topics.ack(agent.agent_id):
            with closing(store.connect(readonly=True)) as conn:
                seen_at_ack.append(len(store.list_events(conn=conn)))
        original(client, userdata, msg)

    agent.client.on_message = on_message
    agent.online()
    sent = [agent.event(n) for n in (1, 2, 3)]
    wait_until(lambda: agent.acked(3), message="ack of eseq 3")
    events = stored(store)
    assert [(e.agent, e.eseq, e.kind, e.source, e.ts, dict(e.fields), e.replayed) for e in events] == [
        (agent.agent_id, s.eseq, "scan", "gate-1", s.ts, dict(s.fields), False) for s in sent
    ]
    assert all(e.content() == s.content() for e, s in zip(events, sent))
    assert [e.eseq for e in recorder.events] == [1, 2, 3]
    assert seen_at_ack and all(n >= 1 for n in seen_at_ack)
    assert seen_at_ack[-1] == 3
    assert store.get_agent(agent.agent_id).acked_eseq == 3  # type: ignore[union-attr]


def test_a_duplicate_is_acked_again_and_not_stored_twice(store: Store, recorder: Recorder, ingest: Ingest,
                                                         agent: FakeAgent) -> None:
    agent.online()
    for n in (1, 2):
        agent.event(n)
    wait_until(lambda: agent.acked(2))
    acks_before = len(agent.acks)
    agent.event(2, replayed=True)  # its ack was lost: the agent sends it again
    wait_until(lambda: len(agent.acks) > acks_before, message="a second ack")
    assert agent.acks[-1] == 2
    assert [e.eseq for e in stored(store)] == [1, 2]
    assert stored(store)[1].replayed is False  # the first copy stays
    assert [e.eseq for e in recorder.events] == [1, 2]  # listeners hear of it once
    assert ingest.counters["events_duplicate"] == 1
    assert ingest.counters.get("events_suspicious", 0) == 0


def test_same_eseq_with_other_content_is_flagged_and_never_overwrites(store: Store, ingest: Ingest,
                                                                      agent: FakeAgent) -> None:
    agent.online()
    first = agent.event(1)
    wait_until(lambda: agent.acked(1))
    agent.event(1, tag="DEADBEEF00")
    wait_until(lambda: ingest.counters.get("events_suspicious") == 1, message="suspicious counter")
    assert [dict(e.fields) for e in stored(store)] == [dict(first.fields)]
    assert ingest.counters["events_duplicate"] == 1


def test_a_gap_asks_for_a_replay_from_the_first_missing(store: Store, ingest: Ingest, agent: FakeAgent) -> None:
    agent.online()
    for n in (1, 2, 5):
        agent.event(n)
    wait_until(lambda: agent.command_list(CommandName.REPLAY), message="a replay command")
    replay = agent.command_list(CommandName.REPLAY)[0]
    assert dict(replay.args) == {"from": 3, "epoch": ""}
    assert agent.acks[-1] == 2  # the ack never covers the gap
    assert [e.eseq for e in stored(store)] == [1, 2, 5]
    agent.event(3, replayed=True)
    agent.event(4, replayed=True)
    wait_until(lambda: agent.acked(5), message="ack of 5 once the gap is filled")
    assert [e.eseq for e in stored(store)] == [1, 2, 3, 4, 5]
    assert ingest.counters["replay_requests"] >= 1


def test_a_gap_is_asked_for_ever_less_often_and_never_given_up(broker: Broker, store: Store,
                                                                agent: FakeAgent) -> None:
    ing = make_ingest(broker, store, gap_grace_s=0.1, replay_interval_s=0.2)
    ing.start()
    try:
        assert ing.wait_connected(10)
        agent.online()
        agent.event(1)
        agent.event(4)
        wait_until(lambda: len(agent.command_list(CommandName.REPLAY)) >= 4, timeout=15, message="four replays")
        replays = agent.command_list(CommandName.REPLAY)
        assert all(dict(c.args) == {"from": 2, "epoch": ""} for c in replays)
        assert max(agent.acks) == 1  # central never acks past the gap on its own
        assert "events_lost" not in ing.counters
        # The missing ones turn up: the gap closes and the ack moves.
        agent.event(2, replayed=True)
        agent.event(3, replayed=True)
        wait_until(lambda: agent.acked(4), message="ack of 4")
        assert [e.eseq for e in stored(store)] == [1, 2, 3, 4]
    finally:
        ing.stop()


def test_the_agents_answer_closes_a_gap_and_quarantines_what_it_never_made(broker: Broker, store: Store,
                                                                            agent: FakeAgent) -> None:
    ing = make_ingest(broker, store, gap_grace_s=0.1, replay_interval_s=0.2)
    ing.start()
    try:
        assert ing.wait_connected(10)
        agent.online()
        for eseq in (1, 2, 5, 2**63 - 1):  # 2**63 - 1: a forged far-future eseq on the agent's topic
            agent.event(eseq, ts=T0 + 1000, mono_ms=1000)
        wait_until(lambda: agent.command_list(CommandName.REPLAY), message="a replay")
        txn = agent.command_list(CommandName.REPLAY)[0].txn
        # The agent made up to 6 and no longer holds 3..4 (dropped on a full disk).
        agent.publish(topics.cmd_resp(agent.agent_id), pack({"txn": txn, "ok": True, "last": 6, "gone": [[3, 4]]}))
        wait_until(lambda: agent.acked(5), message="ack past the gone range")
        agent.event(6)
        wait_until(lambda: agent.acked(6), message="ack of 6")
        assert max(agent.acks) == 6  # never the forged eseq
        assert [e.eseq for e in stored(store)] == [1, 2, 5, 6]
        (q,) = store.quarantined()
        assert (q.agent, q.eseq) == (agent.agent_id, 2**63 - 1) and "above 6" in q.reason
        assert store.lost_ranges(agent.agent_id, "") == [(3, 4)]
        assert ing.counters["events_lost"] == 2 and ing.counters["quarantined"] == 1
        # A later loss in transit is still asked for and closed.
        agent.event(8)
        wait_until(lambda: len(agent.command_list(CommandName.REPLAY)) >= 2, message="a replay of 7")
        assert dict(agent.command_list(CommandName.REPLAY)[-1].args) == {"from": 7, "epoch": ""}
        agent.event(7, replayed=True)
        wait_until(lambda: agent.acked(8), message="ack of 8")
    finally:
        ing.stop()


def test_the_session_outlives_central(broker: Broker, store: Store, agent: FakeAgent) -> None:
    first = make_ingest(broker, store)
    first.start()
    assert first.wait_connected(10)
    first.stop()
    agent.online()
    for n in range(1, 51):  # sent while central is away: queued by the broker for its session
        agent.event(n)
    second = make_ingest(broker, store)
    second.start()
    try:
        wait_until(lambda: agent.acked(50), message="ack of all 50 queued events")
        assert [e.eseq for e in stored(store)] == list(range(1, 51))
    finally:
        second.stop()


def test_central_status_is_retained_online_and_offline_after_stop(broker: Broker, store: Store) -> None:
    statuses: list[CentralStatus] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv5)
    gone = threading.Event()
    watcher.on_disconnect = lambda *a: gone.set()
    watcher.on_message = lambda c, u, m: statuses.append(CentralStatus.from_payload(m.payload))
    watcher.on_connect = lambda c, *a: c.subscribe(topics.CENTRAL_STATUS, 1)
    watcher.connect(broker.host, broker.port)
    watcher.loop_start()
    try:
        ing = make_ingest(broker, store, clock=lambda: 1_800_000_000.0)
        ing.start()
        assert ing.wait_connected(10)
        wait_until(lambda: statuses, message="central's online status")
        ing.stop()
        wait_until(lambda: len(statuses) == 2, message="central's offline status")
        assert statuses == [CentralStatus(True, 1_800_000_000_000), CentralStatus(False, 1_800_000_000_000)]
    finally:
        hang_up(watcher, gone)


def test_a_will_of_an_older_connection_is_ignored(broker: Broker, store: Store, recorder: Recorder,
                                                  ingest: Ingest, agent: FakeAgent) -> None:
    agent.online(bdseq=2)
    wait_until(lambda: recorder.presence == [(agent.agent_id, "online")])
    agent.status(AgentState.OFFLINE, 1)  # the late Will of connection 1
    wait_until(lambda: ingest.counters.get("stale_status") == 1)
    assert store.get_agent(agent.agent_id).state == "online"  # type: ignore[union-attr]
    agent.status(AgentState.OFFLINE, 2)
    wait_until(lambda: recorder.presence[-1] == (agent.agent_id, "offline"))
    row = store.get_agent(agent.agent_id)
    assert row is not None and row.to_json()["state"] == "offline" and row.bdseq == 2


@pytest.mark.slow
def test_a_real_will_marks_the_agent_offline(broker: Broker, store: Store, recorder: Recorder, ingest: Ingest,
                                              agent: FakeAgent) -> None:
    will = AgentStatus(AgentState.OFFLINE, 3, T0).to_payload()
    broker.pub("probe/will-holder", b"ready", retain=True)
    # mosquitto_sub stands in for the agent's connection: its Will is the agent's.
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-i", "will-holder", "-t", "probe/will-holder",
         "--will-topic", topics.status(agent.agent_id), "--will-payload", will.decode(), "--will-qos", "1",
         "--will-retain"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sub.stdout is not None
        # The retained probe arrives once it is connected, and so its Will registered.
        assert select.select([sub.stdout], [], [], 10)[0], "mosquitto_sub did not connect"
        assert sub.stdout.readline() == b"ready\n"
        agent.online(bdseq=3)
        wait_until(lambda: (agent.agent_id, "online") in recorder.presence)
        sub.kill()  # the connection dies without a DISCONNECT: the broker publishes the Will
        sub.wait(10)
        wait_until(lambda: recorder.presence[-1] == (agent.agent_id, "offline"), message="offline from the Will")
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(10)
        if sub.stdout is not None:
            sub.stdout.close()


def test_an_agent_without_a_birth_is_asked_for_one(store: Store, ingest: Ingest, agent: FakeAgent) -> None:
    agent.event(1)
    wait_until(lambda: agent.command_list(CommandName.REBIRTH), message="a rebirth command")
    assert len(agent.command_list(CommandName.REBIRTH)) == 1
    agent.event(2)
    wait_until(lambda: agent.acked(2))
    assert len(agent.command_list(CommandName.REBIRTH)) == 1  # rate-limited
    assert [e.eseq for e in stored(store)] == [1, 2]  # stored and acked all the same


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (b"\xc1\xc1 not msgpack", "bad_message.garbage"),
        (Event(1, BOOT, EventKind.SCAN, "gate-1", T0, 1, True, fields={"tag": "AB"}).to_payload()[:-4],
         "bad_message.garbage"),
        (b"\x81\xa4kind\xa7explode", "bad_message.unknown_kind"),
        (b"\x81\xa4eseq\xa3one", "bad_message.wrong_types"),
        (b"\x80" * (1024 * 1024), "bad_message.oversized"),
    ],
    ids=["garbage", "truncated", "unknown-kind", "wrong-types", "1MB"],
)
def test_a_bad_message_is_counted_and_central_goes_on(broker: Broker, store: Store, ingest: Ingest,
                                                      agent: FakeAgent, payload: bytes, counter: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    agent.online()
    broker.pub(topics.evt(agent.agent_id), payload)
    wait_until(lambda: ingest.counters.get(counter) == 1, message=counter)
    assert f"dropped a message on {topics.evt(agent.agent_id)}: {counter}" in caplog.text
    agent.event(1)
    wait_until(lambda: agent.acked(1), message="the next real event acked")
    assert [e.eseq for e in stored(store)] == [1]
    assert store.counters()[counter] == 1


def test_bad_topics_and_statuses_are_counted(broker: Broker, ingest: Ingest) -> None:
    broker.pub("gridpatrol/v1/Bad_Agent/evt", b"\x80")
    broker.pub("gridpatrol/v1/school-1/status", b"{not json")
    broker.pub("gridpatrol/v1/school-1/status", b'{"state": "sleeping", "bdseq": 1, "ts": 1}')
    wait_until(lambda: ingest.counters.get("bad_message.bad_topic") == 1)
    wait_until(lambda: ingest.counters.get("bad_message.garbage") == 1)
    wait_until(lambda: ingest.counters.get("bad_message.wrong_types") == 1)


def test_events_of_agents_outside_the_plan_are_stored_acked_and_flagged(broker: Broker, store: Store) -> None:
    ing = make_ingest(broker, store, is_planned=lambda agent_id: agent_id == "known-1")
    ing.start()
    known, stranger = FakeAgent(broker, "known-1"), FakeAgent(broker, "stranger-1")
    try:
        assert ing.wait_connected(10)
        known.online()
        stranger.online()
        known.event(1)
        stranger.event(1)
        wait_until(lambda: known.acked(1) and stranger.acked(1))
        assert {e.agent: e.unplanned for e in stored(store)} == {"known-1": False, "stranger-1": True}
        assert ing.counters["events_unplanned"] == 1
    finally:
        known.close()
        stranger.close()
        ing.stop()


def test_time_is_estimated_from_the_boot_offset_when_the_clock_is_not_synced(store: Store, ingest: Ingest,
                                                                             agent: FakeAgent) -> None:
    # The birth carries a synced sample: wall = mono + T0.
    agent.status(AgentState.ONLINE, 1)
    agent.birth(1, ts=T0 + 1000, mono_ms=1000, synced=True)
    agent.event(1, synced=True, ts=T0 + 2000, mono_ms=2000)
    agent.event(2, synced=False, ts=42, mono_ms=3000)  # the clock fell back to 1970
    agent.event(3, synced=False, ts=99, mono_ms=7000, boot_id="boot-b")  # a new boot, nothing known: live offset
    wait_until(lambda: agent.acked(3))
    e1, e2, e3 = stored(store)
    assert (e1.ts, e1.ts_est, e1.ts_estimated) == (T0 + 2000, T0 + 2000, False)
    assert (e2.ts, e2.ts_est, e2.ts_estimated) == (42, T0 + 3000, True)
    assert (e3.ts, e3.ts_est, e3.ts_estimated) == (99, e3.received_ts, True)


def test_a_clock_offset_past_64_bits_cannot_stop_the_store(store: Store, ingest: Ingest, agent: FakeAgent) -> None:
    """A hostile (or broken) agent's synced sample puts its offset at -2**64: the estimate of its next unsynced
    event must still be a number SQLite can store, or every batch holding that event fails and nothing in it is
    ever acked."""
    agent.online()
    agent.event(1, synced=True, ts=-(2**63 - 1), mono_ms=2**63 - 1)
    agent.event(2, synced=False, ts=0, mono_ms=0)
    wait_until(lambda: agent.acked(2))
    e1, e2 = stored(store)
    assert (e1.ts_est, e1.ts_estimated) == (-(2**63 - 1), False)
    assert (e2.ts_est, e2.ts_estimated) == (-(2**63 - 1), True)  # clamped to the range an event's ts may have
    assert store.counters().get("store_errors", 0) == 0


def test_telemetry_of_the_current_boot_is_a_time_sample(store: Store, ingest: Ingest, agent: FakeAgent) -> None:
    agent.online()
    tele = Telemetry(uptime_s=10, outbox_depth=0, reconnects=0, clock_synced=True, ts=T0 + 500, mono_ms=500)
    agent.publish(topics.tele(agent.agent_id), tele.to_payload(), qos=0)
    wait_until(lambda: (store.get_agent(agent.agent_id) or None) and store.get_agent(agent.agent_id).tele)  # type: ignore[union-attr]
    agent.event(1, synced=False, ts=5, mono_ms=900, replayed=True)
    wait_until(lambda: agent.acked(1))
    (e,) = stored(store)
    assert (e.ts_est, e.ts_estimated) == (T0 + 900, True)


@pytest.mark.allow_logged_exceptions
def test_a_failing_listener_is_counted_and_ingest_goes_on(broker: Broker, store: Store, agent: FakeAgent,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def events_stored(self, events: Sequence[StoredEvent]) -> None:
            raise RuntimeError("listener bug")

        def presence_changed(self, agent: str, state: str, ts: int) -> None:
            pass

    recorder = Recorder()
    ing = make_ingest(broker, store, listeners=[Broken(), recorder])
    ing.start()
    try:
        assert ing.wait_connected(10)
        agent.online()
        agent.event(1)
        agent.event(2)
        wait_until(lambda: [e.eseq for e in recorder.events] == [1, 2])
        assert ing.counters["listener_errors"] >= 1
        assert "listener bug" in caplog.text
    finally:
        ing.stop()


def test_send_command_reaches_the_agent(ingest: Ingest, agent: FakeAgent) -> None:
    cmd = Command(CommandName.ALARM_ACK, "txn-1", {"source": "office-panic"})
    assert ingest.send_command(agent.agent_id, cmd)
    wait_until(lambda: agent.command_list(CommandName.ALARM_ACK))
    assert agent.command_list(CommandName.ALARM_ACK) == [cmd]
    with pytest.raises(ValueError, match="agent id 'central' is not valid"):
        ingest.send_command("central", cmd)


def test_central_waits_for_a_broker_that_is_not_up_yet(tmp_path: Path, store: Store,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    late = Broker(tmp_path / "late-broker")
    ing = make_ingest(late, store)
    ing.start()
    try:
        wait_until(lambda: "cannot reach the broker" in caplog.text, message="a warning that the broker is away")
        late.start()
        assert ing.wait_connected(20)
    finally:
        ing.stop()
        late.kill()


class FailingStore(Store):
    """The real store, except that the batch holding one chosen eseq fails once (a full disk, say)."""

    def __init__(self, path: Path, fail_eseq: int) -> None:
        super().__init__(path)
        self.fail_eseq = fail_eseq
        self.failed = False

    def insert_events(self, conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> list[StoredEvent]:  # type: ignore[override]
        inserted = Store.insert_events(conn, events)
        if not self.failed and any(e.eseq == self.fail_eseq for e in events):
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return inserted


@pytest.mark.allow_logged_exceptions
def test_a_batch_that_fails_once_is_stored_message_by_message(broker: Broker, tmp_path: Path,
                                                               agent: FakeAgent) -> None:
    store = FailingStore(tmp_path / "central.db", fail_eseq=3)
    ing = make_ingest(broker, store, gap_grace_s=0.2, replay_interval_s=0.5)
    ing.start()
    try:
        assert ing.wait_connected(10)
        agent.online()
        agent.event(1)
        agent.event(2)
        wait_until(lambda: agent.acked(2))
        agent.event(3)
        agent.event(4)
        wait_until(lambda: agent.acked(4), message="ack of 4")
        assert ing.counters.get("store_errors") == 1
        assert [e.eseq for e in stored(store)] == [1, 2, 3, 4]
        assert ing.counters["events_stored"] == 4
        assert store.quarantined() == []  # it failed in the batch, not alone
        assert agent.acks == sorted(agent.acks)
    finally:
        ing.stop()


@pytest.mark.allow_logged_exceptions
def test_a_message_the_store_refuses_is_quarantined_and_acked_past(broker: Broker, store: Store, tmp_path: Path,
                                                                    agent: FakeAgent) -> None:
    from central.alarms import AlarmBook
    from central.plan.registry import PlanRegistry

    with closing(store.connect()) as conn, transaction(conn):  # a poison the store refuses, every time
        if store.path is not None:
            conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.source = 'poison'"
                         " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            conn.execute("CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                         " RAISE EXCEPTION 'refused by the test'; END $$")
            conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW"
                         " WHEN (NEW.source = 'poison') EXECUTE FUNCTION poison()")
    book = AlarmBook(store, plans=PlanRegistry(tmp_path / "plan.json"))
    ing = make_ingest(broker, store, writers=[book])
    other = FakeAgent(broker, "gate-other")
    ing.start()
    try:
        assert ing.wait_connected(10)
        agent.online()
        other.status(AgentState.ONLINE, 1)
        other.birth(1, boot_id="boot-other")
        agent.event(1)
        agent.event(2, kind=EventKind.PANIC, source="poison")
        other.event(1, boot_id="boot-other")
        agent.event(3, kind=EventKind.PANIC, source="office-panic")
        wait_until(lambda: agent.acked(3) and other.acked(1), message="acks past the poison")
        assert [e.eseq for e in stored(store, agent.agent_id)] == [1, 3]
        (q,) = store.quarantined()
        assert (q.agent, q.eseq, q.epoch) == (agent.agent_id, 2, "") and "refused by the test" in q.reason
        assert Event.from_payload(q.payload).source == "poison"  # kept whole
        kinds = sorted((a.kind, a.source) for a in store.alarms())
        assert kinds == [("panic", "office-panic"), ("suspicious", "quarantined")]
        agent.event(4)
        wait_until(lambda: agent.acked(4), message="its next events stored")
        # Sent again (as after a lost ack): still one row in the quarantine, still acked.
        agent.acks.clear()
        agent.event(2, kind=EventKind.PANIC, source="poison", replayed=True)
        wait_until(lambda: agent.acked(4), message="the resend acked")
        assert len(store.quarantined()) == 1
    finally:
        ing.stop()
        other.close()
        book.close()



def test_an_alarm_overtakes_queued_scans_but_not_the_birth_before_it(broker: Broker, store: Store) -> None:
    """The urgent lane keeps an agent's word about itself in order with its alarms (integrity checks need it)."""
    ing = make_ingest(broker, store)  # not started: the test plays paho's thread and takes the writer's batches
    agent = "school-9-gate-2"

    def arrive(channel: str, payload: bytes) -> None:
        msg = mqtt.MQTTMessage(topic=f"gridpatrol/v1/{agent}/{channel}".encode())
        msg.payload = payload
        ing._on_message(msg)  # noqa: SLF001

    def event(eseq: int, kind: EventKind) -> bytes:
        fields = {"tag": "67003B51C6"} if kind is EventKind.SCAN else {}
        return Event(eseq, "boot-2", kind, "gate-1", T0 + eseq, eseq, True, fields=fields).to_payload()

    for eseq in range(1, 6):
        arrive("evt", event(eseq, EventKind.SCAN))
    arrive("status", AgentStatus(AgentState.ONLINE, 2, T0).to_payload())
    arrive("birth", Birth(bdseq=2, boot_id="boot-2", fw="t", inventory={}).to_payload())
    arrive("evt", event(6, EventKind.PANIC))
    arrive("evt", event(7, EventKind.SCAN))
    first = ing._gather()  # noqa: SLF001
    assert [type(i.message).__name__ for i in first] == ["AgentStatus", "Birth", "Event"]
    assert first[-1].message.kind == EventKind.PANIC
    rest = ing._gather()  # noqa: SLF001
    assert [i.message.eseq for i in rest] == [1, 2, 3, 4, 5, 7]
