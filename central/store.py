"""The event store: one SQLite file in WAL mode holding events, agents, counters.

One writer (the ingest thread) and any number of readers (the dashboard, the
command line in another process). Readers never block the writer and see only
committed batches. ``synchronous = FULL`` on the write connection: central
acks an event only after the commit, and an ack makes the agent delete its
copy, so a commit must survive a power cut, not just a crash of the process.

``alarms`` and ``alarm_steps`` live in the same file but belong to
central/alarms.py, which creates them itself.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from wire.messages import Event, slot_setters

_LOGGER = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
INT64_MAX = 2**63 - 1  # SQLite's INTEGER: a larger Python int cannot even be bound
# SQLite allows 32766 host parameters; stay far below for any build.
_IN_CHUNK = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    agent TEXT NOT NULL,
    eseq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    ts INTEGER NOT NULL,            -- as the agent said (UTC ms)
    ts_est INTEGER NOT NULL,        -- central's estimate of when it really happened
    ts_estimated INTEGER NOT NULL,  -- 1 when ts_est is not the agent's synced clock
    mono_ms INTEGER NOT NULL,
    clock_synced INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    fields TEXT NOT NULL,           -- JSON: the kind's own keys
    unplanned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(agent, eseq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_kind_ts_est ON events(kind, ts_est);
CREATE INDEX IF NOT EXISTS events_received_ts ON events(received_ts);
CREATE TABLE IF NOT EXISTS agents(
    agent TEXT PRIMARY KEY,
    state TEXT,                     -- online | offline | disconnected | NULL (unknown)
    bdseq INTEGER,
    boot_id TEXT,
    last_seen INTEGER,
    acked_eseq INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER,
    birth TEXT,                     -- JSON
    tele TEXT,                      -- JSON
    snapshot TEXT,                  -- JSON
    flags TEXT                      -- JSON
);
CREATE TABLE IF NOT EXISTS counters(
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_EVENT_COLUMNS = (
    "agent, eseq, boot_id, kind, source, ts, ts_est, ts_estimated, mono_ms, clock_synced, replayed, "
    "received_ts, fields, unplanned"
)
_INSERT_EVENT = f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
# Rows per INSERT in a batch's insert; 14 parameters each, far below SQLite's limit.
_ROWS_PER_INSERT = 128
_AGENT_COLUMNS = "agent, state, bdseq, boot_id, last_seen, acked_eseq, first_seen, birth, tele, snapshot, flags"


class StoreError(Exception):
    """The store cannot be used (missing file, wrong schema)."""


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as central holds it; what listeners receive after the commit."""

    agent: str
    eseq: int
    kind: str
    source: str
    ts: int
    ts_est: int
    ts_estimated: bool
    received_ts: int
    replayed: bool
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    unplanned: bool = False
    boot_id: str = ""
    mono_ms: int = 0
    clock_synced: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.fields, MappingProxyType):
            object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    @classmethod
    def received(cls, agent: str, event: Event, received_ts: int, ts_est: int, ts_estimated: bool,
                 unplanned: bool) -> StoredEvent:
        """The event ``agent`` sent, as the ingest thread stores it; equal to the one ``__init__`` builds."""
        stored = _new(cls)
        _set_agent(stored, agent)
        _set_eseq(stored, event.eseq)
        _set_kind(stored, str(event.kind))
        _set_source(stored, event.source)
        _set_ts(stored, event.ts)
        _set_ts_est(stored, ts_est)
        _set_ts_estimated(stored, ts_estimated)
        _set_received_ts(stored, received_ts)
        _set_replayed(stored, event.replayed)
        _set_fields(stored, event.fields)  # a read-only view already, which __init__ would keep too
        _set_unplanned(stored, unplanned)
        _set_boot_id(stored, event.boot_id)
        _set_mono_ms(stored, event.mono_ms)
        _set_clock_synced(stored, event.clock_synced)
        return stored

    def content(self) -> dict[str, Any]:
        """The same map as :meth:`wire.messages.Event.content` of the event received."""
        body = dict(self.fields)
        body.update(eseq=self.eseq, boot_id=self.boot_id, kind=self.kind, source=self.source, ts=self.ts,
                    mono_ms=self.mono_ms, clock_synced=self.clock_synced)
        return body

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's machine-readable form; ``unplanned: true`` only on flagged events."""
        body: dict[str, Any] = {"agent": self.agent, "eseq": self.eseq, "kind": self.kind, "source": self.source,
                                "ts": self.ts, "received_ts": self.received_ts, "replayed": self.replayed}
        for key, value in self.fields.items():
            body.setdefault(key, value)  # a stray field never shadows a column
        if self.unplanned:
            body["unplanned"] = True
        return body

    def to_notice(self) -> dict[str, Any]:
        """The ``event`` notice on the bus: the JSON form plus central's time estimate."""
        body = self.to_json()
        body["ts_est"] = self.ts_est
        body["ts_estimated"] = self.ts_estimated
        body["unplanned"] = self.unplanned
        return body


