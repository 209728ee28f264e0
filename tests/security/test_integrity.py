"""Central double-checks what the broker enforces (issue 6): central/integrity.py, pure and through a real central.

Each check is shown firing on the forgery it is for, and a generated history
of genuine agents (restarts, lost connections, resends, rebirths, a full disk,
messages central missed) is shown never to fire one: a false alarm teaches
staff to ignore the real one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.alarms import AlarmState
from central.app import Central
from central.config import CentralConfig, MqttConfig, StoreConfig
from central.integrity import BOOTS_KEPT, UNVERIFIED_KEPT, IntegrityChecker, Reason, Violation
from central.presence import Presence, PresenceState
from central.store import AgentRow
from tests.support import Broker, FakeAgent, wait_until
from wire.messages import AgentState, AgentStatus, Birth, CommandName, EventKind

NOW = 1_700_000_000_000


# -- the checks alone ------------------------------------------------------------


def birth(bdseq: int, boot_id: str) -> Birth:
    return Birth(bdseq=bdseq, boot_id=boot_id, fw="1", inventory={})


class Bookkeeper:
    """Presence and the checker fed the way ingest feeds them, message by message."""

    def __init__(self) -> None:
        self.presence = Presence()
        self.checks = IntegrityChecker()
        self.found: list[Violation] = []
        self.rebirths: list[str] = []

    def status(self, agent: str, state: AgentState, bdseq: int, *, retained: bool = False) -> None:
        self.presence.on_status(agent, AgentStatus(state, bdseq, 0), NOW, retained=retained)

    def birth(self, agent: str, bdseq: int, boot_id: str) -> list[Violation]:
        found = self.checks.on_birth(agent, boot_id, bdseq, self.presence.get(agent), NOW)
        self.found += found
        if not any(v.reason is not Reason.UNKNOWN_BOOT for v in found):
            self.presence.on_birth(agent, birth(bdseq, boot_id), NOW)
        return found

    def event(self, agent: str, eseq: int, boot_id: str, *, replayed: bool = False) -> Violation | None:
        found, ask = self.checks.on_event(agent, boot_id, eseq, replayed, self.presence.get(agent), NOW)
        if found is not None:
            self.found.append(found)
        if ask:
            self.rebirths.append(agent)
        return found

    def state(self, agent: str) -> PresenceState:
        rec = self.presence.get(agent)
        assert rec is not None
        return rec.state


def online(c: Bookkeeper, agent: str, bdseq: int, boot_id: str) -> None:
    c.status(agent, AgentState.ONLINE, bdseq)
    assert c.birth(agent, bdseq, boot_id) == []


def test_an_event_with_another_agents_boot_is_foreign() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 1, "boot-a")
    online(c, "gate-b", 1, "boot-b")
    assert c.event("gate-b", 1, "boot-a") == Violation(
        "gate-b", Reason.FOREIGN_BOOT, "event eseq 1 carries boot boot-a, a boot of agent gate-a", NOW)
    assert c.event("gate-a", 1, "boot-a") is None


def test_a_birth_with_another_agents_boot_is_foreign_and_not_taken() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 1, "boot-a")
    c.status("gate-b", AgentState.ONLINE, 4)
    assert c.birth("gate-b", 4, "boot-a") == [Violation(
        "gate-b", Reason.FOREIGN_BOOT, "birth (bdseq 4) carries boot boot-a, a boot of agent gate-a", NOW)]
    rec = c.presence.get("gate-b")
    assert rec is not None and rec.birth is None and rec.boot_id is None


def test_a_birth_of_the_same_boot_with_a_lower_bdseq_is_a_replay() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 5, "boot-a")
    assert c.birth("gate-a", 5, "boot-a") == []  # a rebirth on the same connection
    assert c.birth("gate-a", 3, "boot-a") == [Violation(
        "gate-a", Reason.BDSEQ_BACKWARDS, "birth of boot boot-a with bdseq 3, below its earlier bdseq 5", NOW)]
    rec = c.presence.get("gate-a")
    assert rec is not None and (rec.bdseq, rec.birth_bdseq) == (5, 5)


def test_after_a_death_neither_the_old_status_nor_the_old_birth_brings_the_agent_back() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 7, "boot-a")
    c.status("gate-a", AgentState.OFFLINE, 7)  # the Will
    c.status("gate-a", AgentState.ONLINE, 7)  # replayed
    assert c.state("gate-a") is PresenceState.OFFLINE and c.presence.stale_statuses == 1
    assert c.birth("gate-a", 7, "boot-a") == [Violation(
        "gate-a", Reason.BDSEQ_BACKWARDS, "birth of boot boot-a with bdseq 7 after the offline status of bdseq 7", NOW)]
    assert c.state("gate-a") is PresenceState.OFFLINE
    online(c, "gate-a", 8, "boot-a")  # the agent itself reconnecting
    assert c.state("gate-a") is PresenceState.ONLINE


def test_an_older_boot_never_comes_back() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 1, "boot-1")
    online(c, "gate-a", 2, "boot-2")
    assert c.birth("gate-a", 3, "boot-1") == [Violation(
        "gate-a", Reason.STALE_BOOT, "birth of boot boot-1 (bdseq 3) after the newer boot boot-2", NOW)]


def test_a_new_boot_with_a_lower_bdseq_is_a_lost_counter_not_a_forgery() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 9, "boot-1")
    c.status("gate-a", AgentState.OFFLINE, 9)
    c.status("gate-a", AgentState.ONLINE, 4)  # ignored: older than the connection that died
    assert c.state("gate-a") is PresenceState.OFFLINE
    assert c.birth("gate-a", 4, "boot-2") == []  # the birth brings it back
    assert c.state("gate-a") is PresenceState.ONLINE
    c.status("gate-a", AgentState.OFFLINE, 4)
    assert c.state("gate-a") is PresenceState.OFFLINE


def test_eseqs_of_two_boots_never_interleave() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 2, "boot-2")
    for eseq in (5, 6, 9):
        assert c.event("gate-a", eseq, "boot-2") is None
    assert c.event("gate-a", 1, "boot-1", replayed=True) is None  # backlog of an earlier boot, below
    assert c.event("gate-a", 7, "boot-1", replayed=True) == Violation(
        "gate-a", Reason.BOOTS_INTERLEAVED, "event eseq 7 of boot boot-1 falls among eseqs 5..9 of boot boot-2", NOW)
    # Widening a range over another boot's eseqs is caught from either side.
    assert c.event("gate-a", 4, "boot-1", replayed=True) is None
    assert c.event("gate-a", 3, "boot-2", replayed=True) == Violation(
        "gate-a", Reason.BOOTS_INTERLEAVED, "event eseq 3 of boot boot-2 falls among eseqs 1..4 of boot boot-1", NOW)


def test_a_live_event_of_an_unannounced_boot_is_verified_by_a_rebirth() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 3, "boot-a")
    assert c.event("gate-a", 10, "boot-x") is None  # not yet a finding: central may have missed a birth
    assert c.event("gate-a", 11, "boot-y") is None
    assert c.rebirths == ["gate-a"]  # one request, however many unknown boots
    assert c.birth("gate-a", 3, "boot-a") == [
        Violation("gate-a", Reason.UNKNOWN_BOOT,
                  "live event eseq 10 of boot boot-x, which no birth of this agent announced (its birth says boot boot-a)",
                  NOW),
        Violation("gate-a", Reason.UNKNOWN_BOOT,
                  "live event eseq 11 of boot boot-y, which no birth of this agent announced (its birth says boot boot-a)",
                  NOW),
    ]
    assert c.state("gate-a") is PresenceState.ONLINE  # the agent's own birth is taken


def test_unknown_boots_held_for_verification_are_bounded() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 3, "boot-a")
    for n in range(UNVERIFIED_KEPT + 50):
        assert c.event("gate-a", 10 + n, f"forged-{n}") is None
    found = c.birth("gate-a", 3, "boot-a")
    assert [v.reason for v in found] == [Reason.UNKNOWN_BOOT] * UNVERIFIED_KEPT


def test_a_missed_birth_is_settled_by_the_rebirth_without_a_finding() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 3, "boot-a")
    # The agent restarted; its status and birth never reached central.
    assert c.event("gate-a", 1, "boot-b") is None
    assert c.rebirths == ["gate-a"]
    assert c.birth("gate-a", 4, "boot-b") == []
    assert c.found == []


def test_an_agent_restarted_before_answering_proves_nothing() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 3, "boot-a")
    assert c.event("gate-a", 10, "boot-x") is None
    online(c, "gate-a", 4, "boot-b")  # a new process: boot-x may have been the one in between
    assert c.found == []
    online(c, "gate-a", 5, "boot-b")  # and nothing is left waiting
    assert c.found == []


def test_a_replayed_or_offline_event_of_an_unknown_boot_is_backlog() -> None:
    c = Bookkeeper()
    online(c, "gate-a", 3, "boot-a")
    assert c.event("gate-a", 1, "boot-old", replayed=True) is None
    c.status("gate-a", AgentState.OFFLINE, 3)
    assert c.event("gate-a", 2, "boot-x") is None  # central holds no live connection to compare with
    assert c.rebirths == [] and c.found == []


def test_the_same_eseq_with_other_content_names_what_differs() -> None:
    held = {"eseq": 4, "kind": "scan", "source": "gate-1", "tag": "AB", "boot_id": "b"}
    got = {**held, "tag": "CD", "kind": "scan", "ts": 5}
    assert IntegrityChecker.eseq_conflict("gate-a", 4, held, got, NOW) == Violation(
        "gate-a", Reason.ESEQ_CONFLICT, "eseq 4 sent again with a different tag, ts; the first is kept", NOW)


def test_boots_are_remembered_through_the_agents_row_and_bounded() -> None:
    c = Bookkeeper()
    for n in range(BOOTS_KEPT + 3):
        online(c, "gate-a", n + 1, f"boot-{n}")
    saved = c.checks.export("gate-a")
    assert saved == [[f"boot-{n}", n + 1] for n in range(3, BOOTS_KEPT + 3)]
    row = AgentRow(agent="gate-a", boot_id=f"boot-{BOOTS_KEPT + 2}", flags={"boots": saved})
    fresh = IntegrityChecker()
    fresh.load("gate-a", IntegrityChecker.boots_of(row))
    assert fresh.on_event("gate-b", "boot-5", 1, False, None, NOW)[0] == Violation(
        "gate-b", Reason.FOREIGN_BOOT, "event eseq 1 carries boot boot-5, a boot of agent gate-a", NOW)
    assert fresh.on_event("gate-b", "boot-0", 1, False, None, NOW) == (None, False)  # forgotten
    # A row from before boots were saved: the boot of its last birth.
    old = AgentRow(agent="gate-c", boot_id="boot-c", birth={"bdseq": 4})
    assert IntegrityChecker.boots_of(old) == [["boot-c", 4]]
    assert IntegrityChecker.boots_of(AgentRow(agent="gate-d", flags={"boots": "junk"})) == []
    fresh.load("gate-e", [["ok", 1], ["bad"], [3, 4], "x"])  # type: ignore[list-item]
    assert fresh.export("gate-e") == [["ok", 1]]


# -- genuine agents never trip a check ------------------------------------------------------


@dataclass
class GenuineAgent:
    """An agent as agent/ behaves: one persistent eseq and bdseq counter, a boot id per process."""

    name: str
    rng: random.Random
    eseq: int = 0
    bdseq: int = 0
    saved_bdseq: int = 0
    boot: str = ""
    boots: int = 0
    connected: bool = False
    running: bool = False
    announced: int | None = None  # the bdseq of the last connection central heard announced
    unacked: list[int] = field(default_factory=list)
    boot_of: dict[int, str] = field(default_factory=dict)

    def start(self, c: Bookkeeper, *, disk_full: bool) -> None:
        self.boots += 1
        self.boot = f"{self.name}-boot-{self.boots}"
        self.bdseq = self.saved_bdseq if disk_full else self.bdseq  # a full disk forgot the last bumps
        self.running = True
        self.connect(c, disk_full=disk_full)

    def connect(self, c: Bookkeeper, *, disk_full: bool = False) -> None:
        self.bdseq += 1
        if not disk_full:
            self.saved_bdseq = self.bdseq
        self.connected = True
        if self.rng.random() < 0.75:  # otherwise central missed both (its queue overflowed)
            c.status(self.name, AgentState.ONLINE, self.bdseq)
            c.birth(self.name, self.bdseq, self.boot)
            self.announced = self.bdseq
            assert c.state(self.name) is PresenceState.ONLINE  # no replay rule keeps a genuine agent out
        for eseq in list(self.unacked):
            self.send(c, eseq, replayed=True)

    def send(self, c: Bookkeeper, eseq: int, *, replayed: bool) -> None:
        c.event(self.name, eseq, self.boot_of[eseq], replayed=replayed)

    def emit(self, c: Bookkeeper) -> None:
        self.eseq += 1
        self.boot_of[self.eseq] = self.boot
        self.unacked.append(self.eseq)
        if self.connected:
            self.send(c, self.eseq, replayed=False)

    def step(self, c: Bookkeeper) -> None:
        roll = self.rng.random()
        if not self.running:
            self.start(c, disk_full=roll < 0.2)
        elif roll < 0.45:
            self.emit(c)
        elif roll < 0.55 and self.connected and self.unacked:
            self.send(c, self.rng.choice(self.unacked), replayed=True)  # resend_s passed
        elif roll < 0.65 and self.unacked:
            del self.unacked[:self.rng.randint(1, len(self.unacked))]  # central's ack
        elif roll < 0.72 and self.connected:
            c.birth(self.name, self.bdseq, self.boot)  # a rebirth central asked for
        elif roll < 0.8 and self.connected:
            self.connected = False
            if self.rng.random() < 0.75:
                c.status(self.name, AgentState.OFFLINE, self.bdseq)  # the Will
                if self.announced == self.bdseq:
                    assert c.state(self.name) is PresenceState.OFFLINE
        elif roll < 0.86 and not self.connected:
            self.connect(c)
        elif roll < 0.9:
            if self.connected:
                c.status(self.name, AgentState.DISCONNECTED, self.bdseq)
            self.connected = self.running = False  # stopped (or crashed) and restarted next step
        elif roll < 0.95:
            c.status(self.name, AgentState.OFFLINE if not self.connected else AgentState.ONLINE, self.bdseq,
                     retained=True)  # central reconnecting to the broker gets the retained status again

    def answer_rebirth(self, c: Bookkeeper) -> None:
        if self.connected:
            c.birth(self.name, self.bdseq, self.boot)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), steps=st.integers(min_value=1, max_value=300))
def test_genuine_agents_never_trip_a_check(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    c = Bookkeeper()
    agents = [GenuineAgent(f"gate-{n}", random.Random(rng.random())) for n in range(3)]
    asked: set[str] = set()
    for _ in range(steps):
        agent = rng.choice(agents)
        boots, connections = agent.boots, agent.bdseq
        agent.step(c)
        if (agent.boots, agent.bdseq) != (boots, connections):
            asked.discard(agent.name)  # a request sent to a connection that is gone is lost
        asked.update(c.rebirths)
        c.rebirths.clear()
        if asked and rng.random() < 0.1:  # the agent answers at once, or after other things happened
            for name in sorted(asked):
                next(a for a in agents if a.name == name).answer_rebirth(c)
            asked.clear()
    assert c.found == []


# -- through a real central and broker ------------------------------------------------------


@pytest.fixture
def central(tmp_path: Path, broker: Broker) -> Iterator[Central]:
    config = CentralConfig(timezone="UTC", data_dir=tmp_path / "central",
                           store=StoreConfig(url=f"sqlite://{tmp_path}/central/central.db",
                                             path=tmp_path / "central" / "central.db"),
                           mqtt=MqttConfig(host=broker.host, port=broker.port, client_id="central-under-test"))
    c = Central(config, tracker=False, web=False)
    c.start()
    try:
        assert c.ingest.wait_connected(10)
        yield c
    finally:
        c.stop()


@pytest.fixture
def agents(broker: Broker) -> Iterator[dict[str, FakeAgent]]:
    made: dict[str, FakeAgent] = {}
    try:
        yield made
    finally:
        for agent in made.values():
            agent.close()


def fake(broker: Broker, agents: dict[str, FakeAgent], name: str) -> FakeAgent:
    agents[name] = FakeAgent(broker, name)
    return agents[name]


def suspicious(central: Central) -> list[tuple[str, str, str]]:
    assert central.alarm_book is not None
    return [(a.agent, a.source, str(a.state)) for a in central.alarm_book.alarms(include_all=True) if a.kind == "suspicious"]


def row(central: Central, agent: str) -> AgentRow:
    """The agent's row, or an empty one while central has not saved it yet."""
    return central.store.get_agent(agent) or AgentRow(agent=agent)


