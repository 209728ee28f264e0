"""Issue 14's keys: ``[[notify]]``, ``[web] public_url``, ``[cameras]`` in central's config; ``camera`` in the plan."""

from __future__ import annotations

import pytest

from central.config import ALARM_KINDS, CamerasConfig, ConfigError, NotifyTarget, parse_config
from central.plan.parse import PlanError, parse_plan, parse_plan_bytes, plan_to_data

MINIMAL = 'timezone = "UTC"\ndata_dir = "/srv/gp"\n'
UNITS = """
timezone = "Asia/Shanghai"
unit = [{ id = "fengze", tier = "district", name = "Fengze" }]
agent = [{ id = "school-9-gate-1", unit = "fengze" }]
"""


def test_designs_notify_example_and_the_added_keys() -> None:
    config = parse_config(MINIMAL + """
[web]
public_url = "https://gridpatrol.fengze.example"
[[notify]]
url = "json://127.0.0.1:9000/alarms"
unit = "chengzhou"
kinds = ["panic", "alarm", "tamper"]
[[notify]]
url = "dingtalk://TOKEN/SECRET"
lang = "en"
name = "district duty phone"
rate_per_min = 3
give_up_s = 600
[cameras]
keep_days = 7
max_mb = 512
""", source="c.toml")
    assert config.web.public_url == "https://gridpatrol.fengze.example"
    assert config.notify == (
        NotifyTarget(url="json://127.0.0.1:9000/alarms", unit="chengzhou", kinds=frozenset({"panic", "alarm", "tamper"})),
        NotifyTarget(url="dingtalk://TOKEN/SECRET", unit=None, kinds=frozenset(ALARM_KINDS), lang="en",
                     name="district duty phone", rate_per_min=3, give_up_s=600.0),
    )
    assert [t.label for t in config.notify] == ["json@chengzhou", "district duty phone"]
    assert "TOKEN" not in repr(config)  # the robot's token never reaches a log line through a repr
    assert config.cameras == CamerasConfig(keep_days=7.0, max_mb=512.0)
    assert parse_config(MINIMAL).cameras == CamerasConfig(keep_days=30.0, max_mb=1024.0)


@pytest.mark.parametrize(("text", "message"), [
    ('[[notify]]\nunit = "x"\n', "c.toml: notify[0].url: missing key"),
    ('[[notify]]\nurl = "dingtalk-TOKEN"\n', "c.toml: notify[0].url: is not an Apprise URL (SCHEME://...; see docs/notify.md)"),
    ('[[notify]]\nurl = "json://h"\nkinds = ["fire"]\n',
     "c.toml: notify[0].kinds: 'fire' is not an alarm kind (panic, alarm, tamper, agent-offline, agent-flapping, suspicious)"),
    ('[[notify]]\nurl = "json://h"\nkinds = []\n', "c.toml: notify[0].kinds: must name at least one alarm kind"),
    ('[[notify]]\nurl = "json://h"\nlang = "fr"\n', "c.toml: notify[0].lang: 'fr' is not one of zh-CN, en"),
    ('[[notify]]\nurl = "json://h"\nrate_per_min = 0\n', "c.toml: notify[0].rate_per_min: 0 is out of range (1 to 600)"),
    ('[[notify]]\nurl = "json://h"\ncolour = 1\n', "c.toml: notify[0].colour: unknown key"),
    ('[web]\npublic_url = "gridpatrol.example"\n', "c.toml: web.public_url: 'gridpatrol.example' is not an http:// or https:// address"),
    ("[cameras]\nmax_mb = 0\n", "c.toml: cameras.max_mb: must be greater than 0, not 0.0"),
])
def test_each_mistake_names_its_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + text, source="c.toml")
    assert str(info.value) == message


def test_a_plans_cameras_read_and_round_trip() -> None:
    plan = parse_plan_bytes((UNITS + """
camera = [
  { id = "cam-east", agent = "school-9-gate-1", sources = ["north-fence", "office-panic"], snapshot = "http://admin:pw@10.0.0.64/ISAPI/Streaming/channels/101/picture", stream = "rtsp://admin:pw@10.0.0.64:554/101" },
  { id = "cam-gate", agent = "school-9-gate-1", sources = ["north-fence"], snapshot = "http://10.0.0.65/snap.jpg" },
]
""").encode())
    assert [c.id for c in plan.cameras_at[("school-9-gate-1", "north-fence")]] == ["cam-east", "cam-gate"]
    assert [c.id for c in plan.cameras_at[("school-9-gate-1", "office-panic")]] == ["cam-east"]
    assert "pw" not in repr(plan.cameras)
    assert parse_plan(plan_to_data(plan)) == plan


@pytest.mark.parametrize(("camera", "message"), [
    ('{ id = "c", agent = "a", sources = ["z"] }', "plan.toml: camera[0] 'c': missing key 'snapshot'"),
    ('{ id = "c", agent = "a", sources = [], snapshot = "http://h/s.jpg" }',
     "plan.toml: camera[0] 'c': 'sources' must list the agent's zones or buttons by name (1 to 64 characters each)"),
    ('{ id = "c", agent = "a", sources = ["z"], snapshot = "ftp://h/s.jpg" }',
     "plan.toml: camera[0] 'c': 'snapshot' must be an http:// or https:// address of a JPEG"),
    ('{ id = "c", agent = "a", sources = ["z"], snapshot = "http://h/s.jpg", stream = "10.0.0.1:554" }',
     "plan.toml: camera[0] 'c': 'stream' must be an address such as rtsp://HOST/PATH"),
    ('{ id = "c", agent = "A B", sources = ["z"], snapshot = "http://h/s.jpg" }',
     "plan.toml: camera[0] 'c': agent 'A B' is not a valid agent id"),
    ('{ id = "c", agent = "a", sources = ["z"], snapshot = "http://h/s.jpg", lens = 4 }',
     "plan.toml: camera[0] 'c': unknown key 'lens'"),
])
def test_a_camera_mistake_names_the_entry(camera: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_bytes(f"{UNITS}camera = [{camera}]\n".encode())
    assert str(info.value) == message
