"""Central's ingest rate against a bare paho subscriber, same broker, same run.

For each size N: both subscribers open a persistent session and go away;
N QoS 1 events (from several agents, eseq in order) are published and queued
by the broker for both; then each reconnects in turn and drains its queue.
The bare subscriber only counts messages; central (the Central object that
`gridpatrol central` runs, with its bus bridge) decodes, stores (one
transaction per batch, fsync'd), acks and calls listeners. Rates are
messages per second from the connect call to the last message counted
(bare) or stored (central).

Run from the repository root:  python -m bench.bench_ingest [--sizes 5000 20000 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.app import Central
from central.config import CentralConfig, parse_config
from central.store import StoredEvent
from tests.support import Broker
from wire import topics
from wire.messages import Event, EventKind

T0 = 1_700_000_000_000
DRAIN_TIMEOUT_S = 300.0


class BareSubscriber:
    """paho and nothing else: counts QoS 1 messages on every agent's evt topic."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self.gone = threading.Event()
        self.client: mqtt.Client | None = None

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def connect(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.gone.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.gone.clear()
        self.client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        assert self.client is not None
        if self.client.is_connected():
            self.client.disconnect()
            self.gone.wait(10)
        self.client.loop_stop()
        self.client = None


class StoredCounter:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = threading.Event()

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        self.count += len(events)
        if self.count >= self.target:
            self.done.set()

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        pass


def publish(broker: Broker, n: int, agents: int) -> int:
    """N scan events spread over ``agents`` agents; returns the payload size."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-agents", protocol=mqtt.MQTTv5)
    gone = threading.Event()
    pub.on_disconnect = lambda *a: gone.set()
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    size = 0
    try:
        infos = []
        for i in range(n):
            agent, eseq = f"bench-{i % agents}", i // agents + 1
            payload = Event(eseq=eseq, boot_id="boot-1", kind=EventKind.SCAN, source="gate-1", ts=T0 + i,
                            mono_ms=i, clock_synced=True, fields={"tag": f"{i:010X}"}).to_payload()
            size = len(payload)
            infos.append(pub.publish(topics.evt(agent), payload, qos=1))
        for info in infos:
            info.wait_for_publish(60)
    finally:
        pub.disconnect()
        gone.wait(10)
        pub.loop_stop()
    return size


def central_config(broker: Broker, workdir: Path) -> CentralConfig:
    return parse_config(
        f'timezone = "UTC"\ndata_dir = "{workdir / "data"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "bench-central"\n'
    )


def run(n: int, agents: int, workdir: Path) -> tuple[float, float, int]:
    broker = Broker(workdir / "broker", persistence=False).start()
    config = central_config(broker, workdir)
    try:
        bare = BareSubscriber(broker)
        bare.connect()
        bare.client.subscribe(f"{topics.ROOT}/+/evt", qos=1)  # type: ignore[union-attr]
        bare.subscribed.wait(10)
        bare.close()
        central = Central(config, alarms=False, tracker=False, web=False)
        central.start()
        central.ingest.wait_connected(10)
        central.stop()

        size = publish(broker, n, agents)

        bare.target = n
        start = time.perf_counter()
        bare.connect()
        if not bare.done.wait(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"bare subscriber got {bare.count} of {n}")
        bare_rate = n / (time.perf_counter() - start)
        bare.close()

        counter = StoredCounter()
        counter.target = n
        central = Central(config, listeners=[counter], alarms=False, tracker=False, web=False)
        start = time.perf_counter()
        central.start()
        try:
            if not counter.done.wait(DRAIN_TIMEOUT_S):
                raise RuntimeError(f"central stored {counter.count} of {n}")
            central_rate = n / (time.perf_counter() - start)
        finally:
            central.stop()
        return bare_rate, central_rate, size
    finally:
        broker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size; the best of each side is kept")
    args = parser.parse_args()
    # A shared machine is noisy: each round measures both sides back to back,
    # and the best round of each side is what the code can do.
    print(f"{'messages':>9} {'bytes':>6} {'bare msg/s':>11} {'central msg/s':>14} {'ratio':>6}   rounds (bare/central)")
    for n in args.sizes:
        rounds = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
                rounds.append(run(n, args.agents, Path(tmp)))
        bare = max(r[0] for r in rounds)
        central = max(r[1] for r in rounds)
        detail = " ".join(f"{b:.0f}/{c:.0f}" for b, c, _ in rounds)
        print(f"{n:>9} {rounds[0][2]:>6} {bare:>11.0f} {central:>14.0f} {central / bare:>6.2f}   {detail}", flush=True)


if __name__ == "__main__":
    main()
