"""Soak: 300 agents against a real `gridpatrol central` for M minutes; memory, CPU, dashboard, nothing lost.

    .venv/bin/python -m bench.soak [--minutes 10] [--agents 300] [--real-agents 2] [--drop 0.002] [--windows-every 4]

Everything runs on 127.0.0.1: a LocalBroker, `gridpatrol central` (its plan
from gridpatrol/district.py, imported with `gridpatrol plan import`, and a
staff login from `gridpatrol users add`), ``--real-agents`` real `gridpatrol
agent` processes (mock pins driven through their sim socket, RDM6300 readers
on pseudo-terminals), and the rest as lightweight sessions in this process.

A lightweight session speaks the real protocol through wire.messages: retained
status with its Will, birth and retained state on every connect, telemetry
every second (QoS 0), and events with a gap-free eseq, kept until central's
ack covers them; what to (re)send when is decided by the agent's own
agent.publisher.Publisher (live first, resend after resend_s, full resend when
central comes online, replay commands). It answers rebirth, replay, alarm-ack,
output and ping. ``--drop`` is the share of first sends it skips on purpose (a
lossy link): those must come back through resends and central's replays.

Load per agent: a scan every 30-60 s, an alarm every 150-450 s (zone alarm,
panic or tamper; a zone alarm or tamper restores 5-30 s later). The control
room (this script, logged in) polls GET /api/alarms and GET /agents every 10 s,
timing each, and acknowledges the oldest active alarm through the API.

``--windows-every M``: instead of one patrol window over the whole run, each
route's window opens for M - 1 minutes and closes for one, again and again (a
route per window, in one-minute slots), so the completion tracker takes up
and lets go of windows and rounds all through the run, as a night with many
short rounds would make it.

Every 10 s central's RSS (/proc/PID/status) and CPU (/proc/PID/stat) are
sampled. Besides the slope of the last third against the first, the report
gives the least-squares RSS slope over the last 30 minutes (the whole run
when shorter): issue 11's figure, whose goal is flat (under 0.02 MB/min). At the end the sessions drain (every event acked), everything stops,
and central.db (read-only) must hold every eseq each agent made exactly once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import secrets
import selectors
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from agent.inputs.readers.rdm6300 import encode_frame
from agent.publisher import IN_FLIGHT_WINDOW, Publisher
from gridpatrol import district as D
from gridpatrol.localbroker import LocalBroker, free_port
from gridpatrol.procs import terminate
from wire import topics
from wire.errors import DecodeError
from wire.messages import Ack, AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, CommandResponse, Event, EventKind, StateSnapshot, Telemetry

SAMPLE_S = 10.0
RESEND_S = 10.0  # the agents' default [mqtt] resend_s
KEEPALIVE_S = 15
TELE_S = 1.0
SCAN_S = (30.0, 60.0)
ALARM_S = (150.0, 450.0)
RESTORE_S = (5.0, 30.0)
RAMP_S = 10.0  # sessions connect spread over this long, as a district's agents come up
SHARDS = 4  # threads driving the lightweight sessions' sockets
DRAIN_S = 120.0
SLOPE_TAIL_MIN = 30.0  # the RSS slope is judged over this last stretch: by then every cache has filled
SLOPE_GOAL_MB_PER_MIN = 0.02
STOP_S = 30.0  # a process's time to stop on SIGTERM before SIGKILL
TRACE_FRAMES = 4
# `gridpatrol central` with a census on SIGUSR1: the number and shallow size of every
# gc-tracked object by type, RSS, SQLite's and Python's allocations, written to
# PREFIX.N.json (--census), with glibc's malloc totals (mallinfo2: held from the
# system against handed out, the difference is malloc's free space). Unless the
# second argument is "notrace" (--no-tracemalloc), the first census also starts
# tracemalloc and the second dumps what is still allocated since then to
# PREFIX.trace: what grew, by where it was allocated, without tracing (slowly)
# the start-up and the warm-up.
CENSUS_CENTRAL = """
import collections, ctypes, gc, itertools, json, signal, sys, tracemalloc
numbers = itertools.count(1)
try:
    sqlite = ctypes.CDLL("libsqlite3.so.0")  # the library Python's sqlite3 uses: its own count of what it holds
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
except OSError:
    sqlite = None
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2  # glibc >= 2.33; sums every arena
except (OSError, AttributeError):
    libc = None
trace = sys.argv[2] != "notrace"
def census(*_):
    counts, sizes = collections.Counter(), collections.Counter()
    try:
        gc.collect()  # garbage in cycles (paho's matcher makes one per message) is not growth
        for o in gc.get_objects():
            t = type(o)
            module = getattr(t, "__module__", "?")
            name = (module if isinstance(module, str) else "?") + "." + t.__qualname__
            counts[name] += 1
            sizes[name] += sys.getsizeof(o)
        result = {"counts": counts, "sizes": sizes, "py_blocks": sys.getallocatedblocks()}
        if sqlite is not None:
            result["sqlite_bytes"] = sqlite.sqlite3_memory_used()
        if libc is not None:
            info = libc.mallinfo2()
            result["malloc"] = {name: getattr(info, name) for name, _ in MallInfo2._fields_}
        if tracemalloc.is_tracing():
            result["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
        with open("/proc/self/smaps_rollup") as f:
            result["smaps"] = {l.split(":")[0]: int(l.split()[1]) for l in f if l.split()[-1:] == ["kB"]}
    except Exception as exc:  # never take central down for a census
        result = {"error": repr(exc)}
    n = next(numbers)
    with open(sys.argv[1] + "." + str(n) + ".json", "w") as f:
        json.dump(result, f)
    if n == 1 and trace:
        tracemalloc.start(%d)
    elif tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "<string>")])
        snapshot.dump(sys.argv[1] + ".trace")
        tracemalloc.stop()
