"""A checkpoint reader on a serial port: one thread per reader, scans out through an EventSink.

The thread owns the port (any pyserial URL or device path). It feeds what it
reads to the protocol's pure parser, lets :class:`PresenceFilter` turn a card
lying on the reader into one scan, and calls ``emit`` itself: this is our own
thread, not a callback of pyserial's, and the sink returns quickly.

When the port disappears (a USB reader unplugged or re-enumerated) it emits a
``port-lost`` fault, tries to reopen with a backoff capped at
``RECONNECT_MAX_S``, and emits ``port-back`` when the port is there again.
"""

from __future__ import annotations

import logging
import termios
import threading
import time
from enum import StrEnum
from typing import Any, Callable, Final

import serial

from agent.config import ReaderConfig
from agent.events import EventSink, FaultCode
from agent.inputs.readers.errors import Cancelled, DeviceError, ReaderFrameError, ReaderSilent
from agent.inputs.readers.pn532 import PN532_BAUDRATE, Pn532Driver
from agent.inputs.readers.presence import PRESENCE_ABSENT_S, PresenceFilter
from agent.inputs.readers.rdm6300 import RDM6300_BAUDRATE, Rdm6300Parser
from wire.messages import EventKind, ScanFormat

_LOGGER = logging.getLogger(__name__)

READ_TIMEOUT_S: Final = 0.05  # a read returns this often with nothing, so close() is prompt
RECONNECT_MIN_S: Final = 0.1
RECONNECT_MAX_S: Final = 2.0
PN532_POLL_S: Final = 0.1  # well below the 1 s absence rule, cheap for the chip
# A PN532 that keeps failing to answer for this long is reported; shorter
# glitches are recovered (wake-up + SAMConfiguration) and only counted.
READER_SILENT_FAULT_S: Final = 5.0
JOIN_TIMEOUT_S: Final = 5.0
MAX_DETAIL_LEN: Final = 500

DEFAULT_BAUDRATES: Final = {"rdm6300": RDM6300_BAUDRATE, "pn532": PN532_BAUDRATE}
SCAN_FORMATS: Final = {"rdm6300": ScanFormat.EM4100, "pn532": ScanFormat.ISO14443A}

OpenPort = Callable[..., Any]

# What a port that went away raises. pyserial lets termios.error (not an
# OSError) through from reset_input_buffer() on a device that has vanished.
PORT_ERRORS: Final = (serial.SerialException, OSError, termios.error)


class ReaderState(StrEnum):
    UP = "up"
    DOWN = "down"


