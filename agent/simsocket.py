"""The simulation seam: ``drive PIN high|low`` on a Unix socket -> gpiozero mock pins.

With ``gpio.pin_factory = "mock"`` and ``gpio.sim_socket`` set, an agent in its
own process listens here, so the demo and the end-to-end checks can open loops
and press buttons. Each newline-terminated command gets one line back, ``ok``
or ``error: ...``. Zones and buttons see the edge through gpiozero, exactly as
they would see a real pin: this module only drives pins.

Anything can connect to a socket, so everything read here is hostile until
parsed: over-long lines close the connection, garbage gets an error line,
clients beyond ``MAX_CLIENTS`` are turned away, and none of it stops the seam.
One thread serves every connection through a selector.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from gpiozero import PinError
from gpiozero.pins.mock import MockFactory, MockPin

from agent.config import ZoneConfig
from agent.errors import AgentError

_LOGGER = logging.getLogger(__name__)

MAX_LINE_BYTES = 256  # a command is ~20 bytes; anything longer is not one
MAX_CLIENTS = 16
MAX_PENDING_OUT_BYTES = 64 * 1024  # replies a client does not read; beyond this it is dropped
RECV_BYTES = 4096
MAX_PATH_BYTES = 107  # sun_path is 108 bytes with its terminating NUL
SOCKET_MODE = 0o600
USAGE = "expected 'drive PIN high' or 'drive PIN low'"


class SimSocketError(AgentError, OSError):
    """The simulation socket cannot be set up (path too long, in use, not a socket)."""


class SimCommandError(AgentError, ValueError):
    """A command line on the simulation socket is not a valid command."""


def parse_command(line: bytes) -> tuple[int, bool]:
    """``b"drive 17 high"`` -> ``(17, True)``; raises :class:`SimCommandError`."""
    if len(line) > MAX_LINE_BYTES:
        raise SimCommandError(f"line too long (more than {MAX_LINE_BYTES} bytes)")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise SimCommandError("not ASCII text") from None
    words = text.split()
    if not words:
        raise SimCommandError(f"empty command: {USAGE}")
    if words[0] != "drive":
        raise SimCommandError(f"unknown command {_quote(words[0])}: {USAGE}")
    if len(words) != 3:
        raise SimCommandError(USAGE)
    _, pin_text, level_text = words
    # Digits only, and few of them: no signs, no '1_000', no 10**5000.
    if not (pin_text.isdigit() and pin_text.isascii() and len(pin_text) <= 3):
        raise SimCommandError(f"pin {_quote(pin_text)} is not a GPIO number")
    if level_text not in ("high", "low"):
        raise SimCommandError(f"level {_quote(level_text)} is not high or low")
    return int(pin_text), level_text == "high"


def _quote(text: str) -> str:
    """Echo a piece of input back safely: printable, and short."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return "'" + shown[:32] + ("..." if len(shown) > 32 else "") + "'"


class ClosedLoopPin(MockPin):
    """A mock pin with a closed ``nc`` loop on it: the loop to ground wins over the pull-up.

    A plain mock pin follows its pull-up and reads high, which for an ``nc``
    zone is an open loop: every simulated agent would boot in alarm. This pin
    stays low when the pull-up is switched on, as a wired, closed loop does;
    ``drive_high`` / ``drive_low`` then open and close it as usual.
    """

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.function == "input" and self.state:
            self.drive_low()


def wire_at_rest(factory: MockFactory, zones: Iterable[ZoneConfig]) -> None:
    """Put the simulated world at rest: every GPIO ``nc`` loop closed.

    Call it before the zones are built (their pins must not exist yet).
    ``no`` contacts and buttons need nothing: their pull-ups hold them at rest.
    """
    for zone in zones:
        if zone.pin is None or zone.contact != "nc":
            continue
        pin = factory.pin(zone.pin, pin_class=ClosedLoopPin)
        if not isinstance(pin, ClosedLoopPin):
            raise RuntimeError(f"pin {zone.pin} of zone {zone.name!r} already exists: wire the pins at rest before building the zones")
        if pin.function == "input":
            pin.drive_low()


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)


