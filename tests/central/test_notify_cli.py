"""``gridpatrol notify test``: a test message to every target, the failures named, exit 1 if any."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.central.http_fakes import Receiver
from tests.support import free_port, run_cli


@pytest.fixture
def up() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def write_config(tmp_path: Path, targets: str) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n{targets}')
    return path


def test_every_target_is_tried_and_the_failed_one_is_named(tmp_path: Path, up: Receiver) -> None:
    down = free_port()
    config = write_config(tmp_path, f"""
[[notify]]
url = "{up.url()}"
name = "grid duty phone"
[[notify]]
url = "json://127.0.0.1:{down}/alarms"
unit = "chengzhou"
lang = "en"
""")
    result = run_cli("notify", "test", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "ok      grid duty phone",
        "FAILED  json@chengzhou: A Connection error occurred sending JSON notification to 127.0.0.1.",
    ]
    assert result.stderr.splitlines()[-1] == "gridpatrol: 1 of 2 notify targets failed"
    got = up.received()
    assert [(m.title, m.path) for m in got] == [("【测试】Gridpatrol 告警通知", "/alarms")]


def test_all_well_is_exit_0_and_no_targets_is_bad_input(tmp_path: Path, up: Receiver) -> None:
    config = write_config(tmp_path, f'[[notify]]\nurl = "{up.url()}"\nlang = "en"\n')
    result = run_cli("notify", "test", "--config", str(config))
    assert (result.returncode, result.stdout) == (0, "ok      json@root\n")
    assert up.received()[0].title == "[Test] Gridpatrol Alarm notification"
    empty = write_config(tmp_path, "")
    result = run_cli("notify", "test", "--config", str(empty))
    assert (result.returncode, result.stderr) == (2, f"gridpatrol: {empty}: notify: no [[notify]] targets to test\n")
