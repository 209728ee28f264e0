"""Central's store: the one owner of every table and every connection.

Nothing else in central speaks SQL. :func:`open_store` turns ``[store] url``
into a :class:`Store`; the modules here hold the statements, grouped by the
tables they touch:

- :mod:`central.store.sqlite`: the connection policy (WAL, synchronous, busy
  timeout, read-only opening) and the transaction helper;
- :mod:`central.store.schema`: the schema version and its migrations;
- :mod:`central.store.events`: events, agents, counters, lost ranges (ingest);
- :mod:`central.store.alarms`: alarms and their steps (the alarm book);
- :mod:`central.store.quarantine`: messages that could not be stored;
- :mod:`central.store.users`: staff accounts;
- :mod:`central.store.dashboard`: the dashboard's read-only queries.
"""

from __future__ import annotations

from pathlib import Path

from central.store.errors import StoreError
from central.store.events import INT64_MAX, AgentRow, Store, StoredEvent

__all__ = ["INT64_MAX", "AgentRow", "Store", "StoreError", "StoredEvent", "open_store"]


def open_store(url: str | Path) -> Store:
    """The store behind ``url``: ``sqlite:///ABS/PATH`` (or a plain path)."""
    text = str(url)
    if text.startswith("sqlite://"):
        return Store(Path(text[len("sqlite://"):]))
    if "://" in text:
        raise StoreError(f"store url {text!r}: only sqlite:// is supported by this version")
    return Store(Path(text))