# Set directly by ``received``: __init__ and __post_init__ were half of what
# storing an event cost the ingest thread.
_new = object.__new__
(_set_agent, _set_eseq, _set_kind, _set_source, _set_ts, _set_ts_est, _set_ts_estimated, _set_received_ts,
 _set_replayed, _set_fields, _set_unplanned, _set_boot_id, _set_mono_ms, _set_clock_synced) = slot_setters(
    StoredEvent, "agent", "eseq", "kind", "source", "ts", "ts_est", "ts_estimated", "received_ts", "replayed",
    "fields", "unplanned", "boot_id", "mono_ms", "clock_synced")


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One row of ``agents``; ``state`` None means central never heard a status."""

    agent: str
    state: str | None = None
    bdseq: int | None = None
    boot_id: str | None = None
    last_seen: int | None = None
    acked_eseq: int = 0
    first_seen: int | None = None
    birth: Mapping[str, Any] | None = None
    tele: Mapping[str, Any] | None = None
    snapshot: Mapping[str, Any] | None = None
    flags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's machine-readable form."""
        return {"agent": self.agent, "state": self.state or "unknown", "bdseq": self.bdseq,
                "last_seen": self.last_seen, "acked_eseq": self.acked_eseq}


def _dumps(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(_plain(value), separators=(",", ":"), sort_keys=True)


def _plain(value: Any) -> Any:
    """MappingProxyType and tuples into what json can write."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _loads(text: str | None) -> Mapping[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return MappingProxyType(value) if isinstance(value, dict) else MappingProxyType({})


_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_str = json.encoder.encode_basestring  # the C one: quotes and escapes


def _fields_json(fields: Mapping[str, Any]) -> str:
    """A flat map of strings, ints and booleans (what events carry) written without json's machinery.

    The ingest thread writes one per event; this is three times faster than
    json.dumps for the one or two keys an event has. Anything else goes
    through the json module.
    """
    parts = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            text = _json_str(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is int:
            text = int.__repr__(value)
        else:
            return _json(dict(fields))
        parts.append(f"{_json_str(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def _event_row(e: StoredEvent) -> tuple[Any, ...]:
    return (e.agent, e.eseq, e.boot_id, e.kind, e.source, e.ts, e.ts_est, int(e.ts_estimated), e.mono_ms,
            int(e.clock_synced), int(e.replayed), e.received_ts, _fields_json(e.fields), int(e.unplanned))


def _event_from_row(r: Sequence[Any]) -> StoredEvent:
    (agent, eseq, boot_id, kind, source, ts, ts_est, ts_estimated, mono_ms, clock_synced, replayed,
     received_ts, fields, unplanned) = r
    return StoredEvent(agent=agent, eseq=eseq, kind=kind, source=source, ts=ts, ts_est=ts_est,
                       ts_estimated=bool(ts_estimated), received_ts=received_ts, replayed=bool(replayed),
                       fields=MappingProxyType(json.loads(fields)), unplanned=bool(unplanned), boot_id=boot_id,
                       mono_ms=mono_ms, clock_synced=bool(clock_synced))


def _agent_from_row(r: Sequence[Any]) -> AgentRow:
    agent, state, bdseq, boot_id, last_seen, acked, first_seen, birth, tele, snapshot, flags = r
    return AgentRow(agent=agent, state=state, bdseq=bdseq, boot_id=boot_id, last_seen=last_seen,
                    acked_eseq=acked or 0, first_seen=first_seen, birth=_loads(birth), tele=_loads(tele),
                    snapshot=_loads(snapshot), flags=_loads(flags) or MappingProxyType({}))


@cache
def _insert_events_sql(rows: int) -> str:
    return f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` many to a statement: 128 at a time, the rest in halving sizes (at most 8 statements cached).

    Not executemany: sqlite3 lets go of the GIL around every step of a
    statement, once per row there, and each time paho's thread, which sets
    the ingest rate, hands the GIL over and waits to get it back (issue 7:
    one wait per event stored). Here that happens once per statement; the
    values are bound exactly as executemany binds them.
    """
    start, size = 0, _ROWS_PER_INSERT
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        conn.execute(_insert_events_sql(size), list(chain.from_iterable(rows[start:start + size])))
        start += size


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Store:
    """The SQLite file at ``path``; connections and the queries other code needs.

    Query methods take an optional ``conn``; without one they open a short
    read-only connection of their own, so any thread may call them.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def connect(self, readonly: bool = False) -> sqlite3.Connection:
        """A connection in WAL mode with a busy timeout; the writer's also creates the schema."""
        if readonly:
            if not self.path.exists():
                raise StoreError(f"store {self.path} does not exist (has `gridpatrol central` run?)")
            conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            conn.execute("PRAGMA query_only = ON")
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            with conn:
                conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _reading(self, conn: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
        if conn is not None:
            yield conn
            return
        with closing(self.connect(readonly=True)) as own:
            yield own

    # -- writing (the ingest thread, inside its batch transaction) -------------

    @staticmethod
    def insert_events(conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Insert the events not yet stored; return those inserted, in the order given.

        An (agent, eseq) already in the table, or twice in ``events``, is not
        inserted again and not returned; the caller compares its content.
        Call inside a transaction.
        """
        if not events:
            return []
        # Fast path: a batch with nothing stored before, the usual case. If the
        # row count says otherwise, undo it and sort the batch out properly.
        conn.execute("SAVEPOINT insert_events")
        before = conn.total_changes
        _insert_rows(conn, [_event_row(e) for e in events])
        if conn.total_changes - before == len(events):
            conn.execute("RELEASE insert_events")
            return list(events)
        conn.execute("ROLLBACK TO insert_events")
        conn.execute("RELEASE insert_events")
        by_agent: dict[str, list[int]] = {}
        for e in events:
            by_agent.setdefault(e.agent, []).append(e.eseq)
        held: set[tuple[str, int]] = set()
        for agent, eseqs in by_agent.items():
            for chunk in _chunks(sorted(set(eseqs))):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT eseq FROM events WHERE agent = ? AND eseq IN ({marks})", (agent, *chunk))
                held.update((agent, eseq) for (eseq,) in rows)
        fresh: list[StoredEvent] = []
        for e in events:
            key = (e.agent, e.eseq)
            if key not in held:
                held.add(key)
                fresh.append(e)
        before = conn.total_changes
        conn.executemany(_INSERT_EVENT, [_event_row(e) for e in fresh])
        inserted = conn.total_changes - before
        if inserted != len(fresh):  # only another writer on the same file could do this
            _LOGGER.error("store: inserted %s of %s new events; is a second writer using %s?", inserted,
                          len(fresh), conn)
        return fresh

    @staticmethod
    def stored_contents(conn: sqlite3.Connection, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """The :meth:`StoredEvent.content` of each stored (agent, eseq) among ``keys``."""
        by_agent: dict[str, set[int]] = {}
        for agent, eseq in keys:
            by_agent.setdefault(agent, set()).add(eseq)
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for agent, eseqs in by_agent.items():
            for chunk in _chunks(sorted(eseqs)):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE agent = ? AND eseq IN ({marks})"
                for row in conn.execute(sql, (agent, *chunk)):
                    e = _event_from_row(row)
                    found[(e.agent, e.eseq)] = e.content()
        return found

    @staticmethod
    def save_agents(conn: sqlite3.Connection, rows: Iterable[AgentRow]) -> None:
        conn.executemany(
            f"INSERT OR REPLACE INTO agents({_AGENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(r.agent, r.state, r.bdseq, r.boot_id, r.last_seen, r.acked_eseq, r.first_seen, _dumps(r.birth),
              _dumps(r.tele), _dumps(r.snapshot), _dumps(r.flags)) for r in rows],
        )

    @staticmethod
    def save_agent_progress(conn: sqlite3.Connection, rows: Iterable[AgentRow]) -> None:
        """Only ``last_seen`` and ``acked_eseq`` of agents already saved in full."""
        conn.executemany("UPDATE agents SET last_seen = ?, acked_eseq = ? WHERE agent = ?",
                         [(r.last_seen, r.acked_eseq, r.agent) for r in rows])

    @staticmethod
    def add_counters(conn: sqlite3.Connection, deltas: Mapping[str, int]) -> None:
        """Add ``deltas``; a counter stops at 2**63 - 1 (a hostile agent's lost range alone can be ~2**63, and
        a value past 64 bits would fail the batch that counts it, and every batch after it, none acked)."""
        conn.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = "
            f"CASE WHEN value > {INT64_MAX} - excluded.value THEN {INT64_MAX} ELSE value + excluded.value END",
            [(name, min(n, INT64_MAX)) for name, n in deltas.items() if n],
        )

    # -- queries ---------------------------------------------------------------

    def contiguous_eseq(self, agent: str, *, after: int = 0, conn: sqlite3.Connection | None = None) -> int:
        """The highest eseq held with none missing between ``after`` and it.

        ``after`` is an eseq known to be covered already (the last ack), so a
        range central gave up on is not counted as missing again.
        """
        if after >= INT64_MAX:  # no eseq past the last one (and after + 1 could not even be bound)
            return after
        with self._reading(conn) as c:
            if c.execute("SELECT 1 FROM events WHERE agent = ? AND eseq = ?", (agent, after + 1)).fetchone() is None:
                return after
            # The end of the run that starts at after + 1: the first held eseq whose successor is missing.
            row = c.execute(
                "SELECT MIN(e.eseq) FROM events e WHERE e.agent = ? AND e.eseq > ? AND NOT EXISTS "
                "(SELECT 1 FROM events f WHERE f.agent = e.agent AND f.eseq = e.eseq + 1)",
                (agent, after),
            ).fetchone()
            return int(row[0])

    def eseqs_above(self, agent: str, eseq: int, *, conn: sqlite3.Connection | None = None) -> list[int]:
        with self._reading(conn) as c:
            return [e for (e,) in c.execute("SELECT eseq FROM events WHERE agent = ? AND eseq > ? ORDER BY eseq",
                                            (agent, eseq))]

    def iter_events(self, conn: sqlite3.Connection, *, agent: str | None = None, kind: str | None = None,
                    since: int | None = None, limit: int | None = None) -> Iterator[StoredEvent]:
        """Matching events oldest first by agent, then eseq; ``since`` is on received_ts (UTC ms)."""
        where, args = [], []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if since is not None:
            where.append("received_ts >= ?")
            args.append(since)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY agent, eseq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for row in conn.execute(sql, args):
            yield _event_from_row(row)

    def list_events(self, agent: str | None = None, kind: str | None = None, since: int | None = None,
                    limit: int | None = None, *, conn: sqlite3.Connection | None = None) -> list[StoredEvent]:
        with self._reading(conn) as c:
            return list(self.iter_events(c, agent=agent, kind=kind, since=since, limit=limit))

    def recent_events(self, limit: int = 100, *, kind: str | None = None, agent: str | None = None,
                      conn: sqlite3.Connection | None = None) -> list[StoredEvent]:
        """The last ``limit`` events to arrive, newest first (for a live page)."""
        where, args = [], []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_ts DESC, agent, eseq DESC LIMIT ?"
        with self._reading(conn) as c:
            return [_event_from_row(r) for r in c.execute(sql, (*args, limit))]

    def events_between(self, kind: str, start_ms: int, end_ms: int, *,
                       conn: sqlite3.Connection | None = None) -> list[StoredEvent]:
        """Events of ``kind`` whose ``ts_est`` is in [start_ms, end_ms), in time order."""
        with self._reading(conn) as c:
            rows = c.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind = ? AND ts_est >= ? AND ts_est < ? "
                "ORDER BY ts_est, agent, eseq",
                (kind, start_ms, end_ms),
            )
            return [_event_from_row(r) for r in rows]

    def list_agents(self, *, conn: sqlite3.Connection | None = None) -> list[AgentRow]:
        with self._reading(conn) as c:
            return [_agent_from_row(r) for r in c.execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY agent")]

    def get_agent(self, agent: str, *, conn: sqlite3.Connection | None = None) -> AgentRow | None:
        with self._reading(conn) as c:
            row = c.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE agent = ?", (agent,)).fetchone()
            return None if row is None else _agent_from_row(row)

    def counters(self, *, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        with self._reading(conn) as c:
            return dict(c.execute("SELECT name, value FROM counters ORDER BY name"))
