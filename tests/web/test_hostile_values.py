"""Every message an agent may send, with wire-valid extreme values, through central's real parts to its pages.

The decoders take 64-bit boundary integers, any name up to 64 characters and
free scalar keys; the fuzz run (bench/fuzz.py) fed only the decoders. Here
such messages go through a real Mosquitto into central (ingest, presence, the
clock estimator, the eseq ledger, the alarm book, the completion tracker,
Home Assistant discovery, the bus) and then to the dashboard: nothing may log
an exception (the test fixture fails on one), every event is stored once and
acked, no batch fails, every page and API answer is 200.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from central.app import Central
from central.config import parse_config
from tests.support import Broker, wait_until
from tests.web.conftest import API, BASE, PAGES, World, login
from wire import topics
from wire.codec import pack
from wire.messages import Ack

INT64_MAX = 2**63 - 1
AGENTS = ("school-9-gate-1", "stray-agent-1")  # planned, and not
TIMES = [-INT64_MAX, -1, 0, 1, 2**53 + 1, 253402300800000, INT64_MAX]  # ... 10000-01-01, the last ms
MONOS = [0, 1, INT64_MAX]
COUNTS = [0, INT64_MAX]
NAMES = ["x" * 64, "a/b", "+", "#", "第九中学东门北侧围墙", " ", "<script>alert(1)</script>", "é" * 64, "\x00", "."]
FREE = [2**64 - 1, -(2**63), 1e308, -0.0, float("nan"), float("inf"), True, "s" * 64, "", "\u202e"]

times, monos, counts, names, free = (st.sampled_from(v) for v in (TIMES, MONOS, COUNTS, NAMES, FREE))
KINDS = ("alarm", "restore", "tamper", "panic", "scan", "fault", "output")


@st.composite
def events(draw: st.DrawFn, boot_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    body: dict[str, Any] = {"kind": kind, "boot_id": boot_id, "source": draw(names), "ts": draw(times),
                            "mono_ms": draw(monos), "clock_synced": draw(st.booleans()),
                            "replayed": draw(st.booleans())}
    if kind == "scan":
        body["tag"] = draw(st.sampled_from(["67003B51C6", "AB", "F" * 32]))
    elif kind == "fault":
        body.update(code=draw(names), detail=draw(st.sampled_from(["", "d" * 512, "\x00\n<b>"])))
    elif kind == "output":
        body.update(output=draw(names), on=draw(st.booleans()))
    body.update(draw(st.dictionaries(st.sampled_from(["state", "x" * 64, "level", "é"]), free, max_size=2)))
    return body


@st.composite
def rounds(draw: st.DrawFn) -> dict[str, Any]:
    """One agent's connection: status, birth, telemetry, state, events, a command response."""
    bdseq = draw(counts)
    boot_id = draw(names)  # one boot per connection: its events are time samples for each other
    item = {"name": draw(names), "mcu": draw(st.sampled_from([None, 1, "x"])), "extra": draw(free)}
    return {
        "agent": draw(st.sampled_from(AGENTS)),
        "status": {"state": draw(st.sampled_from(["online", "offline", "disconnected"])), "bdseq": bdseq,
                   "ts": draw(times)},
        "birth": {"bdseq": bdseq, "boot_id": boot_id, "fw": draw(names), "config_hash": draw(names),
                  "versions": {draw(names): draw(names)},
                  "inventory": {"zones": [item], "buttons": [item], "readers": [item], "outputs": [item]},
                  "mono_ms": draw(monos), "ts": draw(times), "clock_synced": draw(st.booleans())},
        "tele": {"uptime_s": draw(st.sampled_from([0, 1e308, INT64_MAX, 0.5])), "outbox_depth": draw(counts),
                 "reconnects": draw(counts), "clock_synced": draw(st.booleans()), "ts": draw(times),
                 "mono_ms": draw(monos), "cpu_temp_c": draw(st.sampled_from([-1e308, 1e308, -273.15, 2**64 - 1])),
                 "rss_kb": draw(st.sampled_from([0, 2**64 - 1])), "counters": {draw(names): draw(counts)}},
        "state": {"ts": draw(times), "inputs": {draw(names): draw(st.sampled_from(["normal", "alarm", "??"]))},
                  "outputs": {draw(names): draw(st.booleans())}, "latched": [draw(names)]},
        "events": draw(st.lists(events(boot_id), min_size=1, max_size=4)),
        "resp": {"txn": draw(names), "ok": draw(st.booleans()), "error": draw(st.sampled_from(["", "e" * 4000]))},
    }


