"""The outbox's epoch and its gone ranges: what a new outbox is, and what an agent can tell central it lost."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from agent import outbox as outbox_module
from agent.outbox import Outbox, OutboxUnreadable, open_outbox
from wire import EventKind

STAMP = dict(ts=1_700_000_000_000, mono_ms=5_000, clock_synced=False, boot_id="b00t1d")


def _append(box: Outbox, kind: EventKind = EventKind.SCAN, source: str = "gate-1", **fields: Any) -> Any:
    if kind is EventKind.SCAN and not fields:
        fields = {"tag": "67003B51C6"}
    return box.append(kind, source, fields, **STAMP)  # type: ignore[arg-type]


def test_a_new_outbox_makes_an_epoch_once_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=10) as box:
        epoch = box.epoch
        assert re.fullmatch(r"[0-9a-f]{16}", epoch)
        assert _append(box).epoch == epoch
        assert box.unacked()[0].epoch == epoch
    with Outbox(path, max_events=10) as again:
        assert again.epoch == epoch
        assert again.get_many([1])[1].epoch == epoch
    with Outbox(tmp_path / "other.db", max_events=10) as other:
        assert other.epoch != epoch


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_wiped_outbox_starts_a_new_epoch_at_eseq_1(tmp_path: Path, how: str) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=10) as box:
        old = box.epoch
        for _ in range(3):
            _append(box)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")  # a truncated file: SQLite reads an empty database
    with Outbox(path, max_events=10) as box:
        assert box.epoch != old
        assert _append(box).eseq == 1


def test_an_unreadable_outbox_is_moved_aside_and_a_new_epoch_begins(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxUnreadable, match="^" + re.escape(str(path)) + ": not a usable outbox: file is not a database$"):
        Outbox(path, max_events=10)
    box, aside = open_outbox(path, max_events=10)
    with box:
        assert aside is not None and re.fullmatch(r"outbox\.db\.unreadable-\d{8}T\d{6}Z", aside.name)
        assert aside.read_bytes() == b"this is not sqlite" * 100
        assert _append(box).eseq == 1
    box, aside = open_outbox(path, max_events=10)
    with box:
        assert aside is None and box.last_eseq == 1


def test_an_outbox_from_before_epochs_keeps_the_empty_epoch_its_events_went_out_under(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE events(eseq INTEGER PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL, ts INTEGER NOT NULL,
                                mono_ms INTEGER NOT NULL, clock_synced INTEGER NOT NULL, boot_id TEXT NOT NULL,
                                fields BLOB NOT NULL);
            INSERT INTO meta VALUES ('schema', 1), ('last_eseq', 5), ('acked_eseq', 4), ('bdseq', 7);
            INSERT INTO events VALUES (5, 'alarm', 'north-fence', 1, 2, 0, 'b', x'80');
        """)
        db.commit()
    with Outbox(path, max_events=10) as box:
        assert box.epoch == ""
        assert [(e.eseq, e.epoch) for e in box.unacked()] == [(5, "")]
        assert _append(box).eseq == 6
        assert box.ack(6, "") == 2
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (2,)


def test_a_newer_schema_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, max_events=10).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = 3 WHERE key = 'schema'")
        db.commit()
    with pytest.raises(OSError, match=r"outbox schema 3 is not 2$") as info:
        open_outbox(path, max_events=10)
    assert not isinstance(info.value, OutboxUnreadable)
    assert path.exists()


def test_an_ack_of_another_epoch_is_counted_and_ignored(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_events=10) as box:
        for _ in range(3):
            _append(box)
        assert box.ack(3, "someone-elses") == 0
        assert box.ack(3, "") == 0
        assert (box.acked_eseq, box.depth, box.counters["outbox_acks_other_epoch"]) == (0, 3, 2)
        assert box.ack(2, box.epoch) == 2
        assert (box.acked_eseq, box.depth) == (2, 1)