signal.signal(signal.SIGUSR1, census)
from gridpatrol.cli import main
sys.exit(main(sys.argv[3:]))
""" % TRACE_FRAMES
START_TIMEOUT_S = 60.0
USER = "soak"
FW = "soak-1"
INVENTORY = {"zones": [{"name": "perimeter"}], "buttons": [{"name": "office-panic"}],
             "readers": [{"name": "gate-reader", "protocol": "rdm6300"}],
             "outputs": [{"name": "siren"}, {"name": "panic-led"}, {"name": "status-led"}]}


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the lightweight agent -----------------------------------------------------------


@dataclass(eq=False)
class LightAgent:
    """One agent's MQTT session, driven by a shard thread (paho's external loop, as agent/session.py does)."""

    agent_id: str
    port: int
    tags: tuple[str, ...]
    rng: random.Random
    drop: float
    start_at: float
    boot_id: str = field(default_factory=lambda: secrets.token_hex(8))
    t0: float = field(default_factory=time.monotonic)
    client: mqtt.Client | None = None
    bdseq: int = 0
    eseq: int = 0
    acked: int = 0
    outbox: dict[int, Event] = field(default_factory=dict)
    made: dict[int, str] = field(default_factory=dict)  # eseq -> kind
    publisher: Publisher = field(default_factory=lambda: Publisher(resend_s=RESEND_S))
    inbox: deque[mqtt.MQTTMessage] = field(default_factory=deque)
    pubacks: deque[int] = field(default_factory=deque)
    mids: dict[int, int] = field(default_factory=dict)
    connack: Any = None
    up: bool = False
    lost: bool = False
    generating: bool = True
    next_tele: float = 0.0
    next_scan: float = 0.0
    next_alarm: float = 0.0
    restore: tuple[float, str, str] | None = None  # (at, kind of the alarm, source)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("connects", "dropped", "acks", "replays", "rebirths", "alarm_acks", "commands", "bad")
        , 0))

    def __post_init__(self) -> None:
        self.next_scan = self.start_at + self.rng.uniform(*SCAN_S)
        self.next_alarm = self.start_at + self.rng.uniform(*ALARM_S)

    @property
    def depth(self) -> int:
        return len(self.outbox)

    def topic(self, channel: topics.Channel) -> str:
        return topics.topic(self.agent_id, channel)

    def connect(self) -> None:
        self.bdseq += 1
        self.connack, self.up, self.lost = None, False, False
        self.inbox.clear(), self.pubacks.clear(), self.mids.clear()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.agent_id, protocol=mqtt.MQTTv5, userdata=self)
        client.will_set(self.topic(topics.Channel.STATUS), AgentStatus(AgentState.OFFLINE, self.bdseq, now_ms()).to_payload(),
                        qos=1, retain=True)
        client.max_inflight_messages_set(IN_FLIGHT_WINDOW + 16)
        client.on_connect = lambda c, a, f, reason, p: setattr(a, "connack", reason)
        client.on_disconnect = lambda c, a, f, reason, p: setattr(a, "lost", True)
        client.on_message = lambda c, a, m: a.inbox.append(m)
        client.on_publish = lambda c, a, mid, reason, p: a.pubacks.append(mid)
        self.client = client
        try:
            client.connect("127.0.0.1", self.port, KEEPALIVE_S, clean_start=True)
            self.counts["connects"] += 1
        except OSError:
            self.lost = True

    def _connected(self, now: float) -> None:
        c = self.client
        assert c is not None
        c.subscribe([(self.topic(topics.Channel.CMD), 1), (self.topic(topics.Channel.ACK), 1), (topics.CENTRAL_STATUS, 1)])
        c.publish(self.topic(topics.Channel.STATUS), AgentStatus(AgentState.ONLINE, self.bdseq, now_ms()).to_payload(),
                  qos=1, retain=True)
        self._birth()
        snap = StateSnapshot(now_ms(), {"perimeter": "normal", "office-panic": "released", "gate-reader": "ok"},
                             {"siren": False, "panic-led": False, "status-led": True})
        c.publish(self.topic(topics.Channel.STATE), snap.to_payload(), qos=1, retain=True)
        self.publisher.connect(acked_eseq=self.acked, last_eseq=self.eseq)
        self.up = True
        self.next_tele = now

    def _birth(self) -> None:
        birth = Birth(self.bdseq, self.boot_id, FW, {k: tuple(v) for k, v in INVENTORY.items()}, config_hash="soak",
                      mono_ms=self._mono(), ts=now_ms(), clock_synced=True)
        assert self.client is not None
        self.client.publish(self.topic(topics.Channel.BIRTH), birth.to_payload(), qos=1)

    def _mono(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def emit(self, kind: EventKind, source: str, **fields: Any) -> None:
        self.eseq += 1
        self.outbox[self.eseq] = Event(self.eseq, self.boot_id, kind, source, now_ms(), self._mono(), True, fields=fields)
        self.made[self.eseq] = str(kind)

    def _generate(self, now: float) -> None:
        if not self.generating or now < self.start_at:
            return
        if now >= self.next_scan:
            tag = self.rng.choice(self.tags) if self.rng.random() < 0.7 else f"{self.rng.getrandbits(40):010X}"
            self.emit(EventKind.SCAN, "gate-reader", tag=tag)
            self.next_scan = now + self.rng.uniform(*SCAN_S)
        if self.restore is not None and now >= self.restore[0]:
            _, kind, source = self.restore
            self.emit(EventKind.RESTORE, source, **({"state": "normal"} if kind == "tamper" else {}))
            self.restore = None
        if now >= self.next_alarm:
            roll = self.rng.random()
            if roll < 0.15:
                self.emit(EventKind.PANIC, "office-panic")
            elif roll < 0.2:
                self.emit(EventKind.TAMPER, "perimeter", state="tamper-cut")
                self.restore = (now + self.rng.uniform(*RESTORE_S), "tamper", "perimeter")
            else:
                self.emit(EventKind.ALARM, "perimeter")
                self.restore = (now + self.rng.uniform(*RESTORE_S), "alarm", "perimeter")
            self.next_alarm = now + self.rng.uniform(*ALARM_S)

    def tick(self, now: float) -> None:
        """Everything due now; called by the shard thread only."""
        self._generate(now)
        if self.client is None:
            if now >= self.start_at:
                self.connect()
            return
        if self.lost:
            return
        if not self.up:
            if self.connack is not None:
                if self.connack.is_failure:
                    self.lost = True
                    return
                self._connected(now)
            else:
                return
        c = self.client
        while self.inbox:
            self._receive(self.inbox.popleft())
        while self.pubacks:
            eseq = self.mids.pop(self.pubacks.popleft(), None)
            if eseq is not None:
                self.publisher.published(eseq)
        self.publisher.appended(self.eseq)
        for send in self.publisher.due(now):
            event = self.outbox.get(send.eseq)
            if event is None:
                self.publisher.published(send.eseq)
                continue
            if not send.replayed and self.drop and self.rng.random() < self.drop:
                self.counts["dropped"] += 1  # "sent" into a lossy link: the resend timer takes it from here
                self.publisher.published(send.eseq)
                continue
            if send.replayed:
                event = replace(event, replayed=True)
            info = c.publish(self.topic(topics.Channel.EVT), event.to_payload(), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.publisher.published(send.eseq)
            else:
                self.mids[info.mid] = send.eseq
        if now >= self.next_tele:
            tele = Telemetry(uptime_s=now - self.t0, outbox_depth=self.depth, reconnects=self.counts["connects"] - 1,
                             clock_synced=True, ts=now_ms(), mono_ms=self._mono())
            c.publish(self.topic(topics.Channel.TELE), tele.to_payload(), qos=0)
            self.next_tele += TELE_S
            if self.next_tele < now:
                self.next_tele = now + TELE_S

    def _receive(self, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self.topic(topics.Channel.ACK):
                eseq = min(Ack.from_payload(msg.payload).eseq, self.eseq)
                self.counts["acks"] += 1
                if eseq > self.acked:
                    for n in range(self.acked + 1, eseq + 1):
                        self.outbox.pop(n, None)
                    self.acked = eseq
                    self.publisher.acked(eseq)
            elif msg.topic == self.topic(topics.Channel.CMD):
                self._command(Command.from_payload(msg.payload))
            elif msg.topic == topics.CENTRAL_STATUS and msg.payload:
                status = CentralStatus.from_payload(msg.payload)
                self.publisher.central_status(status.online, status.ts, retained=bool(msg.retain))
        except DecodeError:
            self.counts["bad"] += 1

    def _command(self, command: Command) -> None:
        self.counts["commands"] += 1
        if command.cmd is CommandName.REBIRTH:
            self.counts["rebirths"] += 1
            self._birth()
        elif command.cmd is CommandName.REPLAY:
            self.counts["replays"] += 1
            self.publisher.replay(command.args["from"])
        elif command.cmd is CommandName.ALARM_ACK:
            self.counts["alarm_acks"] += 1
        assert self.client is not None
        self.client.publish(self.topic(topics.Channel.CMD_RESP), CommandResponse(command.txn, True).to_payload(), qos=1)

    def next_due(self) -> float:
        due = min(self.next_tele, self.next_scan, self.next_alarm) if self.up else self.start_at
        if self.restore is not None:
            due = min(due, self.restore[0])
        deadline = self.publisher.next_deadline()
        return due if deadline is None else min(due, deadline)

    def close(self) -> None:
        c = self.client
        if c is None:
            return
        if self.up and not self.lost:
            c.publish(self.topic(topics.Channel.STATUS),
                      AgentStatus(AgentState.DISCONNECTED, self.bdseq, now_ms()).to_payload(), qos=1, retain=True)
            c.disconnect()
            c.loop_write()
        sock = c.socket()
        if sock is not None:
            sock.close()
        c._reset_sockets()  # noqa: SLF001  # paho keeps a wake-up socket pair per client; close it too
        self.client = None


class Shard(threading.Thread):
    """Drives the sockets of some sessions with one selector; reconnects a session whose connection died."""

    def __init__(self, agents: list[LightAgent]) -> None:
        super().__init__(name="soak-shard", daemon=True)
        self.agents = agents
        self.stop_flag = threading.Event()
        self.errors: list[str] = []
        self.reconnects = 0

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        socks: dict[LightAgent, Any] = {}
        next_misc = 0.0
        try:
            while not self.stop_flag.is_set():
                now = time.monotonic()
                for a in self.agents:
                    if a.inbox or a.pubacks or a.next_due() <= now or (a.client is not None and not a.up):
                        a.tick(now)
                    if a.lost and a.client is not None:  # died: drop it, come back like the agent does
                        self._forget(sel, socks, a)
                        a.publisher.disconnect()
                        a.close()
                        a.start_at = now + a.rng.uniform(0.5, 2.0)
                        self.reconnects += 1
                    sock = a.client.socket() if a.client is not None else None
                    if sock is not socks.get(a):
                        self._forget(sel, socks, a)
                        if sock is not None:
                            sel.register(sock, selectors.EVENT_READ, a)
                            socks[a] = sock
                    if sock is not None and a.client is not None and a.client.want_write():
                        a.client.loop_write()
                timeout = max(0.0, min(0.1, min(a.next_due() for a in self.agents) - time.monotonic()))
                for key, _ in sel.select(timeout):
                    a = key.data
                    if a.client is not None and a.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        a.lost = True
                if time.monotonic() >= next_misc:
                    for a in self.agents:
                        if a.client is not None and a.client.socket() is not None:
                            if a.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                                a.lost = True
                    next_misc = time.monotonic() + 1.0
        except Exception as exc:  # noqa: BLE001  # reported in the figures, not swallowed
            self.errors.append(repr(exc))
            raise
        finally:
            for a in self.agents:
                self._forget(sel, socks, a)
                a.close()
            sel.close()

    @staticmethod
    def _forget(sel: selectors.BaseSelector, socks: dict[LightAgent, Any], a: LightAgent) -> None:
        old = socks.pop(a, None)
        if old is not None:
            try:
                sel.unregister(old)
            except (KeyError, ValueError):
                pass


# -- real agents ----------------------------------------------------------------------


@dataclass
class RealAgent:
    agent_id: str
    directory: Path
    master: int
    slave: int
    tags: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None
    provoked: int = 0

    @property
    def sim(self) -> Path:
        return self.directory / "sim.sock"

    def config(self, mqtt_port: int) -> str:
        return f"""agent_id = "{self.agent_id}"
