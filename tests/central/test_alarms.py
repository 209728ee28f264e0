"""The alarm book (central/alarms.py): raise, escalate by a clock the test holds, acknowledge, resolve."""

from __future__ import annotations

import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import pytest

from central.alarms import AlarmBook, AlarmError, AlarmState, acknowledge, get_alarm, list_steps
from central.bus import Bus, Notice
from central.config import MqttConfig
from central.ingest import Ingest
from central.plan.registry import PlanRegistry
from central.store import Store, StoredEvent
from tests.central.plan.samples import AGENT, plan
from tests.support import Broker, FakeAgent, run_cli, wait_until
from wire.messages import AgentState, Command, CommandName, EventKind

T0 = 1_714_600_000_000  # UTC ms; the clock of these tests starts here
UNITS = ["chengzhou-g1", "chengzhou", "quanxiu", "fengze"]


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


def event(eseq: int, kind: str, source: str, ts: int, *, agent: str = AGENT, received: int | None = None) -> StoredEvent:
    return StoredEvent(agent=agent, eseq=eseq, kind=kind, source=source, ts=ts, ts_est=ts, ts_estimated=False,
                       received_ts=ts if received is None else received, replayed=False)


class Book:
    def __init__(self, tmp_path: Path, store: Store | None = None, **kw: Any) -> None:
        self.clock = Clock()
        self.registry = PlanRegistry(tmp_path / "plan.json", clock=self.clock)
        self.registry.add(plan())
        self.store = store if store is not None else Store(tmp_path / "central.db")
        self.store.connect().close()
        self.sent: list[tuple[str, Command]] = []
        self.bus = Bus()
        self.notices: list[Notice] = []
        self.bus.subscribe(self.notices.append)
        self.book = AlarmBook(self.store, plans=self.registry, send_command=self._send, bus=self.bus,
                              clock=self.clock, new_txn=self._txn, **kw)
        self._n = 0

    def _txn(self) -> str:
        self._n += 1
        return f"txn-{self._n}"

    def _send(self, agent: str, command: Command) -> bool:
        self.sent.append((agent, command))
        return True

    def tick(self, after_s: float) -> None:
        self.clock.ms = T0 + int(after_s * 1000)
        self.book.tick()

    def only(self) -> Any:
        alarms = self.book.alarms(include_all=True)
        assert len(alarms) == 1
        return alarms[0]

    def steps(self) -> list[tuple[int, str | None, str | None, str]]:
        return [(s.ts - T0, s.unit, s.tier, s.action) for s in self.book.steps(self.only().id)]


@pytest.fixture
def book(tmp_path: Path, store: Store) -> Iterator[Book]:
    """An alarm book on each engine's store."""
    b = Book(tmp_path, store)
    try:
        yield b
    finally:
        b.book.close()


def test_an_unanswered_panic_climbs_every_tier_and_is_resolved_by_its_ack(book: Book) -> None:
    book.book.events_stored([event(1, "panic", "office-panic", T0)])
    a = book.only()
    assert a.to_json() == {"id": 1, "agent": AGENT, "source": "office-panic", "kind": "panic", "unit": "chengzhou-g1",
                           "state": "active", "raised_ts": T0, "acked_by": None, "acked_ts": None, "escalated_to": None}
    climbed = []
    for s in range(0, 2000, 1):  # a tick every second, as the running central does twice a second
        book.tick(s)
        level = book.only().escalated_to
        if not climbed or climbed[-1][1] != level:
            climbed.append((s, level))
    assert climbed == [(0, None), (120, "chengzhou"), (420, "quanxiu"), (1020, "fengze")]
    assert book.steps() == [(0, "chengzhou-g1", "grid", "raise"), (120_000, "chengzhou", "community", "escalate"),
                            (420_000, "quanxiu", "street", "escalate"), (1_020_000, "fengze", "district", "escalate")]
    book.clock.ms = T0 + 2_000_000
    acked = book.book.acknowledge(1, "Lin")
    assert (acked.state, acked.acked_by, acked.acked_ts, acked.time_to_ack_ms) == (AlarmState.RESOLVED, "Lin", T0 + 2_000_000, 2_000_000)
    assert book.steps()[-2:] == [(2_000_000, "fengze", "district", "ack"), (2_000_000, "fengze", "district", "resolve")]
    assert book.sent == [(AGENT, Command(CommandName.ALARM_ACK, "txn-1", {"source": "office-panic"}))]
    book.tick(5000)
    assert len(book.steps()) == 6 and book.only().escalated_to == "fengze"
    assert [n.data["change"] for n in book.notices] == ["raised", "escalated", "escalated", "escalated", "acknowledged"]


