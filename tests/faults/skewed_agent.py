"""``gridpatrol agent`` with a wall clock the test sets: a test-only launcher.

The agent takes its wall clock and ``clock_synced`` as collaborators
(``Agent(wall_clock=..., clock_synced=...)``); this launcher runs the real
command line (``python -m tests.faults.skewed_agent agent --config FILE``) with
those two read from the file named by ``GRIDPATROL_TEST_CLOCK_FILE``:
``OFFSET_S SYNCED`` (seconds added to the real time; 1 or 0). It is read on
every call, so a test can "sync" a running agent's clock by rewriting it.
The boot clock (``mono_ms``) stays the machine's, as on a Pi whose wall clock
is wrong.

libfaketime was tried first and does not do here (Debian's 0.9.10, Python
3.11): with the monotonic clocks left alone, as ``mono_ms`` needs, Python's
``time.sleep`` fails with EINVAL under it; with them faked, every timed wait
hangs. And it cannot fake adjtimex(2), which is where ``clock_synced`` comes
from. Hence no seam in the shipped code: the test reaches the collaborator.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

CLOCK_FILE_ENV = "GRIDPATROL_TEST_CLOCK_FILE"


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> tuple[float, bool]:
        offset, synced = self.path.read_text().split()
        return float(offset), synced == "1"

    def wall(self) -> float:
        return time.time() + self._read()[0]

    def synced(self) -> bool:
        return self._read()[1]


def set_clock(path: Path, *, offset_s: float, synced: bool) -> None:
    """What the test calls: atomically, so the agent never reads half a file."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(f"{offset_s} {1 if synced else 0}\n")
    os.replace(temp, path)


def main() -> int:
    import agent.cli
    from agent.runtime import Agent
    from gridpatrol.cli import main as gridpatrol_main

    clock = FileClock(Path(os.environ[CLOCK_FILE_ENV]))
    agent.cli.Agent = functools.partial(Agent, wall_clock=clock.wall, clock_synced=clock.synced)  # type: ignore[misc]
    return gridpatrol_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
