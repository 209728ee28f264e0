"""The simulation seam: a real Unix socket driving gpiozero's mock pins."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Iterator

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ButtonConfig, ZoneConfig
from agent.inputs.button import EmergencyButton
from agent.inputs.loop import InputLoop
from agent.inputs.zone import Zone
from agent.simsocket import MAX_CLIENTS, MAX_LINE_BYTES, SimCommandError, SimSocket, SimSocketError, parse_command, wire_at_rest
from tests.support import Recorder, wait_until
from wire.messages import EventKind

ZONE = ZoneConfig(name="north-fence", pin=17, contact="nc", debounce_ms=0)
BUTTON = ButtonConfig(name="office-panic", pin=27, hold_ms=100)


class Client:
    """A line-oriented client of the seam, as a demo script would be."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(f"connection closed; unanswered bytes {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def ask(self, command: str) -> str:
        self.send(command.encode() + b"\n")
        return self.line()

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rig(tmp_path: Path, mock_factory: MockFactory) -> Iterator[tuple[SimSocket, Zone, EmergencyButton, Recorder, InputLoop]]:
    """An agent's inputs as the runtime builds them: pins at rest, loop, seam."""
    sink = Recorder()
    loop = InputLoop(reread_s=5.0)
    wire_at_rest(mock_factory, [ZONE])
    zone = Zone(ZONE, emit=sink, wake=loop.wake, pin_factory=mock_factory)
    button = EmergencyButton(BUTTON, emit=sink, wake=loop.wake, pin_factory=mock_factory)
    loop.add(zone)
    loop.add(button)
    loop.start()
    sim = SimSocket(tmp_path / "sim.sock", factory=mock_factory)
    try:
        sim.start()
        yield sim, zone, button, sink, loop
    finally:
        sim.close()
        loop.stop()
        zone.close()
        button.close()


def test_drive_opens_a_loop_and_the_zone_emits(rig) -> None:
    sim, zone, _, sink, _ = rig
    client = Client(sim.path)
    try:
        assert zone.state == "normal"
        assert client.ask("drive 17 high") == "ok"
        wait_until(lambda: sink.events, timeout=5, message="the alarm")
        assert sink.events == [(EventKind.ALARM, "north-fence", {})]
        assert client.ask("drive 17 low") == "ok"
        wait_until(lambda: len(sink.events) == 2, timeout=5, message="the restore")
        assert sink.events[1] == (EventKind.RESTORE, "north-fence", {})
        assert sim.commands_ok == 2
    finally:
        client.close()


def test_holding_a_button_through_the_socket_panics(rig) -> None:
    sim, _, button, sink, _ = rig
    client = Client(sim.path)
    try:
        assert client.ask("drive 27 low") == "ok"
        wait_until(lambda: sink.events, timeout=5, message="the panic")
        assert client.ask("drive 27 high") == "ok"
        assert sink.events == [(EventKind.PANIC, "office-panic", {})]
        assert button.latched
    finally:
        client.close()


def test_crlf_and_several_commands_in_one_write(rig) -> None:
    sim, _, _, sink, _ = rig
    client = Client(sim.path)
    try:
        client.send(b"drive 17 high\r\ndrive 17 low\n")
        assert [client.line(), client.line()] == ["ok", "ok"]
        assert sim.commands_ok == 2
    finally:
        client.close()


@pytest.mark.parametrize(("line", "answer"), [
    (b"", "error: empty command: expected 'drive PIN high' or 'drive PIN low'"),
    (b"   ", "error: empty command: expected 'drive PIN high' or 'drive PIN low'"),
    (b"press 17", "error: unknown command 'press': expected 'drive PIN high' or 'drive PIN low'"),
    (b"drive 17", "error: expected 'drive PIN high' or 'drive PIN low'"),
    (b"drive 17 high now", "error: expected 'drive PIN high' or 'drive PIN low'"),
    (b"drive x high", "error: pin 'x' is not a GPIO number"),
    (b"drive -1 high", "error: pin '-1' is not a GPIO number"),
    (b"drive 99999999999999999999 high", "error: pin '99999999999999999999' is not a GPIO number"),
    (b"drive 17 up", "error: level 'up' is not high or low"),
    (b"drive 17 HIGH", "error: level 'HIGH' is not high or low"),
    (b"drive 99 high", "error: unknown pin 99"),
    (b"drive 5 high", "error: pin 5 is not used by any input"),
    (b"drive 22 high", "error: pin 22 is an output; only inputs can be driven"),
    (b"\xff\xfe garbage", "error: not ASCII text"),
    (b"drive\x00 17 high", "error: unknown command 'drive\\x00': expected 'drive PIN high' or 'drive PIN low'"),
])
def test_bad_commands_get_an_error_line_and_the_connection_stays(rig, mock_factory: MockFactory, line: bytes, answer: str) -> None:
    sim, zone, _, sink, _ = rig
    siren = DigitalOutputDevice(22, pin_factory=mock_factory)
    client = Client(sim.path)
    try:
        client.send(line + b"\n")
        assert client.line() == answer
        assert client.ask("drive 17 high") == "ok"  # still served, on the same connection
        assert sim.commands_failed == 1
        assert mock_factory.pin(22).state is False
    finally:
        client.close()
        siren.close()


def test_a_long_line_is_answered_and_the_connection_closed(rig) -> None:
    sim, _, _, _, _ = rig
    client = Client(sim.path)
    other = Client(sim.path)
    try:
        client.send(b"drive 17 high" + b" " * MAX_LINE_BYTES)  # no newline, and too long
        assert client.line() == f"error: line too long (more than {MAX_LINE_BYTES} bytes)"
        assert client.closed_by_peer()
        assert other.ask("drive 17 high") == "ok"
    finally:
        client.close()
        other.close()


def test_a_long_line_with_its_newline_is_refused_too(rig) -> None:
    sim, _, _, _, _ = rig
    client = Client(sim.path)
    try:
        client.send(b"x" * (MAX_LINE_BYTES + 1) + b"\n")
        assert client.line() == f"error: line too long (more than {MAX_LINE_BYTES} bytes)"
        assert client.closed_by_peer()
    finally:
        client.close()


def test_too_many_clients_are_turned_away_not_crashed(rig) -> None:
    sim, _, _, _, _ = rig
    clients = [Client(sim.path) for _ in range(MAX_CLIENTS)]
    try:
        for c in clients:  # every one of them is being served
            assert c.ask("drive 17 low") == "ok"
        extra = Client(sim.path)
        try:
            assert extra.line() == f"error: too many clients (at most {MAX_CLIENTS})"
            assert extra.closed_by_peer()
        finally:
            extra.close()
        assert sim.clients_refused == 1
        clients.pop().close()
        # A slot is free again once the server has seen that hang-up.
        def served() -> bool:
            c = Client(sim.path)
            try:
                return c.ask("drive 17 low") == "ok"
            except (EOFError, OSError):
                return False
            finally:
                c.close()
        wait_until(served, timeout=5, message="a free slot")
    finally:
        for c in clients:
            c.close()


def test_a_client_that_never_reads_its_replies_is_dropped(rig) -> None:
    sim, _, _, _, _ = rig
    greedy = Client(sim.path)
    try:
        burst = b"nonsense\n" * 4096
        # Replies pile up unread; the seam hangs up rather than buffer without end.
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):
                greedy.send(burst)
        other = Client(sim.path)
        try:
            assert other.ask("drive 17 high") == "ok"
        finally:
            other.close()
    finally:
        greedy.close()


