"""Frames per second each reader parser handles (pure parsing, no port).

Run: python bench/bench_readers.py [--seconds S]. Prints a table; not part of
the test run. For scale: an RDM6300 at 9600 baud can send at most ~68 frames/s
and a PN532 answers ~10 polls/s here, so any figure in the thousands leaves
the Pi's CPU to the rest of the agent.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from agent.inputs.readers.pn532 import FrameReader, build_frame
from agent.inputs.readers.rdm6300 import Rdm6300Parser, encode_frame
from agent.inputs.readers.wiegand import decode_wiegand

BATCH = 1000


def _rate(run_batch: Callable[[], int], seconds: float) -> float:
    frames, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        frames += run_batch()
    return frames / elapsed


def rdm6300(clone: bool, chunk: int) -> Callable[[], int]:
    stream = encode_frame("62E3086CED", clone=clone) * BATCH
    parser = Rdm6300Parser()

    def run() -> int:
        for i in range(0, len(stream), chunk):
            parser.feed(stream[i : i + chunk])
        return BATCH

    return run


def pn532(chunk: int) -> Callable[[], int]:
    answer = build_frame(bytes.fromhex("D5 4B 01 01 00 44 00 07 04 7B CB 51 96 22 80"))  # InListPassiveTarget, 7-byte UID
    stream = (bytes.fromhex("0000FF00FF00") + answer) * BATCH
    reader = FrameReader()

    def run() -> int:
        for i in range(0, len(stream), chunk):
            reader.feed(stream[i : i + chunk])
        return 2 * BATCH  # an ACK and an answer per poll

    return run


def wiegand() -> Callable[[], int]:
    data = int("1" + "01111011" + "1011001001101110" + "1", 2)  # H10301, facility 123, card 45678

    def run() -> int:
        for _ in range(BATCH):
            decode_wiegand(26, data)
        return BATCH

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row (default 1)")
    args = parser.parse_args()
    rows = [
        ("rdm6300 genuine (14 B), whole frames", rdm6300(False, 14)),
        ("rdm6300 genuine (14 B), 1 byte per read", rdm6300(False, 1)),
        ("rdm6300 clone (13 B), whole frames", rdm6300(True, 13)),
        ("pn532 ACK + 7-byte UID answer, 64 B reads", pn532(64)),
        ("pn532 ACK + 7-byte UID answer, 1 byte per read", pn532(1)),
        ("wiegand 26-bit decode", wiegand()),
    ]
    print(f"{'parser':<50} {'frames/s':>12}")
    print("-" * 63)
    for name, run in rows:
        print(f"{name:<50} {_rate(run, args.seconds):>12,.0f}")


if __name__ == "__main__":
    main()
