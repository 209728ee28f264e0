"""The firmware's logic on the CPython stand-in hardware, with a clock the test turns."""

from __future__ import annotations

import pytest

from firmware_bridge.firmware import app as firmware
from firmware_bridge.firmware import framing
from firmware_bridge.simhw import ZONE_ADC, SimHardware


class MemoryUart:
    def __init__(self) -> None:
        self.inbox = bytearray()
        self.outbox = bytearray()

    def read(self) -> bytes | None:
        data, self.inbox = bytes(self.inbox), bytearray()
        return data or None

    def write(self, data: bytes) -> None:
        self.outbox += data

    def wait(self, seconds: float) -> None:
        pass


class Bench:
    """The firmware on a bench: its UART wired to a Pi-side endpoint, time stepped by hand."""

    def __init__(self, **counts: int) -> None:
        self.ms = 10_000
        self.uart = MemoryUart()
        self.hw = SimHardware(self.uart, clock=lambda: self.ms / 1000, **counts)
        self.board = firmware.App(self.hw)
        self.pi = framing.Endpoint()
        self.got: list[dict] = []

    def run(self, ms: int, step: int = 5) -> None:
        for _ in range(ms // step):
            self.ms += step
            self.board.step()
            self.got.extend(self.pi.receive(bytes(self.uart.outbox), self.ms))
            self.uart.outbox.clear()
            self.pi.poll(self.ms)
            self.uart.inbox += self.pi.take_output()

    def take(self, *skip: str) -> list[dict]:
        got = [{k: v for k, v in f.items() if k != "n"} for f in self.got if f["t"] not in skip]
        self.got.clear()
        return got


@pytest.mark.parametrize(
    ("reading", "state"),
    [
        (0, "tamper-short"),
        (firmware.SHORT_BELOW - 1, "tamper-short"),
        (firmware.SHORT_BELOW, "normal"),
        (ZONE_ADC["normal"], "normal"),
        (firmware.NORMAL_BELOW, "alarm"),
        (ZONE_ADC["alarm"], "alarm"),
        (firmware.ALARM_BELOW, "tamper-cut"),
        (65535, "tamper-cut"),
    ],
)
def test_adc_bands(reading: int, state: str) -> None:
    assert firmware.classify(reading) == state


def test_the_circuit_values_sit_mid_band_with_room_for_5_percent_resistors() -> None:
    def reading(loop_ohm: float, pull_up_ohm: float = 4700) -> int:
        return round(65535 * loop_ohm / (pull_up_ohm + loop_ohm))

    for low, high in ((0.95, 1.05), (1.05, 0.95)):  # loop resistors off one way, the pull-up the other
        assert firmware.classify(reading(4700 * low, 4700 * high)) == "normal"
        assert firmware.classify(reading(9400 * low, 4700 * high)) == "alarm"


def test_boot_says_hello_then_reports_inputs_once_settled() -> None:
    bench = Bench(zones=2, buttons=1, wiegand=1, tags=1, outputs=2)
    bench.run(100)
    assert bench.take() == [
        {"t": "hello", "fw": firmware.FW_VERSION, "proto": 1, "caps": ["zone:2", "button:1", "wiegand:1", "tag:1", "out:2"]},
        {"t": "button", "input": 0, "state": "released"},
        {"t": "zone", "input": 0, "state": "normal"},
        {"t": "zone", "input": 1, "state": "normal"},
    ]
    bench.run(1000)
    assert bench.take() == [{"t": "hb", "uptime_ms": 1000}]


def test_answers_hello_with_hello_and_sync_with_every_input() -> None:
    bench = Bench(zones=2, buttons=2, wiegand=0, tags=0, outputs=0)
    bench.run(100)
    bench.take()
    bench.hw.set_zone(0, "tamper-short")
    bench.hw.buttons[1] = True
    bench.run(100)
    bench.take()
    bench.pi.send(framing.hello_body("pi", []))
    bench.pi.send({"t": "sync"})
    bench.run(100)
    assert bench.take() == [
        {"t": "hello", "fw": firmware.FW_VERSION, "proto": 1, "caps": ["zone:2", "button:2"]},
        {"t": "zone", "input": 0, "state": "tamper-short"},
        {"t": "zone", "input": 1, "state": "normal"},
        {"t": "button", "input": 0, "state": "released"},
        {"t": "button", "input": 1, "state": "pressed"},
    ]
    assert bench.board.stats["syncs"] == 1


def test_a_bounce_shorter_than_the_debounce_is_not_reported() -> None:
    bench = Bench(zones=1, buttons=0, wiegand=0, tags=0, outputs=0)
    bench.run(100)
    bench.take()
    bench.hw.set_zone(0, "alarm")
    bench.run(30)
    bench.hw.set_zone(0, "normal")
    bench.run(200)
    assert bench.take("hb") == []
    bench.hw.set_zone(0, "alarm")
    bench.run(100)
    assert bench.take("hb") == [{"t": "zone", "input": 0, "state": "alarm"}]


def test_outputs_switch_off_on_their_own_timer() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=0, tags=0, outputs=2)
    bench.run(50)
    bench.pi.send({"t": "out", "output": 0, "on": True, "ms": 300})
    bench.pi.send({"t": "out", "output": 1, "on": True, "ms": 0})
    bench.run(50)
    assert bench.hw.outputs == [True, True]
    bench.run(300)
    assert bench.hw.outputs == [False, True]  # 0 ms: until told
    bench.pi.send({"t": "out", "output": 1, "on": False, "ms": 0})
    bench.run(50)
    assert bench.hw.outputs == [False, False]


