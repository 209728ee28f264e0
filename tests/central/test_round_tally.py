"""RoundTally (central/completion.py): scan by scan, always the verdict judge() gives."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from central.cards import Roster, parse_card
from central.completion import RoundTally, judge, slots_for
from central.plan.model import Order, Route, Window

CPS = ("a", "b", "c", "d")
ROSTER = Roster.of(["01", "02"], [parse_card("0008075634")])
DAY = dt.date(2024, 5, 1)


def route(order: Order, n: int) -> Route:
    return Route("r", "u", ("t",), order, CPS[:n], (Window(22 * 60, 23 * 60, 60, 10),))


scan = st.tuples(
    st.integers(0, 40),  # minutes after the slot's start, into the tolerance
    st.sampled_from(CPS),
    st.sampled_from([("01", None), ("02", None), ("03", None), ("6F007B3972", "em4100"), ("7B3972", "wiegand26"),
                     ("007B3972", "wiegand34"), ("7B3973", "wiegand26")]),
)


@settings(max_examples=400, deadline=None)
@given(order=st.sampled_from(list(Order)), n=st.integers(1, 4), scans=st.lists(scan, max_size=25),
       now_after=st.sampled_from([0, 90]))
def test_the_tally_agrees_with_judge_whatever_order_scans_arrive_in(order: Order, n: int, scans: list, now_after: int) -> None:
    r = route(order, n)
    slot = slots_for(r, dt.timezone.utc, DAY)[0]  # type: ignore[arg-type]
    tally = RoundTally(r, slot, authorised=ROSTER)
    arrived = []
    for minute, cp, (tag, fmt) in scans:
        if cp not in r.checkpoints:
            continue
        ts = slot.start_ms + minute * 60_000
        tally.add(ts, cp, tag, fmt)
        arrived.append((ts, cp, tag, fmt))
        now = slot.start_ms + now_after * 60_000
        expected = judge(r, slot, sorted(arrived, key=lambda s: s[0]), now, authorised=ROSTER)
        assert tally.round(now) == expected
        assert tally.status(now) is expected.status
        assert tally.to_json(now) == expected.to_json()
