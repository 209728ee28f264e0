"""Snapshots of an alarm's scene: taken off the ingest path, kept with the alarm.

A watcher thread reads the raises and retrips of agents' inputs from
``alarm_steps`` (every ``poll_s``); for each camera of the plan that watches
the tripped source, a worker takes one snapshot at once and two more
``SHOTS_S`` later. A camera that hangs or fails costs a worker and a log
line; the alarm itself was raised and is escalated without it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from central.cameras.fetch import SnapshotError, fetch_jpeg
from central.plan.model import Camera
from central.plan.registry import PlanHistory
from central.store import Store
from central.store import snapshots as album

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.2
SHOTS_S = (0.0, 2.0, 4.0)  # the first at once, then two more: who came, where they went
WORKERS = 4
PRUNE_EVERY_S = 600.0
# An alarm that happened longer ago than this before central learnt of it (a
# replay after an outage) gets no pictures: the gate now is not the gate then.
STALE_S = 60.0


class HistorySource(Protocol):
    def history(self) -> PlanHistory: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: dict[str, Any] | None = None) -> None: ...


class SnapshotTaker:
    def __init__(self, store: Store, *, plans: HistorySource, keep_days: float, max_mb: float,
                 bus: Publisher | None = None, fetch: Callable[[str], bytes] = fetch_jpeg,
                 clock: Callable[[], float] = time.time, poll_s: float = POLL_S,
                 shots_s: tuple[float, ...] = SHOTS_S) -> None:
        self._plans = plans
        self._keep_ms = int(keep_days * 86400 * 1000)
        self._max_bytes = int(max_mb * 1024 * 1024)
        self._bus = bus
        self._fetch = fetch
        self._clock = clock
        self._poll_s = poll_s
        self._shots_s = shots_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._write_lock = threading.Lock()
        self._conn = store.connect(check_same_thread=False)
        self._after = album.last_step(self._conn)  # the scenes of alarms before this start are gone
        self._pruned_at = 0.0

    def start(self) -> None:
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="snapshot")
        self._thread = threading.Thread(target=self._run, name="snapshot-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self.stop()
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.watch_once()
                if self._clock() - self._pruned_at >= PRUNE_EVERY_S:
                    self.prune()
            except Exception:
                _LOGGER.exception("snapshots: watching alarm steps failed")
            self._stop.wait(self._poll_s)

    def _cameras(self, agent: str, source: str, ts_ms: int) -> tuple[Camera, ...]:
        h = self._plans.history()
        v = h.at(ts_ms) or h.latest
        return v.plan.cameras_at.get((agent, source), ()) if v else ()

    def watch_once(self) -> int:
        """Start the bursts of the trips committed since the last call; how many it started."""
        started = 0
        with self._write_lock:  # one connection, shared with the workers' writes
            trips = album.trips_after(self._conn, self._after)
        for trip in trips:
            self._after = trip.rowid
            if trip.action == "raise" and trip.ts - trip.raised_ts > STALE_S * 1000:
                _LOGGER.info("snapshots: alarm %s happened %.0f s before it arrived: no pictures", trip.alarm_id,
                             (trip.ts - trip.raised_ts) / 1000)
                continue
            for camera in self._cameras(trip.agent, trip.source, trip.ts):
                if self._pool is not None:
                    self._pool.submit(self._burst, trip.alarm_id, camera, self._clock())
                    started += 1
        return started

    def _burst(self, alarm_id: int, camera: Camera, t0: float) -> None:
        for offset in self._shots_s:
            if self._stop.wait(max(0.0, t0 + offset - self._clock())):
                return
            self.take(alarm_id, camera)

    def take(self, alarm_id: int, camera: Camera) -> int | None:
        """One snapshot for the alarm; its number, or None when the camera gave none."""
        try:
            jpeg = self._fetch(camera.snapshot)
        except SnapshotError as exc:
            _LOGGER.warning("snapshots: camera %s gave no snapshot for alarm %s: %s", camera.id, alarm_id, exc)
            return None
        with self._write_lock:
            n = album.add(self._conn, alarm_id, camera.id, int(self._clock() * 1000), jpeg)
        _LOGGER.info("snapshots: alarm %s snapshot %s from camera %s (%s bytes)", alarm_id, n, camera.id, len(jpeg))
        if self._bus is not None:
            self._bus.publish("alarm", {"id": alarm_id, "change": "snapshot"})
        if self._max_bytes and n == 1:
            self.prune()
        return n

    def prune(self) -> int:
        now = self._clock()
        self._pruned_at = now
        with self._write_lock:
            gone = album.prune(self._conn, older_than_ms=int(now * 1000) - self._keep_ms, max_bytes=self._max_bytes)
        if gone:
            _LOGGER.info("snapshots: %s past the retention bound removed", gone)
        return gone
