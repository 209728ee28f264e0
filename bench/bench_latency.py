"""Alarm latency: a zone's pin driven on the simulation socket -> the event's row in central's store.

Real parts end to end: a Mosquitto of our own on a free port
(gridpatrol.localbroker), a `gridpatrol central` process (ingest, alarm book,
completion tracker and dashboard, all on), and a `gridpatrol agent` process
with `pin_factory = "mock"` and a simulation socket. The zone has
`debounce_ms = 0`, so the figure is the software path alone; a real loop adds
its debounce (50 ms by default) on top.

Method. The bench keeps one connection to the agent's simulation socket and
alternates `drive 17 low` (an `no` contact closes: `alarm`) and `drive 17
high` (`restore`); both rows count. The contact is `no` because a mock pin
starts pulled up (high): an `nc` loop would boot in alarm, and that row,
racing the bench's first drive, could pair every drive with the row of the
one before. The first WARMUP_DRIVES drives are not counted. t0 is taken just before the command is written.
Two clocks stop:
- evt: a paho client of the bench subscribed to the agent's `evt` topic
  (QoS 1) stamps the message on arrival (agent -> broker -> a subscriber);
- store: a read-only SQLite connection polls central's `events` table every
  POLL_S for the next row of that kind (each poll is a fresh read
  transaction, so a row is seen as soon as central's commit is in the WAL).
  The figure is at most POLL_S plus one query late.
- alarm: the same connection polls ``alarm_steps`` for the step the drive
  makes on the zone's alarm (``raise`` for the first opening, ``retrip`` for
  each one after a restore, ``restore`` for a restore): the alarm row that
  staff see, not only the event. Until issue 11 the alarm book wrote it after
  the event's commit, in a transaction of its own; since, in the same one.
Each alarm is measured alone: after its row is seen the bench pauses a
random 30-60 ms (central's ack reaches the agent, which deletes the event
from its outbox, an fsync of its own), so one alarm's ack does not hold up
the next one's commit; the random length keeps the drives from locking step
with anything periodic. Beside it, in the same run on the same broker,
the bare paho round trip: one client publishes a payload of the same size at
QoS 1, another subscribed client stamps it on arrival.

How it grows: the run is repeated with central's store already holding
`--store-rows` events of other agents (0 and 200,000 by default); the ratio
is each p99 over the first one.

`--tls` runs every size a second time over a TLS listener of the same broker
(the production listener settings of `gridpatrol pki broker-config`: client
certificates, TLS 1.2 or later, a CRL) next to the plaintext one; both
listeners share one Mosquitto, so only the transport differs. Neither
listener has the production ACL.

`--flood N` measures the same during a scan flood: a second, planned agent
(played by a paho client of the bench, as tests/faults/test_flood.py does:
status, birth, well-formed QoS 1 scans of a team member's card at one planned
checkpoint whose round is open) publishes N scans as fast as it can once the
warm-up drives are done; the drives go on until `--alarms` are measured or
central has stored the whole flood, whichever comes first. The table says how
many drives fell inside the flood.

`--watch` keeps a logged-in browser's live stream (/api/stream, what every
open dashboard holds) reading during each run, so that the dashboard's share
of central's CPU is in the figures: with no browser connected, central does
not shape live notices at all.

Run from the repository root:  python -m bench.bench_latency [--alarms 1000] [--store-rows 0 200000] [--tls] [--flood 20000] [--watch]
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import http.client
import os
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from bench.soak import ControlRoom
from central.store import Store, StoredEvent
from gridpatrol import pki
from gridpatrol.localbroker import LocalBroker, free_port, port_open
from tests.support import ScanFlooder, open_round_plan
from wire import topics
from wire.messages import Event, EventKind

AGENT = "bench-gate"
ZONE_PIN = 17
POLL_S = 0.0005
ROW_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
PAUSE_S = (0.03, 0.06)
TARGET_P99_MS = 25.0
ALARM_TARGET_P99_MS = 10.0  # issue 11: the alarm row written with its event
FLOOD_TARGET_P99_MS = 250.0  # issue 11: the same during a flood of 20,000 scans
WARMUP_DRIVES = 20
FILL_BATCH = 10_000
FLOODER = "bench-flood"
WATCHER = "bench-watch"  # the --watch browser's account
FLOOD_CARD = "67003B51C6"
FLOOD_ROW_TIMEOUT_S = 300.0  # during a flood a row may wait behind it: measure it, however long
ALARM_ACTIONS = {"alarm": ("raise", "retrip"), "restore": ("restore",)}  # the alarm step each drive makes


# -- the site: broker, PKI, central and agent processes ----------------------


@dataclass(frozen=True, slots=True)
class Tls:
    """A PKI made for the bench: a CA, the broker, central, the agents, the bench's own client."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def cert(self, name: str) -> tuple[Path, Path]:
        if name == "central":
            base = self.directory / "central"
        elif name.startswith(pki.CLIENT_PREFIX):
            base = self.directory / "clients" / name.removeprefix(pki.CLIENT_PREFIX)
        else:
            base = self.directory / "agents" / name
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def toml(self, name: str) -> str:
        cert, key = self.cert(name)
        return f'tls_ca = "{self.ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'


