"""A group's feed (central/feed.py): every member hears what the others stored, once; one feedback per scan.

Two Central objects of one group in this process, on one PostgreSQL store and
a real Mosquitto, which shares the agents' events between them
(``$share/GROUP/...``, round robin).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Iterator, Sequence
from zoneinfo import ZoneInfo

import pytest

from central.app import Central
from central.bus import Bus, Notice
from central.config import parse_config
from central.feed import GroupFeed, parse, payloads, ranges_of
from central.metrics import central_metrics
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store import Connection, StoredEvent, open_store, transaction
from central.store import feed as feed_sql
from tests.support import Broker, FakeAgent, all_day_plan, wait_until
from wire import topics
from wire.messages import Birth, CommandName, Event, EventKind

GROUP = "district-1"
AGENT = "school-9-gate-1"
LIN = "67003B51C6"



def stored(agent: str, eseq: int, epoch: str = "e1") -> StoredEvent:
    return StoredEvent(agent=agent, eseq=eseq, kind="scan", source="gate-1", ts=1, ts_est=1, ts_estimated=False,
                       received_ts=1, replayed=False, fields={"tag": "A"}, epoch=epoch)


def test_a_batch_is_announced_as_runs_of_eseqs_in_payloads_postgresql_takes() -> None:
    batch = [stored("gate-a", n) for n in (3, 1, 2, 7, 8)] + [stored("gate-b", 5), stored("gate-a", 9, "e2")]
    assert ranges_of(batch) == [("gate-a", "e1", 1, 3), ("gate-a", "e1", 7, 8), ("gate-b", "e1", 5, 5),
                                ("gate-a", "e2", 9, 9)]
    many = [(f"agent-{i:04d}-{'x' * 40}", "0123456789abcdef", i + 1, i + 1) for i in range(600)]
    texts = payloads("central-a", "e", many)
    assert len(texts) > 1 and all(len(t.encode()) <= feed_sql.PAYLOAD_MAX for t in texts)
    assert [r for t in texts for r in parse(t).ranges] == many
    assert {parse(t).member for t in texts} == {"central-a"}
    alarms = parse(payloads("central-b", "a", [(12, "raised"), (13, "acknowledged")])[0])
    assert (alarms.member, alarms.alarms, alarms.ranges) == ("central-b", [(12, "raised"), (13, "acknowledged")], [])


@pytest.mark.parametrize(("payload", "says"), [
    ("not json", "not JSON"),
    ('["m"]', "names no member"),
    ('{"m": ""}', "names no member"),
    ('{"m": "a", "e": {}}', "'e' is not a list"),
    ('{"m": "a", "e": [["gate-a", "e1", 5, 4]]}', "is not [agent, epoch, first, last]"),
    ('{"m": "a", "e": [["gate-a", "e1", 0, 4]]}', "is not [agent, epoch, first, last]"),
    ('{"m": "a", "e": [["gate-a", "e1", 1.5, 4]]}', "is not [agent, epoch, first, last]"),
    ('{"m": "a", "a": [["12", "raised"]]}', "is not [alarm id, change]"),
])
def test_a_payload_that_is_not_the_feeds_is_refused_with_the_reason(payload: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"feed payload.*{says}".replace("[", r"\[").replace("]", r"\]")):
        parse(payload)


class Heard:
    """What a member's bus carried, and what its own ingest stored (its listeners hear only those)."""

    def __init__(self, central: Central) -> None:
        self.notices: list[Notice] = []
        self.own: list[StoredEvent] = []
        self._lock = threading.Lock()
        central.bus.subscribe(self._notice)
        central.add_listener(self)

    def _notice(self, notice: Notice) -> None:
        with self._lock:
            self.notices.append(notice)

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        with self._lock:
            self.own.extend(events)

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        pass

    def events(self) -> Counter[int]:
        with self._lock:
            return Counter(n.data["eseq"] for n in self.notices if n.topic == "event")

    def alarms(self) -> list[tuple[int, str]]:
        with self._lock:
            return [(n.data["id"], n.data["change"]) for n in self.notices if n.topic == "alarm"]

    def own_eseqs(self) -> set[int]:
        with self._lock:
            return {e.eseq for e in self.own}


