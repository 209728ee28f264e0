"""Enrolment as people do it: the unknown cards seen at checkpoints, each with a plan line to paste.

A volunteer taps a new card at a checkpoint; staff look it up here (``gridpatrol
cards unknown`` or the dashboard's "Unknown cards"), read the number printed on
it, and paste the line into the plan. :func:`card_sightings` (central's store)
is the one query; :func:`unknown_cards` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Iterable

from central.cards import plan_line, printed
from central.plan.model import Plan
from central.store.cards import Sighting, card_sightings

__all__ = ["DEFAULT_DAYS", "Sighting", "UnknownCard", "card_sightings", "run_cards_unknown", "unknown_cards"]

DEFAULT_DAYS = 28
DAY_MS = 86_400_000


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
    from central.store import open_store

    config = load_config(args.config)
    history = _require_history(config)
    now_ms = int(time.time() * 1000)
    version = history.at(now_ms) or history.latest
    assert version is not None
    since = now_ms - args.days * DAY_MS
    with closing(open_store(config.store.url).connect(readonly=True)) as conn:
        sightings = card_sightings(conn, since)
    cards = unknown_cards(version.plan, sightings)
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
