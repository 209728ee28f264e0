"""Rounds and statuses (central/completion.py): every status, every order, the edges of a night."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from central.completion import RoundStatus, Scan, index_scans, judge, route_scans, slots_for, to_ms
from central.plan.model import Plan
from tests.central.plan.samples import LIN, STRANGER, TZ, WU, ZHAO, at, plan, scan, with_route

MAY_1 = dt.date(2024, 5, 1)
AFTER_NIGHT = at(2, 12)


def rounds(p: Plan, scans: list[Scan], now_ms: int = AFTER_NIGHT, day: dt.date = MAY_1) -> list:
    route = p.routes[0]
    by_cp = index_scans(scans, p.checkpoint_at)
    out = []
    for slot in slots_for(route, p.tz, day):
        rs = route_scans(route, by_cp, slot.start_ms, slot.close_ms)
        out.append(judge(route, slot, rs, now_ms, authorised=p.route_tags[route.id]))
    return out


def first(p: Plan, scans: list[Scan], now_ms: int = AFTER_NIGHT):
    return rounds(p, scans, now_ms)[0]


# -- slots ---------------------------------------------------------------------------


def test_a_night_window_is_cut_into_slots_that_belong_to_the_date_it_opened() -> None:
    p = plan()
    slots = slots_for(p.routes[0], TZ, MAY_1)
    assert [s.start_iso for s in slots] == [
        "2024-05-01T22:00:00+08:00", "2024-05-02T00:00:00+08:00",
        "2024-05-02T02:00:00+08:00", "2024-05-02T04:00:00+08:00",
    ]
    assert {s.day for s in slots} == {MAY_1}
    assert [(s.end_ms - s.start_ms) // 60_000 for s in slots] == [120] * 4
    assert all(s.close_ms - s.end_ms == 15 * 60_000 for s in slots)


def test_the_last_slot_ends_with_the_window() -> None:
    p = plan(with_route("strict", '{ start = "22:00", end = "05:00", every_min = 120 }'))
    slots = slots_for(p.routes[0], TZ, MAY_1)
    assert [(s.end_ms - s.start_ms) // 60_000 for s in slots] == [120, 120, 120, 60]
    assert slots[-1].end_ms == at(2, 5) == slots[-1].close_ms


def test_a_window_whose_end_is_its_start_lasts_a_day() -> None:
    p = plan(with_route("any", '{ start = "08:00", end = "08:00", every_min = 360 }'))
    slots = slots_for(p.routes[0], TZ, MAY_1)
    assert [s.start_ms for s in slots] == [at(1, 8), at(1, 14), at(1, 20), at(2, 2)]


def test_slots_follow_elapsed_time_across_a_daylight_saving_change() -> None:
    text = with_route("any", '{ start = "22:00", end = "06:00", every_min = 120 }').replace("Asia/Shanghai", "Europe/Berlin")
    p = plan(text)
    slots = slots_for(p.routes[0], ZoneInfo("Europe/Berlin"), dt.date(2024, 3, 30))  # clocks go forward at 02:00
    utc = ZoneInfo("UTC")
    assert [dt.datetime.fromtimestamp(s.start_ms / 1000, utc).strftime("%H:%M") for s in slots] == ["21:00", "23:00", "01:00", "03:00"]
    assert slots[-1].end_ms == to_ms(dt.datetime(2024, 3, 31, 6, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    assert [s.start_iso[11:] for s in slots] == ["22:00:00+01:00", "00:00:00+01:00", "03:00:00+02:00", "05:00:00+02:00"]


# -- statuses, strict order --------------------------------------------------------------


def test_complete_when_every_checkpoint_is_scanned_in_order_inside_the_slot() -> None:
    r = first(plan(), [scan("cp-east-gate", at(1, 22, 5)), scan("cp-north-fence", at(1, 22, 20)), scan("cp-library", at(1, 23, 59, 59))])
    assert r.status is RoundStatus.COMPLETE
    assert (r.scanned, r.missing) == (("cp-east-gate", "cp-north-fence", "cp-library"), ())
    assert r.to_json() == {
        "route": "night-loop", "unit": "chengzhou-g1", "slot_start": "2024-05-01T22:00:00+08:00", "status": "complete",
        "scanned": ["cp-east-gate", "cp-north-fence", "cp-library"], "missing": [],
    }


def test_late_when_the_last_needed_scan_falls_within_the_tolerance() -> None:
    scans = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-north-fence", at(1, 23, 50)), scan("cp-library", at(2, 0, 14, 59))]
    assert first(plan(), scans).status is RoundStatus.LATE


def test_a_scan_after_the_tolerance_does_not_count() -> None:
    scans = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-north-fence", at(1, 23, 50)), scan("cp-library", at(2, 0, 15))]
    r = first(plan(), scans)
    assert r.status is RoundStatus.INCOMPLETE
    assert r.missing == ("cp-library",)


def test_incomplete_when_some_were_scanned_and_missed_when_none() -> None:
    r0, r1, r2, r3 = rounds(plan(), [scan("cp-north-fence", at(2, 0, 30))])
    assert [r.status for r in (r0, r1, r2, r3)] == [RoundStatus.MISSED, RoundStatus.INCOMPLETE, RoundStatus.MISSED, RoundStatus.MISSED]
    assert r1.scanned == ("cp-north-fence",)
    assert r1.missing == ("cp-east-gate", "cp-library")


def test_open_while_the_slot_and_its_tolerance_have_not_ended() -> None:
    scans = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-north-fence", at(1, 22, 20)), scan("cp-library", at(1, 22, 30))]
    assert first(plan(), scans, now_ms=at(1, 23)).status is RoundStatus.OPEN
    assert first(plan(), scans, now_ms=at(2, 0, 14, 59)).status is RoundStatus.OPEN
    assert first(plan(), scans, now_ms=at(2, 0, 15)).status is RoundStatus.COMPLETE
    assert first(plan(), [], now_ms=at(2, 0, 15)).status is RoundStatus.MISSED


def test_strict_round_scanned_out_of_order_is_incomplete_and_flagged() -> None:
    scans = [scan("cp-north-fence", at(1, 22, 5)), scan("cp-east-gate", at(1, 22, 20)), scan("cp-library", at(1, 22, 40))]
    r = first(plan(), scans)
    assert r.status is RoundStatus.INCOMPLETE
    assert r.missing == ()
    assert r.out_of_order


def test_strict_round_that_goes_back_and_walks_in_order_is_complete() -> None:
    scans = [scan("cp-north-fence", at(1, 22, 5)), scan("cp-east-gate", at(1, 22, 20)), scan("cp-north-fence", at(1, 22, 30)),
             scan("cp-library", at(1, 22, 40))]
    r = first(plan(), scans)
    assert r.status is RoundStatus.COMPLETE
    assert r.out_of_order  # the stray first scan is still worth a supervisor's look


def test_strict_in_order_walk_finishing_in_the_tolerance_after_a_wrong_one_is_late() -> None:
    scans = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-library", at(1, 22, 30)), scan("cp-north-fence", at(1, 23)),
             scan("cp-library", at(2, 0, 10))]
    assert first(plan(), scans).status is RoundStatus.LATE


# -- start-then-any and any -------------------------------------------------------------------


def test_start_then_any_needs_the_first_checkpoint_first() -> None:
    p = plan(with_route("start-then-any"))
    ok = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-library", at(1, 22, 20)), scan("cp-north-fence", at(1, 22, 40))]
    r = first(p, ok)
    assert r.status is RoundStatus.COMPLETE and not r.out_of_order
    wrong = [scan("cp-library", at(1, 22, 5)), scan("cp-east-gate", at(1, 22, 20)), scan("cp-north-fence", at(1, 22, 40))]
    r = first(p, wrong)
    assert r.status is RoundStatus.INCOMPLETE and r.out_of_order and r.missing == ()
    late = wrong + [scan("cp-library", at(2, 0, 5))]
    assert first(p, late).status is RoundStatus.LATE


def test_any_order_counts_every_checkpoint_once_in_any_order() -> None:
    p = plan(with_route("any"))
    scans = [scan("cp-library", at(1, 22, 5)), scan("cp-north-fence", at(1, 22, 20)), scan("cp-east-gate", at(1, 22, 40))]
    r = first(p, scans)
    assert r.status is RoundStatus.COMPLETE and not r.out_of_order
    assert first(p, scans[:2]).status is RoundStatus.INCOMPLETE
    assert first(p, scans[:2] + [scan("cp-east-gate", at(2, 0, 1))]).status is RoundStatus.LATE


# -- scans, cards and flags ------------------------------------------------------------------------


def test_a_scan_in_one_slots_tolerance_and_the_next_slot_counts_for_both() -> None:
    p = plan(with_route("any"))
    scans = [scan("cp-library", at(1, 22, 5)), scan("cp-north-fence", at(1, 22, 20)), scan("cp-east-gate", at(2, 0, 10)),
             scan("cp-library", at(2, 0, 20)), scan("cp-north-fence", at(2, 0, 30))]
    r0, r1, _, _ = rounds(p, scans)
    assert r0.status is RoundStatus.LATE
    assert r1.status is RoundStatus.COMPLETE
    assert r1.scanned == ("cp-east-gate", "cp-north-fence", "cp-library")


def test_only_cards_of_the_routes_teams_count_and_others_are_shown() -> None:
    p = plan()
    scans = [scan("cp-east-gate", at(1, 22, 5), WU), scan("cp-north-fence", at(1, 22, 20), STRANGER),
             scan("cp-north-fence", at(1, 22, 25), ZHAO), scan("cp-library", at(1, 22, 40), LIN)]
    r = first(p, scans)
    assert r.status is RoundStatus.INCOMPLETE  # teams walk together: Wu and Lin count, Zhao's team is not on the route
    assert r.missing == ("cp-north-fence",)
    assert r.unauthorised == tuple(sorted((ZHAO, STRANGER)))
    only_strangers = first(p, [scan("cp-east-gate", at(1, 22, 5), STRANGER)])
    assert only_strangers.status is RoundStatus.MISSED
    assert only_strangers.unauthorised == (STRANGER,)


def test_scans_at_readers_that_are_no_checkpoint_of_the_route_are_ignored() -> None:
    p = plan()
    r = first(p, [Scan(ts=at(1, 22, 5), agent="school-9-gate-1", reader="gate-9", tag=LIN),
                  Scan(ts=at(1, 22, 6), agent="other-agent", reader="gate-1", tag=LIN)])
    assert r.status is RoundStatus.MISSED
    assert r.unauthorised == ()


def test_flags_repeated_scans_by_one_card_and_the_shortest_gap() -> None:
    scans = [scan("cp-east-gate", at(1, 22, 5)), scan("cp-east-gate", at(1, 22, 5, 2), WU),
             scan("cp-east-gate", at(1, 22, 6)), scan("cp-east-gate", at(1, 22, 7)),
             scan("cp-north-fence", at(1, 22, 7, 30)), scan("cp-library", at(1, 22, 40))]
    r = first(plan(), scans)
    assert r.status is RoundStatus.COMPLETE
    assert dict(r.repeated) == {"cp-east-gate": 3}  # Lin three times; Wu once beside Lin is a team walking together
    assert r.min_gap_s == 30.0
    assert r.flags() == {"repeated": {"cp-east-gate": 3}, "min_gap_s": 30.0}


def test_equal_times_at_different_checkpoints_keep_the_route_order() -> None:
    t = at(1, 22, 5)
    scans = [scan("cp-library", t), scan("cp-north-fence", t), scan("cp-east-gate", t)]
    r = first(plan(), scans)
    assert r.status is RoundStatus.COMPLETE
    assert r.min_gap_s == 0.0


@pytest.mark.parametrize("order", ["strict", "start-then-any", "any"])
def test_a_full_night_gives_every_status_in_every_order(order: str) -> None:
    p = plan(with_route(order))
    in_order = ["cp-east-gate", "cp-north-fence", "cp-library"]
    scans = [scan(cp, at(1, 22, 10 + 10 * i)) for i, cp in enumerate(in_order)]  # 22:00 complete
    scans += [scan(cp, at(2, 1, 50) + i * 600_000) for i, cp in enumerate(in_order)]  # 00:00 late (01:50 .. 02:10)
    # 02:00 incomplete: the 02:00 and 02:10 scans count for it too, but its first checkpoint is missing
    now = at(2, 5)  # 04:00 still open
    assert [r.status for r in rounds(p, scans, now)] == [
        RoundStatus.COMPLETE, RoundStatus.LATE, RoundStatus.INCOMPLETE, RoundStatus.OPEN]
    assert [r.status for r in rounds(p, scans)][-1] is RoundStatus.MISSED
