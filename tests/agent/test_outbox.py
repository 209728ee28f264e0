"""The outbox: durable, gap-free, never reused numbering, bounded, ack-driven."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.outbox import Outbox, OutboxError
from tests.support import REPO, wait_until
from wire import EncodeError, Event, EventKind

STAMP = dict(ts=1_700_000_000_000, mono_ms=5_000, clock_synced=False, boot_id="b00t1d")


def _append(box: Outbox, kind: EventKind = EventKind.SCAN, source: str = "gate-1", **fields: Any) -> Event | None:
    if kind is EventKind.SCAN and not fields:
        fields = {"tag": "67003B51C6"}
    if kind is EventKind.FAULT and not fields:
        fields = {"code": "test", "detail": ""}
    return box.append(kind, source, fields, **STAMP)  # type: ignore[arg-type]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    b = Outbox(tmp_path / "outbox.db", max_events=1000)
    try:
        yield b
    finally:
        b.close()


def test_append_returns_the_committed_event(box: Outbox) -> None:
    event = _append(box)
    assert event == Event(eseq=1, boot_id="b00t1d", kind=EventKind.SCAN, source="gate-1", ts=1_700_000_000_000,
                          mono_ms=5_000, clock_synced=False, replayed=False, fields={"tag": "67003B51C6"},
                          epoch=box.epoch)
    assert (box.depth, box.last_eseq, box.acked_eseq) == (1, 1, 0)


def test_events_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=100) as first:
        written = [_append(first, EventKind.ALARM, "north-fence", state="open"), _append(first)]
    with Outbox(path, max_events=100) as again:
        assert again.unacked() == written
        assert (again.depth, again.last_eseq) == (2, 2)
        assert again.integrity_ok()


def test_eseq_is_never_reused_after_acks_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=100) as first:
        for _ in range(3):
            _append(first)
        assert first.ack(3) == 3
        assert first.depth == 0
    with Outbox(path, max_events=100) as again:
        assert (again.last_eseq, again.acked_eseq, again.depth) == (3, 3, 0)
        event = _append(again)
        assert event is not None and event.eseq == 4


def test_ack_deletes_only_covered_rows(box: Outbox) -> None:
    for _ in range(5):
        _append(box)
    assert box.ack(2) == 2
    assert [e.eseq for e in box.unacked()] == [3, 4, 5]
    assert box.ack(2) == 0  # a repeated ack
    assert box.ack(1) == 0  # an old one arriving late
    assert [e.eseq for e in box.unacked(from_eseq=4)] == [4, 5]
    assert [e.eseq for e in box.unacked(from_eseq=1, limit=2)] == [3, 4]
    assert box.depth == 3


def test_ack_beyond_the_last_eseq_is_clamped_and_counted(box: Outbox) -> None:
    for _ in range(2):
        _append(box)
    assert box.ack(50) == 2
    assert (box.acked_eseq, box.last_eseq, box.depth) == (2, 2, 0)
    assert box.counters["outbox_acks_ahead"] == 1
    event = _append(box)
    assert event is not None and event.eseq == 3


def test_get_many_returns_stored_events_by_eseq(box: Outbox) -> None:
    for _ in range(6):
        _append(box)
    box.ack(1)
    found = box.get_many([1, 2, 3, 5, 6, 9])
    assert sorted(found) == [2, 3, 5, 6]
    assert found[5].eseq == 5


def test_bdseq_increases_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_events=100) as first:
        assert [first.next_bdseq(), first.next_bdseq()] == [1, 2]
    with Outbox(path, max_events=100) as again:
        assert again.bdseq == 2
        assert again.next_bdseq() == 3


def test_bound_keeps_critical_events_and_drops_others(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_events=10, warn_fraction=0.8) as box:
        for _ in range(7):
            assert _append(box, EventKind.RESTORE, "north-fence") is not None
        # The 8th reaches 80 %: stored, followed by one outbox-filling fault.
        assert _append(box, EventKind.RESTORE, "north-fence") is not None
        assert box.depth == 9
        assert box.unacked(from_eseq=9)[0].fields == {"code": "outbox-filling", "detail": "8 of 10 events unacknowledged"}
        assert _append(box, EventKind.OUTPUT, "siren", output="siren", on=True) is not None
        assert box.depth == 10
        # At the bound: others are dropped, each still numbered and recorded gone; one outbox-full fault says so.
        assert _append(box, EventKind.RESTORE, "north-fence") is None
        assert _append(box, EventKind.FAULT, "gate-1") is None
        assert box.counters["outbox_dropped"] == 2
        full = box.unacked(from_eseq=11)
        assert [(e.eseq, e.kind, e.source, dict(e.fields)) for e in full] == [
            (12, EventKind.FAULT, "outbox", {"code": "outbox-full",
                                             "detail": "10 events unacknowledged; only alarms, panics, tampers and scans are kept"}),
        ]
        assert box.gone == ((11, 11), (13, 13))
        # Alarms, panics, tampers and scans are never dropped.
        kept = [_append(box, kind, "x") for kind in (EventKind.ALARM, EventKind.PANIC, EventKind.TAMPER, EventKind.SCAN)]
        assert [e.eseq for e in kept if e is not None] == [14, 15, 16, 17]
        # No gaps: the stored rows and the gone ranges are exactly 1..17.
        assert [e.eseq for e in box.unacked()] == [*range(1, 11), 12, *range(14, 18)]
        assert box.depth == 15
        assert _append(box, EventKind.RESTORE, "north-fence") is None
        assert _append(box, EventKind.RESTORE, "north-fence") is None
        assert box.counters["outbox_dropped"] == 4
        assert box.history(1) == (19, ((11, 11), (13, 13), (18, 19)))
        assert len([e for e in box.unacked() if e.fields.get("code") == "outbox-full"]) == 1


def test_warnings_rearm_only_after_the_depth_falls_well_below(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_events=10, warn_fraction=0.8) as box:
        for _ in range(8):
            _append(box, EventKind.RESTORE, "z")
        assert box.last_eseq == 9  # 8 events + the filling fault
        box.ack(3)  # depth 6: at the re-arm level (6), not below it
        _append(box, EventKind.RESTORE, "z")
        _append(box, EventKind.RESTORE, "z")
        codes = [e.fields.get("code") for e in box.unacked()]
        assert codes.count("outbox-filling") == 1
        box.ack(box.last_eseq)
        for _ in range(8):
            _append(box, EventKind.RESTORE, "z")
        assert [e.fields.get("code") for e in box.unacked()].count("outbox-filling") == 1
        assert box.unacked()[-1].fields["code"] == "outbox-filling"


def _fill_disk(box: Outbox) -> None:
    """Make SQLite itself run out of room: it raises SQLITE_FULL as on a full disk."""
    db = box._db  # the real SQLite connection: only it can cap its own file size
    assert db is not None
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count={pages}")
    while box.counters["outbox_disk_full_episodes"] == 0:
        _append(box, EventKind.FAULT, "filler", code="filler", detail="x" * 400)
    # Others are shed from now on; critical events are still stored while
    # they fit. Fill with the smallest until not even that does: it waits.
    while _append(box, EventKind.SCAN, "gate-1") is not None:
        pass


def test_disk_full_sheds_others_keeps_critical_waiting_and_says_so_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_events=10_000) as box:
        _fill_disk(box)
        before = box.unacked(limit=10_000)
        last = box.last_eseq
        shed = box.counters["outbox_disk_full"]
        assert _append(box, EventKind.RESTORE, "north-fence") is None
        assert box.counters["outbox_disk_full"] == shed + 1
        # A panic cannot be stored now, but it is not lost: it waits, in order.
        waiting = box.counters["outbox_critical_waiting"]
        assert _append(box, EventKind.PANIC, "office-panic") is None
        assert _append(box, EventKind.ALARM, "north-fence") is None
        assert box.counters["outbox_critical_waiting"] == waiting + 2
        assert box.last_eseq == last
        # An ack frees pages; the waiting events are stored at once, in order, no gap.
        box.ack(last)
        assert box.counters["outbox_critical_waiting"] == 0
        stored = box.unacked()
        assert [e.eseq for e in stored] == list(range(last + 1, last + 1 + waiting + 2))
        assert [e.kind for e in stored[-2:]] == [EventKind.PANIC, EventKind.ALARM]
        # One disk-full fault for the episode, stored after the filler that met the full disk.
        faults = [e for e in [*before, *stored] if e.fields.get("code") == "disk-full"]
        assert [(e.kind, e.source, dict(e.fields)) for e in faults] == [
            (EventKind.FAULT, "outbox", {"code": "disk-full", "detail": "the disk is full: only alarms, panics, "
                                         "tampers and scans are stored until it has room again"}),
        ]
        assert box.integrity_ok()


def test_reserved_and_unencodable_fields_are_refused(box: Outbox) -> None:
    with pytest.raises(ValueError, match="^event field 'eseq' is reserved for the event envelope$"):
        box.append(EventKind.ALARM, "z", {"eseq": 9}, **STAMP)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        box.append(EventKind.ALARM, "z", {"blob": object()}, **STAMP)  # type: ignore[arg-type]
    assert box.last_eseq == 0


def test_a_file_that_is_not_an_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="^" + str(path).replace(".", r"\.") + ": not a usable outbox: "):
        Outbox(path, max_events=10)


def test_closed_outbox_says_so(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_events=10)
    box.close()
    box.close()  # idempotent
    with pytest.raises(OutboxError, match="the outbox is closed$"):
        _append(box)


def test_concurrent_appends_and_acks_keep_numbering_gap_free(box: Outbox) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(40):
            e = _append(box)
            assert e is not None
            with lock:
                seen.append(e.eseq)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        box.ack(box.last_eseq // 2)
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 121))
    assert [e.eseq for e in box.unacked()] == list(range(box.acked_eseq + 1, 121))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from([EventKind.SCAN, EventKind.RESTORE, EventKind.ALARM])),
        st.tuples(st.just("ack"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_outbox_matches_a_simple_model(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any]]) -> None:
    path = tmp_path_factory.mktemp("model") / "outbox.db"
    max_events = 12
    box = Outbox(path, max_events=max_events)
    model: list[int] = []  # stored eseqs
    last = acked = 0
    try:
        for op, arg in ops:
            if op == "append":
                critical = arg in (EventKind.SCAN, EventKind.ALARM)
                before = box.last_eseq
                event = _append(box, arg)
                if event is not None:
                    assert event.eseq == last + 1
                # Own faults may have been added too; all numbered after the last.
                model.extend(range(last + 1, box.last_eseq + 1))
                last = box.last_eseq
                assert event is not None or not critical
                assert last >= before
            elif op == "ack":
                box.ack(arg)
                acked = max(acked, min(arg, last))
                model = [e for e in model if e > acked]
            else:
                box.close()
                box = Outbox(path, max_events=max_events)
            assert [e.eseq for e in box.unacked(limit=100)] == model
            assert (box.last_eseq, box.acked_eseq, box.depth) == (last, acked, len(model))
    finally:
        box.close()


_BURST = """
import sys
from agent.outbox import Outbox
box = Outbox(sys.argv[1], max_events=1_000_000)
n = 0
while True:
    e = box.append("scan", "gate-1", {"tag": "67003B51C6"}, ts=0, mono_ms=n, clock_synced=False, boot_id="burst")
    n += 1
    print(e.eseq, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_no_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    out = tmp_path / "burst.out"
    for round_ in range(2):
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-c", _BURST, str(path)], stdout=f, stderr=subprocess.STDOUT,
                                    cwd=REPO, start_new_session=True)
        try:
            wait_until(lambda: out.read_text().count("\n") >= 200, timeout=30, message="200 committed appends")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        printed = [int(line) for line in out.read_text().splitlines() if line.strip().isdigit()]
        with Outbox(path, max_events=1_000_000) as box:
            assert box.integrity_ok()
            stored = [e.eseq for e in box.unacked(limit=1_000_000)]
            # Everything reported as committed is there; numbering has no gap and goes on above.
            assert set(printed) <= set(stored)
            assert stored == list(range(box.acked_eseq + 1, box.last_eseq + 1))
            assert box.last_eseq >= max(printed)
            nxt = _append(box)
            assert nxt is not None and nxt.eseq == box.last_eseq
            if round_ == 0:
                box.ack(box.last_eseq)  # the second round starts from an empty table: meta must carry on
    with Outbox(path, max_events=1_000_000) as box:
        stored = [e.eseq for e in box.unacked(limit=1_000_000)]
        assert stored == list(range(box.acked_eseq + 1, box.last_eseq + 1))
        assert box.acked_eseq > 200


def test_sqlite_really_is_in_wal_with_full_sync(box: Outbox) -> None:
    db = sqlite3.connect(box.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
    assert box._db is not None and box._db.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL
