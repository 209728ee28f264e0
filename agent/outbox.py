"""The durable outbox: every event is committed here before it is published.

SQLite in WAL mode with ``synchronous = FULL``: when :meth:`Outbox.append`
returns, the event survives a power cut. Rows leave only when central's ack
covers them (:meth:`Outbox.ack`), never on the broker's PUBACK.

Epoch: a random token made when the file is created and kept in it. A new
file (a replaced SD card, a wiped outbox, one SQLite cannot read, which
:func:`open_outbox` moves aside) is a new epoch, numbered from 1 again;
central keys events on ``(agent, epoch, eseq)``. An outbox from before epochs
keeps the epoch ``""`` its events were sent with.

Numbering: ``eseq`` starts at 1 in each epoch, has no gaps and is never
reused. Acked rows are deleted, so ``max(eseq)`` of the table cannot say where
numbering stands once the outbox has drained; the last eseq handed out is kept
in the ``meta`` table and updated in the same transaction as the row it
numbers. ``bdseq`` (birth/death sequence of the MQTT session) lives there too.

Gone: an event the outbox cannot keep (at its bound, or on a full disk) still
takes its eseq, and the eseq is recorded *gone* (runs of them as ``[low,
high]`` ranges), so the answer to central's ``replay`` can say exactly what
was lost. The rows and the gone ranges together are always exactly
``(acked_eseq, last_eseq]``.

Bound: at ``max_events`` rows, kinds other than alarms, panics, tampers and
scans are no longer stored (counted, gone, one ``outbox-full`` fault); those
four are never dropped.

Full disk: a :class:`~agent.reserve.DiskReserve` beside the file is given
back when SQLite first reports the disk full; with that room the WAL is
truncated, acks still delete rows and critical events are still stored. One
``disk-full`` fault says so; other kinds are shed until the disk has room
again. Critical events that find no room at all wait in memory, in order.

The outbox knows no MQTT. It is thread-safe: the input loop appends, the
session thread acks and reads.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from agent.errors import AgentError
from agent.events import FaultCode
from agent.reserve import DiskReserve
from wire.codec import pack, unpack
from wire.messages import CRITICAL_KINDS, GONE_MAX_RANGES, Event, EventKind

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the epoch and the gone ranges
EPOCH_HEX_CHARS = 16
# Gone ranges above the ack that the outbox keeps. Central acks past a gone
# range once told of it, so only a long outage interleaving drops with kept
# events comes near; past it a dropped event takes no eseq (counted), the way
# every drop was handled before gone ranges.
GONE_KEPT_MAX = 1_024
OUTBOX_SOURCE = "outbox"  # ``source`` of the faults the outbox raises about itself
BUSY_TIMEOUT_MS = 5_000
# After a warning, the depth must fall this far below the warning level before
# the next one may be raised, so a depth that hovers at the level warns once.
REARM_FRACTION = 0.75
# Critical events that met a full disk wait in memory (in order) for space;
# beyond this many something is badly wrong and we say so in the log.
PENDING_CRITICAL_WARN = 1_000
READ_LIMIT = 1_000
DISK_FULL_DETAIL = "the disk is full: only alarms, panics, tampers and scans are stored until it has room again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events(
    eseq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    ts INTEGER NOT NULL,
    mono_ms INTEGER NOT NULL,
    clock_synced INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    fields BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS epoch(
    only INTEGER PRIMARY KEY CHECK (only = 1),
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gone(
    low INTEGER PRIMARY KEY,
    high INTEGER NOT NULL
);
"""
_META_DEFAULTS = {"schema": SCHEMA_VERSION, "last_eseq": 0, "acked_eseq": 0, "bdseq": 0}
_RESERVED_FIELDS = frozenset({"eseq", "boot_id", "kind", "source", "ts", "mono_ms", "clock_synced", "replayed"})


class OutboxError(AgentError, OSError):
    """The outbox file cannot be used (corrupt, wrong schema, closed)."""


class OutboxUnreadable(OutboxError):
    """SQLite cannot read the file (not a database, or a malformed one): :func:`open_outbox` starts a new one."""


