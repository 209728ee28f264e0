"""The link's framing for the Pi side: the firmware's own pure module, re-exported.

The firmware carries one framing module (``firmware/framing.py``) that runs
under MicroPython and CPython alike; the Pi uses that very module, so both ends
share one implementation of COBS, CRC, msgpack and stop-and-wait.
"""

from firmware_bridge.firmware.framing import (
    ACK,
    ALARM,
    BUTTON,
    BUTTON_STATES,
    COUNTERS,
    HB,
    HELLO,
    MAX_BODY_BYTES,
    MAX_RESENDS,
    MAX_WIRE_BYTES,
    NORMAL,
    OUT,
    PRESSED,
    PROTO,
    RELEASED,
    REMEMBER,
    RESEND_MAX_MS,
    RESEND_MS,
    SYNC,
    TAG,
    TAMPER_CUT,
    TAMPER_SHORT,
    WIEGAND,
    ZONE,
    ZONE_STATES,
    BridgeError,
    CobsError,
    CrcError,
    Deframer,
    Endpoint,
    FrameError,
    cobs_decode,
    cobs_encode,
    crc16,
    crc16_table,
    decode_frame,
    encode_frame,
    hello_body,
    pack,
    unpack,
)

__all__ = [
    "ACK", "ALARM", "BUTTON", "BUTTON_STATES", "COUNTERS", "HB", "HELLO", "MAX_BODY_BYTES",
    "MAX_RESENDS", "MAX_WIRE_BYTES", "NORMAL", "OUT", "PRESSED", "PROTO", "RELEASED", "REMEMBER",
    "RESEND_MAX_MS", "RESEND_MS", "SYNC", "TAG", "TAMPER_CUT", "TAMPER_SHORT", "WIEGAND", "ZONE", "ZONE_STATES",
    "BridgeError", "CobsError", "CrcError", "Deframer", "Endpoint", "FrameError", "cobs_decode",
    "cobs_encode", "crc16", "crc16_table", "decode_frame", "encode_frame", "hello_body", "pack", "unpack",
]
