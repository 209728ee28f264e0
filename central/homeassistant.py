"""Home Assistant's MQTT discovery for every agent and unit, and plain state topics it can read.

Optional (``[homeassistant] enabled = true``). Central announces, retained, on
``<prefix>/<component>/<node>/<object>/config``:

- per agent (one Home Assistant device, ``gridpatrol-<agent>``): a ``safety``
  binary sensor per loop, a ``tamper`` binary sensor per supervised loop (one
  behind a microcontroller: only those can report a cut or shorted line), an
  ``event`` entity per panic button and a ``tag`` scanner per reader;
- per unit of the plan (device ``gridpatrol_unit_<unit>``): a completion sensor
  in %, read straight from the tracker's retained JSON on ``completion/<unit>``.

Agents speak msgpack, which Home Assistant cannot read, so central republishes
what it stored as plain text or JSON under ``gridpatrol/v1/central/ha/<agent>/``:
loop states ``ON``/``OFF`` (retained), panics and scans as JSON (not retained:
Home Assistant discards replayed retained events anyway, and a scan is a moment).
Availability is each agent's own retained JSON ``status`` (and central's: states
come from central, so they are stale while it is away).

Births, plans and retained configs are reconciled by one worker thread that
reads the store and the plan registry every POLL_S; ingest's listener calls and
the MQTT callbacks only enqueue. docs/homeassistant.md says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from central.config import HomeAssistantConfig
from central.store import AgentRow, Store, StoredEvent, StoreError
from wire import topics

_LOGGER = logging.getLogger(__name__)

POLL_S = 2.0  # births and plan versions are looked for this often (and when an agent comes online)
STOP_TIMEOUT_S = 10.0
MAX_ITEMS_PER_KIND = 128  # inventory items announced per kind and agent; a birth with more is cut
NODE_ID = "gridpatrol"  # every config of ours lives under <prefix>/<component>/gridpatrol/...
HA_STATE_ROOT = f"{topics.ROOT}/{topics.CENTRAL_ID}/ha"
MANUFACTURER = "Gridpatrol"
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"
ONLINE = "online"
OFFLINE = "offline"
AGENT_AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"
CENTRAL_AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}"
# The tracker's completion is a fraction or null (no round closed yet); "None" makes the sensor unknown.
COMPLETION_TEMPLATE = ("{% set c = value_json.rollup.completion %}"
                       "{{ (c * 100) | round(1) if c is not none else None }}")
COMPLETION_ATTRIBUTES_TEMPLATE = "{{ value_json.rollup | tojson }}"
TAG_TEMPLATE = "{{ value_json.tag }}"

_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")  # \Z: "$" would also match before a final newline
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


class Component(StrEnum):
    BINARY_SENSOR = "binary_sensor"
    EVENT = "event"
    TAG = "tag"
    SENSOR = "sensor"


class Role(StrEnum):
    """What an entity stands for; part of its object id and state topic."""

    ZONE = "zone"
    TAMPER = "tamper"
    PANIC = "panic"
    READER = "reader"


@dataclass(frozen=True, slots=True)
class Entity:
    """One discovery config; ``state_topic`` is our own retained state topic (cleared with the entity)."""

    component: Component
    object_id: str
    config: Mapping[str, Any]
    state_topic: str | None = None

    def config_topic(self, prefix: str) -> str:
        return f"{prefix}/{self.component}/{NODE_ID}/{self.object_id}/config"

    def payload(self) -> bytes:
        return json.dumps(self.config, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# -- pure: names, configs, states ------------------------------------------------


def slug(text: str) -> str:
    """``text`` as a topic level Home Assistant accepts in an object id ([a-z0-9_-]).

    Agent config names already are; anything else (a hostile birth, a unit id
    with a dot) is cleaned and given a hash of the original, so two names never
    share a topic.
    """
    if _SAFE_ID.match(text):
        return text
    cleaned = _UNSAFE_RUN.sub("_", text).strip("_").lower()[:32] or "x"
    return f"{cleaned}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def object_id(agent: str, role: Role, name: str) -> str:
    # Agent ids never hold "_", so the first "_" ends the agent and no two entities meet.
    return f"{slug(agent)}_{role}_{slug(name)}"


def state_topic(agent: str, role: Role, name: str) -> str:
    """Where central publishes what Home Assistant reads for one entity of an agent."""
    return f"{HA_STATE_ROOT}/{slug(agent)}/{role}_{slug(name)}"


def _availability(agent: str) -> list[dict[str, str]]:
    return [
        {"topic": topics.status(agent), "value_template": AGENT_AVAILABILITY_TEMPLATE,
         "payload_available": ONLINE, "payload_not_available": OFFLINE},
        _central_availability(),
    ]


def _central_availability() -> dict[str, str]:
    return {"topic": topics.CENTRAL_STATUS, "value_template": CENTRAL_AVAILABILITY_TEMPLATE,
            "payload_available": ONLINE, "payload_not_available": OFFLINE}


def agent_device(agent: str, birth: Mapping[str, Any], *, name: str | None = None) -> dict[str, Any]:
    device: dict[str, Any] = {"identifiers": [f"gridpatrol-{agent}"], "name": name or agent,
                              "manufacturer": MANUFACTURER, "model": "Gridpatrol agent"}
    fw = birth.get("fw")
    if isinstance(fw, str) and fw:
        device["sw_version"] = fw
    return device


def _items(birth: Mapping[str, Any], kind: str) -> tuple[list[Mapping[str, Any]], int]:
    """The usable items of one inventory kind, and how many were dropped (not maps, no name, too many)."""
    inventory = birth.get("inventory")
    raw = inventory.get(kind) if isinstance(inventory, Mapping) else None
    if not isinstance(raw, (list, tuple)):
        return [], 0
    good, seen = [], set()
    for item in raw:
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name and name not in seen:
            seen.add(name)
            good.append(item)
    return good[:MAX_ITEMS_PER_KIND], len(raw) - min(len(good), MAX_ITEMS_PER_KIND)


def agent_entities(agent: str, birth: Mapping[str, Any], *, name: str | None = None) -> tuple[list[Entity], int]:
    """Every entity of one agent from its birth (as the store keeps it); and the items dropped."""
    device = agent_device(agent, birth, name=name)
    entities: list[Entity] = []
    zones, dropped_z = _items(birth, "zones")
    buttons, dropped_b = _items(birth, "buttons")
    readers, dropped_r = _items(birth, "readers")

    def entity(component: Component, role: Role, item: str, **config: Any) -> Entity:
        oid = object_id(agent, role, item)
        topic = state_topic(agent, role, item)
        body = {"unique_id": f"gridpatrol_{oid}", "device": device, **config}
        if component is Component.TAG:
            body.pop("unique_id")  # a tag scanner is a device trigger: no entity, no unique id
            return Entity(component, oid, {**body, "topic": topic, "value_template": TAG_TEMPLATE})
        body.update(availability=_availability(agent), availability_mode="all", state_topic=topic)
        stateful = component is Component.BINARY_SENSOR
        return Entity(component, oid, body, topic if stateful else None)

    for z in zones:
        zone = z["name"]
        entities.append(entity(Component.BINARY_SENSOR, Role.ZONE, zone, name=zone, device_class="safety",
                               payload_on=PAYLOAD_ON, payload_off=PAYLOAD_OFF))
        if z.get("mcu") is not None:
            entities.append(entity(Component.BINARY_SENSOR, Role.TAMPER, zone, name=f"{zone} tamper",
                                   device_class="tamper", payload_on=PAYLOAD_ON, payload_off=PAYLOAD_OFF))
    for b in buttons:
        entities.append(entity(Component.EVENT, Role.PANIC, b["name"], name=b["name"], event_types=["panic"],
                               device_class="button", icon="mdi:alarm-light"))
    for r in readers:
        entities.append(entity(Component.TAG, Role.READER, r["name"]))
    return entities, dropped_z + dropped_b + dropped_r


def unit_entity(unit: str, *, name: str, tier: str) -> Entity:
    """The completion sensor of one unit, reading the tracker's retained JSON itself."""
    oid = f"unit_completion_{slug(unit)}"
    device = {"identifiers": [f"gridpatrol_unit_{unit}"], "name": name or unit, "manufacturer": MANUFACTURER,
              "model": f"Patrol unit ({tier})"}
    config = {
        "name": "Completion", "unique_id": f"gridpatrol_{oid}", "device": device,
        "state_topic": topics.completion(unit), "value_template": COMPLETION_TEMPLATE,
        "unit_of_measurement": "%", "state_class": "measurement", "suggested_display_precision": 1,
        "json_attributes_topic": topics.completion(unit), "json_attributes_template": COMPLETION_ATTRIBUTES_TEMPLATE,
        "icon": "mdi:shield-check", "availability": [_central_availability()],
    }
    return Entity(Component.SENSOR, oid, config)


