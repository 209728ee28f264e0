"""The Pi's end of the microcontroller link: a serial port, a thread, stop-and-wait.

:class:`SerialLink` owns the pyserial port and one I/O thread. The protocol
itself (framing, acks, resends, repeats) is the pure
:class:`~firmware_bridge.framing.Endpoint` the firmware runs too; this module
only moves its bytes and keeps the port open: when the port disappears (a
USB adapter pulled) it reports so, and tries to open it again every
``reopen_s`` until it is back, then sends ``hello`` as on every open.

Callbacks run on the link's thread and must return quickly (enqueue and
wake): ``on_frame(body, at)`` for each new frame from the microcontroller,
``on_port(open, detail)`` when the port comes and goes, ``on_give_up(body)``
for a frame dropped after its last resend.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import serial

from firmware_bridge.firmware import framing

_LOGGER = logging.getLogger(__name__)

BAUDRATE = 115200
READ_TIMEOUT_S = 0.05  # the thread's longest wait; resends are due every 200 ms
REOPEN_S = 1.0
READ_BYTES = 4096  # most taken in one read

Body = dict[str, Any]


def _ignore(*_: object) -> None:
    pass


class LinkError(framing.BridgeError, OSError):
    """The link cannot do what was asked (it was closed)."""


class SerialLink:
    """Stop-and-wait frames to and from a microcontroller on ``port`` (any pyserial URL).

    ``hello`` is the body of the hello sent on every open (``fw``, ``proto``,
    ``caps``; see :func:`~firmware_bridge.framing.hello_body`).
    """

    def __init__(
        self,
        port: str,
        *,
        hello: Body,
        on_frame: Callable[[Body, float], None],
        on_port: Callable[[bool, str], None] = _ignore,
        on_give_up: Callable[[Body], None] = _ignore,
        baudrate: int = BAUDRATE,
        open_port: Callable[..., Any] = serial.serial_for_url,
        clock: Callable[[], float] = time.monotonic,
        reopen_s: float = REOPEN_S,
        name: str = "mcu",
    ) -> None:
        self.port_name = port
        self.name = name
        self.hello = dict(hello)
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self._on_frame = on_frame
        self._on_port = on_port
        self._on_give_up = on_give_up
        self._open_port = open_port
        self._clock = clock
        self._endpoint = framing.Endpoint()
        self._lock = threading.Lock()  # the endpoint and the port's write side
        self._idle = threading.Condition(self._lock)  # notified when nothing is in flight
        self._port: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opens = 0
        self._losses = 0
        self._open_failures = 0
        self.last_beat = clock()

    # -- life -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise LinkError(f"link {self.name} is already started")
        self._thread = threading.Thread(target=self._run, name=f"mcu-link-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            port = self._port
        if port is not None:
            try:
                port.cancel_read()
            except (AttributeError, OSError, serial.SerialException):
                pass  # not every pyserial backend can; the read times out soon anyway
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._close_port()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            merged = dict(self._endpoint.counters)
        merged.update(port_opens=self._opens, port_losses=self._losses, open_failures=self._open_failures)
        return merged

    # -- sending ----------------------------------------------------------------

    def send(self, body: Body) -> None:
        """Queue ``body`` for the microcontroller; it goes out at once when nothing is in flight.

        While the port is closed the body is dropped: whatever it said is
        sent again after the next hello (the owner re-sends its state then).
        """
        if self._stop.is_set():
            raise LinkError(f"link {self.name} is closed")
        with self._lock:
            if self._port is None:
                _LOGGER.debug("link %s: port closed, %s frame dropped", self.name, body.get("t"))
                return
            self._endpoint.send(body)
            self._endpoint.poll(self._ms())
            try:
                self._flush()
            except (serial.SerialException, OSError) as exc:
                # The port is going away: the reading thread reports it; the
                # frame is resent from the endpoint if the port survives.
                _LOGGER.debug("link %s: write failed: %s", self.name, exc)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued frame was acknowledged or given up; False on timeout."""
        if self._thread is None:
            return not self._endpoint.busy
        with self._idle:
            return self._idle.wait_for(lambda: self._port is None or not self._endpoint.busy, timeout_s)

    # -- the thread ---------------------------------------------------------------

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_beat = self._clock()
            if self._port is None:
                if not self._open():
                    self._stop.wait(self.reopen_s)
                continue
            try:
                # One byte (or the timeout) wakes the thread, then whatever else
                # is waiting: a read of N bytes would sit out the whole timeout.
                data = self._port.read(1)
                if data and self._port.in_waiting:
                    data += self._port.read(min(self._port.in_waiting, READ_BYTES))
            except (serial.SerialException, OSError) as exc:
                self._lost(str(exc))
                continue
            self._pump(data)

    def _pump(self, data: bytes) -> None:
        now = self._clock()
        with self._lock:
            ms = int(now * 1000)
            bodies = self._endpoint.receive(data, ms) if data else []
            self._endpoint.poll(ms)
            given_up = self._endpoint.take_given_up()
            if not self._endpoint.busy:
                self._idle.notify_all()
            try:
                self._flush()
            except (serial.SerialException, OSError) as exc:
                # Noticed by the next read too; leave the reporting to it.
                _LOGGER.debug("link %s: write failed: %s", self.name, exc)
        for body in bodies:
            self._call(self._on_frame, body, now)
        for body in given_up:
            _LOGGER.warning("link %s: %s frame n=%s not acknowledged after %d resends, dropped", self.name, body["t"], body["n"], framing.MAX_RESENDS)
            self._call(self._on_give_up, body)

    def _flush(self) -> None:
        out = self._endpoint.take_output()
        if out and self._port is not None:
            self._port.write(out)

    def _open(self) -> bool:
        try:
            port = self._open_port(self.port_name, baudrate=self.baudrate, timeout=READ_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._open_failures += 1
            if self._open_failures == 1:
                _LOGGER.warning("link %s: cannot open %s: %s (retrying every %g s)", self.name, self.port_name, exc, self.reopen_s)
                if self._opens == 0:  # missing from the start: as good as lost
                    self._call(self._on_port, False, f"cannot open {self.port_name}: {exc}")
            return False
        try:
            with self._lock:
                self._port = port
                self._endpoint.reset()
                self._endpoint.send(self.hello)
                self._endpoint.poll(self._ms())
                # A lone delimiter first ends whatever half frame the other
                # side may hold from before, so the hello is read whole.
                port.write(b"\x00" + self._endpoint.take_output())
        except (serial.SerialException, OSError) as exc:
            with self._lock:
                self._close_port()
            self._open_failures += 1
            _LOGGER.debug("link %s: %s failed right after opening: %s", self.name, self.port_name, exc)
            return False
        self._opens += 1
        self._open_failures = 0
        _LOGGER.info("link %s: %s open", self.name, self.port_name)
        self._call(self._on_port, True, f"{self.port_name} open")
        return True

    def _lost(self, detail: str) -> None:
        with self._lock:
            self._close_port()
            self._endpoint.reset()
        self._losses += 1
        _LOGGER.warning("link %s: %s lost: %s", self.name, self.port_name, detail)
        self._call(self._on_port, False, f"{self.port_name}: {detail}")

    def _close_port(self) -> None:
        port, self._port = self._port, None
        self._idle.notify_all()
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass  # it is gone already; closing is all that was left to do

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            _LOGGER.exception("link %s: callback %s failed", self.name, getattr(callback, "__qualname__", callback))
