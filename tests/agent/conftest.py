"""Helpers and fixtures of the agent's tests: the test as central, and a session over a real outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.config import MqttConfig
from agent.memory import Memory
from agent.outbox import Outbox
from agent.session import Session
from tests.support import AGENT_ID as AGENT
from tests.support import Broker, CentralSide
from tests.support import wait_until as _support_wait_until
from wire.messages import Birth, Command, Event, EventKind, StateSnapshot, Telemetry


def wait_until(predicate, *, timeout: float = 30.0, **kw):  # type: ignore[no-untyped-def]
    """A generous deadline: the session's reconnect backoff grows to seconds, and a loaded CI machine is slow."""
    return _support_wait_until(predicate, timeout=timeout, **kw)


STAMP = dict(ts=1_700_000_000_000, mono_ms=5_000, clock_synced=False, boot_id="b00t1d")


@pytest.fixture
def central(broker: Broker) -> Iterator[CentralSide]:
    side = CentralSide(broker)
    try:
        yield side
    finally:
        side.close()


class Harness:
    """A session over a real outbox, with what the runtime would give it."""

    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.outbox = Outbox(tmp_path / "outbox.db", max_events=10_000)
        self.memory = Memory(tmp_path / "memory.db")
        self.inputs = {"north-fence": "normal"}
        self.commands: list[Command] = []
        self.command_error: str | None = None
        self.sessions: list[Session] = []

    def session(self, *, resend_s: float = 60.0, tele_interval_s: float = 60.0) -> Session:
        config = MqttConfig(host=self.broker.host, port=self.broker.port, keepalive_s=5, resend_s=resend_s)
        s = Session(
            agent_id=AGENT, mqtt_config=config, outbox=self.outbox,
            birth=lambda bdseq: Birth(bdseq=bdseq, boot_id="b00t1d", fw="0.1.0",
                                      inventory={"zones": ({"name": "north-fence"},)}, epoch=self.outbox.epoch),
            snapshot=lambda: StateSnapshot(ts=1, inputs=dict(self.inputs), outputs={"siren": False}),
            on_command=self._on_command,
            telemetry=lambda: Telemetry(uptime_s=1.0, outbox_depth=self.outbox.depth, reconnects=0,
                                        clock_synced=False, ts=1, mono_ms=1),
            memory=self.memory, tele_interval_s=tele_interval_s, reconnect_min_s=0.1, reconnect_max_s=0.5,
        )
        self.sessions.append(s)
        return s

    def _on_command(self, command: Command) -> str | None:
        self.commands.append(command)
        return self.command_error

    def append(self, kind: EventKind = EventKind.ALARM, source: str = "north-fence", **fields: Any) -> Event:
        event = self.outbox.append(kind, source, fields, **STAMP)  # type: ignore[arg-type]
        assert event is not None
        for s in self.sessions:
            s.wake()
        return event

    def close(self) -> None:
        for s in self.sessions:
            s.stop()
        self.outbox.close()
        self.memory.close()


@pytest.fixture
def harness(tmp_path: Path, broker: Broker) -> Iterator[Harness]:
    h = Harness(tmp_path, broker)
    try:
        yield h
    finally:
        h.close()
