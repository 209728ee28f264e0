"""Simulated RDM6300 and PN532 modules on pseudo-terminals, for tests and the demo.

Each simulator opens a pty, keeps its master side and offers the slave's path
(``path``) to whoever plays the Pi: give it to a reader as ``port``. The pty is
put in raw mode at once, so nothing the simulator writes before the reader
opens the port is echoed back or translated by the line discipline.
``close()`` is the module being unplugged: the reader then gets an I/O error.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from typing import Final

from agent.inputs.readers import pn532
from agent.inputs.readers.pn532 import Command, Frame, FrameReader, Nack
from agent.inputs.readers.rdm6300 import encode_frame

RDM6300_REPEAT_S: Final = 0.1  # a module repeats the frame roughly this often while a card lies on it
_SELECT_S: Final = 0.05


class _Pty:
    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._lock = threading.Lock()
        self.closed = False

    def write(self, data: bytes) -> None:
        # Like a UART with nobody listening: what does not fit is lost.
        with self._lock:
            if self.closed:
                return
            try:
                os.write(self.master, data)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise

    def read(self, timeout_s: float) -> bytes:
        if self.closed:
            return b""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            os.close(self.master)
            os.close(self._slave)


class SimulatedRdm6300:
    """A 125 kHz module: repeats the frame of the card lying on it every ``repeat_s``.

    ``clone=True`` sends the 13-byte frames of the common clones (binary checksum).
    """

    def __init__(self, *, clone: bool = False, repeat_s: float = RDM6300_REPEAT_S) -> None:
        self._pty = _Pty()
        self.path = self._pty.path
        self.clone = clone
        self.repeat_s = repeat_s
        self.frames_written = 0
        self._tag: str | None = None
        self._lift_at: float | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"sim-rdm6300 {self.path}", daemon=True)
        self._thread.start()

    def present(self, tag: str) -> None:
        """Lay the card with id ``tag`` (10 hex digits) on the module until :meth:`remove`."""
        encode_frame(tag)  # refuse a bad tag here, not in the thread
        with self._cond:
            self._tag, self._lift_at = tag, None
            self._cond.notify_all()

    def tap(self, tag: str, hold_s: float = 0.5) -> None:
        """Lay the card on the module for ``hold_s`` seconds (returns at once)."""
        self.present(tag)
        with self._cond:
            self._lift_at = time.monotonic() + hold_s

    def remove(self) -> None:
        with self._cond:
            self._tag, self._lift_at = None, None

    def write_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are: noise, cut frames, corrupted frames."""
        self._pty.write(data)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pty.close()

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                if self._lift_at is not None and time.monotonic() >= self._lift_at:
                    self._tag, self._lift_at = None, None
                if self._tag is None:
                    self._cond.wait()
                    continue
                self._pty.write(encode_frame(self._tag, clone=self.clone))
                self.frames_written += 1
                self._cond.wait(self.repeat_s)


class SimulatedPn532:
    """A PN532 on HSU answering the real command frames.

    Starts in LowVbat mode like the chip after power-up: it ignores commands
    until the 0x55 wake-up preamble, and then wants SAMConfiguration first.
    ``glitch()`` is a power glitch (back to LowVbat, settings lost); ``silent``
    makes it ignore everything (power gone). ``corrupt_next`` garbles the
    next ``corrupt_next`` answers' DCS, so the host's NACK can be seen to work.
    """

    FIRMWARE: Final = bytes([0x32, 0x01, 0x06, 0x07])  # PN532, v1.6, supports ISO A/B and 18092

    def __init__(self) -> None:
        self._pty = _Pty()
        self.path = self._pty.path
        self._lock = threading.Lock()
        self._uid: bytes | None = None
        self._awake = False
        self._sam_done = False
        self.silent = False
        self.corrupt_next = 0
        self.commands: list[int] = []  # command codes received and answered
        self.polls = 0
        self.nacks = 0
        self._last_answer = b""
        self._reader = FrameReader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-pn532 {self.path}", daemon=True)
        self._thread.start()

    def present(self, uid: bytes) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError(f"an ISO 14443A UID is 4, 7 or 10 bytes, not {len(uid)}")
        with self._lock:
            self._uid = uid

    def remove(self) -> None:
        with self._lock:
            self._uid = None

    def glitch(self) -> None:
        with self._lock:
            self._awake = False
            self._sam_done = False

    @property
    def awake(self) -> bool:
        with self._lock:
            return self._awake and self._sam_done

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pty.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            data = self._pty.read(_SELECT_S)
            if not data:
                continue
            with self._lock:
                if self.silent:
                    continue
                if not self._awake:
                    if 0x55 not in data:
                        continue
                    self._awake = True
                    data = data[data.index(0x55) :].lstrip(b"\x55")
                for item in self._reader.feed(data):
                    self._handle(item)

    def _handle(self, item: object) -> None:
        if isinstance(item, Nack):
            self.nacks += 1
            self._send(self._last_answer)
            return
        if not isinstance(item, Frame) or item.tfi != pn532.HOST_TO_PN532 or item.code is None:
            return
        code = item.code
        if not self._sam_done and code != Command.SAM_CONFIGURATION:
            return  # LowVbat: nothing but SAMConfiguration gets through
        self._pty.write(pn532.ACK_FRAME)
        answer = self._answer(code, item.params)
        if answer is None:
            self._last_answer = pn532.ERROR_FRAME
        else:
            self._last_answer = pn532.build_frame(bytes([pn532.PN532_TO_HOST, code + 1]) + answer)
        self.commands.append(code)
        self._send(self._last_answer)

    def _send(self, frame: bytes) -> None:
        if self.corrupt_next and frame != pn532.ERROR_FRAME:
            self.corrupt_next -= 1
            frame = frame[:-2] + bytes([frame[-2] ^ 0x01]) + frame[-1:]
        self._pty.write(frame)

    def _answer(self, code: int, params: bytes) -> bytes | None:
        if code == Command.SAM_CONFIGURATION:
            self._sam_done = True
            return b""
        if code == Command.GET_FIRMWARE_VERSION:
            return self.FIRMWARE
        if code == Command.RF_CONFIGURATION:
            return b""
        if code == Command.IN_LIST_PASSIVE_TARGET:
            self.polls += 1
            if params[:2] != pn532.LIST_ONE_ISO14443A or self._uid is None:
                return b"\x00"
            uid = self._uid
            # Mifare Classic 1K answers SENS_RES 00 04, SEL_RES 08; 7-byte
            # Ultralight/NTAG answer SENS_RES 00 44, SEL_RES 00.
            sens_sel = b"\x00\x04\x08" if len(uid) == 4 else b"\x00\x44\x00"
            return b"\x01\x01" + sens_sel + bytes([len(uid)]) + uid
        return None  # an unknown command: the chip's error frame
