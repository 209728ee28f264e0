"""Agent footprint: resident memory and idle CPU of a real `gridpatrol agent` process.

A typical gate (bench_latency's agent: a zone with a siren, a panic button,
three outputs) plus an RDM6300 reader on a pseudo-terminal (a simulated
module: agent/inputs/readers/sim.py), against a real broker and a real
`gridpatrol central` process, so the agent is online, acked and its status
LED steady, as on a quiet night.

Warm-up: the zone is opened and closed, the panic button held, a card
tapped; every event's row must reach central's store (so every code path
the agent takes at run time has been imported and run once). Then the agent
is left alone for `--minutes` (default 10).

Figures, from /proc/PID of the agent process (not this one):
- RSS: `VmRSS` of /proc/PID/status, sampled every SAMPLE_S; `VmHWM` is the peak.
- CPU: utime + stime of /proc/PID/stat, over each third of the window and the
  whole, as a percentage of one core.
How it grows: the window is cut in thirds; the table gives RSS at the end of
each third and the CPU of each third, with the ratio to the first third
(growing RSS at idle would be a leak).

Run from the repository root:  python -m bench.bench_agent_resources [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from agent.inputs.readers.sim import SimulatedRdm6300
from bench.bench_latency import AGENT, ZONE_PIN, BenchBroker, SimDriver, Site, describe_machine, wait_for

SAMPLE_S = 5.0
WARMUP_S = 30.0
BUTTON_PIN = 27
BUTTON_HOLD_S = 1.8  # the agent's hold_ms is 1500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def reader_toml(port: str) -> str:
    return f'\n[[reader]]\nname = "gate-1"\nport = "{port}"\nprotocol = "rdm6300"\n'


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def warm_up(site: Site, rdm: SimulatedRdm6300) -> None:
    """Each input once, each row awaited in central's store."""
    db = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True)

    def stored(kind: str, source: str) -> bool:
        return db.execute("SELECT 1 FROM events WHERE agent = ? AND kind = ? AND source = ?",
                          (AGENT, kind, source)).fetchone() is not None

    driver = SimDriver(site.sim_path)
    try:
        procs = [p for p in (site.central, site.agent) if p is not None]
        driver.drive(ZONE_PIN, False)  # the zone is an no contact: closed (low) is the alarm
        wait_for(lambda: stored("alarm", "north-fence"), "the zone's alarm", procs=procs, logs=site.logs)
        driver.drive(ZONE_PIN, True)
        wait_for(lambda: stored("restore", "north-fence"), "the zone's restore", procs=procs, logs=site.logs)
        driver.drive(BUTTON_PIN, False)  # pressed: a button reads low while pressed
        time.sleep(BUTTON_HOLD_S)  # it must be held, by the clock
        driver.drive(BUTTON_PIN, True)
        wait_for(lambda: stored("panic", "office-panic"), "the panic", procs=procs, logs=site.logs)
        rdm.tap("67003B51C6", hold_s=0.5)
        wait_for(lambda: stored("scan", "gate-1"), "the card's scan", procs=procs, logs=site.logs)
    finally:
        driver.close()
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="idle window after the warm-up (default 10)")
    args = ap.parse_args()
    window_s = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-agent-res-") as tmp:
        root = Path(tmp)
        print(f"agent footprint: zone, button, 3 outputs, an RDM6300 on a pty; {args.minutes:g} min idle after warm-up")
        print(describe_machine(root))
        broker = BenchBroker(root / "broker").start()
        rdm = SimulatedRdm6300()
        site = Site(root / "site", broker, tls=False, agent_readers=reader_toml(rdm.path))
        try:
            site.start()
            assert site.agent is not None
            pid = site.agent.pid
            rss_start = status_kb(pid, "VmRSS")
            warm_up(site, rdm)
            time.sleep(WARMUP_S)  # the card counts as gone, the siren's and indicator's timers settle
            rss_warm = status_kb(pid, "VmRSS")
            print(f"RSS after start {rss_start / 1024:.1f} MB, after warm-up {rss_warm / 1024:.1f} MB; "
                  f"{threads(pid)} threads", flush=True)
            thirds: list[tuple[float, float, float, float]] = []  # (minutes, rss_mb, max_rss_mb, cpu %)
            start_cpu, start_t = cpu_s(pid), time.monotonic()
            cpu0, t0 = start_cpu, start_t
            peak = 0
            for third in range(1, 4):
                end = start_t + window_s * third / 3
                while (now := time.monotonic()) < end:
                    peak = max(peak, status_kb(pid, "VmRSS"))
                    time.sleep(min(SAMPLE_S, end - now))
                    if site.agent.poll() is not None:
                        raise RuntimeError(f"the agent exited with status {site.agent.returncode}")
                cpu1, t1 = cpu_s(pid), time.monotonic()
                rss = status_kb(pid, "VmRSS")
                peak = max(peak, rss)
                thirds.append(((t1 - start_t) / 60, rss / 1024, peak / 1024, 100 * (cpu1 - cpu0) / (t1 - t0)))
                cpu0, t0 = cpu1, t1
            total_cpu = 100 * (cpu_s(pid) - start_cpu) / (time.monotonic() - start_t)
            hwm = status_kb(pid, "VmHWM")
        finally:
            site.close()
            broker.stop()
            rdm.close()
        print(f"{'minutes':>8} {'RSS MB':>7} {'max MB':>7} {'RSS ratio':>9} {'CPU %':>7} {'CPU ratio':>9}")
        for minutes, rss_mb, max_mb, cpu in thirds:
            cpu_ratio = cpu / thirds[0][3] if thirds[0][3] > 0 else float("nan")
            print(f"{minutes:8.1f} {rss_mb:7.1f} {max_mb:7.1f} {rss_mb / thirds[0][1]:9.2f} {cpu:7.3f} {cpu_ratio:9.2f}")
        print(f"whole window: CPU {total_cpu:.3f} % of one core (target < 1 %); "
              f"RSS peak (VmHWM, warm-up included) {hwm / 1024:.1f} MB (target < 40 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
