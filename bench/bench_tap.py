"""Tap-to-central latency: a card on a reader -> its scan row in central's store.

Two paths, each through the real code a Pi runs:
- an RDM6300 on a pseudo-terminal (agent/inputs/readers/sim.py writes the
  module's frames; the agent's SerialReader reads the pty like /dev/serial0);
- a Wiegand reader behind the simulated microcontroller (firmware_bridge's
  McuSim runs the firmware logic; the agent's McuLink speaks the link protocol).
A real `gridpatrol agent` process, a real broker, and central's ingest
(in-process, dashboard off) writing to its SQLite store. The time is taken
from the moment the card is laid on the reader to the moment the row is
readable by another connection (polled every 2 ms).

The RDM6300 path has a floor of one frame repeat (about 100 ms here):
the agent reports an id only once it has read it twice in a row, as the
module's phantom ids require (docs/readers.md).

Run: .venv/bin/python bench/bench_tap.py [--taps N]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.inputs.readers.sim import SimulatedRdm6300
from central.app import Central
from central.config import parse_config as parse_central
from firmware_bridge.sim import McuSim
from gridpatrol.localbroker import LocalBroker

AGENT = "bench-gate"


def agent_toml(d: Path, port: int, rdm_path: str, mcu_path: str) -> str:
    return f"""agent_id = "{AGENT}"
data_dir = "{d}"
[mqtt]
port = {port}
[[mcu]]
name = "front"
port = "{mcu_path}"
[[reader]]
name = "gate-rdm"
port = "{rdm_path}"
protocol = "rdm6300"
[[reader]]
name = "gate-wiegand"
protocol = "wiegand"
mcu = "front"
input = 0
"""


def wait_row(db: sqlite3.Connection, tag: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if db.execute("SELECT 1 FROM events WHERE kind = 'scan' AND fields LIKE ?", (f'%"{tag}"%',)).fetchone():
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"scan {tag} did not reach the store within {timeout} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taps", type=int, default=100, help="taps per reader (default 100)")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="bench-tap-") as tmp:
        root = Path(tmp)
        broker = LocalBroker(root / "broker").start()
        rdm = SimulatedRdm6300()
        mcu = McuSim(link=root / "mcu-link").start()
        cdir = root / "central"
        config = parse_central(
            f'timezone = "Asia/Shanghai"\ndata_dir = "{cdir}"\n[mqtt]\nport = {broker.port}\n'
            f'[store]\nurl = "sqlite://{cdir}/central.db"\n', source="bench")
        central = Central(config, web=False)
        agent = None
        try:
            central.start()
            adir = root / "agent"
            adir.mkdir()
            (adir / "agent.toml").write_text(agent_toml(adir, broker.port, rdm.path, mcu.path))
            with open(adir / "agent.log", "wb") as log:
                agent = subprocess.Popen([sys.executable, "-m", "gridpatrol.cli", "agent", "--config", str(adir / "agent.toml")],
                                         stdout=log, stderr=log)
            db = sqlite3.connect(f"file:{cdir / 'central.db'}?mode=ro", uri=True)
            # Warm up: a card left on the reader until its scan is stored
            # proves the whole chain is up (the agent takes a moment to start).
            rdm.present("0000000A0B")
            wait_row(db, "0000000A0B", timeout=30)
            rdm.remove()
            mcu.wiegand_card(0, 26, 1, 1)
            wait_row(db, "010001", timeout=30)
            time.sleep(1.2)  # the warm-up card counts as gone after a second
            results: dict[str, list[float]] = {"RDM6300 on a pty": [], "Wiegand behind the mcu": []}
            for _ in range(args.taps):
                tag = f"{rng.getrandbits(40):010X}"
                t0 = time.perf_counter()
                rdm.tap(tag, hold_s=0.4)
                results["RDM6300 on a pty"].append(wait_row(db, tag) - t0)
                facility, card = rng.randrange(2, 255), rng.randrange(1, 65535)
                t0 = time.perf_counter()
                mcu.wiegand_card(0, 26, facility, card)
                results["Wiegand behind the mcu"].append(wait_row(db, f"{facility:02X}{card:04X}") - t0)
                time.sleep(0.45)  # let the RDM6300 card go before the next one is laid down
            db.close()
            print(f"tap -> row in central's store, {args.taps} taps per path, one agent process, loopback broker")
            print(f"{'path':<26} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
            for name, xs in results.items():
                ms = [x * 1000 for x in xs]
                print(f"{name:<26} {pct(ms, .5):8.1f} {pct(ms, .99):8.1f} {max(ms):8.1f} {statistics.fmean(ms):8.1f}")
        except Exception:
            log = root / "agent" / "agent.log"
            print(log.read_text()[-3000:] if log.exists() else "(no agent log)", file=sys.stderr)
            raise
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            central.stop()
            mcu.close()
            rdm.close()
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
