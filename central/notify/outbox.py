"""Every table and query of notifications, in one place (the store's next home for them).

``notifications`` holds one row per (alarm step, target) that the router
decided to tell, written in the same transaction that moves the router's
cursor over ``alarm_steps``: a step is either not yet looked at or fully
routed, whatever moment central dies at. ``notify_attempts`` is the trail of
every delivery attempt; the dashboard lists it with the alarm's steps.

Reads ``alarm_steps`` and ``alarms`` (central/alarms.py's tables) only by
their documented columns and the implicit rowid of a step.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_cursor(
    name TEXT PRIMARY KEY,
    step_rowid INTEGER NOT NULL          -- the last alarm_steps rowid routed
);
CREATE TABLE IF NOT EXISTS notifications(
    id INTEGER PRIMARY KEY,
    step_rowid INTEGER,                  -- the alarm step that caused it; NULL for a summary
    alarm_id INTEGER,                    -- NULL for a summary
    target TEXT NOT NULL,                -- the target's key (a hash of its URL and unit: never the URL)
    action TEXT NOT NULL,                -- raise | escalate | ack | resolve | summary | test
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,                 -- pending | sent | failed | summarized | dropped
    created_ts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_ts INTEGER,
    summary_id INTEGER,                  -- the summary that carried it (state summarized)
    UNIQUE(step_rowid, target)
);
CREATE INDEX IF NOT EXISTS notifications_target_state ON notifications(target, state);
CREATE INDEX IF NOT EXISTS notifications_alarm ON notifications(alarm_id);
CREATE TABLE IF NOT EXISTS notify_attempts(
    alarm_id INTEGER NOT NULL,
    notification_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    target TEXT NOT NULL,                -- the target's label, as the trail shows it
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_attempts_alarm ON notify_attempts(alarm_id);
"""

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


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def _has_steps(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alarm_steps'").fetchone() is not None


def cursor(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT step_rowid FROM notify_cursor WHERE name = ?", (_CURSOR,)).fetchone()
    return None if row is None else int(row[0])


def last_step(conn: sqlite3.Connection) -> int:
    if not _has_steps(conn):
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM alarm_steps").fetchone()[0])


def steps_after(conn: sqlite3.Connection, after: int, *, actions: Sequence[str], limit: int = 500) -> list[StepFact]:
    """Steps past ``after`` (by rowid) of the given actions, with their alarm's columns."""
    if not _has_steps(conn):
        return []
    marks = ",".join("?" * len(actions))
    rows = conn.execute(
        "SELECT s.rowid, s.alarm_id, s.ts, s.unit, s.action, a.agent, a.source, a.kind, a.unit, a.raised_ts, a.acked_by,"
        " EXISTS(SELECT 1 FROM alarm_steps x WHERE x.alarm_id = s.alarm_id AND x.ts = s.ts AND x.action = 'ack'),"
        " EXISTS(SELECT 1 FROM alarm_steps x WHERE x.alarm_id = s.alarm_id AND x.ts = s.ts AND x.action = 'resolve')"
        f" FROM alarm_steps s JOIN alarms a ON a.id = s.alarm_id WHERE s.rowid > ? AND s.action IN ({marks})"
        " ORDER BY s.rowid LIMIT ?", (after, *actions, limit))
    return [StepFact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]), bool(r[12]))
            for r in rows]


def told_about(conn: sqlite3.Connection, alarm_id: int, target: str) -> bool:
    """Whether ``target`` was told of the alarm's raise or escalation."""
    return conn.execute("SELECT 1 FROM notifications WHERE alarm_id = ? AND target = ? AND action IN ('raise', 'escalate')"
                        " LIMIT 1", (alarm_id, target)).fetchone() is not None


