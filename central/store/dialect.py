"""The few statements that differ between SQLite and PostgreSQL, one object per engine.

Everything else the store says is in the SQL both engines speak (``ON
CONFLICT ... DO UPDATE``, ``RETURNING``, row values, ``SAVEPOINT``), written
once in the modules that own the tables. What is left is here:

- how a write transaction begins (SQLite: ``BEGIN IMMEDIATE``, which takes
  the write lock at once; PostgreSQL locks rows as it goes);
- the schema's types (:meth:`Dialect.ddl`: one migration text for both);
- whether a table exists, and how a text column's JSON is read;
- the batch insert of events, which is the hot path and is fast in a
  different way on each (SQLite: many rows to a statement and a row count;
  PostgreSQL: ``ON CONFLICT DO NOTHING RETURNING`` the keys it inserted).

:func:`dialect_of` finds the dialect of a connection, so the modules' functions
keep taking just the connection.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Protocol


class Connection(Protocol):
    """What the store's modules are given: ``sqlite3.Connection``, or :class:`central.store.postgres.Connection`."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    begin: str  # the statement that opens a write transaction
    # Tokens in the migrations' DDL: {ID} a primary key that numbers itself,
    # {BLOB} raw bytes, {WITHOUT_ROWID} SQLite's clustered tables, {ROWID} the
    # insertion order a table is read back in (SQLite has one on every table).
    tokens: Mapping[str, str]
    wide_integers: bool  # INTEGER must be widened to 64 bits

    def ddl(self, text: str) -> str:
        text = text.format(**self.tokens)
        if self.wide_integers:
            # SQLite's INTEGER holds 64 bits; PostgreSQL's 32 (an eseq goes to 2**63 - 1).
            text = re.sub(r"\bINTEGER\b", "BIGINT", text)
        return text

    def has_table(self, conn: Any, table: str) -> bool:
        if self.name == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        return conn.execute(sql, (table,)).fetchone() is not None

    def json_string(self, column: str, key: str) -> str:
        """An expression: the string at ``key`` of the JSON text in ``column``, else NULL."""
        if self.name == "sqlite":
            return (f"CASE WHEN json_valid({column}) AND json_type({column}, '$.{key}') = 'text'"
                    f" THEN json_extract({column}, '$.{key}') END")
        # Every row's fields were written by the store as JSON text (SQLite keeps the first round's too).
        return f"CASE WHEN json_typeof({column}::json -> '{key}') = 'string' THEN {column}::json ->> '{key}' END"

    def by_name(self, conn: Any, sql: str, params: Any = ()) -> Any:
        """Execute ``sql``; its rows can be read by column name (``row["agent"]``, ``dict(row)``)."""
        if self.name == "sqlite":
            cur = conn.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, params)
        from psycopg.rows import dict_row

        from central.store.postgres import to_pyformat

        return conn.raw.cursor(row_factory=dict_row).execute(to_pyformat(sql) if params else sql, params or None)

    def lock_schema(self, conn: Any) -> None:
        """Inside a migration's transaction: one migrating process at a time."""
        if self.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already is that lock
            conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    def lock_names(self, conn: Any, names: Iterable[str]) -> None:
        """Inside a transaction: hold a lock on each name until it ends (taken in sorted order).

        Several centrals on one PostgreSQL store decide "is this input's alarm
        open?" and then write; the lock makes that one step per name. SQLite
        needs none: BEGIN IMMEDIATE already lets one writer in at a time.
        """
        if self.name == "postgresql":
            for name in sorted(set(names)):
                conn.execute("SELECT pg_advisory_xact_lock(?)", (name_key(name),))


def name_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


SCHEMA_LOCK = 0x67705F73636865  # "gp_sche": the advisory lock key of migrations

SQLITE = Dialect(
    name="sqlite", begin="BEGIN IMMEDIATE",
    tokens={"ID": "INTEGER PRIMARY KEY", "BLOB": "BLOB", "WITHOUT_ROWID": "WITHOUT ROWID", "ROWID": ""},
    wide_integers=False,
)
POSTGRESQL = Dialect(
    name="postgresql", begin="BEGIN",
    tokens={"ID": "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BLOB": "BYTEA", "WITHOUT_ROWID": "",
            "ROWID": "rowid INTEGER GENERATED ALWAYS AS IDENTITY,"},
    wide_integers=True,
)


def dialect_of(conn: Any) -> Dialect:
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    from central.store.postgres import Connection as PgConnection  # psycopg is needed only for PostgreSQL

    if isinstance(conn, PgConnection):
        return POSTGRESQL
    raise TypeError(f"{conn!r} is not a store connection")


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """A write transaction on either engine: begun as its dialect says, rolled back on any exception."""
    conn.execute(dialect_of(conn).begin)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