def test_another_agents_boot_on_an_event_is_stored_counted_flagged_and_alarmed(
        broker: Broker, central: Central, agents: dict[str, FakeAgent]) -> None:
    a, b = fake(broker, agents, "gate-a"), fake(broker, agents, "gate-b")
    a.status(AgentState.ONLINE, 1)
    a.birth(1, boot_id="boot-of-a")
    b.online(1)
    b.event(1, boot_id="boot-of-a", kind=EventKind.ALARM, source="north-fence")
    wait_until(lambda: suspicious(central) == [("gate-b", "foreign-boot", "active")], message="the suspicious alarm")
    # The record keeps what arrived, and the alarm it raised: staff decide.
    wait_until(lambda: b.acked(1))
    assert [(e.agent, e.eseq, e.kind, e.source) for e in central.store.list_events(agent="gate-b")] == [
        ("gate-b", 1, "alarm", "north-fence")]
    assert ("gate-b", "north-fence", "active") in [
        (x.agent, x.source, str(x.state)) for x in central.alarm_book.alarms()]  # type: ignore[union-attr]
    assert central.ingest.counters["integrity.foreign-boot"] == 1
    flags = row(central, "gate-b").flags["integrity"]
    assert [(f["reason"], f["detail"]) for f in flags] == [
        ("foreign-boot", "event eseq 1 carries boot boot-of-a, a boot of agent gate-a")]


