"""Home Assistant discovery: payloads against the documented keys, and central on a real Mosquitto."""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import jinja2
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.app import Central
from central.config import CentralConfig, parse_config
from central.homeassistant import (
    AGENT_AVAILABILITY_TEMPLATE,
    CENTRAL_AVAILABILITY_TEMPLATE,
    COMPLETION_ATTRIBUTES_TEMPLATE,
    COMPLETION_TEMPLATE,
    MAX_ITEMS_PER_KIND,
    TAG_TEMPLATE,
    Entity,
    agent_entities,
    event_updates,
    slug,
    snapshot_states,
    unit_entity,
)
from central.ingest import Ingest
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store import Store, StoredEvent
from tests.support import Broker, Processes, wait_until
from wire import topics
from wire.messages import AgentState, AgentStatus, Birth, Event, EventKind, StateSnapshot

AGENT = "school-9-gate-1"
PREFIX = "homeassistant"
T0 = 1_700_000_000_000

# -- what Home Assistant documents (home-assistant.io, source/_integrations/<component>.mqtt.markdown) ----------
# The keys each component's configuration lists for single-component discovery (``platform`` belongs to device
# discovery only). An unknown key is a failure: Home Assistant rejects the whole config.

_ENTITY_COMMON = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic", "device", "device_class",
    "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "payload_available", "payload_not_available", "qos", "unique_id",
    "value_template",
})
DOCUMENTED = {
    "binary_sensor": _ENTITY_COMMON | {"expire_after", "force_update", "off_delay", "payload_off", "payload_on",
                                       "state_topic"},
    "event": _ENTITY_COMMON | {"event_types", "state_topic"},
    "sensor": _ENTITY_COMMON | {"expire_after", "force_update", "last_reset_value_template", "options",
                                "suggested_display_precision", "state_class", "state_topic", "unit_of_measurement"},
    "tag": frozenset({"topic", "value_template", "device"}),
}
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
    "sensor": {"state_topic"},
    "tag": {"topic", "device"},
}
DEVICE_KEYS = frozenset({"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
                         "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"})