@pytest.mark.parametrize(
    "body",
    [
        {"t": "out", "output": 5, "on": True, "ms": 0},
        {"t": "out", "output": 0, "on": 1, "ms": 0},
        {"t": "out", "output": 0, "on": True, "ms": -1},
        {"t": "out", "output": True, "on": True, "ms": 0},
        {"t": "out", "on": True},
    ],
)
def test_a_bad_out_frame_is_counted_and_ignored(body: dict) -> None:
    bench = Bench(zones=0, buttons=0, wiegand=0, tags=0, outputs=1)
    bench.pi.send(body)
    bench.run(50)
    assert bench.hw.outputs == [False]
    assert bench.board.stats["bad_out"] == 1


def test_unknown_frame_types_are_acked_and_counted() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=0, tags=0, outputs=0)
    bench.pi.send({"t": "firmware-update", "blob": b"\x00"})
    bench.run(50)
    assert not bench.pi.busy
    assert bench.board.stats["unknown_type"] == 1


def test_wiegand_frame_ends_after_25_ms_of_silence() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=2, tags=0, outputs=0)
    bench.run(50)
    bench.take()
    bench.hw.pulse_wiegand(1, 26, 0x2F7B26E)
    bench.run(20)
    assert bench.take() == []
    bench.run(20)
    assert bench.take() == [{"t": "wiegand", "input": 1, "bits": 26, "data": 0x2F7B26E}]


def test_wiegand_glitches_and_overlong_bursts_are_dropped() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=1, tags=0, outputs=0)
    bench.run(50)
    bench.take()
    bench.hw.pulse_wiegand(0, 2, 0b10)
    bench.run(50)
    bench.hw.pulse_wiegand(0, 70, 1)
    bench.run(50)
    bench.hw.pulse_wiegand(0, 34, 0x1_2345_6789)
    bench.run(50)
    assert bench.take() == [{"t": "wiegand", "input": 0, "bits": 34, "data": 0x1_2345_6789}]
    assert bench.board.stats["wiegand_dropped"] == 2


def test_a_card_on_a_reader_is_reported_again_every_half_second() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=0, tags=1, outputs=0)
    bench.run(50)
    bench.take()
    bench.hw.tags[0] = b"\x04\xa1\xb2\xc3"
    bench.run(1200)
    tag = {"t": "tag", "input": 0, "uid": b"\x04\xa1\xb2\xc3"}
    assert bench.take("hb") == [tag, tag, tag]
    bench.hw.tags[0] = None
    bench.run(1000)
    assert bench.take("hb") == []


def test_heartbeats_queue_as_one_while_nobody_acks() -> None:
    bench = Bench(zones=0, buttons=0, wiegand=0, tags=0, outputs=0)
    bench.uart.inbox.clear()
    for _ in range(10 * 200):  # 10 s with the Pi gone
        bench.ms += 5
        bench.board.step()
        bench.uart.outbox.clear()
    assert bench.board.link.counters["queue_drops"] == 0
    assert len(bench.board.link._queue) <= 1  # noqa: SLF001 - the point of the test
