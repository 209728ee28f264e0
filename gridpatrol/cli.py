"""The ``gridpatrol`` command: one entry point, subcommands per docs/reference.md.

Subcommand modules are imported only when their command runs, so
``gridpatrol agent`` never loads central's web stack on a Pi. How a command
ends (exit status, a closed stdout) is gridpatrol/base/command.py's.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from gridpatrol import __version__
from gridpatrol.base.command import UsageParser, add_log_level, run_command, setup_logging

TIERS = ("district", "street", "community", "grid")
DEMO_AGENTS_MIN, DEMO_AGENTS_MAX = 4, 500


def _target(spec: str) -> Callable[[argparse.Namespace], int]:
    """Lazily import ``module:function`` so `gridpatrol agent` never loads central."""

    def run(args: argparse.Namespace) -> int:
        module_name, _, func = spec.partition(":")
        return int(getattr(importlib.import_module(module_name), func)(args) or 0)

    return run


def _demo_agents(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not DEMO_AGENTS_MIN <= n <= DEMO_AGENTS_MAX:
        raise argparse.ArgumentTypeError(f"{n} is out of range ({DEMO_AGENTS_MIN} to {DEMO_AGENTS_MAX})")
    return n


def _positive_minutes(text: str) -> float:
    try:
        m = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not m > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0")
    return m


def _config(sp: argparse.ArgumentParser, *, required: bool = True) -> None:
    kw: dict[str, object] = {"required": True} if required else {"default": argparse.SUPPRESS}
    sp.add_argument("--config", metavar="FILE", help="central's TOML configuration file", **kw)  # type: ignore[arg-type]


def _json(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of a table")


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="gridpatrol", description="Safety hardware of a district on one live picture.",
                    epilog="Every command, key and field: docs/reference.md. COMMAND --help describes one command.")
    p.add_argument("--version", action="version", version=f"gridpatrol {__version__}")
    add_log_level(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=UsageParser)

    def cmd(parent: argparse._SubParsersAction[UsageParser], name: str, target: str | None, help: str) -> UsageParser:
        sp = parent.add_parser(name, help=help, description=help)
        if target is not None:
            sp.set_defaults(func=_target(target))
        return sp

    sp = cmd(sub, "agent", "agent.cli:run_agent", "run one edge agent")
    sp.add_argument("--config", required=True, metavar="FILE", help="the agent's TOML configuration file")

    sp = cmd(sub, "central", "central.cli:run_central",
             "run the collector and the web dashboard; or migrate, back up or copy its store")
    sp.add_argument("action", nargs="?", choices=["migrate", "backup", "copy-store"],
                    help="migrate: bring the store's schema to this version; backup FILE: a consistent copy of the"
                         " store while central runs; copy-store --to URL: every row of the SQLite store into a new"
                         " PostgreSQL database (central stopped)")
    sp.add_argument("file", nargs="?", metavar="FILE", help="with backup: where the copy goes")
    sp.add_argument("--to", metavar="URL", help="with copy-store: the empty PostgreSQL database, postgresql://USER@HOST/DB")
    _config(sp)

    sp = cmd(sub, "quarantine", "central.cli:run_quarantine", "list messages central could not store, kept raw, with the reason")
    _config(sp)
    _json(sp)

    plan = cmd(sub, "plan", None, "the patrol plan").add_subparsers(
        dest="plan_command", required=True, metavar="ACTION", parser_class=UsageParser)
    sp = cmd(plan, "import", "central.plan_cli:run_plan_import", "check a plan file and store it as a new version")
    sp.add_argument("plan_file", metavar="PLAN.toml", help="the plan to import")
    _config(sp)
    sp = cmd(plan, "show", "central.plan_cli:run_plan_show", "print the plan in force")
    _config(sp)
    _json(sp)

    sp = cmd(sub, "agents", "central.cli:run_agents", "list agents and their presence")
    _config(sp)
    _json(sp)

    sp = cmd(sub, "events", "central.cli:run_events", "list stored events, oldest first")
    _config(sp)
    sp.add_argument("--agent", metavar="ID", help="only this agent's events")
    sp.add_argument("--kind", metavar="KIND", help="only events of this kind (alarm, restore, tamper, panic, scan, fault, output)")
    _json(sp)

    alarms_p = cmd(sub, "alarms", "central.plan_cli:run_alarms", "list open alarms, or acknowledge one (alarms ack --help)")
    _config(alarms_p, required=False)
    alarms_p.add_argument("--all", action="store_true", help="also acknowledged and resolved alarms")
    _json(alarms_p)
    alarms_p.set_defaults(action=None, alarm_id=None, by=None)
    alarms = alarms_p.add_subparsers(dest="alarms_command", metavar="ACTION", parser_class=UsageParser)
    sp = cmd(alarms, "ack", None, "acknowledge an alarm: staff have answered it")
    # Both checked by the command itself, whose messages say what to give.
    sp.add_argument("alarm_id", nargs="?", metavar="ID", help="the alarm's id (alarms --json: id); required")
    sp.add_argument("--by", metavar="NAME", help="who answered it; required")
    _config(sp, required=False)
    sp.set_defaults(action="ack")

    notify = cmd(sub, "notify", None, "alarm notifications").add_subparsers(
        dest="notify_command", required=True, metavar="ACTION", parser_class=UsageParser)
    sp = cmd(notify, "test", "central.notify.cli:run_notify_test",
             "send a test message to every [[notify]] target; exit 1 if any failed")
    _config(sp)

    report = cmd(sub, "report", None, "reports").add_subparsers(
        dest="report_command", required=True, metavar="REPORT", parser_class=UsageParser)
    sp = cmd(report, "completion", "central.plan_cli:run_report_completion", "patrol completion per round, unit and tier")
    _config(sp)
    sp.add_argument("--date", metavar="YYYY-MM-DD", help="the night that began on this date (default: the latest)")
    sp.add_argument("--tier", choices=TIERS, help="only units of this tier")
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default table)")

    cards = cmd(sub, "cards", None, "cards seen at checkpoints").add_subparsers(
        dest="cards_command", required=True, metavar="LIST", parser_class=UsageParser)
    sp = cmd(cards, "unknown", "central.enrolment:run_cards_unknown",
             "cards seen at checkpoints that no member holds, with a plan line to paste")
    _config(sp)
    sp.add_argument("--days", type=int, default=28, metavar="N", help="look back this many days (default 28)")
    _json(sp)

    sp = cmd(sub, "demo", "gridpatrol.demo:run_demo", "a whole simulated district on this machine")
    sp.add_argument("--agents", type=_demo_agents, default=6, metavar="N",
                    help=f"how many agent processes ({DEMO_AGENTS_MIN} to {DEMO_AGENTS_MAX}, default 6)")
    sp.add_argument("--minutes", type=_positive_minutes, default=None, metavar="M", help="run this many minutes once every agent is up, else until Ctrl-C")
    sp.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting one")
    sp.add_argument("--dir", metavar="DIR", help="keep the demo's files here (default: a temporary folder)")
    sp.add_argument("--web", metavar="HOST:PORT", default=None, help="dashboard address (default: a free port on 127.0.0.1)")

    sp = cmd(sub, "mcu-sim", "firmware_bridge.cli:run_mcu_sim", "a simulated microcontroller on a new pseudo-terminal")
    sp.add_argument("--script", metavar="FILE", help="a script of inputs to play (docs/firmware.md); default: wait for commands")

    users = cmd(sub, "users", None, "staff accounts").add_subparsers(
        dest="users_command", required=True, metavar="ACTION", parser_class=UsageParser)
    sp = cmd(users, "add", "central.web.users:run_users_add", "add a staff account; the password is read from the terminal or stdin")
    sp.add_argument("name", metavar="NAME", help="the login name")
    scope = sp.add_mutually_exclusive_group(required=True)
    scope.add_argument("--unit", metavar="UNIT", help="the plan unit whose alarms and rounds the account sees")
    scope.add_argument("--team", metavar="TEAM", help="a team leader: only this team's own page")
    _config(sp)
    sp = cmd(users, "list", "central.web.users:run_users_list", "staff accounts: name, unit, disabled")
    _config(sp)
    _json(sp)
    for verb, what in (("disable", "no more logins; ends the user's sessions"), ("enable", "allow logins again"),
                       ("remove", "delete the account and its sessions"),
                       ("passwd", "a new password from the terminal or stdin; ends the user's sessions")):
        sp = cmd(users, verb, f"central.web.users:run_users_{verb}", what)
        sp.add_argument("name", metavar="NAME", help="the login name")
        _config(sp)

    pki = cmd(sub, "pki", None, "certificates for agents, central, broker").add_subparsers(
        dest="pki_command", required=True, metavar="ACTION", parser_class=UsageParser)
    pki_dir = "the PKI directory that `pki init` made"
    sp = cmd(pki, "init", "gridpatrol.pki:run_init", "a new CA, an empty CRL and the broker's certificate in DIR")
    sp.add_argument("dir", metavar="DIR", help="where to make the PKI (must not hold one yet)")
    sp.add_argument("--broker-host", action="append", metavar="NAME",
                    help="a name or address the broker is reached by; repeat for several (default: localhost, 127.0.0.1)")
    for name, target, arg, help, arg_help in (
        ("issue", "run_issue", "agent_id", "a certificate and key for an agent", "the agent's agent_id"),
        ("issue-client", "run_issue_client", "name", "a certificate for a read-only client (Home Assistant, a dashboard)", "the client's name"),
        ("revoke", "run_revoke", "agent_id", "add an agent's certificate to the CRL", "the agent's agent_id"),
    ):
        sp = cmd(pki, name, f"gridpatrol.pki:{target}", help)
        sp.add_argument(arg, metavar=arg.upper(), help=arg_help)
        sp.add_argument("--pki", required=True, metavar="DIR", help=pki_dir)
    sp = cmd(pki, "issue-central", "gridpatrol.pki:run_issue_central", "a certificate and key for central")
    sp.add_argument("--pki", required=True, metavar="DIR", help=pki_dir)
    sp = cmd(pki, "broker-config", "gridpatrol.pki:run_broker_config", "print a Mosquitto configuration for this PKI")
    sp.add_argument("--pki", required=True, metavar="DIR", help=pki_dir)
    sp.add_argument("--port", required=True, type=int, metavar="N", help="the TLS port the broker listens on")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "alarms" and not hasattr(args, "config"):
        parser.error("the following arguments are required: --config")
    setup_logging(args.log_level)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
