"""Outbox figures: durable appends per second, and how fast a 50,000-event backlog drains.

Not a test: it prints a table. Run from the repository root:

    python bench/bench_outbox.py [--appends N] [--backlog N] [--windows 16,64,256]

The drain runs through a real Mosquitto (a temporary one on a free port) with
a subscriber that plays central: it acks the highest eseq it holds gap-free
every ``ACK_EVERY_S``, as central's ingest does in batches.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout; the package is installed editable anyway
    sys.path.insert(0, str(REPO))

from agent.config import MqttConfig  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.session import Session  # noqa: E402
from tests.support import Broker  # noqa: E402
from wire import topics  # noqa: E402
from wire.messages import Ack, Birth, Event, EventKind, StateSnapshot  # noqa: E402

AGENT = "bench-agent"
ACK_EVERY_S = 0.1
STAMP = dict(ts=1_700_000_000_000, mono_ms=1, clock_synced=False, boot_id="bench")


def bench_appends(directory: Path, count: int) -> tuple[float, float]:
    """Appends per second, and the slowest single append in ms."""
    with Outbox(directory / "appends.db", max_events=count * 2) as box:
        worst = 0.0
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            box.append(EventKind.SCAN, "gate-1", {"tag": "67003B51C6"}, **STAMP)  # type: ignore[arg-type]
            worst = max(worst, time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return count / elapsed, worst * 1000


class AckingCentral:
    """Subscribes to the agent's events and acks what it holds gap-free."""

    def __init__(self, broker: Broker) -> None:
        self.lock = threading.Lock()
        self.held: set[int] = set()
        self.top = 0
        self.received = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-central", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.subscribe(topics.evt(AGENT), qos=1)
        self.client.loop_start()
        self._stop = threading.Event()
        self._acker = threading.Thread(target=self._ack_loop, daemon=True)
        self._acker.start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        eseq = Event.from_payload(message.payload).eseq
        with self.lock:
            self.received += 1
            self.held.add(eseq)

    def _ack_loop(self) -> None:
        while not self._stop.wait(ACK_EVERY_S):
            with self.lock:
                top = self.top
                while top + 1 in self.held:
                    self.held.discard(top + 1)
                    top += 1
                changed, self.top = top != self.top, top
            if changed:
                self.client.publish(topics.ack(AGENT), Ack(top).to_payload(), qos=1)

    def close(self) -> None:
        self._stop.set()
        self._acker.join()
        self.client.disconnect()
        self.client.loop_stop()


def bench_drain(directory: Path, backlog: int, window: int) -> tuple[float, float, int]:
    """Seconds to drain, events per second, and messages central received.

    ``directory`` must be new for each run: the acking subscriber counts from eseq 1.
    """
    directory.mkdir(parents=True)
    path = directory / "drain.db"
    with Outbox(path, max_events=backlog * 2) as box:
        for _ in range(backlog):
            box.append(EventKind.SCAN, "gate-1", {"tag": "67003B51C6"}, **STAMP)  # type: ignore[arg-type]
    broker = Broker(directory / "broker").start()
    central = AckingCentral(broker)
    box = Outbox(path, max_events=backlog * 2)
    session = Session(
        agent_id=AGENT, mqtt_config=MqttConfig(host=broker.host, port=broker.port, resend_s=30.0), outbox=box,
        birth=lambda bdseq: Birth(bdseq=bdseq, boot_id="bench", fw="bench", inventory={}),
        snapshot=lambda: StateSnapshot(ts=0, inputs={}, outputs={}), on_command=lambda command: None,
        window=window,
    )
    try:
        start = time.perf_counter()
        session.start()
        while box.depth > 0:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    finally:
        session.stop()
        box.close()
        central.close()
        broker.kill()
    return elapsed, backlog / elapsed, central.received


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--windows", default="16,64,256")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gridpatrol-bench-") as tmp:
        directory = Path(tmp)
        rate, worst_ms = bench_appends(directory, args.appends)
        print(f"{'durable appends (synchronous=FULL, one commit each)':<56}{rate:>10.0f} /s   worst {worst_ms:.1f} ms")
        print()
        print(f"{'drain of a backlog':<24}{'window':>8}{'seconds':>10}{'events/s':>12}{'received':>12}")
        for run, window in enumerate(int(w) for w in args.windows.split(",")):
            elapsed, per_s, received = bench_drain(directory / f"drain-{run}", args.backlog, window)
            print(f"{args.backlog:<24,}{window:>8}{elapsed:>10.1f}{per_s:>12.0f}{received:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
