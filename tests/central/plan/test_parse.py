"""Plan validation (central/plan/parse.py): every mistake is one line naming the entry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.plan.model import Order, Tier
from central.plan.parse import MAX_PLAN_BYTES, PlanError, load_plan_file, parse_plan, parse_plan_bytes, plan_to_data
from tests.central.plan.samples import DESIGN_PLAN, plan


def error_of(text: str, **kw: object) -> str:
    with pytest.raises(PlanError) as info:
        parse_plan_bytes(text.encode(), **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_design_example_parses_into_the_tree_it_describes() -> None:
    p = plan()
    assert [(u.id, u.tier, u.parent) for u in p.units] == [
        ("fengze", Tier.DISTRICT, None), ("quanxiu", Tier.STREET, "fengze"),
        ("chengzhou", Tier.COMMUNITY, "quanxiu"), ("chengzhou-g1", Tier.GRID, "chengzhou"),
    ]
    assert p.lineage("chengzhou-g1") == ("chengzhou-g1", "chengzhou", "quanxiu", "fengze")
    assert p.subtree("quanxiu") == ("quanxiu", "chengzhou", "chengzhou-g1")
    route = p.route_by_id["night-loop"]
    assert route.order is Order.STRICT
    assert route.windows[0].text() == "22:00-06:00 every 120 min, tolerance 15 min"
    assert p.checkpoint_at[("school-9-gate-1", "gate-2")].id == "cp-north-fence"
    assert p.route_tags["night-loop"].tags == frozenset({"67003B51C6", "67003B51C7"})
    assert p.agent_unit == {"school-9-gate-1": "chengzhou-g1"}
    assert p.is_planned("school-9-gate-1") and not p.is_planned("school-10-gate-1")
    assert p.effective is None


def test_the_stored_form_reads_back_to_the_same_plan() -> None:
    p = plan(DESIGN_PLAN.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = "2024-05-02"'))
    again = parse_plan(plan_to_data(p))
    assert again == p
    assert again.effective == dt.date(2024, 5, 2)


def test_only_the_unit_list_is_required() -> None:
    p = plan('timezone = "UTC"\nunit = [ { id = "d", tier = "district" } ]')
    assert (p.agents, p.checkpoints, p.teams, p.routes) == ((), (), (), ())


def test_timezone_defaults_to_centrals_and_an_unknown_one_is_named() -> None:
    body = 'unit = [ { id = "d", tier = "district" } ]'
    assert plan(body, default_timezone="Asia/Shanghai").timezone == "Asia/Shanghai"
    assert error_of(body) == "plan.toml: missing key 'timezone'"
    assert error_of('timezone = "Mars/Olympus"\n' + body) == "plan.toml: timezone 'Mars/Olympus' is not a known time zone"


def test_an_agent_without_an_entry_belongs_where_its_checkpoints_are() -> None:
    text = DESIGN_PLAN.replace('''agent = [
  { id = "school-9-gate-1", unit = "chengzhou-g1", name = "No. 9 Middle School, east gate" },
]''', "").replace('{ id = "cp-library",     unit = "chengzhou-g1"', '{ id = "cp-library",     unit = "chengzhou"')
    p = plan(text)
    assert p.agent_unit == {"school-9-gate-1": "chengzhou"}  # the lowest unit holding both its grid and community checkpoints


# -- each mistake ----------------------------------------------------------------------


def test_unknown_parent() -> None:
    text = DESIGN_PLAN.replace('parent = "quanxiu",   name = "Chengzhou', 'parent = "quanxu",   name = "Chengzhou')
    assert error_of(text) == "plan.toml: unit[2] 'chengzhou': parent 'quanxu' is not a unit"


def test_cycle() -> None:
    text = 'timezone = "UTC"\nunit = [ { id = "d", tier = "district" }, { id = "a", tier = "street", parent = "b" }, { id = "b", tier = "street", parent = "a" } ]'
    assert error_of(text) == "plan.toml: unit[1] 'a': parent chain loops back to itself (a -> b -> a)"
    own = 'timezone = "UTC"\nunit = [ { id = "s", tier = "street", parent = "s" } ]'
    assert error_of(own) == "plan.toml: unit[0] 's': parent chain loops back to itself (s -> s)"


def test_wrong_tier_order() -> None:
    text = DESIGN_PLAN.replace('tier = "grid",      parent = "chengzhou"', 'tier = "grid",      parent = "quanxiu"')
    assert error_of(text) == "plan.toml: unit[3] 'chengzhou-g1': a grid must be under a community, but 'quanxiu' is a street"
    top = DESIGN_PLAN.replace('{ id = "fengze",       tier = "district"', '{ id = "fengze",       tier = "street"')
    assert error_of(top) == "plan.toml: unit[0] 'fengze': a street needs a parent district"
    bad = DESIGN_PLAN.replace('tier = "community"', 'tier = "village"')
    assert error_of(bad) == "plan.toml: unit[2] 'chengzhou': tier 'village' must be one of district, street, community, grid"


def test_checkpoint_on_a_reader_the_agents_birth_does_not_list() -> None:
    readers = {"school-9-gate-1": frozenset({"gate-1", "gate-3"})}
    assert error_of(DESIGN_PLAN, known_readers=readers) == (
        "plan.toml: checkpoint[1] 'cp-north-fence': agent 'school-9-gate-1' has no reader 'gate-2' (its birth lists: gate-1, gate-3)")
    # an agent that never reported cannot be checked yet
    plan(DESIGN_PLAN, known_readers={"another-agent": frozenset()})


@pytest.mark.parametrize("kind, original, duplicate, index, first", [
    ("unit", '{ id = "quanxiu",      tier = "street"', '{ id = "fengze",      tier = "street"', 1, 0),
    ("checkpoint", '{ id = "cp-library",', '{ id = "cp-east-gate",', 2, 0),
    ("agent", ']\n\ncheckpoint', '  { id = "school-9-gate-1", unit = "chengzhou" },\n]\n\ncheckpoint', 1, 0),
])
def test_duplicate_id(kind: str, original: str, duplicate: str, index: int, first: int) -> None:
    text = DESIGN_PLAN.replace(original, duplicate, 1)
    ident = {"unit": "fengze", "checkpoint": "cp-east-gate", "agent": "school-9-gate-1"}[kind]
    assert error_of(text) == f"plan.toml: {kind}[{index}] '{ident}': duplicate id (also {kind}[{first}])"


def test_duplicate_team_and_route() -> None:
    assert error_of(DESIGN_PLAN.replace('id = "volunteers-8"', 'id = "volunteers-7"')) == (
        "plan.toml: team[1] 'volunteers-7': duplicate id (also team[0])")
    route = DESIGN_PLAN[DESIGN_PLAN.index("[[route]]"):]
    assert error_of(DESIGN_PLAN + route) == "plan.toml: route[1] 'night-loop': duplicate id (also route[0])"


@pytest.mark.parametrize("window, problem", [
    ('{ start = "25:00", end = "06:00", every_min = 120 }', "window: start '25:00' is not a time HH:MM"),
    ('{ start = "22:00", end = "6h", every_min = 120 }', "window: end '6h' is not a time HH:MM"),
    ('{ start = "22:61", end = "06:00", every_min = 120 }', "window: start '22:61' is not a time HH:MM"),
    ('{ start = "22:00", end = "06:00", every_min = 0 }', "window: every_min = 0 must be a whole number of minutes from 1 to 1440"),
    ('{ start = "22:00", end = "06:00", every_min = 1.5 }', "window: every_min = 1.5 must be a whole number of minutes from 1 to 1440"),
    ('{ start = "22:00", end = "06:00", every_min = 60, tolerance_min = -1 }', "window: tolerance_min = -1 must be a whole number of minutes from 0 to 1440"),
    ('{ start = "22:00", end = "06:00" }', "window: missing key 'every_min'"),
    ('{ start = "22:00", end = "06:00", every_min = 60, every = 2 }', "window: unknown key 'every'"),
    ('"22:00-06:00"', 'window must be a table such as { start = "22:00", end = "06:00", every_min = 120 }'),
    ('[ { start = "22:00", end = "06:00", every_min = 60 }, { start = "8:00", end = "noon", every_min = 60 } ]', "window[1]: end 'noon' is not a time HH:MM"),
])
def test_window_that_does_not_parse(window: str, problem: str) -> None:
    text = DESIGN_PLAN.replace('window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }', f"window = {window}")
    assert error_of(text) == f"plan.toml: route[0] 'night-loop': {problem}"


def test_end_of_day_and_several_windows_parse() -> None:
    text = DESIGN_PLAN.replace('window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }',
                               'window = [ { start = "8:00", end = "24:00", every_min = 240 }, { start = "00:00", end = "06:00", every_min = 360 } ]')
    windows = plan(text).routes[0].windows
    assert [(w.start_min, w.end_min, w.length_min) for w in windows] == [(480, 0, 960), (0, 360, 360)]


def test_card_on_two_members() -> None:
    text = DESIGN_PLAN.replace('{ name = "Zhao", tag = "0A0B0C0D" }', '{ name = "Zhao", tag = "67003b51c6" }')
    assert error_of(text) == "plan.toml: team[1] 'volunteers-8': member[0] 'Zhao': tag 67003B51C6 already belongs to 'Lin' of team 'volunteers-7'"
    same_team = DESIGN_PLAN.replace('tag = "67003B51C7"', 'tag = "67003B51C6"')
    assert error_of(same_team) == "plan.toml: team[0] 'volunteers-7': member[1] 'Wu': tag 67003B51C6 already belongs to 'Lin' of team 'volunteers-7'"
    not_hex = DESIGN_PLAN.replace('tag = "0A0B0C0D"', 'tag = "0A0B-0C0D"')
    assert error_of(not_hex) == "plan.toml: team[1] 'volunteers-8': member[0] 'Zhao': tag '0A0B-0C0D' must be 2 to 32 hex digits"


@pytest.mark.parametrize("original, changed, message", [
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nversion = 2', "plan.toml: unknown key 'version'"),
    ('tier = "district",  name', 'tier = "district",  nmae', "plan.toml: unit[0] 'fengze': unknown key 'nmae'"),
    ('order = "strict"', 'ordr = "strict"', "plan.toml: route[0] 'night-loop': unknown key 'ordr'"),
    ('{ name = "Lin", tag', '{ name = "Lin", badge = "1", tag', "plan.toml: team[0] 'volunteers-7': member[0] 'Lin': unknown key 'badge'"),
    ('agent = "school-9-gate-1", reader = "gate-1" }', 'agent = "school-9-gate-1", reader = "gate-1", pin = 4 }',
     "plan.toml: checkpoint[0] 'cp-east-gate': unknown key 'pin'"),
])
def test_unknown_keys(original: str, changed: str, message: str) -> None:
    assert error_of(DESIGN_PLAN.replace(original, changed, 1)) == message


@pytest.mark.parametrize("original, changed, message", [
    ('unit = "chengzhou-g1"\nteams', 'unit = "nowhere"\nteams', "plan.toml: route[0] 'night-loop': unit 'nowhere' is not a unit"),
    ('teams = ["volunteers-7"]', 'teams = ["volunteers-9"]', "plan.toml: route[0] 'night-loop': team 'volunteers-9' is not a team"),
    ('teams = ["volunteers-7"]', 'teams = []', "plan.toml: route[0] 'night-loop': 'teams' must name at least one team"),
    ('"cp-north-fence", "cp-library"]', '"cp-north-fence", "cp-gym"]', "plan.toml: route[0] 'night-loop': checkpoint 'cp-gym' is not a checkpoint"),
    ('"cp-north-fence", "cp-library"]', '"cp-north-fence", "cp-east-gate"]', "plan.toml: route[0] 'night-loop': checkpoint 'cp-east-gate' is listed twice"),
    ('order = "strict"', 'order = "random"', "plan.toml: route[0] 'night-loop': order 'random' must be one of strict, start-then-any, any"),
    ('reader = "gate-3" }', 'reader = "gate-1" }', "plan.toml: checkpoint[2] 'cp-library': reader 'gate-1' of agent 'school-9-gate-1' is already checkpoint 'cp-east-gate'"),
    ('{ id = "school-9-gate-1", unit', '{ id = "School 9", unit', "plan.toml: agent[0] 'School 9': agent id 'School 9' must be [a-z0-9-], at most 64 characters, not 'central'"),
    ('{ id = "chengzhou",    tier', '{ id = "cheng/zhou",    tier', "plan.toml: unit[2] 'cheng/zhou': 'id' = 'cheng/zhou' must be letters, digits, '-', '_' or '.' (at most 64)"),
    ('{ id = "quanxiu",      tier = "street",', '{ tier = "street",', "plan.toml: unit[1]: missing key 'id'"),
    ('name = "Grid 1" }', 'name = 1 }', "plan.toml: unit[3] 'chengzhou-g1': 'name' must be a string, not int"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = "2024-13-01"', "plan.toml: effective = '2024-13-01' must be a date YYYY-MM-DD"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = 2024-05-01T10:00:00', "plan.toml: effective = datetime.datetime(2024, 5, 1, 10, 0) must be a date YYYY-MM-DD"),
])
def test_other_mistakes_name_the_entry(original: str, changed: str, message: str) -> None:
    assert error_of(DESIGN_PLAN.replace(original, changed, 1)) == message


def test_effective_may_be_a_toml_date() -> None:
    p = plan(DESIGN_PLAN.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = 2024-05-01'))
    assert p.effective == dt.date(2024, 5, 1)


def test_files_that_are_not_plans(tmp_path: Path) -> None:
    assert error_of("unit = [").startswith("plan.toml: not valid TOML: ")
    with pytest.raises(PlanError, match=r"^plan.toml: not UTF-8 text \(byte 0\)$"):
        parse_plan_bytes(b"\xff\xfe")
    assert error_of('timezone = "UTC"\nunit = []') == "plan.toml: 'unit' must list at least one unit"
    assert error_of('timezone = "UTC"\nunit = "d"') == "plan.toml: 'unit' must be a list of tables, not str"
    assert error_of('timezone = "UTC"\nunit = [ 1 ]') == "plan.toml: unit[0]: must be a table, not int"
    assert error_of('timezone = "UTC"\nunit = [ { id = "d", tier = "district" } ]\nroute = 3') == "plan.toml: 'route' must be a list of tables, not int"
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_PLAN_BYTES + 1))
    with pytest.raises(PlanError, match=r"^big.toml: larger than 16 MB$"):
        load_plan_file(big)
    with pytest.raises(PlanError, match=r"cannot read"):
        load_plan_file(tmp_path / "missing.toml")


# -- hostile input -------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3000), st.floats(allow_nan=True), st.text(max_size=12),
                     st.sampled_from(["district", "street", "grid", "22:00", "24:00", "fengze", "strict", "any", "UTC"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.sampled_from(
                                                              ["id", "tier", "parent", "unit", "agent", "reader", "teams",
                                                               "members", "name", "tag", "order", "checkpoints", "window",
                                                               "start", "end", "every_min", "tolerance_min"]), inner, max_size=6)),
                       max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["timezone", "effective", "unit", "agent", "checkpoint", "team", "route", "x"]), _values, max_size=7))
def test_random_structures_give_a_plan_or_a_plan_error(data: dict) -> None:
    try:
        parse_plan(data, default_timezone="UTC")
    except PlanError as exc:
        assert str(exc).startswith("plan.toml") and "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_a_plan_error(raw: bytes) -> None:
    try:
        parse_plan_bytes(raw, default_timezone="UTC")
    except PlanError:
        pass


# -- found by bench/fuzz.py ----------------------------------------------------------------

@pytest.mark.parametrize("original, changed, message", [
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = 0x' + "f" * 4000,
     "plan.toml: effective: integer out of range (TOML integers are 64-bit)"),
    ('teams = ["volunteers-7"]', "teams = [0x" + "f" * 4000 + "]",
     "plan.toml: route[0].teams[0]: integer out of range (TOML integers are 64-bit)"),
    ('order = "strict"', 'order = "strict"\nx = ' + "[" * 40 + "]" * 40,
     "plan.toml: route[0].x" + "[0]" * 30 + ": nested more than 32 deep"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nx = ' + "[" * 700 + "]" * 700,
     "plan.toml: not valid TOML: nested too deeply"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\neffective = ' + "9" * 5000,
     "plan.toml: not valid TOML: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
     "use sys.set_int_max_str_digits() to increase the limit"),
    ('{ id = "chengzhou",    tier', '{ id = "chengzhou\\n",    tier',
     "plan.toml: unit[2] 'chengzhou\\n': 'id' = 'chengzhou\\n' must be letters, digits, '-', '_' or '.' (at most 64)"),
], ids=["huge-int", "huge-int-in-a-list", "nested-deep", "nested-deeper-than-tomllib-recurses", "more-than-4300-digits",
        "id-with-a-final-newline"])
def test_what_the_fuzz_run_found_is_a_plan_error(original: str, changed: str, message: str) -> None:
    """Integers no message could print, nesting past the recursion limit, and "$" matching before a final newline."""
    assert original in DESIGN_PLAN
    assert error_of(DESIGN_PLAN.replace(original, changed, 1)) == message


def test_the_registry_form_is_checked_the_same_way() -> None:
    data = plan_to_data(plan())
    data["route"][0]["checkpoints"] = [10**5000]
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert str(info.value) == "plan.toml: route[0].checkpoints[0]: integer out of range (TOML integers are 64-bit)"


def test_a_member_may_be_enrolled_by_a_printed_card() -> None:
    p = plan(DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu", card = " 123 , 14706" }'))
    wu = p.teams[0].members[1]
    assert (wu.tag, wu.card) == (None, "123,14706")
    assert p.route_tags["night-loop"].admits("6F007B3972", "em4100")
    assert p.member_of("7B3972", "wiegand26") == (p.teams[0], wu)
    assert parse_plan(plan_to_data(p)).teams[0].members[1] == wu


def test_an_invalid_card_is_refused_naming_team_member_and_value() -> None:
    text = DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu", card = "8075634" }')
    assert error_of(text) == ("plan.toml: team[0] 'volunteers-7': member[1] 'Wu': card '8075634' must be a printed number:"
                              " ten digits up to 4294967295 (\"0008075634\") or facility,number up to 255,65535 (\"123,14706\")")
    neither = DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu" }')
    assert error_of(neither) == ("plan.toml: team[0] 'volunteers-7': member[1] 'Wu': needs a 'tag' (as the reader reports it)"
                                 " or a 'card' (the number printed on it), or both")
