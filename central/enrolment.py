"""Enrolment as people do it: the unknown cards seen at checkpoints, each with a plan line to paste.

A volunteer taps a new card at a checkpoint; staff look it up here (``gridpatrol
cards unknown`` or the dashboard's "Unknown cards"), read the number printed on
it, and paste the line into the plan. :func:`card_sightings` is the one query
(central's store); :func:`unknown_cards` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import closing
from dataclasses import dataclass
import sqlite3
from typing import Any, Callable, Iterable

from central.cards import plan_line, printed
from central.plan.model import Plan

DEFAULT_DAYS = 28
DAY_MS = 86_400_000


@dataclass(slots=True, frozen=True)
class Sighting:
    """Scans of one card (``tag``, ``fmt``) at one reader since some moment."""

    agent: str
    reader: str
    tag: str
    fmt: str | None
    count: int
    first_ts: int
    last_ts: int


@dataclass(slots=True, frozen=True)
class UnknownCard:
    tag: str
    fmt: str | None
    cards: tuple[str, ...]
    checkpoints: tuple[str, ...]
    count: int
    first_ts: int
    last_ts: int

    @property
    def plan_line(self) -> str:
        return plan_line(self.tag, self.fmt)

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "fmt": self.fmt, "cards": list(self.cards), "checkpoints": list(self.checkpoints),
                "scans": self.count, "first_ts": self.first_ts, "last_ts": self.last_ts, "plan_line": self.plan_line}


# Grouped in SQLite: a month of scans is tens of thousands of rows, the answer a handful.
_SIGHTINGS_SQL = (
    "SELECT agent, source, json_extract(fields, '$.tag') AS tag, json_extract(fields, '$.fmt') AS fmt,"
    " COUNT(*), MIN(ts_est), MAX(ts_est)"
    " FROM events WHERE kind = 'scan' AND ts_est >= ? AND json_valid(fields)"
    " GROUP BY agent, source, tag, fmt"
)


def card_sightings(connect: Callable[[], sqlite3.Connection], since_ms: int) -> list[Sighting]:
    """Every card seen at every reader since ``since_ms`` (by when the scans happened).

    ``connect`` opens a read-only connection to central's store.
    """
    with closing(connect()) as conn:
        rows = conn.execute(_SIGHTINGS_SQL, (since_ms,)).fetchall()
    return [Sighting(agent, source, tag, fmt if isinstance(fmt, str) else None, n, first, last)
            for agent, source, tag, fmt, n, first, last in rows if isinstance(tag, str)]


def unknown_cards(plan: Plan, sightings: Iterable[Sighting]) -> list[UnknownCard]:
    """Cards seen at the plan's checkpoints that belong to no member; the latest seen first."""
    by_card: dict[tuple[str, str | None], list[tuple[str, Sighting]]] = {}
    for s in sightings:
        cp = plan.checkpoint_at.get((s.agent, s.reader))
        if cp is None or plan.member_of(s.tag, s.fmt) is not None:
            continue
        by_card.setdefault((s.tag, s.fmt), []).append((cp.id, s))
    out = [
        UnknownCard(tag=tag, fmt=fmt, cards=tuple(printed(tag, fmt)),
                    checkpoints=tuple(sorted({cp for cp, _ in seen})), count=sum(s.count for _, s in seen),
                    first_ts=min(s.first_ts for _, s in seen), last_ts=max(s.last_ts for _, s in seen))
        for (tag, fmt), seen in by_card.items()
    ]
    out.sort(key=lambda c: (-c.last_ts, c.tag))
    return out


def run_cards_unknown(args: argparse.Namespace) -> int:
    """`gridpatrol cards unknown`: the unknown cards of the last ``--days`` days."""
    from central.config import load_config
    from central.plan_cli import _require_history
    from central.store import Store

    config = load_config(args.config)
    history = _require_history(config)
    now_ms = int(time.time() * 1000)
    version = history.at(now_ms) or history.latest
    assert version is not None
    since = now_ms - args.days * DAY_MS
    store = Store(config.store.path)
    cards = unknown_cards(version.plan, card_sightings(lambda: store.connect(readonly=True), since))
    if args.json:
        json.dump([c.to_json() for c in cards], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not cards:
        print(f"no unknown cards at checkpoints in the last {args.days} days")
        return 0
    for c in cards:
        printed_as = " ".join(c.cards) or "no printed number"
        print(f"{c.tag} ({c.fmt or 'format not sent'}; printed {printed_as}): {c.count} scans at {', '.join(c.checkpoints)}")
        print(f"    members = [ {c.plan_line} ]")
    return 0
