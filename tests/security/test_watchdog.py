"""The systemd watchdog (issue 6): a hung loop stops the WATCHDOG=1 pings, so systemd restarts the service.

The ping loop is gridpatrol/base/systemd.py's ``supervise``, the same function
``gridpatrol agent`` and ``gridpatrol central`` run on their main thread. Here
it runs in-process beside a real Agent (its input loop blocked through
``InputLoop.post``, a real API) and a real Central (its ingest writer blocked
inside a listener), talking to a datagram socket that stands in for systemd's.
Both commands are also run as processes to see READY=1, the pings and STOPPING=1.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import serial

from agent.config import load_config as load_agent_config
from agent.inputs.readers.sim import SimulatedRdm6300
from agent.runtime import STALE_AFTER_S, Agent
from central.app import Central
from central.config import CentralConfig, MqttConfig, StoreConfig
from central.store import StoredEvent
from gridpatrol.base.systemd import Heartbeats, SystemdNotifier, supervise
from tests.e2e.site import central_toml
from tests.support import Broker, FakeAgent, Processes, agent_toml, device, wait_until

WATCHDOG_USEC = 400_000  # pings every 0.2 s
PING_S = WATCHDOG_USEC / 1e6 / 2
SILENCE_S = 6 * PING_S  # this long without a ping while stalled shows the pings have stopped
WRITER_STALL_S = 1.5  # central's ingest judged stalled after this (Central.healthy uses 30 s)


class SystemdSocket:
    """The datagram socket systemd listens on; what the service told it, in order.

    A thread reads it at once, as systemd does: a datagram socket whose queue
    is full would block the sender.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.told: queue.Queue[str] = queue.Queue()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="systemd-socket")
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                self.told.put(self.sock.recv(256).decode())
            except TimeoutError:
                continue

    @property
    def environ(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def next(self, timeout: float = 10.0) -> str | None:
        try:
            return self.told.get(timeout=timeout)
        except queue.Empty:
            return None

    def until(self, message: str, timeout: float = 10.0) -> list[str]:
        """What arrives up to and with ``message``; fails after ``timeout`` without it."""
        got: list[str] = []
        while message not in got:
            msg = self.next(timeout)
            assert msg is not None, f"{message} did not arrive within {timeout} s; got {got}"
            got.append(msg)
        return got

    def drain(self) -> list[str]:
        got = []
        while True:
            try:
                got.append(self.told.get_nowait())
            except queue.Empty:
                return got

    def close(self) -> None:
        self._closing.set()
        self._reader.join(10)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[SystemdSocket]:
    s = SystemdSocket(tmp_path / "notify.sock")
    try:
        yield s
    finally:
        s.close()


class Supervisor:
    """``supervise`` on a thread of its own, as the command's main thread runs it."""

    def __init__(self, healthy: object, systemd: SystemdSocket, name: str) -> None:
        self.stop = threading.Event()
        notifier = SystemdNotifier(environ=systemd.environ)
        assert notifier.watchdog_interval_s == PING_S
        self.thread = threading.Thread(target=supervise, args=(self.stop, healthy),
                                       kwargs={"notifier": notifier, "name": name}, name="supervisor")
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def assert_pings_stop_while_stalled_and_resume(systemd: SystemdSocket, caplog: pytest.LogCaptureFixture, name: str,
                                               unblock: threading.Event, stall_timeout: float, stale: str = "") -> None:
    """``stale``: the threads the log names, as " (input loop not going round)"."""
    wait_until(lambda: logged(caplog, f"{name} is stalled{stale}: watchdog pings withheld"), timeout=stall_timeout,
               interval=0.05, message="the stall noticed")
    systemd.drain()  # pings sent before the stall was noticed
    # Nothing while it stays stalled: the service would be restarted by systemd.
    assert systemd.next(timeout=SILENCE_S) is None
    unblock.set()
    assert systemd.next(timeout=10) == "WATCHDOG=1"
    assert logged(caplog, f"{name} is going round again: watchdog pings resume")


@pytest.mark.slow
def test_a_hung_input_loop_stops_the_agents_pings(tmp_path: Path, broker: Broker, systemd: SystemdSocket,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_toml(tmp_path / "data", broker.port, agent_id="gate-a",
                                      devices=(device("zone", name="north-fence", pin=17),)))
    agent = Agent(load_agent_config(config_path))
    unblock = threading.Event()
    try:
        agent.start()
        supervisor = Supervisor(agent.heartbeats, systemd, "agent gate-a")
        try:
            assert systemd.next() == "READY=1"
            assert systemd.next() == "WATCHDOG=1"
            blocked = agent.loop.post(unblock.wait)  # the input loop's thread waits here, as in a hung device
            # The agent's own threshold: its threads are stale after STALE_AFTER_S.
            assert_pings_stop_while_stalled_and_resume(systemd, caplog, "agent gate-a", unblock,
                                                       stall_timeout=STALE_AFTER_S + 10, stale=" (input loop not going round)")
            assert blocked.result(timeout=10) is True
        finally:
            unblock.set()
            supervisor.close()
        assert set(systemd.until("STOPPING=1")) <= {"WATCHDOG=1", "STOPPING=1"}
    finally:
        agent.stop()


@pytest.mark.slow
def test_a_hung_reader_thread_stops_the_agents_pings(tmp_path: Path, broker: Broker, systemd: SystemdSocket,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    module = SimulatedRdm6300()
    hang, release = threading.Event(), threading.Event()

    def open_port(url: str, **kw: Any) -> Any:
        if hang.is_set():
            release.wait()  # a driver stuck in open(2): the reader's thread goes round no more
        return serial.serial_for_url(url, **kw)

    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_toml(tmp_path / "data", broker.port, agent_id="gate-r",
                                      devices=(device("reader", name="gate-1", port=module.path, protocol="rdm6300"),)))
    agent = Agent(load_agent_config(config_path), open_port=open_port)
    try:
        agent.start()
        supervisor = Supervisor(agent.heartbeats, systemd, "agent gate-r")
        try:
            assert systemd.next() == "READY=1"
            assert systemd.next() == "WATCHDOG=1"
            wait_until(lambda: agent.snapshot().inputs["gate-1"] == "up", message="the reader's port open")
            hang.set()
            module.close()  # unplugged: the reader's thread reopens the port, and hangs there
            assert_pings_stop_while_stalled_and_resume(systemd, caplog, "agent gate-r", release,
                                                       stall_timeout=STALE_AFTER_S + 10,
                                                       stale=" (SerialReader gate-1 not going round)")
        finally:
            release.set()
            supervisor.close()
    finally:
        release.set()
        module.close()
        agent.stop()


def test_ready_is_told_once_every_thread_goes_round(systemd: SystemdSocket) -> None:
    beats: dict[str, float | None] = {"input loop": None, "reader gate-1": None}
    now = [100.0]
    heartbeats = Heartbeats(stale_after_s=10, clock=lambda: now[0])
    for name in beats:
        heartbeats.add(name, lambda name=name: beats[name])
    assert heartbeats.stale() == ["input loop", "reader gate-1"]
    supervisor = Supervisor(heartbeats, systemd, "svc")
    try:
        beats["input loop"] = 100.0
        assert systemd.next(timeout=0.5) is None  # one thread has not gone round yet: not ready
        beats["reader gate-1"] = 100.0
        assert systemd.next() == "READY=1"
        now[0] = 110.0  # ten seconds without a beat from either
        assert heartbeats.stale() == ["input loop", "reader gate-1"]
        beats["input loop"] = 110.0
        assert heartbeats.stale() == ["reader gate-1"] and not heartbeats()
    finally:
        supervisor.close()


def test_an_agent_is_not_healthy_before_it_starts(tmp_path: Path) -> None:
    agent = Agent(load_agent_config(_write(tmp_path / "agent.toml", agent_toml(tmp_path / "data", 1))))
    try:
        assert not agent.healthy()
        assert agent.heartbeats.names == []
    finally:
        agent.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class BlockingListener:
    """Holds the ingest writer inside ``events_stored`` until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        self.entered.set()
        self.release.wait()

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        pass


def test_a_hung_ingest_writer_stops_centrals_pings(tmp_path: Path, broker: Broker, systemd: SystemdSocket,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = CentralConfig(timezone="UTC", data_dir=tmp_path / "central",
                           store=StoreConfig(url=f"sqlite://{tmp_path}/central/central.db",
                                             path=tmp_path / "central" / "central.db"),
                           mqtt=MqttConfig(host=broker.host, port=broker.port, client_id="central-under-test"))
    listener = BlockingListener()
    central = Central(config, listeners=[listener], alarms=False, tracker=False, web=False)
    agent: FakeAgent | None = None
    try:
        central.start()
        assert central.ingest.wait_connected(10)
        name = "central's ingest writer"
        supervisor = Supervisor(lambda: central.ingest.alive(WRITER_STALL_S), systemd, name)
        try:
            assert systemd.next() == "READY=1"
            assert systemd.next() == "WATCHDOG=1"
            agent = FakeAgent(broker, "gate-a")
            agent.online(1)
            agent.event(1)
            assert listener.entered.wait(10), "the writer never reached the listener"
            assert_pings_stop_while_stalled_and_resume(systemd, caplog, name, listener.release,
                                                       stall_timeout=WRITER_STALL_S + 10)
            wait_until(lambda: agent is not None and agent.acked(1), message="the ack once the writer is free")
        finally:
            listener.release.set()
            supervisor.close()
        assert set(systemd.until("STOPPING=1")) <= {"WATCHDOG=1", "STOPPING=1"}
    finally:
        listener.release.set()
        if agent is not None:
            agent.close()
        central.stop()


def test_gridpatrol_central_tells_systemd_ready_pings_and_stopping(tmp_path: Path, broker: Broker,
                                                                  processes: Processes, systemd: SystemdSocket) -> None:
    directory = tmp_path / "central"
    directory.mkdir()
    conf = directory / "central.toml"
    conf.write_text(central_toml(directory, broker.port))
    proc = processes.gridpatrol("central", "--config", str(conf), log=tmp_path / "central.log", env=systemd.environ)
    assert systemd.next(timeout=30) == "READY=1"
    assert [systemd.next(), systemd.next()] == ["WATCHDOG=1", "WATCHDOG=1"]
    assert Processes.terminate(proc) == 0
    assert set(systemd.until("STOPPING=1")) <= {"WATCHDOG=1", "STOPPING=1"}
    assert systemd.drain() == []  # nothing after it
