"""Which eseqs central holds, and when to ask for a replay (never giving a gap up on its own)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from central.ledger import EseqLedger, GapAction, GapPolicy

POLICY = GapPolicy(grace_s=1.0, replay_interval_s=5.0, replay_interval_max_s=20.0)


def test_in_order_eseqs_move_contiguous() -> None:
    ledger = EseqLedger(0, set(), progress_at=0.0)
    for n in (1, 2, 3):
        ledger.add(n, 0.0)
    assert (ledger.contiguous, ledger.gap) == (3, False)


def test_a_gap_closes_when_the_missing_eseqs_come() -> None:
    ledger = EseqLedger(2, set(), progress_at=0.0)
    ledger.add(5, 1.0)
    ledger.add(4, 1.5)
    assert (ledger.contiguous, ledger.above, ledger.progress_at) == (2, {4, 5}, 1.0)
    ledger.add(3, 2.0)
    assert (ledger.contiguous, ledger.above, ledger.progress_at) == (5, set(), 2.0)


def test_a_replay_only_for_a_gap_that_stands_still_and_not_too_often() -> None:
    ledger = EseqLedger(2, set(), progress_at=0.0)
    ledger.add(5, 10.0)
    assert ledger.next_action(10.5, POLICY) is None  # within the grace
    assert ledger.next_action(11.0, POLICY) is GapAction.REPLAY
    assert ledger.replay_asked(11.0) == 3
    assert ledger.next_action(15.0, POLICY) is None  # rate-limited
    ledger.add(3, 15.5)  # progress: the count of fruitless replays starts again
    assert ledger.attempts == 0
    assert ledger.next_action(16.0, POLICY) is None
    assert ledger.next_action(16.5, POLICY) is GapAction.REPLAY
    assert ledger.replay_asked(16.5) == 4


def test_a_gap_no_replay_fills_is_asked_for_ever_less_often_and_never_given_up() -> None:
    ledger = EseqLedger(1, {4, 5, 9}, progress_at=0.0)
    asked = []
    t = 0.0
    while t < 200.0:
        if ledger.next_action(t, POLICY) is GapAction.REPLAY:
            asked.append(t)
            assert ledger.replay_asked(t) == 2  # always from the first missing eseq
        t += 0.5
    # 1 s of grace, then 5, 10, 20 and (the cap) 20 s apart, for as long as the gap stands
    assert asked[:5] == [1.0, 6.0, 16.0, 36.0, 56.0]
    assert all(b - a == 20.0 for a, b in zip(asked[3:], asked[4:]))
    assert (ledger.contiguous, ledger.above) == (1, {4, 5, 9})
    ledger.add(2, 200.0)
    ledger.add(3, 200.0)
    assert (ledger.contiguous, ledger.above, ledger.attempts) == (5, {9}, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_contiguous_is_the_longest_run_from_the_start(arrivals: list[int]) -> None:
    ledger = EseqLedger(0, set(), progress_at=0.0)
    for n in arrivals:
        ledger.add(n, 0.0)
    held = set(arrivals)
    expected = 0
    while expected + 1 in held:
        expected += 1
    assert ledger.contiguous == expected
    assert ledger.above == {n for n in held if n > expected + 1}


def test_ranges_covered_without_events_are_stepped_over() -> None:
    ledger = EseqLedger(0, {3, 9}, progress_at=0.0, covered=[(2, 2), (4, 8)])
    ledger.add(1, 1.0)
    assert (ledger.contiguous, ledger.above, ledger.covered) == (9, set(), [])
    ledger = EseqLedger(5, set(), progress_at=0.0, covered=[(7, 10)])
    ledger.add(6, 1.0)
    assert (ledger.contiguous, ledger.gap) == (10, False)


def test_covered_to_takes_what_other_centrals_stored_and_runs_on() -> None:
    ledger = EseqLedger(2, {5, 6, 9}, progress_at=0.0, covered=[(7, 8)])
    ledger.covered_to(1, 1.0)  # behind: nothing moves
    assert (ledger.contiguous, ledger.progress_at) == (2, 0.0)
    ledger.covered_to(4, 2.0)  # 3 and 4 are in the store (another member): on over 5, 6, the lost 7-8, 9
    assert (ledger.contiguous, ledger.above, ledger.gap, ledger.progress_at) == (9, set(), False, 2.0)
