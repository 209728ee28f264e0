"""Who is told of an alarm step: pure, from the step, the targets and the plan.

A target on unit U is told when an alarm reaches U's tier: raised at U, or
escalated to U (an alarm raised below U reaches U only by escalating). A
target with no unit stands at the plan's root; it also takes alarms that have
no unit (an agent the plan does not know), as the top of the tree answers for
those. A target told of an alarm is also told when it is acknowledged or
resolved; a resolve made by the acknowledgement itself (a panic, a loop
already restored) rides on the ack's message instead of a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

from central.config import NotifyTarget
from central.plan.model import Plan
from central.store.notifications import StepFact

ROUTED_ACTIONS = ("raise", "escalate", "ack", "resolve")


@dataclass(slots=True, frozen=True)
class Target:
    key: str  # what the store keeps: never the URL, which carries the robot's token
    label: str
    config: NotifyTarget


def targets_of(configs: Sequence[NotifyTarget]) -> tuple[Target, ...]:
    return tuple(Target(target_key(c), c.label, c) for c in configs)


def target_key(config: NotifyTarget) -> str:
    return hashlib.sha256(f"{config.url}\0{config.unit or ''}".encode()).hexdigest()[:16]


def _at_root(plan: Plan | None, unit: str | None) -> bool:
    if unit is None:
        return True
    return plan is not None and unit in plan.unit_by_id and plan.unit_by_id[unit].parent is None


def stands_at(target: NotifyTarget, unit: str | None, plan: Plan | None) -> bool:
    """Whether an alarm that has reached ``unit`` (None: no unit) is at this target's tier."""
    if target.unit is None:
        return _at_root(plan, unit)
    if unit is None:
        return _at_root(plan, target.unit)
    return unit == target.unit


def recipients(step: StepFact, targets: Sequence[Target], plan: Plan | None,
               told: Callable[[int, str], bool]) -> list[Target]:
    out = []
    for t in targets:
        if step.kind not in t.config.kinds:
            continue
        if step.action in ("raise", "escalate"):
            if stands_at(t.config, step.unit, plan):
                out.append(t)
        elif step.action == "ack" or (step.action == "resolve" and not step.with_ack):
            if told(step.alarm_id, t.key):
                out.append(t)
    return out