class SerialReader:
    """An RDM6300 or PN532 reader on ``config.port``; a ``scan`` per presentation of a card.

    ``counters`` (telemetry) holds the parser's drops (bad checksums, garbled
    frames, line noise) and the reader's own: scans, ports lost, PN532
    recoveries. ``state`` is ``up`` while the port is open and the reader
    answers, ``down`` otherwise. ``last_beat`` is the monotonic time the thread
    last went round its loop.
    """

    def __init__(
        self,
        config: ReaderConfig,
        *,
        emit: EventSink,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        open_port: OpenPort = serial.serial_for_url,
        absent_s: float = PRESENCE_ABSENT_S,
        silent_fault_s: float = READER_SILENT_FAULT_S,
    ) -> None:
        if config.protocol not in DEFAULT_BAUDRATES:
            raise ValueError(f"reader {config.name!r}: protocol {config.protocol!r} is not read on a serial port")
        if not config.port:
            raise ValueError(f"reader {config.name!r}: no port")
        self.config = config
        self.name = config.name
        self._emit = emit
        self._wake = wake
        self._clock = clock
        self._open_port = open_port
        self._absent_s = absent_s
        self._silent_fault_s = silent_fault_s
        self._baudrate = config.baudrate or DEFAULT_BAUDRATES[config.protocol]
        self._presence = PresenceFilter(absent_s)
        self._rdm = Rdm6300Parser()
        self._driver: Pn532Driver | None = None
        # Counters of the PN532 drivers of earlier sessions: telemetry counters only grow.
        self._carried: dict[str, int] = {}
        self._lock = threading.Lock()
        self._own: dict[str, int] = dict.fromkeys(
            ("scans", "port_lost", "open_failures", "silent", "recoveries", "device_errors", "bad_answers", "thread_restarts"),
            0,
        )
        self._state = ReaderState.DOWN
        self._port: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat = clock()

    # -- public ------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            merged = dict(self._own)
            if self.config.protocol == "rdm6300":
                merged.update(self._rdm.counters)
                return merged
            merged.update(self._carried)
            if self._driver is not None:
                for name, value in (*self._driver.frame_counters.items(), *self._driver.counters.items()):
                    merged[name] = merged.get(name, 0) + value
            return merged

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"reader {self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the port; returns within a read timeout or so."""
        self._stop.set()
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()
            except PORT_ERRORS:  # the thread may be closing it at this very moment
                pass
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                _LOGGER.warning("reader %s: thread did not stop within %s s", self.name, JOIN_TIMEOUT_S)

    def tick(self, now: float) -> float | None:
        """Restart the thread should it have died; the reading itself needs no tick."""
        if self._stop.is_set() or self._thread is None or self._thread.is_alive():
            return None
        _LOGGER.error("reader %s: its thread died; starting it again", self.name)
        self._count("thread_restarts")
        self.start()
        return None

    # -- the thread --------------------------------------------------------

    def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        lost = False  # a port-lost fault went out and port-back has not
        while not self._stop.is_set():
            self.last_beat = self._clock()
            try:
                self._port = self._open_port(self.config.port, baudrate=self._baudrate, timeout=READ_TIMEOUT_S)
            except (*PORT_ERRORS, ValueError) as exc:
                self._count("open_failures")
                if not lost:  # also at start: a reader missing at boot is worth a fault
                    lost = True
                    self._fault(FaultCode.PORT_LOST, f"cannot open {self.config.port}: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            backoff = RECONNECT_MIN_S
            try:
                if lost:
                    lost = False
                    _LOGGER.info("reader %s: port %s is back", self.name, self.config.port)
                    self._fault(FaultCode.PORT_BACK, f"{self.config.port} opened again")
                self._session()
            except Cancelled:
                pass
            except PORT_ERRORS as exc:
                lost = True
                self._state = ReaderState.DOWN
                self._count("port_lost")
                _LOGGER.warning("reader %s: port %s lost: %s", self.name, self.config.port, exc)
                self._fault(FaultCode.PORT_LOST, f"{self.config.port}: {exc}")
                # Give a re-enumerating USB device a moment before the first retry.
                self._stop.wait(RECONNECT_MIN_S)
            except Exception:
                # Contained: a bug must not end the reader for good.
                _LOGGER.exception("reader %s: unexpected error; reopening the port", self.name)
                self._stop.wait(RECONNECT_MAX_S)
            finally:
                self._state = ReaderState.DOWN
                self._close_port()
        self._close_port()

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except PORT_ERRORS as exc:
                _LOGGER.debug("reader %s: closing the port: %s", self.name, exc)

    def _session(self) -> None:
        if self.config.protocol == "rdm6300":
            self._rdm6300_session()
            return
        try:
            self._pn532_session()
        finally:
            with self._lock:
                driver, self._driver = self._driver, None
                if driver is not None:
                    for name, value in (*driver.frame_counters.items(), *driver.counters.items()):
                        self._carried[name] = self._carried.get(name, 0) + value

    def _rdm6300_session(self) -> None:
        port = self._port
        with self._lock:
            self._rdm.reset()
        self._state = ReaderState.UP  # an RDM6300 says nothing until a card comes: an open port is all we know
        last_data = self._clock()
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))
            now = self._clock()
            self.last_beat = now
            if data:
                last_data = now
                with self._lock:
                    tags = self._rdm.feed(data)
                for tag in tags:
                    self._sighting(tag, now)
            elif now - last_data >= self._absent_s:
                # The module is quiet once the card is gone: bytes of a frame cut
                # before the quiet spell must not join bytes that come after it.
                with self._lock:
                    self._rdm.reset()
                last_data = now
            self._presence.tick(now)

    def _pn532_session(self) -> None:
        with self._lock:
            self._driver = Pn532Driver(self._port, clock=self._clock, cancelled=self._stop.is_set)
        driver = self._driver
        ready = False
        silent_since: float | None = None
        reported = False
        while not self._stop.is_set():
            now = self._clock()
            self.last_beat = now
            try:
                if not ready:
                    driver.wake()
                    driver.sam_configuration()
                    driver.limit_retries()
                    ready = True
                    if silent_since is not None:
                        self._count("recoveries")
                        _LOGGER.info("reader %s: PN532 answers again", self.name)
                        if reported:
                            self._fault(FaultCode.READER_BACK, f"PN532 on {self.config.port} answers again")
                    silent_since, reported = None, False
                    self._state = ReaderState.UP
                uid = driver.poll()
            except ReaderSilent as exc:
                # Caught here: ReaderSilent is a TimeoutError, hence an OSError,
                # which _run would take for a lost port.
                self._count("silent")
                ready = False
                if silent_since is None:
                    silent_since = now
                    _LOGGER.warning("reader %s: %s; waking it up", self.name, exc)
                elif not reported and now - silent_since >= self._silent_fault_s:
                    reported = True
                    self._state = ReaderState.DOWN
                    self._fault(
                        FaultCode.READER_SILENT,
                        f"PN532 on {self.config.port} has not answered for {self._silent_fault_s:g} s",
                    )
                continue
            except DeviceError as exc:
                self._count("device_errors")
                _LOGGER.debug("reader %s: %s", self.name, exc)
                ready = False
                self._stop.wait(PN532_POLL_S)
                continue
            except ReaderFrameError as exc:
                self._count("bad_answers")
                _LOGGER.debug("reader %s: %s", self.name, exc)
                uid = None
            now = self._clock()
            if uid is not None:
                self._sighting(uid.hex().upper(), now)
            self._presence.tick(now)
            self._stop.wait(PN532_POLL_S)

    def _sighting(self, tag: str, now: float) -> None:
        if not self._presence.seen(tag, now):
            return
        self._count("scans")
        _LOGGER.info("reader %s: scan %s", self.name, tag)
        self._send(EventKind.SCAN, tag=tag, fmt=str(SCAN_FORMATS[self.config.protocol]))

    def _fault(self, code: str, detail: str) -> None:
        self._send(EventKind.FAULT, code=code, detail=detail[:MAX_DETAIL_LEN])

    def _send(self, kind: EventKind, **fields: Any) -> None:
        try:
            self._emit(kind, self.name, **fields)
        except Exception:
            _LOGGER.exception("reader %s: could not record a %s event %s", self.name, kind, fields)
        self._wake()

    def _count(self, name: str) -> None:
        with self._lock:
            self._own[name] += 1
