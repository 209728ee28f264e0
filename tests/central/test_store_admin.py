"""What operators of a store expect: migrations, a backup while central writes, retention, the quarantine list."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from central.relay import Relay
from central.store import Store, StoreError, dialect_of, open_store, quarantine, schema, transaction
from central.store import alarms as alarms_sql
from tests.support import ev, free_port, insert, run_cli, wait_until

# The tables as the first round of Gridpatrol made them: no schema_version, events keyed on (agent, eseq).
FIRST_ROUND = """
CREATE TABLE events(agent TEXT NOT NULL, eseq INTEGER NOT NULL, boot_id TEXT NOT NULL, kind TEXT NOT NULL,
    source TEXT NOT NULL, ts INTEGER NOT NULL, ts_est INTEGER NOT NULL, ts_estimated INTEGER NOT NULL,
    mono_ms INTEGER NOT NULL, clock_synced INTEGER NOT NULL, replayed INTEGER NOT NULL, received_ts INTEGER NOT NULL,
    fields TEXT NOT NULL, unplanned INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(agent, eseq)) WITHOUT ROWID;
CREATE INDEX events_kind_ts_est ON events(kind, ts_est);
CREATE INDEX events_received_ts ON events(received_ts);
CREATE TABLE agents(agent TEXT PRIMARY KEY, state TEXT, bdseq INTEGER, boot_id TEXT, last_seen INTEGER,
    acked_eseq INTEGER NOT NULL DEFAULT 0, first_seen INTEGER, birth TEXT, tele TEXT, snapshot TEXT, flags TEXT);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE alarms(id INTEGER PRIMARY KEY, agent TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, unit TEXT,
    state TEXT NOT NULL, raised_ts INTEGER NOT NULL, acked_by TEXT, acked_ts INTEGER, escalated_to TEXT,
    event_eseq INTEGER, restored INTEGER NOT NULL DEFAULT 0, notified INTEGER NOT NULL DEFAULT 0, ack_txn TEXT);
CREATE INDEX alarms_open ON alarms(state, agent, source);
CREATE TABLE alarm_steps(alarm_id INTEGER NOT NULL, ts INTEGER NOT NULL, unit TEXT, tier TEXT, action TEXT NOT NULL);
CREATE TABLE users(name TEXT PRIMARY KEY, unit TEXT NOT NULL, pw_hash TEXT NOT NULL, created_ts INTEGER NOT NULL);
INSERT INTO events VALUES ('gate-a', 1, 'b', 'panic', 'office-panic', 1000, 1000, 0, 5, 1, 0, 2000, '{}', 0);
INSERT INTO events VALUES ('gate-a', 2, 'b', 'scan', 'gate-1', 1001, 1001, 0, 6, 1, 0, 2001, '{"tag":"67003B51C6"}', 0);
INSERT INTO agents(agent, state, bdseq, acked_eseq) VALUES ('gate-a', 'online', 3, 2);
INSERT INTO alarms(agent, source, kind, unit, state, raised_ts, event_eseq) VALUES
    ('gate-a', 'office-panic', 'panic', 'g1', 'active', 1000, 1);
