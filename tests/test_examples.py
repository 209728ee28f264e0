"""examples/: the commented configurations load with the real loaders and the plan imports."""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import load_config as load_agent_config
from central.config import load_config as load_central_config
from tests.support import REPO, run_cli

EXAMPLES = REPO / "examples"


def test_the_agent_example_loads() -> None:
    config = load_agent_config(EXAMPLES / "agent.toml")
    assert config.agent_id == "school-9-gate-1"
    assert [z.name for z in config.zones] == ["north-fence"]
    assert [r.name for r in config.readers] == ["gate-1"]


def test_the_central_example_loads() -> None:
    config = load_central_config(EXAMPLES / "central.toml")
    assert config.timezone == "Asia/Shanghai"
    assert str(config.store.path) == "/var/lib/gridpatrol/central.db"


def test_the_plan_example_imports_with_the_central_example(tmp_path: Path) -> None:
    # The central example as it is, but with its data under this test's folder.
    central = tmp_path / "central.toml"
    central.write_text((EXAMPLES / "central.toml").read_text().replace("/var/lib/gridpatrol", str(tmp_path / "data")))
    (tmp_path / "data").mkdir()

    imported = run_cli("plan", "import", str(EXAMPLES / "plan.toml"), "--config", str(central))
    assert imported.returncode == 0, imported.stderr
    assert "imported as version 1" in imported.stdout

    shown = run_cli("plan", "show", "--config", str(central), "--json")
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    # The plan's checkpoint on the example agent names the example agent's reader.
    agent = load_agent_config(EXAMPLES / "agent.toml")
    [gate] = [c for c in plan["checkpoint"] if c["agent"] == agent.agent_id]
    assert gate["reader"] == agent.readers[0].name
