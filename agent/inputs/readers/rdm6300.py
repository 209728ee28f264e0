"""RDM6300 (and clones) 125 kHz EM4100 frames: bytes in, tags out (pure).

The module talks 9600 8N1 and sends, for as long as a card lies on it::

    0x02 | 10 ASCII hex digits (the 5-byte EM4100 id) | checksum | 0x03

The checksum is the XOR of the five id bytes. Genuine modules send it as two
ASCII hex digits (a 14-byte frame); common clones send it as one binary byte
(13 bytes). The two forms cannot be confused: byte 12 of a genuine frame is a
hex digit, of a clone frame it is the 0x03 end mark.

Every valid frame is reported (the presence filter downstream turns the
repeats of a card lying on the reader into one scan). One valid frame is
enough: every reference decoder reports on the first, and the binary-checksum
clones repeat only every 1-2 s, so waiting for a second frame reported a card
late, never (a quick tap), or as several taps. All-zero ids are refused.
"""

from __future__ import annotations

from typing import Final

RDM6300_BAUDRATE: Final = 9600
STX: Final = 0x02
ETX: Final = 0x03
ID_DIGITS: Final = 10
GENUINE_FRAME_LEN: Final = 14  # STX + 10 digits + 2 checksum digits + ETX
CLONE_FRAME_LEN: Final = 13  # STX + 10 digits + 1 binary checksum + ETX

_HEX_DIGITS: Final = frozenset(b"0123456789ABCDEFabcdef")
_ZERO_ID: Final = "0" * ID_DIGITS

COUNTER_NAMES: Final = (
    "frames",  # valid frames (checksum good, id not zero)
    "bad_checksum",
    "garbled",  # a frame started but was cut, held a non-hex digit or missed its end mark
    "zero_id",
    "noise_bytes",  # bytes outside any frame
)


def checksum(id_bytes: bytes) -> int:
    """XOR of the id bytes: the RDM6300 frame checksum."""
    value = 0
    for b in id_bytes:
        value ^= b
    return value


def encode_frame(tag: str, *, clone: bool = False) -> bytes:
    """The frame a module sends for ``tag`` (10 hex digits); ``clone`` gives the 13-byte form."""
    id_bytes = bytes.fromhex(tag)
    if len(id_bytes) != ID_DIGITS // 2:
        raise ValueError(f"RDM6300 tag must be {ID_DIGITS} hex digits, not {tag!r}")
    cs = checksum(id_bytes)
    tail = bytes([cs]) if clone else f"{cs:02X}".encode("ascii")
    return bytes([STX]) + tag.upper().encode("ascii") + tail + bytes([ETX])


class Rdm6300Parser:
    """Feeds bytes from the port; returns the tag of each valid frame in them.

    Resynchronises on 0x02 after garbage or a cut frame: a frame that breaks
    off is dropped the moment a byte cannot belong to it, so the frame that
    follows is not lost. Bad frames are counted in ``counters``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        tags: list[str] = []
        while self._buf:
            start = self._buf.find(STX)
            if start < 0:
                self.counters["noise_bytes"] += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.counters["noise_bytes"] += start
                del self._buf[:start]
            length = self._frame_length()
            if length is None:  # a frame in progress: wait for more bytes
                break
            if length == 0:  # cannot be a frame: drop its STX, look for the next one
                self._bad("garbled")
                del self._buf[:1]
                continue
            frame = bytes(self._buf[:length])
            del self._buf[:length]
            tag = self._check(frame)
            if tag is not None:
                tags.append(tag)
        return tags

    def reset(self) -> None:
        """Forget a partial frame (after the port reopens or a quiet spell)."""
        self._buf.clear()

    def _frame_length(self) -> int | None:
        """13 or 14 for a complete frame at the start of the buffer, None to wait, 0 when garbled."""
        buf = self._buf
        # Digits 1..10 must be hex: stop at the first byte that is not.
        for i in range(1, min(len(buf), 1 + ID_DIGITS)):
            if buf[i] not in _HEX_DIGITS:
                return 0
        if len(buf) < CLONE_FRAME_LEN:
            return None
        if buf[12] == ETX:
            return CLONE_FRAME_LEN  # clone: byte 11 is the binary checksum, whatever its value
        if buf[11] not in _HEX_DIGITS or buf[12] not in _HEX_DIGITS:
            return 0
        if len(buf) < GENUINE_FRAME_LEN:
            return None
        return GENUINE_FRAME_LEN if buf[13] == ETX else 0

    def _check(self, frame: bytes) -> str | None:
        digits = frame[1 : 1 + ID_DIGITS].decode("ascii").upper()
        if len(frame) == GENUINE_FRAME_LEN:
            sent = int(frame[11:13].decode("ascii"), 16)
        else:
            sent = frame[11]
        if checksum(bytes.fromhex(digits)) != sent:
            self._bad("bad_checksum")
            return None
        if digits == _ZERO_ID:
            self._bad("zero_id")
            return None
        self.counters["frames"] += 1
        return digits

    def _bad(self, counter: str) -> None:
        self.counters[counter] += 1
