"""The ``gridpatrol`` command line itself: version, help on every option, exit status."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from gridpatrol import __version__
from gridpatrol.cli import build_parser
from tests.support import REPO, run_cli


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_parsers(sub))
    return found


def test_version() -> None:
    done = run_cli("--version")
    assert (done.returncode, done.stdout) == (0, f"gridpatrol {__version__}\n")


def test_every_command_and_option_has_help() -> None:
    missing = []
    for parser in _parsers(build_parser()):
        if not parser.description and parser.prog != "gridpatrol":
            missing.append(parser.prog)
        for action in parser._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_alarms_ack_help_is_its_own() -> None:
    done = run_cli("alarms", "ack", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: gridpatrol alarms ack ")
    assert "--by NAME" in done.stdout and "--all" not in done.stdout


def test_bad_usage_exits_2_with_one_line() -> None:
    done = run_cli("demo", "--agents", "1")
    assert (done.returncode, done.stderr) == (
        2, "gridpatrol demo: error: argument --agents: 1 is out of range (4 to 500)\n")
    done = run_cli("alarms")
    assert (done.returncode, done.stderr) == (2, "gridpatrol: error: the following arguments are required: --config\n")


def test_a_closed_stdout_is_not_an_error(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text((REPO / "examples" / "central.toml").read_text().replace("/var/lib/gridpatrol", str(tmp_path)))
    # `gridpatrol alarms --json | head -c 0`: the reader is gone before anything is written.
    proc = subprocess.Popen([sys.executable, "-m", "gridpatrol.cli", "alarms", "--config", str(config), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    status = proc.wait(timeout=60)
    assert (status, proc.stderr.read()) == (0, b"")
    proc.stderr.close()


def test_python_m_agent_needs_no_command_line_module() -> None:
    code = ("import sys, runpy; sys.argv = ['agent', '--help']\n"
            "try:\n    runpy.run_module('agent', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'gridpatrol.cli' not in sys.modules and 'central' not in sys.modules, sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m agent ")


def test_a_deeply_nested_config_is_bad_input_naming_the_file(tmp_path: Path) -> None:
    for command in ("agent", "agents"):
        path = tmp_path / f"{command}.toml"
        path.write_text("agent_id = " + "[" * 100_000 + "]" * 100_000 + "\n")
        done = run_cli(command, "--config", str(path))
        assert (done.returncode, done.stderr) == (2, f"gridpatrol: {path}: not valid TOML: nested too deeply\n")
