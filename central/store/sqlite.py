"""The one connection policy for central's SQLite store.

Every connection to the store file is made here, with the same settings:
WAL (readers never block the writer), ``synchronous = FULL`` on writers
(central acks an event only after the commit, and an ack makes the agent
delete its copy, so a commit must survive a power cut), a busy timeout, and
read-only connections opened read-only by URI so that a reader cannot write
even by mistake.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from central.store.errors import StoreError

BUSY_TIMEOUT_S = 5.0


def connect(path: Path, *, readonly: bool = False, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection with the store's settings; the file must exist for a reader.

    Writers get ``isolation_level=None``: transactions are explicit, through
    :func:`transaction`, never opened behind the caller's back.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"store {path} does not exist (has `gridpatrol central` run?)")
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=check_same_thread)
        conn.execute("PRAGMA query_only = ON")
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock at the start, so a transaction that reads
    and then writes never fails half-way with SQLITE_BUSY on the upgrade.
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
