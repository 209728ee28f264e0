"""The ``alarms`` and ``alarm_steps`` tables: rows, and every statement on them.

Each state change is one SQL statement that decides from the row itself (no
read-then-write across processes): staff may acknowledge from the command
line in another process while central runs. Functions take the caller's
connection; the writes inside ingest's batch run in its transaction, so an
alarm event and its alarm commit together.

``notified``: 0 the agent not yet told of the ack, 1 sent and waiting for its
ok, 2 confirmed (or nothing to tell).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterable, Sequence

from central.errors import CentralError
from central.store.dialect import Connection, dialect_of, transaction


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
    SUSPICIOUS = "suspicious"  # an agent's message contradicts itself or could not be stored; source = the check


AGENT_KINDS = frozenset({AlarmKind.ALARM, AlarmKind.TAMPER, AlarmKind.PANIC})  # raised by an agent's input
# Nothing restores these: staff's acknowledgement resolves them.
RESOLVED_BY_ACK = frozenset({AlarmKind.PANIC, AlarmKind.SUSPICIOUS})
BY_MAX_LEN = 64


class AlarmError(CentralError, ValueError):
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
    event_epoch: str | None = None

    @property
    def time_to_ack_ms(self) -> int | None:
        return None if self.acked_ts is None else self.acked_ts - self.raised_ts

    @property
    def level(self) -> str | None:
        """The unit that has to answer it now."""
        return self.escalated_to or self.unit

    def to_json(self) -> dict[str, Any]:
        """The keys of ``alarms --json`` (docs/reference.md)."""
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
    detail: str | None = None


COLUMNS = ("id, agent, source, kind, unit, state, raised_ts, acked_by, acked_ts, escalated_to, event_eseq, restored,"
           " notified, ack_txn, event_epoch")


def _alarm(row: Sequence[Any]) -> Alarm:
    (aid, agent, source, kind, unit, state, raised, by, acked, esc, eseq, restored, notified, txn, epoch) = row
    return Alarm(aid, agent, source, kind, unit, AlarmState(state), raised, by, acked, esc, eseq, bool(restored),
                 int(notified), txn, epoch)


def list_alarms(conn: Connection, *, include_all: bool = False) -> list[Alarm]:
    """Open alarms (active or acknowledged), or every alarm; oldest first."""
    where = "" if include_all else " WHERE state != 'resolved'"
    return [_alarm(r) for r in conn.execute(f"SELECT {COLUMNS} FROM alarms{where} ORDER BY id")]


def alarm_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """``(state, kind, count)`` over the whole book (central's metrics)."""
    return [(str(s), str(k), int(n)) for s, k, n in conn.execute("SELECT state, kind, COUNT(*) FROM alarms GROUP BY state, kind")]


def get_alarm(conn: Connection, alarm_id: int) -> Alarm | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    return None if row is None else _alarm(row)


def list_steps(conn: Connection, alarm_id: int) -> list[AlarmStep]:
    rows = conn.execute("SELECT alarm_id, ts, unit, tier, action, detail FROM alarm_steps WHERE alarm_id = ?"
                        " ORDER BY rowid", (alarm_id,))
    return [AlarmStep(*r) for r in rows]


def last_climb(conn: Connection, alarm_id: int) -> int | None:
    """When an alarm reached its current level (its last raise or escalate step)."""
    row = conn.execute("SELECT MAX(ts) FROM alarm_steps WHERE alarm_id = ? AND action IN ('raise', 'escalate')",
                       (alarm_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def step(conn: Connection, alarm_id: int, ts: int, unit: str | None, tier: str | None, action: str,
         detail: str | None = None) -> None:
    # The notifier and the snapshot taker follow alarm_steps by rowid, which must therefore grow in commit
    # order. SQLite's one writer guarantees it; on PostgreSQL, where several centrals write, the transactions
    # that add steps take this lock (after their agents' locks) and so commit one after the other.
    dialect_of(conn).lock_names(conn, ("alarm_steps",))
    conn.execute("INSERT INTO alarm_steps(alarm_id, ts, unit, tier, action, detail) VALUES (?,?,?,?,?,?)",
                 (alarm_id, ts, unit, tier, action, detail))


def lock_agents(conn: Connection, agents: Iterable[str]) -> None:
    """Inside a transaction: until it ends, no other central decides on these agents' alarms."""
    dialect_of(conn).lock_names(conn, (f"alarms:{agent}" for agent in agents))


def open_alarm(conn: Connection, agent: str, source: str, kind: str) -> tuple[int, bool] | None:
    """(id, restored) of the open alarm of this input, if there is one."""
    row = conn.execute("SELECT id, restored FROM alarms WHERE agent = ? AND source = ? AND kind = ?"
                       " AND state != 'resolved' ORDER BY id DESC LIMIT 1", (agent, source, kind)).fetchone()
    return None if row is None else (int(row[0]), bool(row[1]))


def insert_alarm(conn: Connection, *, agent: str, source: str, kind: str, unit: str | None, raised_ts: int,
                 eseq: int | None, epoch: str | None) -> int:
    row = conn.execute("INSERT INTO alarms(agent, source, kind, unit, state, raised_ts, event_eseq, event_epoch)"
                       " VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                       (agent, source, kind, unit, str(AlarmState.ACTIVE), raised_ts, eseq, epoch)).fetchone()
    return int(row[0])


def mark_retripped(conn: Connection, alarm_id: int) -> None:
    conn.execute("UPDATE alarms SET restored = 0 WHERE id = ?", (alarm_id,))


def unrestored(conn: Connection, agent: str, source: str, kinds: Iterable[str]) -> list[int]:
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    return [r[0] for r in conn.execute(
        f"SELECT id FROM alarms WHERE agent = ? AND source = ? AND kind IN ({marks}) AND state != 'resolved'"
        " AND restored = 0", (agent, source, *kinds))]


def mark_restored(conn: Connection, alarm_id: int) -> Alarm:
    """Restored: resolved at once if it was acknowledged, else it stays active until the ack."""
    conn.execute("UPDATE alarms SET restored = 1, state = CASE WHEN state = 'acknowledged'"
                 " THEN 'resolved' ELSE state END WHERE id = ?", (alarm_id,))
    alarm = get_alarm(conn, alarm_id)
    assert alarm is not None
    return alarm


def escalate(conn: Connection, alarm_id: int, parent: str) -> bool:
    """Move an active alarm up to ``parent``; False when it is no longer active."""
    cur = conn.execute("UPDATE alarms SET escalated_to = ? WHERE id = ? AND state = 'active'", (parent, alarm_id))
    return cur.rowcount > 0


def acknowledge(conn: Connection, alarm_id: int, by: str, now_ms: int, *, tier: str | None = None) -> Alarm:
    """Record that ``by`` answered the alarm; a second acknowledgement is an error, not a record."""
    by = by.strip()
    if not by or len(by) > BY_MAX_LEN or not by.isprintable():
        raise AlarmError(f"--by {by!r}: give the name of who answered (1 to {BY_MAX_LEN} printable characters)")
    by_ack = sorted(RESOLVED_BY_ACK)
    with transaction(conn):
        cur = conn.execute(
            f"UPDATE alarms SET state = CASE WHEN kind IN ({','.join('?' * len(by_ack))}) OR restored = 1"
            " THEN 'resolved' ELSE 'acknowledged' END, acked_by = ?, acked_ts = ?, notified = 0"
            " WHERE id = ? AND state = 'active'",
            (*by_ack, by, now_ms, alarm_id),
        )
        alarm = get_alarm(conn, alarm_id)
        if cur.rowcount == 0:
            if alarm is None:
                raise AlarmError(f"alarm {alarm_id} does not exist")
            when = dt.datetime.fromtimestamp((alarm.acked_ts or 0) / 1000, dt.timezone.utc).isoformat(timespec="seconds")
            raise AlarmError(f"alarm {alarm_id} was already acknowledged by {alarm.acked_by} at {when}")
        assert alarm is not None
        step(conn, alarm_id, now_ms, alarm.level, tier, "ack")
        if alarm.state is AlarmState.RESOLVED:
            step(conn, alarm_id, now_ms, alarm.level, tier, "resolve")
    return alarm


def acks_to_tell(conn: Connection) -> list[Alarm]:
    """Acknowledged alarms whose agent has not been told yet."""
    return [_alarm(r) for r in conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE notified = 0 AND state != 'active'")]


def acks_sent(conn: Connection, agent: str) -> list[Alarm]:
    """Alarm-acks sent to ``agent`` and not yet confirmed by it."""
    return [_alarm(r) for r in conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE agent = ? AND notified = 1", (agent,))]


def set_notified(conn: Connection, alarm_id: int, notified: int, *, txn: str | None = None,
                 only_from: int | None = None) -> None:
    sql = "UPDATE alarms SET notified = ?" + (", ack_txn = ?" if txn is not None else "") + " WHERE id = ?"
    args: list[Any] = [notified, *([txn] if txn is not None else []), alarm_id]
    if only_from is not None:
        sql += " AND notified = ?"
        args.append(only_from)
    conn.execute(sql, args)


def confirm_ack(conn: Connection, agent: str, txn: str) -> None:
    conn.execute("UPDATE alarms SET notified = 2 WHERE agent = ? AND ack_txn = ? AND notified = 1", (agent, txn))


def last_alarm(conn: Connection, agent: str, source: str, kind: str) -> Alarm | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE agent = ? AND source = ? AND kind = ? ORDER BY id DESC"
                       " LIMIT 1", (agent, source, kind)).fetchone()
    return None if row is None else _alarm(row)


def open_latches(conn: Connection, agent: str) -> list[str]:
    """Sources of the agent's panics that staff have not acknowledged yet (central's state wins on reconnect)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT source FROM alarms WHERE agent = ? AND kind = 'panic'"
                                       " AND state = 'active'", (agent,))]
