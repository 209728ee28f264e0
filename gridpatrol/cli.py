"""The ``gridpatrol`` command: one entry point, subcommands per docs/reference.md.

Exit status 0 on success, 2 for bad usage or bad input (one line naming the
file, key or value at fault), 1 for other failures. Every ``ValueError`` raised
by one of our packages means bad input (``ConfigError``, ``PlanError``, ...).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

_OUR_PACKAGES = ("agent", "central", "wire", "firmware_bridge", "gridpatrol")
_LOGGER = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep it one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _target(spec: str) -> Callable[[argparse.Namespace], int]:
    """Lazily import ``module:function`` so `gridpatrol agent` never loads central."""

    def run(args: argparse.Namespace) -> int:
        module_name, _, func = spec.partition(":")
        return getattr(importlib.import_module(module_name), func)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gridpatrol", description="Safety hardware of a district on one live picture.")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, target: str, help: str, **kw: object) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, **kw)
        sp.set_defaults(func=_target(target))
        return sp

    def config(sp: argparse.ArgumentParser, required: bool = True) -> None:
        sp.add_argument("--config", required=required, metavar="FILE", help="TOML configuration file")

    sp = cmd("agent", "agent.cli:run_agent", "run one edge agent")
    config(sp)

    sp = cmd("central", "central.cli:run_central", "run the collector and the web dashboard; or migrate or back up"
             " its store")
    sp.add_argument("action", nargs="?", choices=["migrate", "backup"],
                    help="migrate: bring the store's schema to this version; backup FILE: a consistent copy of the"
                         " store while central runs")
    sp.add_argument("file", nargs="?", metavar="FILE", help="with backup: where the copy goes")
    config(sp)

    sp = cmd("quarantine", "central.cli:run_quarantine", "list messages central could not store, kept raw")
    config(sp)
    sp.add_argument("--json", action="store_true", help="print one JSON document")

    plan = sub.add_parser("plan", help="the patrol plan").add_subparsers(dest="plan_command", required=True, parser_class=_Parser)
    sp = plan.add_parser("import", help="check a plan file and store it as a new version")
    sp.add_argument("plan_file", metavar="PLAN.toml")
    config(sp)
    sp.set_defaults(func=_target("central.plan_cli:run_plan_import"))
    sp = plan.add_parser("show", help="print the plan in force")
    config(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_target("central.plan_cli:run_plan_show"))

    sp = cmd("agents", "central.cli:run_agents", "list agents and their presence")
    config(sp)
    sp.add_argument("--json", action="store_true")

    sp = cmd("events", "central.cli:run_events", "list stored events")
    config(sp)
    sp.add_argument("--agent", metavar="ID")
    sp.add_argument("--kind", metavar="KIND")
    sp.add_argument("--json", action="store_true")

    sp = cmd("alarms", "central.plan_cli:run_alarms", "list alarms, or acknowledge one")
    sp.add_argument("action", nargs="?", choices=["ack"], help="ack: acknowledge alarm ID")
    sp.add_argument("alarm_id", nargs="?", metavar="ID")
    sp.add_argument("--by", metavar="NAME")
    sp.add_argument("--all", action="store_true", help="also acknowledged and resolved alarms")
    config(sp)
    sp.add_argument("--json", action="store_true")

    notify = sub.add_parser("notify", help="alarm notifications").add_subparsers(dest="notify_command", required=True, parser_class=_Parser)
    sp = notify.add_parser("test", help="send a test message to every [[notify]] target; exit 1 if any failed")
    config(sp)
    sp.set_defaults(func=_target("central.notify.cli:run_notify_test"))

    report = sub.add_parser("report", help="reports").add_subparsers(dest="report_command", required=True, parser_class=_Parser)
    sp = report.add_parser("completion", help="patrol completion per round, unit and tier")
    config(sp)
    sp.add_argument("--date", metavar="YYYY-MM-DD")
    sp.add_argument("--tier", choices=["district", "street", "community", "grid"])
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sp.set_defaults(func=_target("central.plan_cli:run_report_completion"))

    sp = cmd("demo", "gridpatrol.demo:run_demo", "a whole simulated district on this machine")
    sp.add_argument("--agents", type=int, default=6, metavar="N")
    sp.add_argument("--minutes", type=float, default=None, metavar="M", help="wall-time minutes, else until Ctrl-C")
    sp.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting one")
    sp.add_argument("--dir", metavar="DIR", help="keep the demo's files here (default: a temporary folder)")
    sp.add_argument("--web", metavar="HOST:PORT", default=None, help="dashboard address (default: a free port on 127.0.0.1)")

    sp = cmd("mcu-sim", "firmware_bridge.cli:run_mcu_sim", "a simulated microcontroller on a new pseudo-terminal")
    sp.add_argument("--script", metavar="FILE")

    users = sub.add_parser("users", help="staff accounts").add_subparsers(dest="users_command", required=True, parser_class=_Parser)
    sp = users.add_parser("add", help="add a staff account; the password is read from the terminal or stdin")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--unit", required=True, metavar="UNIT")
    config(sp)
    sp.set_defaults(func=_target("central.web.users:run_users_add"))
    sp = users.add_parser("list", help="staff accounts: name, unit, disabled")
    sp.add_argument("--json", action="store_true")
    config(sp)
    sp.set_defaults(func=_target("central.web.users:run_users_list"))
    for verb, what in (("disable", "no more logins; ends the user's sessions"), ("enable", "allow logins again"),
                       ("remove", "delete the account and its sessions"),
                       ("passwd", "a new password from the terminal or stdin; ends the user's sessions")):
        sp = users.add_parser(verb, help=what)
        sp.add_argument("name", metavar="NAME")
        config(sp)
        sp.set_defaults(func=_target(f"central.web.users:run_users_{verb}"))

    pki = sub.add_parser("pki", help="certificates for agents, central, broker").add_subparsers(dest="pki_command", required=True, parser_class=_Parser)
    sp = pki.add_parser("init")
    sp.add_argument("dir", metavar="DIR")
    sp.add_argument("--broker-host", action="append", metavar="NAME")
    sp.set_defaults(func=_target("gridpatrol.pki:run_init"))
    for name, target, arg in (
        ("issue", "run_issue", "agent_id"),
        ("issue-client", "run_issue_client", "name"),
        ("revoke", "run_revoke", "agent_id"),
    ):
        sp = pki.add_parser(name)
        sp.add_argument(arg)
        sp.add_argument("--pki", required=True, metavar="DIR")
        sp.set_defaults(func=_target(f"gridpatrol.pki:{target}"))
    sp = pki.add_parser("issue-central")
    sp.add_argument("--pki", required=True, metavar="DIR")
    sp.set_defaults(func=_target("gridpatrol.pki:run_issue_central"))
    sp = pki.add_parser("broker-config")
    sp.add_argument("--pki", required=True, metavar="DIR")
    sp.add_argument("--port", required=True, type=int, metavar="N")
    sp.set_defaults(func=_target("gridpatrol.pki:run_broker_config"))
    return p


def _is_bad_input(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, ValueError) and module in _OUR_PACKAGES


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        parser.error(f"--log-level: unknown level {args.log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place that turns errors into exit codes
        if _is_bad_input(exc):
            print(f"gridpatrol: {exc}", file=sys.stderr)
            return 2
        _LOGGER.debug("failed", exc_info=True)
        print(f"gridpatrol: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
