"""The microcontroller link's cost: frames per second through framing, and round trips over a pty.

    python bench/bench_framing.py [--seconds S]

Rows:
- encode / decode of a typical ``zone`` frame (msgpack subset + CRC + COBS),
  with CPython's C CRC and with the table CRC the Pico runs;
- the deframer on a stream of frames (what the Pi's link thread does);
- stop-and-wait between two in-memory endpoints (protocol cost, no I/O);
- round trips over a real pseudo-terminal: SerialLink (the Pi) sends ``out``
  frames one by one to the simulated firmware and each waits for its ack;
- the wire's own limit at 115200 baud 8N1, for comparison.

Prints figures only; never part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any, Callable

from firmware_bridge.firmware import framing
from firmware_bridge.link import SerialLink
from firmware_bridge.sim import McuSim

ZONE = {"t": "zone", "n": 4711, "input": 2, "state": "tamper-cut"}
BAUD_BYTES_PER_S = 115200 / 10  # 8N1: ten bit times per byte


def rate(seconds: float, work: Callable[[], int]) -> float:
    """Items per second that ``work`` (returning how many it did) manages in about ``seconds``."""
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def bench_codec(seconds: float) -> list[tuple[str, str]]:
    wire = framing.encode_frame(ZONE)
    block = wire[:-1]
    rows = [
        ("encode_frame (C crc)", f"{rate(seconds, lambda: [framing.encode_frame(ZONE) for _ in range(1000)] and 1000):,.0f} frames/s"),
        ("decode_frame (C crc)", f"{rate(seconds, lambda: [framing.decode_frame(block) for _ in range(1000)] and 1000):,.0f} frames/s"),
    ]
    saved = framing._crc_hqx
    framing._crc_hqx = None  # the Pico's path: a table, a byte at a time
    try:
        rows.append(("encode_frame (table crc)", f"{rate(seconds, lambda: [framing.encode_frame(ZONE) for _ in range(1000)] and 1000):,.0f} frames/s"))
        rows.append(("decode_frame (table crc)", f"{rate(seconds, lambda: [framing.decode_frame(block) for _ in range(1000)] and 1000):,.0f} frames/s"))
    finally:
        framing._crc_hqx = saved
    stream = wire * 1000
    rows.append(("Deframer.feed, 4 KiB reads", f"{rate(seconds, lambda: _deframe(stream)):,.0f} frames/s"))
    rows.append(("frame size on the wire", f"{len(wire)} bytes ({len(framing.pack(ZONE))} of body)"))
    rows.append(("wire limit at 115200 8N1", f"{BAUD_BYTES_PER_S / len(wire):,.0f} frames/s"))
    return rows


def _deframe(stream: bytes) -> int:
    deframer = framing.Deframer()
    count = 0
    for i in range(0, len(stream), 4096):
        count += len(deframer.feed(stream[i : i + 4096]))
    return count


def bench_endpoints(seconds: float) -> list[tuple[str, str]]:
    def exchange() -> int:
        pi, mcu = framing.Endpoint(), framing.Endpoint()
        for index in range(500):
            mcu.send({"t": "zone", "input": index % 4, "state": "alarm"})
            mcu.poll(index)
            pi.receive(mcu.take_output(), index)
            mcu.receive(pi.take_output(), index)
        return 500

    return [("stop-and-wait in memory", f"{rate(seconds, exchange):,.0f} frames/s acked")]


def bench_pty(seconds: float) -> list[tuple[str, str]]:
    with McuSim() as sim:
        link = SerialLink(sim.path, hello=framing.hello_body("bench", []), on_frame=lambda body, at: None)
        link.start()
        try:
            _wait(lambda: link.counters["frames_in"] >= 3, 10)
            trips: list[float] = []
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                link.send({"t": "out", "output": 0, "on": len(trips) % 2 == 0, "ms": 0})
                if not link.drain(2.0):
                    raise RuntimeError("the simulator stopped acknowledging")
                trips.append(time.perf_counter() - started)
        finally:
            link.close()
    trips.sort()
    ms = [t * 1000 for t in trips]
    return [
        ("pty round trips (send -> ack)", f"{len(trips) / sum(trips):,.0f} frames/s acked, one at a time"),
        ("round trip median / p99", f"{statistics.median(ms):.2f} ms / {ms[int(len(ms) * 0.99) - 1]:.2f} ms ({len(ms)} trips)"),
    ]


def _wait(predicate: Callable[[], Any], timeout: float) -> None:
    done = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        done.wait(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    args = parser.parse_args()
    rows = bench_codec(args.seconds) + bench_endpoints(args.seconds) + bench_pty(max(args.seconds, 2.0))
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
