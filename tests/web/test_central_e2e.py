"""From an agent's MQTT event to the browser and back to the agent, through central's real parts.

A panic published on a real Mosquitto is stored by central's ingest, raised by
the alarm book, shown live in headless Chromium; the click on Acknowledge goes
back through the alarm book, which sends the agent its ``alarm-ack`` command.
The wiring here is what central's app object is expected to do.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from central.alarms import AlarmBook
from central.app import Central
from central.bus import Bus
from central.config import parse_config
from central.web.app import build_app
from central.web.server import WebServer
from central.web.wiring import StoreCompletionReports
from tests.support import Broker
from tests.web.conftest import World, log_in
from wire import topics
from wire.messages import Command, CommandName, Event, EventKind

AGENT = "school-9-gate-1"


@pytest.fixture
def running(world: World, broker: Broker) -> Iterator[tuple[Central, WebServer, Bus]]:
    config = parse_config(
        f'timezone = "Asia/Shanghai"\ndata_dir = "{world.config.data_dir}"\n'
        f'[store]\nurl = "sqlite://{world.config.store.path}"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
    bus = Bus()
    holder: dict[str, Central] = {}
    book = AlarmBook(config.store.path, plans=world.plans, bus=bus,
                     send_command=lambda agent, command: holder["central"].send_command(agent, command))
    central = Central(config, listeners=[book], bus=bus, is_planned=world.plans.is_planned,
                      alarms=False, tracker=False, web=False)  # this test brings its own book and server
    holder["central"] = central
    # The dashboard hears central's bus and acts through its alarm book.
    app = build_app(config=config, store=central.store, bus=bus, plan=world.plans, alarms=book,
                    report=StoreCompletionReports(store=central.store, plans=world.plans), users=world.users)
    server = WebServer(app, "127.0.0.1:0")
    central.start()
    book.start()
    server.start()
    try:
        yield central, server, bus
    finally:
        server.stop()
        book.stop()
        book.close()
        central.stop()


@pytest.fixture
def agent_side(broker: Broker) -> Iterator[queue.Queue[Command]]:
    """An MQTT client listening on the agent's command topic, as the agent would."""
    commands: queue.Queue[Command] = queue.Queue()
    subscribed = queue.Queue[int]()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{AGENT}-test")
    client.on_message = lambda c, u, msg: commands.put(Command.from_payload(msg.payload))
    client.on_subscribe = lambda c, u, mid, rc, props: subscribed.put(mid)
    client.on_connect = lambda c, u, flags, rc, props: c.subscribe(topics.cmd(AGENT), qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        subscribed.get(timeout=10)
        yield commands
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.slow
def test_panic_over_mqtt_reaches_the_browser_and_the_ack_reaches_the_agent(
        running: tuple[Central, WebServer, Bus], agent_side: queue.Queue[Command], broker: Broker,
        world: World, chromium: Any) -> None:
    _, server, _ = running
    page = log_in(chromium, server, "lin")
    now_ms = int(time.time() * 1000)
    event = Event(eseq=1, boot_id="boot-e2e", kind=EventKind.PANIC, source="office-panic", ts=now_ms, mono_ms=5000,
                  clock_synced=True)
    broker.pub(topics.evt(AGENT), event.to_payload(), qos=1)
    card = page.wait_for_selector("#active-list .alarm.kind-panic", timeout=10_000)
    alarm_id = int(card.get_attribute("data-id") or 0)
    assert page.is_visible("#banner")
    assert "office-panic" in card.inner_text()

    page.click(f"#alarm-{alarm_id} .ack-btn")
    page.wait_for_selector(f"#recent-list #alarm-{alarm_id}[data-state=resolved]", timeout=10_000)
    command = agent_side.get(timeout=10)
    while command.cmd is not CommandName.ALARM_ACK:  # central also asks this birthless agent for a rebirth
        command = agent_side.get(timeout=10)
    assert (command.cmd, dict(command.args)) == (CommandName.ALARM_ACK, {"source": "office-panic"})
    row = world.alarm_row(alarm_id)
    assert (row["state"], row["acked_by"]) == ("resolved", "lin")
    assert page.errors == []
