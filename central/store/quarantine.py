"""The ``quarantine`` table: messages central could not store, kept raw with the reason.

A message lands here when it fails alone (ingest retries a failed batch
message by message), or when an agent's answer to ``replay`` shows that an
event claimed an eseq its agent never made. Central acknowledges past it, so
no agent waits on another's poison; staff read it with ``gridpatrol
quarantine`` and on the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from central.store.dialect import Connection

REASON_MAX_CHARS = 500
PAYLOAD_MAX_BYTES = 64 * 1024  # an agent's message is bounded by the wire; a forged one is cut to this


@dataclass(slots=True, frozen=True)
class Quarantined:
    id: int
    agent: str | None
    topic: str
    payload: bytes
    reason: str
    received_ts: int
    epoch: str | None
    eseq: int | None

    def to_json(self) -> dict[str, Any]:
        """The keys of ``quarantine --json`` (docs/reference.md); the payload as hex, for the curious."""
        return {"id": self.id, "agent": self.agent, "topic": self.topic, "reason": self.reason,
                "received_ts": self.received_ts, "epoch": self.epoch, "eseq": self.eseq,
                "payload_hex": self.payload.hex()}


def put(conn: Connection, *, agent: str | None, topic: str, payload: bytes, reason: str, received_ts: int,
        epoch: str | None = None, eseq: int | None = None) -> int:
    """Keep one message; the same (agent, epoch, eseq) sent again (its ack was lost) is kept once."""
    if eseq is not None and eseq < 2**63:
        # IS NOT DISTINCT FROM: = that holds for NULLs too (SQLite 3.39+, PostgreSQL).
        held = conn.execute("SELECT id FROM quarantine WHERE agent IS NOT DISTINCT FROM ? AND epoch IS NOT DISTINCT"
                            " FROM ? AND eseq = ?", (agent, epoch, eseq)).fetchone()
        if held is not None:
            return int(held[0])
    row = conn.execute(
        "INSERT INTO quarantine(agent, topic, payload, reason, received_ts, epoch, eseq) VALUES (?,?,?,?,?,?,?)"
        " RETURNING id",
        (agent, topic, bytes(payload[:PAYLOAD_MAX_BYTES]), reason[:REASON_MAX_CHARS], received_ts, epoch,
         eseq if eseq is None or eseq < 2**63 else None)).fetchone()
    return int(row[0])


def list_quarantined(conn: Connection, *, limit: int | None = None,
                     before: int | None = None) -> list[Quarantined]:
    """Newest first; ``before`` is an id from the previous page."""
    sql = "SELECT id, agent, topic, payload, reason, received_ts, epoch, eseq FROM quarantine"
    args: list[Any] = []
    if before is not None:
        sql += " WHERE id < ?"
        args.append(before)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [Quarantined(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in conn.execute(sql, args)]


def count(conn: Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
