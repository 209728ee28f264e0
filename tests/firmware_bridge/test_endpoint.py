"""The stop-and-wait endpoint, pure: bytes and milliseconds in, bytes out."""

from __future__ import annotations

import pytest

from firmware_bridge.framing import Deframer, Endpoint, FrameError, encode_frame, hello_body


def frames(data: bytes) -> list[dict]:
    return Deframer().feed(data)


def test_a_frame_is_numbered_sent_acked_and_delivered_once() -> None:
    pi, mcu = Endpoint(), Endpoint()
    mcu.send({"t": "zone", "input": 1, "state": "alarm"})
    mcu.poll(0)
    wire = mcu.take_output()
    assert frames(wire) == [{"t": "zone", "input": 1, "state": "alarm", "n": 0}]
    assert pi.receive(wire, 1) == [{"t": "zone", "input": 1, "state": "alarm", "n": 0}]
    ack = pi.take_output()
    assert frames(ack) == [{"t": "ack", "n": 0}]
    assert mcu.receive(ack, 2) == []
    assert not mcu.busy
    assert mcu.poll(500) is None
    assert mcu.take_output() == b""


def test_stop_and_wait_one_frame_in_flight() -> None:
    pi, mcu = Endpoint(), Endpoint()
    for index in range(3):
        mcu.send({"t": "zone", "input": index, "state": "normal"})
    mcu.poll(0)
    first = mcu.take_output()
    assert [f["input"] for f in frames(first)] == [0]  # the others wait for the ack
    delivered = pi.receive(first, 1)
    mcu.receive(pi.take_output(), 2)  # the ack sends the next one at once
    second = mcu.take_output()
    assert [f["n"] for f in frames(second)] == [1]
    delivered += pi.receive(second, 3)
    mcu.receive(pi.take_output(), 4)
    delivered += pi.receive(mcu.take_output(), 5)
    assert [(f["n"], f["input"]) for f in delivered] == [(0, 0), (1, 1), (2, 2)]


def test_a_lost_frame_is_sent_again_after_200_ms_and_delivered_once() -> None:
    pi, mcu = Endpoint(), Endpoint()
    mcu.send({"t": "zone", "input": 1, "state": "alarm"})
    assert mcu.poll(1000) == 200
    mcu.take_output()  # lost on the wire
    assert mcu.poll(1199) == 1
    assert mcu.take_output() == b""
    assert mcu.poll(1200) == 200
    again = mcu.take_output()
    assert frames(again) == [{"t": "zone", "input": 1, "state": "alarm", "n": 0}]
    assert pi.receive(again, 1201) == [{"t": "zone", "input": 1, "state": "alarm", "n": 0}]
    mcu.receive(pi.take_output(), 1202)
    assert not mcu.busy
    assert mcu.counters["retransmits"] == 1


def test_a_lost_ack_makes_a_repeat_that_is_acked_but_not_delivered_again() -> None:
    pi, mcu = Endpoint(), Endpoint()
    mcu.send({"t": "wiegand", "input": 0, "bits": 26, "data": 123})
    mcu.poll(0)
    wire = mcu.take_output()
    assert len(pi.receive(wire, 1)) == 1
    pi.take_output()  # the ack is lost
    mcu.poll(200)
    repeat = mcu.take_output()
    assert repeat == wire
    assert pi.receive(repeat, 201) == []
    assert frames(pi.take_output()) == [{"t": "ack", "n": 0}]
    assert pi.counters["duplicates"] == 1
    mcu.receive(encode_frame({"t": "ack", "n": 0}), 202)
    assert not mcu.busy


def test_gives_up_after_five_resends_and_reports_the_frame() -> None:
    mcu = Endpoint()
    mcu.send({"t": "out", "output": 0, "on": True, "ms": 1000})
    mcu.poll(0)
    sent = [mcu.take_output()]
    for step in range(1, 7):
        mcu.poll(step * 200)
        sent.append(mcu.take_output())
    assert [len(frames(s)) for s in sent] == [1, 1, 1, 1, 1, 1, 0]  # first try + 5 resends
    assert mcu.counters["retransmits"] == 5
    assert mcu.counters["gave_up"] == 1
    assert mcu.take_given_up() == [{"t": "out", "output": 0, "on": True, "ms": 1000, "n": 0}]
    assert not mcu.busy


def test_without_a_give_up_a_frame_is_sent_until_acked_ever_less_often() -> None:
    """The firmware's endpoint: a card has no other copy, so it is sent again and again (200, 400, 800 ms, then
    every second) until the Pi acknowledges it; what waits behind it goes next."""
    mcu = Endpoint(max_resends=None)
    mcu.send({"t": "wiegand", "input": 0, "bits": 26, "data": 1})
    mcu.send({"t": "zone", "input": 0, "state": "alarm"})
    mcu.poll(0)
    sendings = [0] if frames(mcu.take_output()) else []
    for now in range(1, 10_001):
        mcu.poll(now)
        if frames(mcu.take_output()):
            sendings.append(now)
    assert sendings[:5] == [0, 200, 600, 1400, 2400]
    assert all(b - a == 1000 for a, b in zip(sendings[3:], sendings[4:]))
    assert len(sendings) == 12 and mcu.counters["gave_up"] == 0 and mcu.take_given_up() == []
    mcu.receive(encode_frame({"t": "ack", "n": 0}), 10_001)
    assert frames(mcu.take_output()) == [{"t": "zone", "input": 0, "state": "alarm", "n": 1}]
    mcu.poll(10_201)  # the next frame starts from the short wait again
    assert frames(mcu.take_output()) == [{"t": "zone", "input": 0, "state": "alarm", "n": 1}]