def test_a_central_that_was_down_climbs_as_it_should_have(book: Book) -> None:
    book.book.events_stored([event(1, "alarm", "north-fence", T0)])
    book.tick(500)  # one late tick: two tiers fell due meanwhile
    assert book.only().escalated_to == "quanxiu"
    assert [(ts, action) for ts, _, _, action in book.steps()] == [(0, "raise"), (120_000, "escalate"), (420_000, "escalate")]


def test_acknowledging_twice_is_an_error_not_a_second_record(book: Book) -> None:
    book.book.events_stored([event(1, "tamper", "east-wall", T0)])
    book.clock.ms = T0 + 65_000
    book.book.acknowledge(1, "Lin")
    steps = book.steps()
    with pytest.raises(AlarmError) as info:
        book.book.acknowledge(1, "Wu")
    assert str(info.value) == "alarm 1 was already acknowledged by Lin at 2024-05-01T21:47:45+00:00"
    assert book.only().acked_by == "Lin" and book.steps() == steps
    with pytest.raises(AlarmError, match="^alarm 9 does not exist$"):
        book.book.acknowledge(9, "Lin")
    with pytest.raises(AlarmError, match=r"^--by '': give the name of who answered \(1 to 64 printable characters\)$"):
        book.book.acknowledge(1, " ")


def test_a_zone_alarm_is_resolved_by_ack_and_restore_in_either_order(book: Book) -> None:
    book.book.events_stored([event(1, "alarm", "north-fence", T0), event(2, "alarm", "east-wall", T0)])
    book.clock.ms = T0 + 10_000
    assert book.book.acknowledge(1, "Lin").state is AlarmState.ACKNOWLEDGED  # the loop is still open
    book.book.events_stored([event(3, "restore", "north-fence", T0 + 20_000), event(4, "restore", "east-wall", T0 + 20_000)])
    first, second = book.book.alarms(include_all=True)
    assert (first.state, first.restored) == (AlarmState.RESOLVED, True)
    assert (second.state, second.restored) == (AlarmState.ACTIVE, True)  # a restore alone clears nothing
    assert book.book.acknowledge(2, "Wu").state is AlarmState.RESOLVED
    assert book.book.alarms() == []
    assert [s.action for s in book.book.steps(1)] == ["raise", "ack", "restore", "resolve"]


def test_a_loop_tripping_again_before_it_is_answered_stays_one_alarm(book: Book) -> None:
    book.book.events_stored([event(1, "alarm", "north-fence", T0), event(2, "restore", "north-fence", T0 + 1000),
                             event(3, "alarm", "north-fence", T0 + 2000)])
    a = book.only()
    assert (a.state, a.restored) == (AlarmState.ACTIVE, False)
    assert [s for _, _, _, s in book.steps()] == ["raise", "restore", "retrip"]
    book.book.acknowledge(1, "Lin")
    book.book.events_stored([event(4, "restore", "north-fence", T0 + 3000), event(5, "alarm", "north-fence", T0 + 4000)])
    assert [(x.id, x.state) for x in book.book.alarms(include_all=True)] == [(1, AlarmState.RESOLVED), (2, AlarmState.ACTIVE)]


def test_an_agent_the_plan_does_not_know_raises_an_alarm_without_a_unit(book: Book) -> None:
    book.book.events_stored([event(1, "panic", "button", T0, agent="school-99-gate-1")])
    a = book.only()
    assert (a.unit, a.escalated_to) == (None, None)
    book.tick(10_000)
    assert book.only().escalated_to is None  # no tier to climb


def test_an_agent_offline_longer_than_the_grace_raises_an_alarm(book: Book) -> None:
    book.book.presence_changed(AGENT, "offline", T0)
    book.book.presence_changed("school-2-gate-1", "disconnected", T0)  # a clean shutdown is deliberate
    book.tick(59.999)
    assert book.book.alarms() == []
    book.tick(60)
    a = book.only()
    assert a.to_json() == {"id": 1, "agent": AGENT, "source": AGENT, "kind": "agent-offline", "unit": "chengzhou-g1",
                           "state": "active", "raised_ts": T0 + 60_000, "acked_by": None, "acked_ts": None, "escalated_to": None}
    book.tick(120)
    assert len(book.book.alarms(include_all=True)) == 1
    book.book.acknowledge(1, "Lin")
    assert book.only().state is AlarmState.ACKNOWLEDGED
    book.book.presence_changed(AGENT, "online", T0 + 200_000)
    assert book.only().state is AlarmState.RESOLVED
    book.tick(201)
    assert book.sent == []  # nothing to tell an agent about its own absence


