"""The alarm book: raise, escalate through the tiers, acknowledge, resolve.

An ``alarm``, ``tamper`` or ``panic`` event raises an alarm at the unit of its
agent, and so does a message that contradicts itself (``suspicious``, from
ingest's integrity checks). It stays ``active`` until staff acknowledge it;
then it is ``resolved`` at once for a panic (the ack releases the button's
latch) or a suspicious message (nothing restores a forgery), and otherwise
once its source has restored (before or after the ack), else ``acknowledged``.
Unacknowledged, it climbs one tier each time it has waited its tier's time
(``[escalation]`` grid_s, community_s, street_s) up to the district; every
step is a row of ``alarm_steps``.

Staff may acknowledge from the command line, in another process. Every state
change is therefore one SQL statement that decides from the row itself (no
read-then-write across processes), and the running central polls for acks it
has not yet told the agent about (``notified = 0``) to send the ``alarm-ack``
command and to stop escalating. ``notified``: 0 not yet told, 1 sent and
waiting for the agent's ok, 2 confirmed (or nothing to tell: agent alarms).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from central.bus import Bus
from central.plan.model import Plan
from central.plan.registry import PlanHistory
from wire.messages import Command, CommandName

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.5  # how soon a running central notices an ack made by the command line
ACK_RESEND_DELAY_S = 1.0  # after an agent comes back, give it time to subscribe before resending
FLAP_WINDOW_S = 600.0
# This many drops to offline inside the window flag an agent. Drops, not every
# change: an agent that starts, loses its link once and comes back has changed
# state three times but has had one outage, which is no flapping.
FLAP_TRANSITIONS = 3
BUSY_TIMEOUT_S = 5.0
BY_MAX_LEN = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms(
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    unit TEXT,                 -- the agent's unit; NULL for an agent the plan does not know
    state TEXT NOT NULL,       -- active | acknowledged | resolved
    raised_ts INTEGER NOT NULL,-- when it happened (UTC ms)
    acked_by TEXT,
    acked_ts INTEGER,
    escalated_to TEXT,         -- the unit it has climbed to; NULL while at its own unit
    event_eseq INTEGER,
    restored INTEGER NOT NULL DEFAULT 0,
    notified INTEGER NOT NULL DEFAULT 0,
    ack_txn TEXT               -- txn of the alarm-ack command awaiting the agent's answer
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms(state, agent, source);
CREATE TABLE IF NOT EXISTS alarm_steps(
    alarm_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    unit TEXT,
    tier TEXT,
    action TEXT NOT NULL       -- raise | escalate | ack | restore | retrip | resolve
);
CREATE INDEX IF NOT EXISTS alarm_steps_alarm ON alarm_steps(alarm_id);
"""

_COLUMNS = "id, agent, source, kind, unit, state, raised_ts, acked_by, acked_ts, escalated_to, event_eseq, restored, notified, ack_txn"


