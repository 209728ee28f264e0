"""A site for end-to-end tests: a broker, a central and agents, as real processes.

Every process is started through :class:`tests.support.Processes`, so it is
ended at teardown whatever happens; each site lives in the test's tmp_path and
uses free ports only.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from tests import support
from tests.support import Broker, Processes, free_port, run_cli, wait_until


def central_toml(directory: Path, port: int, *, web_port: int | None = None) -> str:
    web_port = web_port or free_port()
    return f"""timezone = "Asia/Shanghai"
data_dir = "{directory}"

[mqtt]
host = "127.0.0.1"
port = {port}

[store]
url = "sqlite://{directory}/central.db"

[web]
listen = "127.0.0.1:{web_port}"
"""


def agent_toml(agent_id: str, directory: Path, port: int, *, extra: str = "", resend_s: float = 2, keepalive_s: int = 5) -> str:
    """The site's gate: a loop, a panic button, a siren and two LEDs, on mock pins driven through the sim socket."""
    return support.agent_toml(
        directory, port, agent_id=agent_id, mqtt={"keepalive_s": keepalive_s, "resend_s": resend_s},
        gpio={"sim_socket": f"{directory}/sim.sock", "status_led": "status-led"}, telemetry_s=2, extra=extra, devices=(
            support.device("zone", name="north-fence", pin=17, contact="nc", debounce_ms=20, siren="siren"),
            support.device("button", name="office-panic", pin=27, hold_ms=600, siren="siren", indicator="panic-led"),
            support.device("output", name="siren", pin=22, max_on_s=60),
            support.device("output", name="panic-led", pin=23),
            support.device("output", name="status-led", pin=24),
        ))


def drive(sock_path: Path, pin: int, level: str, *, timeout: float = 5.0) -> str:
    """One command on an agent's simulation socket; returns its answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(f"drive {pin} {level}\n".encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            answer += chunk
    return answer.decode().strip()


@dataclass
class AgentProc:
    agent_id: str
    directory: Path
    config: Path
    proc: Popen[bytes] | None = None

    @property
    def sim(self) -> Path:
        return self.directory / "sim.sock"

    def drive(self, pin: int, level: str) -> None:
        assert drive(self.sim, pin, level) == "ok"


@dataclass
class Site:
    root: Path
    broker: Broker
    processes: Processes
    central_conf: Path = field(init=False)
    central_proc: Popen[bytes] | None = None
    agents: dict[str, AgentProc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.root / "central"
        d.mkdir(parents=True, exist_ok=True)
        self.central_conf = d / "central.toml"
        self.central_conf.write_text(central_toml(d, self.broker.port))

    # -- central ---------------------------------------------------------------

    def start_central(self) -> None:
        self.central_proc = self.processes.gridpatrol("central", "--config", str(self.central_conf), log=self.root / "central.log")
        wait_until(lambda: (self.root / "central" / "central.db").exists() or self._died(self.central_proc), timeout=15, message="central store")
        assert self.central_proc.poll() is None, self.log("central")

    def stop_central(self) -> None:
        assert self.central_proc is not None
        assert Processes.terminate(self.central_proc) == 0, self.log("central")

    # -- agents ----------------------------------------------------------------

    def add_agent(self, agent_id: str, **kw: object) -> AgentProc:
        d = self.root / agent_id
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "agent.toml"
        conf.write_text(agent_toml(agent_id, d, self.broker.port, **kw))  # type: ignore[arg-type]
        a = AgentProc(agent_id, d, conf)
        self.agents[agent_id] = a
        return a

    def start_agent(self, agent_id: str, *, wait_online: bool = True) -> AgentProc:
        """Start the agent; with ``wait_online``, return once central shows it online.

        An event made before the agent's first connection is backlog and is
        rightly sent as ``replayed``: tests about live delivery wait for this.
        """
        a = self.agents[agent_id]
        a.sim.unlink(missing_ok=True)
        a.proc = self.processes.gridpatrol("agent", "--config", str(a.config), log=self.root / f"{agent_id}.log")
        wait_until(lambda: a.sim.exists() or self._died(a.proc), timeout=15, message=f"{agent_id} sim socket")
        assert a.proc.poll() is None, self.log(agent_id)
        if wait_online:
            wait_until(lambda: any(r["agent"] == agent_id and r["state"] == "online" for r in self.agents_json()),
                       timeout=20, interval=0.1, message=f"{agent_id} online at central")
        return a

    # -- reading the record like a user --------------------------------------

    def events(self, *extra: str) -> list[dict]:  # type: ignore[type-arg]
        r = run_cli("events", "--config", str(self.central_conf), "--json", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def agents_json(self) -> list[dict]:  # type: ignore[type-arg]
        r = run_cli("agents", "--config", str(self.central_conf), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_events(self, predicate, *, timeout: float = 20, message: str = "") -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
        found: list[dict] = []  # type: ignore[type-arg]

        def check() -> bool:
            found[:] = self.events()
            return bool(predicate(found))

        wait_until(check, timeout=timeout, interval=0.2, message=message or "events at central")
        return found

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"

    @staticmethod
    def _died(proc: Popen[bytes] | None) -> bool:
        return proc is not None and proc.poll() is not None


def kinds(events: list[dict], agent: str | None = None) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e["kind"], e["source"]) for e in events if agent is None or e["agent"] == agent]


def assert_once_in_order(events: list[dict], agent: str) -> list[int]:  # type: ignore[type-arg]
    """Every eseq of ``agent`` stored once, gap-free from 1; returns them."""
    seqs = [e["eseq"] for e in events if e["agent"] == agent]
    assert seqs == list(range(1, len(seqs) + 1)), f"eseqs of {agent} not 1..n once each: {seqs}"
    return seqs


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
