"""The connection policy for a SQLite store (the default: one file beside central).

Every connection to the store file is made here, with the same settings:
WAL (readers never block the writer), ``synchronous = FULL`` on writers
(central acks an event only after the commit, and an ack makes the agent
delete its copy, so a commit must survive a power cut), a busy timeout, and
read-only connections opened read-only by URI so that a reader cannot write
even by mistake.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from central.store.dialect import transaction  # noqa: F401  (moved to dialect.py, which serves both engines)
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


class Backend:
    """Where a SQLite store is (one file) and how to connect to it."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"

    @property
    def name(self) -> str:
        return str(self.path)

    def connect(self, *, readonly: bool = False, check_same_thread: bool = True) -> sqlite3.Connection:
        return connect(self.path, readonly=readonly, check_same_thread=check_same_thread)

    def exists(self) -> bool:
        return self.path.exists()

    def close(self) -> None:
        """Nothing held between connections."""
