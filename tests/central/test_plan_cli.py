"""`gridpatrol plan import|show`, `alarms`, `report completion` as a user runs them (real processes, real files)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from contextlib import closing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from central.plan.registry import PlanRegistry
from central.store import AgentRow, Store, StoredEvent
from tests.central.plan.samples import DESIGN_PLAN, LIN, STRANGER, TIERED, at
from tests.support import run_cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(textwrap.dedent(f"""
        timezone = "Asia/Shanghai"
        data_dir = "{tmp_path / 'data'}"
    """))
    return path


def write_plan(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_import_stores_a_version_and_show_prints_it(tmp_path: Path, config: Path) -> None:
    done = run_cli("plan", "import", str(write_plan(tmp_path, DESIGN_PLAN)), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("plan.toml: imported as version 1, governing from 20")  # its import: now
    assert done.stdout.endswith(": 4 units, 3 checkpoints, 2 teams, 1 routes\n")
    assert [v.version for v in PlanRegistry(data(tmp_path) / "plan.json").history().versions] == [1]
    shown = run_cli("plan", "show", "--config", str(config), "--json")
    assert shown.returncode == 0 and shown.stderr == ""
    doc = json.loads(shown.stdout)
    assert (doc["version"], doc["timezone"]) == (1, "Asia/Shanghai")
    assert doc["governs_from"] == doc["versions"][0]["governs_from"] and doc["governs_from"].startswith("20")
    assert [u["id"] for u in doc["unit"]] == ["fengze", "quanxiu", "chengzhou", "chengzhou-g1"]
    assert doc["route"][0]["window"] == [{"start": "22:00", "end": "06:00", "every_min": 120, "tolerance_min": 15}]
    assert [v["version"] for v in doc["versions"]] == [1]
    table = run_cli("plan", "show", "--config", str(config))
    assert table.returncode == 0
    assert "      chengzhou-g1 [grid] Grid 1" in table.stdout.splitlines()
    assert "route night-loop (strict): cp-east-gate > cp-north-fence > cp-library" in table.stdout


MISTAKES = [
    (DESIGN_PLAN.replace('parent = "quanxiu",   name = "Chengzhou', 'parent = "quanxu",   name = "Chengzhou'),
     "plan.toml: unit[2] 'chengzhou': parent 'quanxu' is not a unit"),
    ('timezone = "UTC"\nunit = [ { id = "d", tier = "district" }, { id = "a", tier = "street", parent = "b" }, { id = "b", tier = "street", parent = "a" } ]',
     "plan.toml: unit[1] 'a': parent chain loops back to itself (a -> b -> a)"),
    (DESIGN_PLAN.replace('tier = "grid",      parent = "chengzhou"', 'tier = "grid",      parent = "fengze"'),
     "plan.toml: unit[3] 'chengzhou-g1': a grid must be under a community, but 'fengze' is a district"),
    (DESIGN_PLAN.replace('{ id = "cp-library",', '{ id = "cp-east-gate",'),
     "plan.toml: checkpoint[2] 'cp-east-gate': duplicate id (also checkpoint[0])"),
    (DESIGN_PLAN.replace('start = "22:00"', 'start = "22.00"'),
     "plan.toml: route[0] 'night-loop': window: start '22.00' is not a time HH:MM"),
    (DESIGN_PLAN.replace('tag = "0A0B0C0D"', 'tag = "67003B51C6"'),
     "plan.toml: team[1] 'volunteers-8': member[0] 'Zhao': tag 67003B51C6 already belongs to 'Lin' of team 'volunteers-7'"),
    (DESIGN_PLAN.replace('order = "strict"', 'order = "strict"\nspeed = 3'),
     "plan.toml: route[0] 'night-loop': unknown key 'speed'"),
]


@pytest.mark.parametrize("text, message", MISTAKES, ids=["parent", "cycle", "tier", "duplicate", "window", "card", "key"])
def test_every_mistake_exits_2_with_one_line_naming_the_entry(tmp_path: Path, config: Path, text: str, message: str) -> None:
    done = run_cli("plan", "import", str(write_plan(tmp_path, text)), "--config", str(config))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"gridpatrol: {message}\n")
    assert not PlanRegistry(data(tmp_path) / "plan.json").history()  # nothing stored


def test_a_checkpoint_must_be_a_reader_the_agent_reported(tmp_path: Path, config: Path) -> None:
    store = Store(data(tmp_path) / "central.db")
    with closing(store.connect()) as conn:
        with conn:
            Store.save_agents(conn, [AgentRow(agent="school-9-gate-1", state="online", birth={
                "bdseq": 1, "boot_id": "b", "fw": "1", "inventory": {"readers": [{"name": "gate-1"}, {"name": "gate-2"}], "zones": []}})])
    done = run_cli("plan", "import", str(write_plan(tmp_path, DESIGN_PLAN)), "--config", str(config))
    assert (done.returncode, done.stderr) == (
        2, "gridpatrol: plan.toml: checkpoint[2] 'cp-library': agent 'school-9-gate-1' has no reader 'gate-3' (its birth lists: gate-1, gate-2)\n")


def test_show_and_report_without_a_plan_say_so(tmp_path: Path, config: Path) -> None:
    for args in (("plan", "show"), ("report", "completion")):
        done = run_cli(*args, "--config", str(config))
        assert (done.returncode, done.stderr) == (
            2, f"gridpatrol: {config}: no patrol plan imported yet (gridpatrol plan import PLAN.toml --config {config})\n")


def scan_event(agent: str, eseq: int, ts: int, tag: str = LIN, *, received: int | None = None) -> StoredEvent:
    return StoredEvent(agent=agent, eseq=eseq, kind="scan", source="r1", ts=ts, ts_est=ts, ts_estimated=False,
                       received_ts=received or ts, replayed=received is not None, fields={"tag": tag})


def test_report_completion_json_counts_every_tier_from_the_store(tmp_path: Path, config: Path) -> None:
    tiered = TIERED.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = "2024-04-01"', 1)
    assert tiered != TIERED
    assert run_cli("plan", "import", str(write_plan(tmp_path, tiered)), "--config", str(config)).returncode == 0
    store = Store(data(tmp_path) / "central.db")
    events = [
        scan_event("ag-1", 1, at(1, 22, 30)), scan_event("ag-1", 2, at(2, 0, 30)),  # g1: complete, complete
        scan_event("ag-2", 1, at(1, 22, 30)), scan_event("ag-2", 2, at(2, 2, 5)),  # g2: complete, late
        scan_event("ag-3", 1, at(2, 0, 5)),  # c1: late (in 22:00's tolerance), complete
        scan_event("ag-4", 1, at(1, 22, 30), STRANGER),  # g3: missed, missed: a stranger's card
        scan_event("ag-5", 1, at(1, 23), received=at(2, 9)),  # s2: complete (replayed next morning), missed
        scan_event("ag-5", 2, at(2, 5)),  # after every window: counts for nothing
    ]
    with closing(store.connect()) as conn:
        with conn:
            Store.insert_events(conn, events)
    done = run_cli("report", "completion", "--config", str(config), "--date", "2024-05-01", "--format", "json")
    assert done.returncode == 0 and done.stderr == ""
    doc = json.loads(done.stdout)
    assert doc["date"] == "2024-05-01"

    def counts(d: dict) -> tuple:
        return tuple(d[k] for k in ("rounds_scheduled", "rounds_complete", "rounds_late", "rounds_incomplete",
                                    "rounds_missed", "rounds_open", "completion"))

    units = {u["unit"]: u for u in doc["units"]}
    assert {u: (v["tier"], counts(v), counts(v["rollup"])) for u, v in units.items()} == {
        "d": ("district", (0, 0, 0, 0, 0, 0, None), (10, 5, 2, 0, 3, 0, 0.7)),
        "s1": ("street", (0, 0, 0, 0, 0, 0, None), (6, 4, 2, 0, 0, 0, 1.0)),
        "s2": ("street", (2, 1, 0, 0, 1, 0, 0.5), (4, 1, 0, 0, 3, 0, 0.25)),
        "c1": ("community", (2, 1, 1, 0, 0, 0, 1.0), (6, 4, 2, 0, 0, 0, 1.0)),
        "c2": ("community", (0, 0, 0, 0, 0, 0, None), (2, 0, 0, 0, 2, 0, 0.0)),
        "g1": ("grid", (2, 2, 0, 0, 0, 0, 1.0), (2, 2, 0, 0, 0, 0, 1.0)),
        "g2": ("grid", (2, 1, 1, 0, 0, 0, 1.0), (2, 1, 1, 0, 0, 0, 1.0)),
        "g3": ("grid", (2, 0, 0, 0, 2, 0, 0.0), (2, 0, 0, 0, 2, 0, 0.0)),
    }
    assert len(doc["rounds"]) == 10
    s2 = [r for r in doc["rounds"] if r["route"] == "r-s2"]
    assert s2 == [
        {"route": "r-s2", "unit": "s2", "slot_start": "2024-05-01T22:00:00+08:00", "status": "complete", "scanned": ["f"], "missing": []},
        {"route": "r-s2", "unit": "s2", "slot_start": "2024-05-02T00:00:00+08:00", "status": "missed", "scanned": [], "missing": ["f"]},
    ]
    grids = json.loads(run_cli("report", "completion", "--config", str(config), "--date", "2024-05-01", "--tier", "grid",
                               "--format", "json").stdout)
    assert [u["unit"] for u in grids["units"]] == ["g1", "g2", "g3"]
    table = run_cli("report", "completion", "--config", str(config), "--date", "2024-05-01")
    assert table.returncode == 0 and "unauthorised DEADBEEF01" in table.stdout
    as_csv = run_cli("report", "completion", "--config", str(config), "--date", "2024-05-01", "--format", "csv")
    assert as_csv.stdout.splitlines()[1] == "unit,2024-05-01,d,district,,,,,,,0,0,0,0,0,0,,10,5,2,0,3,0,0.7"


def test_a_plan_imported_today_without_effective_reports_no_rounds_for_last_week(tmp_path: Path, config: Path) -> None:
    assert run_cli("plan", "import", str(write_plan(tmp_path, DESIGN_PLAN)), "--config", str(config)).returncode == 0
    week_ago = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=7)
    done = run_cli("report", "completion", "--config", str(config), "--date", week_ago.isoformat(), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["rounds"] == []
    assert {u["rounds_scheduled"] for u in doc["units"]} <= {0}  # not missed: there were none


def test_importing_an_invalid_card_exits_2_naming_team_member_and_value(tmp_path: Path, config: Path) -> None:
    text = DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu", card = "80756341" }')
    done = run_cli("plan", "import", str(write_plan(tmp_path, text)), "--config", str(config))
    assert (done.returncode, done.stderr) == (2, (
        "gridpatrol: plan.toml: team[0] 'volunteers-7': member[1] 'Wu': card '80756341' must be a printed number:"
        " ten digits up to 4294967295 (\"0008075634\") or facility,number up to 255,65535 (\"123,14706\")\n"))


def test_a_tag_that_looks_like_a_printed_number_is_imported_with_a_warning(tmp_path: Path, config: Path) -> None:
    text = DESIGN_PLAN.replace('tag = "67003B51C7"', 'tag = "0008075634"')
    done = run_cli("plan", "import", str(write_plan(tmp_path, text)), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        "gridpatrol: warning: plan.toml: team[0] 'volunteers-7': member[1] 'Wu': tag '0008075634'"
        " looks like a number printed on the card, not what a reader reports (hex); if it is printed,"
        " write card = \"0008075634\"")


def test_report_defaults_to_today_in_the_plans_zone_and_rejects_bad_dates(tmp_path: Path, config: Path) -> None:
    assert run_cli("plan", "import", str(write_plan(tmp_path, DESIGN_PLAN)), "--config", str(config)).returncode == 0
    before = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    done = run_cli("report", "completion", "--config", str(config), "--format", "json")
    after = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["date"] in {before.isoformat(), after.isoformat()}
    bad = run_cli("report", "completion", "--config", str(config), "--date", "2024-02-30")
    assert (bad.returncode, bad.stderr) == (2, "gridpatrol: --date '2024-02-30' is not a date YYYY-MM-DD\n")


def test_alarm_commands_on_a_quiet_district(tmp_path: Path, config: Path) -> None:
    listed = run_cli("alarms", "--config", str(config), "--json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])
    assert run_cli("alarms", "--config", str(config)).stdout == "no open alarms\n"
    for args, message in [
        (("alarms", "ack", "3"), "alarms ack: --by NAME is required (who answered the alarm)"),
        (("alarms", "ack", "x", "--by", "Lin"), "alarms ack: ID 'x' is not a number"),
        (("alarms", "ack", "--by", "Lin"), "alarms ack: give the alarm ID (alarms ack ID --by NAME)"),
        (("alarms", "ack", "3", "--by", "Lin"), f"alarm 3 does not exist (no store at {data(tmp_path) / 'central.db'} yet)"),
    ]:
        done = run_cli(*args, "--config", str(config))
        assert (done.returncode, done.stderr) == (2, f"gridpatrol: {message}\n")
