"""Snapshots of an alarm's scene from a real local HTTP camera, through the real alarm book and taker.

And the other half of the promise: a camera that hangs or answers 500 changes
nothing about the alarm (checked end to end on a real Mosquitto).
"""

from __future__ import annotations

import itertools
import json
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from central.alarms import AlarmBook
from central.app import Central
from central.cameras.taker import SnapshotTaker
from central.config import parse_config
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store import Store
from central.store import snapshots as album
from central.store.dashboard import StoreReader
from tests.central.http_fakes import JPEG, FakeCamera
from tests.support import Broker, run_cli, wait_until
from tests.web.conftest import plan_with_camera
from wire import topics
from wire.messages import Event, EventKind

AGENT = "school-9-gate-1"


@pytest.fixture
def camera() -> Iterator[FakeCamera]:
    cam = FakeCamera("digest").start()
    try:
        yield cam  # type: ignore[misc]
    finally:
        cam.stop()


def raise_event(book: AlarmBook, n: itertools.count[int], source: str, kind: str = "alarm") -> None:
    now = int(time.time() * 1000)
    book.events_stored([SimpleNamespace(agent=AGENT, source=source, kind=kind, ts_est=now, received_ts=now, eseq=next(n), epoch="")])


def test_three_snapshots_within_seconds_of_the_alarm_and_more_on_a_retrip(tmp_path: Path, camera: FakeCamera) -> None:
    plans = PlanRegistry.for_data_dir(tmp_path)
    plans.add(parse_plan_bytes(plan_with_camera(camera.url())))
    path = tmp_path / "central.db"
    book = AlarmBook(path, plans=plans)
    taker = SnapshotTaker(Store(path), plans=plans, keep_days=30, max_mb=100, shots_s=(0.0, 0.5, 1.0))
    taker.start()
    reader = StoreReader(path)
    n = itertools.count(1)
    try:
        raise_event(book, n, "north-fence")
        raised = time.time()
        alarm_id = book.alarms()[0].id
        wait_until(lambda: reader.alarm(alarm_id)["snapshots"] >= 1, timeout=3, message="a snapshot within 3 s")  # type: ignore[index]
        assert time.time() - raised < 3
        wait_until(lambda: reader.alarm(alarm_id)["snapshots"] == 3, timeout=5)  # type: ignore[index]
        assert reader.snapshot(alarm_id, 1) == JPEG

        book.events_stored([SimpleNamespace(agent=AGENT, source="north-fence", kind="restore", ts_est=0,
                                            received_ts=int(time.time() * 1000), eseq=next(n), epoch="")])
        raise_event(book, n, "north-fence")  # the same loop trips again: the same alarm, three more pictures
        wait_until(lambda: reader.alarm(alarm_id)["snapshots"] == 6, timeout=5)  # type: ignore[index]
        assert [a.id for a in book.alarms()] == [alarm_id]
    finally:
        taker.close()
        book.close()
    assert camera.jpegs_served() == 6
    assert reader.alarm(alarm_id)["snapshot_numbers"] == [1, 2, 3, 4, 5, 6]  # type: ignore[index]
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path}"\n')
    listed = run_cli("alarms", "--config", str(config), "--json")
    assert (listed.returncode, [(a["id"], a["snapshots"]) for a in json.loads(listed.stdout)]) == (0, [(alarm_id, 6)])


def test_an_alarm_replayed_long_after_it_happened_gets_no_picture_of_the_present(tmp_path: Path,
                                                                                  camera: FakeCamera) -> None:
    plans = PlanRegistry.for_data_dir(tmp_path)
    plans.add(parse_plan_bytes(plan_with_camera(camera.url())))
    path = tmp_path / "central.db"
    book = AlarmBook(path, plans=plans)
    taker = SnapshotTaker(Store(path), plans=plans, keep_days=30, max_mb=100, shots_s=(0.0,))
    taker.start()
    reader = StoreReader(path)
    now = int(time.time() * 1000)
    try:
        book.events_stored([SimpleNamespace(agent=AGENT, source="office-panic", kind="panic", ts_est=now - 120_000,
                                            received_ts=now, eseq=1, epoch="")])
        raise_event(book, itertools.count(2), "north-fence")  # after it, in step order
        replayed, fresh = sorted(a.id for a in book.alarms())
        wait_until(lambda: reader.alarm(fresh)["snapshots"] == 1, timeout=3)  # type: ignore[index]
    finally:
        taker.close()
        book.close()
    assert reader.alarm(replayed)["snapshots"] == 0  # type: ignore[index]
    assert camera.jpegs_served() == 1


