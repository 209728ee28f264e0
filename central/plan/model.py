"""The patrol plan as frozen values: units, agents, checkpoints, teams, routes.

A :class:`Plan` is built only by :func:`central.plan.parse.parse_plan`, which
has checked every reference, so the lookups here never meet a dangling id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping
from zoneinfo import ZoneInfo

from central.cards import LOW24, Card, Roster, parse_card, scan_bits

MINUTES_PER_DAY = 24 * 60


class Tier(StrEnum):
    DISTRICT = "district"
    STREET = "street"
    COMMUNITY = "community"
    GRID = "grid"

    @property
    def rank(self) -> int:
        """0 for a district, 3 for a grid."""
        return _TIER_ORDER.index(self)

    @property
    def parent_tier(self) -> Tier | None:
        return None if self is Tier.DISTRICT else _TIER_ORDER[self.rank - 1]


_TIER_ORDER = (Tier.DISTRICT, Tier.STREET, Tier.COMMUNITY, Tier.GRID)
TIERS = _TIER_ORDER


class Order(StrEnum):
    STRICT = "strict"  # every checkpoint in the listed order
    START_THEN_ANY = "start-then-any"  # the first one first, the others in any order after it
    ANY = "any"


@dataclass(slots=True, frozen=True)
class Unit:
    id: str
    tier: Tier
    name: str
    parent: str | None = None


@dataclass(slots=True, frozen=True)
class AgentEntry:
    id: str
    unit: str
    name: str = ""


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """A reader on an agent, at a place a patrol must pass."""

    id: str
    unit: str
    agent: str
    reader: str
    name: str = ""


@dataclass(slots=True, frozen=True)
class Member:
    """A patrol member, enrolled by ``tag``, by a printed ``card`` number, or both."""

    name: str
    tag: str | None = None  # upper-case hex, as the agent reports it
    card: str | None = None  # "0008075634" or "123,14706", as printed on the card


@dataclass(slots=True, frozen=True)
class Team:
    id: str
    unit: str
    members: tuple[Member, ...] = ()
    name: str = ""


@dataclass(slots=True, frozen=True)
class Window:
    """Local wall-clock times; ``end <= start`` means the window crosses midnight."""

    start_min: int  # minutes after local midnight
    end_min: int
    every_min: int
    tolerance_min: int = 0

    @property
    def length_min(self) -> int:
        """Length in minutes; a window whose end equals its start lasts a whole day."""
        return (self.end_min - self.start_min) % MINUTES_PER_DAY or MINUTES_PER_DAY

    def text(self) -> str:
        return f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)} every {self.every_min} min, tolerance {self.tolerance_min} min"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(slots=True, frozen=True)
class Route:
    id: str
    unit: str
    teams: tuple[str, ...]
    order: Order
    checkpoints: tuple[str, ...]
    windows: tuple[Window, ...]
    name: str = ""


@dataclass(slots=True, frozen=True)
class Camera:
    """An IP camera that watches some inputs of one agent (docs/cameras.md).

    ``snapshot`` (a JPEG over HTTP, credentials in its userinfo) is fetched by
    central only; ``stream`` is shown to operators, without its credentials.
    """

    id: str
    agent: str
    sources: tuple[str, ...]
    snapshot: str = field(repr=False)
    stream: str = field(default="", repr=False)


@dataclass(slots=True, frozen=True)
class Plan:
    """One validated version of the plan, with lookups built once."""

    timezone: str
    units: tuple[Unit, ...]
    agents: tuple[AgentEntry, ...] = ()
    checkpoints: tuple[Checkpoint, ...] = ()
    teams: tuple[Team, ...] = ()
    routes: tuple[Route, ...] = ()
    effective: dt.date | None = None
    cameras: tuple[Camera, ...] = ()

    tz: ZoneInfo = field(init=False, repr=False, compare=False)
    unit_by_id: Mapping[str, Unit] = field(init=False, repr=False, compare=False)
    children: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    checkpoint_by_id: Mapping[str, Checkpoint] = field(init=False, repr=False, compare=False)
    checkpoint_at: Mapping[tuple[str, str], Checkpoint] = field(init=False, repr=False, compare=False)
    route_by_id: Mapping[str, Route] = field(init=False, repr=False, compare=False)
    routes_at: Mapping[str, tuple[Route, ...]] = field(init=False, repr=False, compare=False)
    route_tags: Mapping[str, Roster] = field(init=False, repr=False, compare=False)  # who may scan on a route
    member_by_tag: Mapping[str, tuple[Team, Member]] = field(init=False, repr=False, compare=False)
    member_by_card: Mapping[Card, tuple[Team, Member]] = field(init=False, repr=False, compare=False)
    agent_unit: Mapping[str, str] = field(init=False, repr=False, compare=False)
    planned_agents: frozenset[str] = field(init=False, repr=False, compare=False)
    cameras_at: Mapping[tuple[str, str], tuple[Camera, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "tz", ZoneInfo(self.timezone))
        put(self, "unit_by_id", MappingProxyType({u.id: u for u in self.units}))
        kids: dict[str, list[str]] = {u.id: [] for u in self.units}
        for u in self.units:
            if u.parent is not None and u.parent in kids:
                kids[u.parent].append(u.id)
        put(self, "children", MappingProxyType({k: tuple(v) for k, v in kids.items()}))
        put(self, "checkpoint_by_id", MappingProxyType({c.id: c for c in self.checkpoints}))
        put(self, "checkpoint_at", MappingProxyType({(c.agent, c.reader): c for c in self.checkpoints}))
        put(self, "route_by_id", MappingProxyType({r.id: r for r in self.routes}))
        at: dict[str, list[Route]] = {}
        for r in self.routes:
            for cp in r.checkpoints:
                at.setdefault(cp, []).append(r)
        put(self, "routes_at", MappingProxyType({k: tuple(v) for k, v in at.items()}))
        team_by_id = {t.id: t for t in self.teams}
        put(self, "route_tags", MappingProxyType({r.id: self._roster(r, team_by_id) for r in self.routes}))
        put(self, "member_by_tag", MappingProxyType({m.tag: (t, m) for t in self.teams for m in t.members if m.tag}))
        put(self, "member_by_card", MappingProxyType({
            parse_card(m.card): (t, m) for t in self.teams for m in t.members if m.card}))
        put(self, "agent_unit", MappingProxyType(self._agent_units()))
        put(self, "planned_agents", frozenset(a.id for a in self.agents) | {c.agent for c in self.checkpoints})
        watching: dict[tuple[str, str], list[Camera]] = {}
        for cam in self.cameras:
            for source in cam.sources:
                watching.setdefault((cam.agent, source), []).append(cam)
        put(self, "cameras_at", MappingProxyType({k: tuple(v) for k, v in watching.items()}))

    @staticmethod
    def _roster(route: Route, team_by_id: Mapping[str, Team]) -> Roster:
        members = [m for tid in route.teams if tid in team_by_id for m in team_by_id[tid].members]
        return Roster.of((m.tag for m in members if m.tag), (parse_card(m.card) for m in members if m.card))

    def member_of(self, tag: str, fmt: str | None = None) -> tuple[Team, Member] | None:
        """The member whose card made this scan: by tag, else by printed number."""
        hit = self.member_by_tag.get(tag)
        if hit is not None or not self.member_by_card:
            return hit
        bits = scan_bits(tag, fmt)
        if bits is None:
            return None
        if bits.low32 is not None:
            hit = self.member_by_card.get(Card(bits.low32, 32))
        else:  # a Wiegand 26 scan: any ten-digit card with these low 24 bits
            hit = next((v for c, v in self.member_by_card.items() if c.width == 32 and c.value & LOW24 == bits.low24), None)
        return hit or self.member_by_card.get(Card(bits.low24, 24))

    def _agent_units(self) -> dict[str, str]:
        """An agent's unit: its own entry, else where its checkpoints are.

        Checkpoints of one agent in different units (a gate between two grids)
        put the agent in the lowest unit that holds them all.
        """
        units = {a.id: a.unit for a in self.agents}
        by_agent: dict[str, list[str]] = {}
        for c in self.checkpoints:
            if c.agent not in units:
                by_agent.setdefault(c.agent, []).append(c.unit)
        for agent, cp_units in by_agent.items():
            common = self.lineage(cp_units[0])
            for u in cp_units[1:]:
                line = set(self.lineage(u))
                common = tuple(x for x in common if x in line)
            if common:
                units[agent] = common[0]
        return units

    def lineage(self, unit_id: str) -> tuple[str, ...]:
        """The unit itself, then its parent, up to its district."""
        chain: list[str] = []
        current: str | None = unit_id
        while current is not None and current in self.unit_by_id and current not in chain:
            chain.append(current)
            current = self.unit_by_id[current].parent
        return tuple(chain)

    def subtree(self, unit_id: str) -> tuple[str, ...]:
        """The unit and every unit below it, depth first in plan order."""
        out: list[str] = []
        stack = [unit_id]
        while stack:
            u = stack.pop()
            out.append(u)
            stack.extend(reversed(self.children.get(u, ())))
        return tuple(out)

    def tree_order(self) -> tuple[str, ...]:
        """Every unit, each district followed by what lies below it."""
        out: list[str] = []
        for u in self.units:
            if u.parent is None:
                out.extend(self.subtree(u.id))
        return tuple(out)

    def is_planned(self, agent_id: str) -> bool:
        return agent_id in self.planned_agents
