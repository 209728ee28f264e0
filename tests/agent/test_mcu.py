"""McuLink against the simulated microcontroller (the real firmware logic) over real ptys."""

from __future__ import annotations

import os
import threading
import time
import tty
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.config import ButtonConfig, McuConfig, OutputConfig, ReaderConfig, ZoneConfig
from agent.inputs.mcu import LINK_TIMEOUT_S, McuLink
from agent.inputs.readers.wiegand import decode_wiegand
from firmware_bridge.firmware.app import App
from firmware_bridge.framing import encode_frame
from firmware_bridge.sim import McuSim, wiegand_frame
from firmware_bridge.simhw import SimHardware
from tests.support import wait_until

MCU = "front-end"
ZONES = [ZoneConfig("north-fence", mcu=MCU, input=0), ZoneConfig("east-wall", mcu=MCU, input=1)]
BUTTONS = [ButtonConfig("office-panic", mcu=MCU, input=0, hold_ms=300)]
READERS = [ReaderConfig("gate-1", "wiegand", mcu=MCU, input=0), ReaderConfig("desk", "wiegand", mcu=MCU, input=1)]
OUTPUTS = [OutputConfig("siren", mcu=MCU, output=0, max_on_s=1.0), OutputConfig("strobe", mcu=MCU, output=1)]


def pause(seconds: float) -> None:
    """Time that the scenario itself needs to pass (a card left away), not a wait for a result."""
    time.sleep(seconds)