def test_back_within_the_grace_raises_nothing(tmp_path: Path) -> None:
    b = Book(tmp_path, offline_grace_s=5)
    try:
        b.book.presence_changed(AGENT, "offline", T0)
        b.book.presence_changed(AGENT, "online", T0 + 4_000)
        b.tick(10)
        assert b.book.alarms() == []
    finally:
        b.book.close()


def test_one_outage_is_no_flapping(book: Book) -> None:
    # Start, lose the link once, come back: three changes of state, one outage.
    for i, state in enumerate(["online", "offline", "online"]):
        book.book.presence_changed(AGENT, state, T0 + i * 1_000)
    assert book.book.alarms(include_all=True) == []


def test_a_flapping_agent_is_flagged_and_calms_down(book: Book) -> None:
    for i, state in enumerate(["offline", "online", "offline", "online", "offline", "online"]):
        book.book.presence_changed(AGENT, state, T0 + i * 60_000)
    a = book.only()
    # The third drop to offline inside ten minutes flags it.
    assert (a.kind, a.source, a.raised_ts, a.restored) == ("agent-flapping", AGENT, T0 + 240_000, False)
    book.tick(599)
    assert book.only().restored is False  # still three drops inside the last ten minutes
    book.tick(601)
    assert book.only().restored is True
    assert book.book.acknowledge(a.id, "Lin").state is AlarmState.RESOLVED


def test_an_ack_from_another_process_stops_escalation_and_reaches_the_agent(book: Book, tmp_path: Path) -> None:
    book.book.events_stored([event(1, "panic", "office-panic", T0)])
    with closing(book.store.connect()) as other:  # as `gridpatrol alarms ack` does
        acknowledge(other, 1, "Zhou", T0 + 30_000)
    book.tick(0.5)
    assert book.sent == [(AGENT, Command(CommandName.ALARM_ACK, "txn-1", {"source": "office-panic"}))]
    book.tick(500)
    assert book.only().escalated_to is None and book.only().state is AlarmState.RESOLVED
    # not confirmed (no cmd/resp ok): sent again when the agent is next back
    book.book.presence_changed(AGENT, "online", T0 + 600_000)
    book.tick(600.5)
    assert book.sent[1:] == []
    book.tick(601)
    assert book.sent[1:] == [(AGENT, Command(CommandName.ALARM_ACK, "txn-2", {"source": "office-panic"}))]
    book.book.command_answered(AGENT, "txn-2", True)
    book.book.presence_changed(AGENT, "online", T0 + 700_000)
    book.tick(702)
    assert len(book.sent) == 2
    with closing(book.store.connect(readonly=True)) as conn:
        assert get_alarm(conn, 1).notified == 2  # type: ignore[union-attr]
        assert [s.action for s in list_steps(conn, 1)] == ["raise", "ack", "resolve"]


def test_open_alarms_survive_a_restart_of_central(tmp_path: Path) -> None:
    b = Book(tmp_path)
    b.book.events_stored([event(1, "alarm", "north-fence", T0)])
    b.tick(130)
    b.book.close()
    again = AlarmBook(b.store.path, plans=b.registry, clock=b.clock)
    try:
        b.clock.ms = T0 + 419_000
        again.tick()
        assert again.alarms()[0].escalated_to == "chengzhou"
        b.clock.ms = T0 + 420_000
        again.tick()
        assert again.alarms()[0].escalated_to == "quanxiu"
    finally:
        again.close()


# -- through the real ingest, broker and command line ---------------------------------------


