"""A simulated district: the plan, the agents' configurations and the script
of what happens during a demo run. Pure: it writes no files and starts nothing.

One district, two streets, four communities, eight grids. Agent ``i`` sits in
community ``i % 4``, grid ``(i // 4) % 2`` of it, so every community has a
checkpoint from four agents on; each agent has a perimeter loop, a panic
button, a siren, an indicator, a status LED and an RDM6300 checkpoint reader.
Each community has one route through the checkpoints of its grids, walked by
its own team, in slots of ``SLOT_MIN`` minutes so rounds finish while the demo
runs: every round status is in the report within two minutes of the start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

TIMEZONE = "Asia/Shanghai"
SLOT_MIN = 1
# Only the route whose team is late has a tolerance: with one-minute slots, a
# tolerance of a minute would let the next slot's walkers finish every earlier
# round (a scan in a slot's tolerance and the next slot counts for both), so
# no round could ever be missed.
LATE_TOLERANCE_MIN = 1
# The team of route i does BEHAVIOURS[i % 4]. "skip" needs two checkpoints and
# goes to the first community, which has the most agents (two from 5 agents on).
BEHAVIOURS = ("skip", "late", "on-time", "missed")
WALK_LEAD_S = 3  # the first tap of the run, after the district is up
MIN_WALK_S = 30  # a first slot with less time left than this is left to start the next minute
LATE_RESUME_S = 25  # a late team starts each later walk after the previous walk's last tap (at +20)
ZONE_PIN = 17
BUTTON_PIN = 27
SIREN_PIN = 22
INDICATOR_PIN = 23
STATUS_PIN = 24
BUTTON_HOLD_MS = 800
UNKNOWN_TAG = "0B00C0FFEE"  # a card that belongs to no team

STREETS = (("quanxiu", "泉秀街道 Quanxiu Street"), ("donghai", "东海街道 Donghai Street"))
COMMUNITIES = (
    ("chengzhou", "quanxiu", "城洲社区 Chengzhou"),
    ("xinhua", "quanxiu", "新华社区 Xinhua"),
    ("baozhou", "donghai", "宝洲社区 Baozhou"),
    ("fuqiao", "donghai", "浮桥社区 Fuqiao"),
)
SITES = ("school", "gate", "library", "market", "clinic", "park")


@dataclass(frozen=True, slots=True)
class DemoAgent:
    agent_id: str
    unit: str
    name: str
    checkpoint: str


@dataclass(frozen=True, slots=True)
class DemoRoute:
    route_id: str
    unit: str
    team: str
    checkpoints: tuple[str, ...]
    agents: tuple[str, ...]  # the agent of each checkpoint, in route order
    member_tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class District:
    agents: tuple[DemoAgent, ...]
    routes: tuple[DemoRoute, ...]
    window_start: dt.datetime  # aware, in TIMEZONE, on a minute boundary; the late route's opens a slot earlier
    window_minutes: int
    unknown_tag: str = UNKNOWN_TAG
    grids: tuple[tuple[str, str, str], ...] = field(default=())  # (id, community, name)


def grid_ids() -> tuple[tuple[str, str, str], ...]:
    grids = []
    for community, _, cname in COMMUNITIES:
        for g in (1, 2):
            grids.append((f"{community}-g{g}", community, f"{cname.split()[0]} 第{g}网格 Grid {g}"))
    return tuple(grids)


def member_tag(community_index: int, member: int) -> str:
    """Distinct EM4100 ids, 10 upper-case hex digits."""
    return f"{0x67 + community_index:02X}00{community_index:02X}{member:02X}{0x51 + member:02X}"


def build(n_agents: int, *, now: dt.datetime, minutes: float) -> District:
    """The district for ``n_agents`` agents; ``now`` is when it is up (the script's start).

    The windows open at the minute boundary at or before the first tap when at
    least ``MIN_WALK_S`` of that minute are left, else at the next one, so the
    first rounds close within 90 s; the late route's window opens a slot
    earlier, and its first round, walked in its tolerance, closes with them.
    The plan is ``effective`` from the late window's date, so slots begun
    before the plan's import count.
    """
    if n_agents < 4:
        raise ValueError(f"--agents: {n_agents} is too few for a district (at least 4)")
    tz = ZoneInfo(TIMEZONE)
    first_tap = now.astimezone(tz) + dt.timedelta(seconds=WALK_LEAD_S)
    start = first_tap.replace(second=0, microsecond=0)
    if (start + dt.timedelta(minutes=SLOT_MIN) - first_tap).total_seconds() < MIN_WALK_S:
        start += dt.timedelta(minutes=SLOT_MIN)
    window_minutes = max(2, int(minutes) + 2) if minutes else 60
    grids = grid_ids()
    agents = []
    for i in range(n_agents):
        grid_id, community, gname = grids[(i % len(COMMUNITIES)) * 2 + (i // len(COMMUNITIES)) % 2]
        site = SITES[(i // len(grids)) % len(SITES)]
        agent_id = f"{community}-{site}-{i + 1}"
        agents.append(DemoAgent(agent_id, grid_id, f"{gname} {site} {i + 1}", f"cp-{agent_id}"))
    routes = []
    for ci, (community, _, _) in enumerate(COMMUNITIES):
        mine = [a for a in agents if a.unit.startswith(community + "-")]
        if not mine:
            continue
        routes.append(
            DemoRoute(
                route_id=f"{community}-night",
                unit=community,
                team=f"{community}-volunteers",
                checkpoints=tuple(a.checkpoint for a in mine),
                agents=tuple(a.agent_id for a in mine),
                member_tags=(member_tag(ci, 1), member_tag(ci, 2)),
            )
        )
    return District(tuple(agents), tuple(routes), start, window_minutes, grids=grids)


def plan_toml(d: District) -> str:
    """The patrol plan in docs/reference.md's TOML form."""
    q = _quote
    effective = (d.window_start - dt.timedelta(minutes=SLOT_MIN)).date().isoformat()
    lines = [f"timezone = {q(TIMEZONE)}", f"effective = {q(effective)}", "", "unit = ["]
    lines.append(f'  {{ id = "fengze", tier = "district", name = {q("丰泽区 Fengze District")} }},')
    for sid, sname in STREETS:
        lines.append(f'  {{ id = {q(sid)}, tier = "street", parent = "fengze", name = {q(sname)} }},')
    for cid, street, cname in COMMUNITIES:
        lines.append(f'  {{ id = {q(cid)}, tier = "community", parent = {q(street)}, name = {q(cname)} }},')
    for gid, community, gname in d.grids:
        lines.append(f'  {{ id = {q(gid)}, tier = "grid", parent = {q(community)}, name = {q(gname)} }},')
    lines += ["]", "", "agent = ["]
    for a in d.agents:
        lines.append(f"  {{ id = {q(a.agent_id)}, unit = {q(a.unit)}, name = {q(a.name)} }},")
    lines += ["]", "", "checkpoint = ["]
    for a in d.agents:
        lines.append(f'  {{ id = {q(a.checkpoint)}, unit = {q(a.unit)}, agent = {q(a.agent_id)}, reader = "gate-reader" }},')
    lines.append("]")
    end = d.window_start + dt.timedelta(minutes=d.window_minutes)
    for ri, r in enumerate(d.routes):
        late = behaviour(ri) == "late"
        tolerance = LATE_TOLERANCE_MIN if late else 0
        opens = d.window_start - dt.timedelta(minutes=SLOT_MIN) if late else d.window_start
        members = ", ".join(f"{{ name = {q(f'Volunteer {i + 1}')}, tag = {q(tag)} }}" for i, tag in enumerate(r.member_tags))
        lines += ["", "[[team]]", f"id = {q(r.team)}", f"unit = {q(r.unit)}", f"members = [ {members} ]"]
        lines += [
            "",
            "[[route]]",
            f"id = {q(r.route_id)}",
            f"unit = {q(r.unit)}",
            f"teams = [{q(r.team)}]",
            'order = "strict"',
            "checkpoints = [" + ", ".join(q(c) for c in r.checkpoints) + "]",
            f'window = {{ start = "{opens:%H:%M}", end = "{end:%H:%M}", every_min = {SLOT_MIN}, tolerance_min = {tolerance} }}',
        ]
    return "\n".join(lines) + "\n"


def agent_toml(a: DemoAgent, *, data_dir: str, mqtt_port: int, sim_socket: str, reader_port: str) -> str:
    q = _quote
    return f"""agent_id = {q(a.agent_id)}
data_dir = {q(data_dir)}

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive_s = 5
resend_s = 5

[gpio]
pin_factory = "mock"
sim_socket = {q(sim_socket)}
status_led = "status-led"

[[zone]]
name = "perimeter"
pin = {ZONE_PIN}
contact = "nc"
debounce_ms = 50
siren = "siren"

[[button]]
name = "office-panic"
pin = {BUTTON_PIN}
hold_ms = {BUTTON_HOLD_MS}
siren = "siren"
indicator = "panic-led"

[[output]]
name = "siren"
pin = {SIREN_PIN}
max_on_s = 30

[[output]]
name = "panic-led"
pin = {INDICATOR_PIN}

[[output]]
name = "status-led"
pin = {STATUS_PIN}

[telemetry]
interval_s = 5

[[reader]]
name = "gate-reader"
port = {q(reader_port)}
protocol = "rdm6300"
"""


def central_toml(*, data_dir: str, mqtt_port: int, web_listen: str) -> str:
    q = _quote
    return f"""timezone = {q(TIMEZONE)}
data_dir = {q(data_dir)}

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[store]
url = {q(f"sqlite://{data_dir}/central.db")}

[escalation]
grid_s = 60
community_s = 120
street_s = 180

[alarms]
offline_grace_s = 20

[web]
listen = {q(web_listen)}
"""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- what happens during the run ----------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Action:
    """One step of the demo script, ``at`` seconds after the demo's start.

    ``what``: ``tap`` (agent, tag), ``drive`` (agent, pin, level),
    ``cut``/``heal`` (the agent's network link), ``kill``/``restart`` (its power).
    """

    at: float
    what: str
    agent: str
    arg: str = ""
    level: str = ""
    note: str = ""


def behaviour(route_index: int) -> str:
    """What the team of the route with this index does: on time, late, skipping, or missing a round."""
    return BEHAVIOURS[route_index % len(BEHAVIOURS)]


def timeline(d: District, *, started: dt.datetime, minutes: float) -> list[Action]:
    """The script: volunteers walking, a breach, a panic press, a power cut.

    ``started`` is when the district is up: no tap comes before ``WALK_LEAD_S``
    after it, whatever the slot's start.
    """
    actions: list[Action] = []
    t0 = started.timestamp()
    horizon = (minutes or 60) * 60
    slot_s = SLOT_MIN * 60
    earliest = WALK_LEAD_S
    for ri, route in enumerate(d.routes):
        does = behaviour(ri)
        n = len(route.checkpoints)
        if does == "late":
            # Its window opens a slot earlier: its first round is walked whole in
            # that round's tolerance (so it is late, and the next one complete).
            first = max(d.window_start.timestamp() - t0, earliest) + 1
            gap = min(5.0, (slot_s - 25) / n)
            for j, cp_agent in enumerate(route.agents):
                actions.append(Action(first + j * gap, "tap", cp_agent, route.member_tags[0],
                                      note=f"{route.route_id} slot 0 (late)"))
        slot = 0
        while True:
            slot_start = d.window_start.timestamp() + slot * slot_s - t0
            slot_end = slot_start + slot_s
            if slot_start > horizon or slot >= d.window_minutes // SLOT_MIN:
                break
            base = max(slot_start, earliest) + 1
            tag = route.member_tags[slot % len(route.member_tags)]
            if does == "missed" and slot == 0:
                # Nobody walks this round; a card of no team is tapped, which counts for nothing.
                actions.append(Action(base + 5, "tap", route.agents[0], d.unknown_tag, note="a card of no team"))
                slot += 1
                continue
            if does == "late":
                # Every walk starts after the last tap of the walk before (which falls
                # in this slot at +20), and ends 20 s into the tolerance: late again.
                base = max(base, slot_start + LATE_RESUME_S)
                gap = min(12.0, (slot_end - base - 5) / max(1, n - 1))
                label = f"{route.route_id} slot {slot + 1} (late)"
                for j, cp_agent in enumerate(route.agents):
                    at = slot_end + 20 if j == n - 1 else base + j * gap
                    actions.append(Action(at, "tap", cp_agent, tag, note=label))
                slot += 1
                continue
            gap = min(12.0, (slot_end - base - 5) / n)
            for j, cp_agent in enumerate(route.agents):
                if does == "skip" and j == 1:  # the second checkpoint is never walked
                    continue
                actions.append(Action(base + j * gap, "tap", cp_agent, tag, note=f"{route.route_id} slot {slot} ({does})"))
            slot += 1
    breach, panic, cut = incident_agents(d)
    actions += [
        Action(25, "drive", breach, str(ZONE_PIN), "high", "perimeter breach"),
        Action(40, "drive", breach, str(ZONE_PIN), "low", "perimeter restored"),
        Action(50, "drive", panic, str(BUTTON_PIN), "low", "panic button pressed"),
        Action(51.5, "drive", panic, str(BUTTON_PIN), "high", "panic button released"),
        Action(60, "cut", cut, note="network cut"),
        Action(66, "drive", cut, str(ZONE_PIN), "high", "breach while cut off"),
        Action(72, "drive", cut, str(ZONE_PIN), "low", "restored while cut off"),
        Action(78, "kill", cut, note="power cut"),
        Action(84, "restart", cut, note="power back"),
        Action(92, "heal", cut, note="network back: backlog replays"),
    ]
    return sorted(x for x in actions if x.at <= horizon)


def incident_agents(d: District) -> tuple[str, str, str]:
    """The agents of the breach, the panic press and the network and power cut.

    A card tapped while its agent has no power is lost (nothing reads the
    reader), so the cut agent is the second checkpoint of the first
    community's route, the one its team never walks (from 5 agents on).
    """
    a = d.agents
    cut = a[4] if len(a) > 4 else a[3]
    return a[1].agent_id, a[2].agent_id, cut.agent_id