class Agent:
    """McuLink driven the way the agent's input loop drives it: its own thread, woken, ticked."""

    def __init__(self, port: str, **kw: Any) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.output_changes: list[tuple[str, bool]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.link = McuLink(
            McuConfig(MCU, port), zones=ZONES, buttons=BUTTONS, readers=READERS, outputs=OUTPUTS,
            emit=self._emit, wake=self._wake.set, **kw,
        )
        for output in self.link.outputs.values():
            output.when_changed = self._changed
        self._thread = threading.Thread(target=self._loop, name="test-input-loop")

    def _emit(self, kind: Any, source: str, /, **fields: Any) -> None:
        with self.lock:
            self.events.append((str(kind), source, fields))

    def _changed(self, name: str, on: bool) -> None:
        with self.lock:
            self.output_changes.append((name, on))

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            deadline = self.link.tick(now)
            timeout = 0.05 if deadline is None else min(0.05, max(0.0, deadline - now))
            self._wake.wait(timeout)
            self._wake.clear()

    def start(self) -> Agent:
        self.link.start()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.link.close()

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            events, self.events = self.events, []
        return events

    def wait_events(self, count: int, timeout: float = 10.0) -> list[tuple[str, str, dict[str, Any]]]:
        wait_until(lambda: len(self.events) >= count, timeout=timeout, message=f"{count} events, have {self.events}")
        return self.take()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[McuSim]:
    with McuSim(link=tmp_path / "ttyMCU") as s:
        yield s


@pytest.fixture
def agent(sim: McuSim) -> Iterator[Agent]:
    a = Agent(sim.path, reopen_s=0.1).start()
    try:
        wait_until(lambda: a.link.state == "up" and "unknown" not in a.link.inputs_state().values())
        yield a
    finally:
        a.close()


def test_starts_with_the_states_the_sync_brings_and_no_events(sim: McuSim, agent: Agent) -> None:
    assert agent.link.inputs_state() == {"north-fence": "normal", "east-wall": "normal", "office-panic": "idle"}
    assert agent.link.name == MCU
    assert agent.link.mcu_hello == {"t": "hello", "fw": "gridpatrol-pico/1.0.0", "proto": 1, "caps": ["zone:4", "button:2", "wiegand:2", "tag:2", "out:2"]}
    assert len(sim.received("sync")) >= 1
    assert agent.take() == []


def test_loop_states_give_alarm_tamper_and_restore(sim: McuSim, agent: Agent) -> None:
    sim.set_zone(1, "tamper-cut")
    assert agent.wait_events(1) == [("tamper", "east-wall", {"state": "tamper-cut"})]
    assert agent.link.inputs_state()["east-wall"] == "tamper-cut"
    sim.set_zone(1, "normal")
    assert agent.wait_events(1) == [("restore", "east-wall", {})]
    sim.set_zone(0, "alarm")
    assert agent.wait_events(1) == [("alarm", "north-fence", {})]
    sim.set_zone(0, "tamper-short")
    assert agent.wait_events(1) == [("tamper", "north-fence", {"state": "tamper-short"})]
    sim.set_zone(0, "normal")
    assert agent.wait_events(1) == [("restore", "north-fence", {})]
    assert agent.link.inputs_state() == {"north-fence": "normal", "east-wall": "normal", "office-panic": "idle"}


def test_a_wiegand_card_gives_one_scan_per_presentation(sim: McuSim, agent: Agent) -> None:
    sim.wiegand_card(0, 26, 123, 45678)
    sim.wiegand_card(0, 26, 123, 45678)  # some readers repeat a frame 2 or 3 times
    assert agent.wait_events(1) == [("scan", "gate-1", {"tag": "7BB26E", "fmt": "wiegand26"})]
    wait_until(lambda: len(sim.sent("wiegand")) == 2)
    pause(1.2)  # the card is taken away
    sim.wiegand_card(0, 26, 123, 45678)
    assert agent.wait_events(1) == [("scan", "gate-1", {"tag": "7BB26E", "fmt": "wiegand26"})]
    sim.wiegand_card(1, 34, 0x1234, 0x5678)
    assert agent.wait_events(1) == [("scan", "desk", {"tag": "12345678", "fmt": "wiegand34"})]
    assert decode_wiegand(34, wiegand_frame(34, 0x1234, 0x5678)) == "12345678"


def test_a_wiegand_frame_with_bad_parity_is_counted_and_dropped(sim: McuSim, agent: Agent) -> None:
    sim.wiegand(0, 26, wiegand_frame(26, 123, 45678) ^ 1)  # trailing parity bit flipped
    sim.wiegand(0, 30, 0x1234)  # a format we do not read
    wait_until(lambda: agent.link.counters["bad_wiegand_parity"] == 1 and agent.link.counters["bad_wiegand_length"] == 1)
    sim.wiegand_card(0, 26, 1, 2)
    assert agent.wait_events(1) == [("scan", "gate-1", {"tag": "010002", "fmt": "wiegand26"})]


def test_a_card_lying_on_a_tag_reader_is_one_scan(sim: McuSim, agent: Agent) -> None:
    sim.tap(1, b"\x04\xa1\xb2\xc3", seconds=1.6)  # reported again every 0.5 s while it lies there
    assert agent.wait_events(1) == [("scan", "desk", {"tag": "04A1B2C3", "fmt": "iso14443a"})]
    wait_until(lambda: len(sim.sent("tag")) >= 3)
    assert agent.take() == []


def test_a_held_button_gives_one_panic_and_a_brush_none(sim: McuSim, agent: Agent) -> None:
    sim.hold(0, 0.1)
    wait_until(lambda: [f["state"] for f in sim.sent("button") if f["input"] == 0][-2:] == ["pressed", "released"])
    sim.hold(0, 1.0)
    assert agent.wait_events(1) == [("panic", "office-panic", {})]
    button = agent.link.buttons[0]
    assert agent.link.inputs_state()["office-panic"] == "latched"
    wait_until(lambda: not sim.hw.buttons[0])
    assert agent.take() == []
    assert button.acknowledge()
    wait_until(lambda: agent.link.inputs_state()["office-panic"] == "idle")


def test_outputs_carry_their_own_timeout_and_the_pi_switches_off_too(sim: McuSim, agent: Agent) -> None:
    siren = agent.link.outputs["siren"]
    siren.on()
    wait_until(lambda: sim.outputs[0])
    [frame] = [f for f in sim.received("out") if f["on"]]
    assert {k: v for k, v in frame.items() if k != "n"} == {"t": "out", "output": 0, "on": True, "ms": 1000}
    wait_until(lambda: not siren.is_on and not sim.outputs[0], timeout=3)
    assert agent.output_changes == [("siren", True), ("siren", False)]
    assert {k: v for k, v in sim.received("out")[-1].items() if k != "n"} == {"t": "out", "output": 0, "on": False, "ms": 0}
    agent.link.outputs["strobe"].on()
    wait_until(lambda: sim.outputs[1])
    assert {k: v for k, v in sim.received("out")[-1].items() if k != "n"} == {"t": "out", "output": 1, "on": True, "ms": 0}


def test_the_mcu_switches_off_by_itself_when_the_pi_is_gone(sim: McuSim, agent: Agent) -> None:
    agent.link.outputs["siren"].on(seconds=0.5)
    wait_until(lambda: sim.outputs[0])
    sim.dropout(5)  # from now on nothing the Pi says arrives
    wait_until(lambda: not sim.outputs[0], timeout=3)  # well inside the dropout
    last = sim.received("out")[-1]
    assert {k: v for k, v in last.items() if k != "n"} == {"t": "out", "output": 0, "on": True, "ms": 500}


@pytest.mark.slow
def test_link_lost_marks_inputs_unknown_and_link_back_syncs_afresh(sim: McuSim, agent: Agent) -> None:
    syncs = len(sim.received("sync"))
    sim.dropout(LINK_TIMEOUT_S + 1.5)
    assert agent.wait_events(1) == [("fault", MCU, {"code": "link-lost", "detail": "no frame from mcu front-end for 3 s"})]
    assert agent.link.state == "down"
    assert agent.link.inputs_state() == {"north-fence": "unknown", "east-wall": "unknown", "office-panic": "unknown"}
    sim.set_zone(1, "alarm")  # happens while the Pi cannot hear
    events = agent.wait_events(2)
    assert events == [
        ("fault", MCU, {"code": "link-back", "detail": "mcu front-end answers again"}),
        ("alarm", "east-wall", {}),  # learnt from the answer to the fresh sync
    ]
    assert len(sim.received("sync")) == syncs + 1
    assert agent.link.state == "up"
    wait_until(lambda: agent.link.inputs_state() == {"north-fence": "normal", "east-wall": "alarm", "office-panic": "idle"})


def test_port_unplugged_and_back_gives_port_faults_hello_and_sync(sim: McuSim, agent: Agent) -> None:
    syncs = len(sim.received("sync"))
    sim.unplug(0.5)
    events = agent.wait_events(1)
    assert events[0][:2] == ("fault", MCU)
    assert events[0][2]["code"] == "port-lost"
    assert events[0][2]["detail"].startswith(f"{sim.path}: ")
    assert agent.link.inputs_state()["east-wall"] == "unknown"
    assert agent.wait_events(1) == [("fault", MCU, {"code": "port-back", "detail": f"{sim.path} open"})]
    wait_until(lambda: len(sim.received("sync")) > syncs)
    wait_until(lambda: agent.link.inputs_state()["east-wall"] == "normal")
    assert [{k: v for k, v in f.items() if k not in ("n", "fw")} for f in sim.received("hello")][-1] == {"t": "hello", "proto": 1, "caps": []}
    assert agent.take() == []


def test_a_rebooted_mcu_is_synced_and_told_its_outputs_again(sim: McuSim, agent: Agent) -> None:
    agent.link.outputs["strobe"].on()
    wait_until(lambda: sim.outputs[1])
    syncs = len(sim.received("sync"))
    sim.reboot()  # outputs drop; an unprompted hello
    wait_until(lambda: len(sim.received("sync")) > syncs)
    wait_until(lambda: sim.outputs[1])
    assert agent.take() == []


def test_a_port_missing_at_start_is_a_fault_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "ttyLATE"
    agent = Agent(str(path), reopen_s=0.05).start()
    try:
        events = agent.wait_events(1)
        assert events[0][2]["code"] == "port-lost"
        assert events[0][2]["detail"].startswith(f"cannot open {path}: ")
        with McuSim(link=path):
            assert agent.wait_events(1) == [("fault", MCU, {"code": "port-back", "detail": f"{path} open"})]
            wait_until(lambda: agent.link.inputs_state()["north-fence"] == "normal")
    finally:
        agent.close()


@pytest.mark.slow
def test_a_port_with_nobody_behind_it_is_link_lost(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    agent = Agent(os.ttyname(slave)).start()
    try:
        events = agent.wait_events(1, timeout=LINK_TIMEOUT_S + 3)
        assert events == [("fault", MCU, {"code": "link-lost", "detail": "no frame from mcu front-end for 3 s"})]
        assert agent.link.state == "down"
    finally:
        agent.close()
        os.close(master)
        os.close(slave)


def test_the_firmware_app_on_stand_in_hardware_against_mcu_link(tmp_path: Path) -> None:
    """Not through McuSim: the firmware's App, SimHardware and a pty wired by hand."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)

    class PtyUart:
        def read(self) -> bytes | None:
            try:
                return os.read(master, 4096) or None
            except BlockingIOError:
                return None

        def write(self, data: bytes) -> None:
            os.write(master, data)

        def wait(self, seconds: float) -> None:
            time.sleep(seconds)

    hw = SimHardware(PtyUart(), zones=2, buttons=1, wiegand=1, tags=0, outputs=2)
    board = App(hw)
    stop = threading.Event()

    def firmware() -> None:
        while not stop.is_set():
            board.step()
            hw.idle(2)

    thread = threading.Thread(target=firmware, name="firmware")
    thread.start()
    agent = Agent(os.ttyname(slave)).start()
    try:
        wait_until(lambda: agent.link.state == "up" and agent.link.inputs_state()["east-wall"] == "normal")
        hw.set_zone(1, "tamper-short")
        assert agent.wait_events(1) == [("tamper", "east-wall", {"state": "tamper-short"})]
        hw.pulse_wiegand(0, 26, wiegand_frame(26, 7, 1234))
        assert agent.wait_events(1) == [("scan", "gate-1", {"tag": "0704D2", "fmt": "wiegand26"})]
        agent.link.outputs["siren"].on()
        wait_until(lambda: hw.outputs == [True, False])
        assert board.stats["syncs"] >= 1
    finally:
        agent.close()
        stop.set()
        thread.join(timeout=5)
        os.close(master)
        os.close(slave)


def test_hostile_frames_from_the_board_are_counted_and_dropped() -> None:
    """A board (or a line) saying nonsense in well-formed frames: counted, dropped, no event."""
    master, slave = os.openpty()
    tty.setraw(slave)
    agent = Agent(os.ttyname(slave)).start()
    frames = [
        {"t": "hello", "n": 0, "fw": "evil", "proto": 99, "caps": "x"},
        {"t": "zone", "n": 1, "input": 1, "state": "ajar"},
        {"t": "zone", "n": 2, "input": "1", "state": "alarm"},
        {"t": "zone", "n": 3, "input": 7, "state": "alarm"},
        {"t": "button", "n": 4, "input": 0, "state": True},
        {"t": "wiegand", "n": 5, "input": 0, "bits": 26, "data": "7BB26E"},
        {"t": "wiegand", "n": 6, "input": 0, "bits": True, "data": 1},
        {"t": "wiegand", "n": 7, "input": -1, "bits": 26, "data": 1},
        {"t": "tag", "n": 8, "input": 1, "uid": "04A1B2C3"},
        {"t": "tag", "n": 9, "input": 1, "uid": b"\x01" * 11},
        {"t": "selfdestruct", "n": 10},
        {"t": "zone", "n": 11, "input": 1, "state": "tamper-cut"},  # and a sound one after them
    ]
    try:
        # Opening flushes what was waiting on the port: write only once it is open.
        wait_until(lambda: agent.link.counters["port_opens"] == 1)
        os.write(master, b"".join(encode_frame(f) for f in frames))
        assert agent.wait_events(1) == [("tamper", "east-wall", {"state": "tamper-cut"})]
        counters = agent.link.counters
        assert (counters["bad_field"], counters["unknown_input"], counters["unknown_type"]) == (8, 1, 1)
        assert agent.link.mcu_hello == {"t": "hello", "fw": "evil", "proto": 99, "caps": "x"}
    finally:
        agent.close()
        os.close(master)
        os.close(slave)