def member(tmp_path: Path, broker: Broker, pg_url: str, name: str, plan: str | None = None, *,
           tracker: bool = False) -> Central:
    data = tmp_path / name
    data.mkdir()
    if plan is not None:
        PlanRegistry.for_data_dir(data).add(parse_plan_bytes(plan.encode()))
    config = parse_config(
        f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[store]\nurl = "{pg_url}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "central-{name}"\n[ingest]\ngroup = "{GROUP}"\n')
    return Central(config, tracker=tracker, web=False)


@pytest.fixture
def started() -> Iterator[list[Central]]:
    running: list[Central] = []
    try:
        yield running
    finally:
        for central in reversed(running):
            central.stop()


def run(started: list[Central], *centrals: Central) -> None:
    for central in centrals:
        central.start()
        started.append(central)
        assert central.ingest.wait_connected(10)
    wait_until(lambda: any(c.leadership and c.leadership.leading for c in started), message="a leader")


def event(eseq: int, kind: EventKind = EventKind.SCAN, tag: str = LIN, source: str = "gate-1") -> bytes:
    fields = {"tag": tag} if kind is EventKind.SCAN else {}
    return Event(eseq=eseq, boot_id="boot-a", kind=kind, source=source, ts=int(time.time() * 1000),
                 mono_ms=5000 + eseq, clock_synced=True, fields=fields).to_payload()


def test_every_member_hears_each_event_and_alarm_once_whichever_member_stored_it(
        tmp_path: Path, broker: Broker, pg_url: str, started: list[Central]) -> None:
    a, b = member(tmp_path, broker, pg_url, "a"), member(tmp_path, broker, pg_url, "b")
    heard = {"a": Heard(a), "b": Heard(b)}
    run(started, a, b)
    agent = FakeAgent(broker, AGENT)
    try:
        for eseq in range(1, 11):
            agent.publish(topics.evt(AGENT), event(eseq))
        agent.publish(topics.evt(AGENT), event(11, EventKind.PANIC, source="office-panic"))
        wait_until(lambda: all(h.events() == Counter(range(1, 12)) for h in heard.values()), timeout=10,
                   message="every event on both members' buses")
        # The broker shared them out: each member stored some, and heard the others' through the feed.
        wait_until(lambda: heard["a"].own_eseqs() | heard["b"].own_eseqs() == set(range(1, 12)),
                   message="each member's listeners told of what it stored")
        assert heard["a"].own_eseqs() and heard["b"].own_eseqs()
        assert not heard["a"].own_eseqs() & heard["b"].own_eseqs()
        store = open_store(pg_url)
        try:
            (panic,) = wait_until(lambda: store.alarms(), message="the panic's alarm")
        finally:
            store.close()
        wait_until(lambda: all((panic.id, "raised") in h.alarms() for h in heard.values()),
                   message="the raise on both members' buses")
        a.alarm_book.acknowledge(panic.id, "desk-a")  # type: ignore[union-attr]
        wait_until(lambda: all((panic.id, "acknowledged") in h.alarms() for h in heard.values()),
                   message="the acknowledgement on both members' buses")
        time.sleep(0.3)  # anything doubled would have come by now
        for h in heard.values():
            assert h.events() == Counter(range(1, 12))
            assert Counter(h.alarms()) == {(panic.id, "raised"): 1, (panic.id, "acknowledged"): 1}
        assert a.feed is not None and b.feed is not None
        assert a.feed.received + b.feed.received == 11 and a.feed.dropped == b.feed.dropped == 0
        text = central_metrics(a).render().decode()
        assert f"gridpatrol_group_feed_received_total {float(a.feed.received)}" in text
        assert 'gridpatrol_queue_depth{queue="group_feed"} 0.0' in text
    finally:
        agent.close()


def birth_with_feedback() -> bytes:
    readers = tuple({"name": r, "feedback": f"{r}-buzzer"} for r in ("gate-1", "gate-2"))
    return Birth(bdseq=1, boot_id="boot-a", fw="test-1", inventory={"readers": readers}).to_payload()


def test_each_scan_gets_one_verdict_judged_on_every_members_scans(tmp_path: Path, broker: Broker, pg_url: str,
                                                                  started: list[Central]) -> None:
    """A volunteer walks the east gate, then the north fence, three times. The broker shares the scans out,
    so the north fence's is often stored by the member that did not store the east gate's: only a tracker
    that counts every member's scans judges it in order. The leader answers each, once."""
    yesterday = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)
    plan = all_day_plan(effective=yesterday.isoformat(), agent=AGENT, card=LIN, readers=["gate-1", "gate-2"],
                        order="strict")
    a = member(tmp_path, broker, pg_url, "a", plan, tracker=True)
    run(started, a)  # the first to start leads
    b = member(tmp_path, broker, pg_url, "b", plan, tracker=True)
    heard_b = Heard(b)
    run(started, b)
    assert a.leadership is not None and a.leadership.leading
    agent = FakeAgent(broker, AGENT)
    try:
        agent.publish(topics.birth(AGENT), birth_with_feedback())
        store = open_store(pg_url)
        try:
            wait_until(lambda: (row := store.get_agent(AGENT)) is not None and row.birth is not None,
                       message="the birth stored")
        finally:
            store.close()
        for eseq in range(1, 7):  # each scan once the one before was answered: the volunteer walks on
            agent.publish(topics.evt(AGENT), event(eseq, source="gate-1" if eseq % 2 else "gate-2"))
            wait_until(lambda n=eseq: len(agent.command_list(CommandName.FEEDBACK)) >= n,  # type: ignore[misc]
                       message=f"the verdict on scan {eseq}")
        time.sleep(0.3)  # a second answer to any of them would have come by now
        answers = agent.command_list(CommandName.FEEDBACK)
        assert [(c.args["eseq"], c.args["verdict"]) for c in answers] == [(n, "counted") for n in range(1, 7)]
        assert heard_b.own_eseqs(), "the non-leader stored none of the scans"
        # The non-leader's tracker counts the leader's scans too: its dashboard's completion is the group's.
        assert a.tracker is not None and b.tracker is not None
        wait_until(lambda: a.tracker.scans_counted == b.tracker.scans_counted >= 6,  # type: ignore[union-attr]
                   message="both trackers counting all six scans")
    finally:
        agent.close()


