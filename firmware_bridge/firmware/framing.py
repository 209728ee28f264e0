"""The microcontroller link: framing, CRC, a small msgpack codec, stop-and-wait.

One pure module shared by the Pi and the firmware, kept in one file (longer
than our other modules) so that the board needs exactly one copy. It runs unchanged under
CPython and MicroPython, so it keeps to what both have: no typing imports, no
dataclasses, no enum, no f-strings, ``struct`` only (with ``binascii`` used when
it has ``crc_hqx``). Nothing here touches a port or a clock: callers hand in
bytes and the time in milliseconds, and take bytes back to write.

Wire format (docs/reference.md, "Microcontroller link"): each frame is
``COBS(body + crc) + 0x00``; ``body`` is a msgpack map with ``t`` (type) and
``n`` (frame number, 0..65535, wrapping); ``crc`` is CRC-16/CCITT-FALSE of the
body, two bytes big-endian.
"""

import struct

try:  # CPython: the C implementation; with init 0xFFFF it is CCITT-FALSE
    from binascii import crc_hqx as _crc_hqx
except ImportError:  # MicroPython's binascii has crc32 only
    _crc_hqx = None  # type: ignore[assignment]

try:  # MicroPython: ticks_ms() wraps, so differences go through ticks_diff
    from time import ticks_diff  # type: ignore[attr-defined]
except ImportError:

    def ticks_diff(a, b):
        return a - b


PROTO = 1
RESEND_MS = 200
MAX_RESENDS = 5
RESEND_MAX_MS = 1000  # without a give-up, the wait between sendings doubles up to this
REMEMBER = 16  # frame numbers a receiver keeps to spot repeats
QUEUE_MAX = 32  # bodies waiting behind the one in flight
MAX_BODY_BYTES = 256
# COBS adds one byte per 254 and one in front; the crc adds two.
MAX_WIRE_BYTES = MAX_BODY_BYTES + 2 + 1 + (MAX_BODY_BYTES + 2) // 254
MAX_DEPTH = 8  # nesting of msgpack containers
N_MODULO = 0x10000

# Frame types (``t``).
HELLO = "hello"
ZONE = "zone"
BUTTON = "button"
WIEGAND = "wiegand"
TAG = "tag"
HB = "hb"
OUT = "out"
SYNC = "sync"
ACK = "ack"

# Loop states (``zone`` frames) and button states (``button`` frames).
NORMAL = "normal"
ALARM = "alarm"
TAMPER_SHORT = "tamper-short"
TAMPER_CUT = "tamper-cut"
ZONE_STATES = (NORMAL, ALARM, TAMPER_SHORT, TAMPER_CUT)
PRESSED = "pressed"
RELEASED = "released"
BUTTON_STATES = (PRESSED, RELEASED)

# Counter names, shared by the Deframer and the Endpoint.
COUNTERS = (
    "frames_in",  # good frames read
    "frames_out",  # frames written, acks and resends included
    "cobs_errors",
    "crc_errors",
    "body_errors",  # COBS and CRC fine, but not a msgpack map with t and n
    "overruns",  # bytes without a delimiter past MAX_WIRE_BYTES
    "duplicates",  # a repeated frame number: acked again, not delivered
    "retransmits",
    "gave_up",  # frames dropped after MAX_RESENDS resends
    "stray_acks",  # an ack for a frame not in flight
    "queue_drops",  # oldest waiting body dropped because the queue was full
)


class BridgeError(Exception):
    """Root of every error of the firmware bridge."""


try:

    class FrameError(BridgeError, ValueError):
        """Bytes from the link are not a frame; ``counter`` names what to count."""

        counter = "body_errors"

except TypeError:  # MicroPython cannot mix two native exception bases

    class FrameError(BridgeError):  # type: ignore[no-redef]
        """Bytes from the link are not a frame; ``counter`` names what to count."""

        counter = "body_errors"


class CobsError(FrameError):
    counter = "cobs_errors"


class CrcError(FrameError):
    counter = "crc_errors"


def new_counters():
    counters = {}
    for name in COUNTERS:
        counters[name] = 0
    return counters


