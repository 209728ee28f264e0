"""The answer at the checkpoint, end to end: an RDM6300 on a real pty, the agent in this
process on gpiozero's mock pins, a real central process on a real Mosquitto.

The feedback output's mock pin keeps every change (``MockPin.states``: time since
the change before, new state); the pulses are read back from it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import parse_config
from agent.feedback import READ, VERDICTS
from agent.inputs.readers.rdm6300 import encode_frame
from agent.runtime import Agent
from tests.e2e.site import central_toml
from tests.support import Broker, Processes, all_day_plan, pin_pulses, run_cli, wait_until

AGENT = "school-9-gate-1"
LIN = "67003B51C6"
STRANGER = "DEADBEEF01"
BUZZER_PIN = 12



@pytest.fixture
def central(tmp_path: Path, broker: Broker, processes: Processes) -> Iterator[Path]:
    d = tmp_path / "central"
    d.mkdir()
    conf = d / "central.toml"
    conf.write_text(central_toml(d, broker.port))
    yesterday = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)
    plan = tmp_path / "plan.toml"
    plan.write_text(all_day_plan(effective=yesterday.isoformat(), agent=AGENT, card=LIN, readers=["gate-1"]))
    done = run_cli("plan", "import", str(plan), "--config", str(conf))
    assert done.returncode == 0, done.stderr
    proc = processes.gridpatrol("central", "--config", str(conf), log=tmp_path / "central.log")
    wait_until(lambda: (d / "central.db").exists() or proc.poll() is not None, timeout=15, message="central store")
    assert proc.poll() is None, (tmp_path / "central.log").read_text()
    yield conf


def test_the_verdict_pattern_reaches_the_feedback_output_within_a_second(
    tmp_path: Path, broker: Broker, central: Path, mock_factory: MockFactory,
) -> None:
    master, slave = os.openpty()
    config = parse_config(f"""
agent_id = "{AGENT}"
data_dir = "{tmp_path / 'agent'}"

[mqtt]
port = {broker.port}
keepalive_s = 5

[[output]]
name = "gate-1-buzzer"
pin = {BUZZER_PIN}

[[reader]]
name = "gate-1"
port = "{os.ttyname(slave)}"
protocol = "rdm6300"
feedback = "gate-1-buzzer"
""", source="agent.toml")
    agent = Agent(config, pin_factory=mock_factory).start()
    try:
        wait_until(lambda: agent.session.central_online and agent.snapshot().inputs["gate-1"] == "up",
                   timeout=20, message="central online and the reader's port open")
        pin = mock_factory.pin(BUZZER_PIN)
        cases = [(LIN, VERDICTS["counted"]), (STRANGER, VERDICTS["unknown-card"])]
        for tag, (on_s, _, n) in cases:
            pin.clear_states()
            os.write(master, encode_frame(tag, clone=True))  # a clone frame: binary checksum
            wait_until(lambda n=n: len(pin_pulses(pin)) == 1 + n and pin_pulses(pin)[-1][1] is not None,  # type: ignore[misc]
                       timeout=10, message=f"read tick and verdict for {tag}: {pin_pulses(pin)}")
            (read_rise, read_fall), *verdict = pin_pulses(pin)
            assert read_fall - read_rise < READ[0] + 0.1  # type: ignore[operator]  # the short read tick
            assert verdict[0][0] < 1.0, f"verdict began {verdict[0][0]:.3f} s after the frame"
            for rise, fall in verdict:
                assert on_s - 0.02 <= fall - rise < on_s + 0.2, (tag, verdict)  # type: ignore[operator]
            time.sleep(0.3)  # the pause after a pattern: nothing more is played
            assert len(pin_pulses(pin)) == 1 + n
    finally:
        agent.stop()
        os.close(master)
        os.close(slave)
