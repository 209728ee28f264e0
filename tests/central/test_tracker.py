"""The live completion tracker (central/tracker.py): incremental, clock-driven, published retained."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from central.bus import Bus, Notice
from central.completion import RoundStatus
from central.plan.registry import PlanRegistry
from central.report import Counts, report_from_store
from central.store import AgentRow, Store, StoredEvent
from central.tracker import COMPACT_AFTER_MS, REBUILD_EVERY_S, CompletionTracker, store_feedback_readers, store_scans
from tests.central.plan.samples import AGENT, DESIGN_PLAN, LIN, READER, STRANGER, TIERED, ZHAO, at, plan, with_route
from tests.support import Broker, wait_until
from wire.messages import Command, CommandName

MAY_1 = dt.date(2024, 5, 1)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def stored(eseq: int, reader: str, ts: int, tag: str = LIN, *, agent: str = AGENT, received: int | None = None) -> StoredEvent:
    return StoredEvent(agent=agent, eseq=eseq, kind="scan", source=reader, ts=ts, ts_est=ts, ts_estimated=False,
                       received_ts=ts if received is None else received, replayed=received is not None,
                       fields={"tag": tag})


def insert(store: Store, events: list[StoredEvent]) -> list[StoredEvent]:
    with closing(store.connect()) as conn:
        with conn:
            return Store.insert_events(conn, events)


class Setup:
    def __init__(self, tmp_path: Path, text: str = DESIGN_PLAN, now: int = at(1, 21)) -> None:
        self.clock = Clock(now)
        self.registry = PlanRegistry(tmp_path / "plan.json", clock=self.clock)
        # Effective long before: the nights these tests walk are governed by the plan.
        self.registry.add(plan(text.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = "2024-04-01"', 1)))
        self.store = Store(tmp_path / "central.db")
        self.store.connect().close()
        self.bus = Bus()
        self.notices: list[Notice] = []
        self.bus.subscribe(self.notices.append)
        self.published: list[tuple[str, dict[str, Any], bool]] = []
        self.tracker = CompletionTracker(self.registry, load_scans=store_scans(self.store), publish=self._publish,
                                         bus=self.bus, clock=self.clock)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.published.append((topic, json.loads(payload), retain))

    def at(self, ms: int) -> None:
        self.clock.ms = ms
        self.tracker.tick()

    def feed(self, events: list[StoredEvent]) -> None:
        self.tracker.events_stored(insert(self.store, events))

    def statuses(self) -> list[RoundStatus]:
        report = self.tracker.report(MAY_1)
        assert report is not None
        return [r.status for r in report.rounds]


def test_scans_move_only_their_rounds_and_rounds_close_by_the_clock(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.at(at(1, 21))
    assert s.tracker.live_day == dt.date(2024, 4, 30)  # before 22:00 the night in progress began yesterday
    s.published.clear()
    s.at(at(1, 22, 1))
    assert s.tracker.live_day == MAY_1
    assert {t for t, _, _ in s.published} == {f"gridpatrol/v1/central/completion/{u}" for u in
                                              ("fengze", "quanxiu", "chengzhou", "chengzhou-g1")}
    assert all(retain for _, _, retain in s.published)
    s.published.clear()
    s.feed([stored(1, "gate-1", at(1, 22, 5)), stored(2, "gate-2", at(1, 22, 20))])
    assert s.tracker.scans_counted == 2
    # an open round's progress moves its own unit only; no status changed, so no rollup above it
    assert [t for t, _, _ in s.published] == ["gridpatrol/v1/central/completion/chengzhou-g1"]
    body = s.published[-1][1]
    assert body["date"] == "2024-05-01" and body["rounds_open"] == 4 and body["completion"] is None
    assert body["open_rounds"][0]["scanned"] == ["cp-east-gate", "cp-north-fence"]
    s.feed([stored(3, "gate-3", at(1, 23, 0))])
    assert s.statuses() == [RoundStatus.OPEN] * 4
    s.published.clear()
    s.at(at(2, 0, 14, 59))
    assert s.published == []
    s.at(at(2, 0, 15))
    assert s.statuses() == [RoundStatus.COMPLETE] + [RoundStatus.OPEN] * 3
    assert sorted(t.rsplit("/", 1)[1] for t, _, _ in s.published) == ["chengzhou", "chengzhou-g1", "fengze", "quanxiu"]
    top = next(b for t, b, _ in s.published if t.endswith("/fengze"))
    assert top["rollup"]["rounds_complete"] == 1 and top["rollup"]["completion"] == 1.0
    assert top["rounds_scheduled"] == 0  # the district has no route of its own
    s.at(at(2, 6, 15))
    assert s.statuses() == [RoundStatus.COMPLETE] + [RoundStatus.MISSED] * 3
    assert [n.data["unit"] for n in s.notices if n.topic == "completion"][-4:] == ["chengzhou", "chengzhou-g1", "fengze", "quanxiu"]


def test_a_scan_replayed_hours_later_counts_for_the_round_it_happened_in(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.at(at(2, 5))
    s.feed([stored(1, "gate-1", at(2, 0, 20)), stored(2, "gate-2", at(2, 0, 25))])
    s.at(at(2, 7))
    assert s.statuses() == [RoundStatus.MISSED, RoundStatus.INCOMPLETE, RoundStatus.MISSED, RoundStatus.MISSED]
    s.feed([stored(3, "gate-3", at(2, 0, 30), received=at(2, 7, 30))])  # the agent was cut off; its outbox held it
    assert s.statuses() == [RoundStatus.MISSED, RoundStatus.COMPLETE, RoundStatus.MISSED, RoundStatus.MISSED]
    row = s.tracker.report(MAY_1).units[-1]  # type: ignore[union-attr]
    assert (row.unit, row.rollup) == ("chengzhou-g1", Counts(complete=1, missed=3))


def test_a_closed_round_lets_its_scans_go_and_a_late_scan_has_the_day_read_again(tmp_path: Path) -> None:
    """Memory follows the open rounds, not the day's scans; a late scan still counts where it happened."""
    s = Setup(tmp_path)
    s.at(at(1, 22, 1))
    s.feed([stored(1, "gate-1", at(1, 22, 5)), stored(2, "gate-2", at(1, 22, 20)), stored(3, "gate-1", at(2, 0, 20))])
    assert s.tracker.held_scans() == 3
    s.at(at(2, 0, 15))  # the first round closes: judged, its scans still held for a scan that is late by minutes
    assert s.statuses()[0] is RoundStatus.INCOMPLETE and s.tracker.held_scans() == 3
    s.at(at(2, 0, 15) + COMPACT_AFTER_MS)
    assert s.tracker.held_scans() == 1  # the second round's scan only
    first = s.tracker.report(MAY_1).rounds[0]  # type: ignore[union-attr]
    assert (first.status, first.scanned) == (RoundStatus.INCOMPLETE, ("cp-east-gate", "cp-north-fence"))
    # The agent was cut off; its outbox held the third checkpoint's scan of the first round.
    s.feed([stored(4, "gate-3", at(1, 23, 0), received=s.clock.ms)])
    assert s.tracker.rebuilds == 1
    first = s.tracker.report(MAY_1).rounds[0]  # type: ignore[union-attr]
    assert (first.status, first.scanned) == (RoundStatus.COMPLETE, ("cp-east-gate", "cp-north-fence", "cp-library"))
    assert s.statuses()[1] is RoundStatus.OPEN and s.tracker.held_scans() == 1  # read again, and let go again
    row = s.tracker.report(MAY_1).units[-1]  # type: ignore[union-attr]
    assert (row.unit, row.own) == ("chengzhou-g1", Counts(complete=1, open=3))
    # A replayed backlog brings late scans batch after batch: the day is read again at most every REBUILD_EVERY_S.
    clocks = len(s.tracker._compacting)  # noqa: SLF001 (rounds waiting to be compacted)
    s.feed([stored(5, "gate-1", at(1, 22, 40), received=s.clock.ms)])
    assert s.tracker.rebuilds == 1 and dict(s.tracker.report(MAY_1).rounds[0].repeated) == {}  # type: ignore[union-attr]
    s.at(s.clock.ms + int(REBUILD_EVERY_S * 1000))
    assert s.tracker.rebuilds == 2
    assert len(s.tracker._compacting) == clocks  # noqa: SLF001 (a rebuild replaces the day's clocks, never adds)
    assert dict(s.tracker.report(MAY_1).rounds[0].repeated) == {"cp-east-gate": 2}  # type: ignore[union-attr]