def test_a_flood_past_the_bound_is_dropped_and_resynced_not_queued(pg_url: str) -> None:
    store = open_store(pg_url)
    store.connect().close()  # the schema
    bus = Bus()
    notices: list[Notice] = []
    bus.subscribe(notices.append)

    class Tracker:
        def __init__(self) -> None:
            self.got: list[StoredEvent] = []
            self.resyncs = 0

        def events_stored(self, events: Sequence[StoredEvent]) -> None:
            self.got.extend(events)

        def resync(self) -> None:
            self.resyncs += 1

    def commit(conn: Connection, eseqs: range) -> None:
        batch = [stored("gate-a", n) for n in eseqs]
        with transaction(conn):
            store.insert_events(conn, batch)
            sender.write(conn, batch, ())

    tracker = Tracker()
    listener = GroupFeed(store, GROUP, member="central-a", bus=bus, listeners=[tracker], pending_max=500)
    sender = GroupFeed(store, GROUP, member="central-b", bus=Bus())
    listener.start()
    try:
        with closing(store.connect()) as conn:
            commit(conn, range(1, 11))
            wait_until(lambda: [e.eseq for e in tracker.got] == list(range(1, 11)), message="a batch handed on")
            with pytest.raises(RuntimeError), transaction(conn):  # rolled back: never announced
                store.insert_events(conn, [stored("gate-a", 11)])
                sender.write(conn, [stored("gate-a", 11)], ())
                raise RuntimeError("rolled back")
            commit(conn, range(11, 1011))  # a batch of a flood: past the bound at once
            wait_until(lambda: tracker.resyncs == 1, message="a resync once the feed caught up")
            assert listener.dropped == 1000 and len(tracker.got) == 10
            assert [n.topic for n in notices] == ["resync"]
            commit(conn, range(1011, 1013))  # then event by event again
            wait_until(lambda: [e.eseq for e in tracker.got[10:]] == [1011, 1012], message="the next batch")
        assert (listener.received, listener.resyncs) == (12, 1)
    finally:
        listener.stop()
        store.close()
