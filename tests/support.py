"""Real parts for tests: a Mosquitto of a test's own, free ports, deadlines.

Nothing here sleeps for a fixed time to let something happen: callers wait on
a condition with a deadline (:func:`wait_until`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import paho.mqtt.client as mqtt

from gridpatrol import procs
from gridpatrol.localbroker import LocalBroker, free_port, port_open
from wire import topics
from wire.messages import Ack, AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, CommandResponse, Event, EventKind

if TYPE_CHECKING:
    from central.ingest import Ingest
    from central.store import Store, StoredEvent

__all__ = [
    "AGENT_ID", "BOOT", "GATE", "REPO", "T0", "Broker", "CentralSide", "FakeAgent", "FakeClock", "Processes", "Received", "Recorder",
    "SimClient", "agent_toml", "device", "ev", "free_port", "hang_up", "insert", "make_ingest", "port_open", "run_cli", "wait_until",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.01, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


class Broker(LocalBroker):
    """A Mosquitto of one test's own (see gridpatrol.localbroker), plus ``pub``."""

    def pub(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish with ``mosquitto_pub`` (the real command-line client)."""
        cmd = ["mosquitto_pub", "-h", self.host, "-p", str(self.port), "-t", topic, "-q", str(qos), "-s"]
        if retain:
            cmd.append("-r")
        subprocess.run(cmd, input=payload, check=True, timeout=10)


class Processes:
    """Processes a test started; every one is ended at teardown, pass or fail."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab")
        try:
            proc = subprocess.Popen(
                list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def gridpatrol(self, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start([sys.executable, "-m", "gridpatrol.cli", *args], log=log, env=env)

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
        return procs.terminate(proc, timeout)  # type: ignore[return-value]  # a process, so a status

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        procs.kill(proc)

    def close(self) -> None:
        for proc in self.procs:
            self.terminate(proc, timeout=5)


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``gridpatrol`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "gridpatrol.cli", *args],
        input=None if stdin is None else stdin.decode(), capture_output=True, text=True, timeout=timeout,
    )


# -- agent configurations -----------------------------------------------------

AGENT_ID = "school-9-gate-1"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def _table(header: str, keys: dict[str, object]) -> str:
    lines = [header] + [f"{k} = {_toml_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def device(kind: str, **keys: object) -> str:
    """One ``[[kind]]`` table of an agent configuration; keys given None are left out."""
    return _table(f"[[{kind}]]", keys)


# The gate most tests use: a loop on pin 17 that sounds a siren on pin 22.
GATE = (
    device("zone", name="north-fence", pin=17, debounce_ms=20, siren="siren"),
    device("output", name="siren", pin=22, max_on_s=180),
)


def agent_toml(data_dir: Path, port: int, *, agent_id: str = AGENT_ID, devices: Sequence[str] = GATE,
               mqtt: dict[str, object] | None = None, gpio: dict[str, object] | None = None,
               telemetry_s: float | None = None, extra: str = "") -> str:
    """An agent configuration for a test: the agent's broker on 127.0.0.1:``port``.

    ``mqtt`` and ``gpio`` add or replace keys of those tables (``keepalive_s``
    is 5 unless given; ``pin_factory`` is "mock" unless given None); ``devices``
    are :func:`device` tables; ``extra`` is appended as it is.
    """
    parts = [_table("", {"agent_id": agent_id, "data_dir": str(data_dir)}).lstrip("\n"),
             _table("[mqtt]", {"host": "127.0.0.1", "port": port, "keepalive_s": 5, **(mqtt or {})}),
             _table("[gpio]", {"pin_factory": "mock", **(gpio or {})})]
    if telemetry_s is not None:
        parts.append(_table("[telemetry]", {"interval_s": telemetry_s}))
    parts.extend(devices)
    parts.append(extra)
    return "\n".join(parts)


# -- fakes on the wire and at the seams ------------------------------------------

BOOT = "boot-a"
T0 = 1_700_000_000_000


class FakeAgent:
    """An agent on the wire, built from wire messages: publishes, and records its acks and commands."""

    def __init__(self, broker: Broker, agent_id: str, *, will_bdseq: int | None = None) -> None:
        self.agent_id = agent_id
        self.acks: list[int] = []
        self.commands: list[Command] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._gone = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{agent_id}",
                                  protocol=mqtt.MQTTv5)
        if will_bdseq is not None:
            self.client.will_set(topics.status(agent_id), AgentStatus(AgentState.OFFLINE, will_bdseq, T0).to_payload(),
                                 qos=1, retain=True)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_disconnect = lambda *a: self._gone.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(topics.ack(agent_id), 1), (topics.cmd(agent_id), 1)])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "fake agent did not get its subscriptions"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic == topics.ack(self.agent_id):
                self.acks.append(Ack.from_payload(msg.payload).eseq)
            else:
                self.commands.append(Command.from_payload(msg.payload))

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def event(self, eseq: int, *, kind: EventKind = EventKind.SCAN, source: str = "gate-1", replayed: bool = False,
              synced: bool = True, ts: int | None = None, mono_ms: int | None = None, boot_id: str = BOOT,
              **fields: Any) -> Event:
        if kind is EventKind.SCAN and not fields:
            fields = {"tag": f"{eseq:010X}"}
        e = Event(eseq=eseq, boot_id=boot_id, kind=kind, source=source,
                  ts=T0 + eseq * 1000 if ts is None else ts, mono_ms=5000 + eseq * 1000 if mono_ms is None else mono_ms,
                  clock_synced=synced, replayed=replayed, fields=fields)
        self.publish(topics.evt(self.agent_id), e.to_payload())
        return e

    def status(self, state: AgentState, bdseq: int) -> None:
        self.publish(topics.status(self.agent_id), AgentStatus(state, bdseq, T0).to_payload(), retain=True)

    def birth(self, bdseq: int, *, boot_id: str = BOOT, ts: int = 0, mono_ms: int = 0, synced: bool = False) -> None:
        b = Birth(bdseq=bdseq, boot_id=boot_id, fw="test-1", inventory={"readers": ({"name": "gate-1"},)},
                  ts=ts, mono_ms=mono_ms, clock_synced=synced)
        self.publish(topics.birth(self.agent_id), b.to_payload())

    def online(self, bdseq: int = 1) -> None:
        self.status(AgentState.ONLINE, bdseq)
        self.birth(bdseq)

    def acked(self, eseq: int) -> bool:
        with self._lock:
            return eseq in self.acks

    def command_list(self, name: CommandName) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if c.cmd is name]

    def close(self) -> None:
        hang_up(self.client, self._gone)


def hang_up(client: mqtt.Client, gone: threading.Event) -> None:
    """Disconnect and wait until paho's thread has closed the socket, then stop that thread."""
    if client.is_connected():
        client.disconnect()
        gone.wait(10)
    client.loop_stop()


def make_ingest(broker: Broker, store: Store, **kw: Any) -> Ingest:
    """Central's ingest on ``broker`` with a client id of its own."""
    from central.config import MqttConfig
    from central.ingest import Ingest

    return Ingest(MqttConfig(host=broker.host, port=broker.port, client_id="central-under-test"), store, **kw)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Recorder:
    """An EventSink that keeps what it was given (thread-safe: list.append)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.events: list[tuple[EventKind, str, dict[str, Any]]] = []
        self.times: list[float] = []
        self._clock = clock

    def __call__(self, kind: EventKind, source: str, /, **fields: Any) -> None:
        self.events.append((kind, source, fields))
        self.times.append(self._clock())


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class CentralSide:
    """The test as central: a paho client of its own that reads the agent's topics,
    publishes central's retained status on every connect (Will: offline), acks
    and sends commands. It reconnects by itself when the broker comes back."""

    def __init__(self, broker: Broker, agent_id: str = AGENT_ID, *, announce: bool = True) -> None:
        self.broker = broker
        self.agent_id = agent_id
        self.announce = announce
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.connects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-central-{id(self)}",
                                  protocol=mqtt.MQTTv5)
        self.client.will_set(topics.CENTRAL_STATUS, CentralStatus(False, 0).to_payload(), qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        wait_until(lambda: self.connects > 0, timeout=30, message="the test's central to connect")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{topics.ROOT}/{self.agent_id}/#", qos=1)
        if self.announce:
            self.set_online(True)
        self.connects += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._received.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def set_online(self, online: bool) -> None:
        status = CentralStatus(online, int(time.time() * 1000) + self.connects)
        self.client.publish(topics.CENTRAL_STATUS, status.to_payload(), qos=1, retain=True)

    def received(self, channel: topics.Channel) -> list[Received]:
        name = topics.topic(self.agent_id, channel)
        with self._lock:
            return [r for r in self._received if r.topic == name]

    def mark(self) -> int:
        with self._lock:
            return len(self._received)

    def events(self, since: int = 0) -> list[Event]:
        name = topics.evt(self.agent_id)
        with self._lock:
            return [Event.from_payload(r.payload) for r in self._received[since:] if r.topic == name]

    def statuses(self) -> list[AgentStatus]:
        return [AgentStatus.from_payload(r.payload) for r in self.received(topics.Channel.STATUS)]

    def births(self) -> list[Birth]:
        return [Birth.from_payload(r.payload) for r in self.received(topics.Channel.BIRTH)]

    def responses(self) -> list[CommandResponse]:
        return [CommandResponse.from_payload(r.payload) for r in self.received(topics.Channel.CMD_RESP)]

    def ack(self, eseq: int, epoch: str | None = None) -> None:
        """Central's ack, in the epoch of the agent's latest birth unless told otherwise (as central does)."""
        if epoch is None:
            epoch = wait_until(self.births, timeout=30, message="a birth that says the agent's epoch")[-1].epoch
        self.client.publish(topics.ack(self.agent_id), Ack(eseq, epoch).to_payload(), qos=1)

    def command(self, payload: bytes) -> None:
        self.client.publish(topics.cmd(self.agent_id), payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SimClient:
    """Drives the agent's mock pins through its simulation socket."""

    def __init__(self, path: Path) -> None:
        self.sock = wait_until(lambda: self._connect(path), timeout=20, message=f"the sim socket {path}")
        self.reader = self.sock.makefile("rb")

    @staticmethod
    def _connect(path: Path) -> socket.socket | None:
        # The file appears at bind(), a moment before listen(): refused until then.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return sock

    def drive(self, pin: int, level: str) -> str:
        self.sock.sendall(f"drive {pin} {level}\n".encode())
        return self.reader.readline().decode().strip()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


# -- central's store ------------------------------------------------------------------


def ev(agent: str, eseq: int, *, kind: str = "scan", ts_est: int | None = None, received_ts: int = 0,
       **fields: object) -> StoredEvent:
    """A stored event with everything but what the test cares about filled in."""
    from central.store import StoredEvent

    return StoredEvent(agent=agent, eseq=eseq, kind=kind, source="gate-1", ts=1000 + eseq,
                       ts_est=1000 + eseq if ts_est is None else ts_est, ts_estimated=False,
                       received_ts=received_ts or 2000 + eseq, replayed=False,
                       fields=fields or {"tag": "67003B51C6"}, boot_id="b", mono_ms=eseq, clock_synced=True)


def insert(store: Store, events: list[StoredEvent]) -> list[StoredEvent]:
    """Insert ``events`` in one transaction; the ones newly stored."""
    with closing(store.connect()) as conn:
        with conn:
            return store.insert_events(conn, events)


# -- gpiozero's mock pins ----------------------------------------------------------------


def pin_pulses(pin: Any) -> list[tuple[float, float | None]]:
    """A mock output pin's pulses as ``(rise, fall)`` in seconds since its states were last
    cleared (``MockPin.states`` holds each change with the time since the one before); fall
    is None while the pin is still on."""
    out: list[tuple[float, float | None]] = []
    t = 0.0
    for state in pin.states[1:]:
        t += state.timestamp
        if state.state:
            out.append((t, None))
        elif out and out[-1][1] is None:
            out[-1] = (out[-1][0], t)
    return out


# -- a flood of valid scans (issue 11), for the fault suite and bench_latency ----------


# The units of a plan with all four tiers, one of each: a district, a street, a community and a grid.
FOUR_TIERS = """unit = [
  { id = "fengze", tier = "district", name = "Fengze District" },
  { id = "quanxiu", tier = "street", parent = "fengze", name = "Quanxiu Street" },
  { id = "chengzhou", tier = "community", parent = "quanxiu", name = "Chengzhou Community" },
  { id = "chengzhou-g1", tier = "grid", parent = "chengzhou", name = "Grid 1" },
]
"""


def all_day_plan(*, effective: str, agent: str, card: str, readers: Sequence[str], order: str = "any") -> str:
    """A district-wide plan whose one route, of the checkpoints at ``agent``'s ``readers`` (in that order),
    has a round every hour around the clock: a scan at any moment is in an open round.

    ``effective`` (YYYY-MM-DD) is when the plan begins to govern; ``card`` is
    the tag of Lin, the one member of the route's team.
    """
    cps = [f"cp-{reader}" for reader in readers]
    checkpoints = ",\n".join(f'  {{ id = "{cp}", unit = "fengze", agent = "{agent}", reader = "{reader}" }}'
                             for cp, reader in zip(cps, readers))
    return f"""timezone = "Asia/Shanghai"
effective = "{effective}"
unit = [ {{ id = "fengze", tier = "district" }} ]
checkpoint = [
{checkpoints},
]
[[team]]
id = "volunteers-7"
unit = "fengze"
members = [ {{ name = "Lin", tag = "{card}" }} ]
[[route]]
id = "all-day"
unit = "fengze"
teams = ["volunteers-7"]
order = "{order}"
checkpoints = [{", ".join(f'"{cp}"' for cp in cps)}]
window = {{ start = "00:00", end = "00:00", every_min = 60 }}
"""


def open_round_plan(now: Any, *, flooder: str, other: str, card: str) -> str:
    """A plan in which ``flooder``'s reader ``gate-1`` is a checkpoint of a route whose one round is open at ``now``.

    ``now`` is an aware datetime in Asia/Shanghai; the window began 10 minutes
    before it and lasts two hours. ``other`` is a second agent of the same grid
    (the one whose alarm must get through); ``card`` a team member's tag.
    """
    import datetime as dt

    start = (now - dt.timedelta(minutes=10)).replace(second=0, microsecond=0)
    end_min = (start.hour * 60 + start.minute + 120) % 1440
    return f"""timezone = "Asia/Shanghai"
{FOUR_TIERS}agent = [
  {{ id = "{flooder}", unit = "chengzhou-g1", name = "the flooded gate" }},
  {{ id = "{other}", unit = "chengzhou-g1", name = "the gate whose alarm must get through" }},
]
checkpoint = [
  {{ id = "cp-flood", unit = "chengzhou-g1", agent = "{flooder}", reader = "gate-1" }},
  {{ id = "cp-library", unit = "chengzhou-g1", agent = "{flooder}", reader = "gate-2" }},
]

[[team]]
id = "volunteers-7"
unit = "chengzhou"
members = [ {{ name = "Lin", tag = "{card}" }} ]

[[route]]
id = "night-loop"
unit = "chengzhou-g1"
teams = ["volunteers-7"]
order = "any"
checkpoints = ["cp-flood", "cp-library"]
window = {{ start = "{start:%H:%M}", end = "{end_min // 60:02d}:{end_min % 60:02d}", every_min = 120, tolerance_min = 15 }}
"""


class ScanFlooder:
    """A connected paho client speaking as the planned agent ``agent``: status, birth, then ``n`` scans, flat out.

    Exactly what a real agent with readers ``gate-1`` and ``gate-2`` would send
    (QoS 1, eseq 1..n, one boot, ``card`` at ``gate-1``), only faster than any
    reader could: through a pseudo-terminal a card takes a second to count
    again. The caller owns the client (its connection, TLS, other subscriptions).
    """

    def __init__(self, client: mqtt.Client, agent: str, card: str, n: int) -> None:
        self.client = client
        self.agent = agent
        self.card = card
        self.n = n
        self.boot_id = os.urandom(8).hex()
        self.published = 0
        self.started = 0.0  # perf_counter at start()
        self.published_s = 0.0  # from start() until the broker had the last one
        self._thread = threading.Thread(target=self._run, name="scan flood", daemon=True)

    def born(self, timeout: float = 10.0) -> None:
        """Status online and a birth, as a real agent says them on every connect."""
        from wire.codec import pack

        now = int(time.time() * 1000)
        self.client.publish(topics.status(self.agent), json.dumps({"state": "online", "bdseq": 1, "ts": now}), qos=1,
                            retain=True).wait_for_publish(timeout)
        birth = {"bdseq": 1, "boot_id": self.boot_id, "fw": "scan-flood",
                 "inventory": {"zones": [], "buttons": [], "readers": [{"name": "gate-1"}, {"name": "gate-2"}],
                               "outputs": []}}
        self.client.publish(topics.birth(self.agent), pack(birth), qos=1).wait_for_publish(timeout)

    def start(self) -> ScanFlooder:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def _run(self) -> None:
        from wire.codec import pack

        topic = topics.evt(self.agent)
        mono0 = int(time.monotonic() * 1000)
        info = None
        for eseq in range(1, self.n + 1):
            event = {"eseq": eseq, "boot_id": self.boot_id, "kind": "scan", "source": "gate-1",
                     "ts": int(time.time() * 1000), "mono_ms": mono0 + eseq, "clock_synced": True, "replayed": False,
                     "tag": self.card, "fmt": "em4100"}
            info = self.client.publish(topic, pack(event), qos=1)
            self.published = eseq
        if info is not None:
            info.wait_for_publish(300)
        self.published_s = time.perf_counter() - self.started

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the flood did not finish publishing within {timeout} s ({self.published} of {self.n})")
