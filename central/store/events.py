"""Events, agents and counters: the tables ingest writes, and the queries on them.

One writer per central (its ingest thread; several centrals may share one
PostgreSQL store) and any number of readers (the dashboard, the command line
in another process). Readers never block the writer and see only committed
batches. Connections come from :mod:`central.store.sqlite` or
:mod:`central.store.postgres`, the statements that differ between the two
from :mod:`central.store.dialect`, the schema from :mod:`central.store.schema`.

Events are keyed on ``(agent, epoch, eseq)``: an agent whose outbox is new (a
replaced SD card) starts a new epoch at eseq 1, and the old epoch's events stay.
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
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from central.cards import with_cards
from central.store import alarms as alarms_sql
from central.store import notifications, quarantine, schema, snapshots, sqlite
from central.store.dialect import Connection, dialect_of, transaction
from central.store.errors import StoreError
from wire.messages import Event, slot_setters

if TYPE_CHECKING:
    from central.store import postgres

_LOGGER = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1  # SQLite's INTEGER, PostgreSQL's BIGINT: a larger Python int cannot even be bound
# SQLite allows 32766 host parameters; stay far below for any build.
_IN_CHUNK = 500

_EVENT_COLUMNS = (
    "agent, epoch, eseq, boot_id, kind, source, ts, ts_est, ts_estimated, mono_ms, clock_synced, replayed, "
    "received_ts, fields, unplanned"
)
_INSERT_EVENT = f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
# Rows per INSERT in a batch's insert; 15 parameters each, far below SQLite's limit.
_ROWS_PER_INSERT = 128
_AGENT_COLUMNS = "agent, state, bdseq, boot_id, last_seen, acked_eseq, first_seen, birth, tele, snapshot, flags, epoch"


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
    epoch: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        """What the store is keyed on: one event of one outbox of one agent."""
        return (self.agent, self.epoch, self.eseq)

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
        _set_epoch(stored, event.epoch)
        return stored

    def content(self) -> dict[str, Any]:
        """The same map as :meth:`wire.messages.Event.content` of the event received."""
        body = dict(self.fields)
        body.update(eseq=self.eseq, boot_id=self.boot_id, kind=self.kind, source=self.source, ts=self.ts,
                    mono_ms=self.mono_ms, clock_synced=self.clock_synced, epoch=self.epoch)
        return body

    def to_json(self) -> dict[str, Any]:
        """docs/reference.md's machine-readable form; ``unplanned: true`` only on flagged events."""
        body: dict[str, Any] = {"agent": self.agent, "eseq": self.eseq, "kind": self.kind, "source": self.source,
                                "ts": self.ts, "received_ts": self.received_ts, "replayed": self.replayed,
                                "epoch": self.epoch}
        for key, value in self.fields.items():
            body.setdefault(key, value)  # a stray field never shadows a column
        if self.unplanned:
            body["unplanned"] = True
        return with_cards(body)

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
 _set_replayed, _set_fields, _set_unplanned, _set_boot_id, _set_mono_ms, _set_clock_synced, _set_epoch) = slot_setters(
    StoredEvent, "agent", "eseq", "kind", "source", "ts", "ts_est", "ts_estimated", "received_ts", "replayed",
    "fields", "unplanned", "boot_id", "mono_ms", "clock_synced", "epoch")


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
    epoch: str = ""  # the agent's current epoch; acked_eseq is central's ack point in it

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form of ``agents --json`` (docs/reference.md)."""
        return {"agent": self.agent, "state": self.state or "unknown", "bdseq": self.bdseq,
                "last_seen": self.last_seen, "acked_eseq": self.acked_eseq, "epoch": self.epoch}


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
    return (e.agent, e.epoch, e.eseq, e.boot_id, e.kind, e.source, e.ts, e.ts_est, int(e.ts_estimated), e.mono_ms,
            int(e.clock_synced), int(e.replayed), e.received_ts, _fields_json(e.fields), int(e.unplanned))


def _event_from_row(r: Sequence[Any]) -> StoredEvent:
    (agent, epoch, eseq, boot_id, kind, source, ts, ts_est, ts_estimated, mono_ms, clock_synced, replayed,
     received_ts, fields, unplanned) = r
    return StoredEvent(agent=agent, eseq=eseq, kind=kind, source=source, ts=ts, ts_est=ts_est,
                       ts_estimated=bool(ts_estimated), received_ts=received_ts, replayed=bool(replayed),
                       fields=MappingProxyType(json.loads(fields)), unplanned=bool(unplanned), boot_id=boot_id,
                       mono_ms=mono_ms, clock_synced=bool(clock_synced), epoch=epoch)


def _agent_from_row(r: Sequence[Any]) -> AgentRow:
    agent, state, bdseq, boot_id, last_seen, acked, first_seen, birth, tele, snapshot, flags, epoch = r
    return AgentRow(agent=agent, state=state, bdseq=bdseq, boot_id=boot_id, last_seen=last_seen,
                    acked_eseq=acked or 0, first_seen=first_seen, birth=_loads(birth), tele=_loads(tele),
                    snapshot=_loads(snapshot), flags=_loads(flags) or MappingProxyType({}), epoch=epoch or "")


@cache
def _insert_events_sql(rows: int, returning: bool = False) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    if returning:  # PostgreSQL: the keys it inserted, the others skipped (already held, or twice in the batch)
        return f"INSERT INTO events({_EVENT_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING agent, epoch, eseq"
    return f"INSERT OR IGNORE INTO events({_EVENT_COLUMNS}) VALUES {values}"


def _insert_rows(conn: Connection, rows: Sequence[tuple[Any, ...]], *,
                 returning: bool = False) -> set[tuple[str, str, int]]:
    """Insert ``rows`` many to a statement: 128 at a time, the rest in halving sizes (at most 8 statements cached).

    Not executemany: sqlite3 lets go of the GIL around every step of a
    statement, once per row there, and each time paho's thread, which sets
    the ingest rate, hands the GIL over and waits to get it back (issue 7:
    one wait per event stored). Here that happens once per statement; the
    values are bound exactly as executemany binds them. On PostgreSQL it is
    one round trip per 128 rows. With ``returning``, the keys inserted.
    """
    inserted: set[tuple[str, str, int]] = set()
    start, size = 0, _ROWS_PER_INSERT
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        cur = conn.execute(_insert_events_sql(size, returning), list(chain.from_iterable(rows[start:start + size])))
        if returning:
            inserted.update(cur.fetchall())
        start += size
    return inserted


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Store:
    """Central's store, SQLite at ``path`` or PostgreSQL: connections, migrations, and the queries other code needs.

    Query methods take an optional ``conn``; without one they open a short
    read-only connection of their own, so any thread may call them. Writes
    take the caller's connection inside the caller's transaction (the
    ingest thread's batch), so that what belongs together commits together.
    """

    def __init__(self, path: Path | None = None, *, backend: sqlite.Backend | postgres.Backend | None = None) -> None:
        if backend is None:
            if path is None:
                raise TypeError("Store: give the SQLite file's path, or a backend")
            backend = sqlite.Backend(Path(path))
        self.backend = backend
        # The SQLite file (None on PostgreSQL): what `gridpatrol central backup` copies.
        self.path: Path | None = backend.path if isinstance(backend, sqlite.Backend) else None

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def name(self) -> str:
        """The store as messages name it: the file, or the URL without its password."""
        return self.backend.name

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exceptions (sqlite3's or psycopg's root)."""
        return self.backend.errors

    def exists(self) -> bool:
        """The SQLite file exists, or the PostgreSQL database answers."""
        return self.backend.exists()

    def close(self) -> None:
        """Let go of pooled connections (PostgreSQL's readers); the store can still be used after."""
        self.backend.close()

    def connect(self, readonly: bool = False, *, check_same_thread: bool = True) -> Connection:
        """A connection with the store's policy; a writer's also brings the schema to this version."""
        backend = self.backend
        if isinstance(backend, sqlite.Backend):
            conn: Connection = backend.connect(readonly=readonly, check_same_thread=check_same_thread)
        else:
            conn = backend.connect(readonly=readonly)  # psycopg's connections may be shared between threads
        if readonly:
            return conn
        try:
            schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def migrate(self) -> tuple[int, int]:
        """Bring the schema to this version; (version before, after). ``gridpatrol central migrate``."""
        try:
            with closing(self.backend.connect()) as conn:
                return schema.migrate(conn)
        except self.errors as exc:
            raise StoreError(f"store {self.name}: {exc}") from exc

    def schema_version(self) -> int:
        with self._reading(None) as c:
            return schema.version_of(c)

    def backup(self, target: Path) -> None:
        """A consistent copy of the whole store at ``target`` while central runs (SQLite's online backup).

        The copy is written beside ``target`` and renamed over it when whole,
        so a failed backup never leaves a half file under the name asked for.
        A PostgreSQL store is the server's to back up (pg_dump, or its own
        continuous archiving): refused here.
        """
        if self.path is None:
            raise StoreError(f"backup: store {self.name} is PostgreSQL; back it up with pg_dump")
        target = Path(target)
        if target.resolve() == self.path.resolve():
            raise StoreError(f"backup: {target} is the store itself")
        part = target.with_name(target.name + ".part")
        part.unlink(missing_ok=True)
        with closing(self.connect(readonly=True)) as src, closing(sqlite3.connect(part)) as dst:
            assert isinstance(src, sqlite3.Connection)
            src.backup(dst, pages=1024)
            dst.execute("PRAGMA journal_mode = DELETE")
        part.replace(target)

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's connection, or a short read-only one whose driver errors become :class:`StoreError`."""
        if conn is not None:
            yield conn
            return
        try:
            with closing(self.connect(readonly=True)) as own:
                yield own
        except self.errors as exc:
            raise StoreError(f"store {self.name}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A short write connection for the command line; driver errors become :class:`StoreError`."""
        try:
            with closing(self.connect()) as own:
                yield own
        except self.errors as exc:
            raise StoreError(f"store {self.name}: {exc}") from exc

    def prune(self, before_ms: int, *, chunk: int = 5000) -> dict[str, int]:
        """Retention: delete events received, and alarms closed, before ``before_ms``; quarantine too.

        In chunks, each its own short transaction, so ingest never waits long
        for the write lock. Open alarms and the newest event of each agent's
        epoch (the ack point's witness) are always kept.
        """
        removed = {"events": 0, "alarms": 0, "quarantine": 0}
        with self._writing() as c:
            while True:
                with transaction(c):
                    n = c.execute(
                        "DELETE FROM events WHERE (agent, epoch, eseq) IN (SELECT e.agent, e.epoch, e.eseq FROM events e"
                        " WHERE e.received_ts < ? AND e.eseq < (SELECT MAX(f.eseq) FROM events f WHERE f.agent = e.agent"
                        " AND f.epoch = e.epoch) LIMIT ?)", (before_ms, chunk)).rowcount
                removed["events"] += n
                if n < chunk:
                    break
            with transaction(c):
                ids = [r[0] for r in c.execute("SELECT id FROM alarms WHERE state = 'resolved' AND raised_ts < ?"
                                               " AND COALESCE(acked_ts, 0) < ?", (before_ms, before_ms))]
                for part in _chunks(ids):
                    marks = ",".join("?" * len(part))
                    # The newest step row stays, as a witness: alarm_steps' rowid is the cursor of the notifier
                    # and the snapshot taker, and deleting the top rows would hand their numbers out again.
                    c.execute(f"DELETE FROM alarm_steps WHERE alarm_id IN ({marks})"
                              " AND rowid != (SELECT MAX(rowid) FROM alarm_steps)", part)
                    notifications.forget(c, part)  # issue 14: what was sent about them, their pictures
                    snapshots.forget(c, part)
                    c.execute(f"DELETE FROM alarms WHERE id IN ({marks})", part)
                removed["alarms"] = len(ids)
                removed["quarantine"] = c.execute("DELETE FROM quarantine WHERE received_ts < ?",
                                                  (before_ms,)).rowcount
        return removed

    # -- alarms and quarantine, for the command line and the dashboard ---------

    def alarms(self, *, include_all: bool = False) -> list[alarms_sql.Alarm]:
        with self._reading(None) as c:
            return alarms_sql.list_alarms(c, include_all=include_all)

    def alarm_counts(self) -> list[tuple[str, str, int]]:
        """Alarms by ``(state, kind, count)``; none before central made its store."""
        if not self.exists():
            return []
        with self._reading(None) as c:
            return alarms_sql.alarm_counts(c)

    def alarm(self, alarm_id: int) -> alarms_sql.Alarm | None:
        with self._reading(None) as c:
            return alarms_sql.get_alarm(c, alarm_id)

    def acknowledge(self, alarm_id: int, by: str, now_ms: int, *, tier: str | None = None) -> alarms_sql.Alarm:
        """Acknowledge from another process; the running central tells the agent (``notified = 0``)."""
        with self._writing() as c:
            return alarms_sql.acknowledge(c, alarm_id, by, now_ms, tier=tier)

    def quarantined(self, *, limit: int | None = None, before: int | None = None) -> list[quarantine.Quarantined]:
        with self._reading(None) as c:
            return quarantine.list_quarantined(c, limit=limit, before=before)

    # -- writing (the ingest thread, inside its batch transaction) -------------

    @staticmethod
    def insert_events(conn: Connection, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Insert the events not yet stored; return those inserted, in the order given.

        An (agent, epoch, eseq) already in the table, or twice in ``events``,
        is not inserted again and not returned; the caller compares its
        content. Call inside a transaction.
        """
        if not events:
            return []
        if not isinstance(conn, sqlite3.Connection):
            # PostgreSQL says which rows it inserted. Another central inserting
            # the same key at the same moment makes this statement wait for
            # that one's commit, then skip the row: stored once, either way.
            keys = _insert_rows(conn, [_event_row(e) for e in events], returning=True)
            inserted_in_order = []
            for e in events:
                if e.key in keys:
                    keys.discard(e.key)  # the first of the batch's copies is the one inserted
                    inserted_in_order.append(e)
            return inserted_in_order
        # SQLite's fast path: a batch with nothing stored before, the usual case. If
        # the row count says otherwise, undo it and sort the batch out properly.
        conn.execute("SAVEPOINT insert_events")
        before = conn.total_changes
        _insert_rows(conn, [_event_row(e) for e in events])
        if conn.total_changes - before == len(events):
            conn.execute("RELEASE insert_events")
            return list(events)
        conn.execute("ROLLBACK TO insert_events")
        conn.execute("RELEASE insert_events")
        held = Store._held(conn, (e.key for e in events))
        fresh: list[StoredEvent] = []
        for e in events:
            key = e.key
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
    def _held(conn: Connection, keys: Iterable[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        by_stream: dict[tuple[str, str], set[int]] = {}
        for agent, epoch, eseq in keys:
            by_stream.setdefault((agent, epoch), set()).add(eseq)
        held: set[tuple[str, str, int]] = set()
        for (agent, epoch), eseqs in by_stream.items():
            for chunk in _chunks(sorted(eseqs)):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT eseq FROM events WHERE agent = ? AND epoch = ? AND eseq IN ({marks})",
                                    (agent, epoch, *chunk))
                held.update((agent, epoch, eseq) for (eseq,) in rows)
        return held

    @staticmethod
    def stored_contents(conn: Connection,
                        keys: Iterable[tuple[str, str, int]]) -> dict[tuple[str, str, int], dict[str, Any]]:
        """The :meth:`StoredEvent.content` of each stored (agent, epoch, eseq) among ``keys``."""
        by_stream: dict[tuple[str, str], set[int]] = {}
        for agent, epoch, eseq in keys:
            by_stream.setdefault((agent, epoch), set()).add(eseq)
        found: dict[tuple[str, str, int], dict[str, Any]] = {}
        for (agent, epoch), eseqs in by_stream.items():
            for chunk in _chunks(sorted(eseqs)):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE agent = ? AND epoch = ? AND eseq IN ({marks})"
                for row in conn.execute(sql, (agent, epoch, *chunk)):
                    e = _event_from_row(row)
                    found[e.key] = e.content()
        return found

    @staticmethod
    def delete_events(conn: Connection, agent: str, epoch: str, above: int) -> list[StoredEvent]:
        """Take the events of one epoch above ``above`` out of ``events`` (to quarantine them); returns them."""
        rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE agent = ? AND epoch = ? AND eseq > ?"
                            " ORDER BY eseq", (agent, epoch, above)).fetchall()
        conn.execute("DELETE FROM events WHERE agent = ? AND epoch = ? AND eseq > ?", (agent, epoch, above))
        return [_event_from_row(r) for r in rows]

    @staticmethod
    def save_agents(conn: Connection, rows: Iterable[AgentRow]) -> None:
        conn.executemany(
            f"INSERT INTO agents({_AGENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(agent) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _AGENT_COLUMNS.split(", ")[1:]),
            [(r.agent, r.state, r.bdseq, r.boot_id, r.last_seen, r.acked_eseq, r.first_seen, _dumps(r.birth),
              _dumps(r.tele), _dumps(r.snapshot), _dumps(r.flags), r.epoch) for r in rows],
        )

    @staticmethod
    def save_agent_rows(conn: Connection, full: Sequence[AgentRow], progress: Sequence[AgentRow]) -> None:
        """:meth:`save_agents` and :meth:`save_agent_progress` of one batch, the rows locked in agent order.

        Several centrals of a group update the same agents' rows in every batch:
        taken in one order, their row locks make them wait for each other, never
        deadlock (which would cost each a second and a retry message by message).
        """
        agents = sorted({r.agent for r in full} | {r.agent for r in progress})
        if agents and dialect_of(conn).name == "postgresql":
            for part in _chunks(agents):
                conn.execute(f"SELECT agent FROM agents WHERE agent IN ({','.join('?' * len(part))})"
                             " ORDER BY agent FOR UPDATE", part).fetchall()
        Store.save_agents(conn, sorted(full, key=lambda r: r.agent))
        Store.save_agent_progress(conn, sorted(progress, key=lambda r: r.agent))

    @staticmethod
    def save_agent_progress(conn: Connection, rows: Iterable[AgentRow]) -> None:
        """Only ``last_seen``, ``acked_eseq`` and ``epoch`` of agents already saved in full."""
        conn.executemany("UPDATE agents SET last_seen = ?, acked_eseq = ?, epoch = ? WHERE agent = ?",
                         [(r.last_seen, r.acked_eseq, r.epoch, r.agent) for r in rows])

    @staticmethod
    def add_counters(conn: Connection, deltas: Mapping[str, int]) -> None:
        """Add ``deltas``; a counter stops at 2**63 - 1 (a hostile agent's lost range alone can be ~2**63, and
        a value past 64 bits would fail the batch that counts it, and every batch after it, none acked)."""
        conn.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = "
            f"CASE WHEN counters.value > {INT64_MAX} - excluded.value THEN {INT64_MAX} ELSE counters.value + excluded.value END",
            [(name, min(n, INT64_MAX)) for name, n in sorted(deltas.items()) if n],  # one lock order for all
        )

    @staticmethod
    def record_lost(conn: Connection, agent: str, epoch: str, first: int, last: int, now_ms: int, *,
                    reason: str) -> None:
        """Eseq ``first``..``last`` of ``epoch`` are covered with no event: the agent said they are gone
        (``reason="gone"``), or the one message was quarantined (``"quarantined"``). Central stops waiting."""
        conn.execute("INSERT INTO lost(agent, epoch, first, last, recorded_ts, reason) VALUES (?,?,?,?,?,?)"
                     " ON CONFLICT(agent, epoch, first) DO UPDATE SET last = excluded.last,"
                     " recorded_ts = excluded.recorded_ts, reason = excluded.reason",
                     (agent, epoch, first, last, now_ms, reason))

    # -- queries ---------------------------------------------------------------

    def lost_ranges(self, agent: str, epoch: str, *, conn: Connection | None = None) -> list[tuple[int, int]]:
        with self._reading(conn) as c:
            return [(a, b) for a, b in c.execute("SELECT first, last FROM lost WHERE agent = ? AND epoch = ?"
                                                 " ORDER BY first", (agent, epoch))]

    def contiguous_eseq(self, agent: str, epoch: str = "", *, after: int = 0,
                        conn: Connection | None = None) -> int:
        """The highest eseq of ``epoch`` held with none missing between ``after`` and it.

        ``after`` is an eseq known to be covered already (the last ack). A
        range the agent said is gone (``lost``) counts as held.
        """
        if after >= INT64_MAX:  # no eseq past the last one (and after + 1 could not even be bound)
            return after
        with self._reading(conn) as c:
            lost = self.lost_ranges(agent, epoch, conn=c)
            while True:
                moved = after
                for first, last in lost:
                    if first <= moved + 1 <= last:
                        moved = max(moved, last)
                if moved >= INT64_MAX:
                    return moved
                if c.execute("SELECT 1 FROM events WHERE agent = ? AND epoch = ? AND eseq = ?",
                             (agent, epoch, moved + 1)).fetchone() is None:
                    return moved
                # The end of the run that starts at moved + 1: the first held eseq whose successor is missing.
                # (The last eseq there can be has none; PostgreSQL would fail on its + 1, SQLite make it a REAL.)
                row = c.execute(
                    "SELECT MIN(e.eseq) FROM events e WHERE e.agent = ? AND e.epoch = ? AND e.eseq > ? AND NOT EXISTS "
                    "(SELECT 1 FROM events f WHERE f.agent = e.agent AND f.epoch = e.epoch AND f.eseq = "
                    f"CASE WHEN e.eseq < {INT64_MAX} THEN e.eseq + 1 END)",
                    (agent, epoch, moved),
                ).fetchone()
                after = int(row[0])

    def eseqs_above(self, agent: str, epoch: str, eseq: int, *, conn: Connection | None = None) -> list[int]:
        with self._reading(conn) as c:
            return [e for (e,) in c.execute("SELECT eseq FROM events WHERE agent = ? AND epoch = ? AND eseq > ?"
                                            " ORDER BY eseq", (agent, epoch, eseq))]

    def events_in(self, ranges: Sequence[tuple[str, str, int, int]], *,
                  conn: Connection | None = None) -> list[StoredEvent]:
        """The stored events of the ``(agent, epoch, first eseq, last eseq)`` ranges, by agent, epoch and eseq.

        A group's feed reads what another member announced (central/feed.py);
        each range is a walk along the primary key.
        """
        found: list[StoredEvent] = []
        with self._reading(conn) as c:
            for part in _chunks(ranges, 50):
                where = " OR ".join(["(agent = ? AND epoch = ? AND eseq BETWEEN ? AND ?)"] * len(part))
                rows = c.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY agent, epoch, eseq",
                                 list(chain.from_iterable(part)))
                found.extend(_event_from_row(r) for r in rows)
        return found

    def iter_events(self, conn: Connection, *, agent: str | None = None, kind: str | None = None,
                    since: int | None = None, limit: int | None = None) -> Iterator[StoredEvent]:
        """Matching events oldest first: by agent, its epochs in the order they began, then eseq.

        ``since`` is on received_ts (UTC ms).
        """
        where: list[str] = []
        args: list[Any] = []
        if agent is not None:
            where.append("e.agent = ?")
            args.append(agent)
        if kind is not None:
            where.append("e.kind = ?")
            args.append(kind)
        if since is not None:
            where.append("e.received_ts >= ?")
            args.append(since)
        columns = ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
        sql = (f"SELECT {columns} FROM events e JOIN (SELECT agent, epoch, MIN(received_ts) AS began FROM events"
               " GROUP BY agent, epoch) b ON b.agent = e.agent AND b.epoch = e.epoch")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.agent, b.began, e.epoch, e.eseq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for row in conn.execute(sql, args):
            yield _event_from_row(row)

    def list_events(self, agent: str | None = None, kind: str | None = None, since: int | None = None,
                    limit: int | None = None, *, conn: Connection | None = None) -> list[StoredEvent]:
        with self._reading(conn) as c:
            return list(self.iter_events(c, agent=agent, kind=kind, since=since, limit=limit))

    def recent_events(self, limit: int = 100, *, kind: str | None = None, agent: str | None = None,
                      conn: Connection | None = None) -> list[StoredEvent]:
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
                       conn: Connection | None = None) -> list[StoredEvent]:
        """Events of ``kind`` whose ``ts_est`` is in [start_ms, end_ms), in time order."""
        with self._reading(conn) as c:
            rows = c.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind = ? AND ts_est >= ? AND ts_est < ? "
                "ORDER BY ts_est, agent, eseq",
                (kind, start_ms, end_ms),
            )
            return [_event_from_row(r) for r in rows]

    def scan_rows(self, lo_ms: int, hi_ms: int) -> list[tuple[str, str, int, int, Any, Any]]:
        """``(agent, source, ts_est, eseq, tag, fmt)`` of scans that happened in ``[lo, hi)``.

        Only the six values a round needs: building full StoredEvents (JSON
        fields, mapping proxies) for a night of 70,000 scans costs seconds,
        this a fraction. It uses the (kind, ts_est) index.
        """
        with self._reading(None) as c:
            d = dialect_of(c)
            tag, fmt = d.json_string("fields", "tag"), d.json_string("fields", "fmt")
            return c.execute(f"SELECT agent, source, ts_est, eseq, {tag}, {fmt} FROM events WHERE kind = 'scan'"
                             " AND ts_est >= ? AND ts_est < ?", (lo_ms, hi_ms)).fetchall()

    def list_agents(self, *, conn: Connection | None = None) -> list[AgentRow]:
        with self._reading(conn) as c:
            return [_agent_from_row(r) for r in c.execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY agent")]

    def get_agent(self, agent: str, *, conn: Connection | None = None) -> AgentRow | None:
        with self._reading(conn) as c:
            row = c.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE agent = ?", (agent,)).fetchone()
            return None if row is None else _agent_from_row(row)

    def summary(self) -> dict[str, Any]:
        """Agents online, events, alarms by state: the demo's one-line progress."""
        with self._reading(None) as c:
            return {
                "online": c.execute("SELECT COUNT(*) FROM agents WHERE state = 'online'").fetchone()[0],
                "events": c.execute("SELECT COUNT(*) FROM events").fetchone()[0],
                "alarms": dict(c.execute("SELECT state, COUNT(*) FROM alarms GROUP BY state").fetchall()),
            }

    def counters(self, *, conn: Connection | None = None) -> dict[str, int]:
        with self._reading(conn) as c:
            return dict(c.execute("SELECT name, value FROM counters ORDER BY name"))
