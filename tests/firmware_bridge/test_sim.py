"""The simulator on a real pty against the Pi's SerialLink; its script; its command line."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from firmware_bridge.framing import hello_body
from firmware_bridge.link import SerialLink
from firmware_bridge.script import ScriptError, Step, check_script, load_script, parse_script
from firmware_bridge.sim import McuSim, wiegand_frame
from tests.support import wait_until


class Pi:
    """A SerialLink with its frames and port changes recorded."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.frames: list[dict[str, Any]] = []
        self.ports: list[bool] = []
        self.link = SerialLink(path, hello=hello_body("test-pi/1", []), on_frame=self._frame, on_port=self._port, reopen_s=0.1)

    def _frame(self, body: dict[str, Any], at: float) -> None:
        with self.lock:
            self.frames.append(body)

    def _port(self, is_open: bool, detail: str) -> None:
        with self.lock:
            self.ports.append(is_open)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{k: v for k, v in f.items() if k != "n"} for f in self.frames if f["t"] == kind]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[McuSim]:
    with McuSim(link=tmp_path / "ttyMCU") as s:
        yield s


@pytest.fixture
def pi(sim: McuSim) -> Iterator[Pi]:
    p = Pi(sim.path)
    p.link.start()
    try:
        # Settled: the boot hello and the first input reports are in.
        wait_until(lambda: p.of("hello") and len(p.of("zone")) == 4)
        yield p
    finally:
        p.link.close()


def test_a_frame_lost_on_the_way_to_the_pi_is_resent_and_delivered_once(sim: McuSim, pi: Pi) -> None:
    sim.drop("tx", 1, "zone")
    sim.set_zone(2, "alarm")
    wait_until(lambda: {"t": "zone", "input": 2, "state": "alarm"} in pi.of("zone"))
    assert sim.counters["tx_dropped"] == 1
    assert sim.counters["retransmits"] >= 1
    wait_until(lambda: not sim.app.link.busy)  # acked: no copy of it can come any more
    assert pi.of("zone").count({"t": "zone", "input": 2, "state": "alarm"}) == 1


def test_a_lost_ack_makes_a_repeat_the_pi_acks_but_does_not_deliver_twice(sim: McuSim, pi: Pi) -> None:
    duplicates = pi.link.counters["duplicates"]
    sim.drop("rx", 1, "ack")
    sim.wiegand_card(1, 34, 4660, 22136)
    wait_until(lambda: pi.link.counters["duplicates"] == duplicates + 1)
    assert pi.of("wiegand") == [{"t": "wiegand", "input": 1, "bits": 34, "data": wiegand_frame(34, 4660, 22136)}]
    wait_until(lambda: not sim.app.link.busy)


def test_a_frame_from_the_pi_lost_on_the_way_is_resent_and_acted_on_once(sim: McuSim, pi: Pi) -> None:
    sim.drop("rx", 1, "out")
    pi.link.send({"t": "out", "output": 0, "on": True, "ms": 0})
    wait_until(lambda: sim.outputs == [True, False])
    assert pi.link.counters["retransmits"] >= 1
    assert [{k: v for k, v in f.items() if k != "n"} for f in sim.received("out")] == [{"t": "out", "output": 0, "on": True, "ms": 0}]


def test_noise_costs_nothing_but_a_count(sim: McuSim, pi: Pi) -> None:
    sim.noise(b"\x07\x07\x07\x00" + bytes(range(1, 255)) + b"\x00")
    sim.set_zone(0, "tamper-short")
    wait_until(lambda: {"t": "zone", "input": 0, "state": "tamper-short"} in pi.of("zone"))
    counters = pi.link.counters
    assert counters["cobs_errors"] + counters["crc_errors"] + counters["body_errors"] == 2


def test_unplug_and_replug_keep_the_link_path(sim: McuSim, pi: Pi) -> None:
    sim.unplug(0.3)
    wait_until(lambda: pi.ports[-2:] == [False, True], message="port lost and back")
    assert sim.path == str(Path(sim.link))
    assert os.path.realpath(sim.path) == sim.pty_path
    wait_until(lambda: len(pi.of("hello")) >= 2)  # the answer to the Pi's hello on reopening
    assert os.path.exists(sim.pty_path)
    assert sim.boots == 1  # the board itself ran on: only the cable was out


def test_reboot_says_hello_unprompted_and_drops_the_outputs(sim: McuSim, pi: Pi) -> None:
    pi.link.send({"t": "out", "output": 1, "on": True, "ms": 0})
    wait_until(lambda: sim.outputs == [False, True])
    hellos = len(pi.of("hello"))
    sim.reboot()
    assert sim.outputs == [False, False]
    wait_until(lambda: len(pi.of("hello")) == hellos + 1)
    assert sim.boots == 2


def test_dropout_silences_both_ways_then_the_firmware_goes_on(sim: McuSim, pi: Pi) -> None:
    beats = len(pi.of("hb"))
    sim.dropout(1.5)
    pi.link.send({"t": "out", "output": 0, "on": True, "ms": 0})
    started = time.monotonic()
    wait_until(lambda: len(pi.of("hb")) > beats, timeout=5)
    assert time.monotonic() - started >= 1.0  # no heartbeat got through the dropout
    wait_until(lambda: pi.link.counters["gave_up"] == 1)  # the out frame found nobody listening
    assert sim.outputs == [False, False]


