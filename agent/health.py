"""Health figures for the agent's telemetry: CPU temperature and memory.

Read from Linux's /sys and /proc; each reader returns None where the figure
does not exist (a container, a machine without thermal zones) rather than fail.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
