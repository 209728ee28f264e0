"""A group's feed on PostgreSQL: ``NOTIFY`` what was committed, ``LISTEN`` for what the others committed.

The members of a group (docs/scaling.md) each store a share of the agents'
events. So that each member learns of the others' without polling the events
table, ingest sends a notification inside the transaction that stores a
batch: PostgreSQL delivers it to every listening session when, and only when,
that transaction commits, and never delivers one of a transaction rolled
back. The payload is small (who sent it and the eseq ranges it stored); the
receiver reads the rows itself. See :mod:`central.feed` for the rest.

Only the SQL is here: the channel's name, the ``pg_notify`` call, and a
listening connection of its own (psycopg delivers notifications only to the
session that listens, and only while nothing else runs on it).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from central.store.errors import StoreError

if TYPE_CHECKING:
    from central.store.events import Store

# PostgreSQL refuses a payload of 8000 bytes or more; stay clear of it.
PAYLOAD_MAX = 7900
CONNECT_TIMEOUT_S = 5
# A listening connection sends nothing for long stretches: TCP keepalives find a server that
# vanished (its machine, or the network) within about 25 s, and the feed connects again.
_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                               "keepalives_count": 3}


def channel(group: str) -> str:
    """The notification channel of ``group``: a plain identifier, one per group (groups may share a database)."""
    return "gridpatrol_feed_" + hashlib.blake2b(group.encode(), digest_size=8).hexdigest()


def announce(conn: Any, channel_name: str, payload: str) -> None:
    """Send ``payload`` on ``channel_name``; inside a transaction, it is delivered when that commits.

    ``pg_notify`` writes no table, so a read-only session may send it too.
    """
    if len(payload.encode()) > PAYLOAD_MAX:
        raise ValueError(f"a feed payload of {len(payload.encode())} bytes is over {PAYLOAD_MAX}")
    conn.execute("SELECT pg_notify(?, ?)", (channel_name, payload))


class Listening:
    """A connection of its own that listens on one channel; only :meth:`receive` may use it."""

    def __init__(self, store: Store, channel_name: str) -> None:
        from central.store import postgres  # psycopg is needed only for PostgreSQL

        backend = store.backend
        if not isinstance(backend, postgres.Backend):
            raise StoreError(f"store {store.name}: a group's feed needs PostgreSQL")
        import psycopg

        try:
            self._raw = psycopg.connect(backend.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **_KEEPALIVES)
        except psycopg.Error as exc:
            raise StoreError(f"store {store.name}: {exc}") from exc
        try:
            self._raw.execute(f'LISTEN "{channel_name}"')  # channel() makes [a-z0-9_] only
        except BaseException:
            self._raw.close()
            raise

    def receive(self, timeout: float, limit: int) -> list[tuple[int, str]]:
        """``(sender's backend pid, payload)``: waits up to ``timeout`` s for the first notification, then takes
        what has arrived with it, about ``limit`` at most, and returns at once."""
        got = [(n.pid, n.payload) for n in self._raw.notifies(timeout=timeout, stop_after=1)]
        if got:
            got += [(n.pid, n.payload) for n in self._raw.notifies(timeout=0, stop_after=limit)]
        return got

    def close(self) -> None:
        self._raw.close()
