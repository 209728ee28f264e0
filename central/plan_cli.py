"""`gridpatrol plan import|show`, `gridpatrol alarms [ack]`, `gridpatrol report completion`.

Each reads central's configuration, works on the files central uses (the plan
registry, the store) and returns an exit status; errors that are the user's
(a bad plan, an unknown alarm, a bad date) are ``ValueError``s that
``gridpatrol.cli.main`` turns into exit 2 with their one-line message.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Mapping, TextIO

from central.alarms import Alarm, AlarmError
from central.config import CentralConfig, load_config
from central.plan.model import Plan, Tier
from central.plan.parse import PlanError, load_plan_file, plan_to_data, plan_warnings
from central.plan.registry import PlanHistory, PlanRegistry
from central.report import CompletionReport, build_report, render_csv, render_json, render_table, report_from_store
from central.store import Store, StoreError, open_store
from central.store import snapshots as album

_LOGGER = logging.getLogger(__name__)
_DATE_HELP = "YYYY-MM-DD"


def _registry(config: CentralConfig) -> PlanRegistry:
    return PlanRegistry.for_data_dir(config.data_dir)


def known_readers(store: Store) -> dict[str, frozenset[str]]:
    """Readers each agent listed in its last birth, for agents that have reported one."""
    if not store.exists():
        return {}
    try:
        rows = store.list_agents()
    except StoreError as exc:  # a store without agents yet (or unreadable): nothing to check against
        _LOGGER.warning("cannot read agents' births from %s (%s); readers not checked", store.name, exc)
        return {}
    out: dict[str, frozenset[str]] = {}
    for row in rows:
        birth = row.birth
        inventory = birth.get("inventory") if isinstance(birth, Mapping) else None
        readers = inventory.get("readers") if isinstance(inventory, Mapping) else None
        if isinstance(readers, (list, tuple)):
            out[row.agent] = frozenset(r["name"] for r in readers if isinstance(r, Mapping) and isinstance(r.get("name"), str))
    return out


# -- plan ------------------------------------------------------------------------


def run_plan_import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = load_plan_file(args.plan_file, default_timezone=config.timezone, known_readers=known_readers(open_store(config.store.url)))
    for warning in plan_warnings(plan, Path(args.plan_file).name):
        print(f"gridpatrol: warning: {warning}", file=sys.stderr)
    version = _registry(config).add(plan, source=str(Path(args.plan_file).resolve()))
    print(f"{Path(args.plan_file).name}: imported as version {version.version}, governing from {version.governs_from}: "
          f"{len(plan.units)} units, {len(plan.checkpoints)} checkpoints, {len(plan.teams)} teams, {len(plan.routes)} routes")
    return 0


def _require_history(config: CentralConfig) -> PlanHistory:
    history = _registry(config).history()
    if not history:
        raise PlanError(f"{config.source}: no patrol plan imported yet (gridpatrol plan import PLAN.toml --config {config.source})")
    return history


def run_plan_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    history = _require_history(config)
    now_ms = int(time.time() * 1000)
    current = history.at(now_ms) or history.latest
    assert current is not None
    if args.json:
        doc: dict[str, Any] = {
            "version": current.version,
            "imported_ts": current.imported_ms,
            "governs_from": current.governs_from,
            "source": current.source,
            **plan_to_data(current.plan),
            "versions": [
                {"version": v.version, "imported_ts": v.imported_ms, "source": v.source,
                 "effective": v.plan.effective.isoformat() if v.plan.effective else None,
                 "governs_from": v.governs_from}
                for v in history.versions
            ],
        }
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_plan(current.plan, current.version, current.governs_from, len(history.versions), sys.stdout)
    return 0


def _print_plan(plan: Plan, version: int, since: str, count: int, out: TextIO) -> None:
    out.write(f"Plan version {version} of {count} (in force now; governs from {since}), time zone {plan.timezone}\n\n")
    routes_of: dict[str, list[str]] = {}
    for r in plan.routes:
        windows = "; ".join(w.text() for w in r.windows)
        routes_of.setdefault(r.unit, []).append(
            f"route {r.id} ({r.order}): {' > '.join(r.checkpoints)}; teams {', '.join(r.teams)}; {windows}")
    cps_of: dict[str, list[str]] = {}
    for c in plan.checkpoints:
        cps_of.setdefault(c.unit, []).append(f"checkpoint {c.id}: reader {c.reader} of {c.agent}")
    for uid in plan.tree_order():
        u = plan.unit_by_id[uid]
        pad = "  " * u.tier.rank
        out.write(f"{pad}{u.id} [{u.tier}] {u.name}\n")
        for line in cps_of.get(uid, []) + routes_of.get(uid, []):
            out.write(f"{pad}  - {line}\n")
    for t in plan.teams:
        out.write(f"team {t.id} ({t.unit}): {', '.join(m.name for m in t.members) or 'no members'}\n")


# -- alarms ------------------------------------------------------------------------


def run_alarms(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action == "ack":
        return _ack(config, args)
    if args.alarm_id is not None:
        raise AlarmError(f"alarms: unexpected {args.alarm_id!r} (to acknowledge: alarms ack ID --by NAME)")
    alarms: list[Alarm] = []
    held: Mapping[int, list[int]] = {}
    store = open_store(config.store.url)
    if store.exists():
        alarms = store.alarms(include_all=args.all)
        with closing(store.connect(readonly=True)) as conn:
            held = album.numbers(conn, [a.id for a in alarms])  # issue 14: docs/reference.md's `snapshots`
    if args.json:
        json.dump([{**a.to_json(), "snapshots": len(held.get(a.id, ()))} for a in alarms], sys.stdout,
                  ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    tz = config.tz
    rows = [["id", "state", "kind", "agent", "source", "unit", "escalated to", "raised", "acked by", "to ack"]]
    for a in alarms:
        rows.append([str(a.id), str(a.state), a.kind, a.agent, a.source, a.unit or "-", a.escalated_to or "-",
                     _local(a.raised_ts, tz), a.acked_by or "-", _duration(a.time_to_ack_ms)])
    if len(rows) == 1:
        print("no alarms" if args.all else "no open alarms")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _ack(config: CentralConfig, args: argparse.Namespace) -> int:
    if args.alarm_id is None:
        raise AlarmError("alarms ack: give the alarm ID (alarms ack ID --by NAME)")
    if not args.by:
        raise AlarmError("alarms ack: --by NAME is required (who answered the alarm)")
    try:
        alarm_id = int(args.alarm_id)
    except ValueError:
        raise AlarmError(f"alarms ack: ID {args.alarm_id!r} is not a number") from None
    store = open_store(config.store.url)
    if not store.exists():
        raise AlarmError(f"alarm {alarm_id} does not exist (no store at {store.name} yet)")
    now_ms = int(time.time() * 1000)
    current = store.alarm(alarm_id)
    tier = None
    if current is not None and current.level is not None:
        plan = _registry(config).current(now_ms)
        unit = plan.unit_by_id.get(current.level) if plan else None
        tier = str(unit.tier) if unit else None
    alarm = store.acknowledge(alarm_id, args.by, now_ms, tier=tier)
    print(f"alarm {alarm.id} acknowledged by {alarm.acked_by} after {_duration(alarm.time_to_ack_ms)}; now {alarm.state}")
    return 0


def _local(ts_ms: int | None, tz: Any) -> str:
    if ts_ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = max(ms, 0) // 1000
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


# -- report ------------------------------------------------------------------------


def run_report_completion(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    history = _require_history(config)
    now_ms = int(time.time() * 1000)
    if args.date is None:
        current = history.at(now_ms) or history.latest
        assert current is not None
        day = dt.datetime.fromtimestamp(now_ms / 1000, current.plan.tz).date()
    else:
        day = parse_date(args.date)
    report = _report(config, history, day, now_ms)
    tier = Tier(args.tier) if args.tier else None
    render = {"json": render_json, "csv": render_csv}.get(args.format, render_table)
    text = render(report, tier)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _report(config: CentralConfig, history: PlanHistory, day: dt.date, now_ms: int) -> CompletionReport:
    store = open_store(config.store.url)
    if not store.exists():
        return build_report(history, day, (), now_ms)  # no store yet: nothing was scanned
    return report_from_store(store, history, day, now_ms)


def parse_date(text: str) -> dt.date:
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise PlanError(f"--date {text!r} is not a date {_DATE_HELP}")