@pytest.mark.slow
def test_panic_on_the_wire_ack_on_the_command_line_alarm_ack_to_the_agent(tmp_path: Path, broker: Broker) -> None:
    registry = PlanRegistry(tmp_path / "data" / "plan.json")
    registry.add(plan())
    store = Store(tmp_path / "data" / "central.db")
    store.connect().close()
    config = tmp_path / "central.toml"
    config.write_text(textwrap.dedent(f"""
        timezone = "Asia/Shanghai"
        data_dir = "{tmp_path / 'data'}"
        [mqtt]
        host = "{broker.host}"
        port = {broker.port}
    """))
    ingest = Ingest(MqttConfig(host=broker.host, port=broker.port, client_id="central-under-test"), store,
                    is_planned=registry.is_planned)
    book = AlarmBook(store.path, plans=registry, send_command=ingest.send_command)
    ingest.add_listener(book)
    ingest.start()
    agent: FakeAgent | None = None
    try:
        agent = FakeAgent(broker, AGENT)
        book.start()
        assert ingest.wait_connected(10)
        agent.online()
        agent.event(1, kind=EventKind.PANIC, source="office-panic", fields={})
        alarm = wait_until(lambda: book.alarms(), message="the panic's alarm")[0]
        assert (alarm.kind, alarm.unit, alarm.state) == ("panic", "chengzhou-g1", AlarmState.ACTIVE)
        listed = run_cli("alarms", "--config", str(config), "--json")
        assert listed.returncode == 0 and '"office-panic"' in listed.stdout
        done = run_cli("alarms", "ack", str(alarm.id), "--by", "Zhou", "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"alarm {alarm.id} acknowledged by Zhou after ")
        assert done.stdout.rstrip().endswith("; now resolved")
        got = wait_until(lambda: agent.command_list(CommandName.ALARM_ACK), timeout=5, message="alarm-ack at the agent")
        assert got[0].args == {"source": "office-panic"}
        again = run_cli("alarms", "ack", str(alarm.id), "--by", "Wu", "--config", str(config))
        assert again.returncode == 2
        (line,) = again.stderr.splitlines()
        assert line.startswith(f"gridpatrol: alarm {alarm.id} was already acknowledged by Zhou at 20")
        agent.status(AgentState.OFFLINE, 1)
        agent.online(2)  # the ack was never confirmed: it goes again once the agent is back
        wait_until(lambda: len(agent.command_list(CommandName.ALARM_ACK)) == 2, timeout=5, message="alarm-ack resent")
    finally:
        if agent is not None:
            agent.close()
        book.stop()
        ingest.stop()
        book.close()


def test_agents_the_store_holds_as_offline_are_timed_from_their_last_word(tmp_path: Path) -> None:
    from central.alarms import offline_agents
    from central.store import AgentRow

    b = Book(tmp_path)
    b.book.close()
    with closing(b.store.connect()) as conn:
        with conn:
            Store.save_agents(conn, [AgentRow(agent=AGENT, state="offline", last_seen=T0 - 30_000),
                                     AgentRow(agent="school-2-gate-1", state="online", last_seen=T0)])
    book = AlarmBook(b.store.path, plans=b.registry, clock=b.clock, offline_agents=offline_agents(b.store), poll_s=3600)
    try:
        book.start()  # seeds the offline timers, then ticks once an hour of this test's clock
        book.stop()
        b.clock.ms = T0 + 29_999
        book.tick()
        assert book.alarms() == []
        b.clock.ms = T0 + 30_000
        book.tick()
        assert [(a.kind, a.agent, a.raised_ts) for a in book.alarms()] == [("agent-offline", AGENT, T0 + 30_000)]
    finally:
        book.close()


def test_central_state_wins_when_an_agent_comes_back_with_latched_panics(book: Book) -> None:
    """The agent keeps its latches across a restart; central releases only those staff have answered."""
    from central.store import AgentRow

    book.book.events_stored([event(1, "panic", "answered", T0), event(2, "panic", "open", T0)])
    book.book.acknowledge(1, "Lin")
    book.book.command_answered(AGENT, book.sent[-1][1].txn, True)  # the agent confirmed that ack before
    with closing(book.store.connect()) as conn:
        book.store.save_agents(conn, [AgentRow(agent=AGENT, state="online",
                                               snapshot={"latched": ["answered", "open", "in-flight"]})])
    book.sent.clear()
    book.book.presence_changed(AGENT, "online", T0 + 10_000)
    book.tick(12)
    released = [(agent, c.args["source"]) for agent, c in book.sent if c.cmd is CommandName.ALARM_ACK]
    # "open": its alarm waits for staff; "in-flight": no alarm yet (its panic may be in the agent's backlog).
    assert released == [(AGENT, "answered")]
