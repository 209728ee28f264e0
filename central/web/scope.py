"""A staff member's scope: their unit and everything below it.

An agent's unit comes from the plan; an alarm's from its own ``unit`` column,
else its agent's. Agents the plan does not know, and alarms with no unit,
belong to no unit: only staff scoped at a top unit (a district, no parent)
see them, since someone must and the top of the tree answers for the rest.
Before any plan is imported no scope contains anything.

A team leader's account is scoped to a team (stored as ``team:<id>``): it
sees no unit, only its team's page (tonight's rounds of the team's routes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from central.plan.model import Plan

TEAM_SCOPE_PREFIX = "team:"  # a team id never holds ":" (plan ids are letters, digits, - _ .)


@dataclass(slots=True, frozen=True)
class Scope:
    unit: str
    units: frozenset[str]
    is_top: bool
    plan: Plan | None
    team: str | None = None  # a team leader's scope: this team's page and nothing else

    @classmethod
    def of(cls, unit: str, plan: Plan | None) -> Scope:
        if unit.startswith(TEAM_SCOPE_PREFIX):
            return cls(unit, frozenset(), False, plan, unit[len(TEAM_SCOPE_PREFIX):])
        if plan is None or unit not in plan.unit_by_id:
            return cls(unit, frozenset(), False, plan)
        return cls(unit, frozenset(plan.subtree(unit)), plan.unit_by_id[unit].parent is None, plan)

    def agent_unit(self, agent: str) -> str | None:
        return self.plan.agent_unit.get(agent) if self.plan else None

    def sees_unit(self, unit: str | None) -> bool:
        if unit is None or (self.plan is not None and unit not in self.plan.unit_by_id):
            return self.is_top
        return unit in self.units

    def sees_agent(self, agent: str) -> bool:
        return self.sees_unit(self.agent_unit(agent))

    def sees_alarm(self, alarm: Mapping[str, Any]) -> bool:
        unit = alarm.get("unit") or self.agent_unit(str(alarm.get("agent")))
        return self.sees_unit(unit)

    def agent_filter(self, known_agents: list[str]) -> list[str]:
        return [a for a in known_agents if self.sees_agent(a)]
