"""Central on SQLite, on PostgreSQL, and as a group of two and three on PostgreSQL: drain rate and alarm latency.

    python -m bench.bench_scaling [--events 20000] [--alarms 500] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Drain: every collector is a real `gridpatrol central` process. They start and
subscribe, then are stopped (SIGSTOP) while N scan events of 10 agents are
published, so the broker holds the whole backlog for them (a group's members
each get their share); then they are let go (SIGCONT) and the clock runs until
the store holds all N. Rate = N / that time. Each configuration has its own
broker and its own store (a new PostgreSQL database, dropped after).

Alarm latency: a fake agent sends panics one at a time (each a new input, so
each raises an alarm) and waits for central's ack; the ack goes out only after
the transaction that holds the event and its alarm committed, so publish ->
ack is the time to a stored alarm, plus one hop back.

Prints figures only; never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from bench.bench_ingest import publish
from gridpatrol.tcp import no_delay
from tests.support import Broker, free_port
from wire import topics
from wire.messages import Ack, Event, EventKind

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000
CONFIGS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3))
# Without it Mosquitto's Nagle meets the receiver's delayed ACK on every lone message: +40 ms.
BROKER_EXTRA = ("set_tcp_nodelay true",)
LATENCY_CONFIGS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def collector_toml(directory: Path, broker: Broker, store_url: str, name: str, group: str | None,
                   expiry_s: int = 3600) -> str:
    text = (f'timezone = "UTC"\ndata_dir = "{directory}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "bench-{name}"\n'
            # The broker must keep the backlog for stopped members: a session that outlives the bench.
            f'session_expiry_s = {expiry_s}\n'
            f'[store]\nurl = "{store_url}"\n[web]\nlisten = "127.0.0.1:{free_port()}"\n')
    if group is not None:
        text += f'[ingest]\ngroup = "{group}"\n'
    return text


class Collectors:
    def __init__(self, root: Path, broker: Broker, store_url: str, n: int, *, expiry_s: int = 3600) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        group = "bench" if n > 1 else None
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for i in range(n):
            d = root / f"c{i}"
            d.mkdir(parents=True)
            conf = d / "central.toml"
            conf.write_text(collector_toml(d, broker, store_url, f"c{i}", group, expiry_s))
            log = root / f"c{i}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "gridpatrol.cli", "central", "--config",
                                                    str(conf)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                                   env=env, start_new_session=True))
        deadline = time.monotonic() + 60
        while not all("connected to" in log.read_text(errors="replace") for log in self.logs if log.exists()) \
                or not all(log.exists() for log in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a collector did not connect: " + self.logs[0].read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(1.0)  # subscriptions made, leader elected

    def signal(self, sig: int) -> None:
        for p in self.procs:
            os.kill(p.pid, sig)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Database:
    """A new PostgreSQL database (or a SQLite file) for one configuration."""

    def __init__(self, engine: str, root: Path, admin_url: str) -> None:
        self.engine = engine
        self.admin_url = admin_url
        if engine == "sqlite":
            self.path = root / "central.db"
            self.url = f"sqlite://{self.path}"
        else:
            self.name = f"gp_bench_{secrets.token_hex(4)}"
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {self.name}")
            self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name

    def count(self, table: str) -> int:
        try:
            if self.engine == "sqlite":
                with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)) as db:
                    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            with psycopg.connect(self.url) as db:
                row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                return int(row[0]) if row else 0
        except (sqlite3.Error, psycopg.Error):
            return 0  # not created yet

    def drop(self) -> None:
        if self.engine != "sqlite":
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def drain(engine: str, members: int, n: int, admin_url: str) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker", persistence=False).start()
        db = Database(engine, root, admin_url)
        collectors = None
        try:
            collectors = Collectors(root, broker, db.url, members)
            collectors.signal(signal.SIGSTOP)
            publish(broker, n, 10)
            start = time.perf_counter()
            collectors.signal(signal.SIGCONT)
            deadline = time.monotonic() + 600
            while db.count("events") < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stored {db.count('events')} of {n}")
                time.sleep(0.05)
            return n / (time.perf_counter() - start)
        finally:
            if collectors is not None:
                collectors.close()
            broker.kill()
            db.drop()


def alarm_latency(engine: str, members: int, samples: int, admin_url: str) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker", persistence=False, extra=BROKER_EXTRA).start()
        db = Database(engine, root, admin_url)
        collectors = None
        agent = "bench-panic"
        acked = threading.Condition()
        state = {"ack": 0}

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            ack = Ack.from_payload(bytes(msg.payload))
            with acked:
                state["ack"] = max(state["ack"], ack.eseq)
                acked.notify_all()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-panic-agent", protocol=mqtt.MQTTv5)
        client.on_message = on_message
        client.on_socket_open = no_delay  # as agents and central: no Nagle wait on small packets
        try:
            collectors = Collectors(root, broker, db.url, members)
            client.connect(broker.host, broker.port)
            client.loop_start()
            client.subscribe(topics.ack(agent), qos=1)
            time.sleep(0.5)
            out: list[float] = []
            for eseq in range(1, samples + 1):
                payload = Event(eseq=eseq, boot_id="boot-1", kind=EventKind.PANIC, source=f"panic-{eseq}",
                                ts=T0 + eseq, mono_ms=eseq, clock_synced=True, fields={}).to_payload()
                start = time.perf_counter()
                client.publish(topics.evt(agent), payload, qos=1)
                with acked:
                    if not acked.wait_for(lambda n=eseq: state["ack"] >= n, timeout=10):
                        raise RuntimeError(f"no ack of panic {eseq}")
                out.append((time.perf_counter() - start) * 1000)
                time.sleep(0.01)
            if db.count("alarms") != samples:
                raise RuntimeError(f"{db.count('alarms')} alarms for {samples} panics")
            return out
        finally:
            client.disconnect()
            client.loop_stop()
            if collectors is not None:
                collectors.close()
            broker.kill()
            db.drop()


def after_a_crash(expiry_s: int, n: int, admin_url: str) -> float:
    """Two members; one SIGKILLed; then ``n`` events published: the share the survivor stores within 5 s.

    The rest waits at the broker in the dead member's session (Mosquitto keeps
    routing it a share while that session lives) and reaches the store only
    through the agents' resends.
    """
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker", persistence=False).start()
        db = Database("postgresql", root, admin_url)
        collectors = None
        try:
            collectors = Collectors(root, broker, db.url, 2, expiry_s=expiry_s)
            collectors.procs[1].kill()
            collectors.procs[1].wait()
            time.sleep(1.0)
            publish(broker, n, 10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and db.count("events") < n:
                time.sleep(0.05)
            return db.count("events") / n
        finally:
            if collectors is not None:
                collectors.close()
            broker.kill()
            db.drop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--alarms", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=2, help="drain rounds per configuration; the best is kept")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="an admin URL")
    ap.add_argument("--only-latency", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; {args.events} queued scan events of 10 agents", flush=True)
    print(f"{'store':<11} {'collectors':>10} {'events/s':>9}   rounds", flush=True)
    rates: dict[tuple[str, int], float] = {}
    for engine, members in () if args.only_latency else CONFIGS:
        rounds = [drain(engine, members, args.events, args.pg) for _ in range(args.repeat)]
        rates[(engine, members)] = max(rounds)
        print(f"{engine:<11} {members:>10} {max(rounds):>9.0f}   " + " ".join(f"{r:.0f}" for r in rounds), flush=True)
    one_pg = rates.get(("postgresql", 1), 0.0) or float("nan")
    print(f"postgresql/sqlite: {one_pg / rates.get(('sqlite', 1), 1):.2f};"
          f" two/one: {rates.get(('postgresql', 2), 0) / one_pg:.2f};"
          f" three/one: {rates.get(('postgresql', 3), 0) / one_pg:.2f}", flush=True)
    if not args.only_latency:
        print("\nafter one of two members is SIGKILLed, 2000 events: share stored by the survivor within 5 s",
              flush=True)
        for expiry in (0, 3600):
            print(f"  member session expiry {expiry:>5} s: {after_a_crash(expiry, 2000, args.pg):.0%}", flush=True)
    print(f"\nalarm latency, publish -> ack (the alarm row committed), {args.alarms} panics, ms", flush=True)
    print(f"{'store':<11} {'collectors':>10} {'p50':>7} {'p99':>7} {'max':>7}", flush=True)
    for engine, members in LATENCY_CONFIGS:
        lat = alarm_latency(engine, members, args.alarms, args.pg)
        print(f"{engine:<11} {members:>10} {statistics.median(lat):>7.1f} {pct(lat, 99):>7.1f} {max(lat):>7.1f}",
              flush=True)


if __name__ == "__main__":
    main()
