"""Real parts for tests: a Mosquitto of a test's own, free ports, deadlines.

Nothing here sleeps for a fixed time to let something happen: callers wait on
a condition with a deadline (:func:`wait_until`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from gridpatrol import procs
from gridpatrol.localbroker import LocalBroker, free_port, port_open

__all__ = ["AGENT_ID", "Broker", "GATE", "Processes", "REPO", "agent_toml", "device", "free_port", "port_open", "run_cli", "wait_until"]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.01, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


class Broker(LocalBroker):
    """A Mosquitto of one test's own (see gridpatrol.localbroker), plus ``pub``."""

    def pub(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish with ``mosquitto_pub`` (the real command-line client)."""
        cmd = ["mosquitto_pub", "-h", self.host, "-p", str(self.port), "-t", topic, "-q", str(qos), "-s"]
        if retain:
            cmd.append("-r")
        subprocess.run(cmd, input=payload, check=True, timeout=10)


class Processes:
    """Processes a test started; every one is ended at teardown, pass or fail."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab")
        try:
            proc = subprocess.Popen(
                list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def gridpatrol(self, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start([sys.executable, "-m", "gridpatrol.cli", *args], log=log, env=env)

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
        return procs.terminate(proc, timeout)  # type: ignore[return-value]  # a process, so a status

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        procs.kill(proc)

    def close(self) -> None:
        for proc in self.procs:
            self.terminate(proc, timeout=5)


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``gridpatrol`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "gridpatrol.cli", *args],
        input=None if stdin is None else stdin.decode(), capture_output=True, text=True, timeout=timeout,
    )


# -- agent configurations -----------------------------------------------------

AGENT_ID = "school-9-gate-1"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def _table(header: str, keys: dict[str, object]) -> str:
    lines = [header] + [f"{k} = {_toml_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def device(kind: str, **keys: object) -> str:
    """One ``[[kind]]`` table of an agent configuration; keys given None are left out."""
    return _table(f"[[{kind}]]", keys)


# The gate most tests use: a loop on pin 17 that sounds a siren on pin 22.
GATE = (
    device("zone", name="north-fence", pin=17, debounce_ms=20, siren="siren"),
    device("output", name="siren", pin=22, max_on_s=180),
)


def agent_toml(data_dir: Path, port: int, *, agent_id: str = AGENT_ID, devices: Sequence[str] = GATE,
               mqtt: dict[str, object] | None = None, gpio: dict[str, object] | None = None,
               telemetry_s: float | None = None, extra: str = "") -> str:
    """An agent configuration for a test: the agent's broker on 127.0.0.1:``port``.

    ``mqtt`` and ``gpio`` add or replace keys of those tables (``keepalive_s``
    is 5 unless given; ``pin_factory`` is "mock" unless given None); ``devices``
    are :func:`device` tables; ``extra`` is appended as it is.
    """
    parts = [_table("", {"agent_id": agent_id, "data_dir": str(data_dir)}).lstrip("\n"),
             _table("[mqtt]", {"host": "127.0.0.1", "port": port, "keepalive_s": 5, **(mqtt or {})}),
             _table("[gpio]", {"pin_factory": "mock", **(gpio or {})})]
    if telemetry_s is not None:
        parts.append(_table("[telemetry]", {"interval_s": telemetry_s}))
    parts.extend(devices)
    parts.append(extra)
    return "\n".join(parts)
