"""SerialReader through real pseudo-terminals: simulated modules on the master side,
the reader opening the slave path with pyserial exactly as it opens /dev/serial0.

Holding a card is a stimulus that lasts in real time (``hold``); what the
reader did is always waited for with a deadline (``wait_until``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from agent.config import ReaderConfig
from agent.events import EventSink
from agent.inputs.readers.serial_reader import SerialReader
from agent.inputs.readers.sim import SimulatedPn532, SimulatedRdm6300
from tests.support import wait_until
from wire.messages import EventKind

CARD_A = "62E3086CED"  # the RDM6300 datasheet's example card
CARD_B = "67003B51C6"
UID7 = bytes.fromhex("047BCB51962280")
UID4 = bytes.fromhex("8B0D4F49")


class Recorder:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[EventKind, str, dict[str, Any]]] = []

    def __call__(self, kind: EventKind, source: str, /, **fields: Any) -> None:
        with self._lock:
            self._events.append((kind, source, fields))

    @property
    def events(self) -> list[tuple[EventKind, str, dict[str, Any]]]:
        with self._lock:
            return list(self._events)

    def scans(self) -> list[str]:
        return [f["tag"] for k, _, f in self.events if k is EventKind.SCAN]

    def faults(self) -> list[str]:
        return [f["code"] for k, _, f in self.events if k is EventKind.FAULT]


def hold(seconds: float) -> None:
    """A card lying on the reader for this long: the stimulus, not a wait for the reader."""
    time.sleep(seconds)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Registers readers and simulators; every one is closed at teardown, readers first."""
    things: list[Any] = []

    def register(thing: Any) -> Any:
        things.append(thing)
        return thing

    try:
        yield register
    finally:
        for thing in sorted(things, key=lambda t: not isinstance(t, SerialReader)):
            thing.close()


def rdm_reader(port: str, rec: EventSink, **kwargs: Any) -> SerialReader:
    return SerialReader(ReaderConfig(name="gate-1", protocol="rdm6300", port=port), emit=rec, **kwargs)


