"""The tables of notifications (issue 14, schema version 3): every statement on them.

``notifications`` holds one row per (alarm step, target) that the router
decided to tell, written in the same transaction that moves the router's
cursor over ``alarm_steps``: a step is either not yet looked at or fully
routed, whatever moment central dies at. ``notify_attempts`` is the trail of
every delivery attempt; the dashboard lists it with the alarm's steps.

Reads ``alarm_steps`` and ``alarms`` only by their columns and the implicit
rowid of a step, which SQLite hands out in commit order (one writer at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from central.store.dialect import Connection, transaction

_CURSOR = "alarm_steps"
_COLUMNS = "id, step_rowid, alarm_id, target, action, title, body, state, created_ts, attempts, sent_ts"


@dataclass(slots=True, frozen=True)
class StepFact:
    """One alarm step with what a message needs of its alarm."""

    rowid: int
    alarm_id: int
    ts: int
    unit: str | None  # the unit the step happened at (for a raise: the alarm's unit; NULL when none)
    action: str
    agent: str
    source: str
    kind: str
    alarm_unit: str | None
    raised_ts: int
    acked_by: str | None
    with_ack: bool  # a resolve made by the same acknowledgement (panic, restored loop)
    with_resolve: bool  # an ack that resolved the alarm at once


@dataclass(slots=True, frozen=True)
class Notification:
    id: int
    step_rowid: int | None
    alarm_id: int | None
    target: str
    action: str
    title: str
    body: str
    state: str
    created_ts: int
    attempts: int
    sent_ts: int | None


@dataclass(slots=True, frozen=True)
class NewNotification:
    step_rowid: int
    alarm_id: int
    target: str
    action: str
    title: str
    body: str


def cursor(conn: Connection) -> int | None:
    row = conn.execute("SELECT step_rowid FROM notify_cursor WHERE name = ?", (_CURSOR,)).fetchone()
    return None if row is None else int(row[0])


def last_step(conn: Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM alarm_steps").fetchone()[0])


def steps_after(conn: Connection, after: int, *, actions: Sequence[str], limit: int = 500) -> list[StepFact]:
    """Steps past ``after`` (by rowid) of the given actions, with their alarm's columns."""
    marks = ",".join("?" * len(actions))
    rows = conn.execute(
        "SELECT s.rowid, s.alarm_id, s.ts, s.unit, s.action, a.agent, a.source, a.kind, a.unit, a.raised_ts, a.acked_by,"
        " EXISTS(SELECT 1 FROM alarm_steps x WHERE x.alarm_id = s.alarm_id AND x.ts = s.ts AND x.action = 'ack'),"
        " EXISTS(SELECT 1 FROM alarm_steps x WHERE x.alarm_id = s.alarm_id AND x.ts = s.ts AND x.action = 'resolve')"
        f" FROM alarm_steps s JOIN alarms a ON a.id = s.alarm_id WHERE s.rowid > ? AND s.action IN ({marks})"
        " ORDER BY s.rowid LIMIT ?", (after, *actions, limit))
    return [StepFact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]), bool(r[12]))
            for r in rows]


def told_about(conn: Connection, alarm_id: int, target: str) -> bool:
    """Whether ``target`` was told of the alarm's raise or escalation."""
    return conn.execute("SELECT 1 FROM notifications WHERE alarm_id = ? AND target = ? AND action IN ('raise', 'escalate')"
                        " LIMIT 1", (alarm_id, target)).fetchone() is not None