def test_a_replayed_birth_after_the_agents_death_alarms_and_does_not_bring_it_back(
        broker: Broker, central: Central, agents: dict[str, FakeAgent]) -> None:
    a = fake(broker, agents, "gate-a")
    a.online(4)
    wait_until(lambda: row(central, "gate-a").state == "online")
    a.status(AgentState.OFFLINE, 4)  # its Will
    wait_until(lambda: row(central, "gate-a").state == "offline")
    a.status(AgentState.ONLINE, 4)  # the replay: old status, old birth
    a.birth(4)
    wait_until(lambda: suspicious(central) == [("gate-a", "bdseq-backwards", "active")], message="the alarm")
    assert row(central, "gate-a").state == "offline"
    assert central.ingest.counters["stale_status"] == 1


def test_a_live_event_of_a_boot_no_birth_announced_alarms_once_the_agent_answers_the_rebirth(
        broker: Broker, central: Central, agents: dict[str, FakeAgent]) -> None:
    a = fake(broker, agents, "gate-a")
    a.online(2)
    wait_until(lambda: row(central, "gate-a").birth is not None)
    a.event(1, boot_id="forged-boot", kind=EventKind.RESTORE, source="north-fence")
    wait_until(lambda: a.command_list(CommandName.REBIRTH), message="a rebirth request")
    assert suspicious(central) == []
    a.birth(2)  # the agent's answer: its boot is another
    wait_until(lambda: suspicious(central) == [("gate-a", "unknown-boot", "active")], message="the alarm")


