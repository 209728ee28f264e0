"""scripts/check.sh (run by scripts/test.sh before pytest) fails when the design is broken.

Each test copies the packages to a folder of its own, breaks one rule there and
runs the real check script on the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow
PACKAGES = ("wire", "agent", "central", "firmware_bridge", "gridpatrol")


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in PACKAGES:
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "scripts", tree / "scripts")
    shutil.copy(REPO / "pyproject.toml", tree)
    return tree


def _check(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDPATROL_CHECK_BIN": str(Path(sys.executable).parent), "PYTHONPATH": ""}
    return subprocess.run([str(tree / "scripts" / "check.sh")], cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_an_outbox_that_learns_mqtt_fails_the_checks(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree / "agent" / "outbox.py", "\nimport paho.mqtt.client  # noqa: E402, F401\n")
    done = _check(tree)
    assert done.returncode != 0
    assert "the agent's outbox knows no MQTT BROKEN" in " ".join(done.stdout.split())


def test_central_importing_the_agent_fails_the_checks(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree / "central" / "bus.py", "\nimport agent.config  # noqa: E402, F401\n")
    done = _check(tree)
    assert done.returncode != 0
    assert "agent and central never import each other (they meet on the wire) BROKEN" in " ".join(done.stdout.split())


def test_a_type_error_fails_the_checks(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree / "wire" / "codec.py", '\n\ndef _broken() -> int:\n    return "not a number"\n')
    done = _check(tree)
    assert done.returncode != 0
    assert 'wire/codec.py:' in done.stdout and 'Incompatible return value type (got "str", expected "int")' in done.stdout


def test_the_unbroken_copy_passes(tmp_path: Path) -> None:
    done = _check(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
