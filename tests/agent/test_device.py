"""Every device of the agent keeps the one shape of agent/device.py."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from agent.config import parse_config
from agent.device import Device, ThreadedDevice
from agent.inputs.readers.sim import SimulatedRdm6300
from agent.runtime import Agent
from firmware_bridge.sim import McuSim
from tests.support import agent_toml, device


def test_every_device_is_a_device_and_every_thread_is_watched(tmp_path: Path, mock_factory: MockFactory) -> None:
    module = SimulatedRdm6300()
    try:
        with McuSim(link=tmp_path / "ttyMCU") as mcu:
            config = parse_config(agent_toml(tmp_path / "data", 1, gpio={"pin_factory": None, "status_led": "status-led"}, devices=(
                device("zone", name="north-fence", pin=17, siren="siren"),
                device("button", name="office-panic", pin=27),
                device("output", name="siren", pin=22, max_on_s=60),
                device("output", name="status-led", pin=24),
                device("reader", name="gate-1", port=module.path, protocol="rdm6300"),
                device("mcu", name="front-end", port=mcu.path),
                device("zone", name="east-wall", mcu="front-end", input=1),
            )))
            agent = Agent(config, pin_factory=mock_factory)
            try:
                kinds = {type(d).__name__ for d in agent.devices}
                assert kinds == {"Output", "Zone", "EmergencyButton", "SerialReader", "McuLink", "_StatusLedTicker"}
                assert all(isinstance(d, Device) for d in agent.devices)
                assert [type(d).__name__ for d in agent.threaded_devices] == ["SerialReader", "McuLink"]
                assert all(isinstance(d, ThreadedDevice) for d in agent.threaded_devices)
                agent.start()
                assert agent.heartbeats.names == ["input loop", "mqtt session", "SerialReader gate-1", "McuLink front-end"]
            finally:
                agent.stop()
    finally:
        module.close()
