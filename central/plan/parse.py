"""Plan TOML -> a validated :class:`~central.plan.model.Plan`.

Every mistake raises :class:`PlanError` with one line that names the file and
the entry at fault, e.g. ``plan.toml: unit[2] 'chengzhou': parent 'quanxu' is
not a unit``. Indexes count from 0, in the order of the file.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from central.cards import CardError, looks_printed, parse_card
from central.errors import CentralError
from central.plan.model import MINUTES_PER_DAY, AgentEntry, Camera, Checkpoint, Member, Order, Plan, Route, Team, Tier, Unit, Window
from wire.topics import is_valid_agent_id

MAX_PLAN_BYTES = 16 * 1024 * 1024  # a district of 10,000 checkpoints is about 2 MB
# \Z, not $: "$" also matches before a final newline, which would let "fengze\n" through.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # ids go into MQTT topics: no / + #
TAG_RE = re.compile(r"^[0-9A-F]{2,32}\Z")
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
TIME_RE = re.compile(r"^([0-9]{1,2}):([0-9]{2})\Z")
NAME_MAX_LEN = 200
URL_MAX_LEN = 1000
CAMERA_SNAPSHOT_RE = re.compile(r"^https?://[^/?#\s]+[^\s]*\Z")
CAMERA_STREAM_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+[^\s]*\Z")
TOP_KEYS = frozenset({"timezone", "effective", "unit", "agent", "checkpoint", "team", "route", "camera"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A plan nests six deep (route -> window -> value); anything far deeper is not
# a plan, and formatting it into a message could exceed the recursion limit.
MAX_NESTING = 32

T = TypeVar("T")


class PlanError(CentralError, ValueError):
    """The plan (file or stored version) is not valid; the message names the entry."""


def load_plan_file(
    path: str | Path,
    *,
    default_timezone: str | None = None,
    known_readers: Mapping[str, frozenset[str]] | None = None,
) -> Plan:
    """Read, parse and validate a plan file."""
    path = Path(path)
    name = path.name
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(f"{name}: larger than {MAX_PLAN_BYTES // (1024 * 1024)} MB")
    return parse_plan_bytes(raw, name=name, default_timezone=default_timezone, known_readers=known_readers)


def parse_plan_bytes(
    raw: bytes,
    *,
    name: str = "plan.toml",
    default_timezone: str | None = None,
    known_readers: Mapping[str, frozenset[str]] | None = None,
) -> Plan:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and int()'s own limit: an integer of more than 4300 digits
        raise PlanError(f"{name}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise PlanError(f"{name}: not valid TOML: nested too deeply") from None
    return parse_plan(data, name=name, default_timezone=default_timezone, known_readers=known_readers)


def parse_plan(
    data: Mapping[str, Any],
    *,
    name: str = "plan.toml",
    default_timezone: str | None = None,
    known_readers: Mapping[str, frozenset[str]] | None = None,
) -> Plan:
    """Validate a decoded plan (TOML tables or the registry's JSON form)."""
    _check_values(data, name)
    return _Parser(name, known_readers or {}).plan(data, default_timezone)


def _check_values(data: Any, file: str) -> None:
    """Refuse what no plan holds and no message could show: integers past 64 bits (TOML's
    own limit; Python prints none past 4300 digits) and deep nesting. Iterative: no recursion."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            raise PlanError(f"{file}: {path}: nested more than {MAX_NESTING} deep")
        if isinstance(value, Mapping):
            stack.extend((v, _key_path(path, k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise PlanError(f"{file}: {path}: integer out of range (TOML integers are 64-bit)")


def _key_path(path: str, key: Any) -> str:
    """``route[0].teams`` for a plain key; an odd one shown quoted and short, never with a raw newline."""
    if isinstance(key, str) and ID_RE.match(key):
        return f"{path}.{key}" if path else key
    shown = repr(key)[:40] if isinstance(key, str) else f"<{type(key).__name__}>"
    return f"{path}[{shown}]"


class _Entry:
    """One item of a list, for messages: ``plan.toml: unit[2] 'chengzhou'``."""

    def __init__(self, file: str, kind: str, index: int, item: Any, keys: frozenset[str], required: tuple[str, ...],
                 *, label: str = "id") -> None:
        self.where = f"{file}: {kind}[{index}]"
        if not isinstance(item, Mapping):
            raise PlanError(f"{self.where}: must be a table, not {_type(item)}")
        self.item = item
        if isinstance(item.get(label), str) and item[label]:
            self.where += f" {item[label][:64]!r}"
        for key in item:
            if key not in keys:
                raise PlanError(f"{self.where}: unknown key {key!r}")
        for key in required:
            if key not in item:
                raise PlanError(f"{self.where}: missing key {key!r}")

    def fail(self, message: str) -> PlanError:
        return PlanError(f"{self.where}: {message}")

    def text(self, key: str, *, default: str | None = None, max_len: int = NAME_MAX_LEN) -> str:
        value = self.item.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"{key!r} must be a string, not {_type(value)}")
        if len(value) > max_len:
            raise self.fail(f"{key!r} is longer than {max_len} characters")
        return value

    def ident(self, key: str = "id") -> str:
        value = self.text(key, max_len=64)
        if not ID_RE.match(value):
            raise self.fail(f"{key!r} = {value!r} must be letters, digits, '-', '_' or '.' (at most 64)")
        return value

    def list_of(self, key: str, check: Callable[[Any], T]) -> tuple[T, ...]:
        value = self.item.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{key!r} must be a list, not {_type(value)}")
        return tuple(check(v) for v in value)


def _type(value: Any) -> str:
    return type(value).__name__


def _items(data: Mapping[str, Any], key: str, file: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise PlanError(f"{file}: {key!r} must be a list of tables, not {_type(value)}")
    return value


class _Parser:
    def __init__(self, file: str, known_readers: Mapping[str, frozenset[str]]) -> None:
        self.file = file
        self.known_readers = known_readers

    def plan(self, data: Mapping[str, Any], default_timezone: str | None) -> Plan:
        f = self.file
        if not isinstance(data, Mapping):
            raise PlanError(f"{f}: must be a table at the top")
        for key in data:
            if key not in TOP_KEYS:
                raise PlanError(f"{f}: unknown key {key!r}")
        timezone = self._timezone(data.get("timezone", default_timezone))
        effective = self._effective(data.get("effective"))
        if not data.get("unit"):
            raise PlanError(f"{f}: 'unit' must list at least one unit")
        units = self._units(_items(data, "unit", f))
        unit_ids = {u.id for u in units}
        agents = self._agents(_items(data, "agent", f), unit_ids)
        checkpoints = self._checkpoints(_items(data, "checkpoint", f), unit_ids)
        teams = self._teams(_items(data, "team", f), unit_ids)
        routes = self._routes(_items(data, "route", f), unit_ids, {c.id for c in checkpoints}, {t.id for t in teams})
        cameras = _cameras(f, _items(data, "camera", f))
        return Plan(timezone=timezone, units=units, agents=agents, checkpoints=checkpoints, teams=teams, routes=routes, effective=effective,
                    cameras=cameras)

    def _timezone(self, value: Any) -> str:
        if value is None:
            raise PlanError(f"{self.file}: missing key 'timezone'")
        if not isinstance(value, str) or not value or len(value) > 64:
            raise PlanError(f"{self.file}: 'timezone' must be a time zone name such as 'Asia/Shanghai'")
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PlanError(f"{self.file}: timezone {value!r} is not a known time zone") from None
        return value

    def _effective(self, value: Any) -> dt.date | None:
        if value is None:
            return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str) and DATE_RE.match(value):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise PlanError(f"{self.file}: effective = {value!r} must be a date YYYY-MM-DD")

    def _units(self, items: list[Any]) -> tuple[Unit, ...]:
        entries: list[tuple[_Entry, Unit]] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            e = _Entry(self.file, "unit", i, item, frozenset({"id", "tier", "parent", "name"}), ("id", "tier"))
            uid = self._unique(e, seen, i, "unit")
            tier_name = e.text("tier")
            try:
                tier = Tier(tier_name)
            except ValueError:
                raise e.fail(f"tier {tier_name!r} must be one of district, street, community, grid") from None
            parent = e.ident("parent") if "parent" in e.item else None
            entries.append((e, Unit(id=uid, tier=tier, name=e.text("name", default=""), parent=parent)))
        by_id = {u.id: u for _, u in entries}
        for e, u in entries:
            if u.parent is None:
                if u.tier is not Tier.DISTRICT:
                    raise e.fail(f"a {u.tier} needs a parent {u.tier.parent_tier}")
                continue
            if u.parent not in by_id:
                raise e.fail(f"parent {u.parent!r} is not a unit")
            chain = [u.id]
            current: str | None = u.parent
            while current is not None:
                chain.append(current)
                if current == u.id:
                    raise e.fail(f"parent chain loops back to itself ({' -> '.join(chain)})")
                current = by_id[current].parent if current in by_id else None
                if len(chain) > len(by_id) + 1:
                    break  # a loop above this unit: reported at its own entry
        for e, u in entries:
            if u.parent is None:
                continue
            parent_unit = by_id[u.parent]
            if u.tier is Tier.DISTRICT:
                raise e.fail(f"a district has no parent, but names {u.parent!r}")
            if parent_unit.tier is not u.tier.parent_tier:
                raise e.fail(f"a {u.tier} must be under a {u.tier.parent_tier}, but {parent_unit.id!r} is a {parent_unit.tier}")
        return tuple(u for _, u in entries)

    def _unique(self, e: _Entry, seen: dict[str, int], index: int, kind: str) -> str:
        ident = e.ident()
        if ident in seen:
            raise e.fail(f"duplicate id (also {kind}[{seen[ident]}])")
        seen[ident] = index
        return ident

    def _unit_ref(self, e: _Entry, unit_ids: set[str]) -> str:
        unit = e.ident("unit")
        if unit not in unit_ids:
            raise e.fail(f"unit {unit!r} is not a unit")
        return unit

    def _agents(self, items: list[Any], unit_ids: set[str]) -> tuple[AgentEntry, ...]:
        seen: dict[str, int] = {}
        agents = []
        for i, item in enumerate(items):
            e = _Entry(self.file, "agent", i, item, frozenset({"id", "unit", "name"}), ("id", "unit"))
            aid = e.text("id", max_len=64)
            if not is_valid_agent_id(aid):
                raise e.fail(f"agent id {aid!r} must be [a-z0-9-], at most 64 characters, not 'central'")
            if aid in seen:
                raise e.fail(f"duplicate id (also agent[{seen[aid]}])")
            seen[aid] = i
            agents.append(AgentEntry(id=aid, unit=self._unit_ref(e, unit_ids), name=e.text("name", default="")))
        return tuple(agents)

    def _checkpoints(self, items: list[Any], unit_ids: set[str]) -> tuple[Checkpoint, ...]:
        seen: dict[str, int] = {}
        at: dict[tuple[str, str], str] = {}
        out = []
        for i, item in enumerate(items):
            e = _Entry(self.file, "checkpoint", i, item, frozenset({"id", "unit", "agent", "reader", "name"}), ("id", "unit", "agent", "reader"))
            cid = self._unique(e, seen, i, "checkpoint")
            unit = self._unit_ref(e, unit_ids)
            agent = e.text("agent", max_len=64)
            if not is_valid_agent_id(agent):
                raise e.fail(f"agent {agent!r} is not a valid agent id")
            reader = e.text("reader", max_len=64)
            if not reader:
                raise e.fail("'reader' must not be empty")
            if (agent, reader) in at:
                raise e.fail(f"reader {reader!r} of agent {agent!r} is already checkpoint {at[(agent, reader)]!r}")
            at[(agent, reader)] = cid
            readers = self.known_readers.get(agent)
            if readers is not None and reader not in readers:
                listed = ", ".join(sorted(readers)) or "no readers"
                raise e.fail(f"agent {agent!r} has no reader {reader!r} (its birth lists: {listed})")
            out.append(Checkpoint(id=cid, unit=unit, agent=agent, reader=reader, name=e.text("name", default="")))
        return tuple(out)

    def _teams(self, items: list[Any], unit_ids: set[str]) -> tuple[Team, ...]:
        seen: dict[str, int] = {}
        owner: dict[str, tuple[str, str]] = {}
        out = []
        for i, item in enumerate(items):
            e = _Entry(self.file, "team", i, item, frozenset({"id", "unit", "members", "name"}), ("id", "unit"))
            tid = self._unique(e, seen, i, "team")
            unit = self._unit_ref(e, unit_ids)
            members = []
            for j, raw in enumerate(e.list_of("members", lambda v: v)):
                m = _Entry(self.file, f"team[{i}] {tid!r}: member", j, raw, frozenset({"name", "tag", "card"}), ("name",), label="name")
                member_name = m.text("name")
                if "tag" not in m.item and "card" not in m.item:
                    raise m.fail("needs a 'tag' (as the reader reports it) or a 'card' (the number printed on it), or both")
                tag = card = None
                if "tag" in m.item:
                    tag = m.text("tag", max_len=32).strip().upper()
                    if not TAG_RE.match(tag):
                        raise m.fail(f"tag {m.item['tag']!r} must be 2 to 32 hex digits")
                if "card" in m.item:
                    try:
                        card = parse_card(m.text("card", max_len=32)).text
                    except CardError as exc:
                        raise m.fail(str(exc)) from None
                for key in (f"tag {tag}" if tag else None, f"card {card}" if card else None):
                    if key is None:
                        continue
                    if key in owner:
                        other_team, other_name = owner[key]
                        raise m.fail(f"{key} already belongs to {other_name!r} of team {other_team!r}")
                    owner[key] = (tid, member_name)
                members.append(Member(name=member_name, tag=tag, card=card))
            out.append(Team(id=tid, unit=unit, members=tuple(members), name=e.text("name", default="")))
        return tuple(out)

    def _routes(self, items: list[Any], unit_ids: set[str], cp_ids: set[str], team_ids: set[str]) -> tuple[Route, ...]:
        seen: dict[str, int] = {}
        out = []
        keys = frozenset({"id", "unit", "teams", "order", "checkpoints", "window", "name"})
        for i, item in enumerate(items):
            e = _Entry(self.file, "route", i, item, keys, ("id", "unit", "teams", "checkpoints", "window"))
            rid = self._unique(e, seen, i, "route")
            unit = self._unit_ref(e, unit_ids)
            teams = e.list_of("teams", lambda v: v)
            if not teams:
                raise e.fail("'teams' must name at least one team")
            for t in teams:
                if not isinstance(t, str) or t not in team_ids:
                    raise e.fail(f"team {t!r} is not a team")
            order_name = e.text("order", default=str(Order.STRICT))
            try:
                order = Order(order_name)
            except ValueError:
                raise e.fail(f"order {order_name!r} must be one of strict, start-then-any, any") from None
            cps = e.list_of("checkpoints", lambda v: v)
            if not cps:
                raise e.fail("'checkpoints' must list at least one checkpoint")
            for c in cps:
                if not isinstance(c, str) or c not in cp_ids:
                    raise e.fail(f"checkpoint {c!r} is not a checkpoint")
            if len(set(cps)) != len(cps):
                twice = next(c for c in cps if cps.count(c) > 1)
                raise e.fail(f"checkpoint {twice!r} is listed twice")
            windows = self._windows(e)
            out.append(Route(id=rid, unit=unit, teams=tuple(teams), order=order, checkpoints=tuple(cps), windows=windows, name=e.text("name", default="")))
        return tuple(out)

    def _windows(self, e: _Entry) -> tuple[Window, ...]:
        raw = e.item["window"]
        tables = raw if isinstance(raw, list) else [raw]
        if not tables:
            raise e.fail("'window' must not be empty")
        windows = []
        for k, table in enumerate(tables):
            label = "window" if not isinstance(raw, list) else f"window[{k}]"
            if not isinstance(table, Mapping):
                raise e.fail(f"{label} must be a table such as {{ start = \"22:00\", end = \"06:00\", every_min = 120 }}")
            for key in table:
                if key not in ("start", "end", "every_min", "tolerance_min"):
                    raise e.fail(f"{label}: unknown key {key!r}")
            for key in ("start", "end", "every_min"):
                if key not in table:
                    raise e.fail(f"{label}: missing key {key!r}")
            start = _minutes(table["start"], end=False)
            end = _minutes(table["end"], end=True)
            if start is None:
                raise e.fail(f"{label}: start {table['start']!r} is not a time HH:MM")
            if end is None:
                raise e.fail(f"{label}: end {table['end']!r} is not a time HH:MM")
            every = table["every_min"]
            if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MINUTES_PER_DAY:
                raise e.fail(f"{label}: every_min = {every!r} must be a whole number of minutes from 1 to 1440")
            tolerance = table.get("tolerance_min", 0)
            if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 <= tolerance <= MINUTES_PER_DAY:
                raise e.fail(f"{label}: tolerance_min = {tolerance!r} must be a whole number of minutes from 0 to 1440")
            windows.append(Window(start_min=start, end_min=end % MINUTES_PER_DAY, every_min=every, tolerance_min=tolerance))
        return tuple(windows)


def _cameras(file: str, items: list[Any]) -> tuple[Camera, ...]:
    """``camera = [{ id, agent, sources, snapshot, stream }]``: docs/cameras.md."""
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        e = _Entry(file, "camera", i, item, frozenset({"id", "agent", "sources", "snapshot", "stream"}),
                   ("id", "agent", "sources", "snapshot"))
        cid = e.ident()
        if cid in seen:
            raise e.fail(f"duplicate id (also camera[{seen[cid]}])")
        seen[cid] = i
        agent = e.text("agent", max_len=64)
        if not is_valid_agent_id(agent):
            raise e.fail(f"agent {agent!r} is not a valid agent id")
        sources = e.list_of("sources", lambda v: v)
        if not sources or not all(isinstance(s, str) and 0 < len(s) <= 64 for s in sources):
            raise e.fail("'sources' must list the agent's zones or buttons by name (1 to 64 characters each)")
        snapshot = e.text("snapshot", max_len=URL_MAX_LEN)
        if not CAMERA_SNAPSHOT_RE.match(snapshot):
            raise e.fail("'snapshot' must be an http:// or https:// address of a JPEG")
        stream = e.text("stream", default="", max_len=URL_MAX_LEN)
        if stream and not CAMERA_STREAM_RE.match(stream):
            raise e.fail("'stream' must be an address such as rtsp://HOST/PATH")
        out.append(Camera(id=cid, agent=agent, sources=tuple(sources), snapshot=snapshot, stream=stream))
    return tuple(out)


def _minutes(value: Any, *, end: bool) -> int | None:
    if not isinstance(value, str):
        return None
    m = TIME_RE.match(value)
    if not m:
        return None
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        return None
    return hours * 60 + minutes


def plan_warnings(plan: Plan, name: str = "plan.toml") -> list[str]:
    """What is valid but most likely a mistake: a ``tag`` written as a printed decimal number."""
    out = []
    for i, t in enumerate(plan.teams):
        for j, m in enumerate(t.members):
            if m.tag and looks_printed(m.tag):
                out.append(f"{name}: team[{i}] {t.id!r}: member[{j}] {m.name!r}: tag {m.tag!r} looks like a number"
                           f" printed on the card, not what a reader reports (hex); if it is printed, write"
                           f" card = \"{m.tag}\"")
    return out


def _member_data(m: Member) -> dict[str, Any]:
    d: dict[str, Any] = {"name": m.name}
    if m.tag:
        d["tag"] = m.tag
    if m.card:
        d["card"] = m.card
    return d


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """The plan as TOML-shaped plain data (JSON-safe); ``parse_plan`` reads it back."""

    def window(w: Window) -> dict[str, Any]:
        return {
            "start": f"{w.start_min // 60:02d}:{w.start_min % 60:02d}",
            "end": f"{w.end_min // 60:02d}:{w.end_min % 60:02d}",
            "every_min": w.every_min,
            "tolerance_min": w.tolerance_min,
        }

    def named(d: dict[str, Any], name: str) -> dict[str, Any]:
        if name:
            d["name"] = name
        return d

    data: dict[str, Any] = {"timezone": plan.timezone}
    if plan.effective is not None:
        data["effective"] = plan.effective.isoformat()
    data["unit"] = [
        named({"id": u.id, "tier": str(u.tier), **({"parent": u.parent} if u.parent else {})}, u.name) for u in plan.units
    ]
    data["agent"] = [named({"id": a.id, "unit": a.unit}, a.name) for a in plan.agents]
    data["checkpoint"] = [named({"id": c.id, "unit": c.unit, "agent": c.agent, "reader": c.reader}, c.name) for c in plan.checkpoints]
    data["team"] = [
        named({"id": t.id, "unit": t.unit, "members": [_member_data(m) for m in t.members]}, t.name)
        for t in plan.teams
    ]
    data["route"] = [
        named(
            {
                "id": r.id,
                "unit": r.unit,
                "teams": list(r.teams),
                "order": str(r.order),
                "checkpoints": list(r.checkpoints),
                "window": [window(w) for w in r.windows],
            },
            r.name,
        )
        for r in plan.routes
    ]
    if plan.cameras:
        data["camera"] = [{"id": c.id, "agent": c.agent, "sources": list(c.sources), "snapshot": c.snapshot,
                           **({"stream": c.stream} if c.stream else {})} for c in plan.cameras]
    return data