def test_clients_that_hang_up_mid_line_do_no_harm(rig) -> None:
    sim, _, _, _, _ = rig
    for data in (b"", b"dri", b"drive 17 hi", b"drive 17 high"):
        c = Client(sim.path)
        c.send(data) if data else None
        c.close()
    client = Client(sim.path)
    try:
        assert client.ask("drive 17 low") == "ok"
    finally:
        client.close()


def test_random_bytes_never_break_the_seam(rig) -> None:
    sim, _, _, _, _ = rig

    @settings(max_examples=60, deadline=None)
    @given(data=st.binary(max_size=MAX_LINE_BYTES).filter(lambda b: b"\n" not in b))
    def one(data: bytes) -> None:
        client = Client(sim.path)
        try:
            client.send(data + b"\n")
            answer = client.line()
            assert answer == "ok" or answer.startswith("error: ")
            assert answer.isascii() and answer.isprintable()
        finally:
            client.close()

    one()
    client = Client(sim.path)
    try:
        assert client.ask("drive 17 low") == "ok"
    finally:
        client.close()


# -- the socket file ---------------------------------------------------------------


def test_socket_file_is_private_and_removed_at_close(tmp_path: Path, mock_factory: MockFactory) -> None:
    path = tmp_path / "run" / "sim.sock"
    sim = SimSocket(path, factory=mock_factory).start()
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    finally:
        sim.close()
    assert not path.exists()
    sim.close()  # idempotent