# -- CRC-16/CCITT-FALSE -------------------------------------------------------


def _crc_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16_table(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE in Python, a byte at a time (what the Pico runs)."""
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def crc16(data):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    if _crc_hqx is not None:
        return _crc_hqx(data, 0xFFFF)
    return crc16_table(data)


# -- COBS (Cheshire & Baker, 1999) ---------------------------------------------


def cobs_encode(data):
    """Encode ``data`` so that it holds no zero byte (the delimiter is not added)."""
    out = bytearray()
    pieces = bytes(data).split(b"\x00")
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        full = False
        while len(piece) >= 254:
            out.append(0xFF)
            out += piece[:254]
            piece = piece[254:]
            full = True
        # A 254-byte block that ends the data needs no code byte after it: the
        # decoder adds no zero behind a 0xFF block (Wikipedia, example 7).
        if piece or not full or index != last:
            out.append(len(piece) + 1)
            out += piece
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (without its delimiter); raise CobsError when malformed."""
    data = bytes(data)
    out = bytearray()
    size = len(data)
    i = 0
    while i < size:
        code = data[i]
        if code == 0:
            raise CobsError("COBS data holds a zero byte at offset %d" % i)
        end = i + code
        if end > size:
            raise CobsError("COBS block at offset %d runs %d bytes past the end" % (i, end - size))
        block = data[i + 1 : end]
        if b"\x00" in block:
            raise CobsError("COBS data holds a zero byte in the block at offset %d" % i)
        out += block
        i = end
        if code < 0xFF and i < size:
            out.append(0)
    return bytes(out)


# -- msgpack, the subset the link uses: nil, bool, int, str, bin, array, map ---


def pack(obj):
    """Encode ``obj`` as msgpack; raise FrameError for types outside the subset."""
    buf = bytearray()
    _pack(obj, buf, 0)
    return bytes(buf)


def _pack(obj, buf, depth):
    if depth > MAX_DEPTH:
        raise FrameError("msgpack nesting deeper than %d" % MAX_DEPTH)
    if obj is None:
        buf.append(0xC0)
    elif obj is True:
        buf.append(0xC3)
    elif obj is False:
        buf.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, buf)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _pack_head(buf, len(raw), 0xA0, 32, 0xD9, 0xDA, 0xDB)
        buf += raw
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        _pack_head(buf, len(raw), None, 0, 0xC4, 0xC5, 0xC6)
        buf += raw
    elif isinstance(obj, (list, tuple)):
        _pack_head(buf, len(obj), 0x90, 16, None, 0xDC, 0xDD)
        for item in obj:
            _pack(item, buf, depth + 1)
    elif isinstance(obj, dict):
        _pack_head(buf, len(obj), 0x80, 16, None, 0xDE, 0xDF)
        for key, value in obj.items():
            _pack(key, buf, depth + 1)
            _pack(value, buf, depth + 1)
    else:
        raise FrameError("cannot pack a %s: the link carries nil, bool, int, str, bin, array and map" % type(obj).__name__)


def _pack_head(buf, size, fix, fix_limit, code8, code16, code32):
    if fix is not None and size < fix_limit:
        buf.append(fix | size)
    elif code8 is not None and size <= 0xFF:
        buf.append(code8)
        buf.append(size)
    elif size <= 0xFFFF:
        buf.append(code16)
        buf += struct.pack(">H", size)
    elif size <= 0xFFFFFFFF:
        buf.append(code32)
        buf += struct.pack(">I", size)
    else:
        raise FrameError("msgpack item of %d elements is too long" % size)


