"""Central's MQTT session: the one connection to the broker, apart from the writer that stores.

One paho client, MQTT v5, a fixed client id, ``clean_start = False`` and a long
session expiry, so that what agents send while central restarts waits at the
broker. It owns the connection, the Will (central's retained status, offline),
the online status published on every connect, the subscriptions (made again
on every connect) and every publish of central: acks and commands of the
writer, the alarm book's ``alarm-ack``, the tracker's retained completion, Home
Assistant's discovery. Each message that arrives is handed to ``deliver(msg)``
on paho's thread, which must only decode and enqueue.

The broker makes a client certificate's CN the client id, so central keeps
this one connection for everything (``subscribe_extra`` for topics outside the
agents' tree).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.config import MqttConfig
from gridpatrol.base.tcp import no_delay
from wire import topics
from wire.messages import CentralStatus, Command

_LOGGER = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class CentralSession:
    def __init__(self, config: MqttConfig, *, deliver: Callable[[mqtt.MQTTMessage], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._deliver = deliver
        self._clock = clock
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._extra: tuple[str, ...] = ()  # subscribe_extra's filters
        self._own_sub_mid: int | None = None
        self._client = self._make_client()

    def subscribe_extra(self, topic_filter: str, callback: Callable[[str, bytes, bool], None]) -> None:
        """Also subscribe to ``topic_filter`` (QoS 1, on every connect); its messages go to ``callback``.

        ``callback(topic, payload, retained)`` runs on paho's thread: enqueue and
        return. Only for topics outside the agents' tree (Home Assistant's
        ``homeassistant/status``): central keeps one MQTT connection, since the
        broker makes its certificate's CN the client id. Call before start().
        """
        if topic_filter.split("/", 1)[0] in (topics.ROOT.split("/", 1)[0], "+", "#"):
            raise ValueError(f"extra subscription {topic_filter!r} would overlap the agents' topics")

        def deliver(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                callback(msg.topic, bytes(msg.payload), bool(msg.retain))
            except UnicodeDecodeError:
                _LOGGER.warning("dropped a message with a topic that is not UTF-8 under %r", topic_filter)
            except Exception:  # an exception here would end paho's network thread
                _LOGGER.exception("the subscriber of %r failed", topic_filter)

        self._client.message_callback_add(topic_filter, deliver)
        self._extra = (*self._extra, topic_filter)

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers."""
        c = self._config
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = c.session_expiry_s
        self._client.connect_async(c.host, c.port, keepalive=c.keepalive_s, clean_start=False, properties=props)
        self._client.loop_start()

    def stop(self) -> None:
        """Publish the offline status, disconnect, and end paho's thread."""
        if self._connected.is_set():
            info = self._client.publish(topics.CENTRAL_STATUS, self._status(False), qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout=2.0)
        if self._client.is_connected():
            self._disconnected.clear()
            self._client.disconnect()
            # paho's thread closes the socket once DISCONNECT is written; stopping it earlier leaks the socket.
            self._disconnected.wait(STOP_TIMEOUT_S)
        else:
            self._client.disconnect()  # stops any reconnect attempt
        self._client.loop_stop()
        # paho closes its wake-up socket pair only in a finaliser, which a
        # reference cycle can postpone indefinitely: close it now.
        self._client._reset_sockets(sockpair_only=True)  # noqa: SLF001

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed."""
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish QoS 1 from any thread; False when paho could not even queue it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: sent on reconnect

    def send_command(self, agent_id: str, command: Command) -> bool:
        """Publish a command to an agent (thread-safe); False when it could not even be queued."""
        if not topics.is_valid_agent_id(agent_id):
            raise ValueError(f"agent id {agent_id!r} is not valid")
        return self.publish(topics.cmd(agent_id), command.to_payload())

    def _make_client(self) -> mqtt.Client:
        c = self._config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=mqtt.MQTTv5)
        if c.tls_ca is not None or c.tls_cert is not None:
            client.tls_set(ca_certs=_opt(c.tls_ca), certfile=_opt(c.tls_cert), keyfile=_opt(c.tls_key))
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        client.will_set(topics.CENTRAL_STATUS, self._status(False), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda client, userdata, msg: self._deliver(msg)
        client.on_socket_open = no_delay
        return client

    def _status(self, online: bool) -> bytes:
        return CentralStatus(online=online, ts=int(self._clock() * 1000)).to_payload()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            _LOGGER.warning("broker refused the connection: %s", reason)
            return
        _LOGGER.info("connected to %s:%s (session present: %s)", self._config.host, self._config.port,
                     flags.session_present)
        _, self._own_sub_mid = client.subscribe([(t, 1) for t in topics.CENTRAL_SUBSCRIPTIONS])
        if self._extra:  # a packet of their own: a refusal there must not hold up ingest
            client.subscribe([(t, 1) for t in self._extra])
        client.publish(topics.CENTRAL_STATUS, self._status(True), qos=1, retain=True)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        if mid != self._own_sub_mid:
            if failed:
                _LOGGER.error("broker refused the extra subscriptions %s: %s", list(self._extra), failed)
            return
        if failed:
            _LOGGER.error("broker refused central's subscriptions: %s", failed)
            return
        self._connected.set()  # connected and subscribed: nothing sent from now on is missed

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        _LOGGER.warning("cannot reach the broker at %s:%s; retrying", self._config.host, self._config.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        self._disconnected.set()
        if reason.is_failure:
            _LOGGER.warning("disconnected from the broker: %s; reconnecting", reason)



def _opt(path: Any) -> str | None:
    return None if path is None else str(path)
