"""The answer at the checkpoint: what a planned scan meant, for the volunteer holding the card (pure).

Central tells the agent (``feedback`` command) and the agent shows it on the
reader's feedback output as a pattern of its own (docs/readers.md).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Iterable

from central.completion import RoundTally
from central.plan.model import Plan


class Verdict(StrEnum):
    COUNTED = "counted"  # in a round of a route of this card's team, in the required order
    UNKNOWN_CARD = "unknown-card"  # no member of any team holds this card
    NOT_ON_ROUTE = "not-on-route"  # a known card, but no route through this checkpoint is its team's
    OUT_OF_ORDER = "out-of-order"  # in a round, but a checkpoint the route puts before this one is unscanned
    OUTSIDE_WINDOW = "outside-window"  # the card's routes here have no round open at this time


def verdict(plan: Plan, checkpoint: str, tag: str, fmt: str | None, ts: int,
            rounds: Iterable[RoundTally]) -> Verdict:
    """The verdict of a scan at ``checkpoint`` at ``ts``, already counted into ``rounds``.

    ``rounds`` are the tallies of the rounds (of any route) whose time holds
    ``ts`` at this checkpoint; only those of routes the card may walk matter.
    """
    if plan.member_of(tag, fmt) is None:
        return Verdict.UNKNOWN_CARD
    routes = {r.id for r in plan.routes_at.get(checkpoint, ()) if plan.route_tags[r.id].admits(tag, fmt)}
    if not routes:
        return Verdict.NOT_ON_ROUTE
    mine = [t for t in rounds if t.route.id in routes]
    if not mine:
        return Verdict.OUTSIDE_WINDOW
    if any(t.in_order(checkpoint, ts) for t in mine):
        return Verdict.COUNTED
    return Verdict.OUT_OF_ORDER