def test_a_card_held_for_3_s_is_one_scan(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300())
    rec = Recorder()
    reader = closing(rdm_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    sim.present(CARD_A)
    hold(3.0)
    sim.remove()
    written = sim.frames_written
    assert written >= 20
    wait_until(lambda: reader.counters["frames"] >= written, message="reader read every frame")
    assert rec.events == [(EventKind.SCAN, "gate-1", {"tag": CARD_A, "fmt": "em4100"})]
    assert reader.counters["scans"] == 1
    assert reader.counters["bad_checksum"] == 0


def test_one_valid_frame_written_once_is_one_scan_within_a_second(closing: Callable[[Any], Any]) -> None:
    """A clone that repeats only every 1-2 s: its first frame alone is the presentation."""
    master, slave = os.openpty()
    rec = Recorder()
    reader = closing(rdm_reader(os.ttyname(slave), rec))
    try:
        reader.start()
        wait_until(lambda: reader.state == "up", message="reader up")
        os.write(master, b"\x02" + CARD_A.encode() + bytes([0x62 ^ 0xE3 ^ 0x08 ^ 0x6C ^ 0xED]) + b"\x03")
        sent = time.monotonic()
        wait_until(lambda: rec.scans() == [CARD_A], timeout=1.0, message="one scan within a second")
        assert time.monotonic() - sent < 1.0
        hold(1.2)  # nothing more comes: still the one scan
        assert rec.events == [(EventKind.SCAN, "gate-1", {"tag": CARD_A, "fmt": "em4100"})]
    finally:
        reader.close()
        os.close(master)
        os.close(slave)


def test_two_cards_give_two_scans_with_clone_frames(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300(clone=True))
    rec = Recorder()
    reader = closing(rdm_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    sim.present(CARD_A)
    hold(0.6)
    sim.present(CARD_B)  # one card swept off, the next one laid down at once
    hold(0.6)
    sim.remove()
    wait_until(lambda: len(rec.scans()) == 2, message="two scans")
    written = sim.frames_written
    wait_until(lambda: reader.counters["frames"] >= written, message="reader read every frame")
    assert rec.events == [
        (EventKind.SCAN, "gate-1", {"tag": CARD_A, "fmt": "em4100"}),
        (EventKind.SCAN, "gate-1", {"tag": CARD_B, "fmt": "em4100"}),
    ]


def test_a_card_lifted_for_a_second_and_put_back_is_a_second_scan(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300())
    rec = Recorder()
    reader = closing(rdm_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    sim.present(CARD_A)
    wait_until(lambda: rec.scans() == [CARD_A], message="first scan")
    hold(0.5)
    sim.remove()
    hold(1.5)  # lifted: more than the one second that makes it "taken away"
    sim.present(CARD_A)
    wait_until(lambda: rec.scans() == [CARD_A, CARD_A], message="second scan")
    hold(0.5)
    sim.remove()
    written = sim.frames_written
    wait_until(lambda: reader.counters["frames"] >= written, message="reader read every frame")
    assert rec.scans() == [CARD_A, CARD_A]


def test_line_noise_and_bad_frames_are_counted_never_scanned(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300())
    rec = Recorder()
    reader = closing(rdm_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    bad_checksum = b"\x02" + CARD_B.encode() + b"00\x03"
    zero = b"\x02" + b"0000000000" + b"00" + b"\x03"
    sim.write_raw(b"\xff\xfe\x00\x80" + bad_checksum * 3 + zero * 3 + b"\x0212345")
    wait_until(lambda: reader.counters["zero_id"] == 3, message="zero ids counted")
    counters = reader.counters
    assert counters["bad_checksum"] == 3
    assert counters["noise_bytes"] >= 4
    assert rec.events == []


def test_port_unplugged_then_back_at_the_same_path(closing: Callable[[Any], Any], tmp_path: Path) -> None:
    link = tmp_path / "ttyRFID"
    first = SimulatedRdm6300()
    try:
        os.symlink(first.path, link)
        rec = Recorder()
        reader = closing(rdm_reader(str(link), rec))
        reader.start()
        wait_until(lambda: reader.state == "up", message="reader up")
        first.present(CARD_A)
        wait_until(lambda: rec.scans() == [CARD_A], message="scan before the unplug")
    finally:
        first.close()  # the USB reader is pulled out
    wait_until(lambda: rec.faults() == ["port-lost"], message="port-lost")
    assert reader.state == "down"
    link.unlink()
    hold(0.5)  # the reader retries against a path that is not there: no second fault
    second = closing(SimulatedRdm6300())
    os.symlink(second.path, link)  # re-enumerated: a new device behind the same name
    wait_until(lambda: rec.faults() == ["port-lost", "port-back"], message="port-back")
    second.present(CARD_B)
    wait_until(lambda: rec.scans() == [CARD_A, CARD_B], message="scan after the port came back")

    events = rec.events
    assert [k for k, _, _ in events] == [EventKind.SCAN, EventKind.FAULT, EventKind.FAULT, EventKind.SCAN]
    lost = events[1][2]
    assert lost["code"] == "port-lost"
    assert lost["detail"].startswith(f"{link}: ")
    assert events[2] == (EventKind.FAULT, "gate-1", {"code": "port-back", "detail": f"{link} opened again"})
    assert events[3] == (EventKind.SCAN, "gate-1", {"tag": CARD_B, "fmt": "em4100"})
    assert reader.counters["port_lost"] == 1
    assert reader.counters["open_failures"] >= 1


def test_a_reader_missing_at_start_is_a_fault_until_it_appears(closing: Callable[[Any], Any], tmp_path: Path) -> None:
    link = tmp_path / "ttyRFID"
    rec = Recorder()
    reader = closing(rdm_reader(str(link), rec))
    reader.start()
    wait_until(lambda: rec.faults() == ["port-lost"], message="port-lost at start")
    assert rec.events[0][2]["detail"].startswith(f"cannot open {link}: ")
    assert reader.state == "down"
    sim = closing(SimulatedRdm6300())
    os.symlink(sim.path, link)
    wait_until(lambda: rec.faults() == ["port-lost", "port-back"], message="port-back")
    assert reader.state == "up"


def test_close_is_prompt_and_final(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300())
    rec = Recorder()
    reader = rdm_reader(sim.path, rec)
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 1.0
    assert reader.state == "down"
    beat = reader.last_beat
    reader.tick(time.monotonic())  # a closed reader is not restarted
    assert reader.last_beat == beat


def test_protocol_and_port_are_checked() -> None:
    with pytest.raises(ValueError) as info:
        SerialReader(ReaderConfig(name="door", protocol="wiegand", mcu="front-end", input=1), emit=Recorder())
    assert str(info.value) == "reader 'door': protocol 'wiegand' is not read on a serial port"


# -- PN532 -------------------------------------------------------------------


def pn532_reader(port: str, rec: EventSink, **kwargs: Any) -> SerialReader:
    return SerialReader(ReaderConfig(name="library", protocol="pn532", port=port), emit=rec, **kwargs)


def test_pn532_card_held_for_3_s_is_one_scan(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedPn532())
    rec = Recorder()
    reader = closing(pn532_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up" and sim.polls > 0, message="reader polling")
    sim.present(UID7)
    hold(3.0)
    sim.remove()
    polls = sim.polls
    wait_until(lambda: sim.polls >= polls + 2, message="two polls after the card left")
    assert rec.events == [(EventKind.SCAN, "library", {"tag": "047BCB51962280", "fmt": "iso14443a"})]
    assert sim.commands[:3] == [0x14, 0x32, 0x4A]  # SAMConfiguration, RFConfiguration, InListPassiveTarget


def test_pn532_power_glitch_is_recovered_and_counted(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedPn532())
    rec = Recorder()
    reader = closing(pn532_reader(sim.path, rec))
    reader.start()
    wait_until(lambda: reader.state == "up" and sim.polls > 0, message="reader polling")
    sim.glitch()
    wait_until(lambda: reader.counters["recoveries"] == 1, message="recovered")
    assert reader.counters["silent"] >= 1
    sim.present(UID4)
    wait_until(lambda: rec.scans() == ["8B0D4F49"], message="scan after the glitch")
    assert rec.faults() == []  # a short glitch is counted, not reported


def test_pn532_silent_for_long_is_reported_and_its_return_too(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedPn532())
    rec = Recorder()
    reader = closing(pn532_reader(sim.path, rec, silent_fault_s=1.0))
    reader.start()
    wait_until(lambda: reader.state == "up" and sim.polls > 0, message="reader polling")
    sim.silent = True
    wait_until(lambda: rec.faults() == ["reader-silent"], message="reader-silent")
    assert reader.state == "down"
    sim.silent = False
    wait_until(lambda: rec.faults() == ["reader-silent", "reader-back"], message="reader-back")
    assert reader.state == "up"
    assert rec.events == [
        (EventKind.FAULT, "library", {"code": "reader-silent", "detail": f"PN532 on {sim.path} has not answered for 1 s"}),
        (EventKind.FAULT, "library", {"code": "reader-back", "detail": f"PN532 on {sim.path} answers again"}),
    ]
    sim.present(UID7)
    wait_until(lambda: rec.scans() == ["047BCB51962280"], message="scan after the silence")


def test_pn532_unplugged_and_back(closing: Callable[[Any], Any], tmp_path: Path) -> None:
    link = tmp_path / "ttyNFC"
    first = SimulatedPn532()
    try:
        os.symlink(first.path, link)
        rec = Recorder()
        reader = closing(pn532_reader(str(link), rec))
        reader.start()
        wait_until(lambda: reader.state == "up" and first.polls > 0, message="reader polling")
        frames_before = reader.counters["frames"]
    finally:
        first.close()
    wait_until(lambda: rec.faults() == ["port-lost"], message="port-lost")
    assert reader.counters["frames"] >= frames_before  # telemetry counters never go back
    link.unlink()
    second = closing(SimulatedPn532())  # a fresh chip, in LowVbat until woken
    os.symlink(second.path, link)
    wait_until(lambda: rec.faults() == ["port-lost", "port-back"], message="port-back")
    second.present(UID4)
    wait_until(lambda: rec.scans() == ["8B0D4F49"], message="scan on the new port")
    assert reader.counters["frames"] > frames_before


@pytest.mark.allow_logged_exceptions
def test_a_failing_sink_does_not_stop_the_reader(closing: Callable[[Any], Any]) -> None:
    sim = closing(SimulatedRdm6300())
    rec = Recorder()
    calls = []

    def flaky(kind: EventKind, source: str, /, **fields: Any) -> None:
        calls.append(fields)
        if len(calls) == 1:
            raise OSError("disk full")
        rec(kind, source, **fields)

    reader = closing(rdm_reader(sim.path, flaky))
    reader.start()
    wait_until(lambda: reader.state == "up", message="reader up")
    sim.tap(CARD_A, hold_s=0.3)
    wait_until(lambda: len(calls) == 1, message="first scan attempted")
    sim.tap(CARD_B, hold_s=0.3)
    wait_until(lambda: rec.scans() == [CARD_B], message="the next scan goes through")
    assert calls == [{"tag": CARD_A, "fmt": "em4100"}, {"tag": CARD_B, "fmt": "em4100"}]
