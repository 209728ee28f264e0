"""``gridpatrol mcu-sim [--script FILE]``: a simulated microcontroller on a new pseudo-terminal.

The first line on stdout is the path to open as the mcu's ``port`` (flushed at
once, so a parent process can read it); the simulator then runs its script, if
any, and stays up until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from firmware_bridge.script import Script, check_script, load_script, play
from firmware_bridge.sim import McuSim


def run_mcu_sim(args: argparse.Namespace) -> int:
    script: Script | None = load_script(args.script) if getattr(args, "script", None) else None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    sim = McuSim(link=script.link if script else None)
    if script is not None:
        check_script(script, sim)  # before the pty exists: a bad script opens nothing
    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        with sim:
            if script is not None:
                play(sim, script)
            print(sim.path, flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"mcu-sim: stopped; counters {sim.counters}", file=sys.stderr)
    return 0