def make_tls(directory: Path, agents: Sequence[str]) -> Tls:
    pki.init_pki(directory)
    pki.issue_central(directory)
    pki.issue_client(directory, "bench")
    for agent_id in agents:
        pki.issue_agent(directory, agent_id)
    return Tls(directory)


def bench_client_name() -> str:
    return pki.client_cn("bench")


class BenchBroker(LocalBroker):
    """One Mosquitto with a plaintext listener (``port``) and, with a PKI, a TLS one (``tls_port``).

    The TLS listener carries the listener lines `gridpatrol pki broker-config`
    prints; everything else (queueing, persistence off) is the same for both,
    so a comparison measures the transport and nothing else.
    """

    def __init__(self, directory: Path, tls: Tls | None = None, *, extra: Sequence[str] = ()) -> None:
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        extra = list(extra)
        if tls is not None:
            d = tls.directory
            extra += [
                # Started as root, Mosquitto becomes the user "mosquitto", which cannot read the private PKI.
                f"user {getpass.getuser()}",
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {d / 'ca.crt'}",
                f"certfile {d / 'broker.crt'}",
                f"keyfile {d / 'broker.key'}",
                f"crlfile {d / 'crl.pem'}",
                "tls_version tlsv1.2",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        super().__init__(directory, extra=extra, persistence=False)

    def start(self, timeout: float = START_TIMEOUT_S) -> BenchBroker:
        super().start(timeout)
        if self.tls_port is not None:
            deadline = time.monotonic() + timeout
            while not port_open(self.tls_port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto's TLS listener on {self.tls_port} did not open")
                time.sleep(0.05)
        return self

    def endpoint(self, tls: bool) -> int:
        if tls:
            assert self.tls_port is not None, "this broker has no TLS listener"
            return self.tls_port
        return self.port


def mqtt_toml(broker: BenchBroker, *, tls: bool, name: str) -> str:
    text = f'host = "127.0.0.1"\nport = {broker.endpoint(tls)}\n'
    if tls:
        assert broker.tls is not None
        text += broker.tls.toml(name)
    return text


def bench_client(broker: BenchBroker, *, tls: bool, client_id: str, name: str | None = None) -> mqtt.Client:
    """A paho MQTT 5 client of the bench, with a certificate when ``tls``."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if tls:
        assert broker.tls is not None
        cert, key = broker.tls.cert(name or bench_client_name())
        client.tls_set(ca_certs=str(broker.tls.ca), certfile=str(cert), keyfile=str(key))
    return client


def central_toml(directory: Path, broker: BenchBroker, *, tls: bool, web_port: int) -> str:
    return (
        f'timezone = "Asia/Shanghai"\ndata_dir = "{directory}"\n'
        f"[mqtt]\n{mqtt_toml(broker, tls=tls, name='central')}"
        f'[store]\nurl = "sqlite://{directory}/central.db"\n'
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n'
    )


def agent_toml(agent_id: str, directory: Path, broker: BenchBroker, *, tls: bool, debounce_ms: int = 0,
               readers: str = "") -> str:
    """The typical gate: a zone with a siren, a panic button, three outputs, optional readers."""
    return f"""agent_id = "{agent_id}"
data_dir = "{directory}"

[mqtt]
{mqtt_toml(broker, tls=tls, name=agent_id)}
[gpio]
pin_factory = "mock"
sim_socket = "{directory}/sim.sock"
status_led = "status-led"

[[zone]]  # "no": reads high at rest, so a mock pin (pulled up) starts normal
name = "north-fence"
pin = {ZONE_PIN}
contact = "no"
debounce_ms = {debounce_ms}
siren = "siren"

[[button]]
name = "office-panic"
pin = 27
hold_ms = 1500
siren = "siren"
indicator = "panic-led"

[[output]]
name = "siren"
pin = 22
max_on_s = 180

[[output]]
name = "panic-led"
pin = 23

[[output]]
name = "status-led"
pin = 24
{readers}"""


def gridpatrol_process(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gridpatrol.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def end_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_for(predicate: Any, what: str, *, timeout: float = START_TIMEOUT_S, procs: Sequence[subprocess.Popen[bytes]] = (),
             logs: Sequence[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                tails = "\n".join(p.read_text()[-2000:] for p in logs if p.exists())
                raise RuntimeError(f"a process exited (status {proc.returncode}) while waiting for {what}:\n{tails}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Site:
    """Broker, a `gridpatrol central` process and one `gridpatrol agent` process, in ``root``."""

    def __init__(self, root: Path, broker: BenchBroker, *, tls: bool, agent_readers: str = "",
                 store_rows: int = 0, plan: str | None = None) -> None:
        self.root = root
        self.broker = broker
        self.tls = tls
        self.central_dir = root / "central"
        self.agent_dir = root / "agent"
        self.central_dir.mkdir(parents=True)
        self.agent_dir.mkdir(parents=True)
        self.db_path = self.central_dir / "central.db"
        self.web_port = free_port()
        (self.central_dir / "central.toml").write_text(central_toml(self.central_dir, broker, tls=tls,
                                                                    web_port=self.web_port))
        (self.agent_dir / "agent.toml").write_text(
            agent_toml(AGENT, self.agent_dir, broker, tls=tls, readers=agent_readers))
        self.logs = [root / "central.log", root / "agent.log"]
        if store_rows:
            fill_store(self.db_path, store_rows)
        if plan is not None:
            (root / "plan.toml").write_text(plan)
            done = subprocess.run([sys.executable, "-m", "gridpatrol.cli", "plan", "import", str(root / "plan.toml"),
                                   "--config", str(self.central_dir / "central.toml")], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"plan import failed: {done.stderr.strip()}")
        self.central: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    def add_watcher_account(self, unit: str) -> str:
        """A staff account that sees ``unit``; returns its password."""
        password = secrets.token_urlsafe(12)
        done = subprocess.run([sys.executable, "-m", "gridpatrol.cli", "users", "add", WATCHER, "--unit", unit,
                               "--config", str(self.central_dir / "central.toml")], input=password + "\n",
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"users add failed: {done.stderr.strip()}")
        return password

    @property
    def sim_path(self) -> Path:
        return self.agent_dir / "sim.sock"

    def start(self) -> Site:
        self.central = gridpatrol_process(["central", "--config", str(self.central_dir / "central.toml")], self.logs[0])
        wait_for(self.db_path.exists, "central's store", procs=[self.central], logs=self.logs)
        self.agent = gridpatrol_process(["agent", "--config", str(self.agent_dir / "agent.toml")], self.logs[1])
        wait_for(self.sim_path.exists, "the agent's simulation socket", procs=[self.central, self.agent], logs=self.logs)
        wait_for(self.agent_online, "the agent online at central", procs=[self.central, self.agent], logs=self.logs)
        return self

    def agent_online(self) -> bool:
        try:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
                row = db.execute("SELECT state FROM agents WHERE agent = ?", (AGENT,)).fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == "online"

    def close(self) -> None:
        end_process(self.agent)
        end_process(self.central)


def fill_store(path: Path, rows: int) -> None:
    """``rows`` scan events of other agents, written the way central's writer writes them."""
    store = Store(path)
    conn = store.connect()
    try:
        t0 = 1_700_000_000_000
        for start in range(0, rows, FILL_BATCH):
            batch = [StoredEvent(f"filler-{i % 50}", i // 50 + 1, "scan", "gate-1", t0 + i, t0 + i, False, t0 + i,
                                 False, {"tag": f"{i:010X}"}, False, "boot-1", i, True)
                     for i in range(start, min(rows, start + FILL_BATCH))]
            conn.execute("BEGIN IMMEDIATE")
            store.insert_events(conn, batch)
            conn.commit()
    finally:
        conn.close()


# -- measuring ------------------------------------------------------------------


class SimDriver:
    """One connection to the agent's simulation socket; ``drive`` waits for the ``ok``."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(5.0)
        self._sock.connect(str(path))
        self._buf = b""

    def drive(self, pin: int, high: bool) -> None:
        self._sock.sendall(f"drive {pin} {'high' if high else 'low'}\n".encode())
        while b"\n" not in self._buf:
            chunk = self._sock.recv(256)
            if not chunk:
                raise ConnectionError("the agent closed its simulation socket")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        if line != b"ok":
            raise RuntimeError(f"the agent answered {line!r}")

    def close(self) -> None:
        self._sock.close()


class Stamps:
    """Arrival times of a subscribed topic's messages, by a key taken from each payload."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._times: dict[Any, float] = {}

    def put(self, key: Any, t: float) -> None:
        """The first arrival counts (a resend of the same eseq comes later)."""
        with self._cv:
            self._times.setdefault(key, t)
            self._cv.notify_all()

    def take(self, key: Any, timeout: float = ROW_TIMEOUT_S) -> float:
        with self._cv:
            if not self._cv.wait_for(lambda: key in self._times, timeout=timeout):
                raise TimeoutError(f"{key!r} did not arrive within {timeout} s")
            return self._times.pop(key)


def connect(client: mqtt.Client, port: int, subscribe: str | None = None) -> None:
    ready = threading.Event()
    if subscribe is None:
        client.on_connect = lambda c, u, f, rc, p: ready.set()
    else:
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(subscribe, qos=1)
        client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not ready.wait(START_TIMEOUT_S):
        raise TimeoutError(f"no connection to 127.0.0.1:{port}")


def disconnect(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass(frozen=True, slots=True)
class Latencies:
    store_ms: list[float]
    evt_ms: list[float]
    bare_ms: list[float]
    alarm_ms: list[float]
    flood: FloodResult | None = None


@dataclass(frozen=True, slots=True)
class FloodResult:
    scans: int
    drives_inside: int  # measured drives made before central had stored the whole flood
    published_s: float
    stored_s: float | None  # from the flood's start until central held all of it; None if not by the end


class ScanFlood(ScanFlooder):
    """tests.support.ScanFlooder as the planned agent FLOODER, on a bench client (plaintext or TLS), born at once."""

    def __init__(self, broker: BenchBroker, n: int, *, tls: bool) -> None:
        client = bench_client(broker, tls=tls, client_id="bench-flood", name=FLOODER if tls else None)
        client.max_inflight_messages_set(1000)
        connect(client, broker.endpoint(tls))
        super().__init__(client, FLOODER, FLOOD_CARD, n)
        self.born(START_TIMEOUT_S)

    def close(self) -> None:
        try:
            self.join(FLOOD_ROW_TIMEOUT_S)
        finally:
            disconnect(self.client)


def flood_stored(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM events WHERE agent = ?", (FLOODER,)).fetchone()[0])


def last_step(db: sqlite3.Connection) -> int:
    """The newest alarm step's rowid (0: none yet). ``alarm_steps``: docs/alarms.md's record of every alarm change."""
    try:
        return int(db.execute("SELECT COALESCE(MAX(rowid), 0) FROM alarm_steps").fetchone()[0])
    except sqlite3.OperationalError:  # central has not made its alarm tables yet
        return 0


def find_step(db: sqlite3.Connection, after: int, actions: Sequence[str]) -> int | None:
    """The rowid of the first step after ``after`` on the bench agent's zone alarm with one of ``actions``."""
    marks = ",".join("?" * len(actions))
    row = db.execute(
        f"SELECT s.rowid FROM alarm_steps s JOIN alarms a ON a.id = s.alarm_id WHERE s.rowid > ? AND a.agent = ?"
        f" AND a.source = 'north-fence' AND s.action IN ({marks}) ORDER BY s.rowid LIMIT 1",
        (after, AGENT, *actions)).fetchone()
    return None if row is None else int(row[0])


def measure_alarms(site: Site, n: int, rng: random.Random, *, flood: int = 0) -> Latencies:
    """``n`` drives alternating alarm and restore; per drive the ms to the evt message, the event row, the alarm step.

    With ``flood``, a ScanFlood of that many scans starts after the warm-up,
    and the drives stop early once central has stored all of it.
    """
    stamps = Stamps()
    sub = bench_client(site.broker, tls=site.tls, client_id="bench-evt")

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.perf_counter()
        e = Event.from_payload(msg.payload)
        if e.kind in (EventKind.ALARM, EventKind.RESTORE):
            stamps.put(e.eseq, t)

    sub.on_message = on_message
    connect(sub, site.broker.endpoint(site.tls), subscribe=topics.evt(AGENT))
    driver = SimDriver(site.sim_path)
    db = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True)
    store_ms: list[float] = []
    evt_ms: list[float] = []
    alarm_ms: list[float] = []
    flooder: ScanFlood | None = None
    inside = 0
    stored_s: float | None = None
    row_timeout = FLOOD_ROW_TIMEOUT_S if flood else ROW_TIMEOUT_S
    try:
        last = db.execute("SELECT COALESCE(MAX(eseq), 0) FROM events WHERE agent = ?", (AGENT,)).fetchone()[0]
        step = last_step(db)
        alarm = True
        for i in range(WARMUP_DRIVES + n):
            if flood and i == WARMUP_DRIVES:
                flooder = ScanFlood(site.broker, flood, tls=site.tls).start()
            if flooder is not None and stored_s is None and flood_stored(db) >= flood:
                stored_s = time.perf_counter() - flooder.started
                break  # the flood is over: what follows would be a quiet run's figures
            kind = "alarm" if alarm else "restore"
            t0 = time.perf_counter()
            driver.drive(ZONE_PIN, not alarm)  # an no contact: low is closed, in alarm
            deadline = t0 + row_timeout
            row = t_row = found = t_alarm = None
            while row is None or found is None:
                if row is None:
                    row = db.execute("SELECT eseq FROM events WHERE agent = ? AND eseq > ? AND kind = ? ORDER BY eseq LIMIT 1",
                                     (AGENT, last, kind)).fetchone()
                    t_row = time.perf_counter() if row is not None else None
                if found is None:
                    found = find_step(db, step, ALARM_ACTIONS[kind])
                    t_alarm = time.perf_counter() if found is not None else None
                if row is None or found is None:
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"no {kind} row (or its alarm step) after eseq {last} within {row_timeout} s")
                    time.sleep(POLL_S)
            assert t_row is not None and t_alarm is not None
            last, step = row[0], found
            if i >= WARMUP_DRIVES:
                t_evt = stamps.take(last, timeout=row_timeout)
                store_ms.append((t_row - t0) * 1000)
                evt_ms.append((t_evt - t0) * 1000)
                alarm_ms.append((t_alarm - t0) * 1000)
                if flooder is not None:
                    inside += 1
            alarm = not alarm
            time.sleep(rng.uniform(*PAUSE_S))
        if flooder is not None and stored_s is None:
            deadline = time.perf_counter() + FLOOD_ROW_TIMEOUT_S
            while flood_stored(db) < flood and time.perf_counter() < deadline:
                time.sleep(0.1)
            if flood_stored(db) >= flood:
                stored_s = time.perf_counter() - flooder.started
    finally:
        if flooder is not None:
            flooder.close()
        db.close()
        driver.close()
        disconnect(sub)
    result = None if flooder is None else FloodResult(flood, inside, flooder.published_s, stored_s)
    return Latencies(store_ms, evt_ms, [], alarm_ms, result)


def measure_bare(broker: BenchBroker, n: int, payload_size: int, rng: random.Random, *, tls: bool) -> list[float]:
    """Publish -> receive at QoS 1 through the same broker, two paho clients, ``n`` times."""
    stamps = Stamps()
    sub = bench_client(broker, tls=tls, client_id="bench-bare-sub")
    pub = bench_client(broker, tls=tls, client_id="bench-bare-pub")
    sub.on_message = lambda c, u, m: stamps.put(int.from_bytes(m.payload[:4], "big"), time.perf_counter())
    topic = "bench/bare"
    connect(sub, broker.endpoint(tls), subscribe=topic)
    connect(pub, broker.endpoint(tls))
    out: list[float] = []
    try:
        filler = os.urandom(max(0, payload_size - 4))
        for i in range(WARMUP_DRIVES + n):
            t0 = time.perf_counter()
            pub.publish(topic, i.to_bytes(4, "big") + filler, qos=1)
            t1 = stamps.take(i)
            if i >= WARMUP_DRIVES:
                out.append((t1 - t0) * 1000)
            time.sleep(rng.uniform(*PAUSE_S))
    finally:
        disconnect(pub)
        disconnect(sub)
    return out


def event_payload_size() -> int:
    return len(Event(eseq=1000, boot_id="0123456789abcdef0123456789abcdef", kind=EventKind.ALARM, source="north-fence",
                     ts=1_700_000_000_000, mono_ms=123_456_789, clock_synced=True).to_payload())


class Watcher:
    """A logged-in browser's live stream, read (and counted) on a thread of its own until closed."""

    def __init__(self, port: int, password: str) -> None:
        room = ControlRoom("127.0.0.1", port, password, user=WATCHER)
        room.login()
        room.hang_up()
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self._conn.request("GET", "/api/stream", headers={"Cookie": room.cookie, "Accept": "text/event-stream"})
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise RuntimeError(f"/api/stream answered {self._resp.status}")
        self.messages = 0
        self._thread = threading.Thread(target=self._read, name="watcher", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._resp:
                if line.startswith(b"event:"):
                    self.messages += 1
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            pass  # closed under it (close() shuts the socket down)

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._conn.close()


def run_one(root: Path, broker: BenchBroker, *, tls: bool, n: int, store_rows: int, rng: random.Random,
            flood: int = 0, watch: bool = False) -> Latencies:
    plan = (open_round_plan(dt.datetime.now(ZoneInfo("Asia/Shanghai")), flooder=FLOODER, other=AGENT, card=FLOOD_CARD)
            if flood else None)
    site = Site(root, broker, tls=tls, store_rows=store_rows, plan=plan)
    watcher: Watcher | None = None
    try:
        password = site.add_watcher_account("fengze" if flood else "") if watch else ""
        site.start()
        if watch:
            wait_for(lambda: port_open(site.web_port), "the dashboard", procs=[site.central], logs=site.logs)
            watcher = Watcher(site.web_port, password)
        measured = measure_alarms(site, n, rng, flood=flood)
        if watcher is not None:
            print(f"  the watching browser read {watcher.messages} live messages", file=sys.stderr, flush=True)
    except BaseException:
        for log in site.logs:
            if log.exists():
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if watcher is not None:
            watcher.close()
        site.close()
    bare_ms = measure_bare(broker, n, event_payload_size(), rng, tls=tls)
    return replace(measured, bare_ms=bare_ms)


def describe_machine(path: Path) -> str:
    """Cores, load and CPU pressure (the share of time some task waited for a CPU), file system, date."""
    fs = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True).stdout.split()[-1:]
    load = os.getloadavg()
    try:
        pressure = Path("/proc/pressure/cpu").read_text().split()[1].removeprefix("avg10=") + " %"
    except (OSError, IndexError):
        pressure = "?"
    return (f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} and CPU pressure {pressure} "
            f"at start; data on {fs[0] if fs else '?'} ({path}); {time.strftime('%Y-%m-%d %H:%M')}")


def print_table(results: list[tuple[str, int, Latencies]]) -> None:
    print(f"{'transport':<10} {'store rows':>10} {'path':<30} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} "
          f"{'p99/first':>9}")
    first: dict[tuple[str, str], float] = {}
    for transport, rows, lat in results:
        central_ms = [row - evt for row, evt in zip(lat.store_ms, lat.evt_ms)]
        alarm_central_ms = [row - evt for row, evt in zip(lat.alarm_ms, lat.evt_ms)]
        for path, xs in (("drive -> row in store", lat.store_ms), ("drive -> alarm row in store", lat.alarm_ms),
                         ("drive -> evt at a subscriber", lat.evt_ms), ("evt -> row (central's part)", central_ms),
                         ("evt -> alarm (central's part)", alarm_central_ms), ("bare paho pub -> sub", lat.bare_ms)):
            if not xs:
                print(f"{transport:<10} {rows:>10} {path:<30} (no drive measured)")
                continue
            p99 = pct(xs, 0.99)
            base = first.setdefault((transport, path), p99)
            print(f"{transport:<10} {rows:>10} {path:<30} {pct(xs, 0.5):8.2f} {p99:8.2f} {max(xs):8.2f} "
                  f"{statistics.fmean(xs):8.2f} {p99 / base:9.2f}")
        if lat.flood is not None:
            f = lat.flood
            stored = f"stored by central {f.stored_s:.1f} s after its start" if f.stored_s is not None else "NOT all stored"
            rate = f" ({f.scans / f.stored_s:.0f} scans/s)" if f.stored_s else ""
            print(f"{'':<10} {'':>10} flood of {f.scans} scans: published in {f.published_s:.1f} s, {stored}{rate}; "
                  f"{f.drives_inside} measured drives fell inside it")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alarms", type=int, default=1000, help="drives per run, alarm and restore alternating (default 1000)")
    ap.add_argument("--store-rows", type=int, nargs="+", default=[0, 200_000],
                    help="events of other agents already in central's store, one run each (default 0 200000)")
    ap.add_argument("--tls", action="store_true", help="also run every size over TLS, next to plaintext")
    ap.add_argument("--dir", type=Path, default=None, help="where the stores live (default: a temporary directory)")
    ap.add_argument("--flood", type=int, default=0, metavar="N",
                    help="measure during a flood of N valid scans at one planned checkpoint (issue 11: 20000)")
    ap.add_argument("--watch", action="store_true",
                    help="keep a logged-in browser's live stream open and read during each run (needs --flood: its plan)")
    args = ap.parse_args()
    if args.watch and not args.flood:
        ap.error("--watch needs --flood (the account's unit comes from the flood's plan)")
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="bench-latency-", dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"alarm latency, {args.alarms} drives per run (alarm and restore alternating), zone debounce_ms = 0"
              + (f", during a flood of {args.flood} scans at one planned checkpoint" if args.flood else "")
              + (", a browser's live stream open" if args.watch else ""))
        print(f"store row polled every {POLL_S * 1000:.1f} ms; {describe_machine(root)}")
        tls = make_tls(root / "pki", [AGENT]) if args.tls else None
        broker = BenchBroker(root / "broker", tls).start()
        results: list[tuple[str, int, Latencies]] = []
        try:
            for rows in args.store_rows:
                for transport in (["plaintext", "TLS"] if args.tls else ["plaintext"]):
                    run_dir = root / f"{transport}-{rows}"
                    results.append((transport, rows, run_one(run_dir, broker, tls=transport == "TLS", n=args.alarms,
                                                              store_rows=rows, rng=rng, flood=args.flood,
                                                              watch=args.watch)))
                    print(f"  done: {transport}, {rows} rows", file=sys.stderr, flush=True)
        finally:
            broker.stop()
        print_table(sorted(results, key=lambda r: (r[0] != "plaintext", r[1])))
        for transport, rows, lat in results:
            for what, xs, target in (("row", lat.store_ms, TARGET_P99_MS),
                                     ("alarm row", lat.alarm_ms, FLOOD_TARGET_P99_MS if args.flood else ALARM_TARGET_P99_MS)):
                if not xs:
                    continue
                p99 = pct(xs, 0.99)
                verdict = "met" if p99 <= target else f"missed by {p99 - target:.1f} ms"
                print(f"target p99 drive -> {what} within {target:g} ms ({transport}, {rows} rows): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
