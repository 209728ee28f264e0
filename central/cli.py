"""`gridpatrol central`, `gridpatrol agents`, `gridpatrol events`.

``agents`` and ``events`` read the store directly through a read-only
connection, so they work beside a running central (WAL readers never block
its writer) and while it is stopped. ``--json`` prints one JSON document on
stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Iterable, Sequence, TextIO
from zoneinfo import ZoneInfo

from central.config import CentralConfig, load_config
from central.errors import CentralError
from central.store import AgentRow, Store, StoredEvent, open_store
from wire.messages import EventKind
from wire.topics import is_valid_agent_id

_LOGGER = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0  # how often central's health is looked at when systemd set no watchdog


class UsageError(CentralError, ValueError):
    """A command-line value is wrong; exit status 2."""


def run_central(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT, then publish the offline status and close (or: migrate, backup, copy-store)."""
    config = load_config(args.config)
    action = getattr(args, "action", None)
    if getattr(args, "to", None) is not None and action != "copy-store":
        # `migrate --to URL` would migrate the config's store, not URL: say so rather than do the other thing.
        raise UsageError("central: --to goes with copy-store only")
    if action == "migrate":
        return _migrate(config)
    if action == "backup":
        return _backup(config, getattr(args, "file", None))
    if getattr(args, "file", None) is not None:
        raise UsageError(f"central: unexpected {args.file!r} (only `central backup FILE` takes a file)")
    if action == "copy-store":
        return _copy_store(config, getattr(args, "to", None))
    from central.app import Central  # paho and the rest only for the long-running command
    from gridpatrol.base.systemd import SystemdNotifier, supervise

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("central: %s received, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        central = Central(config)
        central.start()
        try:
            # Healthy while the ingest writer goes round.
            supervise(stop, central.healthy, notifier=SystemdNotifier(), name="central's ingest writer",
                      check_s=HEALTH_CHECK_S)
        finally:
            central.stop()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _migrate(config: CentralConfig) -> int:
    store = open_store(config.store.url)
    before, after = store.migrate()
    print(f"store {store.name}: schema version {before} -> {after}" if before != after
          else f"store {store.name}: schema already at version {after}")
    return 0


def _backup(config: CentralConfig, target: str | None) -> int:
    if not target:
        raise UsageError("central backup: give the FILE to write the copy to")
    store = _store(config)
    if store is None:
        return 1
    store.backup(Path(target))
    print(f"store {store.name} copied to {target}")
    return 0


def _copy_store(config: CentralConfig, url: str | None) -> int:
    from central.store import POSTGRESQL_SCHEMES
    from central.store.transfer import copy_store

    if not url or not url.startswith(POSTGRESQL_SCHEMES):
        raise UsageError("central copy-store: give --to postgresql://USER@HOST/DB, the new database to fill")
    source, target = open_store(config.store.url), open_store(url)
    try:
        report = copy_store(source, target)
    finally:
        target.close()
    print(f"copied store {report.source} into {report.target} (schema version {report.version}):")
    width = max(len(name) for name in report.rows)
    for name, n in report.rows.items():
        print(f"  {name.ljust(width)}  {n:>10,}")
    print(f"  {'total'.ljust(width)}  {sum(report.rows.values()):>10,} rows")
    print("ids the target hands out next: " + ", ".join(f"{k} {v}" for k, v in report.next_ids.items()))
    print(f"next: point [store] url at the new database and start central; keep {report.source} as it is")
    return 0


def run_quarantine(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    rows = store.quarantined() if store is not None else []
    if args.json:
        json.dump([q.to_json() for q in rows], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("nothing in quarantine")
        return 0
    for q in rows:
        when = datetime.fromtimestamp(q.received_ts / 1000, config.tz).strftime("%Y-%m-%d %H:%M:%S")
        where = f"epoch {q.epoch!r} eseq {q.eseq}" if q.eseq is not None else "-"
        print(f"{q.id:>6}  {when}  {q.agent or '-'}  {where}  {q.reason}")
    return 0


def _store(config: CentralConfig) -> Store | None:
    store = open_store(config.store.url)
    if not store.exists():
        print(f"gridpatrol: store {store.name} does not exist yet (has `gridpatrol central` run?)", file=sys.stderr)
        return None
    return store


def run_agents(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    rows = store.list_agents() if store is not None else []
    if args.json:
        json.dump([r.to_json() for r in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_agents(rows, config, sys.stdout)
    return 0


def run_events(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    kinds = [str(k) for k in EventKind]
    if args.kind is not None and args.kind not in kinds:
        raise UsageError(f"--kind: {args.kind!r} is not one of {', '.join(kinds)}")
    if args.agent is not None and not is_valid_agent_id(args.agent):
        raise UsageError(f"--agent: {args.agent!r} is not a valid agent id ([a-z0-9-], at most 64 characters)")
    store = _store(config)
    if store is None:
        events: Iterable[StoredEvent] = []
        _emit_events(events, args, config)
        return 0
    with closing(store.connect(readonly=True)) as conn:
        _emit_events(store.iter_events(conn, agent=args.agent, kind=args.kind), args, config)
    return 0


def _emit_events(events: Iterable[StoredEvent], args: argparse.Namespace, config: CentralConfig) -> None:
    out = sys.stdout
    if args.json:
        # Streamed, one event at a time: a year of scans need not fit in memory.
        out.write("[")
        for n, e in enumerate(events):
            out.write(("," if n else "") + json.dumps(e.to_json()))
        out.write("]\n")
    else:
        _print_events(list(events), config, out)


# -- tables for people --------------------------------------------------------


def _when(ms: int | None, tz: ZoneInfo) -> str:
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):  # an agent's clock can say anything; its events are kept
        return f"? ({ms} ms)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for r in [header, *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() + "\n")


def _print_agents(rows: list[AgentRow], config: CentralConfig, out: TextIO) -> None:
    if not rows:
        out.write("no agents yet\n")
        return
    tz = config.tz
    _table(
        ("AGENT", "STATE", "BDSEQ", "LAST SEEN", "ACKED ESEQ"),
        [(r.agent, r.state or "unknown", "-" if r.bdseq is None else str(r.bdseq), _when(r.last_seen, tz),
          str(r.acked_eseq)) for r in rows],
        out,
    )


def _details(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(fields.items()))


def _print_events(events: list[StoredEvent], config: CentralConfig, out: TextIO) -> None:
    if not events:
        out.write("no events\n")
        return
    tz = config.tz
    rows = []
    for e in events:
        flags = [name for name, on in (("replayed", e.replayed), ("unplanned", e.unplanned)) if on]
        # "~": central's estimate, the agent's clock was not synchronised.
        happened = ("~" if e.ts_estimated else "") + _when(e.ts_est, tz)
        rows.append((e.agent, str(e.eseq), e.kind, e.source, happened, _when(e.received_ts, tz), ",".join(flags),
                     _details(dict(e.fields))))
    _table(("AGENT", "ESEQ", "KIND", "SOURCE", "HAPPENED", "RECEIVED", "FLAGS", "DETAILS"), rows, out)
    out.write(f"times in {config.timezone}; ~ marks a time central estimated\n")
