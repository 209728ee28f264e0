"""A reader's feedback output (agent/feedback.py): the read tick off the network, patterns one after another."""

from __future__ import annotations

import os
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from agent.config import OutputConfig, parse_config
from agent.feedback import READ, VERDICTS, FeedbackSignal
from agent.inputs.readers.rdm6300 import encode_frame
from agent.runtime import Agent
from tests.support import free_port, pin_pulses, wait_until


def test_patterns_play_one_after_another_and_unknown_verdicts_flutter(mock_factory: MockFactory) -> None:
    signal = FeedbackSignal(OutputConfig(name="buzzer", pin=12), pin_factory=mock_factory)
    try:
        pin = mock_factory.pin(12)
        pin.clear_states()
        signal.show(READ)
        signal.show_verdict("out-of-order")
        signal.show_verdict("no-such-verdict")
        wait_until(lambda: signal.played == 3, timeout=5, message="three patterns played")
        lengths = [round(fall - rise, 1) for rise, fall in pin_pulses(pin)]  # type: ignore[operator]
        assert len(lengths) == 1 + 2 + 6
        assert lengths[1:3] == [VERDICTS["out-of-order"][0]] * 2
        assert not pin.state
    finally:
        signal.close()


def test_the_read_tick_needs_no_network(tmp_path: Path, mock_factory: MockFactory) -> None:
    master, slave = os.openpty()
    config = parse_config(f"""
agent_id = "gate-agent"
data_dir = "{tmp_path / 'data'}"

[mqtt]
port = {free_port()}

[[output]]
name = "buzzer"
pin = 12

[[reader]]
name = "gate-1"
port = "{os.ttyname(slave)}"
protocol = "rdm6300"
feedback = "buzzer"
""", source="agent.toml")
    agent = Agent(config, pin_factory=mock_factory).start()
    try:
        wait_until(lambda: agent.snapshot().inputs["gate-1"] == "up", message="the reader's port open")
        pin = mock_factory.pin(12)
        pin.clear_states()
        os.write(master, encode_frame("67003B51C6", clone=True))
        wait_until(lambda: len(pin_pulses(pin)) == 1 and pin_pulses(pin)[0][1] is not None, timeout=2, message="read tick")
        assert pin_pulses(pin)[0][0] < 0.5
        assert "buzzer" not in agent.outputs  # the signal owns its pin: no output events, no output commands
    finally:
        agent.stop()
        os.close(master)
        os.close(slave)
