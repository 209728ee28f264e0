"""The store's schema, its version, and the migrations between versions.

``schema_version`` holds one row, the version the tables are at. A store made
by the first round of Gridpatrol has no such table: it is version 0, and the
first migration adopts it (its tables are created only where missing). Each
migration runs in its own transaction with the version bump, so a crash
leaves the store at one version or the next, never in between. Central runs
:func:`migrate` on start; ``gridpatrol central migrate`` runs it alone.

A store newer than this code is refused rather than used: an older central
would not know what the newer tables mean.
"""

from __future__ import annotations

import logging
from typing import Callable

from central.store.dialect import Connection, dialect_of, transaction
from central.store.errors import StoreError

_LOGGER = logging.getLogger(__name__)

# -- version 1: the tables as the first round made them ---------------------------

_V1 = """
CREATE TABLE IF NOT EXISTS events(
    agent TEXT NOT NULL,
    eseq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    ts INTEGER NOT NULL,
    ts_est INTEGER NOT NULL,
    ts_estimated INTEGER NOT NULL,
    mono_ms INTEGER NOT NULL,
    clock_synced INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    fields TEXT NOT NULL,
    unplanned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(agent, eseq)
) {WITHOUT_ROWID};
CREATE TABLE IF NOT EXISTS agents(
    agent TEXT PRIMARY KEY,
    state TEXT,
    bdseq INTEGER,
    boot_id TEXT,
    last_seen INTEGER,
    acked_eseq INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER,
    birth TEXT,
    tele TEXT,
    snapshot TEXT,
    flags TEXT
);
CREATE TABLE IF NOT EXISTS counters(
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms(
    id {ID},
    agent TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    unit TEXT,
    state TEXT NOT NULL,
    raised_ts INTEGER NOT NULL,
    acked_by TEXT,
    acked_ts INTEGER,
    escalated_to TEXT,
    event_eseq INTEGER,
    restored INTEGER NOT NULL DEFAULT 0,
    notified INTEGER NOT NULL DEFAULT 0,
    ack_txn TEXT
);
CREATE TABLE IF NOT EXISTS alarm_steps(
    {ROWID}
    alarm_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    unit TEXT,
    tier TEXT,
    action TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
"""


def _v1(conn: Connection) -> None:
    for statement in dialect_of(conn).ddl(_V1).split(";"):
        if statement.strip():
            conn.execute(statement)


# -- version 2: epochs, quarantine, lost ranges, alarm details ----------------------

_V2_EVENTS = """
CREATE TABLE events_v2(
    agent TEXT NOT NULL,
    epoch TEXT NOT NULL,            -- the agent's outbox generation ('' for agents that predate epochs)
    eseq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    ts INTEGER NOT NULL,            -- as the agent said (UTC ms)
    ts_est INTEGER NOT NULL,        -- central's estimate of when it really happened
    ts_estimated INTEGER NOT NULL,  -- 1 when ts_est is not the agent's synced clock
    mono_ms INTEGER NOT NULL,
    clock_synced INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    fields TEXT NOT NULL,           -- JSON: the kind's own keys
    unplanned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(agent, epoch, eseq)
) {WITHOUT_ROWID}
"""

_V2_REST = """
CREATE INDEX events_kind_ts_est ON events(kind, ts_est);
CREATE INDEX events_received_ts ON events(received_ts);
CREATE INDEX events_ts ON events(ts);
ALTER TABLE agents ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
ALTER TABLE alarms ADD COLUMN event_epoch TEXT;
ALTER TABLE alarm_steps ADD COLUMN detail TEXT;
CREATE INDEX IF NOT EXISTS alarms_open ON alarms(state, agent, source);
CREATE INDEX IF NOT EXISTS alarm_steps_alarm ON alarm_steps(alarm_id);
CREATE TABLE quarantine(
    id {ID},
    agent TEXT,
    topic TEXT NOT NULL,
    payload {BLOB} NOT NULL,          -- the message as it came, byte for byte
    reason TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    epoch TEXT,
    eseq INTEGER
);
CREATE INDEX quarantine_agent ON quarantine(agent, epoch, eseq);
CREATE TABLE lost(
    agent TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first INTEGER NOT NULL,         -- eseqs covered with no row in events
    last INTEGER NOT NULL,
    recorded_ts INTEGER NOT NULL,
    reason TEXT NOT NULL,           -- gone: the agent said so | quarantined: kept raw, acked past
    PRIMARY KEY(agent, epoch, first)
) {WITHOUT_ROWID}
"""


