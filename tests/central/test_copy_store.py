"""`gridpatrol central copy-store --to postgresql://...`: a SQLite store moved, row for row, into PostgreSQL."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from central.store import AgentRow, Store, dialect_of, notifications, open_store, quarantine, snapshots, transaction
from central.store import alarms as alarms_sql
from central.store.transfer import BATCH_ROWS, NOT_COPIED
from central.store.users import AccountStore, UserRow
from gridpatrol.cli import main
from tests.support import Processes, ev, insert, wait_until

EVENTS = BATCH_ROWS * 2 + 7  # more than one batch, and a last one that is not full


def filled_store(path: Path) -> Store:
    """A SQLite store with rows in every table of the schema, written through the store's own functions."""
    store = Store(path)
    insert(store, [ev("gate-a", n) for n in range(1, EVENTS + 1)] + [ev("gate-b", 1, kind="panic")])
    with closing(store.connect()) as conn:
        with transaction(conn):
            Store.save_agents(conn, [AgentRow("gate-a", state="online", bdseq=3, boot_id="b", last_seen=5000,
                                              acked_eseq=EVENTS, first_seen=1000, birth={"v": 1}, flags={"x": True}),
                                     AgentRow("gate-b", state="offline")])
            Store.add_counters(conn, {"events_stored": EVENTS + 1, "events_lost": 3})
            Store.record_lost(conn, "gate-a", "", EVENTS + 1, EVENTS + 3, 6000, reason="gone")
            alarm_ids = [alarms_sql.insert_alarm(conn, agent="gate-b", source="office-panic", kind="panic", unit="g1",
                                                 raised_ts=1000 + i, eseq=1, epoch="") for i in range(3)]
            for alarm_id in alarm_ids:
                alarms_sql.step(conn, alarm_id, 2000, "g1", "grid", "raise", detail="by the test")
            quarantine.put(conn, agent="gate-a", topic="gp/v1/gate-a/evt", payload=b"\x00\xff not msgpack",
                           reason="undecodable", received_ts=3000, epoch="", eseq=EVENTS + 9)
        steps = notifications.steps_after(conn, 0, actions=("raise",))
        notifications.record(conn, steps[-1].rowid, [notifications.NewNotification(
            s.rowid, s.alarm_id, "phone", "raise", "Panic", "office") for s in steps], 4000)
        for note in notifications.pending(conn, "phone"):
            notifications.attempted(conn, note, label="phone", ok=True, detail="sent", now_ms=4100)
        snapshots.add(conn, alarm_ids[1], "cam-1", 2100, b"\xff\xd8\xff\xe0 jpeg")
    store.acknowledge(alarm_ids[0], "ana", 1001)
    store.acknowledge(alarm_ids[1], "ana", 7000)
    assert store.prune(1002)["alarms"] == 1  # alarm 1, acknowledged and old, goes: the ids copied start at 2
    accounts = AccountStore(store)
    accounts.insert_user(UserRow("ana", "g1", 1000), "pbkdf2$hash")
    accounts.insert_session("cookie-id", "ana", 8000, 10**13)
    return store


def tables_of(conn: Any) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def rows_of(conn: Any, table: str, *, with_rowid: bool = False) -> list[dict[str, Any]]:
    rows = dialect_of(conn).by_name(conn, f'SELECT {"rowid, " if with_rowid else ""}* FROM "{table}"').fetchall()
    return sorted((dict(r) for r in rows), key=lambda r: repr(sorted(r.items())))


def copy_store(config: Path, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["central", "copy-store", "--to", url, "--config", str(config)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Store]:
    store = filled_store(tmp_path / "central.db")
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path}"\n[mqtt]\nhost = "127.0.0.1"\n'
                      f'[store]\nurl = "sqlite://{store.path}"\n')
    return config, store


