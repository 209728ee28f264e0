"""What the agent must remember across a restart besides its events: latched panics and answered commands.

``<data_dir>/memory.db``, SQLite like the outbox (WAL, ``synchronous =
FULL``), a file of its own so that the outbox stays the events' alone.

- **Latches**: a panic latched by a button with an indicator, by source, with
  the eseq and time of the panic. After a restart the runtime lights the
  indicator again and keeps it lit until central's ``alarm-ack``: the control
  room's alarm is still open, and the person who pressed must not see a dark
  lamp and think nobody came.
- **Answered commands**: the last :data:`TXNS_KEPT` command txns with the
  answer given (the ``cmd/resp`` payload), so a command that comes again (a
  broker's redelivery, central asking again) is answered again, the same
  way, and not acted on twice.

Nothing here is worth keeping the agent down for: a file SQLite cannot read
is moved aside and begun again (logged), and a write that fails (a full disk)
is logged and counted, and what it held stays in memory for this run.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

TXNS_KEPT = 256
BUSY_TIMEOUT_MS = 5_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS latches(
    source TEXT PRIMARY KEY,
    eseq INTEGER,
    ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS answers(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn TEXT NOT NULL UNIQUE,
    response BLOB NOT NULL
);
"""
_UNREADABLE_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


@dataclass(frozen=True, slots=True)
class Latch:
    """A latched panic: the button's name, and the eseq (None if it could not be stored) and UTC ms of the panic."""

    source: str
    eseq: int | None
    ts: int


class Memory:
    """Latched panics and answered command txns, on the disk. Thread-safe."""

    def __init__(self, path: Path, *, txns_kept: int = TXNS_KEPT) -> None:
        if txns_kept < 1:
            raise ValueError(f"txns_kept must be at least 1, not {txns_kept}")
        self.path = Path(path)
        self.txns_kept = txns_kept
        self._lock = threading.Lock()
        self.counters = {"memory_write_failures": 0}
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _UNREADABLE_CODES:
                raise
            aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            for suffix in ("", "-wal", "-shm"):
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    source.rename(aside.with_name(aside.name + suffix))
            _LOGGER.error("%s: cannot be read (%s); moved to %s: latches and answered commands start empty",
                          self.path, exc, aside)
            self._db = self._connect()
        self._latches = {source: Latch(source, eseq, ts) for source, eseq, ts in
                         self._db.execute("SELECT source, eseq, ts FROM latches")}
        self._answers: dict[str, bytes] = {txn: bytes(response) for txn, response in self._db.execute(
            "SELECT txn, response FROM (SELECT seq, txn, response FROM answers ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (txns_kept,))}  # oldest first: the first to go

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _write(self, what: str, *statements: tuple[str, tuple[object, ...]]) -> bool:
        """Run ``statements`` in one transaction; False (logged, counted) when the disk would not take them."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.counters["memory_write_failures"] += 1
            _LOGGER.error("%s: %s not saved (kept for this run only): %s", self.path, what, exc)
            return False
        return True

    # -- latched panics ---------------------------------------------------------------

    def latches(self) -> dict[str, Latch]:
        with self._lock:
            return dict(self._latches)

    def latch(self, source: str, eseq: int | None, ts: int) -> None:
        """A panic of ``source`` is latched (again: the newest panic is the one kept)."""
        with self._lock:
            self._latches[source] = Latch(source, eseq, ts)
            self._write(f"the latch of {source}",
                        ("INSERT OR REPLACE INTO latches(source, eseq, ts) VALUES (?, ?, ?)", (source, eseq, ts)))

    def release(self, source: str) -> bool:
        """Central acknowledged the panic of ``source``: forget the latch. True if there was one."""
        with self._lock:
            was = self._latches.pop(source, None) is not None
            self._write(f"the release of {source}", ("DELETE FROM latches WHERE source = ?", (source,)))
            return was

    # -- answered commands --------------------------------------------------------------

    def answer(self, txn: str) -> bytes | None:
        """The ``cmd/resp`` payload given to ``txn`` before, or None if it is new."""
        with self._lock:
            return self._answers.get(txn)

    def answered(self, txn: str, response: bytes) -> None:
        """Remember the answer to ``txn``; only the newest :attr:`txns_kept` are kept."""
        with self._lock:
            if txn in self._answers:
                return
            self._answers[txn] = response
            while len(self._answers) > self.txns_kept:
                self._answers.pop(next(iter(self._answers)))
            self._write(f"the answer to txn {txn!r}",
                        ("INSERT OR IGNORE INTO answers(txn, response) VALUES (?, ?)", (txn, response)),
                        ("DELETE FROM answers WHERE seq <= (SELECT max(seq) FROM answers) - ?", (self.txns_kept,)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