AVAILABILITY_KEYS = frozenset({"payload_available", "payload_not_available", "topic", "value_template"})
DEVICE_CLASSES = {
    "binary_sensor": {"safety", "tamper"},  # the two of Home Assistant's binary sensor classes we use
    "event": {"button", "doorbell", "motion"},
    "sensor": set(),
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
_OBJECT_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_documented(component: str, config: Mapping[str, Any]) -> None:
    """Fail unless ``config`` uses only the keys Home Assistant documents for ``component``, with the required ones."""
    unknown = set(config) - DOCUMENTED[component]
    assert not unknown, f"{component}: undocumented keys {sorted(unknown)}"
    missing = REQUIRED[component] - set(config)
    assert not missing, f"{component}: missing {sorted(missing)}"
    device = config["device"]  # ours always tie to a device (the tag scanner requires one)
    assert set(device) <= DEVICE_KEYS, sorted(set(device) - DEVICE_KEYS)
    assert isinstance(device["identifiers"], list) and device["identifiers"]
    assert all(isinstance(v, str) and v for v in device["identifiers"])
    assert isinstance(device["name"], str) and device["name"]
    if component != "tag":
        assert isinstance(config["unique_id"], str) and config["unique_id"]
        assert not ({"availability", "availability_topic"} <= set(config)), "availability and availability_topic"
        for item in config.get("availability", []):
            assert set(item) <= AVAILABILITY_KEYS and "topic" in item, item
        assert config.get("availability_mode", "latest") in {"all", "any", "latest"}
        if "device_class" in config:
            assert config["device_class"] in DEVICE_CLASSES[component]
    if component == "event":
        assert config["event_types"] == ["panic"]
    if component == "sensor":
        assert config["state_class"] in STATE_CLASSES
        assert isinstance(config["suggested_display_precision"], int)
    for key in ("state_topic", "topic", "json_attributes_topic"):
        if key in config:
            assert_publishable_topic(config[key])


def assert_publishable_topic(topic: str) -> None:
    assert topic and "+" not in topic and "#" not in topic and "\0" not in topic, topic
    assert all(level for level in topic.split("/")), topic
    assert len(topic.encode()) < 65536


def check_entity(e: Entity) -> None:
    check_documented(str(e.component), json.loads(e.payload()))
    assert _OBJECT_ID_RE.match(e.object_id), e.object_id
    levels = e.config_topic(PREFIX).split("/")
    assert levels == [PREFIX, str(e.component), "gridpatrol", e.object_id, "config"]


# -- a birth as the store keeps it --------------------------------------------------

BIRTH: dict[str, Any] = {
    "bdseq": 1, "boot_id": "boot-a", "fw": "0.3.0",
    "inventory": {
        "zones": [{"name": "north-fence", "pin": 17, "contact": "nc"}, {"name": "east-wall", "mcu": "front-end", "input": 1}],
        "buttons": [{"name": "office-panic", "pin": 27, "hold_ms": 1500}],
        "readers": [{"name": "gate-1", "port": "/dev/serial0", "protocol": "rdm6300"}],
        "outputs": [{"name": "siren", "pin": 22}],
    },
}


def _availability(agent: str) -> list[dict[str, str]]:
    return [
        {"topic": f"gridpatrol/v1/{agent}/status",
         "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
         "payload_available": "online", "payload_not_available": "offline"},
        {"topic": "gridpatrol/v1/central/status", "value_template": "{{ 'online' if value_json.online else 'offline' }}",
         "payload_available": "online", "payload_not_available": "offline"},
    ]


DEVICE = {"identifiers": [f"gridpatrol-{AGENT}"], "name": "No. 9 Middle School, east gate", "manufacturer": "Gridpatrol",
          "model": "Gridpatrol agent", "sw_version": "0.3.0"}
HA = f"gridpatrol/v1/central/ha/{AGENT}"
EXPECTED_CONFIGS = {
    f"homeassistant/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config": {
        "name": "north-fence", "unique_id": f"gridpatrol_{AGENT}_zone_north-fence", "device": DEVICE,
        "device_class": "safety", "payload_on": "ON", "payload_off": "OFF", "state_topic": f"{HA}/zone_north-fence",
        "availability": _availability(AGENT), "availability_mode": "all"},
    f"homeassistant/binary_sensor/gridpatrol/{AGENT}_zone_east-wall/config": {
        "name": "east-wall", "unique_id": f"gridpatrol_{AGENT}_zone_east-wall", "device": DEVICE,
        "device_class": "safety", "payload_on": "ON", "payload_off": "OFF", "state_topic": f"{HA}/zone_east-wall",
        "availability": _availability(AGENT), "availability_mode": "all"},
    f"homeassistant/binary_sensor/gridpatrol/{AGENT}_tamper_east-wall/config": {
        "name": "east-wall tamper", "unique_id": f"gridpatrol_{AGENT}_tamper_east-wall", "device": DEVICE,
        "device_class": "tamper", "payload_on": "ON", "payload_off": "OFF", "state_topic": f"{HA}/tamper_east-wall",
        "availability": _availability(AGENT), "availability_mode": "all"},
    f"homeassistant/event/gridpatrol/{AGENT}_panic_office-panic/config": {
        "name": "office-panic", "unique_id": f"gridpatrol_{AGENT}_panic_office-panic", "device": DEVICE,
        "device_class": "button", "event_types": ["panic"], "icon": "mdi:alarm-light",
        "state_topic": f"{HA}/panic_office-panic", "availability": _availability(AGENT), "availability_mode": "all"},
    f"homeassistant/tag/gridpatrol/{AGENT}_reader_gate-1/config": {
        "device": DEVICE, "topic": f"{HA}/reader_gate-1", "value_template": "{{ value_json.tag }}"},
}


def test_an_agent_is_announced_in_full() -> None:
    entities, dropped = agent_entities(AGENT, BIRTH, name="No. 9 Middle School, east gate")
    assert dropped == 0
    assert {e.config_topic(PREFIX): json.loads(e.payload()) for e in entities} == EXPECTED_CONFIGS
    assert {e.object_id: e.state_topic for e in entities} == {
        f"{AGENT}_zone_north-fence": f"{HA}/zone_north-fence",
        f"{AGENT}_zone_east-wall": f"{HA}/zone_east-wall",
        f"{AGENT}_tamper_east-wall": f"{HA}/tamper_east-wall",
        f"{AGENT}_panic_office-panic": None,  # events and scans are not retained: nothing to clear
        f"{AGENT}_reader_gate-1": None,
    }
    for e in entities:
        check_entity(e)


def test_a_unit_sensor_reads_the_retained_completion_json() -> None:
    e = unit_entity("chengzhou-g1", name="Grid 1", tier="grid")
    check_entity(e)
    assert e.config_topic(PREFIX) == "homeassistant/sensor/gridpatrol/unit_completion_chengzhou-g1/config"
    assert json.loads(e.payload()) == {
        "name": "Completion", "unique_id": "gridpatrol_unit_completion_chengzhou-g1",
        "device": {"identifiers": ["gridpatrol_unit_chengzhou-g1"], "name": "Grid 1", "manufacturer": "Gridpatrol",
                   "model": "Patrol unit (grid)"},
        "state_topic": "gridpatrol/v1/central/completion/chengzhou-g1",
        "value_template": COMPLETION_TEMPLATE, "unit_of_measurement": "%", "state_class": "measurement",
        "suggested_display_precision": 1,
        "json_attributes_topic": "gridpatrol/v1/central/completion/chengzhou-g1",
        "json_attributes_template": COMPLETION_ATTRIBUTES_TEMPLATE, "icon": "mdi:shield-check",
        "availability": [{"topic": "gridpatrol/v1/central/status",
                          "value_template": "{{ 'online' if value_json.online else 'offline' }}",
                          "payload_available": "online", "payload_not_available": "offline"}],
    }


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's MQTT templates see: ``value`` (text) and ``value_json``."""
    text = payload.decode()
    return jinja2.Environment().from_string(template).render(value=text, value_json=json.loads(text))


def test_templates_render_what_home_assistant_compares() -> None:
    completion = {"date": "2024-05-01", "unit": "g1", "tier": "grid", "completion": None,
                  "rollup": {"unit": "g1", "tier": "grid", "rounds_scheduled": 3, "completion": 2 / 3}}
    assert render(COMPLETION_TEMPLATE, json.dumps(completion).encode()) == "66.7"
    completion["rollup"]["completion"] = None  # type: ignore[index]
    assert render(COMPLETION_TEMPLATE, json.dumps(completion).encode()) == "None"  # the sensor's "unknown"
    assert json.loads(render(COMPLETION_ATTRIBUTES_TEMPLATE, json.dumps(completion).encode())) == completion["rollup"]
    for state, shown in (("online", "online"), ("offline", "offline"), ("disconnected", "offline")):
        status = AgentStatus(AgentState(state), 3, T0).to_payload()
        assert render(AGENT_AVAILABILITY_TEMPLATE, status) == shown
    assert render(CENTRAL_AVAILABILITY_TEMPLATE, b'{"online": true, "ts": 1}') == "online"
    assert render(CENTRAL_AVAILABILITY_TEMPLATE, b'{"online": false, "ts": 1}') == "offline"
    scan = event_updates(stored(EventKind.SCAN, "gate-1", tag="67003B51C6"))[0]
    assert render(TAG_TEMPLATE, scan.payload) == "67003B51C6"


def stored(kind: EventKind, source: str, *, eseq: int = 7, replayed: bool = False, fields: Mapping[str, Any] = {},
           **more: Any) -> StoredEvent:
    return StoredEvent(agent=AGENT, eseq=eseq, kind=str(kind), source=source, ts=T0, ts_est=T0, ts_estimated=False,
                       received_ts=T0, replayed=replayed, fields={**fields, **more})


def test_what_each_event_means_for_home_assistant() -> None:
    def updates(e: StoredEvent) -> list[tuple[str, Any, bool]]:
        out = []
        for u in event_updates(e):
            body = u.payload.decode()
            out.append((u.topic, body if body in ("ON", "OFF") else json.loads(body), u.retain))
        return out

    assert updates(stored(EventKind.ALARM, "east-wall")) == [(f"{HA}/zone_east-wall", "ON", True),
                                                             (f"{HA}/tamper_east-wall", "OFF", True)]
    assert updates(stored(EventKind.TAMPER, "east-wall", state="tamper-cut")) == [
        (f"{HA}/zone_east-wall", "ON", True), (f"{HA}/tamper_east-wall", "ON", True)]
    assert updates(stored(EventKind.RESTORE, "east-wall")) == [(f"{HA}/zone_east-wall", "OFF", True),
                                                               (f"{HA}/tamper_east-wall", "OFF", True)]
    assert updates(stored(EventKind.PANIC, "office-panic", replayed=True)) == [(f"{HA}/panic_office-panic", {
        "event_type": "panic", "agent": AGENT, "source": "office-panic", "eseq": 7, "ts": T0, "replayed": True}, False)]
    assert updates(stored(EventKind.SCAN, "gate-1", tag="67003B51C6")) == [(f"{HA}/reader_gate-1", {
        "tag": "67003B51C6", "agent": AGENT, "reader": "gate-1", "eseq": 7, "ts": T0, "replayed": False}, False)]
    assert updates(stored(EventKind.FAULT, "gate-1", code="reader-lost", detail="gone")) == []
    assert updates(stored(EventKind.SCAN, "gate-1")) == []  # a scan without a tag is not a tag


def test_loop_states_from_the_agents_snapshot() -> None:
    snap = {"ts": T0, "inputs": {"north-fence": "alarm", "east-wall": "tamper-short", "west": "unknown",
                                 "south": "normal"}}
    assert snapshot_states(AGENT, snap, ["north-fence", "east-wall", "west", "south", "absent"]) == {
        f"{HA}/zone_north-fence": b"ON", f"{HA}/tamper_north-fence": b"OFF",
        f"{HA}/zone_east-wall": b"ON", f"{HA}/tamper_east-wall": b"ON",
        f"{HA}/zone_south": b"OFF", f"{HA}/tamper_south": b"OFF",
    }
    assert snapshot_states(AGENT, None, ["north-fence"]) == {}
    assert snapshot_states(AGENT, {"inputs": ["not", "a", "map"]}, ["north-fence"]) == {}


def test_odd_names_get_distinct_safe_topics_and_big_inventories_are_cut() -> None:
    names = ["a.b", "a_b", "a/b/#", "东门", "+", "A"]
    birth = {"fw": "1", "inventory": {"zones": [{"name": n} for n in names] + [{"pin": 3}, "zone", {"name": ""},
                                                                                 {"name": "a_b"}]}}
    entities, dropped = agent_entities(AGENT, birth)
    assert dropped == 4  # no name, not a map, an empty name, a repeated name
    assert [e.config["name"] for e in entities] == names
    assert len({e.object_id for e in entities}) == len(names)
    assert slug("a_b") == "a_b" and slug("a.b") != slug("a_b") and slug("a.b").startswith("a_b-")
    for e in entities:
        check_entity(e)
    many = {"inventory": {"buttons": [{"name": f"b{i}"} for i in range(MAX_ITEMS_PER_KIND + 5)]}}
    entities, dropped = agent_entities(AGENT, many)
    assert (len(entities), dropped) == (MAX_ITEMS_PER_KIND, 5)


_names = st.text(min_size=0, max_size=70)
_item = st.one_of(st.fixed_dictionaries({"name": _names}, optional={"mcu": st.one_of(st.none(), _names)}),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.integers(), st.none())
_inventory = st.dictionaries(st.sampled_from(["zones", "buttons", "readers", "outputs", "other"]),
                             st.one_of(st.lists(_item, max_size=6), st.text(max_size=3), st.none()), max_size=5)
_birth = st.one_of(st.fixed_dictionaries({"inventory": _inventory}, optional={"fw": st.one_of(_names, st.integers())}),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_birth, st.one_of(st.none(), _names))
def test_any_birth_gives_documented_configs_on_distinct_topics(birth: dict[str, Any], name: str | None) -> None:
    entities, dropped = agent_entities(AGENT, birth, name=name)
    assert dropped >= 0
    for e in entities:
        check_entity(e)
    config_topics = [e.config_topic(PREFIX) for e in entities]
    assert len(set(config_topics)) == len(config_topics)
    unique_ids = [e.config["unique_id"] for e in entities if "unique_id" in e.config]
    assert len(set(unique_ids)) == len(unique_ids)
    for e in entities:
        if e.state_topic is not None:
            assert_publishable_topic(e.state_topic)


@given(st.sampled_from(list(EventKind)), _names,
       st.dictionaries(st.sampled_from(["tag", "state", "code", "x"]), st.one_of(st.text(max_size=12), st.integers()),
                       max_size=3))
def test_any_event_gives_publishable_plain_payloads(kind: EventKind, source: str, fields: dict[str, str]) -> None:
    for u in event_updates(stored(kind, source, fields=fields)):
        assert_publishable_topic(u.topic)
        assert u.topic.startswith(f"{HA}/")
        assert u.payload in (b"ON", b"OFF") or isinstance(json.loads(u.payload), dict)


# -- central on a real broker ----------------------------------------------------------


class Watcher:
    """Every message on Home Assistant's and central's topics, as a Home Assistant would receive them."""

    def __init__(self, broker: Broker, filters: tuple[str, ...] = (f"{PREFIX}/#", "gridpatrol/v1/central/#")) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._gone = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_disconnect = lambda *a: self._gone.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10), "watcher not subscribed"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def all(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self._gone.wait(10)
        self.client.loop_stop()
        self.client.on_message = None  # no cycle left: the client (and its socket pair) goes at once


def retained(broker: Broker, topic_filter: str) -> dict[str, bytes]:
    """What the broker holds retained under ``topic_filter`` now.

    A marker published after the subscription is granted arrives after every
    retained message the broker queued for it (Mosquitto keeps one queue per client).
    """
    marker = f"test-marker/{uuid.uuid4().hex}"
    held: dict[str, bytes] = {}
    done, gone = threading.Event(), threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain:
            held[msg.topic] = msg.payload

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"snap-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe([(topic_filter, 1), (marker, 1)])
    client.on_subscribe = lambda c, *a: c.publish(marker, b"x", qos=1)
    client.on_message = on_message
    client.on_disconnect = lambda *a: gone.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(10), "retained snapshot did not finish"
    finally:
        client.disconnect()
        gone.wait(10)
        client.loop_stop()
    return held


class WireAgent:
    """An agent as the wire sees it: retained JSON status, msgpack birth, events and snapshot."""

    def __init__(self, broker: Broker, agent_id: str = AGENT) -> None:
        self.agent_id = agent_id
        self._gone = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"wire-{agent_id}", protocol=mqtt.MQTTv5)
        self.client.on_disconnect = lambda *a: self._gone.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.eseq = 0

    def _pub(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def online(self, inventory: Mapping[str, Any], *, bdseq: int = 1, fw: str = "0.3.0") -> None:
        self._pub(topics.status(self.agent_id), AgentStatus(AgentState.ONLINE, bdseq, T0).to_payload(), retain=True)
        self.birth(inventory, bdseq=bdseq, fw=fw)

    def birth(self, inventory: Mapping[str, Any], *, bdseq: int = 1, fw: str = "0.3.0") -> None:
        birth = Birth(bdseq=bdseq, boot_id="boot-a", fw=fw,
                      inventory={k: tuple(v) for k, v in inventory.items()})
        self._pub(topics.birth(self.agent_id), birth.to_payload())

    def snapshot(self, inputs: Mapping[str, str]) -> None:
        self._pub(topics.state(self.agent_id), StateSnapshot(ts=T0, inputs=inputs, outputs={}).to_payload(), retain=True)

    def event(self, kind: EventKind, source: str, *, eseq: int | None = None, replayed: bool = False,
              **fields: Any) -> None:
        self.eseq = self.eseq + 1 if eseq is None else eseq
        e = Event(eseq=self.eseq, boot_id="boot-a", kind=kind, source=source, ts=T0 + self.eseq, mono_ms=self.eseq,
                  clock_synced=True, replayed=replayed, fields=fields)
        self._pub(topics.evt(self.agent_id), e.to_payload())

    def close(self) -> None:
        self.client.disconnect()
        self._gone.wait(10)
        self.client.loop_stop()


PLAN = b"""timezone = "Asia/Shanghai"
unit = [
  { id = "fengze", tier = "district", name = "Fengze District" },
  { id = "quanxiu", tier = "street", parent = "fengze", name = "Quanxiu Street" },
  { id = "chengzhou", tier = "community", parent = "quanxiu", name = "Chengzhou Community" },
  { id = "chengzhou-g1", tier = "grid", parent = "chengzhou", name = "Grid 1" },
]
agent = [ { id = "school-9-gate-1", unit = "chengzhou-g1", name = "No. 9 Middle School, east gate" } ]
checkpoint = [ { id = "cp-east-gate", unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-1" } ]
[[team]]
id = "volunteers-7"
unit = "chengzhou-g1"
members = [ { name = "Lin", tag = "67003B51C6" } ]
[[route]]
id = "day-loop"
unit = "chengzhou-g1"
teams = ["volunteers-7"]
order = "any"
checkpoints = ["cp-east-gate"]
window = { start = "00:00", end = "00:00", every_min = 60 }
"""


UNITS = ("fengze", "quanxiu", "chengzhou", "chengzhou-g1")


def central_config(root: Path, broker: Broker, *, enabled: bool = True) -> CentralConfig:
    return parse_config(f"""timezone = "Asia/Shanghai"
data_dir = "{root}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "central-ha-test"
[homeassistant]
enabled = {str(enabled).lower()}
""")


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    w = Watcher(broker)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def agent(broker: Broker) -> Iterator[WireAgent]:
    a = WireAgent(broker)
    try:
        yield a
    finally:
        a.close()


def running_central(config: CentralConfig) -> Central:
    central = Central(config, alarms=False, web=False)
    central.start()
    assert central.ingest.wait_connected(10)
    return central


INVENTORY = {k: v for k, v in BIRTH["inventory"].items()}


def assert_plain(messages: list[tuple[str, bytes, bool]]) -> None:
    """Everything Home Assistant reads from us is JSON or plain text, never msgpack."""
    assert messages
    for topic, payload, _ in messages:
        if payload in (b"", b"ON", b"OFF", b"online", b"offline"):
            continue
        assert isinstance(json.loads(payload.decode("utf-8")), dict), (topic, payload)


def test_central_announces_agents_and_units_and_follows_their_states(
        tmp_path: Path, broker: Broker, watcher: Watcher, agent: WireAgent) -> None:
    PlanRegistry.for_data_dir(tmp_path).add(parse_plan_bytes(PLAN))
    agent.snapshot({"north-fence": "alarm", "east-wall": "normal"})
    central = running_central(central_config(tmp_path, broker))
    try:
        agent.online(INVENTORY)  # a birth is not retained: sent once central listens
        unit_topics = {f"{PREFIX}/sensor/gridpatrol/unit_completion_{u}/config" for u in UNITS}
        held = wait_until(lambda: (h := retained(broker, f"{PREFIX}/#")) and set(h) == set(EXPECTED_CONFIGS) | unit_topics
                          and h, timeout=15, message="discovery configs retained")
        assert {t: json.loads(p) for t, p in held.items() if t in EXPECTED_CONFIGS} == EXPECTED_CONFIGS
        for topic in unit_topics:
            check_documented("sensor", json.loads(held[topic]))
        # The loops' states start from the agent's retained snapshot.
        wait_until(lambda: retained(broker, f"{HA}/#") == {
            f"{HA}/zone_north-fence": b"ON", f"{HA}/zone_east-wall": b"OFF", f"{HA}/tamper_east-wall": b"OFF"},
            timeout=10, message="seeded states")

        agent.event(EventKind.RESTORE, "north-fence")
        wait_until(lambda: retained(broker, f"{HA}/zone_north-fence") == {f"{HA}/zone_north-fence": b"OFF"})
        agent.event(EventKind.ALARM, "north-fence")
        wait_until(lambda: retained(broker, f"{HA}/zone_north-fence") == {f"{HA}/zone_north-fence": b"ON"})
        agent.event(EventKind.TAMPER, "east-wall", state="tamper-cut")
        wait_until(lambda: retained(broker, f"{HA}/+") == {
            f"{HA}/zone_north-fence": b"ON", f"{HA}/zone_east-wall": b"ON", f"{HA}/tamper_east-wall": b"ON"})
        agent.event(EventKind.RESTORE, "east-wall")
        wait_until(lambda: retained(broker, f"{HA}/+") == {
            f"{HA}/zone_north-fence": b"ON", f"{HA}/zone_east-wall": b"OFF", f"{HA}/tamper_east-wall": b"OFF"})

        agent.event(EventKind.PANIC, "office-panic")
        panic = wait_until(lambda: watcher.on(f"{HA}/panic_office-panic"), message="panic event")
        assert [json.loads(p) for p in panic] == [{"event_type": "panic", "agent": AGENT, "source": "office-panic",
                                                   "eseq": 5, "ts": T0 + 5, "replayed": False}]
        agent.event(EventKind.SCAN, "gate-1", tag="67003B51C6")
        scan = wait_until(lambda: watcher.on(f"{HA}/reader_gate-1"), message="scan")
        assert [json.loads(p) for p in scan] == [{"tag": "67003B51C6", "agent": AGENT, "reader": "gate-1", "eseq": 6,
                                                  "ts": T0 + 6, "replayed": False}]
        assert (f"{HA}/panic_office-panic", False) in {(t, r) for t, _, r in watcher.all()}
        assert retained(broker, f"{HA}/panic_office-panic") == {}  # Home Assistant drops retained events anyway

        # The completion sensor's template reads the tracker's retained JSON.
        completion = wait_until(lambda: retained(broker, topics.completion("chengzhou-g1")), message="completion")
        value = render(COMPLETION_TEMPLATE, completion[topics.completion("chengzhou-g1")])
        assert value == "None" or 0.0 <= float(value) <= 100.0

        # A new birth without the wall and the reader: their configs and states go.
        agent.birth({"zones": [{"name": "north-fence", "pin": 17}], "buttons": INVENTORY["buttons"]}, bdseq=2, fw="0.3.1")
        kept = {f"{PREFIX}/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config",
                f"{PREFIX}/event/gridpatrol/{AGENT}_panic_office-panic/config"}
        north = f"{PREFIX}/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config"
        # Stale configs go first, the kept ones are then republished with the new firmware: wait for both.
        wait_until(lambda: (h := retained(broker, f"{PREFIX}/#")) and set(h) == kept | unit_topics
                   and json.loads(h[north])["device"]["sw_version"] == "0.3.1",
                   timeout=15, message="stale configs removed, kept ones on the new firmware")
        assert retained(broker, f"{HA}/+") == {f"{HA}/zone_north-fence": b"ON"}
        assert watcher.on(f"{PREFIX}/tag/gridpatrol/{AGENT}_reader_gate-1/config")[-1] == b""
    finally:
        central.stop()
    assert_plain([m for m in watcher.all() if m[0].startswith((f"{PREFIX}/", "gridpatrol/v1/central/"))])


def test_everything_again_when_home_assistant_comes_online(
        tmp_path: Path, broker: Broker, watcher: Watcher, agent: WireAgent) -> None:
    central = running_central(central_config(tmp_path, broker))
    try:
        agent.online(INVENTORY)
        config_topic = f"{PREFIX}/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config"
        wait_until(lambda: watcher.on(config_topic), timeout=15, message="first discovery")
        agent.event(EventKind.ALARM, "north-fence")
        wait_until(lambda: watcher.on(f"{HA}/zone_north-fence") == [b"ON"], message="alarm state")
        configs_before = {t: len(watcher.on(t)) for t in EXPECTED_CONFIGS}
        assert set(configs_before.values()) == {1}

        broker.pub(f"{PREFIX}/status", b"offline")  # Home Assistant's Will: nothing to do
        broker.pub(f"{PREFIX}/status", b"online")  # its birth: every config and state again
        wait_until(lambda: all(len(watcher.on(t)) == 2 for t in EXPECTED_CONFIGS), message="configs republished")
        wait_until(lambda: watcher.on(f"{HA}/zone_north-fence") == [b"ON", b"ON"], message="states republished")
        assert central.homeassistant is not None and central.homeassistant.counters["republished"] == 1
        assert all(watcher.on(t)[0] == watcher.on(t)[1] for t in EXPECTED_CONFIGS)
    finally:
        central.stop()
    assert_plain([m for m in watcher.all() if m[0].startswith((f"{PREFIX}/", "gridpatrol/v1/central/"))])


def test_an_older_event_filled_in_late_does_not_move_a_loop_back(
        tmp_path: Path, broker: Broker, watcher: Watcher, agent: WireAgent) -> None:
    central = running_central(central_config(tmp_path, broker))
    try:
        agent.online(INVENTORY)
        wait_until(lambda: watcher.on(f"{PREFIX}/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config"), timeout=15)
        agent.event(EventKind.ALARM, "north-fence", eseq=1)
        agent.event(EventKind.RESTORE, "north-fence", eseq=3)  # eseq 2 lost on the way: central asks for it
        wait_until(lambda: watcher.on(f"{HA}/zone_north-fence") == [b"ON", b"OFF"], message="alarm, restore")
        agent.event(EventKind.ALARM, "north-fence", eseq=2, replayed=True)  # the replay: older than the restore
        wait_until(lambda: len(Store(central.store.path).list_events()) == 3, message="replay stored")
        agent.event(EventKind.ALARM, "north-fence", eseq=4)
        wait_until(lambda: watcher.on(f"{HA}/zone_north-fence") == [b"ON", b"OFF", b"ON"], message="the next alarm")
        assert retained(broker, f"{HA}/zone_north-fence") == {f"{HA}/zone_north-fence": b"ON"}
    finally:
        central.stop()


def test_configs_nothing_wants_are_cleared_at_start(tmp_path: Path, broker: Broker, agent: WireAgent) -> None:
    central = running_central(central_config(tmp_path, broker))
    try:
        agent.online(INVENTORY)
        wait_until(lambda: set(retained(broker, f"{PREFIX}/#")) == set(EXPECTED_CONFIGS), timeout=15)
    finally:
        central.stop()
    # While central is away the agent drops its reader, and a config of an agent no store knows is left behind.
    agent.birth({k: v for k, v in INVENTORY.items() if k != "readers"}, bdseq=2)
    ghost = f"{PREFIX}/binary_sensor/gridpatrol/ghost_zone_x/config"
    broker.pub(ghost, b'{"state_topic": "x"}', retain=True)
    foreign = f"{PREFIX}/binary_sensor/other-bridge/x/config"  # not ours: never touched
    broker.pub(foreign, b'{"state_topic": "x"}', retain=True)
    central = running_central(central_config(tmp_path, broker))
    try:
        wanted = set(EXPECTED_CONFIGS) - {f"{PREFIX}/tag/gridpatrol/{AGENT}_reader_gate-1/config"}
        wait_until(lambda: set(retained(broker, f"{PREFIX}/#")) == wanted | {foreign}, timeout=15,
                   message="stale configs cleared")
    finally:
        central.stop()


def test_disabled_publishes_nothing_for_home_assistant(tmp_path: Path, broker: Broker, agent: WireAgent) -> None:
    central = running_central(central_config(tmp_path, broker, enabled=False))
    try:
        assert central.homeassistant is None
        agent.online(INVENTORY)
        wait_until(lambda: (row := Store(central.store.path).get_agent(AGENT)) is not None and row.birth is not None)
        agent.event(EventKind.ALARM, "north-fence")
        wait_until(lambda: len(Store(central.store.path).list_events()) == 1)
    finally:
        central.stop()
    assert retained(broker, f"{PREFIX}/#") == {} and retained(broker, "gridpatrol/v1/central/ha/#") == {}


def test_extra_subscriptions_stay_out_of_the_agents_tree(tmp_path: Path, broker: Broker) -> None:
    ingest = Ingest(central_config(tmp_path, broker).mqtt, Store(tmp_path / "c.db"))
    for bad in ("gridpatrol/v1/+/birth", "+/status", "#"):
        with pytest.raises(ValueError) as err:
            ingest.subscribe_extra(bad, lambda *a: None)
        assert str(err.value) == f"extra subscription {bad!r} would overlap the agents' topics"


@pytest.mark.slow
def test_a_real_agent_loop_reaches_home_assistant(tmp_path: Path, broker: Broker, processes: Processes) -> None:
    from tests.e2e.site import Site

    site = Site(tmp_path, broker, processes)
    site.central_conf.write_text(site.central_conf.read_text() + "\n[homeassistant]\nenabled = true\n")
    a = site.add_agent(AGENT)
    site.start_central()
    site.start_agent(AGENT)
    config_topic = f"{PREFIX}/binary_sensor/gridpatrol/{AGENT}_zone_north-fence/config"
    held = wait_until(lambda: retained(broker, config_topic), timeout=30, message="discovery of the real agent")
    config = json.loads(held[config_topic])
    check_documented("binary_sensor", config)
    assert config["device"]["identifiers"] == [f"gridpatrol-{AGENT}"]
    assert f"{PREFIX}/event/gridpatrol/{AGENT}_panic_office-panic/config" in retained(broker, f"{PREFIX}/#")
    a.drive(17, "high")  # an nc loop opened: alarm
    wait_until(lambda: retained(broker, f"{HA}/zone_north-fence") == {f"{HA}/zone_north-fence": b"ON"}, timeout=20,
               message="alarm state")
    a.drive(17, "low")
    wait_until(lambda: retained(broker, f"{HA}/zone_north-fence") == {f"{HA}/zone_north-fence": b"OFF"}, timeout=20,
               message="restore state")
    site.stop_central()


def test_a_name_with_a_final_newline_is_cleaned_like_any_unsafe_name() -> None:
    """Found by bench/fuzz.py's checks: the pattern's "$" let "siren\\n" through as a topic level."""
    assert slug("siren\n") != "siren\n" and slug("siren\n").startswith("siren-")
