"""PN532 over HSU (UART 115200 8N1): frames (pure) and a small request/response driver.

Frames (NXP PN532 User Manual UM0701-02, section 6.2)::

    normal    00 00 FF LEN LCS TFI PD0..PDn DCS 00          LEN + LCS = 0 (mod 256)
    extended  00 00 FF FF FF LENM LENL LCS TFI PD.. DCS 00  LENM + LENL + LCS = 0
    ACK       00 00 FF 00 FF 00
    NACK      00 00 FF FF 00 00                              "send your last answer again"
    error     00 00 FF 01 FF 7F 81 00                        application-level error

LEN counts TFI and the data; TFI + data + DCS sum to 0 (mod 256). TFI is 0xD4
from the host, 0xD5 from the chip, whose answer code is the command code + 1.

:class:`FrameReader` resynchronises on the 00 FF start code (the leading 00
preamble is optional) and counts what it throws away; :class:`Pn532Driver`
speaks to a chip over a pyserial port and turns a silent chip into
:class:`~agent.inputs.readers.errors.ReaderSilent`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Final, Protocol

from agent.inputs.readers.errors import Cancelled, DeviceError, ReaderFrameError, ReaderSilent

_LOGGER = logging.getLogger(__name__)

PN532_BAUDRATE: Final = 115200
HOST_TO_PN532: Final = 0xD4
PN532_TO_HOST: Final = 0xD5
ERROR_TFI: Final = 0x7F
START_CODE: Final = b"\x00\xff"
ACK_FRAME: Final = b"\x00\x00\xff\x00\xff\x00"
NACK_FRAME: Final = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME: Final = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
# HSU wake-up: 0x55 0x55 then a long run of zeros gives the chip time to come
# out of power-down / LowVbat before the first command (UM0701-02 section 7.2.11;
# libnfc and Adafruit's drivers do the same). The first command must then be
# SAMConfiguration.
WAKEUP: Final = b"\x55\x55" + b"\x00" * 14
NORMAL_MAX_LEN: Final = 255  # LEN of a normal frame (TFI + data)
# The chip's buffer holds 265 bytes of TFI + data; a longer extended LEN is noise.
EXTENDED_MAX_LEN: Final = 265


class Command(IntEnum):
    GET_FIRMWARE_VERSION = 0x02
    SAM_CONFIGURATION = 0x14
    RF_CONFIGURATION = 0x32
    IN_LIST_PASSIVE_TARGET = 0x4A


SAM_NORMAL_MODE: Final = b"\x01\x14\x01"  # mode 1 (no SAM), timeout 20 * 50 ms, use IRQ
# RFConfiguration item 5 (MaxRetries): MxRtyATR=0xFF, MxRtyPSL=0x01,
# MxRtyPassiveActivation=0x02. The default 0xFF makes InListPassiveTarget wait
# for a card for ever, and a chip that waits cannot be told from a dead one;
# with two retries it answers "no target" within a few ms.
RF_MAX_RETRIES: Final = b"\x05\xff\x01\x02"
LIST_ONE_ISO14443A: Final = b"\x01\x00"  # MaxTg=1, BrTy=0x00 (106 kbps type A)


@dataclass(slots=True, frozen=True)
class Frame:
    """An information frame; ``data`` is TFI followed by the packet data."""

    data: bytes

    @property
    def tfi(self) -> int:
        return self.data[0]

    @property
    def code(self) -> int | None:
        return self.data[1] if len(self.data) > 1 else None

    @property
    def params(self) -> bytes:
        return self.data[2:]


@dataclass(slots=True, frozen=True)
class Ack:
    pass


@dataclass(slots=True, frozen=True)
class Nack:
    pass


@dataclass(slots=True, frozen=True)
class ErrorFrame:
    """The chip's application-level error frame (a syntax error in what it was sent)."""


Item = Frame | Ack | Nack | ErrorFrame

COUNTER_NAMES: Final = (
    "frames",
    "bad_lcs",
    "bad_dcs",
    "bad_postamble",
    "oversized",
    "cut",  # the line went quiet in the middle of a frame
    "noise_bytes",
)


def build_frame(data: bytes) -> bytes:
    """A normal frame for ``data`` (TFI + packet data), or an extended one beyond 255 bytes."""
    n = len(data)
    if n == 0:
        raise ReaderFrameError("PN532 frame: data must hold at least the TFI byte")
    if n > EXTENDED_MAX_LEN:
        raise ReaderFrameError(f"PN532 frame: {n} bytes of data is more than {EXTENDED_MAX_LEN}")
    dcs = (-sum(data)) & 0xFF
    if n <= NORMAL_MAX_LEN:
        head = bytes([0x00, 0x00, 0xFF, n, (-n) & 0xFF])
    else:
        hi, lo = n >> 8, n & 0xFF
        head = bytes([0x00, 0x00, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF])
    return head + data + bytes([dcs, 0x00])


