"""Framing: CRC, COBS and msgpack against published vectors and the msgpack library; a deframer that survives anything."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import framing
from firmware_bridge.framing import (
    CobsError,
    CrcError,
    Deframer,
    FrameError,
    cobs_decode,
    cobs_encode,
    crc16,
    crc16_table,
    decode_frame,
    encode_frame,
    pack,
    unpack,
)

# Deterministic examples: a property that fails must fail on every run, not by chance.
FIXED = settings(derandomize=True, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


# -- CRC-16/CCITT-FALSE ---------------------------------------------------------


def test_crc_check_value_from_the_crc_catalogue() -> None:
    # Greg Cook's "Catalogue of parametrised CRC algorithms" (reveng), entry
    # CRC-16/IBM-3740 alias CRC-16/CCITT-FALSE: width=16 poly=0x1021 init=0xffff
    # refin=false refout=false xorout=0x0000 check=0x29b1 (over "123456789").
    assert crc16(b"123456789") == 0x29B1
    assert crc16_table(b"123456789") == 0x29B1


def test_crc_of_nothing_is_the_initial_value() -> None:
    assert crc16(b"") == 0xFFFF
    assert crc16_table(b"") == 0xFFFF


@given(st.binary(max_size=600))
def test_table_crc_equals_the_c_implementation(data: bytes) -> None:
    # MicroPython runs the table version; CPython the binascii one.
    assert crc16_table(data) == crc16(data)


# -- COBS ------------------------------------------------------------------------

# Wikipedia, "Consistent Overhead Byte Stuffing", Encoding examples 1 to 11,
# which follow S. Cheshire and M. Baker, "Consistent Overhead Byte Stuffing",
# IEEE/ACM Transactions on Networking 7(2), 1999. The trailing 00 delimiter of
# the examples is left out: cobs_encode does not add it.
_RUN_01_FE = bytes(range(0x01, 0xFF))  # 01 02 ... FE, 254 bytes
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (_RUN_01_FE, b"\xff" + _RUN_01_FE),
    (b"\x00" + _RUN_01_FE[:-1] + b"\xfe", b"\x01\xff" + _RUN_01_FE),
    (bytes(range(0x01, 0x100)), b"\xff" + _RUN_01_FE + b"\x02\xff"),
    (bytes(range(0x02, 0x100)) + b"\x00", b"\xff" + bytes(range(0x02, 0x100)) + b"\x01\x01"),
    (bytes(range(0x03, 0x100)) + b"\x00\x01", b"\xfe" + bytes(range(0x03, 0x100)) + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_VECTORS, ids=[f"wikipedia-{i}" for i in range(1, 12)])
def test_cobs_published_examples(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_of_nothing() -> None:
    assert cobs_encode(b"") == b"\x01"
    assert cobs_decode(b"\x01") == b""


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_no_zero_byte(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + 1 + len(data) // 254
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x05\x11\x22", "COBS block at offset 0 runs 2 bytes past the end"),
        (b"\x02\x11\x00", "COBS data holds a zero byte at offset 2"),
        (b"\x03\x00\x11", "COBS data holds a zero byte in the block at offset 0"),
    ],
)
def test_cobs_malformed(block: bytes, message: str) -> None:
    with pytest.raises(CobsError) as info:
        cobs_decode(block)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


# -- msgpack subset ------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=300)
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=20) | st.dictionaries(st.text(max_size=20), children, max_size=20),
    max_leaves=40,
)


@given(values)
def test_pack_is_read_by_the_msgpack_library(value: object) -> None:
    assert msgpack.unpackb(pack(value), raw=False, strict_map_key=False) == value


@given(values)
def test_unpack_reads_the_msgpack_library(value: object) -> None:
    assert unpack(msgpack.packb(value, use_bin_type=True)) == value


@given(values)
def test_pack_is_as_compact_as_the_msgpack_library(value: object) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "cannot pack a float: the link carries nil, bool, int, str, bin, array and map"),
        (2**64, "integer 18446744073709551616 does not fit in 64 bits"),
        (-(2**63) - 1, "integer -9223372036854775809 does not fit in 64 bits"),
        ({1, 2}, "cannot pack a set: the link carries nil, bool, int, str, bin, array and map"),
    ],
)
def test_pack_refuses_what_the_link_does_not_carry(value: object, message: str) -> None:
    with pytest.raises(FrameError) as info:
        pack(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "msgpack data ends 1 bytes early"),
        (b"\xca\x00\x00\x00\x00", "msgpack type 0xca is not used on the link"),
        (b"\xc1", "msgpack type 0xc1 is not used on the link"),
        (b"\xd4\x01\x02", "msgpack type 0xd4 is not used on the link"),
        (b"\xa3ab", "msgpack data ends 1 bytes early"),
        (b"\xa2\xff\xfe", "msgpack string is not UTF-8"),
        (b"\xdd\xff\xff\xff\xff", "msgpack array of 4294967295 items in 0 bytes"),
        (b"\xdf\x00\x01\x00\x00", "msgpack map of 65536 pairs in 0 bytes"),
        (b"\x81\x90\x01", "msgpack map key is a container"),
        (b"\x01\x02", "msgpack data has 1 trailing bytes"),
        (b"\x91" * 10 + b"\x01", "msgpack nesting deeper than 8"),
        (b"\xc6\xff\xff\xff\xff", "msgpack data ends 4294967295 bytes early"),
    ],
)
def test_unpack_hostile(data: bytes, message: str) -> None:
    with pytest.raises(FrameError) as info:
        unpack(data)
    assert str(info.value) == message


@given(st.binary(max_size=400))
def test_unpack_of_any_bytes_returns_or_raises_frame_error(data: bytes) -> None:
    try:
        unpack(data)
    except FrameError:
        pass


# -- frames ----------------------------------------------------------------------------


def test_frame_layout() -> None:
    body = {"t": "zone", "n": 7, "input": 1, "state": "alarm"}
    raw = msgpack.packb(body)
    crc = crc16(raw).to_bytes(2, "big")
    wire = encode_frame(body)
    assert wire == cobs_encode(raw + crc) + b"\x00"
    assert decode_frame(wire[:-1]) == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "frame body is not a map"),
        ({"n": 1}, "frame body has no 't' string"),
        ({"t": "", "n": 1}, "frame body has no 't' string"),
        ({"t": "hb"}, "frame body has no 'n' in 0..65535"),
        ({"t": "hb", "n": 65536}, "frame body has no 'n' in 0..65535"),
        ({"t": "hb", "n": -1}, "frame body has no 'n' in 0..65535"),
        ({"t": "hb", "n": True}, "frame body has no 'n' in 0..65535"),
    ],
)
def test_frame_body_must_have_t_and_n(body: object, message: str) -> None:
    raw = msgpack.packb(body)
    block = cobs_encode(raw + crc16(raw).to_bytes(2, "big"))
    with pytest.raises(FrameError) as info:
        decode_frame(block)
    assert str(info.value) == message


def test_frame_with_a_bad_crc() -> None:
    raw = msgpack.packb({"t": "hb", "n": 1})
    block = cobs_encode(raw + ((crc16(raw) ^ 1).to_bytes(2, "big")))
    with pytest.raises(CrcError) as info:
        decode_frame(block)
    assert str(info.value) == "frame CRC mismatch"


def test_oversized_body_is_refused_when_encoding() -> None:
    with pytest.raises(FrameError) as info:
        encode_frame({"t": "tag", "n": 1, "uid": b"x" * 300})
    assert str(info.value) == "frame body of 317 bytes exceeds 256 bytes"


# -- the deframer ---------------------------------------------------------------------

bodies = st.fixed_dictionaries(
    {"t": st.sampled_from(["zone", "hb", "wiegand", "tag", "ack"]), "n": st.integers(0, 65535)},
    optional={
        "input": st.integers(0, 7),
        "state": st.sampled_from(framing.ZONE_STATES),
        "data": st.integers(0, 2**34),
        "uid": st.binary(min_size=4, max_size=10),
    },
)


@given(st.lists(bodies, max_size=10), st.lists(st.integers(1, 64), max_size=10))
def test_frames_in_any_slices_come_out_whole(frames: list[dict], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    deframer = Deframer()
    got = []
    position = 0
    for cut in cuts:
        got += deframer.feed(wire[position : position + cut])
        position += cut
    got += deframer.feed(wire[position:])
    assert got == frames
    assert deframer.counters["frames_in"] == len(frames)


@FIXED
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_and_never_make_a_frame(noise: bytes) -> None:
    deframer = Deframer()
    assert deframer.feed(noise) == []
    # ...and the link reads on: the next good frame after a delimiter comes out.
    good = {"t": "hb", "n": 3, "uptime_ms": 1000}
    assert deframer.feed(b"\x00" + encode_frame(good)) == [good]


@FIXED
@given(bodies, st.data())
def test_a_cut_frame_is_dropped_and_the_next_one_read(body: dict, data: st.DataObject) -> None:
    wire = encode_frame(body)
    cut = data.draw(st.integers(1, len(wire) - 2), label="cut")
    after = {"t": "hb", "n": 9, "uptime_ms": 5}
    deframer = Deframer()
    # The sender died mid-frame and starts again with a delimiter of its own.
    got = deframer.feed(wire[:cut] + b"\x00" + encode_frame(after))
    assert got == [after]
    errors = sum(deframer.counters[k] for k in ("cobs_errors", "crc_errors", "body_errors"))
    assert errors == 1


@FIXED
@given(bodies, st.data())
def test_a_flipped_bit_is_caught_and_the_next_frame_read(body: dict, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(body))
    position = data.draw(st.integers(0, len(wire) - 2), label="byte")
    wire[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    after = {"t": "hb", "n": 9, "uptime_ms": 5}
    deframer = Deframer()
    got = deframer.feed(bytes(wire) + encode_frame(after))
    assert got == [after]


@FIXED
@given(bodies, st.binary(min_size=1, max_size=64), st.data())
def test_noise_inside_a_frame_is_caught(body: dict, noise: bytes, data: st.DataObject) -> None:
    wire = encode_frame(body)
    position = data.draw(st.integers(0, len(wire) - 1), label="position")
    damaged = wire[:position] + noise + wire[position:]
    after = {"t": "hb", "n": 9, "uptime_ms": 5}
    got = Deframer().feed(damaged + encode_frame(after))
    # Noise may end the frame early (a zero byte) or land between frames; what
    # comes out is only ever a frame that was really sent.
    assert got[-1] == after
    assert all(frame in (body, after) for frame in got)


def test_overlong_run_is_counted_and_skipped() -> None:
    deframer = Deframer()
    good = {"t": "hb", "n": 1, "uptime_ms": 0}
    assert deframer.feed(b"\x01" * (framing.MAX_WIRE_BYTES + 1)) == []
    assert deframer.feed(b"\x05" * 100) == []  # still the same run: still skipped
    assert deframer.feed(b"\x00" + encode_frame(good)) == [good]
    assert deframer.counters["overruns"] == 1


def test_largest_frame_fits_the_deframer() -> None:
    body = {"t": "tag", "n": 65535, "uid": b""}
    body["uid"] = b"\x11" * (framing.MAX_BODY_BYTES - len(pack(body)))  # no zero byte: the longest COBS output
    assert len(pack(body)) == framing.MAX_BODY_BYTES
    wire = encode_frame(body)
    assert len(wire) - 1 <= framing.MAX_WIRE_BYTES
    assert Deframer().feed(wire) == [body]


def test_bounds_are_consistent() -> None:
    assert framing.MAX_WIRE_BYTES == framing.MAX_BODY_BYTES + 2 + math.ceil((framing.MAX_BODY_BYTES + 2) / 254)
