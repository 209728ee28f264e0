"""What TLS costs: central's ingest rate and the alarm latency, TLS next to plaintext in one run.

One Mosquitto with two listeners (bench_latency.BenchBroker): plaintext, and
TLS with the listener settings `gridpatrol pki broker-config` prints (client
certificates from a PKI made by gridpatrol.pki, TLS 1.2 or later, a CRL).
Everything else is shared, so the difference is the transport. Neither
listener has the production ACL.

Ingest: for each size N, four persistent sessions are opened and left
(a bare paho subscriber and central's Ingest, each once per listener); N scan
events from 10 agents are published once and queued for all four; then each
drains in turn. Rates are messages per second from the connect call to the
last message counted (bare) or stored (central, the Central object with its
bus bridge, as bench_ingest); CPU is this process's CPU time over the drain
per message (all threads: paho's, the writer's, SQLite's), steadier than the
rate on a shared machine. The best of `--repeat` rounds per cell; how the
cost grows is the rate over sizes.

Latency: bench_latency's measurement (a zone driven on a real agent process
-> its row in a real central process's store), once per listener.

Run from the repository root:  python -m bench.bench_tls [--sizes 5000 20000] [--repeat 3] [--alarms 1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.bench_ingest import StoredCounter, publish
from bench.bench_latency import AGENT, BenchBroker, Latencies, bench_client, describe_machine, make_tls, mqtt_toml, pct, run_one
from central.app import Central
from central.config import CentralConfig, parse_config
from wire import topics

DRAIN_TIMEOUT_S = 600.0
AGENTS = 10
TRANSPORTS = ("plaintext", "TLS")


class Bare:
    """A paho subscriber with a persistent session that only counts (bench_ingest's, with TLS)."""

    def __init__(self, broker: BenchBroker, *, tls: bool) -> None:
        self.broker, self.tls = broker, tls
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.client: mqtt.Client | None = None

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def connect(self, *, subscribe: bool = False) -> None:
        client = bench_client(self.broker, tls=self.tls, client_id=f"bench-bare-{'tls' if self.tls else 'plain'}")
        client.on_message = self._on_message
        ready = threading.Event()
        if subscribe:
            client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topics.ROOT}/+/evt", qos=1)
            client.on_subscribe = lambda *a: ready.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", self.broker.endpoint(self.tls), clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        if subscribe and not ready.wait(30):
            raise TimeoutError("the bare subscriber could not subscribe")

    def close(self) -> None:
        assert self.client is not None
        gone = threading.Event()
        self.client.on_disconnect = lambda *a: gone.set()
        self.client.disconnect()
        gone.wait(10)
        self.client.loop_stop()
        self.client = None


def central_config(broker: BenchBroker, workdir: Path, *, tls: bool) -> CentralConfig:
    name = "tls" if tls else "plain"
    return parse_config(
        f'timezone = "UTC"\ndata_dir = "{workdir / f"central-{name}"}"\n'
        f'[mqtt]\n{mqtt_toml(broker, tls=tls, name="central")}client_id = "bench-central-{name}"\n'
    )


@dataclass(frozen=True, slots=True)
class Drain:
    rate: float  # messages per second
    cpu_us: float  # this process's CPU per message


def drain_bare(bare: Bare, n: int) -> Drain:
    bare.count, bare.target = 0, n
    bare.done.clear()
    start, cpu = time.perf_counter(), time.process_time()
    bare.connect()
    try:
        if not bare.done.wait(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"the bare subscriber got {bare.count} of {n}")
        return Drain(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)
    finally:
        bare.close()


def drain_central(config: CentralConfig, n: int) -> Drain:
    counter = StoredCounter()
    counter.target = n
    central = Central(config, listeners=[counter], alarms=False, tracker=False, web=False)
    start, cpu = time.perf_counter(), time.process_time()
    central.start()
    try:
        if not counter.done.wait(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"central stored {counter.count} of {n}")
        return Drain(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)
    finally:
        central.stop()