def _pack_int(value, buf):
    if 0 <= value <= 0x7F:
        buf.append(value)
    elif -32 <= value < 0:
        buf.append(value & 0xFF)
    elif value > 0:
        if value <= 0xFF:
            buf.append(0xCC)
            buf.append(value)
        elif value <= 0xFFFF:
            buf.append(0xCD)
            buf += struct.pack(">H", value)
        elif value <= 0xFFFFFFFF:
            buf.append(0xCE)
            buf += struct.pack(">I", value)
        elif value <= 0xFFFFFFFFFFFFFFFF:
            buf.append(0xCF)
            buf += struct.pack(">Q", value)
        else:
            raise FrameError("integer %d does not fit in 64 bits" % value)
    elif value >= -0x80:
        buf.append(0xD0)
        buf += struct.pack(">b", value)
    elif value >= -0x8000:
        buf.append(0xD1)
        buf += struct.pack(">h", value)
    elif value >= -0x80000000:
        buf.append(0xD2)
        buf += struct.pack(">i", value)
    elif value >= -0x8000000000000000:
        buf.append(0xD3)
        buf += struct.pack(">q", value)
    else:
        raise FrameError("integer %d does not fit in 64 bits" % value)


def unpack(data):
    """Decode one msgpack object that fills ``data``; raise FrameError otherwise."""
    data = bytes(data)
    obj, end = _unpack(data, 0, 0)
    if end != len(data):
        raise FrameError("msgpack data has %d trailing bytes" % (len(data) - end))
    return obj


# (format, size) of fixed-width numbers by their msgpack code
_NUMBERS = {
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}
# code -> (kind, bytes of the length field)
_SIZED = {
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
    0xD9: ("str", 1),
    0xDA: ("str", 2),
    0xDB: ("str", 4),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xDE: ("map", 2),
    0xDF: ("map", 4),
}
_LENGTH_FORMATS = {1: ">B", 2: ">H", 4: ">I"}


def _take(data, i, size):
    if i + size > len(data):
        raise FrameError("msgpack data ends %d bytes early" % (i + size - len(data)))
    return i + size


def _unpack(data, i, depth):
    if depth > MAX_DEPTH:
        raise FrameError("msgpack nesting deeper than %d" % MAX_DEPTH)
    _take(data, i, 1)
    code = data[i]
    i += 1
    if code <= 0x7F:
        return code, i
    if code >= 0xE0:
        return code - 0x100, i
    if code <= 0x8F:
        return _unpack_map(data, i, code & 0x0F, depth)
    if code <= 0x9F:
        return _unpack_array(data, i, code & 0x0F, depth)
    if code <= 0xBF:
        return _unpack_str(data, i, code & 0x1F)
    if code == 0xC0:
        return None, i
    if code == 0xC2:
        return False, i
    if code == 0xC3:
        return True, i
    number = _NUMBERS.get(code)
    if number is not None:
        end = _take(data, i, number[1])
        return struct.unpack_from(number[0], data, i)[0], end
    sized = _SIZED.get(code)
    if sized is None:
        raise FrameError("msgpack type 0x%02x is not used on the link" % code)
    kind, width = sized
    end = _take(data, i, width)
    size = struct.unpack_from(_LENGTH_FORMATS[width], data, i)[0]
    if kind == "bin":
        end2 = _take(data, end, size)
        return data[end:end2], end2
    if kind == "str":
        return _unpack_str(data, end, size)
    if kind == "array":
        return _unpack_array(data, end, size, depth)
    return _unpack_map(data, end, size, depth)


def _unpack_str(data, i, size):
    end = _take(data, i, size)
    try:
        return data[i:end].decode("utf-8"), end
    except (UnicodeError, ValueError):
        raise FrameError("msgpack string is not UTF-8")


def _unpack_array(data, i, size, depth):
    if size > len(data) - i:  # each item takes at least one byte
        raise FrameError("msgpack array of %d items in %d bytes" % (size, len(data) - i))
    items = []
    for _ in range(size):
        item, i = _unpack(data, i, depth + 1)
        items.append(item)
    return items, i


def _unpack_map(data, i, size, depth):
    if 2 * size > len(data) - i:
        raise FrameError("msgpack map of %d pairs in %d bytes" % (size, len(data) - i))
    result = {}
    for _ in range(size):
        key, i = _unpack(data, i, depth + 1)
        if isinstance(key, (list, dict)):
            raise FrameError("msgpack map key is a container")
        value, i = _unpack(data, i, depth + 1)
        result[key] = value
    return result, i


# -- frames ---------------------------------------------------------------------


