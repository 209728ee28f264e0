"""A flood of 20,000 valid scans at one planned checkpoint; another agent's panic is an alarm within 2 s.

Issue 11: 30,000 valid scans at one planned checkpoint kept central busy for
about 110 s, and another agent's alarm was stored 108.7 s after it was sent:
the completion tracker re-checked every scan of the open round for each new
scan, on the ingest thread, and alarm events waited behind the scans.

The flood comes from ``flood-gate``, an agent the plan knows, played by the
test's own MQTT client as fast as it can publish: its retained status, a
birth (its reader ``gate-1``, the planned checkpoint), then FLOOD_SCANS
well-formed scan events at QoS 1 (eseq 1..N, a team member's card, a round
of the route open now), exactly what a real agent on that topic would send,
only faster than any reader could. (Through a pseudo-terminal a card takes a
second to count again: a flood that way would take hours.) Once the whole
flood is published, ``gate-z``, a real agent process, presses its panic:
whatever of the flood central has not stored yet is ahead of it.

Shows: the panic's alarm is in the store within PANIC_ALARM_S of the panic
reaching the broker (and listed by ``gridpatrol alarms --json``), and the
whole flood is stored (central's ack of ``flood-gate`` reaches N) within
FLOOD_STORED_S.

The moment the alarm is in the store is taken by :class:`AlarmWatch`, a
read-only look at the store's ``alarms`` table (docs/alarms.md) every 5 ms:
a command-line process takes most of a second to start on a machine this
busy, too coarse for a bound of 2 s. Should that table go, the watch says so
and the time falls back to the end of the command-line look that found it,
an upper bound.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest

from tests.faults.harness import FaultSite, Numbers, cli_json
from tests.support import ScanFlooder, open_round_plan, run_cli, wait_until
from wire.codec import unpack

pytestmark = pytest.mark.slow

FLOODER = "flood-gate"
PANICKER = "gate-z"
FLOOD_SCANS = 20_000
CARD = "67003B51C6"
PANIC_PIN = 27
PANIC_HOLD_S = 0.75  # hold_ms is 600 (tests/e2e/site.py)
PANIC_ALARM_S = 2.0  # the bound; the benchmark's target is a p99 of 250 ms
PANIC_WATCH_S = 60.0
WATCH_POLL_S = 0.005  # how long the test waits to measure a late alarm before failing
FLOOD_STORED_S = 120.0
TZ = ZoneInfo("Asia/Shanghai")


class Flooder(ScanFlooder):
    """The test's MQTT client as ``flood-gate``, and the stopwatch on ``gate-z``'s evt topic."""

    def __init__(self, port: int) -> None:
        self.panic_at: float | None = None  # monotonic: gate-z's panic reached the broker (and this client)
        self._subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{FLOODER}-by-the-fault-suite")
        client.max_inflight_messages_set(1000)
        client.will_set(f"gridpatrol/v1/{FLOODER}/status", json.dumps({"state": "offline", "bdseq": 1, "ts": 0}),
                        qos=1, retain=True)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"gridpatrol/v1/{PANICKER}/evt", qos=1)
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._on_message
        super().__init__(client, FLOODER, CARD, FLOOD_SCANS)
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert self._subscribed.wait(10), "the flooder did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.panic_at is None and unpack(bytes(msg.payload)).get("kind") == "panic":
            self.panic_at = time.monotonic()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AlarmWatch:
    """When ``gate-z``'s first panic alarm appeared in the store, by a read-only look every WATCH_POLL_S."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.seen_at: float | None = None  # monotonic
        self.unavailable: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm watch", daemon=True)

    def start(self) -> AlarmWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(10)

    def _run(self) -> None:
        try:
            with closing(sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=10)) as db:
                while not self._stop.is_set() and self.seen_at is None:
                    row = db.execute("SELECT 1 FROM alarms WHERE agent = ? AND kind = 'panic' LIMIT 1", (PANICKER,)).fetchone()
                    if row is not None:
                        self.seen_at = time.monotonic()
                    self._stop.wait(WATCH_POLL_S)
        except sqlite3.Error as exc:
            self.unavailable = repr(exc)