def record(conn: sqlite3.Connection, new_cursor: int, items: Iterable[NewNotification], now_ms: int) -> None:
    """Write what the router decided and move its cursor, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT OR IGNORE INTO notifications(step_rowid, alarm_id, target, action, title, body, state, created_ts)"
            " VALUES (?,?,?,?,?,?,'pending',?)",
            [(n.step_rowid, n.alarm_id, n.target, n.action, n.title, n.body, now_ms) for n in items])
        conn.execute("INSERT INTO notify_cursor(name, step_rowid) VALUES (?, ?)"
                     " ON CONFLICT(name) DO UPDATE SET step_rowid = excluded.step_rowid", (_CURSOR, new_cursor))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def pending(conn: sqlite3.Connection, target: str) -> list[Notification]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM notifications WHERE target = ? AND state = 'pending' ORDER BY id", (target,))
    return [Notification(*r) for r in rows]


def sent_since(conn: sqlite3.Connection, target: str, since_ms: int) -> list[int]:
    """When each message to ``target`` since ``since_ms`` was delivered, oldest first (the rate window)."""
    return [r[0] for r in conn.execute(
        "SELECT sent_ts FROM notifications WHERE target = ? AND state = 'sent' AND sent_ts >= ? ORDER BY sent_ts",
        (target, since_ms))]


def summarize(conn: sqlite3.Connection, target: str, covered: Sequence[int], title: str, body: str, now_ms: int) -> int:
    """One summary row carrying ``covered``; returns its id."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute("INSERT INTO notifications(target, action, title, body, state, created_ts)"
                           " VALUES (?, 'summary', ?, ?, 'pending', ?)", (target, title, body, now_ms))
        summary_id = int(cur.lastrowid or 0)
        conn.executemany("UPDATE notifications SET state = 'summarized', summary_id = ? WHERE id = ? AND state = 'pending'",
                         [(summary_id, n) for n in covered])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return summary_id


def _alarms_of(conn: sqlite3.Connection, note: Notification) -> list[int]:
    if note.alarm_id is not None:
        return [note.alarm_id]
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT alarm_id FROM notifications WHERE summary_id = ? AND alarm_id IS NOT NULL ORDER BY alarm_id", (note.id,))]


def attempted(conn: sqlite3.Connection, note: Notification, *, label: str, ok: bool, detail: str, now_ms: int,
              final_state: str | None = None) -> None:
    """One delivery attempt: counted on the row and written to the trail of every alarm it carried."""
    state = "sent" if ok else (final_state or "pending")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE notifications SET attempts = attempts + 1, state = ?, sent_ts = ? WHERE id = ?",
                     (state, now_ms if ok else None, note.id))
        conn.executemany("INSERT INTO notify_attempts(alarm_id, notification_id, ts, target, ok, detail) VALUES (?,?,?,?,?,?)",
                         [(a, note.id, now_ms, label, int(ok), detail) for a in _alarms_of(conn, note)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def drop_unknown_targets(conn: sqlite3.Connection, known: Sequence[str]) -> int:
    """Pending rows of targets no longer configured are dropped (their URL is gone with them)."""
    marks = ",".join("?" * len(known)) or "''"
    cur = conn.execute(f"UPDATE notifications SET state = 'dropped' WHERE state = 'pending' AND target NOT IN ({marks})", tuple(known))
    return cur.rowcount


def trail(conn: sqlite3.Connection, alarm_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Delivery attempts of these alarms as trail items (``notify-sent`` / ``notify-failed``), oldest first."""
    if not alarm_ids:
        return []
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'notify_attempts'").fetchone()
    if exists is None:
        return []
    out: list[dict[str, Any]] = []
    for start in range(0, len(alarm_ids), 500):
        chunk = list(alarm_ids[start:start + 500])
        out += [{"alarm_id": r[0], "ts": r[1], "action": "notify-sent" if r[3] else "notify-failed", "target": r[2],
                 "detail": r[4]}
                for r in conn.execute(f"SELECT alarm_id, ts, target, ok, detail FROM notify_attempts WHERE alarm_id IN"
                                      f" ({','.join('?' * len(chunk))}) ORDER BY ts, rowid", chunk)]
    return out
