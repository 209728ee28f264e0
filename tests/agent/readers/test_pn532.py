"""PN532 frames and the HSU driver.

Frame vectors follow the NXP PN532 User Manual UM0701-02 (section 6.2: normal
and extended information frames, ACK, NACK, the error frame
00 00 FF 01 FF 7F 81 00; section 7: GetFirmwareVersion, SAMConfiguration,
InListPassiveTarget). Card answers use real captures published with
open-source tools:

* 4-byte UID: libnfc ``nfc-list`` output in vfrc2/nfcTest (nfc-reader notes),
  a MIFARE Classic 1K with ATQA 00 04, UID 8B 0D 4F 49, SAK 08;
* 7-byte UID: microbuilder/LPC1343CodeBase, PN532 MifareUltralight_MemDump
  example, UID 04 7B CB 51 96 22 80 (Ultralight: ATQA 00 44, SAK 00).

Length and data checksums are computed here from the manual's rules
(LEN + LCS = 0, TFI + data + DCS = 0, modulo 256), not with the code under test.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.inputs.readers.errors import DeviceError, ReaderError, ReaderFrameError, ReaderSilent
from agent.inputs.readers.pn532 import Ack, ErrorFrame, Frame, FrameReader, Nack, Pn532Driver, build_frame, command_frame, parse_target_uid
from agent.inputs.readers.sim import SimulatedPn532

UID4 = bytes.fromhex("8B0D4F49")
UID7 = bytes.fromhex("047BCB51962280")


def normal(data: bytes) -> bytes:
    """A normal information frame, by UM0701-02 section 6.2.1.1."""
    return bytes([0x00, 0x00, 0xFF, len(data), (0x100 - len(data)) & 0xFF]) + data + bytes([(0x100 - sum(data) % 256) & 0xFF, 0x00])


def test_um0701_command_frames() -> None:
    assert command_frame(0x02) == bytes.fromhex("0000FF02FED4022A00")  # GetFirmwareVersion
    assert command_frame(0x14, b"\x01\x14\x01") == bytes.fromhex("0000FF05FBD414011401" + "0200")  # SAMConfiguration
    assert command_frame(0x4A, b"\x01\x00") == bytes.fromhex("0000FF04FCD44A0100E100")  # InListPassiveTarget
    for data in (b"\xd4\x02", b"\xd4\x14\x01\x14\x01", b"\xd4\x4a\x01\x00"):
        assert build_frame(data) == normal(data)


def test_um0701_answers() -> None:
    firmware = bytes.fromhex("0000FF06FAD50332010607E800")  # IC 0x32 (PN532), v1.6, support 7
    sam = bytes.fromhex("0000FF02FED5151600")
    reader = FrameReader()
    items = reader.feed(firmware + sam)
    assert items == [Frame(b"\xd5\x03\x32\x01\x06\x07"), Frame(b"\xd5\x15")]
    assert items[0].tfi == 0xD5 and items[0].code == 0x03 and items[0].params == b"\x32\x01\x06\x07"
    assert normal(b"\xd5\x03\x32\x01\x06\x07") == firmware


def test_ack_nack_and_error_frames() -> None:
    reader = FrameReader()
    stream = bytes.fromhex("0000FF00FF00") + bytes.fromhex("0000FFFF0000") + bytes.fromhex("0000FF01FF7F8100")
    assert reader.feed(stream) == [Ack(), Nack(), ErrorFrame()]
    assert reader.counters["noise_bytes"] == 0


def test_in_list_passive_target_with_4_and_7_byte_uids() -> None:
    classic = b"\xd5\x4b" + b"\x01\x01" + b"\x00\x04" + b"\x08" + b"\x04" + UID4
    ultralight = b"\xd5\x4b" + b"\x01\x01" + b"\x00\x44" + b"\x00" + b"\x07" + UID7
    none = b"\xd5\x4b\x00"
    frames = FrameReader().feed(normal(classic) + normal(ultralight) + normal(none))
    assert [parse_target_uid(f.params) for f in frames if isinstance(f, Frame)] == [UID4, UID7, None]
    assert UID4.hex().upper() == "8B0D4F49" and UID7.hex().upper() == "047BCB51962280"


def test_in_list_passive_target_with_ats_keeps_the_uid() -> None:
    # An ISO 14443-4 phone: ATQA 03 08, UID 01 02 03 04, SAK 20, ATS 78 80 70 00 (same capture as UID4).
    params = b"\x01\x01\x03\x08\x20\x04\x01\x02\x03\x04" + b"\x05\x78\x80\x70\x00"
    assert parse_target_uid(params) == b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (b"", "InListPassiveTarget answer: empty"),
        (b"\x02\x01", "InListPassiveTarget answer: 2 targets for MaxTg=1"),
        (b"\x01\x01\x00\x04", "InListPassiveTarget answer: target data cut short"),
        (b"\x01\x01\x00\x04\x08\x05" + bytes(5), "InListPassiveTarget answer: a 5-byte UID is not ISO 14443A (4, 7 or 10)"),
        (b"\x01\x01\x00\x44\x00\x07" + bytes(3), "InListPassiveTarget answer: UID cut short"),
    ],
)
def test_malformed_target_answers(params: bytes, message: str) -> None:
    with pytest.raises(ReaderFrameError) as info:
        parse_target_uid(params)
    assert str(info.value) == message
    assert isinstance(info.value, ReaderError) and isinstance(info.value, ValueError)


def test_extended_frame() -> None:
    data = b"\xd5\x41" + bytes(range(256)) + b"\x00\x01"  # 260 bytes: more than a normal frame holds
    length = len(data)
    lcs = (0x100 - ((length >> 8) + (length & 0xFF))) & 0xFF
    expected = bytes([0x00, 0x00, 0xFF, 0xFF, 0xFF, length >> 8, length & 0xFF, lcs]) + data + bytes([(-sum(data)) & 0xFF, 0x00])
    assert build_frame(data) == expected
    assert FrameReader().feed(expected) == [Frame(data)]


def test_build_frame_refuses_empty_and_oversized_data() -> None:
    with pytest.raises(ReaderFrameError) as info:
        build_frame(b"")
    assert str(info.value) == "PN532 frame: data must hold at least the TFI byte"
    with pytest.raises(ReaderFrameError) as info:
        build_frame(bytes(266))
    assert str(info.value) == "PN532 frame: 266 bytes of data is more than 265"


def test_bad_lcs_and_dcs_are_counted_and_resynchronised() -> None:
    good = normal(b"\xd5\x15")
    bad_lcs = good[:4] + b"\xfd" + good[5:]
    bad_dcs = good[:-2] + b"\x17\x00"
    reader = FrameReader()
    assert reader.feed(b"\x55\xaa" + bad_lcs + bad_dcs + good) == [Frame(b"\xd5\x15")]
    assert reader.counters["bad_lcs"] == 1
    assert reader.counters["bad_dcs"] == 1
    assert reader.rejected == 2


def test_a_cut_frame_is_dropped_when_the_line_goes_quiet() -> None:
    # The answer announces 12 bytes but loses its tail; the next frame is short.
    cut = normal(b"\xd5\x4b\x01\x01\x00\x04\x08\x04" + UID4)[:9]
    reader = FrameReader()
    assert reader.feed(cut + bytes.fromhex("0000FF00FF00")) == []
    assert reader.pending
    assert reader.expire() == [Ack()]
    assert reader.counters["cut"] == 1
    assert not reader.pending


def test_frames_across_many_small_reads() -> None:
    stream = normal(b"\xd5\x03\x32\x01\x06\x07") + bytes.fromhex("0000FF00FF00")
    reader = FrameReader()
    out = []
    for b in stream:
        out += reader.feed(bytes([b]))
    assert out == [Frame(b"\xd5\x03\x32\x01\x06\x07"), Ack()]


# -- hostile input ------------------------------------------------------------

# Data that holds no 00 FF start code of its own: inside a frame that lost its
# head, such a sequence would be read as a new frame, protected only by its
# LCS and DCS (a limit of the PN532 framing, which has no byte stuffing).
frame_data = st.binary(min_size=1, max_size=40).map(lambda b: b"\xd5" + b).filter(lambda d: b"\x00\xff" not in d)


def read_all(reader: FrameReader, stream: bytes, chunk: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(stream), chunk):
        out += reader.feed(stream[i : i + chunk])
    while reader.pending:  # the line goes quiet
        out += reader.expire()
    return out


@settings(max_examples=300)
@given(st.binary(max_size=600), frame_data, st.integers(1, 32))
def test_random_bytes_never_crash_and_the_next_good_frame_is_read(noise: bytes, data: bytes, chunk: int) -> None:
    reader = FrameReader()
    read_all(reader, noise, chunk)
    assert read_all(reader, normal(data), chunk)[-1:] == [Frame(data)]


uids = st.one_of(st.just(b""), st.binary(min_size=4, max_size=4), st.binary(min_size=7, max_size=7), st.binary(min_size=10, max_size=10))


def answer(uid: bytes) -> bytes:
    """InListPassiveTarget's answer frame for ``uid`` (b"" = no card)."""
    if not uid:
        return normal(b"\xd5\x4b\x00")
    return normal(b"\xd5\x4b\x01\x01\x00\x44\x00" + bytes([len(uid)]) + uid)


