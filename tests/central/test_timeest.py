"""Central's estimate of when an event happened."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from central.timeest import MAX_BOOTS_PER_AGENT, TS_MIN, ClockEstimator, Estimate

T0 = 1_700_000_000_000


def test_a_synced_event_keeps_its_time() -> None:
    c = ClockEstimator()
    assert c.estimate("a", "b", ts=T0, mono_ms=5, clock_synced=True, received_ts=T0 - 10) == Estimate(T0, False)


def test_a_synced_sample_of_the_same_boot_wins_over_live_samples() -> None:
    c = ClockEstimator()
    c.observe("a", "b", ts=0, mono_ms=1000, clock_synced=False, received_ts=T0 + 1500, live=True)
    assert c.estimate("a", "b", ts=7, mono_ms=2000, clock_synced=False, received_ts=T0 + 9000) == Estimate(
        T0 + 2500, True)
    c.observe("a", "b", ts=T0 + 1000, mono_ms=1000, clock_synced=True, received_ts=T0 + 1500, live=False)
    assert c.estimate("a", "b", ts=7, mono_ms=2000, clock_synced=False, received_ts=T0 + 9000) == Estimate(
        T0 + 2000, True)


def test_the_live_offset_is_the_smallest_delay_seen() -> None:
    c = ClockEstimator()
    assert c.observe("a", "b", ts=0, mono_ms=1000, clock_synced=False, received_ts=T0 + 1900, live=True)
    assert c.observe("a", "b", ts=0, mono_ms=2000, clock_synced=False, received_ts=T0 + 2050, live=True)
    assert not c.observe("a", "b", ts=0, mono_ms=3000, clock_synced=False, received_ts=T0 + 3400, live=True)
    assert not c.observe("a", "b", ts=0, mono_ms=4000, clock_synced=False, received_ts=T0 + 4001, live=False)
    assert c.estimate("a", "b", ts=0, mono_ms=10_000, clock_synced=False, received_ts=T0 + 20_000) == Estimate(
        T0 + 10_050, True)


def test_nothing_known_of_the_boot_keeps_ts_but_never_after_receipt() -> None:
    c = ClockEstimator()
    c.observe("a", "old-boot", ts=T0, mono_ms=0, clock_synced=True, received_ts=T0, live=True)
    assert c.estimate("a", "new-boot", ts=T0 - 5, mono_ms=0, clock_synced=False, received_ts=T0) == Estimate(
        T0 - 5, True)
    assert c.estimate("a", "new-boot", ts=T0 + 99_999, mono_ms=0, clock_synced=False, received_ts=T0) == Estimate(
        T0, True)


def test_export_and_load_round_trip_and_skip_junk() -> None:
    c = ClockEstimator()
    c.observe("a", "b", ts=T0, mono_ms=10, clock_synced=True, received_ts=T0 + 50, live=True)
    saved = c.export("a")
    assert saved == {"b": {"synced": T0 - 10, "live": T0 + 40}}
    d = ClockEstimator()
    d.load("a", {**saved, "junk": 3, "odd": {"synced": "x", "live": True}})
    assert d.export("a") == {"b": {"synced": T0 - 10, "live": T0 + 40}, "odd": {"synced": None, "live": None}}


def test_only_the_last_boots_are_kept() -> None:
    c = ClockEstimator()
    for n in range(MAX_BOOTS_PER_AGENT + 2):
        c.observe("a", f"boot-{n}", ts=T0, mono_ms=0, clock_synced=True, received_ts=T0, live=False)
    assert list(c.export("a")) == [f"boot-{n}" for n in range(2, MAX_BOOTS_PER_AGENT + 2)]


_samples = st.lists(st.tuples(st.sampled_from(["b1", "b2"]), st.integers(0, 10**6), st.integers(0, 10**6),
                              st.booleans(), st.integers(0, 2 * 10**6), st.booleans()), max_size=20)


@settings(max_examples=200, deadline=None)
@given(_samples)
def test_stamp_is_observe_then_estimate(samples: list[tuple[str, int, int, bool, int, bool]]) -> None:
    one, two = ClockEstimator(), ClockEstimator()
    for boot, ts, mono, synced, received, live in samples:
        changed = one.observe("a", boot, ts=ts, mono_ms=mono, clock_synced=synced, received_ts=received, live=live)
        est = one.estimate("a", boot, ts=ts, mono_ms=mono, clock_synced=synced, received_ts=received)
        assert two.stamp("a", boot, ts, mono, synced, received, live) == (est.ts_est, est.estimated, changed)


_INT64 = 2**63 - 1
_hostile = st.lists(st.tuples(st.sampled_from(["b1", "b2"]), st.integers(-_INT64, _INT64), st.integers(0, _INT64),
                              st.booleans(), st.integers(0, 2 * 10**12), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_hostile)
def test_every_estimate_fits_the_store_whatever_the_clocks_said(samples: list[tuple[str, int, int, bool, int, bool]]) -> None:
    """Any ts and mono_ms the wire lets through: the estimate is a 64-bit integer, never after receipt."""
    c = ClockEstimator()
    for boot, ts, mono, synced, received, live in samples:
        ts_est, estimated, _ = c.stamp("a", boot, ts, mono, synced, received, live)
        assert TS_MIN <= ts_est <= _INT64
        assert ts_est == ts if synced else (ts_est <= received and estimated)