@dataclass(frozen=True, slots=True)
class Update:
    """What one stored event means for Home Assistant: a payload on one of our state topics."""

    topic: str
    payload: bytes
    retain: bool


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def event_updates(e: StoredEvent) -> list[Update]:
    """Loop states (retained ON/OFF), panic events and tag scans (JSON) for one stored event."""
    kind = e.kind
    if kind in ("alarm", "restore", "tamper"):
        # A supervised loop is in one state at a time: alarm, tamper or normal. A cut
        # or shorted loop is no longer guarding the perimeter, so it is unsafe too.
        zone_on = kind != "restore"
        tamper_on = kind == "tamper"
        return [Update(state_topic(e.agent, Role.ZONE, e.source), (PAYLOAD_ON if zone_on else PAYLOAD_OFF).encode(), True),
                Update(state_topic(e.agent, Role.TAMPER, e.source), (PAYLOAD_ON if tamper_on else PAYLOAD_OFF).encode(), True)]
    if kind == "panic":
        body = {"event_type": "panic", "agent": e.agent, "source": e.source, "eseq": e.eseq, "ts": e.ts,
                "replayed": e.replayed}
        return [Update(state_topic(e.agent, Role.PANIC, e.source), _json(body), False)]
    if kind == "scan":
        tag = e.fields.get("tag")
        if not isinstance(tag, str):
            return []
        body = {"tag": tag, "agent": e.agent, "reader": e.source, "eseq": e.eseq, "ts": e.ts, "replayed": e.replayed}
        return [Update(state_topic(e.agent, Role.READER, e.source), _json(body), False)]
    return []