def test_the_next_frame_goes_out_after_giving_up() -> None:
    mcu = Endpoint()
    mcu.send({"t": "hb", "uptime_ms": 1})
    mcu.send({"t": "zone", "input": 0, "state": "alarm"})
    mcu.poll(0)
    mcu.take_output()
    for step in range(1, 7):
        mcu.poll(step * 200)
        mcu.take_output() if step < 6 else None
    assert frames(mcu.take_output()) == [{"t": "zone", "input": 0, "state": "alarm", "n": 1}]


def test_receiver_remembers_sixteen_frame_numbers() -> None:
    pi = Endpoint()
    for n in range(17):
        assert len(pi.receive(encode_frame({"t": "hb", "n": n}), n)) == 1
    assert pi.receive(encode_frame({"t": "hb", "n": 16}), 20) == []
    assert pi.receive(encode_frame({"t": "hb", "n": 1}), 21) == []
    # Number 0 fell out of the memory: it counts as new (a wrapped counter).
    assert len(pi.receive(encode_frame({"t": "hb", "n": 0}), 22)) == 1


def test_frame_numbers_wrap_at_65536() -> None:
    pi, mcu = Endpoint(), Endpoint(first_n=65535)
    for expected in (65535, 0, 1):
        mcu.send({"t": "hb", "uptime_ms": 0})
        mcu.poll(0)
        wire = mcu.take_output()
        assert [f["n"] for f in pi.receive(wire, 0)] == [expected]
        mcu.receive(pi.take_output(), 0)


def test_a_hello_starts_the_peers_numbering_afresh() -> None:
    pi = Endpoint()
    for n in range(5):
        pi.receive(encode_frame({"t": "zone", "n": n, "input": 0, "state": "normal"}), 0)
    # The mcu rebooted: its numbers start at 0 again, behind a hello.
    hello = {**hello_body("fw", []), "n": 0}
    assert pi.receive(encode_frame(hello), 1) == [hello]
    assert pi.receive(encode_frame(hello), 2) == []  # the same hello resent: a repeat
    assert pi.counters["duplicates"] == 1
    zone = {"t": "zone", "n": 1, "input": 0, "state": "alarm"}
    assert pi.receive(encode_frame(zone), 3) == [zone]
    # A new hello with the number of the last one, but after other frames, is new.
    hello2 = {**hello_body("fw", []), "n": 1}
    assert pi.receive(encode_frame(hello2), 4) == [hello2]


def test_stray_ack_is_counted() -> None:
    mcu = Endpoint()
    assert mcu.receive(encode_frame({"t": "ack", "n": 7}), 0) == []
    assert mcu.counters["stray_acks"] == 1
    assert mcu.take_output() == b""  # acks are never acked


def test_waiting_queue_is_bounded_and_heartbeats_coalesce() -> None:
    mcu = Endpoint(queue_max=3)
    mcu.send({"t": "zone", "input": 0, "state": "alarm"})
    mcu.poll(0)  # in flight
    mcu.send({"t": "hb", "uptime_ms": 1}, True)
    mcu.send({"t": "hb", "uptime_ms": 2}, True)
    for index in range(1, 5):
        mcu.send({"t": "zone", "input": index, "state": "alarm"})
    assert mcu.counters["queue_drops"] == 2
    pi = Endpoint()
    got = pi.receive(mcu.take_output(), 0)
    for now in range(1, 4):
        mcu.receive(pi.take_output(), now)
        got += pi.receive(mcu.take_output(), now)
    assert [(f["t"], f.get("input")) for f in got] == [("zone", 0), ("zone", 2), ("zone", 3), ("zone", 4)]


def test_send_refuses_what_can_never_go() -> None:
    mcu = Endpoint()
    with pytest.raises(FrameError) as info:
        mcu.send({"t": "ack", "n": 1})
    assert str(info.value) == "a body to send needs a 't' other than 'ack'"
    with pytest.raises(FrameError) as info:
        mcu.send({"t": "tag", "uid": b"x" * 300})
    # Measured with the widest frame number (n = 65535, three bytes).
    assert str(info.value) == "frame body of 319 bytes exceeds 256 bytes"
    assert not mcu.busy


def test_reset_forgets_everything() -> None:
    pi, mcu = Endpoint(), Endpoint()
    mcu.send({"t": "hb", "uptime_ms": 1})
    mcu.poll(0)
    pi.receive(mcu.take_output(), 0)
    pi.receive(b"\x05\x01", 0)  # half a frame
    pi.reset()
    assert pi.take_output() == b""
    # The same number is new again, and the half frame is gone.
    assert len(pi.receive(encode_frame({"t": "hb", "n": 0}), 1)) == 1
    assert pi.counters["cobs_errors"] == 0