def test_start_reads_what_the_store_holds_and_counts_each_event_once(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    early = [stored(1, "gate-1", at(1, 22, 5)), stored(2, "gate-2", at(1, 22, 10)), stored(3, "gate-3", at(1, 22, 20), STRANGER)]
    insert(s.store, early)
    s.clock.ms = at(1, 23)
    s.tracker.start()
    try:
        s.tracker.events_stored(early[:2])  # delivered again (a listener racing the start): not counted twice
        s.feed([stored(4, "gate-3", at(1, 22, 30))])
        report = s.tracker.report()
        assert report is not None and report.date == MAY_1
        first = report.rounds[0]
        assert first.scanned == ("cp-east-gate", "cp-north-fence", "cp-library")
        assert first.unauthorised == (STRANGER,)
        assert dict(first.repeated) == {}
    finally:
        s.tracker.stop()


def test_incremental_counts_match_the_report_built_from_the_store(tmp_path: Path) -> None:
    s = Setup(tmp_path, TIERED)
    s.at(at(1, 21))
    rng = random.Random(7)
    agents = ["ag-1", "ag-2", "ag-3", "ag-4", "ag-5", "ag-9"]
    events = []
    for eseq in range(1, 400):
        ts = at(1, 21, 30) + rng.randrange(6 * 3600 * 1000)
        events.append(stored(eseq, "r1", ts, rng.choice([LIN, LIN, STRANGER]), agent=rng.choice(agents)))
    rng.shuffle(events)  # arrival order is not time order
    for i in range(0, len(events), 37):
        s.clock.ms = max(s.clock.ms, at(1, 22) + i * 60_000)
        s.tracker.tick()
        s.feed(events[i:i + 37])
    s.at(at(2, 3))
    live = s.tracker.report(MAY_1)
    batch = report_from_store(s.store, s.registry.history(), MAY_1, at(2, 3))
    assert live is not None
    assert [(r.slot, r.status, r.scanned, r.unauthorised, dict(r.repeated)) for r in live.rounds] == \
           [(r.slot, r.status, r.scanned, r.unauthorised, dict(r.repeated)) for r in batch.rounds]
    assert live.units == batch.units


def test_a_new_plan_version_is_applied_on_the_next_tick(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.at(at(1, 22, 30))
    s.feed([stored(1, "gate-3", at(1, 22, 5)), stored(2, "gate-1", at(1, 22, 10)), stored(3, "gate-2", at(1, 22, 20))])
    s.clock.ms = at(1, 23)
    PlanRegistry(tmp_path / "plan.json", clock=s.clock).add(plan(with_route("any")))  # e.g. `plan import` in another process
    s.at(at(2, 0, 30))
    assert s.statuses() == [RoundStatus.INCOMPLETE] + [RoundStatus.OPEN] * 3  # 22:00 began under the strict plan
    assert [n.data for n in s.notices if n.topic == "plan"] == [{"version": 2}]
    s.feed([stored(4, "gate-3", at(2, 0, 40)), stored(5, "gate-1", at(2, 0, 45)), stored(6, "gate-2", at(2, 0, 50))])
    s.at(at(2, 2, 30))
    assert s.statuses()[:2] == [RoundStatus.INCOMPLETE, RoundStatus.COMPLETE]


def test_running_tracker_applies_an_import_within_a_second(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.tracker = CompletionTracker(s.registry, load_scans=store_scans(s.store), bus=s.bus)  # the real clock
    s.tracker.start()
    try:
        PlanRegistry(tmp_path / "plan.json").add(plan(DESIGN_PLAN.replace("night-loop", "night-loop-2")))
        # It polls twice a second; the deadline is generous only because the test machine may be busy.
        notice = wait_until(lambda: [n for n in s.notices if n.topic == "plan"], timeout=5, message="plan notice")
        assert notice[0].data == {"version": 2}
    finally:
        s.tracker.stop()


class Watcher:
    """A dashboard on the broker: every retained completion message."""

    def __init__(self, broker: Broker) -> None:
        self.got: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-dashboard", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("gridpatrol/v1/central/completion/#", qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[msg.topic] = {"retain": msg.retain, **json.loads(msg.payload)}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-central", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def test_completion_is_retained_on_the_broker_for_any_dashboard(tmp_path: Path, broker: Broker, publisher: mqtt.Client) -> None:
    s = Setup(tmp_path)
    sent: list[mqtt.MQTTMessageInfo] = []
    s.tracker = CompletionTracker(s.registry, load_scans=store_scans(s.store), clock=s.clock,
                                  publish=lambda t, p, retain=False: sent.append(publisher.publish(t, p, qos=1, retain=retain)))
    s.at(at(2, 0, 20))
    s.feed([stored(1, "gate-1", at(1, 22, 5)), stored(2, "gate-2", at(1, 22, 6)), stored(3, "gate-3", at(1, 22, 7))])
    s.at(at(2, 2, 20))
    for info in sent:
        info.wait_for_publish(10)  # at the broker before the dashboard comes
    topic = "gridpatrol/v1/central/completion/fengze"
    # a dashboard that connects afterwards still gets the latest state: it is retained
    watcher = Watcher(broker)
    try:
        got = wait_until(lambda: watcher.got.get(topic, {}).get("rollup", {}).get("rounds_missed") == 1 and watcher.got[topic],
                         message="retained completion of fengze")
        assert got["retain"] is True
        assert (got["unit"], got["tier"], got["date"]) == ("fengze", "district", "2024-05-01")
        assert {k: got["rollup"][k] for k in ("rounds_scheduled", "rounds_complete", "rounds_missed", "rounds_open", "completion")} == {
            "rounds_scheduled": 4, "rounds_complete": 1, "rounds_missed": 1, "rounds_open": 2, "completion": 0.5}
    finally:
        watcher.close()


def test_scans_of_readers_no_plan_knows_change_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.at(at(1, 22, 1))
    s.published.clear()
    s.feed([stored(1, "gate-9", at(1, 22, 5)), stored(2, READER["cp-east-gate"], at(1, 22, 6), agent="unknown-agent")])
    assert s.tracker.scans_counted == 0 and s.published == []


def test_each_fresh_planned_scan_is_answered_with_its_verdict(tmp_path: Path) -> None:
    sent: list[tuple[str, Command]] = []
    s = Setup(tmp_path)
    s.tracker = CompletionTracker(s.registry, load_scans=store_scans(s.store), bus=s.bus, clock=s.clock,
                                  send_command=lambda agent, command: sent.append((agent, command)) or True)
    s.at(at(1, 21, 0))
    s.clock.ms = at(1, 21, 0, 1)
    s.feed([stored(1, "gate-1", at(1, 21, 0))])  # before the window opens
    s.at(at(1, 22, 10))
    s.clock.ms = at(1, 22, 10, 1)
    s.feed([
        stored(2, "gate-2", at(1, 22, 10)),  # before the east gate: out of order
        stored(3, "gate-1", at(1, 22, 10, 1), tag=STRANGER),
        stored(4, "gate-1", at(1, 22, 10, 1), tag=ZHAO),  # volunteers-8: not on this route
        stored(5, "gate-1", at(1, 22, 10, 1)),
        stored(6, "desk", at(1, 22, 10, 1)),  # no checkpoint: no answer
        stored(7, "gate-2", at(1, 22, 10, 1), received=at(1, 22, 10, 1)),  # replayed: nobody is there any more
    ])
    s.clock.ms = at(1, 22, 10, 31)
    s.feed([stored(8, "gate-2", at(1, 22, 10, 30))])
    assert [(a, c.cmd, dict(c.args)) for a, c in sent] == [
        (AGENT, CommandName.FEEDBACK, {"source": "gate-1", "verdict": "outside-window", "eseq": 1}),
        (AGENT, CommandName.FEEDBACK, {"source": "gate-2", "verdict": "out-of-order", "eseq": 2}),
        (AGENT, CommandName.FEEDBACK, {"source": "gate-1", "verdict": "unknown-card", "eseq": 3}),
        (AGENT, CommandName.FEEDBACK, {"source": "gate-1", "verdict": "not-on-route", "eseq": 4}),
        (AGENT, CommandName.FEEDBACK, {"source": "gate-1", "verdict": "counted", "eseq": 5}),
        (AGENT, CommandName.FEEDBACK, {"source": "gate-2", "verdict": "counted", "eseq": 8}),
    ]
    assert len({c.txn for _, c in sent}) == len(sent)
    assert Command.from_payload(sent[0][1].to_payload()) == sent[0][1]
    again = stored(8, "gate-2", at(1, 22, 10, 30))  # read from the store at a rebuild, then delivered too
    s.tracker.events_stored([again])
    assert len(sent) == 6


def test_verdicts_go_only_to_readers_whose_agent_announced_a_feedback_output(tmp_path: Path) -> None:
    sent: list[tuple[str, Command]] = []
    s = Setup(tmp_path)
    asked: list[str] = []

    def readers(agent: str) -> frozenset[str]:
        asked.append(agent)
        return frozenset({"gate-2"})

    s.tracker = CompletionTracker(s.registry, load_scans=store_scans(s.store), bus=s.bus, clock=s.clock,
                                  send_command=lambda agent, command: sent.append((agent, command)) or True,
                                  feedback_readers=readers)
    s.at(at(1, 22, 10))
    s.clock.ms = at(1, 22, 10, 5)
    s.feed([stored(1, "gate-1", at(1, 22, 10)), stored(2, "gate-2", at(1, 22, 10, 2))])
    assert [dict(c.args)["source"] for _, c in sent] == ["gate-2"]
    assert asked == [AGENT]  # read once, then kept
    s.tracker.presence_changed(AGENT, "online", at(1, 22, 10, 6))  # a new birth may list other readers
    s.feed([stored(3, "gate-3", at(1, 22, 10, 4))])
    assert asked == [AGENT, AGENT]


def test_a_member_enrolled_by_printed_number_completes_a_route_of_mixed_readers(tmp_path: Path) -> None:
    """Issue 13: an RDM6300 first (6F007B3972), a Wiegand 26 reader second (7B3972), a Wiegand 34 third
    (007B3972); Wu is enrolled only as card "0008075634", and in a second plan version only as "123,14706"."""
    def version(card: str, effective: str) -> Any:
        return plan(DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', f'{{ name = "Wu", card = "{card}" }}').replace(
            'timezone = "Asia/Shanghai"', f'timezone = "Asia/Shanghai"\neffective = "{effective}"', 1))

    clock = Clock(at(1, 9))
    registry = PlanRegistry(tmp_path / "plan.json", clock=clock)
    registry.add(version("0008075634", "2024-04-01"))
    registry.add(version("123,14706", "2024-05-02"))
    store = Store(tmp_path / "central.db")
    store.connect().close()
    walk = [("gate-1", "6F007B3972", "em4100"), ("gate-2", "7B3972", "wiegand26"), ("gate-3", "007B3972", "wiegand34")]
    events = [
        StoredEvent(agent=AGENT, eseq=day * 10 + i, kind="scan", source=reader, ts=at(day, 22, 5 + i), ts_est=at(day, 22, 5 + i),
                    ts_estimated=False, received_ts=at(day, 22, 5 + i), replayed=False, fields={"tag": tag, "fmt": fmt})
        for day in (1, 2) for i, (reader, tag, fmt) in enumerate(walk)
    ]
    for day in (1, 2):
        clock.ms = at(day, 22, 30)
        tracker = CompletionTracker(registry, load_scans=store_scans(store), clock=clock)
        tracker.tick()
        tracker.events_stored(insert(store, [e for e in events if e.eseq // 10 == day]))
        clock.ms = at(day + 1, 7)
        tracker.tick()
        live = tracker.report(dt.date(2024, 5, day))
        assert live is not None
        assert [(r.status, r.plan_version) for r in live.rounds][0] == (RoundStatus.COMPLETE, day)
        # the report read from the store (tag and fmt from its columns) agrees
        stored = report_from_store(store, registry.history(), dt.date(2024, 5, day), at(day + 1, 7))
        assert [r.status for r in stored.rounds] == [r.status for r in live.rounds]


def test_the_readers_with_feedback_come_from_the_agents_last_birth(tmp_path: Path) -> None:
    store = Store(tmp_path / "central.db")
    births = {
        "new-agent": {"inventory": {"readers": [{"name": "gate-1", "protocol": "rdm6300", "feedback": "buzzer"},
                                                {"name": "gate-2", "protocol": "rdm6300"}]}},
        "old-agent": {"inventory": {"readers": [{"name": "gate-1", "protocol": "rdm6300"}]}},
        "odd-agent": {"inventory": {"readers": "gate-1"}},
    }
    conn = store.connect()
    try:
        with conn:
            store.save_agents(conn, [AgentRow(agent=a, state="online", birth=b) for a, b in births.items()])
    finally:
        conn.close()
    readers = store_feedback_readers(store)
    assert readers("new-agent") == frozenset({"gate-1"})
    assert readers("old-agent") == readers("odd-agent") == readers("never-heard-of") == frozenset()
