"""What MQTT gives a group of centrals, against the real Mosquitto: shared subscriptions, the group's voice."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from central.config import MqttConfig
from central.session import CentralSession, GroupVoice, subscriptions
from tests.support import Broker, wait_until
from wire import topics
from wire.messages import CentralStatus


def test_a_group_shares_events_and_telemetry_and_each_member_sees_every_status() -> None:
    assert subscriptions(None) == topics.CENTRAL_SUBSCRIPTIONS
    assert subscriptions("d1") == (
        "gridpatrol/v1/+/status", "gridpatrol/v1/+/birth", "$share/d1/gridpatrol/v1/+/evt", "gridpatrol/v1/+/state",
        "$share/d1/gridpatrol/v1/+/tele", "gridpatrol/v1/+/cmd/resp")


class Statuses:
    def __init__(self, broker: Broker) -> None:
        self.seen: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topics.CENTRAL_STATUS, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((time.monotonic(), CentralStatus.from_payload(bytes(msg.payload)).online))

    def states(self) -> list[bool]:
        with self._lock:
            return [online for _, online in self.seen]

    def close(self) -> None:
        gone = threading.Event()
        self.client.on_disconnect = lambda *a: gone.set()
        self.client.disconnect()
        gone.wait(10)  # paho's thread closes the socket once DISCONNECT is out
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)  # noqa: SLF001


def test_the_voice_passes_between_leaders_without_an_offline_and_says_offline_when_the_group_is_gone(
        broker: Broker) -> None:
    config = MqttConfig(host=broker.host, port=broker.port)
    watch = Statuses(broker)
    first = GroupVoice(config, "d1", will_delay_s=2)
    first.start()
    try:
        assert first.wait_connected(10)
        wait_until(lambda: watch.states() == [True], message="online from the first leader")
        first.stop()  # handed over with its Will, which waits 2 s
        second = GroupVoice(config, "d1", will_delay_s=2)
        second.start()
        assert second.wait_connected(10)
        wait_until(lambda: len(watch.states()) == 2, message="online again from the second leader")
        time.sleep(3)  # past the first leader's Will delay: it was cancelled by the takeover
        assert watch.states() == [True, True]
        second.stop()  # the last leader leaves: after the delay, central is offline
        stopped = time.monotonic()
        wait_until(lambda: watch.states()[-1] is False, timeout=10, message="offline when the group is gone")
        assert time.monotonic() - stopped >= 1.5
    finally:
        watch.close()


def test_a_members_will_is_its_own_status_never_centrals(broker: Broker) -> None:
    config = MqttConfig(host=broker.host, port=broker.port, client_id="member-1", session_expiry_s=0)
    changes: list[tuple[str, bool, bool]] = []
    member = CentralSession(config, deliver=lambda msg: None, group="d1")
    other = CentralSession(MqttConfig(host=broker.host, port=broker.port, client_id="member-2", session_expiry_s=0),
                           deliver=lambda msg: None, group="d1")
    member.member_changed = lambda *change: changes.append(change)
    watch = Statuses(broker)
    member.start()
    other.start()
    try:
        assert member.wait_connected(10) and other.wait_connected(10)
        wait_until(lambda: ("member-2", True, False) in changes or ("member-2", True, True) in changes)
        other.stop()
        wait_until(lambda: ("member-2", False, False) in changes, message="member-2 offline, seen by member-1")
        assert watch.states() == []  # nothing on central's own status
    finally:
        member.stop()
        watch.close()