@st.composite
def corrupted_bursts(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """What the chip sends for a run of polls: ACK + answer, one burst per command.

    The PN532 is half-duplex request/response: after its answer the line is
    quiet until the host's next command, so bursts are separated by a quiet
    line (``expire()``). A burst may be cut anywhere or carry one flipped bit;
    the last one is clean.
    """
    bursts = []
    for _ in range(draw(st.integers(1, 6))):
        uid = draw(uids)
        burst = bytes.fromhex("0000FF00FF00") + answer(uid)
        kind = draw(st.sampled_from(["good", "flip", "cut"]))
        if kind == "flip":
            bit = draw(st.integers(0, len(burst) * 8 - 1))
            flipped = bytearray(burst)
            flipped[bit // 8] ^= 1 << (bit % 8)
            burst = bytes(flipped)
        elif kind == "cut":
            burst = burst[: draw(st.integers(0, len(burst) - 1))]
        bursts.append((uid, burst))
    last = draw(uids)
    bursts.append((last, bytes.fromhex("0000FF00FF00") + answer(last)))
    return bursts


@settings(max_examples=500)
@given(corrupted_bursts(), st.integers(1, 32))
def test_flipped_and_cut_frames_never_yield_a_uid_that_was_not_sent(bursts: list[tuple[bytes, bytes]], chunk: int) -> None:
    reader = FrameReader()
    read: list[bytes] = []
    for _, burst in bursts:
        for item in read_all(reader, burst, chunk):
            if isinstance(item, Frame) and item.tfi == 0xD5 and item.code == 0x4B:
                read.append(parse_target_uid(item.params) or b"")
    sent = {uid for uid, _ in bursts}
    assert set(read) <= sent
    assert read[-1] == bursts[-1][0]
    assert not reader.pending


@settings(max_examples=300)
@given(st.lists(frame_data, min_size=1, max_size=6), st.data())
def test_back_to_back_frames_with_one_flipped_bit_never_yield_data_that_was_not_sent(datas: list[bytes], data: st.DataObject) -> None:
    # No quiet line between frames here: every single-bit error is caught by
    # LCS, DCS or the postamble, whatever follows it.
    frames = [normal(d) for d in datas]
    victim = data.draw(st.integers(0, len(frames) - 1))
    bit = data.draw(st.integers(0, len(frames[victim]) * 8 - 1))
    flipped = bytearray(frames[victim])
    flipped[bit // 8] ^= 1 << (bit % 8)
    frames[victim] = bytes(flipped)
    good = normal(datas[0])
    out = read_all(FrameReader(), b"".join(frames) + good, data.draw(st.integers(1, 32)))
    got = [item.data for item in out if isinstance(item, Frame)]
    assert set(got) <= set(datas)
    assert got[-1] == datas[0]


@given(st.binary(max_size=64))
def test_target_answer_parser_meets_anything(params: bytes) -> None:
    try:
        uid = parse_target_uid(params)
    except ReaderFrameError:
        return
    assert uid is None or len(uid) in (4, 7, 10)


# -- the driver against a simulated PN532 on a pseudo-terminal ----------------


@pytest.fixture
def pn532() -> Iterator[SimulatedPn532]:
    sim = SimulatedPn532()
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def port(pn532: SimulatedPn532) -> Iterator[serial.Serial]:
    p = serial.serial_for_url(pn532.path, baudrate=115200, timeout=0.05)
    try:
        yield p
    finally:
        p.close()


def test_chip_in_lowvbat_answers_only_after_wake_up_and_sam_configuration(pn532: SimulatedPn532, port: serial.Serial) -> None:
    driver = Pn532Driver(port, ack_timeout_s=0.3)
    with pytest.raises(ReaderSilent) as info:
        driver.firmware_version()
    assert str(info.value) == "PN532 did not acknowledge command 0x02 in time"
    driver.wake()
    driver.sam_configuration()
    assert driver.firmware_version() == (0x32, 0x01, 0x06, 0x07)
    driver.limit_retries()
    assert pn532.commands == [0x14, 0x02, 0x32]


def test_poll_finds_4_and_7_byte_uids(pn532: SimulatedPn532, port: serial.Serial) -> None:
    driver = Pn532Driver(port)
    driver.wake()
    driver.sam_configuration()
    assert driver.poll() is None
    pn532.present(UID4)
    assert driver.poll() == UID4
    pn532.present(UID7)
    assert driver.poll() == UID7
    pn532.remove()
    assert driver.poll() is None


def test_a_garbled_answer_is_asked_for_again_with_a_nack(pn532: SimulatedPn532, port: serial.Serial) -> None:
    driver = Pn532Driver(port)
    driver.wake()
    driver.sam_configuration()
    pn532.present(UID7)
    pn532.corrupt_next = 1
    assert driver.poll() == UID7
    assert driver.counters["nacks_sent"] == 1
    assert driver.frame_counters["bad_dcs"] == 1
    assert pn532.nacks == 1


def test_the_error_frame_raises_device_error(pn532: SimulatedPn532, port: serial.Serial) -> None:
    driver = Pn532Driver(port)
    driver.wake()
    driver.sam_configuration()
    with pytest.raises(DeviceError) as info:
        driver.command(0x70)  # not a PN532 command
    assert str(info.value) == "PN532 answered command 0x70 with its error frame"
    assert driver.counters["error_frames"] == 1
    assert driver.poll() is None  # and the next command goes through


def test_chip_going_silent_after_a_power_glitch_and_recovering(pn532: SimulatedPn532, port: serial.Serial) -> None:
    driver = Pn532Driver(port, ack_timeout_s=0.3)
    driver.wake()
    driver.sam_configuration()
    pn532.present(UID4)
    assert driver.poll() == UID4
    pn532.glitch()
    with pytest.raises(ReaderSilent):
        driver.poll()
    driver.wake()
    driver.sam_configuration()
    assert driver.poll() == UID4
    pn532.silent = True
    with pytest.raises(ReaderSilent):
        driver.poll()
    pn532.silent = False
    assert driver.poll() == UID4