def _acked(site: FaultSite, agent: str) -> int:
    return next((int(a["acked_eseq"] or 0) for a in cli_json(site, "agents") if a["agent"] == agent), 0)


@pytest.mark.timeout(300)
def test_a_scan_flood_does_not_hold_up_another_agents_panic(make_site, numbers: Numbers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    plan = tmp_path / "plan.toml"
    plan.write_text(open_round_plan(dt.datetime.now(TZ), flooder=FLOODER, other=PANICKER, card=CARD))
    r = run_cli("plan", "import", str(plan), "--config", str(site.central_conf))
    assert r.returncode == 0, r.stderr
    site.start_central()
    z = site.add_agent(PANICKER, resend_s=2, keepalive_s=5)
    site.start_agent(PANICKER)
    flooder = Flooder(site.broker.port)
    watch = AlarmWatch(site.store_path)
    try:
        flooder.born()
        flood_started = time.monotonic()
        flooder.start()
        # The panic comes once the whole flood is out: whatever central has not yet stored is queued before it.
        flooder.join(timeout=120)
        published_s = time.monotonic() - flood_started
        acked_at_press = _acked(site, FLOODER)
        watch.start()
        z.drive(PANIC_PIN, "low")
        time.sleep(PANIC_HOLD_S)  # the press itself
        z.drive(PANIC_PIN, "high")
        wait_until(lambda: flooder.panic_at is not None, timeout=10, message="gate-z's panic at the broker")
        assert flooder.panic_at is not None
        seen: list[float] = []

        def panic_alarm() -> bool:
            began = time.monotonic()
            found = [a for a in cli_json(site, "alarms") if a["agent"] == PANICKER and a["kind"] == "panic"]
            if found:
                seen[:] = [began, time.monotonic()]
            return bool(found)

        try:
            # Every half second: a command line at full tilt would take a core from central under test.
            wait_until(panic_alarm, timeout=PANIC_WATCH_S, interval=0.5, message="gate-z's panic alarm")
        except AssertionError:
            raise AssertionError(f"gate-z's panic was no alarm {PANIC_WATCH_S} s after it was sent, under a flood of "
                                 f"{FLOOD_SCANS} scans (central's ack of the flood: {_acked(site, FLOODER)})") from None
        watch.stop()
        if watch.seen_at is not None:
            within_s = watch.seen_at - flooder.panic_at  # the store's own table, looked at every 5 ms
            how = "the store's alarms table"
        else:
            within_s = seen[1] - flooder.panic_at  # the command-line look that found it had ended: an upper bound
            how = f"the command line (the table could not be watched: {watch.unavailable})"
        flood_acked_at_alarm = _acked(site, FLOODER)
        assert within_s <= PANIC_ALARM_S, (
            f"gate-z's panic became an alarm {within_s:.2f} s after it was sent (allowed {PANIC_ALARM_S} s; seen by "
            f"{how}), under a flood of {FLOOD_SCANS} scans published in {published_s:.1f} s; central had acked "
            f"{acked_at_press} of them at the press and {flood_acked_at_alarm} when the alarm was seen")
        try:
            wait_until(lambda: _acked(site, FLOODER) >= FLOOD_SCANS, timeout=FLOOD_STORED_S, interval=1.0,
                       message="the whole flood stored")
        except AssertionError:
            raise AssertionError(f"the flood was not stored within {FLOOD_STORED_S} s: central's ack of "
                                 f"{FLOODER} is {_acked(site, FLOODER)} of {FLOOD_SCANS}") from None
        stored_s = time.monotonic() - flood_started
    finally:
        watch.stop()
        flooder.close()
    scans = cli_json(site, "events", "--agent", FLOODER, "--kind", "scan")
    assert [e["eseq"] for e in scans] == list(range(1, FLOOD_SCANS + 1))
    numbers.made = numbers.stored = len(scans)
    numbers.details.update(
        flood_scans=FLOOD_SCANS, published_in_s=round(published_s, 1), stored_in_s=round(stored_s, 1),
        ingest_rate_per_s=round(FLOOD_SCANS / stored_s), panic_alarm_within_s=round(within_s, 3), seen_by=how,
        flood_acked_when_alarm_seen=flood_acked_at_alarm,
        flood_acked_at_press=acked_at_press,
    )
