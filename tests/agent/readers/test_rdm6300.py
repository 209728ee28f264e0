"""RDM6300 frame parsing.

Reference: the RDM630/RDM6300 125 kHz card reader module datasheet (Seeed
Studio / ITEAD, "UART interface: data format"): 9600 8N1, frame
``02 | 10 ASCII data characters | 2 ASCII checksum characters | 03``, and its
worked example card ``62E3086CED`` with checksum
``62 xor E3 xor 08 xor 6C xor ED = 08``. The 13-byte form with a binary
checksum byte is what the common clones send. Checksums are computed here
from those rules, not with the code under test.
"""

from __future__ import annotations

import operator
from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.inputs.readers.rdm6300 import Rdm6300Parser

DATASHEET_TAG = "62E3086CED"
DATASHEET_FRAME = b"\x02" + b"62E3086CED" + b"08" + b"\x03"


def xor_of(tag: str) -> int:
    return reduce(operator.xor, bytes.fromhex(tag), 0)


def genuine(tag: str) -> bytes:
    return b"\x02" + tag.encode() + f"{xor_of(tag):02X}".encode() + b"\x03"


def clone(tag: str) -> bytes:
    return b"\x02" + tag.encode() + bytes([xor_of(tag)]) + b"\x03"


def test_the_datasheet_example_checksum() -> None:
    assert 0x62 ^ 0xE3 ^ 0x08 ^ 0x6C ^ 0xED == 0x08
    assert genuine(DATASHEET_TAG) == DATASHEET_FRAME
    assert DATASHEET_FRAME.hex(" ") == "02 36 32 45 33 30 38 36 43 45 44 30 38 03"


def test_one_valid_frame_is_a_tag_and_every_repeat_is_reported_again() -> None:
    p = Rdm6300Parser()
    assert p.feed(DATASHEET_FRAME) == [DATASHEET_TAG]
    assert p.feed(DATASHEET_FRAME) == [DATASHEET_TAG]  # repeats go on; presence makes them one scan
    assert p.counters == {"frames": 2, "bad_checksum": 0, "garbled": 0, "zero_id": 0, "noise_bytes": 0}


def test_clone_frames_with_a_binary_checksum() -> None:
    frame = clone(DATASHEET_TAG)
    assert frame == b"\x0262E3086CED\x08\x03" and len(frame) == 13
    p = Rdm6300Parser()
    assert p.feed(frame) == [DATASHEET_TAG]


def test_clone_checksum_bytes_that_look_like_frame_marks() -> None:
    # 0102030400: checksum 0x04; 0000000003: checksum 0x03 (= ETX); 0000000002: 0x02 (= STX).
    for tag in ("0102030400", "0000000003", "0000000002"):
        p = Rdm6300Parser()
        assert p.feed(clone(tag)) == [tag], tag


def test_design_md_card_in_both_forms_and_lower_case_digits() -> None:
    tag = "67003B51C6"  # the member card of docs/reference.md's sample plan; checksum 0xCB
    assert xor_of(tag) == 0xCB
    p = Rdm6300Parser()
    assert p.feed(genuine(tag) + clone(tag)) == [tag, tag]
    assert p.feed(genuine(tag.lower())) == [tag]


def test_byte_by_byte() -> None:
    p = Rdm6300Parser()
    out = []
    for b in DATASHEET_FRAME:
        out += p.feed(bytes([b]))
    assert out == [DATASHEET_TAG]


def test_bad_checksum_is_counted_and_dropped() -> None:
    bad = DATASHEET_FRAME[:11] + b"09" + b"\x03"
    p = Rdm6300Parser()
    assert p.feed(bad) == []
    assert p.counters["bad_checksum"] == 1
    assert p.feed(bad + DATASHEET_FRAME) == [DATASHEET_TAG]


def test_all_zero_id_is_refused_even_with_a_valid_checksum() -> None:
    zero = b"\x02" + b"0000000000" + b"00" + b"\x03"
    p = Rdm6300Parser()
    assert p.feed(zero * 3 + clone("0000000000") * 2) == []
    assert p.counters["zero_id"] == 5
    assert p.counters["frames"] == 0


def test_two_cards_in_a_row_are_two_tags() -> None:
    other = "1234567890"
    p = Rdm6300Parser()
    assert p.feed(DATASHEET_FRAME + genuine(other) + DATASHEET_FRAME) == [DATASHEET_TAG, other, DATASHEET_TAG]


def test_resynchronises_after_garbage_and_a_cut_frame() -> None:
    p = Rdm6300Parser()
    stream = b"\xff\x00noise" + DATASHEET_FRAME[:6] + DATASHEET_FRAME
    assert p.feed(stream) == [DATASHEET_TAG]
    assert p.counters["garbled"] == 1
    assert p.counters["noise_bytes"] == 7 + 5  # the garbage, then the cut frame's digits


def test_missing_end_mark_and_non_hex_digit_are_garbled() -> None:
    p = Rdm6300Parser()
    no_etx = DATASHEET_FRAME[:-1] + b"\x04"
    non_hex = DATASHEET_FRAME[:3] + b"G" + DATASHEET_FRAME[4:]
    assert p.feed(no_etx + non_hex) == []
    assert p.counters["garbled"] == 2


def test_reset_forgets_a_partial_frame() -> None:
    p = Rdm6300Parser()
    p.feed(DATASHEET_FRAME + DATASHEET_FRAME[:5])
    p.reset()
    assert p.feed(DATASHEET_FRAME[5:]) == []
    assert p.feed(DATASHEET_FRAME) == [DATASHEET_TAG]


tags = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper()).filter(lambda t: t != "0" * 10)


@settings(max_examples=300)
@given(st.binary(max_size=400), tags)
def test_random_bytes_never_crash_and_the_next_good_frames_are_read(noise: bytes, tag: str) -> None:
    p = Rdm6300Parser()
    out = p.feed(noise)
    assert all(len(t) == 10 and t == t.upper() and t != "0" * 10 for t in out)
    assert p.feed(genuine(tag))[-1:] == [tag]


@st.composite
def corrupted_streams(draw: st.DrawFn) -> tuple[str, bytes]:
    """Frames of one card, some cut short or with one bit flipped, never two bad ones in a row.

    Isolated errors are the model: one flipped bit changes one bit of the
    XOR checksum (or breaks the frame's shape), so a single valid frame is trusted.
    """
    tag = draw(tags)
    form = draw(st.sampled_from([genuine, clone]))
    frame = form(tag)
    stream = b""
    previous_bad = False
    for _ in range(draw(st.integers(1, 12))):
        kind = "good" if previous_bad else draw(st.sampled_from(["good", "flip", "cut"]))
        if kind == "flip":
            bit = draw(st.integers(0, len(frame) * 8 - 1))
            flipped = bytearray(frame)
            flipped[bit // 8] ^= 1 << (bit % 8)
            stream += bytes(flipped)
        elif kind == "cut":
            stream += frame[: draw(st.integers(1, len(frame) - 1))]
        else:
            stream += frame
        previous_bad = kind != "good"
    return tag, stream + frame


@settings(max_examples=500)
@given(corrupted_streams(), st.integers(1, 16))
def test_flipped_and_cut_frames_never_yield_another_tag(case: tuple[str, bytes], chunk: int) -> None:
    tag, stream = case
    p = Rdm6300Parser()
    out: list[str] = []
    for i in range(0, len(stream), chunk):
        out += p.feed(stream[i : i + chunk])
    assert set(out) == {tag}
    assert out[-1] == tag