_UNREADABLE_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def new_epoch() -> str:
    """A fresh epoch token: random, so two outboxes of one agent never share one."""
    return secrets.token_hex(EPOCH_HEX_CHARS // 2)


@dataclass(frozen=True, slots=True)
class _Pending:
    """An event waiting to be numbered and stored (eseq is assigned on insert)."""

    kind: EventKind
    source: str
    fields: Mapping[str, Any]
    ts: int
    mono_ms: int
    clock_synced: bool
    boot_id: str

    def numbered(self, eseq: int, epoch: str) -> Event:
        return Event(
            eseq=eseq, boot_id=self.boot_id, kind=self.kind, source=self.source, ts=self.ts,
            mono_ms=self.mono_ms, clock_synced=self.clock_synced, fields=self.fields, epoch=epoch,
        )


def _is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def _must_keep(item: _Pending) -> bool:
    """Critical kinds, and the fault that says the disk is full, wait for room rather than go."""
    return item.kind in CRITICAL_KINDS or (item.kind is EventKind.FAULT and item.fields.get("code") == FaultCode.DISK_FULL)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Outbox:
    """Durable, bounded, ack-driven store of an agent's events."""

    def __init__(self, path: Path, *, max_events: int, warn_fraction: float = 0.8,
                 reserve: DiskReserve | None = None) -> None:
        if max_events < 1:
            raise ValueError(f"outbox max_events must be at least 1, not {max_events}")
        if not 0 < warn_fraction <= 1:
            raise ValueError(f"outbox warn_fraction must be in (0, 1], not {warn_fraction}")
        self.path = Path(path)
        self.max_events = max_events
        self.warn_level = max(1, int(max_events * warn_fraction))
        self._rearm_level = int(self.warn_level * REARM_FRACTION)
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._reserve = reserve if reserve is not None else DiskReserve(self.path.with_name(self.path.name + ".reserve"))
        self._disk_full = False  # a full-disk episode: only critical kinds are stored
        self._disk_fault_due = False  # its fault goes in with the next event
        self._counters = {"appended": 0, "dropped": 0, "disk_full": 0, "critical_waiting": 0, "acks_ahead": 0,
                          "bdseq_unsaved": 0, "disk_full_episodes": 0, "gone": 0, "gone_unnumbered": 0,
                          "acks_other_epoch": 0}
        self._gone: list[list[int]] = []  # [low, high] ascending, above the ack
        self._gone_dirty = False  # the top range (only it ever grows) is not on the disk yet
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            self._db = None
            unreadable = getattr(exc, "sqlite_errorcode", None) in _UNREADABLE_CODES
            raise (OutboxUnreadable if unreadable else OutboxError)(f"{self.path}: not a usable outbox: {exc}") from None
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _open(self) -> None:
        db = self._conn()
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(f"{self.path}: cannot switch the outbox to WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")  # commit = on the disk: power-safe
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        fresh = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()[0] == 0
        db.executescript(_SCHEMA)
        with self._transaction(db):
            for key, value in _META_DEFAULTS.items():
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            if fresh:
                db.execute("INSERT INTO epoch(only, value) VALUES (1, ?)", (new_epoch(),))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta["schema"] == 1:
            # From before epochs: its events went out (and are held at central)
            # under the epoch "", so it keeps that one; a new epoch here would
            # make central wait for eseqs this outbox acked long ago.
            with self._transaction(db):
                db.execute("INSERT OR IGNORE INTO epoch(only, value) VALUES (1, '')")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
            _LOGGER.info("outbox %s: schema 1 brought to %d; it keeps the epoch \"\"", self.path, SCHEMA_VERSION)
        elif meta["schema"] != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: outbox schema {meta['schema']} is not {SCHEMA_VERSION}")
        row = db.execute("SELECT value FROM epoch").fetchone()
        if row is None:
            raise OutboxError(f"{self.path}: the outbox has no epoch")
        self.epoch: str = row[0]
        self._last = int(meta["last_eseq"])
        self._acked = int(meta["acked_eseq"])
        self._bdseq = int(meta["bdseq"])
        self._gone = [[int(low), int(high)] for low, high in
                      db.execute("SELECT low, high FROM gone WHERE high > ? ORDER BY low", (self._acked,))]
        if self._gone and self._gone[-1][1] > self._last:
            self._last = self._gone[-1][1]  # written together; only a hand-edited file disagrees
        low, high, count = db.execute("SELECT min(eseq), max(eseq), count(*) FROM events").fetchone()
        # Both are written in the transaction that changes the rows, so these
        # only disagree if someone edited the file; never number below a row.
        if high is not None and high > self._last:
            _LOGGER.warning("outbox %s: rows up to eseq %s above last_eseq %s; numbering continues above them",
                            self.path, high, self._last)
            self._last = high
        if low is not None and low <= self._acked:
            _LOGGER.warning("outbox %s: rows at or below acked eseq %s; they are kept", self.path, self._acked)
            self._acked = low - 1
        self._depth = int(count)
        self._filling_reported = self._depth >= self.warn_level
        self._full_reported = self._depth >= self.max_events
        if not self._reserve.take():
            self._enter_disk_full(f"less than {self._reserve.size + self._reserve.resume_free} bytes free")
        _LOGGER.info("outbox %s: epoch %r, %d unacked events (eseq %d..%d, %d gone ranges), bdseq %d",
                     self.path, self.epoch, self._depth, self._acked + 1, self._last, len(self._gone), self._bdseq)

    # -- small helpers ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"{self.path}: the outbox is closed")
        return self._db

    class _transaction:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")

    # -- the public surface ----------------------------------------------------

    @property
    def depth(self) -> int:
        """Events stored and not yet covered by central's ack."""
        return self._depth

    @property
    def last_eseq(self) -> int:
        return self._last

    @property
    def acked_eseq(self) -> int:
        return self._acked

    @property
    def bdseq(self) -> int:
        return self._bdseq

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            counters = dict(self._counters)
            counters["critical_waiting"] = len(self._pending)
        return {f"outbox_{k}": v for k, v in counters.items()}

    def append(
        self, kind: EventKind | str, source: str, fields: Mapping[str, Any] | None = None, *,
        ts: int, mono_ms: int, clock_synced: bool, boot_id: str,
    ) -> Event | None:
        """Number and commit one event; returns it, or None when it was not stored.

        A non-critical event is not stored when the outbox is at its bound or
        the disk is full (both counted). A critical event is never dropped: if
        the disk is full it waits in memory and is stored, in order, as soon as
        an ack or a later append finds room.
        """
        kind = EventKind(kind)
        fields = dict(fields or {})
        clash = _RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"event field {sorted(clash)[0]!r} is reserved for the event envelope")
        item = _Pending(kind, source, fields, int(ts), int(mono_ms), bool(clock_synced), boot_id)
        item.numbered(1, self.epoch).to_payload()  # raises EncodeError now rather than poison the outbox later
        critical = kind in CRITICAL_KINDS
        with self._lock:
            db = self._conn()
            self._store_waiting(db)
            if not critical and (self._pending or self._disk_full):
                # The disk is full, or was: others are shed, so that the room
                # left goes to the events that must not be lost.
                self._counters["disk_full"] += 1
                if not self._pending:  # numbering one ahead of those waiting would reorder them
                    self._number_gone()
                self._report_disk_full(db, item)
                return None
            if self._pending:
                # Still no room: critical events queue up behind those waiting, in order.
                self._pending.append(item)
                self._report_disk_full(db, item)
                return None
            if self._depth >= self.max_events and not critical:
                self._counters["dropped"] += 1
                self._number_gone()
                if not self._full_reported:
                    # One row past the bound: the only way central learns of the drops.
                    self._full_reported = True
                    _LOGGER.warning("outbox %s is full (%d events): dropping non-critical events", self.path, self._depth)
                    detail = f"{self._depth} events unacknowledged; only alarms, panics, tampers and scans are kept"
                    self._insert(db, [self._fault(item, FaultCode.OUTBOX_FULL, detail)])
                return None
            batch = [item]
            batch.extend(self._take_disk_fault(item))
            if not self._filling_reported and self._depth + 1 >= self.warn_level:
                self._filling_reported = True
                batch.append(self._fault(item, FaultCode.OUTBOX_FILLING,
                                         f"{self._depth + 1} of {self.max_events} events unacknowledged"))
                _LOGGER.warning("outbox %s is filling: %d of %d events", self.path, self._depth + 1, self.max_events)
            stored = self._insert(db, batch)
            return stored[0] if stored else None

    def _number_gone(self) -> None:
        """A dropped event takes the next eseq, recorded gone (on the disk with the next write)."""
        eseq = self._last + 1
        if self._gone and self._gone[-1][1] == self._last:
            self._gone[-1][1] = eseq
        elif len(self._gone) >= GONE_KEPT_MAX:
            self._counters["gone_unnumbered"] += 1
            return
        else:
            self._gone.append([eseq, eseq])
        self._last = eseq
        self._gone_dirty = True
        self._counters["gone"] += 1

    def _save_gone(self, db: sqlite3.Connection) -> None:
        """Inside a transaction: the top gone range and the numbering that covers it."""
        if self._gone_dirty and self._gone:
            db.execute("INSERT OR REPLACE INTO gone(low, high) VALUES (?, ?)", tuple(self._gone[-1]))
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_eseq'", (self._last,))

    def _fault(self, cause: _Pending, code: str, detail: str) -> _Pending:
        return _Pending(EventKind.FAULT, OUTBOX_SOURCE, {"code": code, "detail": detail},
                        cause.ts, cause.mono_ms, cause.clock_synced, cause.boot_id)

    def _take_disk_fault(self, cause: _Pending) -> list[_Pending]:
        """The episode's one ``disk-full`` fault, stamped like the event that met it, if not sent yet."""
        if not self._disk_fault_due:
            return []
        self._disk_fault_due = False
        return [self._fault(cause, FaultCode.DISK_FULL, DISK_FULL_DETAIL)]

    def _report_disk_full(self, db: sqlite3.Connection, cause: _Pending) -> None:
        """Store the episode's fault (or queue it behind the events waiting for room)."""
        fault = self._take_disk_fault(cause)
        if fault and self._pending:
            self._pending.extend(fault)
        elif fault:
            self._insert(db, fault)

    def _enter_disk_full(self, why: str) -> None:
        self._disk_full = True
        self._disk_fault_due = True
        self._counters["disk_full_episodes"] += 1
        _LOGGER.error("outbox %s: %s; only alarms, panics, tampers and scans are stored until it has room",
                      self.path, why)

    def _make_room(self, db: sqlite3.Connection) -> bool:
        """Give back the reserve and truncate the WAL; True when either freed anything."""
        released = self._reserve.release()
        if released:
            _LOGGER.warning("outbox %s: disk full; released the %d bytes set aside for it", self.path, self._reserve.size)
        wal = self.path.with_name(self.path.name + "-wal")
        before = _size(wal)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as exc:
            _LOGGER.debug("outbox %s: checkpoint on a full disk failed: %s", self.path, exc)
        return released or _size(wal) < before

    def _write(self, db: sqlite3.Connection, events: list[Event]) -> None:
        with self._transaction(db):
            self._save_gone(db)
            db.executemany(
                "INSERT INTO events(eseq, kind, source, ts, mono_ms, clock_synced, boot_id, fields)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.eseq, str(e.kind), e.source, e.ts, e.mono_ms, int(e.clock_synced), e.boot_id,
                  pack(dict(e.fields))) for e in events],
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_eseq'", (events[-1].eseq,))
        self._gone_dirty = False

    def _insert(self, db: sqlite3.Connection, batch: list[_Pending]) -> list[Event]:
        """Store ``batch`` in one transaction; on a full disk make room once, else keep what must not be lost."""
        made_room = False
        while True:
            first = self._last + 1
            events = [item.numbered(first + i, self.epoch) for i, item in enumerate(batch)]
            try:
                self._write(db, events)
                break
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                if not self._disk_full:
                    self._enter_disk_full("the disk is full")
                batch = [*batch, *self._take_disk_fault(batch[0])]
                if not made_room and self._make_room(db):
                    made_room = True
                    continue
            kept = [item for item in batch if _must_keep(item)]
            self._counters["disk_full"] += len(batch) - len(kept)
            self._pending.extend(kept)
            if kept and len(self._pending) in (len(kept), PENDING_CRITICAL_WARN):
                _LOGGER.error("outbox %s: disk full; %d critical events wait in memory", self.path, len(self._pending))
            return []
        self._last = events[-1].eseq
        self._depth += len(events)
        self._counters["appended"] += len(events)
        return events

    def _store_waiting(self, db: sqlite3.Connection) -> None:
        """Store critical events that met a full disk, oldest first, while space allows."""
        made_room = False
        while self._pending:
            event = self._pending[0].numbered(self._last + 1, self.epoch)
            try:
                self._write(db, [event])
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                if not made_room and self._make_room(db):
                    made_room = True
                    continue
                return
            self._pending.popleft()
            self._last = event.eseq
            self._depth += 1
            self._counters["appended"] += 1
            _LOGGER.info("outbox %s: stored waiting %s event from %s as eseq %d", self.path, event.kind, event.source, event.eseq)

    def ack(self, eseq: int, epoch: str | None = None) -> int:
        """Central holds everything up to ``eseq``: delete those rows; returns how many.

        An ack of another ``epoch`` (None: this one) speaks of another
        outbox's numbers: counted and ignored. An ack beyond the last eseq is
        counted, logged and clamped: numbering never jumps to what an ack says.
        """
        with self._lock:
            db = self._conn()
            if epoch is not None and epoch != self.epoch:
                self._counters["acks_other_epoch"] += 1
                return 0
            if eseq <= self._acked:
                return 0
            if eseq > self._last:
                self._counters["acks_ahead"] += 1
                _LOGGER.warning("outbox %s: ack of eseq %d is beyond the last eseq %d", self.path, eseq, self._last)
                eseq = self._last
                if eseq <= self._acked:
                    return 0
            try:
                deleted = self._delete_acked(db, eseq)
            except sqlite3.OperationalError as exc:
                # Not even a deletion fits on a full disk (it goes to the WAL
                # first): make room, or the outbox could never shrink again.
                if not _is_disk_full(exc):
                    raise
                if not self._disk_full:
                    self._enter_disk_full("the disk is full")
                if not self._make_room(db):
                    raise
                deleted = self._delete_acked(db, eseq)
            self._acked = eseq
            self._depth -= deleted
            while self._gone and self._gone[0][1] <= eseq:
                self._gone.pop(0)
            if self._depth < self._rearm_level:
                self._filling_reported = False
                self._full_reported = False
            if self._disk_full and self._reserve.take():
                self._disk_full = False
                self._disk_fault_due = False
                _LOGGER.warning("outbox %s: the disk has room again; every kind of event is stored", self.path)
            self._store_waiting(db)
            return deleted

    def _delete_acked(self, db: sqlite3.Connection, eseq: int) -> int:
        with self._transaction(db):
            self._save_gone(db)
            deleted = int(db.execute("DELETE FROM events WHERE eseq <= ?", (eseq,)).rowcount)
            db.execute("DELETE FROM gone WHERE high <= ?", (eseq,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'acked_eseq'", (eseq,))
        self._gone_dirty = False
        return deleted

    def history(self, from_eseq: int = 1) -> tuple[int, tuple[tuple[int, int], ...]]:
        """``(last, gone)`` for central's ``replay`` from ``from_eseq``: the highest eseq made
        in this epoch, and the ranges from ``from_eseq`` on that are gone (the lowest
        :data:`~wire.messages.GONE_MAX_RANGES`). Both are on the disk first, so a
        restart can never number again what central was told is gone.
        """
        with self._lock:
            db = self._conn()
            if self._gone_dirty:
                with self._transaction(db):
                    self._save_gone(db)
                self._gone_dirty = False
            gone = [(max(low, from_eseq), high) for low, high in self._gone if high >= from_eseq]
            return self._last, tuple(gone[:GONE_MAX_RANGES])

    @property
    def gone(self) -> tuple[tuple[int, int], ...]:
        """Every gone range above the ack, ascending."""
        with self._lock:
            return tuple((low, high) for low, high in self._gone)

    def unacked(self, from_eseq: int = 1, limit: int = READ_LIMIT) -> list[Event]:
        """Stored events from ``from_eseq`` on, in eseq order, at most ``limit``."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT eseq, kind, source, ts, mono_ms, clock_synced, boot_id, fields FROM events"
                " WHERE eseq >= ? ORDER BY eseq LIMIT ?",
                (max(from_eseq, self._acked + 1), limit),
            ).fetchall()
        return [self._row_event(row) for row in rows]

    def get_many(self, eseqs: Iterable[int]) -> dict[int, Event]:
        """The stored events among ``eseqs`` (acked ones are simply absent)."""
        wanted = sorted(set(eseqs))
        if not wanted:
            return {}
        found: dict[int, Event] = {}
        # The publisher asks for runs of neighbours: one range scan per run.
        runs: list[tuple[int, int]] = []
        for e in wanted:
            if runs and e == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], e)
            else:
                runs.append((e, e))
        with self._lock:
            db = self._conn()
            for low, high in runs:
                for row in db.execute(
                    "SELECT eseq, kind, source, ts, mono_ms, clock_synced, boot_id, fields FROM events"
                    " WHERE eseq BETWEEN ? AND ?", (low, high),
                ):
                    found[row[0]] = self._row_event(row)
        return found

    def _row_event(self, row: tuple[Any, ...]) -> Event:
        eseq, kind, source, ts, mono_ms, synced, boot_id, fields = row
        return Event(eseq=eseq, boot_id=boot_id, kind=EventKind(kind), source=source, ts=ts,
                     mono_ms=mono_ms, clock_synced=bool(synced), fields=unpack(fields) if fields else {},
                     epoch=self.epoch)

    def next_bdseq(self) -> int:
        """Increase and persist the birth/death sequence; call before every connect."""
        with self._lock:
            db = self._conn()
            try:
                with self._transaction(db):
                    db.execute("UPDATE meta SET value = ? WHERE key = 'bdseq'", (self._bdseq + 1,))
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                # A full disk must not keep the agent off the broker: that is
                # when its backlog most needs to drain. The number may repeat
                # after a restart; a Will that old is rare, and harmless next
                # to not connecting at all.
                self._counters["bdseq_unsaved"] += 1
                _LOGGER.warning("outbox %s: disk full; bdseq %d not saved", self.path, self._bdseq + 1)
            self._bdseq += 1
            return self._bdseq

    def integrity_ok(self) -> bool:
        with self._lock:
            rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return rows == [("ok",)]

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            if self._pending:
                _LOGGER.error("outbox %s closes with %d critical events that never found disk space",
                              self.path, len(self._pending))
            if self._gone_dirty:
                try:
                    with self._transaction(self._db):
                        self._save_gone(self._db)
                except sqlite3.Error as exc:
                    # Harmless: those eseqs were never sent, so the next start may number them again.
                    _LOGGER.warning("outbox %s: gone eseqs up to %d not saved: %s", self.path, self._last, exc)
            try:
                self._db.close()
            finally:
                self._db = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_outbox(path: Path, **kwargs: Any) -> tuple[Outbox, Path | None]:
    """The outbox at ``path``; one SQLite cannot read is moved aside (returned) and a new one, a new epoch, begun.

    An agent without an outbox has no siren and no panic button, and a new
    outbox is a new epoch that central tells apart from the old one, so a
    broken file no longer keeps the agent down. The old file is kept for
    whoever wants to look into it.
    """
    path = Path(path)
    try:
        return Outbox(path, **kwargs), None
    except OutboxUnreadable as exc:
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                source.rename(aside.with_name(aside.name + suffix))
        _LOGGER.error("%s; moved to %s, and a new outbox (a new epoch) is started", exc, aside)
    return Outbox(path, **kwargs), aside
