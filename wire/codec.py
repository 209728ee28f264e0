"""msgpack codec with the limits every payload from the network must meet."""

from __future__ import annotations

from typing import Any

import msgpack

from wire.errors import DecodeError, EncodeError

MAX_PAYLOAD_BYTES = 64 * 1024
# Containers and strings inside a payload: generous for inventories, tight
# enough that a hostile payload cannot make the unpacker allocate much.
_MAX_STR_LEN = 4096
_MAX_BIN_LEN = 4096
_MAX_ARRAY_LEN = 1024
_MAX_MAP_LEN = 256


def pack(message: dict[str, Any]) -> bytes:
    """Encode one message map; raise EncodeError when it cannot be sent."""
    try:
        data = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode message: {exc}") from exc
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncodeError(f"message of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")
    return data


def unpack(payload: bytes) -> dict[str, Any]:
    """Decode one payload into a map with string keys, or raise DecodeError."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DecodeError(f"payload must be bytes, not {type(payload).__name__}")
    size = len(payload)
    if size == 0:
        raise DecodeError("payload is empty")
    if size > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=_MAX_STR_LEN,
            max_bin_len=_MAX_BIN_LEN,
            max_array_len=_MAX_ARRAY_LEN,
            max_map_len=_MAX_MAP_LEN,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise DecodeError("payload has trailing bytes after the message") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # Truncated data, bad UTF-8, limits exceeded, unhashable map keys.
        reason = str(exc) or type(exc).__name__
        raise DecodeError(f"payload is not valid msgpack: {reason}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"payload must be a msgpack map, not {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise DecodeError(f"payload map key {key!r} is not a string")
    return obj
