"""The ``snapshots`` table (issue 14, schema version 3): every statement on it.

Snapshots live in the store, not beside it: ``gridpatrol central backup``
copies them with their alarms, and a PostgreSQL store will hold them for
every central that shares it. The retention bound (``[cameras] keep_days``
and ``max_mb``) keeps the file from growing without end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from central.store.dialect import Connection, transaction

TRIP_ACTIONS = ("raise", "retrip")
AGENT_KINDS = ("alarm", "tamper", "panic")  # raised by an agent's input: what a camera can watch


@dataclass(slots=True, frozen=True)
class Trip:
    rowid: int
    alarm_id: int
    ts: int
    agent: str
    source: str
    action: str
    raised_ts: int  # when the alarm happened (the step's ts is when central learnt of it)


def last_step(conn: Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM alarm_steps").fetchone()[0])


def trips_after(conn: Connection, after: int, limit: int = 500) -> list[Trip]:
    """Raises and retrips of agents' inputs committed past step ``after`` (alarm_steps' rowid)."""
    rows = conn.execute(
        "SELECT s.rowid, s.alarm_id, s.ts, a.agent, a.source, s.action, a.raised_ts FROM alarm_steps s"
        " JOIN alarms a ON a.id = s.alarm_id"
        f" WHERE s.rowid > ? AND s.action IN ({','.join('?' * len(TRIP_ACTIONS))})"
        f" AND a.kind IN ({','.join('?' * len(AGENT_KINDS))}) ORDER BY s.rowid LIMIT ?",
        (after, *TRIP_ACTIONS, *AGENT_KINDS, limit))
    return [Trip(*r) for r in rows]


def add(conn: Connection, alarm_id: int, camera: str, ts: int, jpeg: bytes) -> int:
    """Keep one snapshot with its alarm; returns its number."""
    with transaction(conn):
        n = int(conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM snapshots WHERE alarm_id = ?", (alarm_id,)).fetchone()[0])
        conn.execute("INSERT INTO snapshots(alarm_id, n, ts, camera, size, jpeg) VALUES (?,?,?,?,?,?)",
                     (alarm_id, n, ts, camera, len(jpeg), jpeg))
    return n


def prune(conn: Connection, *, older_than_ms: int, max_bytes: int) -> int:
    """Forget snapshots taken before ``older_than_ms``, then the oldest until the rest fit ``max_bytes``."""
    with transaction(conn):
        gone = conn.execute("DELETE FROM snapshots WHERE ts < ?", (older_than_ms,)).rowcount
        total = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM snapshots").fetchone()[0])
        if total > max_bytes:
            doomed = []
            for alarm_id, n, size in conn.execute("SELECT alarm_id, n, size FROM snapshots ORDER BY ts, alarm_id, n"):
                if total <= max_bytes:
                    break
                doomed.append((alarm_id, n))
                total -= size
            conn.executemany("DELETE FROM snapshots WHERE alarm_id = ? AND n = ?", doomed)
            gone += len(doomed)
    return gone


def forget(conn: Connection, alarm_ids: Sequence[int]) -> None:
    """With the alarms retention removes (inside its transaction): their snapshots."""
    marks = ",".join("?" * len(alarm_ids))
    if marks:
        conn.execute(f"DELETE FROM snapshots WHERE alarm_id IN ({marks})", tuple(alarm_ids))


def jpeg(conn: Connection, alarm_id: int, n: int) -> bytes | None:
    row = conn.execute("SELECT jpeg FROM snapshots WHERE alarm_id = ? AND n = ?", (alarm_id, n)).fetchone()
    return None if row is None else bytes(row[0])


def numbers(conn: Connection, alarm_ids: Sequence[int]) -> Mapping[int, list[int]]:
    """The snapshot numbers each alarm still holds (retention may have taken the first ones)."""
    out: dict[int, list[int]] = {}
    if not alarm_ids:
        return out
    for start in range(0, len(alarm_ids), 500):
        chunk = list(alarm_ids[start:start + 500])
        for alarm_id, n in conn.execute(f"SELECT alarm_id, n FROM snapshots WHERE alarm_id IN ({','.join('?' * len(chunk))})"
                                        " ORDER BY alarm_id, n", chunk):
            out.setdefault(alarm_id, []).append(n)
    return out