def test_every_table_is_copied_row_for_row_with_its_ids(site: tuple[Path, Store], pg_url: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config, source = site
    with closing(source.connect(readonly=True)) as conn:
        tables = [t for t in tables_of(conn) if t not in NOT_COPIED]
        # The guard against a hand list that rots: a table a migration adds must get rows here, and be copied.
        assert [t for t in tables if not rows_of(conn, t)] == [], "filled_store leaves these tables empty"
    status, out, err = copy_store(config, pg_url, capsys)
    assert status == 0, err
    assert "events" in out and f"{EVENTS + 1:>10,}" in out and "alarms.id 4" in out
    target = open_store(pg_url)
    try:
        with closing(source.connect(readonly=True)) as src, closing(target.connect(readonly=True)) as dst:
            for table in tables:
                copied = rows_of(dst, table)
                with_rowid = bool(copied) and "rowid" in copied[0]  # the order SQLite keeps implicitly
                assert copied == rows_of(src, table, with_rowid=with_rowid), table
            assert [t for t in tables_of(src) if not dialect_of(dst).has_table(dst, t)] == []
            top_step = notifications.last_step(src)
        # The sequences stand past the copied ids: the next alarm, step and notification do not collide.
        with closing(target.connect()) as conn, transaction(conn):
            new_alarm = alarms_sql.insert_alarm(conn, agent="gate-b", source="office-panic", kind="panic", unit="g1",
                                                raised_ts=9000, eseq=1, epoch="")
            alarms_sql.step(conn, new_alarm, 9000, "g1", "grid", "raise")
            new_step = notifications.last_step(conn)
        assert (new_alarm, new_step) == (4, top_step + 1)  # alarm 1 pruned, 2 and 3 copied
        assert AccountStore(target).session_user("cookie-id", 9000) == UserRow("ana", "g1", 1000)
    finally:
        target.close()


def test_a_target_that_holds_rows_is_refused_and_left_as_it_was(site: tuple[Path, Store], pg_url: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = site
    assert copy_store(config, pg_url, capsys)[0] == 0
    status, out, err = copy_store(config, pg_url, capsys)
    assert status == 2 and out == ""
    assert "already holds rows (in " in err and "events" in err and "empty store" in err
    target = open_store(pg_url)
    try:
        assert len(target.list_events()) == EVENTS + 1
    finally:
        target.close()


def test_a_missing_or_corrupt_source_says_so(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path}"\n[mqtt]\nhost = "127.0.0.1"\n'
                      f'[store]\nurl = "sqlite://{tmp_path}/central.db"\n')
    status, _, err = copy_store(config, pg_url, capsys)
    assert status == 1 and f"store {tmp_path}/central.db does not exist" in err
    (tmp_path / "central.db").write_bytes(b"this is not SQLite" * 300)
    status, _, err = copy_store(config, pg_url, capsys)
    assert status == 1 and "cannot be read: file is not a database" in err
    assert "Traceback" not in err


def test_a_table_only_one_store_has_stops_the_copy_before_it_writes(site: tuple[Path, Store], pg_url: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config, source = site
    assert source.path is not None
    with closing(sqlite3.connect(source.path)) as conn:
        conn.execute("CREATE TABLE wardens(name TEXT PRIMARY KEY)")  # a table no migration made
    status, _, err = copy_store(config, pg_url, capsys)
    assert status == 1 and "table wardens is only in the SQLite store" in err and "nothing copied" in err
    target = open_store(pg_url)
    try:
        assert target.list_events() == []
    finally:
        target.close()


def test_a_store_central_still_has_open_is_refused(site: tuple[Path, Store], pg_url: str, processes: Processes,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, source = site
    log = tmp_path / "holder.log"
    holder = processes.start([sys.executable, "-c", (
        "import signal, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode = WAL');"
        " c.execute('SELECT COUNT(*) FROM events').fetchone(); print('open', flush=True); signal.pause()"),
        str(source.path)], log=log)
    wait_until(lambda: "open" in log.read_text(errors="replace") or holder.poll() is not None, timeout=10, message="the store held open")
    assert holder.poll() is None, log.read_text()
    status, _, err = copy_store(config, pg_url, capsys)
    assert status == 1 and "is open in another process (is central running?)" in err
    Processes.kill(holder)
    status, _, err = copy_store(config, pg_url, capsys)
    assert status == 0, err


def test_to_goes_with_copy_store_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`migrate --to URL` would migrate the config's store, not URL: refused, nothing done."""
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path}"\n[mqtt]\nhost = "127.0.0.1"\n'
                      f'[store]\nurl = "sqlite://{tmp_path}/central.db"\n')
    for action in (["migrate"], ["backup", str(tmp_path / "copy.db")]):
        status = main(["central", *action, "--to", "postgresql://x@127.0.0.1/y", "--config", str(config)])
        assert status == 2 and "--to goes with copy-store only" in capsys.readouterr().err
    assert not (tmp_path / "central.db").exists() and not (tmp_path / "copy.db").exists()