def test_wiegand_frames_have_their_parity_bits_right() -> None:
    data = wiegand_frame(26, 123, 45678)
    payload = (data >> 1) & 0xFFFFFF
    assert payload == 0x7BB26E
    assert (bin(data >> 13).count("1")) % 2 == 0  # bits 1..13: even
    assert (bin(data & 0x1FFF).count("1")) % 2 == 1  # bits 14..26: odd
    data34 = wiegand_frame(34, 0xFFFF, 0)
    assert (data34 >> 1) & 0xFFFFFFFF == 0xFFFF0000
    assert bin(data34 >> 17).count("1") % 2 == 0
    assert bin(data34 & 0x1FFFF).count("1") % 2 == 1
    with pytest.raises(ValueError) as info:
        wiegand_frame(26, 256, 1)
    assert str(info.value) == "facility 256 / card 1 do not fit a 26-bit frame"


# -- scripts ---------------------------------------------------------------------


def test_script_lines() -> None:
    script = parse_script(
        "link /tmp/x  # a symlink\n"
        "\n"
        "at 1.5 zone 1 alarm\n"
        "after 0.5 zone 1 normal\n"
        "at 3 button 0 hold 2\n"
        "at 3 tap 1 04a1b2c3\n"
        "at 4 wiegand 0 26 123 45678\n"
        "at 4 wiegand-raw 0 26 0x1\n"
        "at 5 dropout 2\n"
        "at 8 noise hex 00ff\n"
        "at 8 drop tx 2 zone\n"
        "repeat\n",
        source="demo.txt",
    )
    assert script.link == "/tmp/x"
    assert script.repeat
    assert script.length_s == 8
    assert script.steps[:4] == (
        Step(1.5, "zone", (1, "alarm"), 3),
        Step(2.0, "zone", (1, "normal"), 4),
        Step(3.0, "button", (0, "hold", 2.0), 5),
        Step(3.0, "tap", (1, b"\x04\xa1\xb2\xc3", 0.3), 6),
    )
    assert script.steps[4].args == (0, 26, wiegand_frame(26, 123, 45678))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("at 1 zone 1 open\n", "s.txt:1: zone state 'open' is not one of normal, alarm, tamper-short, tamper-cut"),
        ("at -1 reboot\n", "s.txt:1: '-1' is not a usable number of seconds"),
        ("at 2 reboot\nat 1 reboot\n", "s.txt:2: at 1 s is before the line before (2 s)"),
        ("wait 2\n", "s.txt:1: expected 'at SECONDS COMMAND ...', 'after SECONDS COMMAND ...', 'link PATH' or 'repeat', not 'wait 2'"),
        ("at 1 explode\n", "s.txt:1: unknown command 'explode'"),
        ("at 1 tap 0 zz\n", "s.txt:1: uid 'zz' is not hex bytes"),
        ("at 1 wiegand 0 30 1 1\n", "s.txt:1: wiegand frames have 26 or 34 bits, not 30"),
        ("at 1 adc 0 70000\n", "s.txt:1: ADC value 70000 is above 65535"),
        ("at 1 reboot\nrepeat\nat 2 reboot\n", "s.txt:3: nothing may follow 'repeat'"),
        ("at 1 reboot\nlink /x\n", "s.txt:2: 'link PATH' comes once, before the first step"),
        ("at 0 reboot\nrepeat\n", "s.txt: 'repeat' needs a script that lasts longer than 0 s"),
        ("at 1 button 0 wiggle\n", "s.txt:1: 'button' takes INPUT press|release, or INPUT hold SECONDS"),
    ],
)
def test_script_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(text, source="s.txt")
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_script_inputs_are_checked_against_the_board(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("at 1 zone 3 alarm\nat 2 wiegand 2 26 1 1\n")
    script = load_script(path)
    with pytest.raises(ScriptError) as info:
        check_script(script, McuSim(zones=4, wiegand=2))
    assert str(info.value) == f"{path}:2: wiegand reader 2 does not exist (the simulator has 2)"


def test_unreadable_script(tmp_path: Path) -> None:
    with pytest.raises(ScriptError) as info:
        load_script(tmp_path / "missing.txt")
    assert str(info.value).startswith(f"{tmp_path / 'missing.txt'}: cannot read: ")


# -- the command line ------------------------------------------------------------------


def _first_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, "no path printed"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            assert chunk, f"mcu-sim exited with {proc.wait(5)} before printing a path"
            line += chunk
    return line.decode().strip()


def test_command_prints_the_path_and_plays_its_script(tmp_path: Path) -> None:
    script = tmp_path / "loop.txt"
    script.write_text("at 0.3 zone 1 alarm\nafter 0.3 zone 1 normal\nrepeat\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridpatrol.cli", "mcu-sim", "--script", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    pi = None
    try:
        path = _first_line(proc)
        assert path.startswith("/dev/pts/")
        pi = Pi(path)
        pi.link.start()
        # The script repeats: an alarm and a restore come round every 0.6 s.
        wait_until(lambda: pi.of("zone").count({"t": "zone", "input": 1, "state": "alarm"}) >= 2)
        assert {"t": "zone", "input": 1, "state": "normal"} in pi.of("zone")
    finally:
        if pi is not None:
            pi.link.close()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        proc.stdout.close()


def test_command_with_a_bad_script_exits_2_naming_the_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.txt"
    script.write_text("at 1 zone 1 alarm\nat 2 zone 1 ajar\n")
    done = subprocess.run(
        [sys.executable, "-m", "gridpatrol.cli", "mcu-sim", "--script", str(script)],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"gridpatrol: {script}:2: zone state 'ajar' is not one of normal, alarm, tamper-short, tamper-cut\n"
