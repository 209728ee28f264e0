"""Real parts for tests: a Mosquitto of a test's own, free ports, deadlines.

Nothing here sleeps for a fixed time to let something happen: callers wait on
a condition with a deadline (:func:`wait_until`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from gridpatrol import procs
from gridpatrol.localbroker import LocalBroker, free_port, port_open

__all__ = ["Broker", "Processes", "REPO", "free_port", "port_open", "run_cli", "wait_until"]

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