def record(conn: Connection, new_cursor: int, items: Iterable[NewNotification], now_ms: int) -> None:
    """Write what the router decided and move its cursor, in one transaction."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO notifications(step_rowid, alarm_id, target, action, title, body, state, created_ts)"
            " VALUES (?,?,?,?,?,?,'pending',?) ON CONFLICT DO NOTHING",
            [(n.step_rowid, n.alarm_id, n.target, n.action, n.title, n.body, now_ms) for n in items])
        conn.execute("INSERT INTO notify_cursor(name, step_rowid) VALUES (?, ?)"
                     " ON CONFLICT(name) DO UPDATE SET step_rowid = excluded.step_rowid", (_CURSOR, new_cursor))


def pending(conn: Connection, target: str) -> list[Notification]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM notifications WHERE target = ? AND state = 'pending' ORDER BY id", (target,))
    return [Notification(*r) for r in rows]


def sent_since(conn: Connection, target: str, since_ms: int) -> list[int]:
    """When each message to ``target`` since ``since_ms`` was delivered, oldest first (the rate window)."""
    return [r[0] for r in conn.execute(
        "SELECT sent_ts FROM notifications WHERE target = ? AND state = 'sent' AND sent_ts >= ? ORDER BY sent_ts",
        (target, since_ms))]


def summarize(conn: Connection, target: str, covered: Sequence[int], title: str, body: str, now_ms: int) -> int:
    """One summary row carrying ``covered``; returns its id."""
    with transaction(conn):
        summary_id = int(conn.execute("INSERT INTO notifications(target, action, title, body, state, created_ts)"
                                      " VALUES (?, 'summary', ?, ?, 'pending', ?) RETURNING id",
                                      (target, title, body, now_ms)).fetchone()[0])
        conn.executemany("UPDATE notifications SET state = 'summarized', summary_id = ? WHERE id = ? AND state = 'pending'",
                         [(summary_id, n) for n in covered])
    return summary_id


def _alarms_of(conn: Connection, note: Notification) -> list[int]:
    if note.alarm_id is not None:
        return [note.alarm_id]
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT alarm_id FROM notifications WHERE summary_id = ? AND alarm_id IS NOT NULL ORDER BY alarm_id", (note.id,))]


def attempted(conn: Connection, note: Notification, *, label: str, ok: bool, detail: str, now_ms: int,
              final_state: str | None = None) -> None:
    """One delivery attempt: counted on the row and written to the trail of every alarm it carried."""
    state = "sent" if ok else (final_state or "pending")
    with transaction(conn):
        conn.execute("UPDATE notifications SET attempts = attempts + 1, state = ?, sent_ts = ? WHERE id = ?",
                     (state, now_ms if ok else None, note.id))
        conn.executemany("INSERT INTO notify_attempts(alarm_id, notification_id, ts, target, ok, detail) VALUES (?,?,?,?,?,?)",
                         [(a, note.id, now_ms, label, int(ok), detail) for a in _alarms_of(conn, note)])


def drop_unknown_targets(conn: Connection, known: Sequence[str]) -> int:
    """Pending rows of targets no longer configured are dropped (their URL is gone with them)."""
    marks = ",".join("?" * len(known)) or "''"
    with transaction(conn):
        return conn.execute(f"UPDATE notifications SET state = 'dropped' WHERE state = 'pending' AND target NOT IN ({marks})",
                            tuple(known)).rowcount


def forget(conn: Connection, alarm_ids: Sequence[int]) -> None:
    """With the alarms retention removes (inside its transaction): their notifications and attempts."""
    marks = ",".join("?" * len(alarm_ids))
    if marks:
        conn.execute(f"DELETE FROM notify_attempts WHERE alarm_id IN ({marks})", tuple(alarm_ids))
        conn.execute(f"DELETE FROM notifications WHERE alarm_id IN ({marks})", tuple(alarm_ids))


def trail(conn: Connection, alarm_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Delivery attempts of these alarms as trail items (``notify-sent`` / ``notify-failed``), oldest first."""
    if not alarm_ids:
        return []
    out: list[dict[str, Any]] = []
    for start in range(0, len(alarm_ids), 500):
        chunk = list(alarm_ids[start:start + 500])
        out += [{"alarm_id": r[0], "ts": r[1], "action": "notify-sent" if r[3] else "notify-failed", "target": r[2],
                 "detail": r[4]}
                for r in conn.execute(f"SELECT alarm_id, ts, target, ok, detail FROM notify_attempts WHERE alarm_id IN"
                                      f" ({','.join('?' * len(chunk))}) ORDER BY ts, rowid", chunk)]
    return out
