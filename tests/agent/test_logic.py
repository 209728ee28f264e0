"""The pure input logic: debounce, hold-to-trigger, flap detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.inputs.logic import DebouncedContact, FlapDetector, HoldToTrigger

# -- DebouncedContact ------------------------------------------------------------


def test_change_is_confirmed_once_stable_for_the_debounce_time() -> None:
    contact = DebouncedContact(0.05, initial=False)
    contact.feed(True, 10.0)
    assert contact.deadline == pytest.approx(10.05)
    assert contact.tick(10.049) is None
    assert contact.level is False
    assert contact.tick(10.05) is True
    assert contact.level is True
    assert contact.changed_at == 10.0
    assert contact.deadline is None
    assert contact.tick(11.0) is None  # reported once


def test_bounce_back_to_the_confirmed_level_is_forgotten() -> None:
    contact = DebouncedContact(0.05, initial=False)
    contact.feed(True, 1.0)
    contact.feed(False, 1.02)
    assert contact.deadline is None
    assert contact.tick(2.0) is None
    assert contact.level is False


def test_bounce_restarts_the_debounce_from_the_last_edge() -> None:
    contact = DebouncedContact(0.05, initial=False)
    contact.feed(True, 1.0)
    contact.feed(False, 1.02)
    contact.feed(True, 1.03)
    assert contact.tick(1.06) is None
    assert contact.tick(1.08) is True


def test_feeding_the_same_level_again_does_not_restart_the_debounce() -> None:
    contact = DebouncedContact(0.05, initial=False)
    contact.feed(True, 1.0)
    contact.feed(True, 1.04)  # a periodic re-read
    assert contact.tick(1.05) is True


def test_zero_debounce_confirms_on_the_next_tick() -> None:
    contact = DebouncedContact(0.0, initial=False)
    contact.feed(True, 5.0)
    assert contact.deadline == 5.0
    assert contact.tick(5.0) is True


def test_unknown_initial_level_is_confirmed_like_a_change() -> None:
    contact = DebouncedContact(0.05)
    assert contact.level is None
    contact.feed(False, 0.0)
    assert contact.tick(0.01) is None
    assert contact.tick(0.05) is False
    assert contact.level is False


def test_an_edge_fed_late_with_an_older_time_counts_as_now() -> None:
    contact = DebouncedContact(0.05, initial=False)
    contact.feed(False, 2.0)
    contact.feed(True, 1.0)  # recorded on another thread, arrives out of order
    assert contact.deadline == pytest.approx(2.05)


def test_negative_debounce_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^debounce_s must not be negative, not -1$"):
        DebouncedContact(-1)


@settings(deadline=None)  # a loaded test machine must not turn slowness into a failure
@given(
    debounce_ms=st.integers(0, 200),
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=40),
)
def test_debounce_matches_a_model(debounce_ms: int, runs: list[tuple[bool, int]]) -> None:
    """Feed raw levels held for given ms, ticking every ms: a level counts iff held >= debounce.

    Times are whole numbers (the unit does not matter to the logic), so float
    rounding cannot blur the boundary.
    """
    contact = DebouncedContact(float(debounce_ms), initial=False)
    model = False
    t_ms = 0
    seen: list[bool] = []
    expected: list[bool] = []
    # Merge adjacent runs of one level: the raw level did not change between them.
    merged: list[list[int | bool]] = []
    for level, ms in runs:
        if merged and merged[-1][0] == level:
            merged[-1][1] += ms  # type: ignore[operator]
        else:
            merged.append([level, ms])
    for level, ms in merged:
        assert isinstance(level, bool) and isinstance(ms, int)
        contact.feed(level, float(t_ms))
        for step in range(ms):
            got = contact.tick(float(t_ms + step))
            if got is not None:
                seen.append(got)
        if level != model and ms > debounce_ms:
            model = level
            expected.append(level)
        t_ms += ms
    assert seen == expected


def test_a_level_held_past_the_debounce_counts_even_if_no_tick_saw_it() -> None:
    """A busy loop learns of an opening only with its closing: the alarm still happened."""
    contact = DebouncedContact(0.02, initial=False)
    contact.feed(True, 1.0)
    contact.feed(False, 1.04)  # held 40 ms, twice the debounce; no tick in between
    assert contact.deadline == pytest.approx(1.02)  # in the past: tick at once
    assert contact.tick(1.2) is True
    assert contact.changed_at == 1.0
    assert contact.tick(1.2) is False
    assert contact.changed_at == 1.04
    assert contact.tick(1.3) is None
    assert contact.level is False


@settings(deadline=None)
@given(
    debounce_ms=st.integers(0, 200),
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=40),
    tick_every_ms=st.integers(1, 2000),
)
def test_late_ticks_lose_no_change(debounce_ms: int, runs: list[tuple[bool, int]], tick_every_ms: int) -> None:
    """However rarely the loop ticks, every level held longer than the debounce is reported once, in order."""
    contact = DebouncedContact(float(debounce_ms), initial=False)
    merged: list[list[int | bool]] = []
    for level, ms in runs:
        if merged and merged[-1][0] == level:
            merged[-1][1] += ms  # type: ignore[operator]
        else:
            merged.append([level, ms])
    seen: list[bool] = []
    expected: list[bool] = []
    model = False
    t_ms = 0
    next_tick = tick_every_ms
    for i, (level, ms) in enumerate(merged):
        assert isinstance(level, bool) and isinstance(ms, int)
        contact.feed(level, float(t_ms))
        while next_tick < t_ms + ms:
            while (got := contact.tick(float(next_tick))) is not None:
                seen.append(got)
            next_tick += tick_every_ms
        last = i == len(merged) - 1
        if level != model and (ms > debounce_ms or last):
            model = level
            expected.append(level)
        t_ms += ms
    while (got := contact.tick(float(t_ms + debounce_ms))) is not None:  # the last level, ticked long after
        seen.append(got)
    assert seen == expected


# -- HoldToTrigger ---------------------------------------------------------------


def test_brush_shorter_than_the_hold_does_nothing() -> None:
    hold = HoldToTrigger(1.5)
    hold.press(0.0)
    assert hold.tick(1.0) is False
    hold.release(1.2)
    assert hold.tick(5.0) is False
    assert hold.deadline is None


def test_fires_once_when_the_hold_is_reached_while_still_held() -> None:
    hold = HoldToTrigger(1.5)
    hold.press(10.0)
    assert hold.deadline == 11.5
    assert hold.tick(11.49) is False
    assert hold.tick(11.5) is True
    assert hold.pressed
    assert [hold.tick(t) for t in (12.0, 100.0, 1000.0)] == [False, False, False]
    assert hold.deadline is None
    hold.release(1000.5)
    assert hold.tick(1001.0) is False


def test_each_new_press_fires_again() -> None:
    hold = HoldToTrigger(0.5)
    fired = []
    for start in (0.0, 10.0):
        hold.press(start)
        fired.append(hold.tick(start + 0.5))
        hold.release(start + 1)
    assert fired == [True, True]


def test_repeated_press_edge_does_not_restart_the_hold() -> None:
    hold = HoldToTrigger(1.0)
    hold.press(0.0)
    hold.press(0.8)
    assert hold.tick(1.0) is True


def test_long_press_learnt_only_at_release_still_fires_once() -> None:
    hold = HoldToTrigger(1.5)
    hold.press(0.0)
    hold.release(2.0)  # the loop was busy and sees both edges together
    assert hold.deadline == 2.0
    assert hold.tick(3.0) is True
    assert hold.tick(4.0) is False


def test_zero_hold_fires_on_the_press() -> None:
    hold = HoldToTrigger(0)
    hold.press(3.0)
    assert hold.tick(3.0) is True


@settings(deadline=None)
@given(presses=st.lists(st.tuples(st.integers(0, 50), st.integers(1, 300)), max_size=20), hold_ms=st.integers(0, 200))
def test_one_trigger_per_long_enough_press(presses: list[tuple[int, int]], hold_ms: int) -> None:
    """Gaps and durations in whole units; ticking every unit, exactly the presses >= hold fire."""
    hold = HoldToTrigger(float(hold_ms))
    t = 0
    fired = 0
    for gap, duration in presses:
        t += gap + 1
        hold.press(float(t))
        for step in range(duration):
            fired += hold.tick(float(t + step))
        t += duration
        hold.release(float(t))
        fired += hold.tick(float(t))
    assert fired == sum(1 for _, duration in presses if duration >= hold_ms)


# -- FlapDetector ----------------------------------------------------------------


def test_flapping_is_reported_on_the_transition_that_exceeds_the_limit() -> None:
    flaps = FlapDetector(3, 10.0)
    assert [flaps.transition(t) for t in (0.0, 1.0, 2.0)] == [False, False, False]
    assert flaps.transition(3.0) is True
    assert flaps.flapping


def test_flapping_is_reported_once_per_episode_and_rearms_after_quiet() -> None:
    flaps = FlapDetector(3, 10.0)
    results = [flaps.transition(t) for t in (0, 1, 2, 3, 4, 5, 6, 15)]
    assert results == [False, False, False, True, False, False, False, False]
    assert flaps.flapping  # 9 s since the last one: not quiet yet
    assert flaps.transition(26.0) is False  # 11 s quiet: re-armed, a new count starts
    assert not flaps.flapping
    assert [flaps.transition(t) for t in (27.0, 28.0, 29.0)] == [False, False, True]


def test_slow_transitions_never_flap() -> None:
    flaps = FlapDetector(3, 10.0)
    assert not any(flaps.transition(t * 4.0) for t in range(100))


def test_flap_detector_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match=r"^max_transitions must be at least 1, not 0$"):
        FlapDetector(0, 1.0)
    with pytest.raises(ValueError, match=r"^window_s must be greater than 0, not 0$"):
        FlapDetector(1, 0)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(0.0, 30.0), max_size=200))
def test_flap_reports_never_exceed_episodes(gaps: list[float]) -> None:
    flaps = FlapDetector(4, 10.0)
    t = 0.0
    reports = 0
    quiet_breaks = 1
    for i, gap in enumerate(gaps):
        t += gap
        if i and gap >= 10.0:
            quiet_breaks += 1
        reports += flaps.transition(t)
    assert reports <= quiet_breaks
    assert reports <= len(gaps) // 5 + 1
