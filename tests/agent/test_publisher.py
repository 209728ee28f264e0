"""The delivery rule as pure logic: live first, backlog in order, resends, window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.publisher import Publisher, Send

RESEND_S = 10.0


def _eseqs(sends: list[Send]) -> list[int]:
    return [s.eseq for s in sends]


def _puback_all(p: Publisher, sends: list[Send]) -> None:
    for s in sends:
        p.published(s.eseq)


def test_nothing_is_due_while_disconnected() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.appended(5)
    assert p.due(0.0) == []


def test_backlog_goes_out_in_order_flagged_replayed() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.appended(3)  # stored while offline
    p.connect(acked_eseq=0, last_eseq=3)
    assert p.due(0.0) == [Send(1, True), Send(2, True), Send(3, True)]
    assert p.due(0.0) == []


def test_live_events_are_not_replayed_and_go_ahead_of_backlog() -> None:
    p = Publisher(resend_s=RESEND_S, window=4)
    p.connect(acked_eseq=0, last_eseq=10)
    first = p.due(0.0)
    assert _eseqs(first) == [1, 2, 3, 4]
    _puback_all(p, first)
    p.appended(11)  # a new alarm while the backlog drains
    assert p.due(0.1) == [Send(11, False), Send(5, True), Send(6, True), Send(7, True)]


def test_window_limits_publishes_waiting_for_puback() -> None:
    p = Publisher(resend_s=RESEND_S, window=2)
    p.connect(acked_eseq=0, last_eseq=5)
    assert _eseqs(p.due(0.0)) == [1, 2]
    assert p.due(0.0) == []
    p.published(1)
    assert _eseqs(p.due(0.0)) == [3]
    assert p.in_flight == 2


def test_unacked_events_are_resent_after_resend_s_in_order() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=0)
    p.appended(1)
    s1 = p.due(0.0)
    p.appended(3)
    s2 = p.due(1.0)
    _puback_all(p, s1 + s2)
    assert _eseqs(s1 + s2) == [1, 2, 3]
    assert p.next_deadline() == 10.0
    assert p.due(9.9) == []
    p.acked(1)
    assert p.due(10.0) == []  # 1 is acked; 2 and 3 were sent at 1.0
    assert p.due(11.0) == [Send(2, True), Send(3, True)]


def test_ack_stops_resends() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=3)
    _puback_all(p, p.due(0.0))
    p.acked(3)
    assert p.due(100.0) == []
    assert p.idle


def test_an_event_without_puback_is_not_sent_twice() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=1)
    assert _eseqs(p.due(0.0)) == [1]
    assert p.due(50.0) == []  # still waiting for the broker: keepalive will tell
    p.published(1)
    assert p.due(59.9) == []  # its timer restarted at 50.0
    assert _eseqs(p.due(60.0)) == [1]


def test_central_turning_online_resends_the_whole_backlog() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=2, last_eseq=6)
    assert p.central_status(True, 100, retained=True) is False  # from before we subscribed
    _puback_all(p, p.due(0.0))
    assert p.central_status(False, 200, retained=False) is False
    assert p.due(30.0) == []  # central is away: no resends into the void
    assert p.next_deadline() is None
    assert p.central_status(True, 300, retained=False) is True
    assert p.due(31.0) == [Send(3, True), Send(4, True), Send(5, True), Send(6, True)]


def test_a_new_central_session_counts_as_turning_online() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=2)
    p.central_status(True, 100, retained=True)
    _puback_all(p, p.due(0.0))
    assert p.central_status(True, 100, retained=False) is False  # same session said it again
    assert p.central_status(True, 101, retained=False) is True  # central restarted (its Will got lost)
    assert _eseqs(p.due(1.0)) == [1, 2]


def test_replay_resends_unacked_from_the_asked_eseq() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=5)
    _puback_all(p, p.due(0.0))
    p.acked(2)
    p.replay(4)
    assert p.due(1.0) == [Send(4, True), Send(5, True)]
    p.replay(1)  # below the ack: starts after it
    assert _eseqs(p.due(2.0)) == [3]


def test_reconnect_sends_everything_unacked_again() -> None:
    p = Publisher(resend_s=RESEND_S)
    p.connect(acked_eseq=0, last_eseq=0)
    p.appended(2)
    assert p.due(0.0) == [Send(1, False), Send(2, False)]
    p.disconnect()
    p.appended(3)  # stored while offline
    p.connect(acked_eseq=1, last_eseq=3)
    assert p.due(5.0) == [Send(2, True), Send(3, True)]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="^resend_s must be greater than 0, not 0$"):
        Publisher(resend_s=0)
    with pytest.raises(ValueError, match="^window must be at least 1, not 0$"):
        Publisher(resend_s=1, window=0)


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("puback"), st.none()),
        st.tuples(st.just("ack"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.floats(0, 15)),
        st.tuples(st.just("reconnect"), st.none()),
        st.tuples(st.just("replay"), st.integers(1, 30)),
        st.tuples(st.just("central"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_every_unacked_event_is_eventually_delivered(steps: list[tuple[str, object]]) -> None:
    """Whatever happens, once things calm down every unacked event goes out, and
    nothing is ever sent that is not stored or already acked."""
    p = Publisher(resend_s=RESEND_S, window=3)
    now, last, acked = 0.0, 0, 0
    p.connect(acked_eseq=0, last_eseq=0)
    outstanding: list[int] = []
    central_ts = 0
    central = True
    for op, arg in steps:
        if op == "append":
            last += int(arg)  # type: ignore[call-overload]
            p.appended(last)
        elif op == "puback":
            for e in outstanding:
                p.published(e)
            outstanding.clear()
        elif op == "ack":
            acked = max(acked, min(int(arg), last))  # type: ignore[call-overload]
            p.acked(acked)
        elif op == "tick":
            now += float(arg)  # type: ignore[arg-type]
        elif op == "reconnect":
            p.disconnect()
            outstanding.clear()
            p.connect(acked_eseq=acked, last_eseq=last)
        elif op == "replay":
            p.replay(int(arg))  # type: ignore[call-overload]
        else:
            central_ts += 1
            p.central_status(bool(arg), central_ts, retained=False)
            central = bool(arg)
        for s in p.due(now):
            assert acked < s.eseq <= last
            outstanding.append(s.eseq)
    # Calm: central online, PUBACKs flow, time passes; nothing acked, so every
    # unacked event must come out (again) within a resend period or two.
    if not central:
        central_ts += 1
        p.central_status(True, central_ts, retained=False)
    delivered: set[int] = set()
    for _ in range(200):
        now += 1.0
        for e in outstanding:
            p.published(e)
        outstanding.clear()
        for s in p.due(now):
            delivered.add(s.eseq)
            outstanding.append(s.eseq)
    assert delivered >= set(range(acked + 1, last + 1))
