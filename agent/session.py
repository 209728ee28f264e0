"""The agent's MQTT session: presence, birth, state, events, acks, commands, telemetry.

One thread owns the paho client and drives its socket itself (paho's external
loop: ``loop_read`` / ``loop_write`` / ``loop_misc`` around our own
``select``), so every paho callback runs on this thread and only records what
arrived. There is no paho network thread, and no automatic reconnect: before
every attempt the session bumps the persisted ``bdseq`` and sets the Will
(retained ``status`` offline with that bdseq) on a fresh client, then waits
with exponential backoff and jitter after a failure.

On every connect: subscribe to our ``cmd``, ``ack`` and central's status;
publish retained ``status`` online, ``birth``, retained ``state`` and one
``tele``; then hand the outbox to the :class:`~agent.publisher.Publisher`,
which decides which events to (re)send. Events leave the outbox only when
central's ``ack`` covers them.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import sqlite3
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.memory import Memory
from agent.outbox import Outbox, OutboxError
from agent.publisher import IN_FLIGHT_WINDOW, Publisher, Send
from gridpatrol.base.logsafe import LogLimiter, escaped, shown
from gridpatrol.base.tcp import no_delay
from wire import topics
from wire.codec import unpack
from wire.errors import DecodeError
from wire.messages import Ack, AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, CommandResponse, StateSnapshot, Telemetry

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
CONNECT_TIMEOUT_S = 5.0
CONNACK_TIMEOUT_S = 10.0
# The longest the session thread sleeps: keepalive pings and the watchdog's
# view of this thread (``last_beat``) both need a pulse at least this often.
MAX_SLEEP_S = 0.5
SHUTDOWN_FLUSH_S = 2.0
STOP_TIMEOUT_S = 10.0
# QoS 1 control messages (status, birth, state, responses) on top of the
# event window, so paho never has to queue them behind events.
CONTROL_SLACK = 16
TXN_MAX_LEN = 64
# Windows of eseqs the outbox no longer holds (gone runs) skipped in one go
# before the session looks at its socket again: 64 x 100 eseqs, a few ms.
ABSENT_ROUNDS_MAX = 100


class Session:
    """Keeps one agent connected to the broker and moves its outbox to central."""

    def __init__(
        self,
        *,
        agent_id: str,
        mqtt_config: MqttConfig,
        outbox: Outbox,
        birth: Callable[[int], Birth],
        snapshot: Callable[[], StateSnapshot],
        on_command: Callable[[Command], str | None],
        telemetry: Callable[[], Telemetry] | None = None,
        memory: Memory | None = None,
        tele_interval_s: float = 30.0,
        window: int = IN_FLIGHT_WINDOW,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.config = mqtt_config
        self.outbox = outbox
        self.publisher = Publisher(resend_s=mqtt_config.resend_s, window=window)
        self._birth = birth
        self._snapshot = snapshot
        self._on_command = on_command
        self._telemetry = telemetry
        self._memory = memory
        self.tele_interval_s = tele_interval_s
        self.window = window
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._topics = {
            "status": topics.status(agent_id), "birth": topics.birth(agent_id), "evt": topics.evt(agent_id),
            "state": topics.state(agent_id), "tele": topics.tele(agent_id), "cmd": topics.cmd(agent_id),
            "cmd_resp": topics.cmd_resp(agent_id), "ack": topics.ack(agent_id),
        }
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._connack: ReasonCode | None = None
        self._lost = False
        self._inbox: deque[mqtt.MQTTMessage] = deque()
        self._pubacks: deque[tuple[int, ReasonCode]] = deque()
        self._mids: dict[int, int] = {}  # paho mid -> eseq of an event publish
        self._state_dirty = False
        self._last_state: tuple[Any, ...] | None = None
        self._next_tele = 0.0
        self.bdseq = outbox.bdseq
        self.connected = False
        self.connects = 0
        self.last_beat: float | None = None
        self.counters = {"bad_commands": 0, "bad_acks": 0, "bad_central_status": 0, "publish_refused": 0,
                         "connect_failures": 0, "ack_failures": 0, "session_errors": 0,
                         "commands_repeated": 0, "log_lines_held": 0}
        # Everything central (or whoever reaches our topics) sends may come in a
        # flood: a few lines per kind a minute, the rest counted.
        self._log = LogLimiter(_LOGGER, clock=clock, counters=self.counters)

    # -- control from other threads ------------------------------------------------

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def central_online(self) -> bool:
        return self.connected and self.publisher.central_online is True

    def start(self) -> Session:
        if self._thread is not None:
            raise RuntimeError("the session was already started")
        self._thread = threading.Thread(target=self._run, name="gridpatrol-session", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Something happened (an event was stored): look again now. Any thread, never blocks."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken, or closed at shutdown

    def state_changed(self) -> None:
        """An input or output changed: publish the retained snapshot if it differs."""
        self._state_dirty = True
        self.wake()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Publish retained status ``disconnected``, disconnect cleanly and end the thread."""
        self._stopping = True
        self.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.error("the MQTT session did not stop within %s s", timeout)
                return
        self._wake_r.close()
        self._wake_w.close()

    # -- the session thread -----------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                self.last_beat = self._clock()
                try:
                    if self._connect_and_serve():
                        failures = 0
                except Exception:
                    # A bug or a broken disk: say so loudly, then start over
                    # like after a lost connection rather than stop sending.
                    self.counters["session_errors"] += 1
                    _LOGGER.exception("the MQTT session failed; starting over")
                if self._stopping:
                    break
                delay = self._backoff(failures)
                failures += 1
                _LOGGER.info("reconnecting to %s:%s in %.1f s", self.config.host, self.config.port, delay)
                deadline = self._clock() + delay
                while not self._stopping and (left := deadline - self._clock()) > 0:
                    self.last_beat = self._clock()
                    self._sleep(min(left, MAX_SLEEP_S))
        except Exception:
            _LOGGER.exception("the MQTT session thread failed")
            raise

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(failures, 30))
        # Equal jitter: at least half the step, so agents that lost the same
        # broker do not all knock at the same moment.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _sleep(self, seconds: float, sock: Any = None, want_write: bool = False) -> tuple[bool, bool]:
        """Wait for the wake socket, or ``sock`` readable/writable; returns (readable, writable)."""
        rlist: list[Any] = [self._wake_r] if sock is None else [self._wake_r, sock]
        wlist: list[Any] = [sock] if sock is not None and want_write else []
        try:
            readable, writable, _ = select.select(rlist, wlist, [], max(0.0, seconds))
        except (OSError, ValueError):
            return False, False  # the MQTT socket was closed under us: the caller sees it lost
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        return sock is not None and sock in readable, sock is not None and sock in writable

    def _new_client(self, bdseq: int) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.agent_id, protocol=mqtt.MQTTv5)
        cfg = self.config
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls_ca is not None or cfg.tls_cert is not None:
            client.tls_set(
                ca_certs=None if cfg.tls_ca is None else str(cfg.tls_ca),
                certfile=None if cfg.tls_cert is None else str(cfg.tls_cert),
                keyfile=None if cfg.tls_key is None else str(cfg.tls_key),
            )
        will = AgentStatus(AgentState.OFFLINE, bdseq, self._now_ms())
        client.will_set(self._topics["status"], will.to_payload(), qos=1, retain=True)
        client.max_inflight_messages_set(self.window + CONTROL_SLACK)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_socket_open = no_delay  # an alarm's PUBLISH must not wait for a delayed TCP ack
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # paho callbacks: they run on this thread, inside paho; record and return.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._connack = reason

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._lost = True

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.append(message)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        self._pubacks.append((mid, reason))

    def _connect_and_serve(self) -> bool:
        """One connection from attempt to loss; True if it got as far as CONNACK."""
        self.bdseq = self.outbox.next_bdseq()
        self._connack = None
        self._lost = False
        self._inbox.clear()
        self._pubacks.clear()
        self._mids.clear()
        try:
            client = self._new_client(self.bdseq)
        except (OSError, ValueError) as exc:  # unreadable TLS files, say
            self.counters["connect_failures"] += 1
            _LOGGER.warning("cannot set up the MQTT client: %s", exc)
            return False
        try:
            try:
                client.connect(self.config.host, self.config.port, self.config.keepalive_s, clean_start=True)
            except (OSError, ValueError) as exc:
                self.counters["connect_failures"] += 1
                _LOGGER.warning("cannot connect to %s:%s: %s", self.config.host, self.config.port, exc)
                return False
            if not self._await_connack(client):
                return False
            self._connected(client)
            self._serve(client)
            return True
        finally:
            self._close_client(client)

    def _await_connack(self, client: mqtt.Client) -> bool:
        deadline = self._clock() + CONNACK_TIMEOUT_S
        while self._connack is None and not self._lost and not self._stopping and self._clock() < deadline:
            self.last_beat = self._clock()
            if not self._io(client, MAX_SLEEP_S):
                break
        if self._connack is None or self._connack.is_failure:
            self.counters["connect_failures"] += 1
            _LOGGER.warning("broker %s:%s refused or did not answer: %s", self.config.host, self.config.port,
                            "no CONNACK" if self._connack is None else self._connack)
            return False
        return True

    def _io(self, client: mqtt.Client, timeout: float) -> bool:
        """One round of socket I/O; False once the connection is gone."""
        sock = client.socket()
        if sock is None or self._lost:
            return False
        readable, _ = self._sleep(timeout, sock, client.want_write())
        if readable and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if client.socket() is not None and client.want_write() and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if client.socket() is not None and client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        return client.socket() is not None and not self._lost

    def _connected(self, client: mqtt.Client) -> None:
        self.connects += 1
        self.connected = True
        _LOGGER.info("connected to %s:%s as %s (bdseq %d)", self.config.host, self.config.port, self.agent_id, self.bdseq)
        # Subscribe first: the broker handles our packets in order, so a command
        # central sends on seeing our status cannot arrive before we listen.
        client.subscribe([(self._topics["cmd"], 1), (self._topics["ack"], 1), (topics.CENTRAL_STATUS, 1)])
        status = AgentStatus(AgentState.ONLINE, self.bdseq, self._now_ms())
        client.publish(self._topics["status"], status.to_payload(), qos=1, retain=True)
        self._publish_birth(client)
        self.publisher.connect(acked_eseq=self.outbox.acked_eseq, last_eseq=self.outbox.last_eseq)
        self._next_tele = self._clock()

    def _serve(self, client: mqtt.Client) -> None:
        while not self._stopping:
            now = self._clock()
            self.last_beat = now
            self._handle_inbox(client)
            self._handle_pubacks()
            self._publish_events(client, now)
            if self._state_dirty:
                self._publish_state(client, force=False)
            if now >= self._next_tele:
                self._publish_tele(client)
                self._next_tele = now + self.tele_interval_s
            sleep = min(MAX_SLEEP_S, self._next_tele - now)
            deadline = self.publisher.next_deadline()
            if deadline is not None:
                sleep = min(sleep, deadline - now)
            if self._inbox or self._pubacks:
                sleep = 0.0
            if not self._io(client, max(0.0, sleep)):
                _LOGGER.warning("connection to %s:%s lost", self.config.host, self.config.port)
                return
        self._say_goodbye(client)

    def _close_client(self, client: mqtt.Client) -> None:
        self.connected = False
        self.publisher.disconnect()
        self._mids.clear()
        if client.socket() is not None:
            client.disconnect()  # sends DISCONNECT if it can and closes the socket
            sock = client.socket()
            if sock is not None:
                sock.close()
        # A client serves one connection; paho closes its wake-up socket pair
        # only in a finaliser, which a reference cycle can postpone: close it now.
        client._reset_sockets(sockpair_only=True)  # noqa: SLF001

    def _say_goodbye(self, client: mqtt.Client) -> None:
        """Clean shutdown: retained ``disconnected`` (not the Will's ``offline``)."""
        status = AgentStatus(AgentState.DISCONNECTED, self.bdseq, self._now_ms())
        info = client.publish(self._topics["status"], status.to_payload(), qos=1, retain=True)
        deadline = self._clock() + SHUTDOWN_FLUSH_S
        while self._clock() < deadline and not any(mid == info.mid for mid, _ in self._pubacks):
            if not self._io(client, 0.05):
                break
        client.disconnect()  # a normal DISCONNECT: the broker drops the Will
        while client.socket() is not None and client.want_write() and self._clock() < deadline:
            if not self._io(client, 0.05):
                break
        _LOGGER.info("disconnected from %s:%s", self.config.host, self.config.port)

    # -- what we publish --------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _publish_birth(self, client: mqtt.Client) -> None:
        client.publish(self._topics["birth"], self._birth(self.bdseq).to_payload(), qos=1)
        self._publish_state(client, force=True)

    def _publish_state(self, client: mqtt.Client, *, force: bool) -> None:
        self._state_dirty = False
        snap = self._snapshot()
        key = (dict(snap.inputs), dict(snap.outputs), tuple(snap.latched))
        if not force and key == self._last_state:
            return
        self._last_state = key
        client.publish(self._topics["state"], snap.to_payload(), qos=1, retain=True)

    def _publish_tele(self, client: mqtt.Client) -> None:
        if self._telemetry is None:
            return
        client.publish(self._topics["tele"], self._telemetry().to_payload(), qos=0)

    def _publish_events(self, client: mqtt.Client, now: float) -> None:
        self.publisher.appended(self.outbox.last_eseq)
        for _ in range(ABSENT_ROUNDS_MAX):
            sends = self.publisher.due(now)
            if not sends or self._publish_sends(client, sends):
                return
        # Still only absent eseqs (a long gone run): the rest next time round, soon.
        self.wake()

    def _publish_sends(self, client: mqtt.Client, sends: list[Send]) -> bool:
        """Publish what the outbox still holds of ``sends``; False when it held none of them."""
        stored = self.outbox.get_many(s.eseq for s in sends)
        for send in sends:
            event = stored.get(send.eseq)
            if event is None:  # acked meanwhile, or gone: nothing to send, nothing to wait for
                self.publisher.absent(send.eseq)
                continue
            if send.replayed:
                event = replace(event, replayed=True)
            info = client.publish(self._topics["evt"], event.to_payload(), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.publisher.published(send.eseq)  # the resend timer takes it from here
                continue
            self._mids[info.mid] = send.eseq
        return bool(stored)

    def _handle_pubacks(self) -> None:
        while self._pubacks:
            mid, reason = self._pubacks.popleft()
            eseq = self._mids.pop(mid, None)
            if eseq is None:
                continue
            if reason.is_failure:
                self.counters["publish_refused"] += 1
                _LOGGER.warning("broker refused event eseq %d: %s", eseq, reason)
            self.publisher.published(eseq)

    # -- what we receive ----------------------------------------------------------

    def _handle_inbox(self, client: mqtt.Client) -> None:
        while self._inbox:
            message = self._inbox.popleft()
            if message.topic == self._topics["ack"]:
                self._handle_ack(bytes(message.payload))
            elif message.topic == self._topics["cmd"]:
                self._handle_command(client, bytes(message.payload))
            elif message.topic == topics.CENTRAL_STATUS:
                self._handle_central_status(bytes(message.payload), retained=bool(message.retain))

    def _handle_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.from_payload(payload)
        except DecodeError as exc:
            self.counters["bad_acks"] += 1
            self._log.warning("bad-ack", "bad ack dropped: %s", escaped(str(exc)))
            return
        try:
            removed = self.outbox.ack(ack.eseq, ack.epoch)
        except (OutboxError, sqlite3.Error) as exc:
            # The events stay and go out again; central's next ack tries again.
            self.counters["ack_failures"] += 1
            self._log.warning("ack-failed", "ack %d not recorded: %s", ack.eseq, exc)
            return
        if ack.epoch != self.outbox.epoch:
            # Central's ack point of another outbox (the one this SD card
            # replaced, say): its numbers say nothing about ours. The outbox
            # ignored it and counted it (outbox_acks_other_epoch).
            self._log.warning("ack-epoch", "ack %d of epoch %s ignored: this outbox's epoch is %s",
                              ack.eseq, shown(ack.epoch), shown(self.outbox.epoch))
            return
        self.publisher.acked(self.outbox.acked_eseq)
        if removed:
            _LOGGER.debug("ack %d: %d events delivered, %d left", ack.eseq, removed, self.outbox.depth)

    def _handle_central_status(self, payload: bytes, *, retained: bool) -> None:
        if not payload:
            return  # the retained status was cleared: nothing is known
        try:
            status = CentralStatus.from_payload(payload)
        except DecodeError as exc:
            self.counters["bad_central_status"] += 1
            self._log.warning("bad-central-status", "bad central status dropped: %s", escaped(str(exc)))
            return
        if self.publisher.central_status(status.online, status.ts, retained=retained):
            _LOGGER.info("central is online: sending all %d unacked events again", self.outbox.depth)
        else:
            self._log.info("central-status", "central is %s", "online" if status.online else "offline")

    def _handle_command(self, client: mqtt.Client, payload: bytes) -> None:
        try:
            command = Command.from_payload(payload)
        except DecodeError as exc:
            self.counters["bad_commands"] += 1
            self._log.warning("bad-command", "bad command dropped: %s", escaped(str(exc)))
            txn = _readable_txn(payload)
            if txn is not None:
                self._respond(client, CommandResponse(txn, False, str(exc)).to_payload())
            return
        before = self._memory.answer(command.txn) if self._memory is not None else None
        if before is not None:
            # Handled already (a redelivery, or central asking again): the
            # same answer again, and no second siren, release or replay.
            self.counters["commands_repeated"] += 1
            self._log.info("command-repeated", "command %s (txn %s) was handled before: answered again, not done again",
                           command.cmd, shown(command.txn))
            self._respond(client, before)
            return
        response = self._do(client, command)
        if response.ok:
            self._log.info("command-done", "command %s (txn %s) done", command.cmd, shown(command.txn))
        else:
            self.counters["bad_commands"] += 1
            self._log.warning("command-refused", "command %s (txn %s) refused: %s", command.cmd, shown(command.txn),
                              escaped(response.error or ""))
        answer = response.to_payload()
        if self._memory is not None:
            self._memory.answered(command.txn, answer)
        self._respond(client, answer)

    def _do(self, client: mqtt.Client, command: Command) -> CommandResponse:
        """Act on one command; its answer."""
        error: str | None = None
        if command.cmd is CommandName.REBIRTH:
            self._publish_birth(client)
        elif command.cmd is CommandName.REPLAY:
            return self._replay(command)
        elif command.cmd is not CommandName.PING:
            try:
                error = self._on_command(command)
            except Exception as exc:
                _LOGGER.exception("command %s (txn %s) failed", command.cmd, shown(command.txn))
                error = f"{command.cmd} failed: {exc}"
        return CommandResponse(command.txn, error is None, error)

    def _replay(self, command: Command) -> CommandResponse:
        """Send again from ``from``; answer with ``last`` and ``gone`` of this epoch."""
        epoch = command.args.get("epoch", "")
        if epoch != self.outbox.epoch:
            # Not an outbox this agent still has: nothing of it can be sent,
            # and this epoch's numbers would only be mistaken for it.
            return CommandResponse(command.txn, False, f"replay of epoch {epoch!r}: this outbox's epoch is "
                                                       f"{self.outbox.epoch!r}")
        start = command.args["from"]
        try:
            last, gone = self.outbox.history(start)
        except (OutboxError, sqlite3.Error) as exc:
            return CommandResponse(command.txn, False, f"replay from {start}: the outbox cannot say what it holds: {exc}")
        self.publisher.replay(start)
        return CommandResponse(command.txn, True, last=last, gone=gone)

    def _respond(self, client: mqtt.Client, payload: bytes) -> None:
        client.publish(self._topics["cmd_resp"], payload, qos=1)


def _readable_txn(payload: bytes) -> str | None:
    """The ``txn`` of a command we cannot otherwise read, to answer it with ok=false."""
    try:
        txn = unpack(payload).get("txn")
    except DecodeError:
        return None
    return txn if isinstance(txn, str) and 0 < len(txn) <= TXN_MAX_LEN else None