data_dir = "{self.directory}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive_s = {KEEPALIVE_S}
[gpio]
pin_factory = "mock"
sim_socket = "{self.sim}"
[telemetry]
interval_s = {TELE_S}
[[zone]]
name = "perimeter"
pin = {D.ZONE_PIN}
contact = "nc"
debounce_ms = 50
[[button]]
name = "office-panic"
pin = {D.BUTTON_PIN}
hold_ms = 300
[[reader]]
name = "gate-reader"
port = "{os.ttyname(self.slave)}"
protocol = "rdm6300"
"""

    def drive(self, pin: int, level: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sim))
            s.sendall(f"drive {pin} {level}\n".encode())
            s.recv(100)

    def outbox(self) -> tuple[int, set[int]]:
        """The last eseq the agent handed out, and the eseqs still waiting for central's ack."""
        db = self.directory / "outbox.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            last = int(conn.execute("SELECT value FROM meta WHERE key = 'last_eseq'").fetchone()[0])
            return last, {row[0] for row in conn.execute("SELECT eseq FROM events")}


def play_real_agents(agents: list[RealAgent], stop: threading.Event, rng: random.Random) -> None:
    """The same rates as the lightweight sessions, through the real inputs: taps on the pty, pins on the sim socket."""
    plan: list[tuple[float, int, str]] = []
    t = time.monotonic()
    for i in range(len(agents)):
        plan += [(t + rng.uniform(*SCAN_S), i, "scan"), (t + rng.uniform(*ALARM_S), i, "alarm")]
    while not stop.is_set():
        plan.sort()
        at, i, what = plan.pop(0)
        if stop.wait(max(0.0, at - time.monotonic())):
            return
        a = agents[i]
        try:
            if what == "scan":
                for _ in range(5):  # an RDM6300 repeats its frame while the card lies on it
                    os.write(a.master, encode_frame(rng.choice(a.tags)))
                    time.sleep(0.1)
                plan.append((time.monotonic() + rng.uniform(*SCAN_S), i, "scan"))
            elif what == "alarm":
                pin, first, then, hold = ((D.BUTTON_PIN, "low", "high", 0.6) if rng.random() < 0.2
                                          else (D.ZONE_PIN, "high", "low", rng.uniform(*RESTORE_S)))
                a.drive(pin, first)
                plan += [(time.monotonic() + hold, i, f"{pin} {then}"),
                         (time.monotonic() + rng.uniform(*ALARM_S), i, "alarm")]
            else:
                pin_s, level = what.split()
                a.drive(int(pin_s), level)
        except OSError as exc:
            print(f"real agent {a.agent_id}: {what}: {exc}", file=sys.stderr)


