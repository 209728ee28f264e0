"""``gridpatrol agent`` as a real process: mock pins driven through the sim socket."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from agent.outbox import Outbox
from tests.support import Broker, CentralSide, Processes, SimClient, agent_toml, device, run_cli, wait_until
from wire.messages import AgentState, EventKind

AGENT = "school-9-gate-1"


def _write_config(tmp_path: Path, port: int, *, debounce_ms: int = 20) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(
        tmp_path / "data", port, agent_id=AGENT, mqtt={"resend_s": 2}, gpio={"sim_socket": tmp_path / "sim.sock"},
        devices=(
            device("zone", name="north-fence", pin=17, debounce_ms=debounce_ms, siren="siren"),
            device("button", name="office-panic", pin=27, hold_ms=100, indicator="panic-led"),
            device("output", name="siren", pin=22, max_on_s=180),
            device("output", name="panic-led", pin=23),
        )))
    return path


@pytest.fixture
def central(broker: Broker) -> Iterator[CentralSide]:
    side = CentralSide(broker)
    try:
        yield side
    finally:
        side.close()


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('agent_id = "central"\ndata_dir = "/tmp/x"\n')
    result = run_cli("agent", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr == f"gridpatrol: {path}: agent_id: 'central' is reserved for central\n"


def test_a_panic_pressed_on_the_agent_reaches_the_wire_and_sigterm_is_clean(
    tmp_path: Path, broker: Broker, processes: Processes, central: CentralSide,
) -> None:
    config = _write_config(tmp_path, broker.port)
    proc = processes.gridpatrol("agent", "--config", str(config), log=tmp_path / "agent.log")
    sim = SimClient(tmp_path / "sim.sock")
    try:
        wait_until(lambda: central.births(), timeout=20, message="birth")
        assert sim.drive(27, "low") == "ok"
        wait_until(lambda: any(e.kind is EventKind.PANIC for e in central.events()), message="the panic")
        panic = next(e for e in central.events() if e.kind is EventKind.PANIC)
        assert (panic.eseq, panic.source, panic.replayed, panic.boot_id) == (1, "office-panic", False, central.births()[0].boot_id)
        assert sim.drive(99, "low").startswith("error: ")
    finally:
        sim.close()
    assert Processes.terminate(proc) == 0
    wait_until(lambda: central.statuses()[-1].state is AgentState.DISCONNECTED, message="the goodbye")
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log


def test_the_will_says_offline_with_the_bdseq_when_the_agent_is_killed(
    tmp_path: Path, broker: Broker, processes: Processes, central: CentralSide,
) -> None:
    config = _write_config(tmp_path, broker.port)
    proc = processes.gridpatrol("agent", "--config", str(config), log=tmp_path / "agent.log")
    wait_until(lambda: central.statuses(), timeout=20, message="online")
    online = central.statuses()[-1]
    assert online.state is AgentState.ONLINE
    Processes.kill(proc)
    wait_until(lambda: central.statuses()[-1].state is AgentState.OFFLINE, timeout=20, message="the Will")
    assert central.statuses()[-1].bdseq == online.bdseq
    # The next process takes a higher bdseq, so a late Will of the old one cannot be mistaken for it.
    proc = processes.gridpatrol("agent", "--config", str(config), log=tmp_path / "agent.log")
    wait_until(lambda: central.statuses()[-1].state is AgentState.ONLINE, timeout=20, message="online again")
    assert central.statuses()[-1].bdseq > online.bdseq
    assert Processes.terminate(proc) == 0


@pytest.mark.slow
def test_sigkill_in_a_burst_loses_nothing_committed_and_reuses_no_eseq(
    tmp_path: Path, broker: Broker, processes: Processes, central: CentralSide,
) -> None:
    config = _write_config(tmp_path, broker.port, debounce_ms=0)
    log = tmp_path / "agent.log"
    proc = processes.gridpatrol("agent", "--config", str(config), log=log)
    sim = SimClient(tmp_path / "sim.sock")
    stop = threading.Event()

    def hammer() -> None:
        level = "high"
        while not stop.is_set():
            try:
                sim.drive(17, level)
            except OSError:
                return  # the agent is gone
            level = "low" if level == "high" else "high"

    thread = threading.Thread(target=hammer)
    try:
        wait_until(lambda: central.births(), timeout=20, message="birth")
        thread.start()
        wait_until(lambda: len(central.events()) >= 100, timeout=60, message="a burst under way")
        Processes.kill(proc)  # mid-burst, no goodbye
    finally:
        stop.set()
        thread.join(timeout=10)
        sim.close()
    before = central.events()
    # Restart on the same data directory; central now acks what it holds gap-free.
    births = len(central.births())
    proc = processes.gridpatrol("agent", "--config", str(config), log=log)
    wait_until(lambda: len(central.births()) > births, timeout=20, message="the new process's birth")
    assert central.births()[-1].boot_id != central.births()[0].boot_id

    outbox = tmp_path / "data" / "outbox.db"

    def drained() -> bool:
        held = {e.eseq for e in central.events()}
        top = 0
        while top + 1 in held:
            top += 1
        if top:
            central.ack(top)
        return top > 0 and top == _meta(outbox, "last_eseq") == _meta(outbox, "acked_eseq")

    # Central holds everything the agent ever committed, gap-free, and the agent took the ack.
    wait_until(drained, timeout=60, interval=0.2, message="everything delivered and acked")
    assert Processes.terminate(proc) == 0
    after = central.events()
    by_eseq: dict[int, set[tuple[object, ...]]] = {}
    for e in after:
        by_eseq.setdefault(e.eseq, set()).add(tuple(sorted(e.content().items())))
    # No eseq was ever used for two different events, and nothing published before the kill is missing.
    assert all(len(contents) == 1 for contents in by_eseq.values())
    assert {e.eseq for e in before} <= set(by_eseq)
    assert sorted(by_eseq) == list(range(1, max(by_eseq) + 1))
    with Outbox(tmp_path / "data" / "outbox.db", max_events=100_000) as box:
        assert box.integrity_ok()
        assert box.acked_eseq == max(by_eseq)
        # Only what the clean shutdown itself recorded is left: outputs switched off.
        assert {(e.kind, e.fields["on"]) for e in box.unacked()} <= {(EventKind.OUTPUT, False)}


def _meta(path: Path, key: str) -> int:
    """Read the running agent's outbox from outside, read-only (WAL allows it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
    finally:
        db.close()


def test_sd_notify_ready_watchdog_and_stopping(tmp_path: Path, broker: Broker, processes: Processes) -> None:
    config = _write_config(tmp_path, broker.port)
    address = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(str(address))
        listener.settimeout(20)
        proc = processes.gridpatrol("agent", "--config", str(config), log=tmp_path / "agent.log",
                                    env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"})
        got = [listener.recv(256).decode() for _ in range(3)]
        assert got == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]
        assert Processes.terminate(proc) == 0
        while (msg := listener.recv(256).decode()) == "WATCHDOG=1":
            pass
        assert msg == "STOPPING=1"
    finally:
        listener.close()


def test_the_agent_runs_as_python_m_agent_too(tmp_path: Path) -> None:
    result = subprocess.run([__import__("sys").executable, "-m", "agent", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "--config" in result.stdout