def command_frame(command: int, params: bytes = b"") -> bytes:
    return build_frame(bytes([HOST_TO_PN532, command]) + params)


class FrameReader:
    """Bytes in, frames out; never touches the port.

    ``rejected`` is the running total of frames thrown away (bad LCS, DCS or
    postamble, oversized, cut), which lets a driver see that an answer was garbled and ask
    for it again with a NACK.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.rejected = 0

    def feed(self, data: bytes) -> list[Item]:
        self._buf += data
        return self._drain()

    def expire(self) -> list[Item]:
        """The line went quiet: a frame still waiting for bytes was cut; drop it, read what follows.

        A chip sends a frame in one burst, so a gap in the middle of one means
        bytes were lost. Without this a cut frame would swallow the frames
        after it until its announced length was reached.
        """
        if self._buf.find(START_CODE) < 0:
            self._skip(len(self._buf))
            return []
        self._skip(self._buf.find(START_CODE))
        self._reject("cut")
        del self._buf[: len(START_CODE)]
        return self._drain()

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished frame are waiting."""
        return self._buf.find(START_CODE) >= 0

    def _drain(self) -> list[Item]:
        items: list[Item] = []
        while True:
            start = self._buf.find(START_CODE)
            if start < 0:
                # Keep a trailing 00: it may be the first half of a start code.
                keep = 1 if self._buf.endswith(b"\x00") else 0
                self._skip(len(self._buf) - keep)
                break
            self._skip(start)
            item, used = self._parse()
            if used is None:
                break  # incomplete: wait for more bytes
            del self._buf[:used]
            if item is not None:
                items.append(item)
        return items

    def reset(self) -> None:
        self._buf.clear()

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        # The 00 preamble and postamble bytes around frames are not noise.
        self.counters["noise_bytes"] += n - self._buf.count(0, 0, n)
        del self._buf[:n]

    def _reject(self, counter: str) -> tuple[None, int]:
        self.counters[counter] += 1
        self.rejected += 1
        return None, len(START_CODE)  # drop the start code, resynchronise on the next

    def _parse(self) -> tuple[Item | None, int | None]:
        """(item, bytes used) for the frame at the start of the buffer; used None = incomplete."""
        buf = self._buf
        if len(buf) < 4:
            return None, None
        a, b = buf[2], buf[3]
        if (a, b) == (0x00, 0xFF):
            return Ack(), self._with_postamble(4)
        if (a, b) == (0xFF, 0x00):
            return Nack(), self._with_postamble(4)
        if (a, b) == (0xFF, 0xFF):
            if len(buf) < 7:
                return None, None
            length, head = (buf[4] << 8) | buf[5], 7
            if (buf[4] + buf[5] + buf[6]) & 0xFF:
                return self._reject("bad_lcs")
        else:
            length, head = a, 4
            if (a + b) & 0xFF:
                return self._reject("bad_lcs")
        if length == 0 or length > EXTENDED_MAX_LEN:
            return self._reject("oversized" if length else "bad_lcs")
        end = head + length + 1  # data, then DCS
        if len(buf) < end + 1:  # and the postamble
            return None, None
        data = bytes(buf[head : head + length])
        if (sum(data) + buf[head + length]) & 0xFF:
            return self._reject("bad_dcs")
        if buf[end] != 0x00:
            # Checked as libnfc does: after a cut frame, bytes of the next one
            # can complete it and pass the 8-bit DCS by chance; the postamble
            # is a second, independent test.
            return self._reject("bad_postamble")
        self.counters["frames"] += 1
        if data == bytes([ERROR_TFI]):
            return ErrorFrame(), end + 1
        return Frame(data), end + 1

    def _with_postamble(self, used: int) -> int:
        if len(self._buf) > used and self._buf[used] == 0x00:
            return used + 1
        return used


def parse_target_uid(params: bytes) -> bytes | None:
    """The UID from InListPassiveTarget's answer for one ISO 14443A target; None when no card.

    Answer (UM0701-02 section 7.3.5): NbTg, then per target Tg, SENS_RES (2),
    SEL_RES, NFCIDLength, NFCID1, and an ATS for ISO 14443-4 cards.
    """
    if not params:
        raise ReaderFrameError("InListPassiveTarget answer: empty")
    count = params[0]
    if count == 0:
        return None
    if count > 1:
        raise ReaderFrameError(f"InListPassiveTarget answer: {count} targets for MaxTg=1")
    if len(params) < 6:
        raise ReaderFrameError("InListPassiveTarget answer: target data cut short")
    uid_len = params[5]
    if uid_len not in (4, 7, 10):
        raise ReaderFrameError(f"InListPassiveTarget answer: a {uid_len}-byte UID is not ISO 14443A (4, 7 or 10)")
    uid = params[6 : 6 + uid_len]
    if len(uid) != uid_len:
        raise ReaderFrameError("InListPassiveTarget answer: UID cut short")
    return uid


