"""SerialLink over a real pseudo-terminal, with the test playing the microcontroller by hand."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path
from typing import Any, Iterator

import pytest

from firmware_bridge.framing import Deframer, encode_frame, hello_body
from firmware_bridge.link import LinkError, SerialLink
from tests.support import wait_until

PI_HELLO = hello_body("test-pi/1", [])


class FakeBoard:
    """The master side of a pty, symlinked at a stable path: the test speaks frames on it."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.deframer = Deframer()
        self.raw = bytearray()
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        temp = self.link.with_name(self.link.name + ".tmp")
        temp.symlink_to(os.ttyname(self.slave))
        os.replace(temp, self.link)
        self.deframer = Deframer()

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def send(self, body: dict[str, Any]) -> None:
        assert self.master is not None
        os.write(self.master, encode_frame(body))

    def frames(self, count: int, timeout: float = 5.0) -> list[tuple[float, dict[str, Any]]]:
        """The next ``count`` frames from the Pi, each with the time it was read."""
        got: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {count} frames, got {got}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                data = os.read(self.master, 4096)
                self.raw += data
                got += [(time.monotonic(), f) for f in self.deframer.feed(data)]
        return got

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Frames that arrive within ``seconds`` (the test expects none, or knows how many)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                got += self.deframer.feed(os.read(self.master, 4096))
        return got


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[dict[str, Any]] = []
        self.ports: list[tuple[bool, str]] = []
        self.given_up: list[dict[str, Any]] = []

    def on_frame(self, body: dict[str, Any], at: float) -> None:
        with self.lock:
            self.frames.append(body)

    def on_port(self, is_open: bool, detail: str) -> None:
        with self.lock:
            self.ports.append((is_open, detail))

    def on_give_up(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.given_up.append(body)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[FakeBoard]:
    b = FakeBoard(tmp_path / "ttyMCU")
    try:
        yield b
    finally:
        b.unplug()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def link(board: FakeBoard, recorder: Recorder) -> Iterator[SerialLink]:
    lk = SerialLink(
        str(board.link), hello=PI_HELLO, on_frame=recorder.on_frame, on_port=recorder.on_port,
        on_give_up=recorder.on_give_up, reopen_s=0.1, name="fe",
    )
    lk.start()
    try:
        yield lk
    finally:
        lk.close()


def test_opens_with_a_delimiter_and_a_hello(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    [(_, hello)] = board.frames(1)
    assert hello == {**PI_HELLO, "n": 0}
    assert board.raw.startswith(b"\x00")
    wait_until(lambda: recorder.ports == [(True, f"{board.link} open")])


def test_frames_from_the_board_are_delivered_and_acked(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    board.frames(1)
    board.send({"t": "zone", "n": 0, "input": 2, "state": "tamper-cut"})
    board.send({"t": "hb", "n": 1, "uptime_ms": 1000})
    acks = [f for _, f in board.frames(2)]
    assert acks == [{"t": "ack", "n": 0}, {"t": "ack", "n": 1}]
    wait_until(lambda: len(recorder.frames) == 2)
    assert recorder.frames == [
        {"t": "zone", "n": 0, "input": 2, "state": "tamper-cut"},
        {"t": "hb", "n": 1, "uptime_ms": 1000},
    ]


def test_a_repeated_frame_is_acked_again_but_delivered_once(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    board.frames(1)
    frame = {"t": "wiegand", "n": 5, "input": 0, "bits": 26, "data": 0x2F7B26E}
    board.send(frame)
    board.send(frame)
    assert [f for _, f in board.frames(2)] == [{"t": "ack", "n": 5}, {"t": "ack", "n": 5}]
    wait_until(lambda: link.counters["duplicates"] == 1)
    assert recorder.frames == [frame]


def test_an_unacked_frame_is_resent_after_200_ms(board: FakeBoard, link: SerialLink) -> None:
    [(_, hello)] = board.frames(1)
    board.send({"t": "ack", "n": hello["n"]})
    link.send({"t": "out", "output": 1, "on": True, "ms": 180_000})
    (t1, first), (t2, second) = board.frames(2)
    assert first == second == {"t": "out", "output": 1, "on": True, "ms": 180_000, "n": 1}
    assert 0.15 <= t2 - t1 <= 1.0  # 200 ms, give or take a loaded machine
    board.send({"t": "ack", "n": 1})
    assert board.quiet(0.5) == []
    assert link.counters["retransmits"] == 1
    assert link.counters["gave_up"] == 0


def test_retransmission_gives_up_after_five_resends_and_reports(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    tries = [f for _, f in board.frames(6)]  # the hello, never acked: the first try and five resends
    assert tries == [{**PI_HELLO, "n": 0}] * 6
    wait_until(lambda: recorder.given_up == [{**PI_HELLO, "n": 0}], timeout=3)
    assert link.counters["retransmits"] == 5
    assert link.counters["gave_up"] == 1
    assert board.quiet(0.4) == []


def test_port_lost_and_back(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    board.frames(1)
    wait_until(lambda: len(recorder.ports) == 1)
    board.unplug()
    wait_until(lambda: len(recorder.ports) == 2, message="port loss noticed")
    is_open, detail = recorder.ports[1]
    assert not is_open
    assert detail.startswith(f"{board.link}: ")
    link.send({"t": "sync"})  # dropped while the port is gone; never raises
    board.plug()
    [(_, hello)] = board.frames(1)
    assert {k: v for k, v in hello.items() if k != "n"} == PI_HELLO
    wait_until(lambda: recorder.ports[2:] == [(True, f"{board.link} open")])
    assert link.counters["port_losses"] == 1
    assert link.counters["port_opens"] == 2


def test_a_port_missing_at_start_is_reported_once_and_opened_when_it_appears(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "ttyLATE"
    link = SerialLink(str(path), hello=PI_HELLO, on_frame=recorder.on_frame, on_port=recorder.on_port, reopen_s=0.05)
    link.start()
    board = None
    try:
        wait_until(lambda: link.counters["open_failures"] >= 3)
        assert len(recorder.ports) == 1
        is_open, detail = recorder.ports[0]
        assert not is_open
        assert detail.startswith(f"cannot open {path}: ")
        board = FakeBoard(path)
        [(_, hello)] = board.frames(1)
        assert hello["t"] == "hello"
        wait_until(lambda: recorder.ports[1:] == [(True, f"{path} open")])
    finally:
        link.close()
        if board is not None:
            board.unplug()


def test_close_is_prompt_and_final(board: FakeBoard, link: SerialLink) -> None:
    board.frames(1)
    started = time.monotonic()
    link.close()
    assert time.monotonic() - started < 1.0
    assert not link.is_open
    with pytest.raises(LinkError) as info:
        link.send({"t": "sync"})
    assert str(info.value) == "link fe is closed"


def test_noise_on_the_line_is_counted_and_the_next_frame_read(board: FakeBoard, link: SerialLink, recorder: Recorder) -> None:
    board.frames(1)
    assert board.master is not None
    os.write(board.master, bytes(range(1, 200)) + b"\x00\x07\x07\x07\x00")
    board.send({"t": "hb", "n": 0, "uptime_ms": 5})
    wait_until(lambda: recorder.frames == [{"t": "hb", "n": 0, "uptime_ms": 5}])
    counters = link.counters
    assert counters["cobs_errors"] + counters["crc_errors"] + counters["body_errors"] == 2
