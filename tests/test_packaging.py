"""Installs per role, from a built wheel, into empty environments (no editable install).

- ``gridpatrol[agent]``: no web framework, server, password hasher or crypto
  package is installed, and the agent it installs runs (it comes online on a
  broker);
- ``gridpatrol[central]``: central serves its dashboard's templates and static
  files from the installed package, and its metrics.

pip fetches the dependencies through its normal configuration and cache
(here: a local wheel house and index, so it works offline).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO, Broker, Processes, agent_toml, free_port, wait_until

pytestmark = pytest.mark.slow

PIP_TIMEOUT_S = 300
# What an agent must never carry: the web stack, the password hasher, the crypto stack.
NOT_ON_AN_AGENT = {"starlette", "uvicorn", "jinja2", "argon2-cffi", "cryptography", "itsdangerous", "python-multipart",
                   "psycopg", "apprise", "tinydb", "prometheus-client"}


def _clean_env() -> dict[str, str]:
    # Nothing of this checkout may leak into the new environments.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=_clean_env(), cwd=cwd,
                          timeout=PIP_TIMEOUT_S)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once from a copy of the tree (no build files land in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("wire", "agent", "central", "firmware_bridge", "gridpatrol"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src)
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, src)
    [built] = out.glob("gridpatrol-*.whl")
    return built


def _venv_with(tmp_path: Path, wheel: Path, extra: str) -> Path:
    """A new environment without system site-packages, the wheel installed with one extra."""
    venv = tmp_path / f"venv-{extra}"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", f"{wheel}[{extra}]")
    return venv


def _installed(venv: Path) -> set[str]:
    code = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    return {name.lower().replace("_", "-") for name in json.loads(_run(venv / "bin" / "python", "-c", code))}


def test_an_agent_install_carries_no_web_or_crypto_stack_and_runs(tmp_path: Path, wheel: Path, broker: Broker,
                                                                   processes: Processes) -> None:
    venv = _venv_with(tmp_path, wheel, "agent")
    installed = _installed(venv)
    assert {"gridpatrol", "paho-mqtt", "msgpack", "gpiozero", "pyserial"} <= installed
    assert installed & NOT_ON_AN_AGENT == set()
    assert _run(venv / "bin" / "gridpatrol", "agent", "--help").startswith("usage: gridpatrol agent ")
    # The agent's code comes from the environment, not from this checkout.
    where = _run(venv / "bin" / "python", "-c", "import agent.runtime; print(agent.runtime.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv))

    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(tmp_path / "data", broker.port, agent_id="gate-w"))
    processes.start([str(venv / "bin" / "gridpatrol"), "agent", "--config", str(config)], log=tmp_path / "agent.log",
                    env={"PYTHONPATH": ""}, cwd=tmp_path)
    status = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "gridpatrol/v1/gate-w/status",
                             "-C", "1", "-W", "30"], capture_output=True, text=True, timeout=40)
    assert json.loads(status.stdout)["state"] == "online", (tmp_path / "agent.log").read_text()


def test_a_central_install_serves_its_dashboard(tmp_path: Path, wheel: Path, broker: Broker, processes: Processes) -> None:
    venv = _venv_with(tmp_path, wheel, "central")
    installed = _installed(venv)
    assert {"starlette", "uvicorn", "jinja2", "argon2-cffi"} <= installed
    assert installed & {"gpiozero", "pyserial", "cryptography"} == set()

    web = f"127.0.0.1:{free_port()}"
    config = tmp_path / "central.toml"
    config.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n\n'
                      f'[mqtt]\nport = {broker.port}\n\n[web]\nlisten = "{web}"\nmetrics = "open"\n')
    (tmp_path / "data").mkdir()
    processes.start([str(venv / "bin" / "gridpatrol"), "central", "--config", str(config)], log=tmp_path / "central.log",
                    env={"PYTHONPATH": ""}, cwd=tmp_path)

    def get(path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{web}{path}", timeout=5) as answer:
                return bytes(answer.read())
        except OSError:
            return None

    login = wait_until(lambda: get("/login"), timeout=30, interval=0.2, message="central's login page")
    assert b'name="csrf"' in login  # a template from the installed package
    assert get("/static/app.css") == (REPO / "central" / "web" / "static" / "app.css").read_bytes()
    metrics = (get("/metrics") or b"").decode()
    assert 'gridpatrol_queue_depth{queue="ingest"} 0.0' in metrics and 'gridpatrol_agents{state="online"} 0.0' in metrics
