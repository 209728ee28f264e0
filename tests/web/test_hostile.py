"""Issue 12's checks against a real ``gridpatrol central`` process (slow, loopback only).

The figures behind docs/web.md come from ``python -m tests.web.hostile``; these
tests hold central to the bounds: its memory, an alarm's latency, /healthz,
and its log, while the web is attacked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.web.hostile import UNIT_NOFILE, idle_hold, login_burst, request_flood, rss_mb, running_central

# The issue asks for a 20 s hold; CI may shorten it (GRIDPATROL_HOLD_S), never below the
# 10 s head timeout, so the server's own shedding of idle connections is always exercised.
HOLD_S = max(11.0, float(os.environ.get("GRIDPATROL_HOLD_S", "20")))


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("addresses", [1, 40], ids=["one-address", "forty-addresses"])
def test_forty_wrong_passwords_at_once_cost_central_neither_memory_nor_an_alarm(tmp_path: Path, addresses: int) -> None:
    with running_central(tmp_path, nofile=UNIT_NOFILE) as central:
        figures = login_burst(central, logins=40, addresses=addresses)
        assert figures.peak_rss_mb < 400, figures
        assert figures.alarm_latency_s < 2.0, figures
        # Every try had an answer: wrong password, throttled, or busy past the bounded room; never a hang or 500.
        assert set(figures.statuses) <= {"401", "429", "503"}, figures
        assert sum(figures.statuses.values()) == 40
        assert rss_mb(central.pid)[1] < 400  # the kernel's own high-water mark agrees
        if addresses == 1:
            # One address takes at most two places of the gate: the night shift's desk gets in meanwhile.
            assert figures.desk_login is not None and figures.desk_login[0] == 303, figures


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_eleven_hundred_idle_connections_leave_healthz_ingest_and_the_log_alone(tmp_path: Path) -> None:
    with running_central(tmp_path, nofile=UNIT_NOFILE) as central:
        figures = idle_hold(central, connections=1100, hold_s=HOLD_S)
        assert figures.healthz_s is not None and figures.healthz_s < 2.0, figures
        assert figures.alarm_latency_s < 2.0, figures
        assert figures.log_growth_mb is not None and figures.log_growth_mb < 5.0, figures
        assert figures.peak_rss_mb < 400, figures


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fifty_clients_asking_for_the_largest_lists_leave_ingest_alone(tmp_path: Path) -> None:
    with running_central(tmp_path, nofile=UNIT_NOFILE) as central:
        figures = request_flood(central, clients=50, seconds=10)
        assert figures.alarm_latency_s < 2.0, figures
        assert figures.healthz_s is not None and figures.healthz_s < 2.0, figures
        assert figures.peak_rss_mb < 400, figures
        assert set(figures.statuses) == {"200"}, figures


def test_the_checks_run_central_under_the_units_own_limits() -> None:
    from tests.support import REPO

    unit = (REPO / "systemd" / "gridpatrol-central.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in unit if line.startswith(("LimitNOFILE=", "MemoryMax=", "MemoryHigh=")))
    assert int(settings["LimitNOFILE"]) == UNIT_NOFILE
    # Measured peaks (about 155 MB at most) stay far under MemoryHigh, where the kernel would start slowing central.
    assert settings["MemoryHigh"] == "384M" and settings["MemoryMax"] == "512M"
