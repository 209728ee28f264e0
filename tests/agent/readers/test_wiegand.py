"""Wiegand H10301 / H10306 decoding.

Vectors follow HID's format descriptions ("Understanding Card Data Formats",
HID Global, 0108-0110 rev; H10301 26-bit and H10306 34-bit), built bit by bit
here from the card's facility code and number, in sending order, so that the
parity rules are re-derived from the document rather than copied from
agent/inputs/readers/wiegand.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.inputs.readers.errors import ReaderError
from agent.inputs.readers.wiegand import WiegandError, decode_wiegand


def frame_from_bits(bits: str) -> tuple[int, int]:
    """A frame given as the string of bits in sending order -> (bits, data)."""
    return len(bits), int(bits, 2)


def hid_frame(facility: int, card: int, *, facility_bits: int) -> str:
    """Sending-order bit string of an H10301/H10306 frame, parity bits by the book."""
    payload = format(facility, f"0{facility_bits}b") + format(card, "016b")
    half = len(payload) // 2
    leading = "1" if payload[:half].count("1") % 2 else "0"  # makes its half even
    trailing = "0" if payload[half:].count("1") % 2 else "1"  # makes its half odd
    return leading + payload + trailing


def test_h10301_facility_123_card_45678() -> None:
    # 123 = 01111011, 45678 = 1011001001101110.
    # First 12 payload bits 011110111011 hold 9 ones -> leading (even) parity 1.
    # Last 12 payload bits 001001101110 hold 6 ones -> trailing (odd) parity 1.
    bits = "1" + "01111011" + "1011001001101110" + "1"
    assert hid_frame(123, 45678, facility_bits=8) == bits
    assert decode_wiegand(*frame_from_bits(bits)) == "7BB26E"


def test_h10301_facility_1_card_1() -> None:
    # Payload 000000010000000000000001: one 1 in each half ->
    # leading even parity 1, trailing odd parity 0.
    bits = "1" + "00000001" + "0000000000000001" + "0"
    assert decode_wiegand(*frame_from_bits(bits)) == "010001"


def test_h10301_all_zero_and_all_ones_payloads() -> None:
    assert decode_wiegand(26, int("0" + "0" * 24 + "1", 2)) == "000000"
    # 12 ones in each half: even already (leading 0), odd needs trailing 1.
    assert decode_wiegand(26, int("0" + "1" * 24 + "1", 2)) == "FFFFFF"


def test_h10306_facility_4660_card_22136() -> None:
    # facility 0x1234 (5 ones -> leading parity 1), card 0x5678 (8 ones -> trailing 1)
    bits = "1" + "0001001000110100" + "0101011001111000" + "1"
    assert hid_frame(0x1234, 0x5678, facility_bits=16) == bits
    assert decode_wiegand(*frame_from_bits(bits)) == "12345678"


def test_h10306_keeps_leading_zero_digits() -> None:
    bits = hid_frame(0, 7, facility_bits=16)
    assert decode_wiegand(*frame_from_bits(bits)) == "00000007"


@pytest.mark.parametrize("flip", [0, 25])
def test_h10301_bad_parity_is_refused(flip: int) -> None:
    bits = list(hid_frame(123, 45678, facility_bits=8))
    bits[flip] = "1" if bits[flip] == "0" else "0"
    with pytest.raises(WiegandError) as info:
        decode_wiegand(*frame_from_bits("".join(bits)))
    which = "leading (even)" if flip == 0 else "trailing (odd)"
    assert str(info.value) == f"wiegand frame: 26-bit frame has a bad {which} parity bit"


def test_error_is_a_reader_error_and_a_value_error() -> None:
    with pytest.raises(ReaderError):
        decode_wiegand(26, 0)
    with pytest.raises(ValueError):
        decode_wiegand(26, 0)


@pytest.mark.parametrize(
    ("bits", "data", "message"),
    [
        (37, 0, "wiegand frame: 37 bits is not a supported format (26 or 34)"),
        (0, 0, "wiegand frame: 0 bits is not a supported format (26 or 34)"),
        (26, 1 << 26, "wiegand frame: data does not fit in 26 bits"),
        (26, -1, "wiegand frame: data does not fit in 26 bits"),
        (26, "7BB26E", "wiegand frame: data must be an integer, not str"),
        (26, True, "wiegand frame: data must be an integer, not bool"),
        ("26", 0, "wiegand frame: bits must be an integer, not str"),
        (34, 1 << 40, "wiegand frame: data does not fit in 34 bits"),
    ],
)
def test_malformed_frames_are_refused(bits: object, data: object, message: str) -> None:
    with pytest.raises(WiegandError) as info:
        decode_wiegand(bits, data)  # type: ignore[arg-type]
    assert str(info.value) == message


@given(st.sampled_from([(8, 26), (16, 34)]), st.data())
def test_every_valid_frame_round_trips(shape: tuple[int, int], data: st.DataObject) -> None:
    facility_bits, total = shape
    facility = data.draw(st.integers(0, (1 << facility_bits) - 1))
    card = data.draw(st.integers(0, 0xFFFF))
    bits = hid_frame(facility, card, facility_bits=facility_bits)
    assert len(bits) == total
    expected = format((facility << 16) | card, f"0{(total - 2) // 4}X")
    assert decode_wiegand(*frame_from_bits(bits)) == expected


@given(st.sampled_from([26, 34]), st.integers(min_value=0))
def test_single_bit_flip_is_always_caught(bits: int, seed: int) -> None:
    facility_bits = 8 if bits == 26 else 16
    good = hid_frame(seed % (1 << facility_bits), (seed >> 16) & 0xFFFF, facility_bits=facility_bits)
    position = seed % bits
    flipped = good[:position] + ("1" if good[position] == "0" else "0") + good[position + 1 :]
    with pytest.raises(WiegandError):
        decode_wiegand(*frame_from_bits(flipped))


@given(st.integers(), st.integers())
def test_arbitrary_integers_never_crash(bits: int, data: int) -> None:
    try:
        tag = decode_wiegand(bits, data)
    except WiegandError:
        return
    assert bits in (26, 34) and len(tag) == (bits - 2) // 4
