"""PresenceFilter: one presentation of a card is one scan (docs/reference.md, "For every reader")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.inputs.readers.presence import PresenceFilter


def test_a_card_held_for_a_long_time_is_one_presentation() -> None:
    f = PresenceFilter(absent_s=1.0)
    sightings = [f.seen("67003B51C6", t / 10) for t in range(0, 300)]  # 30 s, every 100 ms
    assert sightings.count(True) == 1
    assert sightings[0] is True


def test_absent_for_one_second_makes_the_next_sighting_a_new_presentation() -> None:
    f = PresenceFilter(absent_s=1.0)
    assert f.seen("A1", 10.0)
    assert not f.seen("A1", 10.5)
    assert not f.seen("A1", 11.49)  # gap of 0.99 s: still the same presentation
    assert f.seen("A1", 12.49)  # gap of exactly 1 s: taken away and put back


def test_two_cards_are_two_presentations() -> None:
    f = PresenceFilter()
    assert f.seen("A1", 0.0)
    assert f.seen("B2", 0.1)
    assert not f.seen("A1", 0.2)
    assert f.present == frozenset({"A1", "B2"})


def test_tick_forgets_absent_cards_only() -> None:
    f = PresenceFilter(absent_s=1.0)
    f.seen("A1", 0.0)
    f.seen("B2", 0.8)
    f.tick(1.0)
    assert f.present == frozenset({"B2"})
    assert f.seen("A1", 1.1)
    assert not f.seen("B2", 1.1)


@pytest.mark.parametrize("absent_s", [0, -1.0])
def test_absent_s_must_be_positive(absent_s: float) -> None:
    with pytest.raises(ValueError) as info:
        PresenceFilter(absent_s=absent_s)
    assert str(info.value) == f"PresenceFilter: absent_s must be positive, not {absent_s!r}"


@given(st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=1, max_size=50), st.booleans())
def test_presentations_are_the_gaps_of_one_second_or_more(gaps: list[float], with_ticks: bool) -> None:
    f = PresenceFilter(absent_s=1.0)
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    starts = 0
    for now in times:
        if with_ticks:
            f.tick(now)
        if f.seen("C3", now):
            starts += 1
    # The first sighting, plus every gap of a second or more after it.
    assert starts == 1 + sum(1 for before, after in zip(times, times[1:]) if after - before >= 1.0)
