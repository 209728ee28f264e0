"""A clean shutdown on SIGTERM (issue 6): outputs off, retained ``disconnected``, outbox closed.

A real ``gridpatrol agent`` process with its siren sounding is sent SIGTERM
(what ``systemctl stop`` does). What it leaves behind is read from outside:
the retained status a newcomer to the broker receives, and the outbox file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from agent.outbox import Outbox
from tests.support import Broker, CentralSide, Processes, SimClient, agent_toml, wait_until
from wire.messages import AgentState, AgentStatus, EventKind
from wire.topics import Channel

AGENT = "school-9-gate-1"
ZONE_PIN = 17


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(tmp_path / "data", port, agent_id=AGENT, gpio={"sim_socket": tmp_path / "sim.sock"}))
    return path


@pytest.fixture
def central(broker: Broker) -> Iterator[CentralSide]:
    side = CentralSide(broker, AGENT)
    try:
        yield side
    finally:
        side.close()


def test_sigterm_switches_outputs_off_says_disconnected_and_closes_the_outbox(
        tmp_path: Path, broker: Broker, processes: Processes, central: CentralSide) -> None:
    log = tmp_path / "agent.log"
    proc = processes.gridpatrol("agent", "--config", str(_config(tmp_path, broker.port)), log=log)
    sim = SimClient(tmp_path / "sim.sock")
    try:
        wait_until(lambda: central.births(), timeout=20, message="birth")
        online = central.statuses()[-1]
        assert online.state is AgentState.ONLINE
        assert sim.drive(ZONE_PIN, "high") == "ok"  # the loop is cut: alarm, and the siren sounds
        wait_until(lambda: any(e.kind is EventKind.OUTPUT and e.fields["on"] for e in central.events()),
                   message="the siren on")
    finally:
        sim.close()
    assert Processes.terminate(proc) == 0

    # Whoever connects later (central after a restart, a dashboard) is told it left on purpose.
    newcomer = CentralSide(broker, AGENT, announce=False)
    try:
        wait_until(lambda: newcomer.received(Channel.STATUS), message="the retained status")
        (retained,) = newcomer.received(Channel.STATUS)
        status = AgentStatus.from_payload(retained.payload)
        assert (retained.retain, status.state, status.bdseq) == (True, AgentState.DISCONNECTED, online.bdseq)
    finally:
        newcomer.close()

    # Closed, not abandoned: SQLite removes the write-ahead log when its last connection closes.
    data = tmp_path / "data"
    assert not (data / "outbox.db-wal").exists()
    with Outbox(data / "outbox.db", max_events=1000) as box:
        assert box.integrity_ok()
        sent = {e.eseq for e in central.events()}
        # What only the shutdown recorded: the siren switched off, kept for the next boot to send.
        left = [(e.kind, e.source, dict(e.fields)) for e in box.unacked() if e.eseq not in sent]
    assert left == [(EventKind.OUTPUT, "siren", {"output": "siren", "on": False})]
    text = log.read_text()
    assert "Traceback" not in text and f"agent {AGENT} stopped" in text