class Port(Protocol):
    """What the driver needs of a pyserial port."""

    def write(self, data: bytes, /) -> int | None: ...
    def read(self, size: int = 1, /) -> bytes: ...
    def reset_input_buffer(self) -> None: ...
    @property
    def in_waiting(self) -> int: ...


ACK_TIMEOUT_S: Final = 0.5
ANSWER_TIMEOUT_S: Final = 1.0
NACK_RETRIES: Final = 2
_GARBLED: Final = object()


class Pn532Driver:
    """Request/response with a PN532 on a pyserial ``port``.

    The caller opens the port with a short read timeout (tens of ms): a read
    that times out in the middle of a frame is how a cut frame is noticed.

    Every method raises :class:`ReaderSilent` when the chip does not acknowledge
    within ``ack_timeout_s`` or answer within ``answer_timeout_s``, and
    :class:`DeviceError` on its error frame, and :class:`Cancelled` as soon as
    ``cancelled()`` turns true; pyserial's own exceptions (the port went away)
    pass through untouched.
    """

    def __init__(
        self,
        port: Port,
        *,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._port = port
        self._cancelled = cancelled
        self._clock = clock
        self._ack_timeout_s = ack_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._reader = FrameReader()
        self._items: deque[Item | object] = deque()
        self.counters: dict[str, int] = {"nacks_sent": 0, "stale_frames": 0, "error_frames": 0}

    @property
    def frame_counters(self) -> dict[str, int]:
        return self._reader.counters

    def wake(self) -> None:
        """Send the HSU wake-up preamble; SAMConfiguration must follow."""
        self._port.write(WAKEUP)

    def sam_configuration(self) -> None:
        self.command(Command.SAM_CONFIGURATION, SAM_NORMAL_MODE)

    def limit_retries(self) -> None:
        self.command(Command.RF_CONFIGURATION, RF_MAX_RETRIES)

    def firmware_version(self) -> tuple[int, int, int, int]:
        """(IC, Ver, Rev, Support): a PN532 v1.6 answers (0x32, 1, 6, 7)."""
        p = self.command(Command.GET_FIRMWARE_VERSION)
        if len(p) != 4:
            raise ReaderFrameError(f"GetFirmwareVersion answer: {len(p)} bytes, expected 4")
        return p[0], p[1], p[2], p[3]

    def poll(self) -> bytes | None:
        """One InListPassiveTarget for an ISO 14443A card: its UID, or None."""
        return parse_target_uid(self.command(Command.IN_LIST_PASSIVE_TARGET, LIST_ONE_ISO14443A))

    def command(self, code: int, params: bytes = b"") -> bytes:
        """Send one command; the answer's parameters (after D5 and code + 1)."""
        # Whatever is still buffered answers an earlier, abandoned command.
        self._port.reset_input_buffer()
        self._reader.reset()
        self._items.clear()
        frame = command_frame(code, params)
        self._port.write(frame)
        answer_code = (code + 1) & 0xFF
        deadline = self._clock() + self._ack_timeout_s
        acked = False
        nacks = 0
        while True:
            item = self._next(deadline, what="acknowledge" if not acked else "answer", code=code)
            if item is _GARBLED:
                if acked and nacks < NACK_RETRIES:
                    nacks += 1
                    self.counters["nacks_sent"] += 1
                    _LOGGER.debug("PN532 answer to command 0x%02X garbled: NACK %d", code, nacks)
                    self._port.write(NACK_FRAME)
                    deadline = self._clock() + self._answer_timeout_s
                continue
            if isinstance(item, Ack):
                if not acked:
                    acked = True
                    deadline = self._clock() + self._answer_timeout_s
                continue
            if isinstance(item, Nack):
                # The chip lost our command: send it again.
                self._port.write(frame)
                continue
            if isinstance(item, ErrorFrame):
                self.counters["error_frames"] += 1
                raise DeviceError(f"PN532 answered command 0x{code:02X} with its error frame")
            assert isinstance(item, Frame)
            if item.tfi == PN532_TO_HOST and item.code == answer_code:
                # A lost ACK is no reason to refuse a good answer.
                return item.params
            self.counters["stale_frames"] += 1
            _LOGGER.debug("PN532: dropped a frame that does not answer command 0x%02X", code)

    def _next(self, deadline: float, *, what: str, code: int) -> Item | object:
        while not self._items:
            if self._cancelled():
                raise Cancelled(f"PN532 command 0x{code:02X} abandoned: the reader is closing")
            if self._clock() > deadline:
                raise ReaderSilent(f"PN532 did not {what} command 0x{code:02X} in time")
            chunk = self._port.read(max(1, self._port.in_waiting))
            before = self._reader.rejected
            if chunk:
                self._items.extend(self._reader.feed(chunk))
            elif self._reader.pending:
                # A read timeout's worth of silence inside a frame: it was cut.
                self._items.extend(self._reader.expire())
            if self._reader.rejected != before:
                self._items.append(_GARBLED)
        return self._items.popleft()