def test_a_stale_socket_file_is_replaced(tmp_path: Path, mock_factory: MockFactory) -> None:
    path = tmp_path / "sim.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()  # a crashed agent left its socket file behind
    assert path.exists()
    sim = SimSocket(path, factory=mock_factory).start()
    try:
        client = Client(path)
        try:
            assert client.ask("drive 99 high") == "error: unknown pin 99"
        finally:
            client.close()
    finally:
        sim.close()


def test_a_live_socket_is_not_stolen(tmp_path: Path, mock_factory: MockFactory) -> None:
    path = tmp_path / "sim.sock"
    first = SimSocket(path, factory=mock_factory).start()
    try:
        with pytest.raises(SimSocketError, match=rf"^{path}: in use by a running process$"):
            SimSocket(path, factory=mock_factory).start()
        client = Client(path)
        try:
            assert client.ask("drive 99 low") == "error: unknown pin 99"
        finally:
            client.close()
    finally:
        first.close()


def test_a_regular_file_in_the_way_is_left_alone(tmp_path: Path, mock_factory: MockFactory) -> None:
    path = tmp_path / "sim.sock"
    path.write_text("not a socket")
    with pytest.raises(SimSocketError, match=rf"^{path}: exists and is not a socket; not removing it$"):
        SimSocket(path, factory=mock_factory).start()
    assert path.read_text() == "not a socket"


def test_a_path_too_long_for_a_unix_socket_is_refused(tmp_path: Path, mock_factory: MockFactory) -> None:
    path = tmp_path / ("d" * 120) / "sim.sock"
    with pytest.raises(SimSocketError, match=r"too long for a Unix socket \(\d+ bytes, at most 107\)$"):
        SimSocket(path, factory=mock_factory).start()


# -- the command parser ------------------------------------------------------------


def test_parse_good_commands() -> None:
    assert parse_command(b"drive 17 high") == (17, True)
    assert parse_command(b"  drive\t0   low ") == (0, False)


@settings(deadline=None)
@given(st.binary(max_size=2 * MAX_LINE_BYTES))
def test_parse_anything_is_a_command_or_a_command_error(data: bytes) -> None:
    try:
        pin, high = parse_command(data)
    except SimCommandError as exc:
        assert str(exc)
    else:
        assert 0 <= pin <= 999 and isinstance(high, bool)


@settings(deadline=None)
@given(pin=st.integers(0, 999), high=st.booleans())
def test_parse_round_trip(pin: int, high: bool) -> None:
    assert parse_command(f"drive {pin} {'high' if high else 'low'}".encode()) == (pin, high)