def test_a_legitimate_resend_is_a_duplicate_and_other_content_is_an_alarm(
        broker: Broker, central: Central, agents: dict[str, FakeAgent]) -> None:
    a = fake(broker, agents, "gate-a")
    a.online(1)
    a.event(1, kind=EventKind.SCAN, tag="67003B51C6")
    wait_until(lambda: a.acked(1))
    a.event(1, kind=EventKind.SCAN, tag="67003B51C6", replayed=True)  # resend_s passed: the same event
    wait_until(lambda: central.ingest.counters.get("events_duplicate") == 1)
    a.event(2, kind=EventKind.SCAN, tag="0000000001")
    wait_until(lambda: a.acked(2))  # a later batch: the resend's batch is long done
    assert suspicious(central) == []
    assert "integrity.eseq-conflict" not in central.ingest.counters
    a.event(1, kind=EventKind.SCAN, tag="DEADBEEF00", replayed=True)  # a forger reusing the eseq
    wait_until(lambda: suspicious(central) == [("gate-a", "eseq-conflict", "active")], message="the alarm")
    assert central.ingest.counters["events_suspicious"] == 1
    stored = [e for e in central.store.list_events(agent="gate-a") if e.eseq == 1]
    assert [e.fields["tag"] for e in stored] == ["67003B51C6"]  # the first stays


