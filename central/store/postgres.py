"""The connection policy for a PostgreSQL store (psycopg 3, its pool for short readers).

The store's modules speak the part of DB-API that sqlite3 and psycopg share,
with SQLite's ``?`` placeholders; :class:`Connection` is that part over a
psycopg connection, and nothing more: ``execute`` (``?`` becomes ``%s``),
``executemany``, ``in_transaction``, ``close`` and the context manager that
commits. Statements that differ between the engines are not rewritten here:
they live in :mod:`central.store.dialect`, one object per engine.

Connections are in autocommit mode, as sqlite3's with ``isolation_level=None``:
transactions are explicit (``BEGIN`` ... ``COMMIT``), never opened behind the
caller's back. Long-lived writers (ingest, the alarm book) get a connection
of their own; short readers (the dashboard, the command line) borrow one from
a small pool, opened on first use, which sets every session read-only.
"""

from __future__ import annotations

import threading
import weakref
from functools import lru_cache
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg_pool import ConnectionPool

from central.store.errors import StoreError

CONNECT_TIMEOUT_S = 5
# A statement that waits this long on a lock fails, as SQLite's busy timeout does.
LOCK_TIMEOUT_MS = 5000
READERS_MAX = 8


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled).

    The store's statements never hold a ``?`` inside a string literal.
    """
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """The part of ``sqlite3.Connection`` that the store's modules use, over a psycopg connection."""

    def __init__(self, raw: psycopg.Connection[Any], *, pool: ConnectionPool | None = None) -> None:
        self.raw = raw
        self._pool = pool

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        if not params:
            return self.raw.execute(sql)  # no parameters: psycopg takes the text as it is
        return self.raw.execute(to_pyformat(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(to_pyformat(sql), list(rows))
        return cur

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.putconn(self.raw)  # rolled back and made ready by the pool
        else:
            self.raw.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        """As sqlite3's: commit an open transaction, or roll it back on an exception."""
        if self.in_transaction:
            self.execute("ROLLBACK" if exc is not None else "COMMIT")


def _configure(conn: psycopg.Connection[Any], *, readonly: bool) -> None:
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    if readonly:
        conn.execute("SET default_transaction_read_only = on")


def shown(url: str) -> str:
    """The URL without a password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Backend:
    """Where a PostgreSQL store is and how to connect to it."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    @property
    def name(self) -> str:
        return shown(self.url)

    def connect(self, *, readonly: bool = False) -> Connection:
        if readonly:
            pool = self._readers()
            try:
                raw = pool.getconn()
            except psycopg.Error as exc:
                raise StoreError(f"store {self.name}: {exc}") from exc
            return Connection(raw, pool=pool)
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.name}: {_first_line(exc)}") from exc
        try:
            _configure(raw, readonly=False)
        except BaseException:
            raw.close()
            raise
        return Connection(raw)

    def _readers(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                try:
                    # Fails here, not on first use, when the server cannot be reached.
                    psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S).close()
                except psycopg.Error as exc:
                    raise StoreError(f"store {self.name}: {_first_line(exc)}") from exc
                pool = ConnectionPool(self.url, min_size=1, max_size=READERS_MAX, open=True, timeout=CONNECT_TIMEOUT_S,
                                      kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                                      configure=lambda c: _configure(c, readonly=True), name="gridpatrol-readers")
                weakref.finalize(self, pool.close)
                self._pool = pool
            return self._pool

    def exists(self) -> bool:
        """The database exists (its tables are the migrations' business); a server that does not answer is a
        :class:`StoreError`, not an empty store."""
        try:
            psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.errors.InvalidCatalogName:
            return False
        except psycopg.Error as exc:
            if "does not exist" in str(exc) and "database" in str(exc):  # libpq's text when the server says so
                return False
            raise StoreError(f"store {self.name}: {_first_line(exc)}") from exc
        return True

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
