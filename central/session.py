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

In a group (``[ingest] group``, docs/scaling.md) the members share the agents'
events and telemetry through MQTT 5 shared subscriptions
(``$share/GROUP/gridpatrol/v1/+/evt``): each message goes to one member.
Statuses, births, snapshots and command answers stay plain subscriptions, so
every member knows every agent's presence and sees the answer to the command
it sent. A member's Will is its own status (``gridpatrol/v1/central/member/ID``),
never central's: one member's death must not tell the agents that central is
gone. Central's status belongs to the group's leader (:class:`GroupVoice`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from central.config import MqttConfig
from gridpatrol.base.tcp import no_delay
from wire import topics
from wire.messages import CentralStatus, Command

_LOGGER = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
SHARED_CHANNELS = ("evt", "tele")  # the volume of a group's traffic; one member stores each message
MEMBER_STATUS_PREFIX = f"{topics.ROOT}/{topics.CENTRAL_ID}/member/"
# The leader's Will (central offline) waits this long: a new leader taking the voice's
# session over within it cancels the Will, so agents never hear "offline" while the
# group lives; when the whole group is gone, they hear it after this delay.
LEADER_WILL_DELAY_S = 15
LEADER_SESSION_EXPIRY_S = 3600  # longer than the Will's delay: the Will waits on the session


_AGENTS_PREFIX = f"{topics.ROOT}/".encode()
_MEMBER_PREFIX = MEMBER_STATUS_PREFIX.encode()


def subscriptions(group: str | None) -> tuple[str, ...]:
    """Central's subscriptions; in a group the events and telemetry through ``$share/GROUP/``."""
    if group is None:
        return topics.CENTRAL_SUBSCRIPTIONS
    return tuple(f"$share/{group}/{t}" if t.rsplit("/", 1)[1] in SHARED_CHANNELS else t
                 for t in topics.CENTRAL_SUBSCRIPTIONS)


class CentralSession:
    def __init__(self, config: MqttConfig, *, deliver: Callable[[mqtt.MQTTMessage], None],
                 clock: Callable[[], float] = time.time, group: str | None = None) -> None:
        self._config = config
        self._deliver = deliver
        self._clock = clock
        self.group = group
        self._status_topic = topics.CENTRAL_STATUS if group is None else MEMBER_STATUS_PREFIX + config.client_id
        # A group's member statuses, seen by every member: (client id, online, retained), on paho's thread.
        self.member_changed: Callable[[str, bool, bool], None] | None = None
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._extra: tuple[str, ...] = ()  # subscribe_extra's filters
        self._extra_routes: tuple[tuple[str, Callable[[mqtt.MQTTMessage], None]], ...] = ()
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

        def deliver(msg: mqtt.MQTTMessage) -> None:
            try:
                callback(msg.topic, bytes(msg.payload), bool(msg.retain))
            except UnicodeDecodeError:
                _LOGGER.warning("dropped a message with a topic that is not UTF-8 under %r", topic_filter)
            except Exception:  # an exception here would end paho's network thread
                _LOGGER.exception("the subscriber of %r failed", topic_filter)

        self._extra_routes = (*self._extra_routes, (topic_filter, deliver))
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
            info = self._client.publish(self._status_topic, self._status(False), qos=1, retain=True)
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
        client.will_set(self._status_topic, self._status(False), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
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
        own = [(t, 1) for t in subscriptions(self.group)]
        if self.group is not None:
            own.append((MEMBER_STATUS_PREFIX + "+", 1))
        _, self._own_sub_mid = client.subscribe(own)
        if self._extra:  # a packet of their own: a refusal there must not hold up ingest
            client.subscribe([(t, 1) for t in self._extra])
        client.publish(self._status_topic, self._status(True), qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Routed here by a prefix test, not paho's per-filter callbacks: paho matches
        # every message against those, and an agents' flood is every message.
        topic = msg._topic  # noqa: SLF001 (bytes: no decoding for the common case)
        if topic.startswith(_AGENTS_PREFIX):
            if self.group is not None and topic.startswith(_MEMBER_PREFIX):
                self._on_member_status(msg)
            else:
                self._deliver(msg)
            return
        for topic_filter, deliver in self._extra_routes:
            if mqtt.topic_matches_sub(topic_filter, topic.decode("utf-8", "replace")):
                deliver(msg)
                return
        self._deliver(msg)  # nothing else is subscribed: let the decoder count it as a bad topic

    def _on_member_status(self, msg: mqtt.MQTTMessage) -> None:
        try:
            member = msg.topic[len(MEMBER_STATUS_PREFIX):]
            online = CentralStatus.from_payload(bytes(msg.payload)).online if msg.payload else False
            if self.member_changed is not None:
                self.member_changed(member, online, bool(msg.retain))
        except Exception:  # an exception here would end paho's network thread
            _LOGGER.warning("dropped a bad member status on %r", getattr(msg, "_topic", b"?"), exc_info=True)

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


class GroupVoice:
    """Central's retained status for a group: a connection that only the group's leader holds.

    Its client id is the group's (``gridpatrol-central-GROUP-leader``), the same
    for whichever member leads, with a persistent session and a Will (central
    offline) delayed by LEADER_WILL_DELAY_S. A new leader connecting under that
    id takes the session over before the delay ends, so the Will is never
    published while one member lives; :meth:`announce` says online with a new
    ``ts``, which makes every agent send its unacknowledged events again (what a
    dead member had taken and not stored comes back at once). With TLS client
    certificates the group needs one certificate whose CN is that id.
    """

    def __init__(self, config: MqttConfig, group: str, *, clock: Callable[[], float] = time.time,
                 will_delay_s: int = LEADER_WILL_DELAY_S) -> None:
        self.client_id = f"gridpatrol-central-{group}-leader"[:64]
        self._config = config
        self._clock = clock
        self._connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if config.tls_ca is not None or config.tls_cert is not None:
            client.tls_set(ca_certs=_opt(config.tls_ca), certfile=_opt(config.tls_cert), keyfile=_opt(config.tls_key))
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        will = Properties(PacketTypes.WILLMESSAGE)
        will.WillDelayInterval = will_delay_s
        client.will_set(topics.CENTRAL_STATUS, self._status(False), qos=1, retain=True, properties=will)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._disconnected = threading.Event()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = no_delay
        self._client = client

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()
        self._disconnected.set()

    def _status(self, online: bool) -> bytes:
        return CentralStatus(online=online, ts=int(self._clock() * 1000)).to_payload()

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = LEADER_SESSION_EXPIRY_S
        c = self._config
        self._client.connect_async(c.host, c.port, keepalive=c.keepalive_s, clean_start=False, properties=props)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def announce(self) -> None:
        """Central is online, said anew (a new ``ts``): agents send what is unacknowledged again."""
        self._client.publish(topics.CENTRAL_STATUS, self._status(True), qos=1, retain=True)

    def stop(self) -> None:
        """Hand the voice over: disconnect *with* the Will, which fires unless another leader comes in time."""
        if self._client.is_connected():
            self._disconnected.clear()
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            self._disconnected.wait(STOP_TIMEOUT_S)  # paho's thread closes the socket once DISCONNECT is out
        else:
            self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # noqa: SLF001

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            _LOGGER.warning("broker refused the group's voice %s: %s", self.client_id, reason)
            return
        self.announce()
        self._connected.set()


def _opt(path: Any) -> str | None:
    return None if path is None else str(path)
