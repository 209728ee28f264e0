"""``gridpatrol demo``: a whole simulated district on this machine.

Starts its own Mosquitto (unless ``--broker`` names one), a central with the
demo plan and a staff login, ``--agents N`` agent processes on gpiozero's mock
pins with an RDM6300 reader each on a pseudo-terminal, and then plays the
script of :mod:`gridpatrol.district`: volunteers walking their routes, a
perimeter breach, a panic press, an agent losing its network and its power
and coming back with its backlog. Each agent reaches the broker through a
:class:`~gridpatrol.netsim.TcpProxy`, so its link can be cut.

It prints the dashboard's address and a login, keeps a live summary in the
terminal, and on Ctrl-C or ``--minutes`` after every agent is up stops
everything it started. The plan is imported once the agents are up, with
windows cut around that moment (central applies it within a second).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.inputs.readers.rdm6300 import encode_frame
from central.store import Store, StoreError
from gridpatrol import district as D
from gridpatrol.localbroker import LocalBroker, free_port
from gridpatrol.netsim import TcpProxy
from gridpatrol.procs import kill, terminate

_LOGGER = logging.getLogger(__name__)

SUMMARY_EVERY_S = 2.0
REPORT_EVERY_S = 10.0
PROCESS_START_TIMEOUT_S = 90.0  # twelve Python processes starting at once on a busy 2-core machine
TAP_REPEATS = 5  # an RDM6300 repeats its frame while the card lies on it
TAP_REPEAT_S = 0.1
DEMO_USER = "demo"


@dataclass
class _Agent:
    spec: D.DemoAgent
    directory: Path
    config: Path
    proxy: TcpProxy
    reader_master: int
    reader_slave: int
    sim: Path
    proc: subprocess.Popen[bytes] | None = None


class Demo:
    def __init__(self, *, agents: int, minutes: float | None, directory: Path, broker: str | None, web: str | None, out: TextIO = sys.stdout) -> None:
        self.n_agents = agents
        self.minutes = minutes
        self.dir = directory
        self.broker_arg = broker
        self.web = web or f"127.0.0.1:{free_port()}"
        self.out = out
        self.broker: LocalBroker | None = None
        self.broker_addr: tuple[str, int] = ("127.0.0.1", 0)
        self.central: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, _Agent] = {}
        self.password = secrets.token_urlsafe(9)
        # Unix socket paths may not exceed 107 bytes, and --dir can be deep:
        # the simulation sockets live in a short folder of their own.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="gp-demo-"))
        self._stop = threading.Event()
        self._taps: list[threading.Thread] = []
        self._log_lines: list[str] = []
        self._last_report: dict[str, Any] | None = None
        self._drawn = 0
        self._last_summary: list[str] = []

    # -- life cycle ----------------------------------------------------------

    def run(self) -> int:
        # The agents do not depend on the time; the plan's windows and the script do,
        # and start once the district is up (agents take 10 to 60 s on a busy machine).
        self.district = D.build(self.n_agents, now=dt.datetime.now(dt.timezone.utc), minutes=self.minutes or 0)
        self._start_broker()
        self._start_central()
        for spec in self.district.agents:
            self._start_agent(self._prepare_agent(spec))
        self._wait_sockets()
        self.district = D.build(self.n_agents, now=dt.datetime.now(dt.timezone.utc), minutes=self.minutes or 0)
        self._import_plan()
        started = dt.datetime.now(dt.timezone.utc)  # taps begin after the import: no scan is flagged unplanned
        host, _, port = self.web.rpartition(":")
        self._say(f"Dashboard: http://{host}:{port}/   login: {DEMO_USER} / {self.password}")
        self._say(f"Files: {self.dir}   (central.db, logs, configs)")
        self._say("Ctrl-C stops the demo." if not self.minutes else f"Runs for {self.minutes:g} minutes; Ctrl-C stops it sooner.")
        script = D.timeline(self.district, started=started, minutes=self.minutes or 0)
        t0 = started.timestamp()
        end = t0 + self.minutes * 60 if self.minutes else float("inf")
        next_summary = 0.0
        while not self._stop.is_set():
            now = time.time()
            while script and t0 + script[0].at <= now:
                self._perform(script.pop(0))
            if now >= end:
                break
            if time.monotonic() >= next_summary:
                self._draw_summary()
                next_summary = time.monotonic() + SUMMARY_EVERY_S
            wait = min(end, t0 + script[0].at if script else end) - time.time()
            self._stop.wait(max(0.0, min(wait, 0.5)))
        self._draw_summary(final=True)
        return 0

    def stop(self) -> None:
        self._stop.set()

    def _wait_agents_gone_at_central(self, timeout_s: float = 10.0) -> None:
        """Let central store the agents' last statuses before it stops too, so the store it leaves says
        who is gone (central drops what it has not stored when it stops; the agents would resend only
        on their next start)."""
        if self.central is None or self.central.poll() is not None:
            return
        db = self.dir / "central" / "central.db"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not any(row.state == "online" for row in Store(db).list_agents()):
                    return
            except StoreError:
                return
            time.sleep(0.1)
        _LOGGER.warning("demo: central still shows agents online %s s after they stopped", timeout_s)

    def close(self) -> None:
        """End every process and thread this demo started, whatever state it is in."""
        self._stop.set()
        for tap in self._taps:
            tap.join(timeout=2)
        for agent in self.agents.values():
            terminate(agent.proc)
        self._wait_agents_gone_at_central()
        terminate(self.central)
        for agent in self.agents.values():
            agent.proxy.close()
            for fd in (agent.reader_master, agent.reader_slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.broker is not None:
            self.broker.stop()
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    # -- starting things -----------------------------------------------------

    def _start_broker(self) -> None:
        if self.broker_arg:
            host, _, port = self.broker_arg.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--broker: {self.broker_arg!r} is not HOST:PORT")
            self.broker_addr = (host, int(port))
        else:
            self.broker = LocalBroker(self.dir / "broker").start()
            self.broker_addr = (self.broker.host, self.broker.port)

    def _gridpatrol(self, *args: str, log: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        with open(self.dir / log, "ab") as out:
            return subprocess.run([sys.executable, "-m", "gridpatrol.cli", *args], stdout=out, stderr=out, input=stdin, timeout=60)

    def _start_central(self) -> None:
        cdir = self.dir / "central"
        cdir.mkdir(parents=True, exist_ok=True)
        conf = cdir / "central.toml"
        host, _, port = self.web.rpartition(":")
        conf.write_text(D.central_toml(data_dir=str(cdir), mqtt_port=self.broker_addr[1], web_listen=f"{host}:{port}"))
        self.central_conf = conf
        # No plan yet (it is imported once the agents are up): the unit is not checked.
        result = self._gridpatrol("users", "add", DEMO_USER, "--unit", "fengze", "--config", str(conf), log="setup.log",
                                  stdin=(self.password + "\n").encode())
        if result.returncode != 0:
            raise RuntimeError(f"gridpatrol users add failed; see {self.dir / 'setup.log'}")
        self.central = _spawn(["central", "--config", str(conf)], self.dir / "central.log")

    def _import_plan(self) -> None:
        plan = self.dir / "plan.toml"
        plan.write_text(D.plan_toml(self.district))
        result = self._gridpatrol("plan", "import", str(plan), "--config", str(self.central_conf), log="setup.log")
        if result.returncode != 0:
            raise RuntimeError(f"gridpatrol plan import failed; see {self.dir / 'setup.log'}")

    def _prepare_agent(self, spec: D.DemoAgent) -> _Agent:
        adir = self.dir / "agents" / spec.agent_id
        adir.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()
        proxy = TcpProxy(self.broker_addr).start()
        conf = adir / "agent.toml"
        sim = self._sock_dir / f"{len(self.agents)}.sock"
        conf.write_text(
            D.agent_toml(spec, data_dir=str(adir), mqtt_port=proxy.port, sim_socket=str(sim), reader_port=os.ttyname(slave))
        )
        agent = _Agent(spec, adir, conf, proxy, master, slave, sim)
        self.agents[spec.agent_id] = agent
        return agent

    def _start_agent(self, agent: _Agent) -> None:
        agent.sim.unlink(missing_ok=True)
        agent.proc = _spawn(["agent", "--config", str(agent.config)], agent.directory / "agent.log")

    def _wait_sockets(self) -> None:
        deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
        for agent in self.agents.values():
            while not agent.sim.exists():
                if agent.proc is not None and agent.proc.poll() is not None:
                    raise RuntimeError(f"agent {agent.spec.agent_id} exited at start; see {agent.directory / 'agent.log'}")
                if time.monotonic() > deadline or self._stop.is_set():
                    raise RuntimeError(f"agent {agent.spec.agent_id} did not start within {PROCESS_START_TIMEOUT_S:g} s")
                time.sleep(0.05)
        if self.central is not None and self.central.poll() is not None:
            raise RuntimeError(f"central exited at start; see {self.dir / 'central.log'}")

    # -- the script ----------------------------------------------------------

    def _perform(self, action: D.Action) -> None:
        agent = self.agents[action.agent]
        if action.what == "tap":
            t = threading.Thread(target=self._tap, args=(agent, action.arg), daemon=True)
            t.start()
            self._taps = [x for x in self._taps if x.is_alive()] + [t]
        elif action.what == "drive":
            answer = _drive(agent.sim, int(action.arg), action.level)
            if answer != "ok":
                self._note(f"{action.agent}: drive {action.arg} {action.level}: {answer}")
        elif action.what == "cut":
            agent.proxy.cut()
        elif action.what == "heal":
            agent.proxy.heal()
        elif action.what == "kill":
            kill(agent.proc)
        elif action.what == "restart":
            self._start_agent(agent)
        if action.what != "tap":
            self._note(f"{action.agent}: {action.note}")
        elif action.note == "a card of no team":
            self._note(f"{action.agent}: {action.note} tapped")

    def _tap(self, agent: _Agent, tag: str) -> None:
        frame = encode_frame(tag)
        for _ in range(TAP_REPEATS):
            try:
                os.write(agent.reader_master, frame)
            except OSError:
                return
            if self._stop.wait(TAP_REPEAT_S):
                return

    # -- the terminal --------------------------------------------------------

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _note(self, line: str) -> None:
        entry = f"{time.strftime('%H:%M:%S')}  {line}"
        if self.out.isatty():
            self._log_lines = (self._log_lines + [entry])[-6:]  # shown in the live block
        else:
            self._say(entry)  # a log: each note once, as it happens

    def _draw_summary(self, *, final: bool = False) -> None:
        s = self.snapshot()
        summary = [
            f"agents online {s['online']}/{len(self.agents)}   events stored {s['events']}   "
            f"alarms active {s['alarms'].get('active', 0)}, acknowledged {s['alarms'].get('acknowledged', 0)}, resolved {s['alarms'].get('resolved', 0)}",
            "rounds " + ", ".join(f"{k} {v}" for k, v in s["rounds"].items()) if s["rounds"] else "rounds: (no report yet)",
        ]
        if not self.out.isatty():
            # A log or a pipe: a summary only when it changed, and at the end.
            if summary != self._last_summary or final:
                self._say(("final: " if final else "") + " | ".join(summary))
                self._last_summary = summary
            return
        lines = summary + self._log_lines
        if self._drawn and not final:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        for line in lines:
            self.out.write(line + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def snapshot(self) -> dict[str, Any]:
        """What central's store holds now (read-only; central keeps writing)."""
        db = self.dir / "central" / "central.db"
        result: dict[str, Any] = {"online": 0, "events": 0, "alarms": {}, "rounds": {}}
        if not db.exists():
            return result
        try:
            result.update(Store(db).summary())
        except StoreError as exc:
            _LOGGER.debug("summary: %s", exc)
        now = time.monotonic()
        if self._last_report is None or now - self._last_report["at"] >= REPORT_EVERY_S:
            self._last_report = {"at": now, "rounds": self._rounds()}
        result["rounds"] = self._last_report["rounds"]
        return result

    def _rounds(self) -> dict[str, int]:
        proc = subprocess.run(
            [sys.executable, "-m", "gridpatrol.cli", "report", "completion", "--config", str(self.central_conf), "--format", "json"],
            capture_output=True, timeout=60,
        )
        if proc.returncode != 0:
            return {}
        counts: dict[str, int] = {}
        for r in json.loads(proc.stdout).get("rounds", []):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return dict(sorted(counts.items()))


# -- processes -----------------------------------------------------------------


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gridpatrol.cli", *args], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _drive(path: Path, pin: int, level: str) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(f"drive {pin} {level}\n".encode())
            return s.makefile().readline().strip()
    except OSError as exc:
        return f"error: {exc}"


def run_demo(args: Any) -> int:
    if args.agents < 4 or args.agents > 500:
        raise ValueError(f"--agents: {args.agents} is out of range (4 to 500)")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError(f"--minutes: {args.minutes} must be greater than 0")
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gridpatrol-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    demo = Demo(agents=args.agents, minutes=args.minutes, directory=directory, broker=args.broker, web=args.web)
    previous = {sig: signal.signal(sig, lambda *_: demo.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return demo.run()
    finally:
        demo.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("Demo stopped; every process it started has ended.", flush=True)