class Agents:
    """One MQTT client publishing for both agents; records their acks."""

    def __init__(self, broker: Broker) -> None:
        self.acks: dict[str, list[int]] = {a: [] for a in AGENTS}
        self.eseq = {a: itertools.count(1) for a in AGENTS}
        self.last = {a: 0 for a in AGENTS}
        subscribed: list[int] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-agents", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.acks[topics.parse(m.topic).agent_id].append(
            Ack.from_payload(m.payload).eseq)
        self.client.on_subscribe = lambda *a: subscribed.append(1)
        self.client.on_connect = lambda c, *a: c.subscribe([(topics.ack(a), 1) for a in AGENTS])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(lambda: subscribed, message="subscribed to the acks")

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def send(self, r: dict[str, Any]) -> None:
        agent = r["agent"]
        self.pub(topics.status(agent), json.dumps(r["status"]).encode(), retain=True)
        self.pub(topics.birth(agent), pack(r["birth"]))
        self.pub(topics.tele(agent), pack(r["tele"]))
        self.pub(topics.state(agent), pack(r["state"]), retain=True)
        for e in r["events"]:
            self.last[agent] = next(self.eseq[agent])
            self.pub(topics.evt(agent), pack({**e, "eseq": self.last[agent]}))
        self.pub(topics.cmd_resp(agent), pack(r["resp"]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(world: World, broker: Broker) -> Iterator[Central]:
    config = parse_config(
        f'timezone = "Asia/Shanghai"\ndata_dir = "{world.config.data_dir}"\n'
        f'[store]\nurl = "sqlite://{world.config.store.path}"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        '[homeassistant]\nenabled = true\n')
    c = Central(config, web=False)
    c.start()
    try:
        assert c.ingest.wait_connected(10)
        yield c
    finally:
        c.stop()


@pytest.fixture
def agents(broker: Broker) -> Iterator[Agents]:
    a = Agents(broker)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.build_app(), base_url=BASE) as c:
        login(c, "duty")
        yield c


def _event(kind: str, ts: int, mono_ms: int, synced: bool, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "boot_id": "b", "source": "office-panic", "ts": ts, "mono_ms": mono_ms,
            "clock_synced": synced, "replayed": False, **fields}


def _round(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A plain connection of the planned agent carrying ``events``."""
    return {"agent": AGENTS[0], "status": {"state": "online", "bdseq": 1, "ts": 0},
            "birth": {"bdseq": 1, "boot_id": "b", "fw": "1", "inventory": {"buttons": [{"name": "office-panic"}]}},
            "tele": {"uptime_s": 1, "outbox_depth": 0, "reconnects": 0, "clock_synced": True, "ts": 0, "mono_ms": 0},
            "state": {"ts": 0, "inputs": {}, "outputs": {}}, "events": events, "resp": {"txn": "t", "ok": True}}


@example(r=_round([_event("panic", -INT64_MAX, INT64_MAX, True),  # an offset near -2**64 (commit 4f4fc12)
                   _event("panic", 0, 0, False)]))
@example(r=_round([_event("alarm", INT64_MAX, INT64_MAX, True, state=float("nan"), level=float("-inf"))]))
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(r=rounds())
def test_extreme_but_valid_messages_are_stored_acked_and_shown(r: dict[str, Any], central: Central, agents: Agents,
                                                               client: TestClient, world: World) -> None:
    agent = r["agent"]
    agents.send(r)
    last = agents.last[agent]
    wait_until(lambda: last in agents.acks[agent], message=f"ack of {agent}'s eseq {last}")
    held = [e.eseq for e in world.store.list_events(agent=agent)]
    assert held == list(range(1, last + 1))
    counters = central.ingest.counters
    assert counters.get("store_errors", 0) == 0 and counters.get("listener_errors", 0) == 0, counters
    assert not any(k.startswith("bad_message") for k in counters), counters
    assert central.homeassistant.counters["store_errors"] == 0  # type: ignore[union-attr]
    for path in [*PAGES, *[p for p in API if p != "/api/stream"], "/agents?agent=" + agent]:
        response = client.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        if path.startswith("/api/alarms/") and response.status_code == 404:
            continue
        assert response.status_code == 200, path
    assert agent in client.get("/api/agents").text
    central.tracker.tick(time.time())  # type: ignore[union-attr]  # closes rounds, rolls days: at any time held
    central.alarm_book.tick()  # type: ignore[union-attr]
