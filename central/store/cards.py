"""Cards seen at readers: the one query behind `gridpatrol cards unknown` and the dashboard's Cards page."""

from __future__ import annotations

from dataclasses import dataclass

from central.store.dialect import Connection, dialect_of


@dataclass(slots=True, frozen=True)
class Sighting:
    """Scans of one card (``tag``, ``fmt``) at one reader since some moment."""

    agent: str
    reader: str
    tag: str
    fmt: str | None
    count: int
    first_ts: int
    last_ts: int


def card_sightings(conn: Connection, since_ms: int) -> list[Sighting]:
    """Every card seen at every reader since ``since_ms`` (by when the scans happened); ``conn`` may be read-only.

    Grouped in the database: a month of scans is tens of thousands of rows, the answer a handful.
    """
    d = dialect_of(conn)
    tag, fmt = d.json_string("fields", "tag"), d.json_string("fields", "fmt")
    rows = conn.execute(
        f"SELECT agent, source, {tag} AS tag, {fmt} AS fmt, COUNT(*), MIN(ts_est), MAX(ts_est)"
        " FROM events WHERE kind = 'scan' AND ts_est >= ? GROUP BY agent, source, tag, fmt", (since_ms,)).fetchall()
    return [Sighting(agent, source, tag, fmt if isinstance(fmt, str) else None, int(n), int(first), int(last))
            for agent, source, tag, fmt, n, first, last in rows if isinstance(tag, str)]