def encode_frame(body):
    """A body map -> the bytes on the wire, delimiter included."""
    raw = pack(body)
    if len(raw) > MAX_BODY_BYTES:
        raise FrameError("frame body of %d bytes exceeds %d bytes" % (len(raw), MAX_BODY_BYTES))
    return cobs_encode(raw + struct.pack(">H", crc16(raw))) + b"\x00"


def decode_frame(block):
    """The bytes between two delimiters -> a body map with ``t`` and ``n``, or FrameError."""
    raw = cobs_decode(block)
    if len(raw) < 3:
        raise CobsError("frame of %d bytes is too short" % len(raw))
    body = raw[:-2]
    if crc16(body) != struct.unpack_from(">H", raw, len(raw) - 2)[0]:
        raise CrcError("frame CRC mismatch")
    obj = unpack(body)
    if not isinstance(obj, dict):
        raise FrameError("frame body is not a map")
    kind = obj.get("t")
    number = obj.get("n")
    if not isinstance(kind, str) or not kind:
        raise FrameError("frame body has no 't' string")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < N_MODULO:
        raise FrameError("frame body has no 'n' in 0..65535")
    return obj


class Deframer:
    """Bytes in any slices -> good frame bodies; everything else counted and dropped.

    Never raises on input: a damaged frame costs that frame only, and reading
    resumes at the next delimiter.
    """

    def __init__(self, counters=None, max_wire=MAX_WIRE_BYTES):
        self.counters = new_counters() if counters is None else counters
        self.max_wire = max_wire
        self._buf = bytearray()
        self._skipping = False  # dropping an overlong run until the next delimiter

    def feed(self, data):
        frames = []  # type: list
        data = bytes(data)
        start = 0
        while True:
            i = data.find(b"\x00", start)
            if i < 0:
                self._extend(data[start:])
                return frames
            self._extend(data[start:i])
            if self._skipping:
                self._skipping = False
            elif self._buf:
                body = self._finish()
                if body is not None:
                    frames.append(body)
            self._buf = bytearray()
            start = i + 1

    def clear(self):
        self._buf = bytearray()
        self._skipping = False

    def _extend(self, chunk):
        if self._skipping or not chunk:
            return
        if len(self._buf) + len(chunk) > self.max_wire:
            self._skipping = True
            self._buf = bytearray()
            self.counters["overruns"] += 1
        else:
            self._buf += chunk

    def _finish(self):
        try:
            body = decode_frame(self._buf)
        except FrameError as exc:
            self.counters[exc.counter] += 1
            return None
        self.counters["frames_in"] += 1
        return body


