"""A Mosquitto of our own on a free loopback port, in a folder of our own.

Used by ``gridpatrol demo`` and by the tests (which must never touch the
shared broker on 1883). ``kill()`` is a crash (SIGKILL), ``stop()`` a clean
shutdown; ``start()`` after either brings it back on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

START_TIMEOUT_S = 10.0


def find_mosquitto() -> str:
    """Debian installs the broker in /usr/sbin, which a user's PATH may lack."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError("mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalBroker:
    """``extra`` lines are appended to the generated configuration."""

    def __init__(self, directory: Path, *, port: int | None = None, extra: Sequence[str] = (), persistence: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = self.directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # Never drop QoS 1 messages queued for a slow or absent collector
            # (the default of 1000 does; see systemd/mosquitto-gridpatrol.conf).
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",  # as systemd/mosquitto-gridpatrol.conf: no Nagle delay on a lone alarm
            *extra,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = self.directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalBroker:
        if self.running:
            raise RuntimeError(f"mosquitto on port {self.port} is already running")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
