"""The completion report (central/report.py): counts per unit, rollups per tier, plan versions, rendering."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from central.completion import RoundStatus
from central.plan.model import Tier
from central.report import Counts, build_report, render_csv, render_json, render_table
from tests.central.plan.samples import DESIGN_PLAN, LIN, STRANGER, TIERED, ZHAO, at, history, plan, scan, with_route

MAY_1 = dt.date(2024, 5, 1)

# A district with two streets; routes at grid, community and street level, two slots each.
def s(agent: str, ts: int, tag: str = LIN):
    return scan("r1", ts, tag, agent=agent)


def tiered_scans() -> list:
    return [
        s("ag-1", at(1, 22, 30)), s("ag-1", at(2, 0, 30)),  # g1: complete, complete
        s("ag-2", at(1, 22, 30)), s("ag-2", at(2, 2, 5)),  # g2: complete, late
        s("ag-3", at(2, 0, 5)),  # c1: late (inside 22:00's 10-minute tolerance), complete (00:00)
        s("ag-4", at(1, 22, 30), STRANGER),  # g3: missed, missed (a stranger does not count)
        s("ag-5", at(1, 23, 0)),  # s2: complete, then open or missed by the clock
    ]


def test_each_unit_on_its_own_routes_and_rolled_up_over_the_units_below() -> None:
    report = build_report(history(plan(TIERED)), MAY_1, tiered_scans(), now_ms=at(2, 1))
    statuses = {(r.slot.route, r.slot.start_iso[11:16]): r.status for r in report.rounds}
    assert statuses == {
        ("r-g1", "22:00"): RoundStatus.COMPLETE, ("r-g1", "00:00"): RoundStatus.OPEN,
        ("r-g2", "22:00"): RoundStatus.COMPLETE, ("r-g2", "00:00"): RoundStatus.OPEN,
        ("r-c1", "22:00"): RoundStatus.LATE, ("r-c1", "00:00"): RoundStatus.OPEN,
        ("r-g3", "22:00"): RoundStatus.MISSED, ("r-g3", "00:00"): RoundStatus.OPEN,
        ("r-s2", "22:00"): RoundStatus.COMPLETE, ("r-s2", "00:00"): RoundStatus.OPEN,
    }
    rows = {u.unit: u for u in report.units}
    assert [u.unit for u in report.units] == ["d", "s1", "c1", "g1", "g2", "s2", "c2", "g3"]
    assert rows["c1"].own == Counts(late=1, open=1)
    assert rows["c1"].rollup == Counts(complete=2, late=1, open=3)
    assert rows["s1"].own == Counts() and rows["s1"].rollup == rows["c1"].rollup
    assert rows["s2"].rollup == Counts(complete=1, missed=1, open=2)
    assert rows["d"].rollup == Counts(complete=3, late=1, missed=1, open=5)
    assert rows["d"].rollup.completion == 4 / 5
    assert rows["s1"].own.completion is None


def test_json_has_the_designs_keys_and_unrounded_fractions() -> None:
    report = build_report(history(plan(TIERED)), MAY_1, tiered_scans(), now_ms=at(3, 0))
    doc = json.loads(render_json(report))
    assert sorted(doc) == ["date", "rounds", "units"] and doc["date"] == "2024-05-01"
    keys = ["unit", "tier", "rounds_scheduled", "rounds_complete", "rounds_late", "rounds_incomplete",
            "rounds_missed", "rounds_open", "completion"]
    for u in doc["units"]:
        assert list(u) == keys + ["rollup"]
        assert list(u["rollup"]) == keys
    by_unit = {u["unit"]: u for u in doc["units"]}
    assert by_unit["d"]["rollup"] == {
        "unit": "d", "tier": "district", "rounds_scheduled": 10, "rounds_complete": 5, "rounds_late": 2,
        "rounds_incomplete": 0, "rounds_missed": 3, "rounds_open": 0, "completion": 0.7}
    assert (by_unit["c1"]["rollup"]["completion"], by_unit["s2"]["rollup"]["completion"]) == (1.0, 0.25)
    assert by_unit["s1"]["completion"] is None  # no route of its own: 0 / 0 is no number
    assert [(r["slot_start"][11:16], r["route"]) for r in doc["rounds"][:5]] == [
        ("22:00", "r-c1"), ("22:00", "r-g1"), ("22:00", "r-g2"), ("22:00", "r-g3"), ("22:00", "r-s2")]
    assert doc["rounds"][1] == {"route": "r-g1", "unit": "g1", "slot_start": "2024-05-01T22:00:00+08:00",
                                "status": "complete", "scanned": ["a"], "missing": []}
    assert all(list(r) == ["route", "unit", "slot_start", "status", "scanned", "missing"] for r in doc["rounds"])
    walk = [scan(cp, at(1, 22, 10 + i)) for i, cp in enumerate(("cp-east-gate", "cp-north-fence", "cp-library"))]
    walk += [scan(cp, at(2, 2, 20 + i)) for i, cp in enumerate(("cp-east-gate", "cp-north-fence", "cp-library"))]
    thirds = json.loads(render_json(build_report(history(plan()), MAY_1, walk, now_ms=at(2, 5))))
    assert [r["status"] for r in thirds["rounds"]] == ["complete", "missed", "complete", "open"]
    assert thirds["units"][-1]["completion"] == 2 / 3 == 0.6666666666666666  # the open round is not counted
    streets = json.loads(render_json(report, Tier.STREET))
    assert [u["unit"] for u in streets["units"]] == ["s1", "s2"]
    assert len(streets["rounds"]) == 10


def test_a_plan_change_in_the_middle_of_a_night_judges_each_round_by_its_own_plan() -> None:
    v1 = plan()  # strict, volunteers-7 only
    v2 = plan(with_route("any").replace('teams = ["volunteers-7"]', 'teams = ["volunteers-7", "volunteers-8"]'))
    h = history(v1, v2, imported=(at(1, 9), at(2, 1, 30)))  # v2 imported at 01:30, no effective date
    same_walk = ["cp-library", "cp-north-fence", "cp-east-gate"]  # wrong way round for a strict route
    scans = [scan(cp, at(2, 0, 20 + 10 * i)) for i, cp in enumerate(same_walk)]
    scans += [scan(cp, at(2, 2, 20 + 10 * i), ZHAO) for i, cp in enumerate(same_walk)]
    report = build_report(h, MAY_1, scans, now_ms=at(3, 0))
    got = [(r.slot.start_iso[11:16], r.status, r.plan_version) for r in report.rounds]
    assert got == [("22:00", RoundStatus.MISSED, 1), ("00:00", RoundStatus.INCOMPLETE, 1),
                   ("02:00", RoundStatus.COMPLETE, 2), ("04:00", RoundStatus.MISSED, 2)]
    assert report.rounds[1].out_of_order and report.rounds[1].missing == ()


def test_a_version_effective_from_a_date_takes_over_at_that_midnight() -> None:
    v1 = plan()
    v2 = plan(with_route("strict", '{ start = "22:00", end = "06:00", every_min = 240, tolerance_min = 0 }').replace(
        'timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = "2024-05-02"'))
    h = history(v1, v2, imported=(at(1, 9), at(1, 12)))
    report = build_report(h, MAY_1, [], now_ms=at(3, 0))
    # v1 cuts 22:00 (before midnight); v2 governs after midnight and cuts its own slots: 02:00 of its night
    assert [(r.slot.start_iso[11:16], r.plan_version) for r in report.rounds] == [("22:00", 1), ("02:00", 2)]
    next_night = build_report(h, dt.date(2024, 5, 2), [], now_ms=at(4, 0))
    assert [r.slot.start_iso[11:16] for r in next_night.rounds] == ["22:00", "02:00"]


def test_a_unit_dropped_by_the_new_plan_still_shows_its_rounds() -> None:
    v1 = plan()
    v2 = plan(DESIGN_PLAN.replace("chengzhou-g1", "chengzhou-g2"))
    h = history(v1, v2, imported=(at(1, 9), at(2, 1)))
    report = build_report(h, MAY_1, [], now_ms=at(3, 0))
    rows = {u.unit: u for u in report.units}
    assert rows["chengzhou-g1"].own == Counts(missed=2) and rows["chengzhou-g2"].own == Counts(missed=2)
    assert rows["fengze"].rollup == Counts(missed=4)


def test_a_date_without_rounds_still_lists_the_units() -> None:
    report = build_report(history(plan(TIERED)), dt.date(2024, 5, 1), [], now_ms=at(1, 12))
    assert report.rounds == () or all(r.status is RoundStatus.OPEN for r in report.rounds)
    empty = build_report(history(plan('timezone = "UTC"\nunit = [ { id = "d", tier = "district" } ]')), MAY_1, [], at(3, 0))
    assert json.loads(render_json(empty)) == {"date": "2024-05-01", "rounds": [], "units": [
        {"unit": "d", "tier": "district", "rounds_scheduled": 0, "rounds_complete": 0, "rounds_late": 0,
         "rounds_incomplete": 0, "rounds_missed": 0, "rounds_open": 0, "completion": None,
         "rollup": {"unit": "d", "tier": "district", "rounds_scheduled": 0, "rounds_complete": 0, "rounds_late": 0,
                    "rounds_incomplete": 0, "rounds_missed": 0, "rounds_open": 0, "completion": None}}]}
    assert "no rounds scheduled" in render_table(empty)


def test_table_and_csv_show_counts_rounds_and_flags() -> None:
    scans = [scan("cp-north-fence", at(1, 22, 5)), scan("cp-east-gate", at(1, 22, 10)), scan("cp-east-gate", at(1, 22, 11)),
             scan("cp-north-fence", at(1, 22, 20)), scan("cp-library", at(1, 22, 40)), scan("cp-library", at(1, 22, 41), STRANGER)]
    report = build_report(history(plan()), MAY_1, scans, now_ms=at(3, 0))
    table = render_table(report)
    assert "Patrol completion for 2024-05-01" in table
    line = next(row for row in table.splitlines() if "2024-05-01T22:00:00+08:00" in row)
    assert line.split()[:4] == ["night-loop", "chengzhou-g1", "2024-05-01T22:00:00+08:00", "complete"]
    assert line.endswith("out-of-order; cp-east-gate x2; cp-north-fence x2; min-gap 300s; unauthorised DEADBEEF01")
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    units = [r for r in rows if r["record"] == "unit"]
    rounds = [r for r in rows if r["record"] == "round"]
    assert [u["unit"] for u in units] == ["fengze", "quanxiu", "chengzhou", "chengzhou-g1"]
    assert units[0]["rollup_completion"] == repr(0.25) and units[0]["completion"] == ""
    assert [r["status"] for r in rounds] == ["complete", "missed", "missed", "missed"]
    assert rounds[0]["flags"].startswith("out-of-order")
    assert [u["unit"] for u in csv.DictReader(io.StringIO(render_csv(report, Tier.GRID))) if u["record"] == "unit"] == ["chengzhou-g1"]
