"""The systemd units pass `systemd-analyze verify`, and the conf.d example runs.

`verify` insists that ExecStart's program exists and is executable, and
/opt/gridpatrol/venv is not installed on a test machine. Each unit is therefore
copied into tmp_path with only the program of ExecStart replaced by an
executable that exists (the arguments stay as written); everything else is
verified as shipped. The copies keep their file names, since verify checks that
a unit file's name is a valid unit name.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gridpatrol import pki
from tests.security.tlsbroker import ConnectRefused, Pki, TlsBroker, make_pki, raw_mqtt_connect
from tests.support import REPO, free_port

SYSTEMD = REPO / "systemd"
DOCUMENTED_EXEC = "/opt/gridpatrol/venv/bin/gridpatrol"
UNITS = {
    "gridpatrol-agent.service": f"{DOCUMENTED_EXEC} agent --config /etc/gridpatrol/agent.toml",
    "gridpatrol-central.service": f"{DOCUMENTED_EXEC} central --config /etc/gridpatrol/central.toml",
}
# `systemd-analyze security` exposure (0 = locked down, 10 = unprotected); the
# agent keeps devices and adjtimex, so it scores a little higher than central.
MAX_EXPOSURE = {"gridpatrol-agent.service": 2.5, "gridpatrol-central.service": 2.0}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)")


def _exec_start(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


def _runnable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart's program pointing at an executable that exists here."""
    stand_in = tmp_path / "bin" / "gridpatrol"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = (SYSTEMD / unit).read_text()
    copy = tmp_path / unit
    copy.write_text(text.replace(f"ExecStart={DOCUMENTED_EXEC} ", f"ExecStart={stand_in} "))
    assert _exec_start(copy.read_text()) == _exec_start(text).replace(DOCUMENTED_EXEC, str(stand_in))
    return copy


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_exec_start_is_the_documented_command(unit: str) -> None:
    assert _exec_start((SYSTEMD / unit).read_text()) == UNITS[unit]


@needs_analyze
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify_passes(unit: str, tmp_path: Path) -> None:
    copy = _runnable_copy(unit, tmp_path)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_security_exposure_stays_low(unit: str, tmp_path: Path) -> None:
    copy = _runnable_copy(unit, tmp_path)
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(copy)], capture_output=True, text=True, timeout=60)
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE[unit], result.stdout


@pytest.mark.slow
def test_the_conf_d_example_runs_under_a_debian_style_main_config(tmp_path: Path) -> None:
    """The main config stands in for Debian's; the example adds the TLS listener.

    Debian's service drops to user mosquitto, which cannot enter pytest's
    private tmp_path; the stand-in names the test's own user instead, so this
    checks the example's settings, and docs/deploy.md the ownership.
    """
    p: Pki = make_pki(tmp_path / "pki", agents=("gate-a",), clients=())
    pki.write_acl(p.directory)
    port = free_port()
    example = (SYSTEMD / "mosquitto-gridpatrol-tls.conf").read_text()
    assert "listener 8883\n" in example and example.count("/etc/mosquitto/gridpatrol/") == 6
    assert all(f"\n{line}\n" in example for line in pki.QUEUE_SETTINGS), "the drop-in and broker-config queue alike"
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "gridpatrol.conf").write_text(
        example.replace("/etc/mosquitto/gridpatrol/", f"{p.directory}/").replace("listener 8883\n", f"listener {port}\n")
    )
    main = f"user {getpass.getuser()}\npersistence false\nlog_dest stderr\ninclude_dir {conf_d}\n"
    broker = TlsBroker(tmp_path / "broker", p, port=port, conf_text=main).start()
    try:
        broker.client("gate-a").connect().close()
        anonymous = broker.client(None)
        try:
            with pytest.raises(ConnectRefused):
                anonymous.connect()
        finally:
            anonymous.close()
        assert not raw_mqtt_connect(broker.host, port).startswith(b"\x20")
    finally:
        broker.stop()