def test_staff_acknowledging_a_suspicious_alarm_resolves_it(
        broker: Broker, central: Central, agents: dict[str, FakeAgent]) -> None:
    a = fake(broker, agents, "gate-a")
    a.online(1)
    a.birth(3, boot_id="boot-a")
    a.birth(2, boot_id="boot-a")
    wait_until(lambda: suspicious(central) == [("gate-a", "bdseq-backwards", "active")], message="the alarm")
    assert central.alarm_book is not None
    (alarm,) = central.alarm_book.alarms()
    acked = central.alarm_book.acknowledge(alarm.id, "Wang")
    assert acked.state is AlarmState.RESOLVED and acked.acked_by == "Wang"
    assert central.alarm_book.alarms() == []


def test_boots_survive_a_restart_of_central(tmp_path: Path, broker: Broker, agents: dict[str, FakeAgent]) -> None:
    config = CentralConfig(timezone="UTC", data_dir=tmp_path / "c",
                           store=StoreConfig(url=f"sqlite://{tmp_path}/c/central.db", path=tmp_path / "c" / "central.db"),
                           mqtt=MqttConfig(host=broker.host, port=broker.port, client_id="central-restarted"))
    a, b = fake(broker, agents, "gate-a"), fake(broker, agents, "gate-b")
    with Central(config, tracker=False, web=False) as first:
        assert first.ingest.wait_connected(10)
        a.status(AgentState.ONLINE, 1)
        a.birth(1, boot_id="boot-1")
        a.status(AgentState.ONLINE, 2)
        a.birth(2, boot_id="boot-2")
        wait_until(lambda: row(first, "gate-a").boot_id == "boot-2")
    with Central(config, tracker=False, web=False) as second:
        assert second.ingest.wait_connected(10)
        b.online(1)
        b.event(1, boot_id="boot-1")  # an older boot of gate-a, not only its last
        wait_until(lambda: suspicious(second) == [("gate-b", "foreign-boot", "active")], message="the alarm")
        a.birth(3, boot_id="boot-1")
        wait_until(lambda: ("gate-a", "stale-boot", "active") in suspicious(second), message="the stale boot")