class SimSocket:
    """Listens on ``path`` (mode 0600) and drives ``factory``'s mock pins.

    Only pins that an input device listens on can be driven: a typo in a
    script gets an error rather than a silent ``ok`` on a pin nothing reads.
    Start it after the zones and buttons exist.
    """

    def __init__(self, path: Path, *, factory: MockFactory) -> None:
        self.path = Path(path)
        self.factory = factory
        self.commands_ok = 0
        self.commands_failed = 0
        self.clients_refused = 0
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._clients: dict[socket.socket, _Client] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self._lock = threading.Lock()

    def start(self) -> SimSocket:
        if self._thread is not None:
            raise RuntimeError("the simulation socket was already started")
        raw_path = os.fsencode(self.path)
        if len(raw_path) > MAX_PATH_BYTES:
            raise SimSocketError(f"{self.path}: too long for a Unix socket ({len(raw_path)} bytes, at most {MAX_PATH_BYTES})")
        self._remove_stale()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            listener.bind(str(self.path))
            bound = True
            # Bind creates the file with the umask's mode; narrow it at once.
            os.chmod(self.path, SOCKET_MODE)
            self._inode = os.stat(self.path).st_ino
            listener.listen(MAX_CLIENTS)
            listener.setblocking(False)
            selector = selectors.DefaultSelector()
            wake_r, wake_w = socket.socketpair()
        except OSError as exc:
            listener.close()
            if bound:
                self.path.unlink(missing_ok=True)
            raise SimSocketError(f"{self.path}: cannot listen: {exc.strerror or exc}") from exc
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "listener")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        self._listener, self._selector, self._wake_r, self._wake_w = listener, selector, wake_r, wake_w
        self._thread = threading.Thread(target=self._serve, name="gridpatrol-simsocket", daemon=True)
        self._thread.start()
        _LOGGER.info("simulation socket listening on %s", self.path)
        return self

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SimSocketError(f"{self.path}: exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: left over from a crash
        except TimeoutError:
            # A listener whose backlog is full is still a listener.
            raise SimSocketError(f"{self.path}: in use by a running process") from None
        except OSError as exc:
            raise SimSocketError(f"{self.path}: cannot tell whether it is in use: {exc.strerror or exc}") from exc
        else:
            raise SimSocketError(f"{self.path}: in use by a running process")
        finally:
            probe.close()
        _LOGGER.info("removing stale simulation socket %s", self.path)
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop serving, close every connection and remove the socket file. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._thread is None:
            return
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except OSError:
            pass  # the buffer is full: a wake is pending anyway
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _serve(self) -> None:
        assert self._selector is not None
        try:
            while not self._closing:
                for key, mask in self._selector.select():
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._serve_client(key.data, mask)
        except Exception:
            _LOGGER.exception("simulation socket failed; it stops serving")
        finally:
            self._teardown()

    def _serve_client(self, client: _Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self._read(client)
            if mask & selectors.EVENT_WRITE and client.sock in self._clients:
                self._flush(client)
        except Exception:
            _LOGGER.exception("simulation socket: dropping a client after an unexpected failure")
            self._drop(client)

    def _teardown(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        assert self._selector is not None
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        try:
            # Only our own file: a newer agent may already have bound the path.
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        _LOGGER.info("simulation socket %s closed", self.path)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors, say: keep serving the others
            _LOGGER.warning("simulation socket: accept failed: %s", exc)
            return
        sock.setblocking(False)
        if len(self._clients) >= MAX_CLIENTS:
            self.clients_refused += 1
            try:
                sock.send(f"error: too many clients (at most {MAX_CLIENTS})\n".encode())
            except OSError:
                pass
            sock.close()
            return
        client = _Client(sock)
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        while True:
            end = client.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[: end + 1]
            if len(line) > MAX_LINE_BYTES:
                self._refuse(client, f"line too long (more than {MAX_LINE_BYTES} bytes)")
                return
            self._reply(client, self._execute(line.rstrip(b"\r")))
            if client.sock not in self._clients:
                return
        if len(client.inbuf) > MAX_LINE_BYTES:
            self._refuse(client, f"line too long (more than {MAX_LINE_BYTES} bytes)")

    def _execute(self, line: bytes) -> str:
        try:
            pin_number, high = parse_command(line)
            self._drive(pin_number, high)
        except SimCommandError as exc:
            self.commands_failed += 1
            return f"error: {exc}"
        except Exception as exc:  # a pin or callback failure must not end the seam
            self.commands_failed += 1
            _LOGGER.exception("simulation socket: %r failed", line)
            return f"error: cannot drive the pin: {type(exc).__name__}"
        self.commands_ok += 1
        return "ok"

    def _drive(self, number: int, high: bool) -> None:
        try:
            pin = self.factory.pin(number)
        except (PinError, ValueError):
            raise SimCommandError(f"unknown pin {number}") from None
        if pin.function != "input":
            raise SimCommandError(f"pin {number} is an output; only inputs can be driven")
        if pin.when_changed is None:
            raise SimCommandError(f"pin {number} is not used by any input")
        if high:
            pin.drive_high()
        else:
            pin.drive_low()

    def _reply(self, client: _Client, text: str) -> None:
        client.outbuf += text.encode("ascii", "backslashreplace") + b"\n"
        if len(client.outbuf) > MAX_PENDING_OUT_BYTES:
            _LOGGER.warning("simulation socket: a client does not read its replies; dropping it")
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        assert self._selector is not None
        try:
            sent = client.sock.send(client.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        self._selector.modify(client.sock, events, client)

    def _refuse(self, client: _Client, problem: str) -> None:
        """Answer once more, best effort, and hang up: the stream cannot be trusted any more."""
        self.commands_failed += 1
        try:
            client.sock.send(bytes(client.outbuf) + f"error: {problem}\n".encode())
        except OSError:
            pass
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return
        assert self._selector is not None
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