class Endpoint:
    """One side of the stop-and-wait link, pure: bytes and milliseconds in, bytes out.

    ``send`` queues a body; ``receive`` takes bytes read from the port and
    returns the bodies to act on (acks and repeats are handled here);
    ``poll`` resends or gives up on time. After any of them, ``take_output``
    returns the bytes to write. Bodies given up on after ``max_resends``
    resends wait in ``given_up`` for the owner to report. With
    ``max_resends=None`` nothing is given up: a body is sent again until it
    is acknowledged, the wait doubling from ``resend_ms`` up to
    ``resend_max_ms`` (the firmware's way: its frame is the only copy of a
    card or a press).
    """

    def __init__(self, resend_ms=RESEND_MS, max_resends=MAX_RESENDS, queue_max=QUEUE_MAX, first_n=0,
                 resend_max_ms=RESEND_MAX_MS):
        self.resend_ms = resend_ms
        self.resend_max_ms = max(resend_ms, resend_max_ms)
        self.max_resends = max_resends
        self.queue_max = queue_max
        self.counters = new_counters()
        self.given_up = []
        self._deframer = Deframer(self.counters)
        self._out = bytearray()
        self._queue = []
        self._inflight = None  # the body in flight, with its n
        self._wire = b""
        self._sent_at = 0
        self._wait_ms = resend_ms
        self._resends = 0
        self._next_n = first_n % N_MODULO
        self._recent = []  # frame numbers accepted from the peer, oldest first
        self._last_was_hello = False

    @property
    def busy(self):
        """A frame is in flight or waiting."""
        return self._inflight is not None or bool(self._queue)

    def send(self, body, replace=False):
        """Queue ``body`` (a map with ``t``; ``n`` is assigned here).

        With ``replace``, a waiting body of the same ``t`` is overwritten in
        place (heartbeats: only the newest matters). Raises FrameError for a
        body that could never be sent.
        """
        kind = body.get("t")
        if not isinstance(kind, str) or kind == ACK:
            raise FrameError("a body to send needs a 't' other than 'ack'")
        probe = dict(body)
        probe["n"] = N_MODULO - 1  # the widest n: the size check holds for any n
        encode_frame(probe)
        if replace:
            for index in range(len(self._queue)):
                if self._queue[index].get("t") == kind:
                    self._queue[index] = body
                    return
        if len(self._queue) >= self.queue_max:
            self._queue.pop(0)
            self.counters["queue_drops"] += 1
        self._queue.append(body)

    def receive(self, data, now_ms):
        """Bytes from the port -> new bodies to act on, in order."""
        delivered = []  # type: list
        for body in self._deframer.feed(data):
            self._accept(body, delivered)
        self._start_next(now_ms)
        return delivered

    def poll(self, now_ms):
        """Resend or give up when due; return ms until the next call is needed, or None."""
        if self._inflight is not None and ticks_diff(now_ms, self._sent_at) >= self._wait_ms:
            if self.max_resends is None or self._resends < self.max_resends:
                self._resends += 1
                self._sent_at = now_ms
                if self.max_resends is None:
                    self._wait_ms = min(self._wait_ms * 2, self.resend_max_ms)
                self._write(self._wire)
                self.counters["retransmits"] += 1
            else:
                self.counters["gave_up"] += 1
                if len(self.given_up) < self.queue_max:
                    self.given_up.append(self._inflight)
                self._inflight = None
        self._start_next(now_ms)
        if self._inflight is None:
            return None
        return max(0, self._wait_ms - ticks_diff(now_ms, self._sent_at))

    def take_output(self):
        out = bytes(self._out)
        self._out = bytearray()
        return out

    def take_given_up(self):
        bodies = self.given_up
        self.given_up = []
        return bodies

    def reset(self):
        """Forget everything in flight, waiting, half-read and remembered (port reopened)."""
        self._deframer.clear()
        self._out = bytearray()
        self._queue = []
        self._inflight = None
        self._recent = []
        self._last_was_hello = False

    def _write(self, wire):
        self._out += wire
        self.counters["frames_out"] += 1

    def _accept(self, body, delivered):
        kind = body["t"]
        number = body["n"]
        if kind == ACK:
            if self._inflight is not None and number == self._inflight["n"]:
                self._inflight = None
            else:
                self.counters["stray_acks"] += 1
            return
        self._write(encode_frame({"t": ACK, "n": number}))
        if kind == HELLO:
            # A hello starts the peer's numbering afresh (it booted or opened
            # the port), so older numbers must not make its frames look like
            # repeats. Only a resent hello, with nothing accepted since, is one.
            if self._last_was_hello and self._recent and self._recent[-1] == number:
                self.counters["duplicates"] += 1
                return
            self._recent = [number]
            self._last_was_hello = True
            delivered.append(body)
            return
        if number in self._recent:
            self.counters["duplicates"] += 1
            return
        self._recent.append(number)
        if len(self._recent) > REMEMBER:
            self._recent.pop(0)
        self._last_was_hello = False
        delivered.append(body)

    def _start_next(self, now_ms):
        if self._inflight is not None or not self._queue:
            return
        body = dict(self._queue.pop(0))
        body["n"] = self._next_n
        self._next_n = (self._next_n + 1) % N_MODULO
        self._inflight = body
        self._wire = encode_frame(body)
        self._sent_at = now_ms
        self._wait_ms = self.resend_ms
        self._resends = 0
        self._write(self._wire)


def hello_body(fw, caps):
    return {"t": HELLO, "fw": fw, "proto": PROTO, "caps": list(caps)}
