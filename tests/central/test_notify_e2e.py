"""Issue 14 end to end: a panic on a real Mosquitto, central's real parts, Apprise to local receivers.

The grid's duty phone hears of a panic at once; the community's only when it
escalates to the community; both hear of the acknowledgement. A receiver that
is down for 20 s still gets its message, and the alarm's trail shows why it
was late.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from central.app import Central
from central.config import parse_config
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store.dashboard import StoreReader
from tests.central.http_fakes import Receiver
from tests.support import Broker, free_port, wait_until
from tests.web.conftest import PLAN
from wire import topics
from wire.messages import Event, EventKind

AGENT = "school-9-gate-1"  # grid chengzhou-g1 of community chengzhou
GRID_S = 2.0


def start_central(tmp_path: Path, broker: Broker, targets: str) -> Central:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    PlanRegistry.for_data_dir(data).add(parse_plan_bytes(PLAN.encode()))
    config = parse_config(
        f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'[escalation]\ngrid_s = {GRID_S}\ncommunity_s = 600\nstreet_s = 600\n'
        f'[web]\npublic_url = "https://gp.example"\n{targets}')
    central = Central(config, tracker=False, web=False)
    central.start()
    assert central.ingest.wait_connected(10)  # subscribed: a message published now is not lost
    return central


def publish_panic(broker: Broker, eseq: int = 1) -> float:
    now = time.time()
    event = Event(eseq=eseq, boot_id="boot-n", kind=EventKind.PANIC, source="office-panic", ts=int(now * 1000),
                  mono_ms=5000, clock_synced=True)
    broker.pub(topics.evt(AGENT), event.to_payload(), qos=1)
    return now


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {"grid": Receiver().start(), "community": Receiver().start()}
    try:
        yield made
    finally:
        for r in made.values():
            r.stop()


def alarm_of(central: Central) -> int:
    alarms = wait_until(lambda: central.alarm_book and central.alarm_book.alarms(), timeout=5, message="the alarm")
    return alarms[0].id


@pytest.mark.slow
def test_grid_at_once_community_on_escalation_both_on_acknowledgement(tmp_path: Path, broker: Broker,
                                                                      receivers: dict[str, Receiver]) -> None:
    grid, community = receivers["grid"], receivers["community"]
    central = start_central(tmp_path, broker, f"""
[[notify]]
url = "{grid.url()}"
unit = "chengzhou-g1"
name = "grid duty phone"
[[notify]]
url = "{community.url()}"
unit = "chengzhou"
lang = "en"
""")
    try:
        sent = publish_panic(broker)
        first = wait_until(grid.received, timeout=3, message="the grid's message within 3 s")[0]
        assert first.at - sent < 3.0
        assert first.title == "【紧急求助】第九中学东门 · 新告警"
        alarm_id = alarm_of(central)
        assert f"查看: https://gp.example/alarms/{alarm_id}" in first.body
        assert community.received() == []  # still at the grid's tier

        escalated = wait_until(community.received, timeout=GRID_S + 5, message="the community's message")[0]
        assert escalated.at - sent >= GRID_S
        assert escalated.title == "[Panic] 第九中学东门: escalated to 城洲社区 (community)"
        assert len(grid.received()) == 1  # the grid is not told twice of the same alarm

        assert central.alarm_book is not None
        central.alarm_book.acknowledge(alarm_id, "Lin")
        acked = time.time()
        g = wait_until(lambda: len(grid.received()) == 2 and grid.received()[1], timeout=3, message="the grid's ack")
        c = wait_until(lambda: len(community.received()) == 2 and community.received()[1], timeout=3,
                       message="the community's ack")
        assert g.title == "【紧急求助】第九中学东门 · 已由Lin确认并解除"
        assert c.title == "[Panic] 第九中学东门: acknowledged by Lin and resolved"
        assert max(g.at, c.at) - acked < 3.0
        reader = StoreReader(central.store.path)

        def attempts() -> list[tuple[object, object]]:
            trail = reader.alarm(alarm_id)["trail"]  # type: ignore[index]
            return [(s["action"], s.get("target")) for s in trail if str(s["action"]).startswith("notify")]

        notes = wait_until(lambda: len(attempts()) == 4 and attempts(), timeout=3, message="four attempts in the trail")
        assert notes[:2] == [("notify-sent", "grid duty phone"), ("notify-sent", "json@chengzhou")]
        assert sorted(notes[2:]) == [("notify-sent", "grid duty phone"), ("notify-sent", "json@chengzhou")]  # the acks, in parallel
    finally:
        central.stop()


@pytest.mark.slow
def test_a_receiver_down_for_20_s_still_gets_the_message(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    central = start_central(tmp_path, broker, f"""
[[notify]]
url = "json://127.0.0.1:{port}/alarms"
unit = "chengzhou-g1"
name = "grid duty phone"
""")
    late = Receiver(port)
    try:
        sent = publish_panic(broker)
        alarm_id = alarm_of(central)
        reader = StoreReader(central.store.path)

        def failures() -> list[dict[str, object]]:
            return [s for s in reader.alarm(alarm_id)["trail"] if s["action"] == "notify-failed"]  # type: ignore[index]

        wait_until(failures, timeout=5, message="a failed attempt in the trail")
        time.sleep(max(0.0, sent + 20 - time.time()))  # the receiver stays down for 20 s: that is the test
        late.start()
        got = wait_until(late.received, timeout=35, interval=0.2, message="the message once the receiver is back")
        assert got[0].title == "【紧急求助】第九中学东门 · 新告警"
        assert got[0].at - sent >= 20
        trail = reader.alarm(alarm_id)["trail"]  # type: ignore[index]
        notes = [s for s in trail if str(s["action"]).startswith("notify")]
        assert len(notes) >= 4 and notes[-1]["action"] == "notify-sent"
        assert {s["detail"] for s in notes[:-1]} == {"A Connection error occurred sending JSON notification to 127.0.0.1."}
        assert trail[0]["action"] == "raise"  # the alarm's own steps stand first, unchanged
    finally:
        late.stop()
        central.stop()