def test_gone_ranges_are_kept_across_a_restart_and_leave_with_the_ack(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=2, warn_fraction=1.0) as box:
        _append(box)
        _append(box)  # 2, and the outbox-filling fault 3
        # At the bound: a restore and an output are dropped, each takes its eseq, each run of them is gone.
        assert _append(box, EventKind.RESTORE, "north-fence") is None  # 4, then the outbox-full fault 5
        assert _append(box, EventKind.OUTPUT, "siren", output="siren", on=True) is None  # 6
        assert _append(box, EventKind.RESTORE, "north-fence") is None  # 7
        assert box.gone == ((4, 4), (6, 7))
        assert box.depth == 4  # the rows only: 1, 2 and the two faults
        assert _append(box, EventKind.PANIC, "office-panic").eseq == 8
        assert box.history(5) == (8, ((6, 7),))
        assert box.history(7) == (8, ((7, 7),))
    # Closed with the gone run at the top not yet on the disk: close writes it.
    with Outbox(path, max_events=2, warn_fraction=1.0) as box:
        assert _append(box, EventKind.RESTORE, "north-fence") is None  # 9
    with Outbox(path, max_events=2, warn_fraction=1.0) as box:
        assert (box.last_eseq, box.gone) == (9, ((4, 4), (6, 7), (9, 9)))
        assert box.ack(7) == 4  # rows 1, 2, 3, 5
        assert box.gone == ((9, 9),)
        assert box.history() == (9, ((9, 9),))
        assert _append(box, EventKind.SCAN).eseq == 10
    with Outbox(path, max_events=2, warn_fraction=1.0) as box:
        assert (box.last_eseq, box.gone, box.depth) == (10, ((9, 9),), 2)


def test_a_gone_top_that_is_told_is_on_the_disk_before_the_answer(tmp_path: Path) -> None:
    """A restart must never number again what central was told is gone: history() saves first."""
    path = tmp_path / "outbox.db"
    box = Outbox(path, max_events=1, warn_fraction=1.0)
    _append(box)  # 1, and the outbox-filling fault 2
    _append(box, EventKind.RESTORE, "z")  # 3 gone, the outbox-full fault 4
    _append(box, EventKind.RESTORE, "z")  # 5 gone, not on the disk yet
    assert box.history(1) == (5, ((3, 3), (5, 5)))
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT low, high FROM gone ORDER BY low").fetchall() == [(3, 3), (5, 5)]
        assert db.execute("SELECT value FROM meta WHERE key = 'last_eseq'").fetchone() == (5,)
    assert box._db is not None  # noqa: SLF001
    box._db.close()  # noqa: SLF001  # dies without close()'s own save
    box._db = None  # noqa: SLF001
    with Outbox(path, max_events=1, warn_fraction=1.0) as again:
        assert again.last_eseq == 5


def test_past_the_kept_ranges_a_drop_takes_no_eseq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "GONE_KEPT_MAX", 2)
    with Outbox(tmp_path / "outbox.db", max_events=1, warn_fraction=1.0) as box:
        _append(box)  # 1, filling fault 2
        _append(box, EventKind.RESTORE, "z")  # 3 gone; full fault 4
        _append(box, EventKind.SCAN)  # 5
        _append(box, EventKind.RESTORE, "z")  # 6 gone
        _append(box, EventKind.RESTORE, "z")  # 7 gone: the run grows
        _append(box, EventKind.SCAN)  # 8
        assert _append(box, EventKind.RESTORE, "z") is None  # a third range: not numbered
        assert (box.last_eseq, box.gone) == (8, ((3, 3), (6, 7)))
        assert box.counters["outbox_gone_unnumbered"] == 1
        assert _append(box, EventKind.SCAN).eseq == 9


def test_on_a_full_disk_a_shed_event_is_gone_not_silently_skipped(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with Outbox(tmp_path / "outbox.db", max_events=10_000) as box:
        monkeypatch.setattr(box._reserve, "take", lambda: False)  # noqa: SLF001  # the disk stays short of room
        db = box._db  # noqa: SLF001
        assert db is not None
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages + 2}")
        while box.counters["outbox_disk_full_episodes"] == 0:
            _append(box, EventKind.FAULT, "filler", code="filler", detail="x" * 400)
        # An ack frees pages; those waiting are stored, and the episode goes on: others are shed.
        box.ack(box.last_eseq)
        assert box.counters["outbox_critical_waiting"] == 0
        last = box.last_eseq
        assert _append(box, EventKind.RESTORE, "north-fence") is None
        assert _append(box, EventKind.PANIC, "office-panic").eseq == last + 2
        assert box.history(last) == (last + 2, ((last + 1, last + 1),))