# -- central, the control room, the sampler -------------------------------------------


class ControlRoom:
    """A logged-in staff session on the dashboard, over plain HTTP/1.1 keep-alive."""

    def __init__(self, host: str, port: int, password: str, *, user: str = USER) -> None:
        self.host, self.port, self.password, self.user = host, port, password, user
        self.conn: http.client.HTTPConnection | None = None
        self.cookie = ""
        self.csrf = ""
        self.acked = 0
        self.errors: list[str] = []

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"Cookie": self.cookie, **(headers or {})} if self.cookie else dict(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        cookie = resp.getheader("set-cookie")
        if cookie and cookie.startswith("gp_session="):
            self.cookie = cookie.split(";", 1)[0]
        return resp.status, data, resp

    def _csrf_from(self, html: bytes) -> str:
        m = re.search(rb'name="csrf" value="([^"]+)"', html)
        if m is None:
            raise RuntimeError("no CSRF token in the page")
        return m.group(1).decode()

    def login(self) -> None:
        _, page, _ = self.request("GET", "/login")
        form = urllib.parse.urlencode({"name": self.user, "password": self.password, "csrf": self._csrf_from(page), "next": "/"})
        status, _, _ = self.request("POST", "/login", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303:
            raise RuntimeError(f"login answered {status}")
        status, page, _ = self.request("GET", "/agents")
        if status != 200:
            raise RuntimeError(f"/agents answered {status} after login")
        self.csrf = self._csrf_from(page)

    def hang_up(self) -> None:
        """uvicorn closes an idle keep-alive connection after 5 s; a poll every 10 s opens its own."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def timed(self, path: str) -> tuple[float, bytes]:
        t = time.perf_counter()
        status, data, _ = self.request("GET", path)
        ms = (time.perf_counter() - t) * 1000
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return ms, data

    def ack(self, alarms: list[dict[str, Any]], *, every: bool = False) -> None:
        """Acknowledge the oldest active alarm, or (``every``) all of them."""
        active = sorted(a["id"] for a in alarms if a.get("state") == "active")
        for alarm_id in active if every else active[:1]:
            status, body, _ = self.request("POST", f"/api/alarms/{alarm_id}/ack", b"", {"X-CSRF-Token": self.csrf})
            if status == 200:
                self.acked += 1
            elif status != 409:  # 409: acknowledged meanwhile
                self.errors.append(f"ack {alarm_id}: {status} {body[:200]!r}")


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    cpu_pct: float
    stored: int
    threads: int


def proc_status(pid: int) -> tuple[float, int]:
    """RSS in MB and the number of threads, from /proc/PID/status."""
    rss, threads = float("nan"), 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def stored_count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- the run --------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.password = secrets.token_urlsafe(12)
        self.web_port = free_port()
        self.broker: LocalBroker | None = None
        self.central: subprocess.Popen[bytes] | None = None
        self.real: list[RealAgent] = []
        self.light: list[LightAgent] = []
        self.shards: list[Shard] = []
        self.stop = threading.Event()  # Ctrl-C: end the load early, then drain and check as usual
        self.samples: list[Sample] = []
        self.timings: dict[str, list[tuple[float, float]]] = {"/api/alarms": [], "/agents": []}
        self.room: ControlRoom | None = None
        self.t_load = 0.0
        self.own_cpu_pct = 0.0

    def cli(self, *args: str, stdin: bytes | None = None) -> None:
        with open(self.root / "setup.log", "ab") as log:
            done = subprocess.run([sys.executable, "-m", "gridpatrol.cli", *args], stdout=log, stderr=log, input=stdin,
                                  timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"gridpatrol {' '.join(args[:2])} failed; see {self.root / 'setup.log'}")

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "gridpatrol.cli", *args], stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def setup(self) -> None:
        a = self.args
        self.broker = LocalBroker(self.root / "broker").start()
        district = D.build(a.agents, now=dt.datetime.now(dt.timezone.utc), minutes=a.minutes)
        cdir = self.root / "central"
        cdir.mkdir()
        self.conf = cdir / "central.toml"
        self.db = cdir / "central.db"
        self.conf.write_text(D.central_toml(data_dir=str(cdir), mqtt_port=self.broker.port,
                                            web_listen=f"127.0.0.1:{self.web_port}"))
        plan = windowed_plan_toml(district, a.windows_every, a.minutes) if a.windows_every else D.plan_toml(district)
        (self.root / "plan.toml").write_text(plan)
        self.cli("plan", "import", str(self.root / "plan.toml"), "--config", str(self.conf))
        self.cli("users", "add", USER, "--unit", "fengze", "--config", str(self.conf), stdin=(self.password + "\n").encode())
        if a.census:
            with open(self.root / "central.log", "ab") as out:
                self.central = subprocess.Popen(
                    [sys.executable, "-c", CENSUS_CENTRAL, str(self.root / "census"),
                     "notrace" if a.no_tracemalloc else "trace", "central", "--config", str(self.conf)],
                    stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        else:
            self.central = self.spawn(["central", "--config", str(self.conf)], self.root / "central.log")
        self._wait(lambda: self._healthy(), "central's dashboard")
        tags = {agent: r.member_tags for r in district.routes for agent in r.agents}
        for i, spec in enumerate(district.agents):
            agent_tags = tags.get(spec.agent_id, (D.UNKNOWN_TAG,))
            if i < a.real_agents:
                self._start_real(spec.agent_id, agent_tags)
            else:
                self.light.append(LightAgent(spec.agent_id, self.broker.port, agent_tags, random.Random(self.rng.random()),
                                             a.drop, time.monotonic() + RAMP_S * (i / a.agents)))
        for r in self.real:
            self._wait(lambda r=r: r.sim.exists() or r.proc is None or r.proc.poll() is not None, f"agent {r.agent_id}")
            if r.proc is not None and r.proc.poll() is not None:
                raise RuntimeError(f"agent {r.agent_id} exited at start; see {r.directory / 'agent.log'}")
        self.shards = [Shard(self.light[n::SHARDS]) for n in range(SHARDS) if self.light[n::SHARDS]]
        self.room = ControlRoom("127.0.0.1", self.web_port, self.password)
        self.room.login()
        self.room.hang_up()

    def _start_real(self, agent_id: str, tags: tuple[str, ...]) -> None:
        assert self.broker is not None
        directory = self.root / "agents" / agent_id
        directory.mkdir(parents=True)
        master, slave = os.openpty()
        r = RealAgent(agent_id, directory, master, slave, tags)
        self.real.append(r)
        (directory / "agent.toml").write_text(r.config(self.broker.port))
        r.proc = self.spawn(["agent", "--config", str(directory / "agent.toml")], directory / "agent.log")

    def _healthy(self) -> bool:
        if self.central is not None and self.central.poll() is not None:
            raise RuntimeError(f"central exited at start; see {self.root / 'central.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except OSError:
            return False

    @staticmethod
    def _wait(cond: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {START_TIMEOUT_S:g} s")
            time.sleep(0.1)

    def poll_dashboard(self) -> None:
        room = self.room
        assert room is not None
        while not self.stop.wait(SAMPLE_S - (time.monotonic() - self.t_load) % SAMPLE_S):
            t = time.monotonic() - self.t_load
            try:
                ms, data = room.timed("/api/alarms")
                self.timings["/api/alarms"].append((t, ms))
                ms, _ = room.timed("/agents")
                self.timings["/agents"].append((t, ms))
                if self.args.ack:
                    room.ack(json.loads(data), every=self.args.ack_all)
            except (OSError, RuntimeError, http.client.HTTPException, ValueError) as exc:
                room.errors.append(f"{t:.0f} s: {exc!r}")
            finally:
                room.hang_up()

    def run(self) -> dict[str, Any]:
        assert self.central is not None
        pid = self.central.pid
        stop_real = threading.Event()
        self.t_load = time.monotonic()
        for s in self.shards:
            s.start()
        player = threading.Thread(target=play_real_agents, args=(self.real, stop_real, random.Random(self.args.seed)),
                                  daemon=True)
        player.start()
        poller = threading.Thread(target=self.poll_dashboard, daemon=True)
        poller.start()
        end = self.t_load + self.args.minutes * 60
        cpu_prev, t_prev = proc_cpu_s(pid), time.monotonic()
        own_cpu0, own_t0 = proc_cpu_s(os.getpid()), t_prev
        n = 1
        warm = max(1, int(min(120.0, self.args.minutes * 20) // SAMPLE_S))  # samples before the first census
        while not self.stop.wait(max(0.0, self.t_load + n * SAMPLE_S - time.monotonic())):
            if self.central.poll() is not None:
                print(f"central exited with {self.central.returncode}; see {self.root / 'central.log'}", file=sys.stderr)
                break
            cpu, t = proc_cpu_s(pid), time.monotonic()
            rss, threads = proc_status(pid)
            self.samples.append(Sample(t - self.t_load, rss, 100 * (cpu - cpu_prev) / (t - t_prev), stored_count(self.db),
                                       threads))
            cpu_prev, t_prev = cpu, t
            s = self.samples[-1]
            print(f"  {s.t:6.0f} s  rss {s.rss_mb:6.1f} MB  cpu {s.cpu_pct:5.1f} %  stored {s.stored}  threads {s.threads}",
                  file=sys.stderr, flush=True)
            n += 1
            if self.args.census and (len(self.samples) == warm or t >= end):
                os.kill(pid, signal.SIGUSR1)  # a census of central's objects: after the warm-up, and at the end
            if t >= end:
                break
        self.own_cpu_pct = 100 * (proc_cpu_s(os.getpid()) - own_cpu0) / max(1e-9, time.monotonic() - own_t0)
        # Load ends: no new events; everything made must now reach central and be acked.
        for a in self.light:
            a.generating = False
        stop_real.set()
        player.join(timeout=10)
        drained_s = self._drain()
        self.stop.set()
        poller.join(timeout=60)
        for s in self.shards:
            s.stop_flag.set()
        for s in self.shards:
            s.join(timeout=30)
        for r in self.real:
            terminate(r.proc, STOP_S)
        terminate(self.central, STOP_S)
        return self.check(drained_s)

    def _drain(self) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < DRAIN_S:
            light = sum(a.depth for a in self.light)
            real = 0
            for r in self.real:
                with sqlite3.connect(f"file:{r.directory / 'outbox.db'}?mode=ro", uri=True, timeout=5) as conn:
                    real += conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            if light == 0 and real == 0:
                return time.monotonic() - t0
            time.sleep(0.5)
        return None

    def check(self, drained_s: float | None) -> dict[str, Any]:
        made: dict[str, dict[int, str | None]] = {a.agent_id: dict(a.made) for a in self.light}
        waiting: dict[str, set[int]] = {a.agent_id: set(a.outbox) for a in self.light}  # never acked: still the agent's
        for r in self.real:
            last, waiting[r.agent_id] = r.outbox()
            made[r.agent_id] = dict.fromkeys(range(1, last + 1))
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT agent, eseq, kind FROM events").fetchall()
            dup_rows = conn.execute("SELECT COUNT(*) FROM (SELECT agent, eseq FROM events GROUP BY agent, eseq "
                                    "HAVING COUNT(*) > 1)").fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            flagged = conn.execute("SELECT COUNT(*) FROM agents WHERE flags LIKE '%integrity%' OR flags LIKE '%lost%'"
                                   ).fetchone()[0]
        stored: dict[tuple[str, int], str] = {(agent, eseq): kind for agent, eseq, kind in rows}
        missing = [(agent, e) for agent, es in made.items() for e in es if (agent, e) not in stored]
        # Not at central but still in the agent's outbox: not delivered yet (the run did not drain), not lost.
        lost = [(agent, e) for agent, e in missing if e not in waiting[agent]]
        extra = [k for k in stored if k[0] not in made or k[1] not in made[k[0]]]
        mismatched = [k for k, kind in stored.items()
                      if k[0] in made and made[k[0]].get(k[1]) not in (None, kind)]
        return {
            "made": sum(len(es) for es in made.values()),
            "stored": len(stored),
            "duplicates": dup_rows,
            "lost": len(lost),
            "undelivered": len(missing) - len(lost),
            "lost_examples": lost[:10],
            "extra": len(extra),
            "mismatched": len(mismatched),
            "drained_s": drained_s,
            "dropped_on_purpose": sum(a.counts["dropped"] for a in self.light),
            "session_counts": {k: sum(a.counts[k] for a in self.light) for k in self.light[0].counts} if self.light else {},
            "resends_due": sum(a.publisher.counters["resends_due"] for a in self.light),
            "shard_reconnects": sum(s.reconnects for s in self.shards),
            "shard_errors": [e for s in self.shards for e in s.errors],
            "central_counters": {k: v for k, v in sorted(counters.items()) if v},
            "agents_flagged": flagged,
            "central_exit": self.central.returncode if self.central is not None else None,
            "load_generator_cpu_pct": round(self.own_cpu_pct, 1),
            "control_room_acks": self.room.acked if self.room else 0,
            "control_room_errors": self.room.errors[:10] if self.room else [],
        }

    def close(self) -> None:
        self.stop.set()
        for s in self.shards:
            s.stop_flag.set()
        for s in self.shards:
            if s.is_alive():
                s.join(timeout=30)
        for r in self.real:
            terminate(r.proc, STOP_S)
        terminate(self.central, STOP_S)
        if self.room is not None and self.room.conn is not None:
            self.room.conn.close()
        for r in self.real:
            for fd in (r.master, r.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.broker is not None:
            self.broker.stop()


# -- the figures ----------------------------------------------------------------------


def minute_rows(samples: list[Sample], timings: dict[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    def minute(t: float) -> int:  # the sample taken at 60.02 s closes minute 1
        return int(max(0.0, t - 1.0) // 60) + 1

    rows = []
    for m in sorted({minute(s.t) for s in samples}):
        inside = [s for s in samples if minute(s.t) == m]
        row: dict[str, Any] = {"minute": m, "rss_mb": inside[-1].rss_mb, "cpu_pct": statistics.mean(s.cpu_pct for s in inside),
                               "stored": inside[-1].stored}
        for path, values in timings.items():
            ms = [v for t, v in values if minute(t) == m]
            row[path] = (percentile(ms, 50), percentile(ms, 99))
        rows.append(row)
    return rows


def memory_slope(samples: list[Sample]) -> float:
    """MB per minute: mean RSS of the last third of the samples against the first third."""
    third = len(samples) // 3
    if third < 1:
        return float("nan")
    first, last = samples[:third], samples[-third:]
    dt_min = (statistics.mean(s.t for s in last) - statistics.mean(s.t for s in first)) / 60
    return (statistics.mean(s.rss_mb for s in last) - statistics.mean(s.rss_mb for s in first)) / dt_min


def tail_slope(samples: list[Sample], minutes: float = SLOPE_TAIL_MIN) -> tuple[float, float]:
    """Least-squares RSS slope in MB/min over the samples of the last ``minutes``, and the minutes it spans."""
    if not samples:
        return float("nan"), 0.0
    tail = [s for s in samples if s.t >= samples[-1].t - minutes * 60]
    if len(tail) < 2:
        return float("nan"), 0.0
    mean_t = statistics.fmean(s.t for s in tail)
    mean_rss = statistics.fmean(s.rss_mb for s in tail)
    var = sum((s.t - mean_t) ** 2 for s in tail)
    slope_per_s = sum((s.t - mean_t) * (s.rss_mb - mean_rss) for s in tail) / var if var else float("nan")
    return slope_per_s * 60, (tail[-1].t - tail[0].t) / 60


def windowed_plan_toml(d: D.District, every_min: int, minutes: float) -> str:
    """The district's plan, but each route's window opens for ``every_min`` - 1 minutes and closes for one, over and over.

    A route has one window a day, so each window is a route of its own
    (``<route>-w<k>``) over the same checkpoints and team; slots of one minute.
    """
    if every_min < 2:
        raise ValueError(f"--windows-every: {every_min} is too short (at least 2: open one minute, closed one)")
    base = D.plan_toml(replace(d, routes=()))
    windows = int(-(-(minutes + 2) // every_min))  # ceil: windows until the load ends, and a little more
    lines = [base.rstrip("\n")]
    for r in d.routes:
        members = ", ".join(f"{{ name = {json.dumps(f'Volunteer {i + 1}')}, tag = {json.dumps(tag)} }}"
                            for i, tag in enumerate(r.member_tags))
        lines += ["", "[[team]]", f"id = {json.dumps(r.team)}", f"unit = {json.dumps(r.unit)}", f"members = [ {members} ]"]
        for k in range(windows):
            start = d.window_start + dt.timedelta(minutes=k * every_min)
            end = start + dt.timedelta(minutes=every_min - 1)
            lines += [
                "", "[[route]]", f"id = {json.dumps(f'{r.route_id}-w{k}')}", f"unit = {json.dumps(r.unit)}",
                f"teams = [{json.dumps(r.team)}]", 'order = "any"',
                "checkpoints = [" + ", ".join(json.dumps(c) for c in r.checkpoints) + "]",
                f'window = {{ start = "{start:%H:%M}", end = "{end:%H:%M}", every_min = {D.SLOT_MIN}, tolerance_min = 0 }}',
            ]
    return "\n".join(lines) + "\n"


def census_diff(prefix: Path, *, traced: bool, top: int = 12) -> list[str]:
    """Which kinds of Python object central gained between the two censuses (not SQLite's cache nor malloc's slack)."""
    deadline = time.monotonic() + 30
    paths = [Path(f"{prefix}.{i}.json") for i in (1, 2)]
    while not all(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not all(p.exists() for p in paths):
        return ["census: not taken"]
    first, last = (json.loads(p.read_text()) for p in paths)
    if "error" in first or "error" in last:
        return [f"census failed: {first.get('error') or last.get('error')}"]
    total = [sum(c["sizes"].values()) / 2**20 for c in (first, last)]
    smaps = [c.get("smaps", {}) for c in (first, last)]
    lines = [f"census after the warm-up -> at the end: RSS {smaps[0].get('Rss', 0) / 1024:.1f} -> "
             f"{smaps[1].get('Rss', 0) / 1024:.1f} MB (anonymous {smaps[0].get('Anonymous', 0) / 1024:.1f} -> "
             f"{smaps[1].get('Anonymous', 0) / 1024:.1f} MB); SQLite's own allocations "
             f"{first.get('sqlite_bytes', 0) / 2**20:.1f} -> {last.get('sqlite_bytes', 0) / 2**20:.1f} MB; "
             f"Python memory blocks {first['py_blocks']} -> {last['py_blocks']}",
             *([f"malloc (every arena): held {first['malloc']['arena'] / 2**20:.1f} -> {last['malloc']['arena'] / 2**20:.1f} MB"
                f" + mmapped {first['malloc']['hblkhd'] / 2**20:.1f} -> {last['malloc']['hblkhd'] / 2**20:.1f} MB,"
                f" in use {first['malloc']['uordblks'] / 2**20:.1f} -> {last['malloc']['uordblks'] / 2**20:.1f} MB,"
                f" free inside {first['malloc']['fordblks'] / 2**20:.1f} -> {last['malloc']['fordblks'] / 2**20:.1f} MB"]
               if "malloc" in first and "malloc" in last else []),
             *([f"tracemalloc's own memory at the end: {last['tracemalloc_overhead'] / 2**20:.1f} MB (counted in the RSS)"]
               if "tracemalloc_overhead" in last else []),
             f"gc-tracked objects (shallow sizes): {total[0]:.1f} -> {total[1]:.1f} MB; largest growth:"]
    grown = sorted(last["sizes"], key=lambda k: last["sizes"][k] - first["sizes"].get(k, 0), reverse=True)
    for name in grown[:top]:
        lines.append(f"  {(last['sizes'][name] - first['sizes'].get(name, 0)) / 1024:+8.0f} KiB "
                     f"{last['counts'][name] - first['counts'].get(name, 0):+7d} objects  {name}")
    trace = Path(f"{prefix}.trace")
    while traced and not trace.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if trace.exists():
        import tracemalloc

        stats = tracemalloc.Snapshot.load(str(trace)).statistics("traceback")
        lines.append(f"allocated after the warm-up and still held at the end: {sum(st.size for st in stats) / 2**20:.1f} MB"
                     f" in {sum(st.count for st in stats)} blocks; largest, by where (newest frame first):")
        for stat in stats[:top]:
            where = " <- ".join(f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno}" for f in reversed(stat.traceback))
            lines.append(f"  {stat.size / 1024:8.0f} KiB {stat.count:7d} blocks  {where}")
    return lines


def report(args: argparse.Namespace, soak: Soak, result: dict[str, Any]) -> str:
    windows = (f"plan windows open {args.windows_every - 1} min and closed 1 min, over and over" if args.windows_every
               else "one plan window over the run")
    slope, span = tail_slope(soak.samples)
    lines = [f"soak: {args.agents} agents ({args.real_agents} real `gridpatrol agent` processes), {args.minutes:g} min, "
             f"drop {args.drop:g}, seed {args.seed}; {windows}", "",
             "| minute | central RSS MB | CPU % | events stored | /api/alarms p50/p99 ms | /agents p50/p99 ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in minute_rows(soak.samples, soak.timings):
        a, g = r["/api/alarms"], r["/agents"]
        lines.append(f"| {r['minute']} | {r['rss_mb']:.1f} | {r['cpu_pct']:.1f} | {r['stored']} | "
                     f"{a[0]:.0f} / {a[1]:.0f} | {g[0]:.0f} / {g[1]:.0f} |")
    every = {p: [v for _, v in vs] for p, vs in soak.timings.items()}
    lines += ["",
              f"events made {result['made']}, stored {result['stored']}, duplicates {result['duplicates']}, "
              f"lost {result['lost']}, still in the agents' outboxes {result['undelivered']}, "
              f"stored but never made {result['extra']}, kind mismatches {result['mismatched']}",
              f"memory slope {memory_slope(soak.samples):+.2f} MB/min (last third against first third); "
              f"RSS {soak.samples[0].rss_mb:.1f} -> {soak.samples[-1].rss_mb:.1f} MB; threads {soak.samples[0].threads} -> "
              f"{soak.samples[-1].threads}" if soak.samples else "no samples",
              f"RSS slope over the last {span:.1f} min (least squares): {slope:+.3f} MB/min "
              f"(goal: flat, under {SLOPE_GOAL_MB_PER_MIN:g} MB/min: "
              f"{'met' if abs(slope) < SLOPE_GOAL_MB_PER_MIN else 'not met'}"
              f"{'' if span >= SLOPE_TAIL_MIN - 0.5 else f'; a run shorter than {SLOPE_TAIL_MIN:g} min only hints at it'})",
              "dashboard over the run: " + ", ".join(
                  f"{p} p50 {percentile(v, 50):.0f} ms p99 {percentile(v, 99):.0f} ms max {max(v, default=float('nan')):.0f} ms"
                  f" ({len(v)} requests)" for p, v in every.items()),
              f"drained (every event acked) {result['drained_s']:.1f} s after the load ended" if result["drained_s"] is not None
              else f"NOT drained within {DRAIN_S:g} s",
              f"first sends dropped on purpose {result['dropped_on_purpose']}; resends due {result['resends_due']}; "
              f"sessions: {result['session_counts']}; reconnects {result['shard_reconnects']}; "
              f"this process (the sessions and the control room) used {result['load_generator_cpu_pct']} % CPU",
              f"control room acknowledged {result['control_room_acks']} alarms; errors {result['control_room_errors']}",
              f"central counters {result['central_counters']}; agents flagged (integrity/lost) {result['agents_flagged']}; "
              f"central exit status {result['central_exit']}"]
    if result["lost"]:
        lines.append(f"lost, first ten: {result['lost_examples']}")
    if result["shard_errors"]:
        lines.append(f"session driver errors: {result['shard_errors']}")
    if args.census:
        lines += census_diff(soak.root / "census", traced=not args.no_tracemalloc)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--real-agents", type=int, default=2)
    parser.add_argument("--drop", type=float, default=0.002, help="share of first event sends skipped on purpose")
    parser.add_argument("--no-ack", dest="ack", action="store_false", help="the control room only looks")
    parser.add_argument("--ack-all", action="store_true",
                        help="the control room acknowledges every active alarm it sees, not only the oldest")
    parser.add_argument("--windows-every", type=int, default=0, metavar="M",
                        help="patrol windows open M - 1 minutes and close one, over and over (default: one window)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="keep the run's files here (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--census", action="store_true",
                        help="count central's Python objects by type after the warm-up and at the end, and show the growth")
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="with --census: no tracemalloc between the censuses (cheap enough for a full-size run)")
    args = parser.parse_args(argv)
    if not 4 <= args.agents <= 2000 or not 0 <= args.real_agents <= args.agents or not 0 <= args.drop < 1:
        parser.error("--agents 4..2000, --real-agents 0..agents, --drop in [0, 1)")
    if args.windows_every and args.windows_every < 2:
        parser.error("--windows-every: at least 2 (a window open one minute, closed one)")
    with tempfile.TemporaryDirectory(prefix="gridpatrol-soak-") as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        soak = Soak(args, root)
        previous = {sig: signal.signal(sig, lambda *_: soak.stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            soak.setup()
            result = soak.run()
        finally:
            soak.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        text = report(args, soak, result)
        print(text)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "result": result,
                                             "samples": [vars(s) for s in soak.samples], "timings": soak.timings},
                                            indent=1, default=str))
    ok = (result["lost"] == 0 and result["undelivered"] == 0 and result["duplicates"] == 0 and result["extra"] == 0
          and result["mismatched"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