def _v2(conn: Connection) -> None:
    dialect = dialect_of(conn)
    conn.execute(dialect.ddl(_V2_EVENTS))
    conn.execute(
        "INSERT INTO events_v2(agent, epoch, eseq, boot_id, kind, source, ts, ts_est, ts_estimated, mono_ms,"
        " clock_synced, replayed, received_ts, fields, unplanned) SELECT agent, '', eseq, boot_id, kind, source, ts,"
        " ts_est, ts_estimated, mono_ms, clock_synced, replayed, received_ts, fields, unplanned FROM events")
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_v2 RENAME TO events")
    for statement in dialect.ddl(_V2_REST).split(";"):
        if statement.strip():
            conn.execute(statement)


# -- version 3: notifications and camera snapshots (issue 14) ------------------------

_V3 = """
CREATE TABLE notify_cursor(
    name TEXT PRIMARY KEY,
    step_rowid INTEGER NOT NULL          -- the last alarm_steps rowid routed
);
CREATE TABLE notifications(
    id {ID},
    step_rowid INTEGER,                  -- the alarm step that caused it (NULL for a summary)
    alarm_id INTEGER,                    -- NULL for a summary
    target TEXT NOT NULL,                -- the target's key (a hash of its URL and unit: never the URL)
    action TEXT NOT NULL,                -- raise | escalate | ack | resolve | summary
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,                 -- pending | sent | failed | summarized | dropped
    created_ts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_ts INTEGER,
    summary_id INTEGER,                  -- the summary that carried it (state summarized)
    UNIQUE(step_rowid, target)
);
CREATE INDEX notifications_target_state ON notifications(target, state);
CREATE INDEX notifications_alarm ON notifications(alarm_id);
CREATE TABLE notify_attempts(
    {ROWID}
    alarm_id INTEGER NOT NULL,
    notification_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    target TEXT NOT NULL,                -- the target's label, as the trail shows it
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX notify_attempts_alarm ON notify_attempts(alarm_id);
CREATE TABLE snapshots(
    alarm_id INTEGER NOT NULL,
    n INTEGER NOT NULL,                  -- 1, 2, ... per alarm, in the order taken
    ts INTEGER NOT NULL,                 -- when it was taken (UTC ms)
    camera TEXT NOT NULL,                -- the plan's camera id
    size INTEGER NOT NULL,
    jpeg {BLOB} NOT NULL,
    PRIMARY KEY(alarm_id, n)
);
CREATE INDEX snapshots_ts ON snapshots(ts)
"""


def _v3(conn: Connection) -> None:
    for statement in dialect_of(conn).ddl(_V3).split(";"):
        if statement.strip():
            conn.execute(statement)


# -- version 4: accounts that can be disabled, and dashboard sessions kept server-side (issue 12) --

_V4 = """
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
CREATE TABLE sessions(
    id_hash TEXT PRIMARY KEY,       -- SHA-256 of the session id in the cookie
    "user" TEXT NOT NULL,           -- quoted: a reserved word in PostgreSQL (the column is user on SQLite too)
    created_ts INTEGER NOT NULL,
    expires_ts INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions("user")
"""


def _v4(conn: Connection) -> None:
    for statement in dialect_of(conn).ddl(_V4).split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2, _v3, _v4)
VERSION = len(MIGRATIONS)


def version_of(conn: Connection) -> int:
    """The schema version of the store behind ``conn`` (0: made before versions, or empty)."""
    if not dialect_of(conn).has_table(conn, "schema_version"):
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: Connection) -> tuple[int, int]:
    """Bring the store to :data:`VERSION`; returns (version before, version after)."""
    before = version_of(conn)
    if before > VERSION:
        raise StoreError(f"the store is at schema version {before}, newer than this Gridpatrol ({VERSION}):"
                         " upgrade Gridpatrol instead")
    for version in range(before + 1, VERSION + 1):
        with transaction(conn):
            dialect_of(conn).lock_schema(conn)
            if version_of(conn) >= version:  # another process migrated meanwhile
                continue
            MIGRATIONS[version - 1](conn)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
        _LOGGER.info("store: schema migrated to version %s", version)
    return before, VERSION
