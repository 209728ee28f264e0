"""Health figures for the agent's telemetry: CPU temperature and memory.

Read from Linux's /sys and /proc; each reader returns None where the figure
does not exist (a container, a machine without thermal zones) rather than fail.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

from wire.messages import Telemetry

_LOGGER = logging.getLogger(__name__)

CPU_TEMP_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
PROC_STATUS_PATH = Path("/proc/self/status")
_MILLIDEGREES_PER_DEGREE = 1000.0
# Anything outside this range is a broken sensor, not a temperature.
_PLAUSIBLE_C = (-60.0, 200.0)


def cpu_temp_c(path: Path = CPU_TEMP_PATH) -> float | None:
    """The SoC temperature in degrees Celsius (the kernel reports millidegrees)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    try:
        value = int(text) / _MILLIDEGREES_PER_DEGREE
    except ValueError:
        _LOGGER.debug("unreadable temperature %r in %s", text[:32], path)
        return None
    low, high = _PLAUSIBLE_C
    return value if low <= value <= high else None


def rss_kb(path: Path = PROC_STATUS_PATH) -> int | None:
    """Resident memory of this process in KiB (VmRSS)."""
    try:
        with path.open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    parts = line.split()
                    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except OSError:
        return None
    return None


class Health:
    """Builds the agent's ``tele`` message from its parts and this machine's figures."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        clock_synced: Callable[[], bool],
        cpu_temp: Callable[[], float | None] = cpu_temp_c,
        rss: Callable[[], int | None] = rss_kb,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._synced = clock_synced
        self._cpu_temp = cpu_temp
        self._rss = rss
        self.started = clock()

    def telemetry(self, *, outbox_depth: int, reconnects: int, counters: Mapping[str, int]) -> Telemetry:
        now = self._clock()
        return Telemetry(
            uptime_s=round(now - self.started, 3),
            outbox_depth=outbox_depth,
            reconnects=reconnects,
            clock_synced=self._synced(),
            ts=int(self._wall() * 1000),
            mono_ms=int(now * 1000),
            cpu_temp_c=self._cpu_temp(),
            rss_kb=self._rss(),
            counters=dict(counters),
        )