INSERT INTO alarm_steps VALUES (1, 2000, 'g1', 'grid', 'raise');
"""


def first_round_store(path: Path) -> Store:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(FIRST_ROUND)
    return Store(path)


def test_a_first_round_store_is_migrated_with_its_history(tmp_path: Path) -> None:
    store = first_round_store(tmp_path / "central.db")
    assert store.schema_version() == 0
    assert store.migrate() == (0, schema.VERSION)
    assert store.migrate() == (schema.VERSION, schema.VERSION)  # a second run changes nothing
    assert [(e.agent, e.epoch, e.eseq, e.kind) for e in store.list_events()] == [
        ("gate-a", "", 1, "panic"), ("gate-a", "", 2, "scan")]
    (row,) = store.list_agents()
    assert (row.acked_eseq, row.epoch) == (2, "")
    (alarm,) = store.alarms()
    assert (alarm.kind, alarm.event_eseq, alarm.event_epoch) == ("panic", 1, None)
    assert store.contiguous_eseq("gate-a") == 2
    # The new epoch of a re-imaged agent starts at eseq 1 beside the old one.
    fresh = dataclasses.replace(ev("gate-a", 1, received_ts=3000), epoch="e2")
    assert insert(store, [fresh]) == [fresh]
    assert [(e.epoch, e.eseq) for e in store.list_events()] == [("", 1), ("", 2), ("e2", 1)]


def test_an_empty_store_is_created_at_the_current_version(store: Store) -> None:
    store.connect().close()
    assert store.schema_version() == schema.VERSION
    with closing(store.connect(readonly=True)) as conn:
        missing = [t for t in ("events", "agents", "counters", "alarms", "alarm_steps", "users", "quarantine", "lost",
                               "schema_version") if not dialect_of(conn).has_table(conn, t)]
    assert missing == []


def test_a_store_newer_than_this_code_is_refused(store: Store) -> None:
    with closing(store.connect()) as conn, transaction(conn):
        conn.execute("UPDATE schema_version SET version = ?", (schema.VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this Gridpatrol"):
        store.connect()


def test_migrate_and_backup_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    first_round_store(tmp_path / "data" / "central.db")
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n')
    out = run_cli("central", "migrate", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert f"schema version 0 -> {schema.VERSION}" in out.stdout
    out = run_cli("central", "backup", str(tmp_path / "copy.db"), "--config", str(config))
    assert out.returncode == 0, out.stderr
    copy = Store(tmp_path / "copy.db")
    assert [e.eseq for e in copy.list_events()] == [1, 2] and copy.schema_version() == schema.VERSION
    out = run_cli("central", "backup", "--config", str(config))
    assert out.returncode == 2 and "give the FILE" in out.stderr


def test_central_migrate_brings_an_empty_postgresql_database_to_the_current_schema(pg_url: str,
                                                                                   tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n[store]\nurl = "{pg_url}"\n')
    out = run_cli("central", "migrate", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"store {pg_url}: schema version 0 -> {schema.VERSION}\n"
    out = run_cli("central", "migrate", "--config", str(config))
    assert out.stdout == f"store {pg_url}: schema already at version {schema.VERSION}\n"
    store = open_store(pg_url)
    try:
        assert store.schema_version() == schema.VERSION
        fresh = [ev("gate-a", 1), dataclasses.replace(ev("gate-a", 1), epoch="e2")]
        assert insert(store, fresh) == fresh
        with pytest.raises(StoreError) as info:
            store.backup(tmp_path / "copy.db")
        assert str(info.value) == f"backup: store {pg_url} is PostgreSQL; back it up with pg_dump"
    finally:
        store.close()
    out = run_cli("central", "backup", str(tmp_path / "copy.db"), "--config", str(config))
    assert out.returncode == 1 and "pg_dump" in out.stderr and not (tmp_path / "copy.db").exists()


def test_two_centrals_migrating_one_postgresql_database_at_once_agree(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(3)]
    results: list[tuple[int, int]] = []
    try:
        threads = [threading.Thread(target=lambda s=s: results.append(s.migrate())) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [(0, schema.VERSION)] * 3  # each saw version 0, one did the work
        assert stores[0].schema_version() == schema.VERSION
    finally:
        for s in stores:
            s.close()


def test_a_backup_is_consistent_while_a_writer_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "central.db")
    store.connect().close()
    stop = threading.Event()

    def write() -> None:
        with closing(store.connect()) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                with transaction(conn):  # an event and its alarm: a copy holds both or neither
                    store.insert_events(conn, [ev("gate-a", n, kind="panic")])
                    alarms_sql.insert_alarm(conn, agent="gate-a", source=f"s{n}", kind="panic", unit=None,
                                            raised_ts=n, eseq=n, epoch="")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(store.list_events()) > 50)
        for k in range(3):
            target = tmp_path / f"copy{k}.db"
            store.backup(target)
            copy = Store(target)
            events = copy.list_events()
            assert len(events) == len(copy.alarms()) > 0
            assert [e.eseq for e in events] == list(range(1, len(events) + 1))
    finally:
        stop.set()
        writer.join()
    with pytest.raises(StoreError):
        store.backup(store.path)


def test_retention_removes_old_events_and_closed_alarms_only(store: Store) -> None:
    insert(store, [ev("gate-a", n, received_ts=1000 * n) for n in range(1, 11)])
    with closing(store.connect()) as conn, transaction(conn):
        old = alarms_sql.insert_alarm(conn, agent="gate-a", source="s", kind="panic", unit=None, raised_ts=10,
                                      eseq=1, epoch="")
        alarms_sql.step(conn, old, 10, None, None, "raise")
        conn.execute("UPDATE alarms SET state = 'resolved', acked_ts = 20 WHERE id = ?", (old,))
        alarms_sql.insert_alarm(conn, agent="gate-a", source="t", kind="panic", unit=None, raised_ts=10,
                                eseq=2, epoch="")  # open: kept however old
        quarantine.put(conn, agent="gate-a", topic="t", payload=b"x", reason="r", received_ts=5)
    removed = store.prune(5500)
    assert removed == {"events": 5, "alarms": 1, "quarantine": 1}
    assert [e.eseq for e in store.list_events()] == [6, 7, 8, 9, 10]
    assert [a.source for a in store.alarms(include_all=True)] == ["t"]
    assert store.contiguous_eseq("gate-a", after=10) == 10
    assert store.prune(10**15)["events"] == 4  # the newest event of the epoch stays: the ack point's witness


def test_the_quarantine_list_on_the_command_line(store: Store, tmp_path: Path) -> None:
    with closing(store.connect()) as conn, transaction(conn):
        quarantine.put(conn, agent="gate-a", topic="gridpatrol/v1/gate-a/evt", payload=b"\x81\xa1a\x01",
                       reason="refused:\nby a trigger", received_ts=1_700_000_000_000, epoch="e1", eseq=7)
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n[store]\nurl = "{store.url}"\n')
    out = run_cli("quarantine", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert {k: row[k] for k in ("agent", "topic", "reason", "received_ts", "epoch", "eseq")} == {
        "agent": "gate-a", "topic": "gridpatrol/v1/gate-a/evt", "reason": "refused:\nby a trigger",
        "received_ts": 1_700_000_000_000, "epoch": "e1", "eseq": 7}
    out = run_cli("quarantine", "--config", str(config))
    assert out.returncode == 0 and "gate-a" in out.stdout and "eseq 7" in out.stdout


class Slow:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[list[int]] = []
        self.resyncs = 0

    def events_stored(self, events: list[int]) -> None:
        self.release.wait(10)
        self.batches.append(events)

    def resync(self) -> None:
        self.resyncs += 1


def test_a_relay_never_blocks_its_caller_and_resyncs_after_dropping() -> None:
    slow = Slow()
    relay = Relay(slow, name="slow", pending_max=3)
    relay.start()
    try:
        for n in range(10):  # returns at once although the listener is stuck
            relay.events_stored([n])
        assert relay.dropped >= 6
        slow.release.set()
        wait_until(lambda: slow.resyncs == 1, message="a resync after the drops")
        assert [b[0] for b in slow.batches] == sorted(b[0] for b in slow.batches)
    finally:
        relay.stop()
    assert not relay.alive()


def test_a_postgresql_that_does_not_answer_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    url = f"postgresql://gp@127.0.0.1:{free_port()}/gp"  # nothing listens there
    config.write_text(f'timezone = "UTC"\ndata_dir = "{tmp_path}"\n[store]\nurl = "{url}"\n')
    out = run_cli("agents", "--config", str(config), "--json")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"gridpatrol: error: store {url}: connection failed:")


def test_both_spellings_of_an_absolute_sqlite_url_open_the_same_file(tmp_path: Path) -> None:
    from central.store import open_store

    three, four = open_store(f"sqlite://{tmp_path}/c.db"), open_store(f"sqlite:///{tmp_path}/c.db")
    assert three.path == four.path == tmp_path / "c.db"
    four.connect().close()
    assert three.schema_version() == schema.VERSION