def snapshot_states(agent: str, snapshot: Mapping[str, Any] | None, zones: Iterable[str]) -> dict[str, bytes]:
    """Loop states from the agent's retained state snapshot, for entities no event has set yet."""
    inputs = snapshot.get("inputs") if isinstance(snapshot, Mapping) else None
    if not isinstance(inputs, Mapping):
        return {}
    out: dict[str, bytes] = {}
    for zone in zones:
        state = inputs.get(zone)
        if state not in ("normal", "alarm", "tamper-short", "tamper-cut"):
            continue  # unknown: Home Assistant shows "unknown" until an event says
        tampered = state != "normal" and state != "alarm"
        out[state_topic(agent, Role.ZONE, zone)] = (PAYLOAD_OFF if state == "normal" else PAYLOAD_ON).encode()
        out[state_topic(agent, Role.TAMPER, zone)] = (PAYLOAD_ON if tampered else PAYLOAD_OFF).encode()
    return out


# -- the running part ------------------------------------------------------------


class PlanSource(Protocol):
    def history(self) -> Any: ...


Publish = Callable[..., Any]  # publish(topic, payload, retain=...) -> bool


_STOP = object()
_WAKE = object()  # look at the store now


class HomeAssistant:
    """An ingest listener publishing Home Assistant discovery and states; start() and stop() from one thread.

    ``publish(topic, payload, retain=...)`` is ingest's (central keeps one MQTT
    connection: the broker makes the certificate's CN the client id). Hand
    :meth:`message_received` every message on :attr:`subscriptions`.
    """

    def __init__(self, config: HomeAssistantConfig, *, store: Store, plans: PlanSource, publish: Publish,
                 clock: Callable[[], float] = time.time, poll_s: float = POLL_S) -> None:
        self.prefix = config.discovery_prefix
        self._ha_status = f"{self.prefix}/status"
        self._store = store
        self._plans = plans
        self._publish = publish
        self._clock = clock
        self._poll_s = poll_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = False
        # Owned by the worker thread:
        self._wanted: dict[str, Entity] = {}  # config topic -> entity
        self._published: dict[str, bytes] = {}  # config topic -> payload last published
        self._stateful: set[str] = set()  # our retained state topics of wanted entities
        self._event_topics: set[str] = set()  # our unretained topics of wanted panic and tag entities
        self._sent_states: set[str] = set()  # state topics whose current state the broker holds
        self._states: dict[str, bytes] = {}  # state topic -> last state (published or held until wanted)
        self._guard: dict[str, int] = {}  # state topic -> eseq of the event that set it
        self._agent_cache: dict[str, tuple[Any, list[Entity]]] = {}
        self._on_broker: set[str] = set()  # our config topics the broker held when we subscribed
        self._polled = False
        self.counters: dict[str, int] = {"configs_published": 0, "configs_removed": 0, "states_published": 0,
                                         "events_published": 0, "republished": 0, "items_dropped": 0,
                                         "store_errors": 0, "publish_failures": 0}

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Home Assistant's birth, and our own retained configs (to remove those nothing wants any more)."""
        return (self._ha_status, f"{self.prefix}/+/{NODE_ID}/+/config")

    # -- called from other threads: enqueue and return ------------------------------

    def message_received(self, topic: str, payload: bytes, retained: bool) -> None:
        """paho's thread: a message on one of :attr:`subscriptions`."""
        if topic == self._ha_status:
            if payload.strip() == ONLINE.encode():
                self._queue.put(("ha_online",))
        elif retained and payload:
            # Retained copies come when we subscribe; our own publishes come back
            # with retain cleared and say nothing new.
            self._queue.put(("on_broker", topic))

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        if self._started:
            self._queue.put(("events", events))

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        if self._started and state == ONLINE:
            self._queue.put(_WAKE)  # its birth is in the store (or soon): announce it without waiting

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._started = False
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                _LOGGER.error("the Home Assistant thread did not finish within %s s", STOP_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        next_poll = 0.0
        while True:
            wait = max(0.0, next_poll - time.monotonic())
            try:
                item: Any = self._queue.get(timeout=wait) if wait > 0 else _WAKE
            except queue.Empty:
                item = _WAKE
            if item is _STOP:
                return
            try:
                if item is _WAKE:
                    self._poll()
                    next_poll = time.monotonic() + self._poll_s
                else:
                    self._handle(item)
            except Exception:  # one bad round must not end the thread
                _LOGGER.exception("Home Assistant publisher failed")

    def _handle(self, item: tuple[Any, ...]) -> None:
        what = item[0]
        if what == "events":
            for e in item[1]:
                self._apply(e)
        elif what == "ha_online":
            self._republish()
        elif what == "on_broker":
            self._on_broker.add(item[1])
            if self._polled:
                self._sweep()

    # -- the worker -------------------------------------------------------------------

    def _poll(self) -> None:
        try:
            rows = self._store.list_agents()
        except StoreError as exc:  # the driver's errors too (the store wraps them)
            self.counters["store_errors"] += 1
            _LOGGER.debug("Home Assistant: store not readable yet: %s", exc)
            return
        names, units = self._plan_view()
        wanted: dict[str, Entity] = {}
        seeds: dict[str, bytes] = {}
        for row in rows:
            if row.birth is None:
                continue
            entities = self._entities_of(row, names.get(row.agent))
            for e in entities:
                wanted[e.config_topic(self.prefix)] = e
            zones = [z["name"] for z in _items(row.birth, "zones")[0]]
            seeds.update(snapshot_states(row.agent, row.snapshot, zones))
        for unit in units:
            e = unit_entity(unit.id, name=unit.name, tier=str(unit.tier))
            wanted[e.config_topic(self.prefix)] = e
        self._reconcile(wanted, seeds)
        self._polled = True
        self._sweep()

    def _plan_view(self) -> tuple[dict[str, str], tuple[Any, ...]]:
        history = self._plans.history()
        version = (history.at(int(self._clock() * 1000)) or history.latest) if history else None
        if version is None:
            return {}, ()
        plan = version.plan
        return {a.id: a.name for a in plan.agents if a.name}, tuple(plan.units)

    def _entities_of(self, row: AgentRow, name: str | None) -> list[Entity]:
        key = (row.birth, name)
        cached = self._agent_cache.get(row.agent)
        if cached is not None and cached[0] == key:
            return cached[1]
        entities, dropped = agent_entities(row.agent, row.birth or {}, name=name)
        if dropped:
            self.counters["items_dropped"] += dropped
            _LOGGER.warning("agent %s: %s inventory items not announced to Home Assistant "
                            "(unnamed, repeated, or more than %s of a kind)", row.agent, dropped, MAX_ITEMS_PER_KIND)
        self._agent_cache[row.agent] = (key, entities)
        return entities

    def _reconcile(self, wanted: dict[str, Entity], seeds: Mapping[str, bytes]) -> None:
        gone = [t for t in self._wanted if t not in wanted]
        for topic in gone:
            self._remove(topic, self._wanted[topic])
        self._wanted = wanted
        self._stateful = {e.state_topic for e in wanted.values() if e.state_topic is not None}
        self._event_topics = {e.config.get("state_topic", e.config.get("topic")) for e in wanted.values()
                              if e.state_topic is None and e.component is not Component.SENSOR}
        for topic, entity in wanted.items():
            payload = entity.payload()
            if self._published.get(topic) != payload:
                if self._send(topic, payload, retain=True):
                    self._published[topic] = payload
                    self.counters["configs_published"] += 1
            st = entity.state_topic
            if st is None:
                continue
            if st not in self._states and st in seeds:
                self._states[st] = seeds[st]
            if st in self._states and st not in self._sent_states:
                self._send_state(st)

    def _remove(self, topic: str, entity: Entity) -> None:
        # The empty retained config first: Home Assistant removes the entity and stops listening.
        self._send(topic, b"", retain=True)
        self._published.pop(topic, None)
        self.counters["configs_removed"] += 1
        if entity.state_topic is not None:
            self._send(entity.state_topic, b"", retain=True)
            self._states.pop(entity.state_topic, None)
            self._guard.pop(entity.state_topic, None)
            self._sent_states.discard(entity.state_topic)

    def _sweep(self) -> None:
        """Clear configs of ours the broker held that nothing wants now (an item gone while central was down)."""
        for topic in sorted(self._on_broker - set(self._wanted)):
            _LOGGER.info("Home Assistant: removing stale %s", topic)
            self._send(topic, b"", retain=True)
            self.counters["configs_removed"] += 1
        self._on_broker.clear()

    def _apply(self, e: StoredEvent) -> None:
        for u in event_updates(e):
            if u.retain:
                if self._guard.get(u.topic, 0) >= e.eseq:
                    continue  # an older event filled in late (a replay): the state moved on since
                self._guard[u.topic] = e.eseq
                self._states[u.topic] = u.payload
                self._sent_states.discard(u.topic)
                if u.topic in self._stateful:
                    self._send_state(u.topic)
            elif u.topic in self._event_topics:
                if self._send(u.topic, u.payload, retain=False):
                    self.counters["events_published"] += 1

    def _send_state(self, topic: str) -> None:
        if self._send(topic, self._states[topic], retain=True):
            self._sent_states.add(topic)
            self.counters["states_published"] += 1

    def _republish(self) -> None:
        """Home Assistant (re)started: every config again, then every state (retained, so order is safe)."""
        self.counters["republished"] += 1
        for topic, entity in self._wanted.items():
            payload = entity.payload()
            if self._send(topic, payload, retain=True):
                self._published[topic] = payload
        for topic in sorted(self._stateful & set(self._states)):
            self._send_state(topic)

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        try:
            ok = bool(self._publish(topic, payload, retain=retain))
        except ValueError as exc:  # paho's refusal of a topic or payload: this one message, not the rest
            _LOGGER.warning("Home Assistant: cannot publish on %r: %s", topic, exc)
            ok = False
        if not ok:
            self.counters["publish_failures"] += 1
        return ok