class AlarmState(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlarmKind(StrEnum):
    ALARM = "alarm"
    TAMPER = "tamper"
    PANIC = "panic"
    AGENT_OFFLINE = "agent-offline"
    AGENT_FLAPPING = "agent-flapping"
    SUSPICIOUS = "suspicious"  # central/integrity.py: an agent's message contradicts itself; source = the check


AGENT_KINDS = frozenset({AlarmKind.ALARM, AlarmKind.TAMPER, AlarmKind.PANIC})  # raised by an agent's input
# Nothing restores these: staff's acknowledgement resolves them.
RESOLVED_BY_ACK = frozenset({AlarmKind.PANIC, AlarmKind.SUSPICIOUS})


class AlarmError(ValueError):
    """An alarm command cannot be done (unknown id, acknowledged twice, bad name)."""


@dataclass(slots=True, frozen=True)
class Alarm:
    id: int
    agent: str
    source: str
    kind: str
    unit: str | None
    state: AlarmState
    raised_ts: int
    acked_by: str | None = None
    acked_ts: int | None = None
    escalated_to: str | None = None
    event_eseq: int | None = None
    restored: bool = False
    notified: int = 0
    ack_txn: str | None = None

    @property
    def time_to_ack_ms(self) -> int | None:
        return None if self.acked_ts is None else self.acked_ts - self.raised_ts

    @property
    def level(self) -> str | None:
        """The unit that has to answer it now."""
        return self.escalated_to or self.unit

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's keys for ``alarms --json``."""
        return {
            "id": self.id, "agent": self.agent, "source": self.source, "kind": self.kind, "unit": self.unit,
            "state": str(self.state), "raised_ts": self.raised_ts, "acked_by": self.acked_by,
            "acked_ts": self.acked_ts, "escalated_to": self.escalated_to,
        }


@dataclass(slots=True, frozen=True)
class AlarmStep:
    alarm_id: int
    ts: int
    unit: str | None
    tier: str | None
    action: str


def _alarm(row: Sequence[Any]) -> Alarm:
    (aid, agent, source, kind, unit, state, raised, by, acked, esc, eseq, restored, notified, txn) = row
    return Alarm(aid, agent, source, kind, unit, AlarmState(state), raised, by, acked, esc, eseq, bool(restored),
                 int(notified), txn)


def create_tables(conn: sqlite3.Connection) -> None:
    with conn:
        conn.executescript(SCHEMA)


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alarms'").fetchone() is not None


def list_alarms(conn: sqlite3.Connection, *, include_all: bool = False) -> list[Alarm]:
    """Open alarms (active or acknowledged), or every alarm; oldest first."""
    if not _has_tables(conn):
        return []
    where = "" if include_all else " WHERE state != 'resolved'"
    return [_alarm(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM alarms{where} ORDER BY id")]


def get_alarm(conn: sqlite3.Connection, alarm_id: int) -> Alarm | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    return None if row is None else _alarm(row)


def list_steps(conn: sqlite3.Connection, alarm_id: int) -> list[AlarmStep]:
    rows = conn.execute("SELECT alarm_id, ts, unit, tier, action FROM alarm_steps WHERE alarm_id = ? ORDER BY rowid", (alarm_id,))
    return [AlarmStep(*r) for r in rows]


def acknowledge(conn: sqlite3.Connection, alarm_id: int, by: str, now_ms: int, *, tier: str | None = None) -> Alarm:
    """Record that ``by`` answered the alarm; a second acknowledgement is an error, not a record."""
    by = by.strip()
    if not by or len(by) > BY_MAX_LEN or not by.isprintable():
        raise AlarmError(f"--by {by!r}: give the name of who answered (1 to {BY_MAX_LEN} printable characters)")
    by_ack = sorted(RESOLVED_BY_ACK)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            f"UPDATE alarms SET state = CASE WHEN kind IN ({','.join('?' * len(by_ack))}) OR restored = 1 THEN 'resolved' ELSE 'acknowledged' END,"
            " acked_by = ?, acked_ts = ?, notified = 0 WHERE id = ? AND state = 'active'",
            (*by_ack, by, now_ms, alarm_id),
        )
        alarm = get_alarm(conn, alarm_id)
        if cur.rowcount == 0:
            if alarm is None:
                raise AlarmError(f"alarm {alarm_id} does not exist")
            when = dt.datetime.fromtimestamp((alarm.acked_ts or 0) / 1000, dt.timezone.utc).isoformat(timespec="seconds")
            raise AlarmError(f"alarm {alarm_id} was already acknowledged by {alarm.acked_by} at {when}")
        assert alarm is not None
        _step(conn, alarm_id, now_ms, alarm.level, tier, "ack")
        if alarm.state is AlarmState.RESOLVED:
            _step(conn, alarm_id, now_ms, alarm.level, tier, "resolve")
    return alarm


def offline_agents(store: Any) -> Callable[[], list[tuple[str, int]]]:
    """For ``AlarmBook(offline_agents=...)``: agents the store holds as offline, since their last word."""

    def read() -> list[tuple[str, int]]:
        now_ms = int(time.time() * 1000)
        return [(r.agent, r.last_seen or now_ms) for r in store.list_agents() if r.state == "offline"]

    return read


def _step(conn: sqlite3.Connection, alarm_id: int, ts: int, unit: str | None, tier: str | None, action: str) -> None:
    conn.execute("INSERT INTO alarm_steps(alarm_id, ts, unit, tier, action) VALUES (?,?,?,?,?)",
                 (alarm_id, ts, unit, tier, action))


class HistorySource(Protocol):
    def history(self) -> PlanHistory: ...


class AlarmBook:
    """Alarms of a running central: a listener of ingest with its own SQLite connection.

    ``store_path`` is central's SQLite file; ``plans`` the plan registry;
    ``send_command(agent, Command)`` is ``Ingest.send_command``. ``clock`` gives
    UTC seconds; :meth:`tick` does the time-driven work and is called by
    :meth:`start`'s thread, or by a test with its own clock.
    """

    def __init__(
        self,
        store_path: str | Path,
        *,
        plans: HistorySource,
        grid_s: float = 120.0,
        community_s: float = 300.0,
        street_s: float = 600.0,
        offline_grace_s: float = 60.0,
        send_command: Callable[[str, Command], bool] | None = None,
        bus: Bus | None = None,
        offline_agents: Callable[[], Iterable[tuple[str, int]]] | None = None,
        clock: Callable[[], float] = time.time,
        new_txn: Callable[[], str] = lambda: secrets.token_hex(6),
        poll_s: float = POLL_S,
    ) -> None:
        self._plans = plans
        self._wait_s = {"grid": grid_s, "community": community_s, "street": street_s}
        self._grace_ms = int(offline_grace_s * 1000)
        self._send = send_command
        self._bus = bus
        self._offline_agents = offline_agents
        self._clock = clock
        self._new_txn = new_txn
        self._poll_s = poll_s
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(store_path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        create_tables(self._conn)
        self._climb: dict[int, int] = {}  # active alarm id -> when it reached its current level (UTC ms)
        self._offline_since: dict[str, int] = {}  # agent -> when it went offline (UTC ms)
        self._offline_alarmed: set[str] = set()
        self._changes: dict[str, deque[int]] = {}
        self._resend_at: dict[str, int] = {}
        self._acks_announced: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_active()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._offline_agents is not None:
            with self._lock:
                for agent, since in self._offline_agents():
                    self._offline_since.setdefault(agent, since)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alarm-book", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                _LOGGER.exception("alarm book tick failed")
            self._stop.wait(self._poll_s)

    def _load_active(self) -> None:
        for a in list_alarms(self._conn):
            if a.state is AlarmState.ACTIVE:
                row = self._conn.execute("SELECT MAX(ts) FROM alarm_steps WHERE alarm_id = ? AND action IN ('raise', 'escalate')",
                                         (a.id,)).fetchone()
                self._climb[a.id] = row[0] if row and row[0] is not None else a.raised_ts

    # -- listener protocol -------------------------------------------------------

    def events_stored(self, events: Iterable[Any]) -> None:
        """Raise alarms and note restores (``StoredEvent``s, in stored order)."""
        for e in events:
            if e.kind in AGENT_KINDS:
                self._raise(e.agent, e.source, AlarmKind(e.kind), e.ts_est, e.received_ts, eseq=e.eseq)
            elif e.kind == "restore":
                self._restore(e.agent, e.source, e.received_ts, kinds=(AlarmKind.ALARM, AlarmKind.TAMPER))

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        with self._lock:
            if state == "offline":
                self._offline_since.setdefault(agent, ts)
            else:
                self._offline_since.pop(agent, None)
                self._offline_alarmed.discard(agent)
            if state == "offline":
                changes = self._changes.setdefault(agent, deque())
                changes.append(ts)
                self._forget_old(changes, ts)
                if len(changes) >= FLAP_TRANSITIONS:
                    self._raise(agent, agent, AlarmKind.AGENT_FLAPPING, ts, ts)
            if state == "online":
                self._restore(agent, agent, ts, kinds=(AlarmKind.AGENT_OFFLINE,))
                self._resend_at[agent] = ts + int(ACK_RESEND_DELAY_S * 1000)

    def command_answered(self, agent: str, txn: str, ok: bool, error: str | None = None) -> None:
        """The agent's ``cmd/resp``: an ok to our alarm-ack confirms it."""
        if not ok:
            _LOGGER.warning("agent %s refused alarm-ack %s: %s", agent, txn, error)
            return
        with self._lock:
            self._conn.execute("UPDATE alarms SET notified = 2 WHERE agent = ? AND ack_txn = ? AND notified = 1", (agent, txn))

    def integrity_violation(self, agent: str, reason: str, detail: str, ts: int) -> None:
        """Ingest found a message of ``agent`` that contradicts itself (central/integrity.py)."""
        self.raise_integrity_alarm(agent, reason, detail, ts / 1000)

    def raise_integrity_alarm(self, agent: str, reason: str, detail: str, now: float | None = None) -> None:
        """A ``suspicious`` alarm at the agent's unit, its source the check that failed.

        One open alarm per agent and check: a forger sending a thousand
        messages raises one alarm (ingest's counters keep the tally).
        """
        now_ms = int((self._clock() if now is None else now) * 1000)
        self._raise(agent, reason, AlarmKind.SUSPICIOUS, now_ms, now_ms, detail=detail)

    # -- staff -------------------------------------------------------------------

    def acknowledge(self, alarm_id: int, by: str, now: float | None = None) -> Alarm:
        """Acknowledge from the web; the agent is told at once."""
        now_ms = int((self._clock() if now is None else now) * 1000)
        with self._lock:
            current = get_alarm(self._conn, alarm_id)
            alarm = acknowledge(self._conn, alarm_id, by, now_ms, tier=self._tier(current.level if current else None, now_ms))
            self._climb.pop(alarm_id, None)
            self._notify_agents(now_ms)
        return alarm

    def alarms(self, *, include_all: bool = False) -> list[Alarm]:
        with self._lock:
            return list_alarms(self._conn, include_all=include_all)

    def steps(self, alarm_id: int) -> list[AlarmStep]:
        with self._lock:
            return list_steps(self._conn, alarm_id)

    # -- time ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Tell agents of acks, escalate what waited too long, raise offline and calm flapping."""
        now_ms = int((self._clock() if now is None else now) * 1000)
        with self._lock:
            self._notify_agents(now_ms)
            for agent, at in list(self._resend_at.items()):
                if at <= now_ms:
                    del self._resend_at[agent]
                    self._resend(agent)
            for alarm_id, since in list(self._climb.items()):
                self._escalate(alarm_id, since, now_ms)
            for agent, since in list(self._offline_since.items()):
                if agent not in self._offline_alarmed and now_ms - since >= self._grace_ms:
                    at = since + self._grace_ms
                    self._raise(agent, agent, AlarmKind.AGENT_OFFLINE, at, at)
                    self._offline_alarmed.add(agent)
            for agent, changes in list(self._changes.items()):
                self._forget_old(changes, now_ms)
                if len(changes) < FLAP_TRANSITIONS:
                    self._restore(agent, agent, now_ms, kinds=(AlarmKind.AGENT_FLAPPING,))
                if not changes:
                    del self._changes[agent]

    @staticmethod
    def _forget_old(changes: deque[int], now_ms: int) -> None:
        while changes and changes[0] <= now_ms - FLAP_WINDOW_S * 1000:
            changes.popleft()

    # -- the work ------------------------------------------------------------------

    def _plan(self, ts_ms: int) -> Plan | None:
        """The plan in force at ``ts_ms`` (else the newest: a unit must be found somewhere)."""
        h = self._plans.history()
        v = h.at(ts_ms) or h.latest
        return v.plan if v else None

    def _unit_of(self, agent: str, ts_ms: int) -> str | None:
        plan = self._plan(ts_ms)
        return plan.agent_unit.get(agent) if plan else None

    def _tier(self, unit: str | None, ts_ms: int) -> str | None:
        plan = self._plan(ts_ms) if unit is not None else None
        u = plan.unit_by_id.get(unit) if plan and unit is not None else None
        return str(u.tier) if u else None

    def _raise(self, agent: str, source: str, kind: AlarmKind, raised_ts: int, noticed_ts: int, *, eseq: int | None = None,
               detail: str | None = None) -> None:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT id, restored FROM alarms WHERE agent = ? AND source = ? AND kind = ? AND state != 'resolved'"
                    " ORDER BY id DESC LIMIT 1", (agent, source, str(kind))).fetchone()
                if row is not None:
                    # The same input tripping again before it was dealt with: one alarm, not a flood.
                    if row[1]:
                        conn.execute("UPDATE alarms SET restored = 0 WHERE id = ?", (row[0],))
                        _step(conn, row[0], noticed_ts, None, None, "retrip")
                    conn.execute("COMMIT")
                    return
                unit = self._unit_of(agent, raised_ts)
                tier = self._tier(unit, noticed_ts)
                cur = conn.execute(
                    "INSERT INTO alarms(agent, source, kind, unit, state, raised_ts, event_eseq) VALUES (?,?,?,?,?,?,?)",
                    (agent, source, str(kind), unit, str(AlarmState.ACTIVE), raised_ts, eseq))
                alarm_id = int(cur.lastrowid or 0)
                _step(conn, alarm_id, noticed_ts, unit, tier, "raise")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._climb[alarm_id] = noticed_ts
        _LOGGER.warning("alarm %s raised: %s %s of %s (unit %s)", alarm_id, kind, source, agent, unit)
        self._announce(alarm_id, "raised", detail=detail)

    def _restore(self, agent: str, source: str, ts: int, *, kinds: Sequence[AlarmKind]) -> None:
        marks = ",".join("?" * len(kinds))
        with self._lock:
            conn = self._conn
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM alarms WHERE agent = ? AND source = ? AND kind IN ({marks}) AND state != 'resolved'"
                " AND restored = 0", (agent, source, *map(str, kinds)))]
            for alarm_id in ids:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("UPDATE alarms SET restored = 1, state = CASE WHEN state = 'acknowledged'"
                                 " THEN 'resolved' ELSE state END WHERE id = ?", (alarm_id,))
                    alarm = get_alarm(conn, alarm_id)
                    assert alarm is not None
                    tier = self._tier(alarm.level, ts)
                    _step(conn, alarm_id, ts, alarm.level, tier, "restore")
                    if alarm.state is AlarmState.RESOLVED:
                        _step(conn, alarm_id, ts, alarm.level, tier, "resolve")
        for alarm_id in ids:
            self._announce(alarm_id, "restored")

    def _escalate(self, alarm_id: int, since: int, now_ms: int) -> None:
        alarm = get_alarm(self._conn, alarm_id)
        if alarm is None or alarm.state is not AlarmState.ACTIVE:
            self._climb.pop(alarm_id, None)
            return
        plan = self._plan(now_ms)
        climbed = False
        level = alarm.level
        while level is not None and plan is not None and level in plan.unit_by_id:
            tier = str(plan.unit_by_id[level].tier)
            wait_s = self._wait_s.get(tier)
            parent = plan.unit_by_id[level].parent
            if wait_s is None or parent is None:
                break  # a district (or a unit no longer in the plan) is as high as it goes
            due = since + int(wait_s * 1000)
            if due > now_ms:
                break
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                cur = self._conn.execute("UPDATE alarms SET escalated_to = ? WHERE id = ? AND state = 'active'", (parent, alarm_id))
                if cur.rowcount == 0:
                    break
                # Stamped with when it fell due, so a central that was down climbs as it should have.
                _step(self._conn, alarm_id, due, parent, str(plan.unit_by_id[parent].tier), "escalate")
            _LOGGER.warning("alarm %s unacknowledged for %s s at %s: escalated to %s", alarm_id, wait_s, level, parent)
            level, since, climbed = parent, due, True
        self._climb[alarm_id] = since
        if climbed:
            self._announce(alarm_id, "escalated")

    def _notify_agents(self, now_ms: int) -> None:
        """Tell agents of acks made here or by the command line, once each."""
        rows = list(self._conn.execute(f"SELECT {_COLUMNS} FROM alarms WHERE notified = 0 AND state != 'active'"))
        for alarm in map(_alarm, rows):
            self._climb.pop(alarm.id, None)
            if alarm.kind in AGENT_KINDS:
                done = self._send_ack(alarm)  # a send that could not even be queued stays 0: tried again next tick
            else:
                self._conn.execute("UPDATE alarms SET notified = 2 WHERE id = ? AND notified = 0", (alarm.id,))
                done = True
            first = alarm.id not in self._acks_announced  # tell the dashboard once, however many tries
            if done:
                self._acks_announced.discard(alarm.id)
            else:
                self._acks_announced.add(alarm.id)
            if first:
                self._announce(alarm.id, "acknowledged")

    def _send_ack(self, alarm: Alarm) -> bool:
        txn = self._new_txn()
        sent = False
        if self._send is not None:
            try:
                sent = self._send(alarm.agent, Command(CommandName.ALARM_ACK, txn, {"source": alarm.source}))
            except Exception:
                _LOGGER.exception("sending alarm-ack of alarm %s to %s failed", alarm.id, alarm.agent)
        if sent:
            self._conn.execute("UPDATE alarms SET notified = 1, ack_txn = ? WHERE id = ?", (txn, alarm.id))
        return sent

    def _resend(self, agent: str) -> None:
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM alarms WHERE agent = ? AND notified = 1", (agent,))
        for alarm in map(_alarm, list(rows)):
            _LOGGER.info("agent %s is back: sending alarm-ack of alarm %s again", agent, alarm.id)
            self._send_ack(alarm)

    def _announce(self, alarm_id: int, what: str, *, detail: str | None = None) -> None:
        if self._bus is None:
            return
        with self._lock:
            alarm = get_alarm(self._conn, alarm_id)
        if alarm is not None:
            extra = {} if detail is None else {"detail": detail}
            self._bus.publish("alarm", {**alarm.to_json(), "change": what, **extra})
