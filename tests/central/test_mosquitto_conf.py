"""systemd/mosquitto-gridpatrol.conf, run for real: no QoS 1 message is dropped for an offline collector."""

from __future__ import annotations

import getpass
import threading
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import REPO, Broker, hang_up

CONF = REPO / "systemd" / "mosquitto-gridpatrol.conf"
QUEUED = 20_000
TOPIC = "gridpatrol/v1/load-1/evt"
SENTINEL = b"sentinel"


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value)
    return out


def rewritten(directory: Path, port: int, *, drop: str | None = None) -> str:
    """The deployment file on a free port, in a test's folder, run by whoever runs the test."""
    lines = []
    for line in CONF.read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {directory}/"
        elif key == "log_dest":
            line = "log_dest stderr"
        elif key == "user" or key == drop:
            continue
        lines.append(line)
    lines.append(f"user {getpass.getuser()}")  # as root, mosquitto would otherwise switch to 'mosquitto'
    return "\n".join(lines) + "\n"


def test_the_file_says_what_it_must() -> None:
    s = settings(CONF.read_text())
    assert s["max_queued_messages"] == "0"
    assert s["max_queued_bytes"] == "0"
    assert s["persistence"] == "true"
    assert int(s["autosave_interval"]) > 0
    assert s["queue_qos0_messages"] == "false"


class Collector:
    """A subscriber with a persistent session that counts what it gets (a new paho client per connection)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.got: set[int] = set()
        self.sentinel = threading.Event()
        self._subscribed = threading.Event()
        self._gone = threading.Event()
        self.client: mqtt.Client | None = None

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.payload == SENTINEL:
            self.sentinel.set()
        else:
            self.got.add(int(msg.payload))

    def connect(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="slow-collector", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_disconnect = lambda *a: self._gone.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._gone.clear()
        self.client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def subscribe(self) -> None:
        assert self.client is not None
        self.client.subscribe(TOPIC, qos=1)
        assert self._subscribed.wait(10)

    def close(self) -> None:
        if self.client is not None:
            hang_up(self.client, self._gone)
            self.client = None


def publish_all(broker: Broker, payloads: Iterator[bytes]) -> None:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="load-1", protocol=mqtt.MQTTv5)
    gone = threading.Event()
    pub.on_disconnect = lambda *a: gone.set()
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(TOPIC, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(30)  # PUBACK: the broker has it
    finally:
        hang_up(pub, gone)


def queue_for_offline_collector(tmp_path: Path, *, drop: str | None = None) -> set[int]:
    broker = Broker(tmp_path / "broker")
    broker.conf.write_text(rewritten(broker.directory, broker.port, drop=drop))
    broker.start()
    collector = Collector(broker)
    try:
        collector.connect()
        collector.subscribe()
        collector.close()  # offline now; the broker queues for its session
        publish_all(broker, (str(n).encode() for n in range(QUEUED)))
        collector.connect()
        # Sent after the reconnect, so it queues behind everything kept for the session.
        publish_all(broker, iter([SENTINEL]))
        assert collector.sentinel.wait(60), "the sentinel never arrived"
        return collector.got
    finally:
        collector.close()
        broker.kill()


@pytest.mark.slow
def test_every_queued_qos1_message_reaches_a_collector_that_was_offline(tmp_path: Path) -> None:
    assert queue_for_offline_collector(tmp_path) == set(range(QUEUED))


@pytest.mark.slow
def test_without_the_setting_mosquitto_drops_them(tmp_path: Path) -> None:
    """The control: Mosquitto's default max_queued_messages (1000) loses most of them silently."""
    got = queue_for_offline_collector(tmp_path, drop="max_queued_messages")
    assert len(got) < QUEUED // 2