def test_retention_forgets_the_oldest_by_age_then_by_size(tmp_path: Path) -> None:
    with closing(Store(tmp_path / "c.db").connect()) as conn:  # a writer's connection migrates the schema
        for alarm_id, ts in ((1, 1_000), (2, 50_000), (2, 60_000), (3, 70_000)):
            album.add(conn, alarm_id, "cam", ts, b"\xff\xd8" + bytes(998))
        assert album.prune(conn, older_than_ms=10_000, max_bytes=10_000) == 1  # too old
        assert album.numbers(conn, [1, 2, 3]) == {2: [1, 2], 3: [1]}
        assert album.prune(conn, older_than_ms=0, max_bytes=2_000) == 1  # too many bytes: the oldest goes
        assert album.numbers(conn, [1, 2, 3]) == {2: [2], 3: [1]}
        assert album.jpeg(conn, 2, 1) is None and album.jpeg(conn, 2, 2) is not None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["digest", "hang", "500"])
def test_over_mqtt_a_snapshot_within_3_s_and_a_bad_camera_changes_nothing(tmp_path: Path, broker: Broker,
                                                                          camera: FakeCamera, mode: str) -> None:
    """The same alarms, the same timings, whether the camera answers, hangs or fails."""
    camera.mode = mode
    data = tmp_path / "data"
    data.mkdir()
    PlanRegistry.for_data_dir(data).add(parse_plan_bytes(plan_with_camera(camera.url())))
    grid_s = 1.0
    config = parse_config(f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[mqtt]\nhost = "127.0.0.1"\n'
                          f'port = {broker.port}\n[escalation]\ngrid_s = {grid_s}\n')
    central = Central(config, tracker=False, web=False)
    central.start()
    assert central.ingest.wait_connected(10)  # subscribed: a message published now is not lost
    reader = StoreReader(central.store.path)
    try:
        timings = []
        for eseq, source in enumerate(("office-panic", "north-fence"), 1):
            sent = time.time()
            event = Event(eseq=eseq, boot_id="boot-c", kind=EventKind.PANIC if eseq == 1 else EventKind.ALARM,
                          source=source, ts=int(sent * 1000), mono_ms=5000 + eseq, clock_synced=True)
            broker.pub(topics.evt(AGENT), event.to_payload(), qos=1)
            assert central.alarm_book is not None
            alarm = wait_until(lambda source=source: [a for a in central.alarm_book.alarms() if a.source == source], timeout=5,
                               message=f"the alarm of {source}")[0]
            shown = time.time()
            if mode == "digest":
                wait_until(lambda alarm=alarm: reader.alarm(alarm.id)["snapshots"] >= 1, timeout=3,  # type: ignore[index]
                           message="a snapshot stored within 3 s of the alarm")
                assert time.time() - sent < 3.0
            steps = wait_until(lambda alarm=alarm: [s for s in central.alarm_book.steps(alarm.id) if s.action == "escalate"],
                               timeout=grid_s + 5)
            climbed = time.time()
            raise_ts = central.alarm_book.steps(alarm.id)[0].ts
            assert steps[0].ts - raise_ts == int(grid_s * 1000)  # on the minute it fell due
            timings.append((shown - sent, climbed - sent))
        wait_until(lambda: len(camera.hits) >= 2, timeout=5, message="the camera was asked")
        if mode == "digest":
            wait_until(lambda: [reader.alarm(i)["snapshots"] for i in (1, 2)] == [3, 3], timeout=8)  # type: ignore[index]
    finally:
        central.stop()
    for raised_after, escalated_after in timings:
        assert raised_after < 1.0, timings
        assert escalated_after < grid_s + 1.0, timings
    held = [reader.alarm(i)["snapshots"] for i in (1, 2)]  # type: ignore[index]
    assert held == ([3, 3] if mode == "digest" else [0, 0])
