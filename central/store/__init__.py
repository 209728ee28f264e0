"""Central's store: the one owner of every table and every connection.

Nothing else in central speaks SQL. :func:`open_store` turns ``[store] url``
into a :class:`Store`; the modules here hold the statements, grouped by the
tables they touch:

- :mod:`central.store.sqlite`: SQLite's connection policy (WAL, synchronous,
  busy timeout, read-only opening), the default;
- :mod:`central.store.postgres`: PostgreSQL's (psycopg 3, a pool of readers),
  for a store shared by several centrals;
- :mod:`central.store.dialect`: the few statements that differ between the
  two, and the transaction helper;
- :mod:`central.store.schema`: the schema version and its migrations;
- :mod:`central.store.events`: events, agents, counters, lost ranges (ingest);
- :mod:`central.store.alarms`: alarms and their steps (the alarm book);
- :mod:`central.store.quarantine`: messages that could not be stored;
- :mod:`central.store.users`: staff accounts;
- :mod:`central.store.dashboard`: the dashboard's read-only queries;
- :mod:`central.store.transfer`: a SQLite store copied into PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from central.store import sqlite
from central.store.dialect import Connection, dialect_of, transaction
from central.store.errors import StoreError
from central.store.events import INT64_MAX, AgentRow, Store, StoredEvent

__all__ = ["INT64_MAX", "AgentRow", "Connection", "Store", "StoreError", "StoredEvent", "dialect_of", "open_store",
           "transaction"]

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str | Path) -> Store:
    """The store behind ``url``: ``sqlite:///ABS/PATH`` (or a plain path), or ``postgresql://USER@HOST/DB``."""
    text = str(url)
    if text.startswith("sqlite://"):
        # sqlite:////abs (SQLAlchemy's spelling) is the same file as sqlite:///abs; a path that kept
        # the double slash would make SQLite read "//abs" as a URI authority.
        return Store(Path("/" + text[len("sqlite://"):].lstrip("/")))
    if text.startswith(POSTGRESQL_SCHEMES):
        try:
            from central.store import postgres
        except ImportError as exc:
            raise StoreError("a postgresql:// store needs psycopg: pip install 'gridpatrol[central]'") from exc
        return Store(backend=postgres.Backend(text))
    if "://" in text:
        raise StoreError(f"store url {text!r}: expected sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB")
    return Store(backend=sqlite.Backend(Path(text)))