def ingest_round(root: Path, broker: BenchBroker, n: int) -> dict[tuple[str, str], Drain]:
    """One round at size n: every side drains the same n queued events."""
    bares = {t: Bare(broker, tls=t == "TLS") for t in TRANSPORTS}
    configs = {t: central_config(broker, root, tls=t == "TLS") for t in TRANSPORTS}
    for t in TRANSPORTS:  # the sessions exist before anything is published
        bares[t].connect(subscribe=True)
        bares[t].close()
        central = Central(configs[t], alarms=False, tracker=False, web=False)
        central.start()
        if not central.ingest.wait_connected(30):
            raise TimeoutError(f"central ({t}) did not connect")
        central.stop()
    publish(broker, n, AGENTS)  # type: ignore[arg-type]  # any broker with host and port
    out: dict[tuple[str, str], Drain] = {}
    for t in TRANSPORTS:
        out[("bare", t)] = drain_bare(bares[t], n)
    for t in TRANSPORTS:
        out[("central", t)] = drain_central(configs[t], n)
    return out


def run_ingest(root: Path, broker: BenchBroker, sizes: list[int], repeat: int) -> None:
    print(f"ingest: N scan events from {AGENTS} agents queued, then drained; best of {repeat} rounds per cell")
    print(f"{'messages':>9} {'side':<8} {'plain msg/s':>11} {'TLS msg/s':>10} {'TLS/plain':>9} "
          f"{'plain us/msg':>12} {'TLS us/msg':>10}   rounds plain/TLS msg/s")
    for n in sizes:
        rounds = []
        for r in range(repeat):
            round_dir = root / f"ingest-{n}-{r}"
            round_dir.mkdir()
            rounds.append(ingest_round(round_dir, broker, n))
        for side in ("bare", "central"):
            best = {t: max(rd[(side, t)].rate for rd in rounds) for t in TRANSPORTS}
            cpu = {t: min(rd[(side, t)].cpu_us for rd in rounds) for t in TRANSPORTS}
            detail = " ".join(f"{rd[(side, 'plaintext')].rate:.0f}/{rd[(side, 'TLS')].rate:.0f}" for rd in rounds)
            print(f"{n:>9} {side:<8} {best['plaintext']:>11.0f} {best['TLS']:>10.0f} "
                  f"{best['TLS'] / best['plaintext']:>9.2f} {cpu['plaintext']:>12.0f} {cpu['TLS']:>10.0f}   {detail}",
                  flush=True)


def run_latency(root: Path, broker: BenchBroker, alarms: int) -> None:
    rng = random.Random(5)
    results: dict[str, Latencies] = {}
    for t in TRANSPORTS:
        results[t] = run_one(root / f"latency-{t}", broker, tls=t == "TLS", n=alarms, store_rows=0, rng=rng)
    print(f"alarm latency: {alarms} drives per transport (alarm and restore alternating), zone debounce_ms = 0")
    print(f"{'path':<30} {'plain p50':>9} {'plain p99':>9} {'TLS p50':>8} {'TLS p99':>8} {'p99 TLS-plain':>13}")
    for label, get in (("drive -> row in store", lambda x: x.store_ms), ("drive -> evt at a subscriber", lambda x: x.evt_ms),
                       ("bare paho pub -> sub", lambda x: x.bare_ms)):
        p, t = get(results["plaintext"]), get(results["TLS"])
        print(f"{label:<30} {pct(p, .5):9.2f} {pct(p, .99):9.2f} {pct(t, .5):8.2f} {pct(t, .99):8.2f} "
              f"{pct(t, .99) - pct(p, .99):+13.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--repeat", type=int, default=3, help="rounds per size; the best of each cell is kept")
    ap.add_argument("--alarms", type=int, default=1000, help="drives per transport for the latency (0: skip it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        root = Path(tmp)
        print(f"TLS against plaintext, one broker with both listeners; {describe_machine(root)}")
        tls = make_tls(root / "pki", [AGENT])
        broker = BenchBroker(root / "broker", tls).start()
        try:
            run_ingest(root, broker, args.sizes, args.repeat)
            if args.alarms:
                run_latency(root, broker, args.alarms)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
