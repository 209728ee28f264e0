"""The live tracker's cost per scan as one open round fills up.

    python -m bench.bench_tracker_flood [--sizes 100,10000,100000]

One route of three checkpoints, one round open (22:00-23:00), every scan at the
first checkpoint (a flood at one reader, as issue 11 saw: 30,000 scans there
held central for 110 s). For each size n the round is filled with n scans,
then 3 x 1,000 more are timed one ``events_stored`` call each, best of
the three runs (counting, the
retained JSON payload and the verdict answered to the agent included). Two
floods: a member's card (authorised) and ever new unknown cards. Prints
figures only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from types import SimpleNamespace
from typing import Any

from central.completion import to_ms
from central.plan.parse import parse_plan
from central.plan.registry import PlanHistory, PlanVersion
from central.tracker import CompletionTracker

DAY = dt.date(2024, 5, 1)
TIMED = 1000

PLAN = {
    "timezone": "Asia/Shanghai",
    "unit": [{"id": "g", "tier": "district"}],
    "checkpoint": [{"id": f"cp{k}", "unit": "g", "agent": "gate", "reader": f"r{k}"} for k in range(3)],
    "team": [{"id": "t", "unit": "g", "members": [{"name": "Lin", "tag": "6F007B3972"}]}],
    "route": [{"id": "loop", "unit": "g", "teams": ["t"], "order": "strict", "checkpoints": ["cp0", "cp1", "cp2"],
               "window": {"start": "22:00", "end": "23:00", "every_min": 60, "tolerance_min": 15}}],
}


def flood(n: int, *, unknown: bool) -> float:
    """Seconds per scan for the TIMED scans after ``n`` in one open round."""
    plan = parse_plan(PLAN)
    history = PlanHistory((PlanVersion(1, 0, "bench", plan, -(2**62)),))
    start = to_ms(dt.datetime.combine(DAY, dt.time(22, 0), tzinfo=plan.tz))
    now = {"ms": start + 1000}
    tracker = CompletionTracker(SimpleNamespace(history=lambda: history), load_scans=lambda lo, hi: [],
                                publish=lambda *a, **k: None, clock=lambda: now["ms"] / 1000,
                                send_command=lambda agent, command: True)  # each verdict computed and "sent"
    tracker.tick()

    def scan(i: int) -> Any:
        tag = f"{i:010X}" if unknown else "6F007B3972"
        # 40 scans a second at one reader: n = 100,000 spans 42 minutes of the round.
        return SimpleNamespace(kind="scan", agent="gate", source="r0", ts_est=start + i * 25, eseq=i + 1,
                               fields={"tag": tag, "fmt": "em4100"})

    for i in range(n):
        tracker.events_stored((scan(i),))
    runs = []
    for k in range(3):  # best of three runs of TIMED scans: the machine is shared
        t0 = time.perf_counter()
        for i in range(n + k * TIMED, n + (k + 1) * TIMED):
            tracker.events_stored((scan(i),))
        runs.append((time.perf_counter() - t0) / TIMED)
    return min(runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,10000,100000", help="scans already in the open round (comma-separated)")
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print("scans in the open round   per scan (member's card)   per scan (unknown cards)")
    for n in sizes:
        known = flood(n, unknown=False)
        strangers = flood(n, unknown=True)
        print(f"{n:>24,}   {known * 1e6:>20.1f} us   {strangers * 1e6:>20.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
