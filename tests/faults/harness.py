"""The fault suite's tools: a site with knobs, input drivers, and the delivery check.

Every scenario ends with :func:`settle`: it waits until each agent's outbox has
drained and central's store holds exactly eseq 1..last_eseq of that agent, then
returns the numbers the scenario reports (made, stored, duplicates, lost,
recovery time). "Made" is what the agent numbered (its outbox's
``meta.last_eseq``); the zone drivers add an independent count of what a test
physically did, so an event numbered twice or never would show too.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

from agent.inputs.readers.sim import SimulatedRdm6300
from tests.e2e.site import AgentProc, Site, agent_toml, drive
from tests.security.tlsbroker import Pki, with_tls
from tests.support import REPO, run_cli, wait_until

ZONE_PIN = 17
# The agents' zones debounce for 20 ms (tests/e2e/site.py): a level the
# toggler sets is held at least this long after the agent answered.
MIN_GAP_S = 0.035
ARTIFACTS = REPO / "artifacts" / "faults"


# -- the site ------------------------------------------------------------------


class FaultSite(Site):
    """tests/e2e's Site, plus an agent's broker port (a proxy's) and environment of its own.

    With ``tls`` set (see :meth:`use_tls`), central and every agent added
    after it connect with their own certificate from that PKI. With
    ``pg_url`` set (see :meth:`use_postgresql`), central's store is that
    PostgreSQL database instead of the SQLite file; :attr:`store` names
    whichever it is, for the readers below.
    """

    envs: dict[str, dict[str, str]]
    tls: Pki | None
    pg_url: str | None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.envs = {}
        self.tls = None
        self.pg_url = None

    def use_tls(self, pki_: Pki) -> None:
        self.tls = pki_
        with_tls(self.central_conf, pki_.identity("central"), pki_.ca)

    def use_postgresql(self, url: str) -> None:
        """Central's ``[store] url`` becomes ``url`` (an empty database: central migrates it on start)."""
        text = self.central_conf.read_text()
        sqlite_url = f'url = "sqlite://{self.root / "central" / "central.db"}"'
        assert sqlite_url in text, text
        self.central_conf.write_text(text.replace(sqlite_url, f'url = "{url}"'))
        self.pg_url = url

    def start_central(self) -> None:
        if self.pg_url is None:
            super().start_central()
            return
        self.central_proc = self.processes.gridpatrol("central", "--config", str(self.central_conf),
                                                      log=self.root / "central.log")
        # Ready as the SQLite site is once its file exists: the schema is there to read.
        wait_until(lambda: _pg_migrated(self.pg_url or "") or self._died(self.central_proc), timeout=15,
                   message="central store")
        assert self.central_proc.poll() is None, self.log("central")

    def add_agent(self, agent_id: str, *, port: int | None = None, env: dict[str, str] | None = None,
                  **kw: Any) -> AgentProc:
        d = self.root / agent_id
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "agent.toml"
        conf.write_text(agent_toml(agent_id, d, port or self.broker.port, **kw))
        if self.tls is not None:
            with_tls(conf, self.tls.identity(agent_id), self.tls.ca)
        a = AgentProc(agent_id, d, conf)
        self.agents[agent_id] = a
        self.envs[agent_id] = dict(env or {})
        return a

    def start_agent(self, agent_id: str, *, launcher: str = "gridpatrol.cli") -> AgentProc:
        """Start the agent's process (``launcher``: the module run with ``python -m``)."""
        a = self.agents[agent_id]
        a.sim.unlink(missing_ok=True)
        a.proc = self.processes.start([sys.executable, "-m", launcher, "agent", "--config", str(a.config)],
                                      log=self.root / f"{agent_id}.log", env=self.envs.get(agent_id), cwd=REPO)
        wait_until(lambda: a.sim.exists() or self._died(a.proc), timeout=20, message=f"{agent_id} sim socket")
        assert a.proc.poll() is None, self.log(agent_id)
        return a

    @property
    def store_path(self) -> Path:
        """The SQLite file (scenarios that read or poison it directly run on SQLite only)."""
        assert self.pg_url is None, "this site's store is PostgreSQL: read it through site.store"
        return self.root / "central" / "central.db"

    @property
    def store(self) -> Path | str:
        """Central's store for the readers below: the SQLite file, or the PostgreSQL URL."""
        return self.store_path if self.pg_url is None else self.pg_url


# -- reading both ends -----------------------------------------------------------


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


@contextmanager
def reading(store: Path | str) -> Iterator[Any]:
    """A connection to central's store that takes ``?`` placeholders, whichever engine it is on.

    Not through central's Store: the fault suite reads the tables as they
    are, without central's code in between (a SQLite file read-only, a
    PostgreSQL database through a session of its own, read-only too).
    """
    if isinstance(store, Path):
        with closing(_ro(store)) as db:
            yield db
        return
    import psycopg

    from central.store.postgres import Connection

    raw = psycopg.connect(store, autocommit=True, connect_timeout=10, options="-c default_transaction_read_only=on")
    with closing(Connection(raw)) as db:
        yield db


def _exists(store: Path | str) -> bool:
    """The store has tables to read (a PostgreSQL one has them once the site's central started)."""
    return isinstance(store, str) or store.exists()


def _pg_migrated(url: str) -> bool:
    """Central has made its tables in the PostgreSQL database at ``url``."""
    with reading(url) as db:
        return db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0] is True


def outbox_state(agent_dir: Path) -> tuple[int, int]:
    """(last_eseq, rows still in the outbox) of a running or stopped agent."""
    with closing(_ro(agent_dir / "outbox.db")) as db:
        last = int(db.execute("SELECT value FROM meta WHERE key = 'last_eseq'").fetchone()[0])
        rows = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    return last, rows


def outbox_integrity(agent_dir: Path) -> str:
    """PRAGMA integrity_check of a dead agent's outbox, opened as its next start would."""
    with closing(sqlite3.connect(agent_dir / "outbox.db", timeout=10)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def stored_eseqs(store: Path | str, agent: str) -> list[int]:
    if not _exists(store):
        return []
    with reading(store) as db:
        return [r[0] for r in db.execute("SELECT eseq FROM events WHERE agent = ? ORDER BY eseq", (agent,))]


def gone_eseqs(store: Path | str, agent: str) -> set[int]:
    """Eseqs the agent told central it no longer holds (its answer to ``replay``: ``gone``), as central recorded them.

    An outbox that sheds an event (a restore on a full disk) still numbers it
    and records it gone, so central can tell a known loss from a gap; central
    keeps those ranges in its ``lost`` table with the reason ``gone``
    (docs/delivery.md). A store without that table knows no gone ranges.
    """
    if not _exists(store):
        return set()
    with reading(store) as db:
        try:
            ranges = db.execute("SELECT first, last FROM lost WHERE agent = ? AND reason = 'gone'", (agent,)).fetchall()
        except sqlite3.OperationalError:  # a SQLite store of the first round (PostgreSQL's always have the table)
            return set()
    return {e for first, last in ranges for e in range(first, last + 1)}


def stored_rows(store: Path | str, agent: str) -> list[dict[str, Any]]:
    with reading(store) as db:
        cur = db.execute("SELECT * FROM events WHERE agent = ? ORDER BY eseq", (agent,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def counters(store: Path | str) -> dict[str, int]:
    with reading(store) as db:
        return {name: int(value) for name, value in db.execute("SELECT name, value FROM counters")}


def store_integrity(store: Path | str) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the file ("ok"); on PostgreSQL, whose crash safety is the
    server's, "ok" once every table of the store can be read through."""
    if isinstance(store, str):
        with reading(store) as db:
            tables = [r[0] for r in db.execute("SELECT tablename FROM pg_catalog.pg_tables"
                                                " WHERE schemaname = current_schema()")]
            for table in tables:
                db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
        return "ok" if "events" in tables else f"no events table among {tables}"
    with closing(sqlite3.connect(store, timeout=10)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


# -- driving inputs ----------------------------------------------------------------


class Toggler:
    """Opens and closes an agent's zone loop every ``interval_s`` through its sim socket.

    Counts the transitions the agent confirmed (``ok``). Around a restart of
    the agent, :meth:`pause` it first and :meth:`resume` it after: the new
    process boots with its loop closed, so the next transition is an opening.
    """

    def __init__(self, agent: AgentProc, *, interval_s: float = 0.05, pin: int = ZONE_PIN) -> None:
        self.agent = agent
        self.interval_s = interval_s
        self.pin = pin
        self.transitions = 0
        self.failures = 0
        self.lives: list[int] = []  # transitions per life of the agent, closed by each pause
        self._life_start = 0
        self._level = "high"  # an nc loop at rest reads low: the first transition opens it
        self._turn = threading.Lock()  # held while a drive is on its way
        self._paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"toggler {agent.agent_id}", daemon=True)

    def start(self) -> Toggler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "toggler did not stop"

    @property
    def this_life(self) -> int:
        """Transitions since the last restart."""
        return self.transitions - self._life_start

    def pause(self) -> None:
        """Returns once no drive is on its way and none will start until :meth:`resume`."""
        with self._turn:
            self._paused = True
            self.lives.append(self.transitions - self._life_start)
            self._life_start = self.transitions

    def resume(self, *, restarted: bool) -> None:
        with self._turn:
            if restarted:
                self._level = "high"
            self._paused = False

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._turn:
                if not self._paused:
                    self._drive_once()
            # Never two drives closer than MIN_GAP_S, even after a stall: a
            # shorter pulse is one the zone's debounce rightly ignores.
            next_at = max(next_at + self.interval_s, time.monotonic() + MIN_GAP_S)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _drive_once(self) -> None:
        try:
            answer = drive(self.agent.sim, self.pin, self._level, timeout=5.0)
        except OSError:
            answer = "unreachable"
        if answer == "ok":
            self.transitions += 1
            self._level = "low" if self._level == "high" else "high"
        else:
            self.failures += 1


class Tapper:
    """Presents a new card to the reader every ``every_s``; counts the presentations."""

    def __init__(self, reader: SimulatedRdm6300, every_s: float = 0.4, *, prefix: str = "D15C", hold_s: float = 0.25) -> None:
        self.reader = reader
        self.hold_s = hold_s  # how long each card lies on the reader (the RDM6300 repeats its frame every 0.1 s)
        self.prefix = prefix  # the tags' first hex digits: one per reader, so each card is one reader's
        self.every_s = every_s
        self.tags: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tapper", daemon=True)
        self._turn = threading.Lock()
        self._paused = False

    def start(self) -> Tapper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def pause(self) -> None:
        """Returns with no card on the reader, and none presented until :meth:`resume`."""
        with self._turn:
            self._paused = True
        wait_until(lambda: self.reader._tag is None, timeout=5, message="the last card lifted")

    def resume(self) -> None:
        with self._turn:
            self._paused = False

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            with self._turn:
                if self._paused:
                    continue
                n += 1
                tag = f"{self.prefix}{n:06X}"
                self.reader.tap(tag, hold_s=self.hold_s)
                self.tags.append(tag)


# -- the final check ------------------------------------------------------------------


@dataclass
class AgentTally:
    agent: str
    made: int  # eseqs the agent numbered (outbox meta.last_eseq)
    stored: int  # distinct eseqs of it in central's store
    duplicates: int  # rows beyond one per eseq (the primary key makes this 0; checked all the same)
    lost: int  # numbered eseqs central does not hold, and was not told are gone
    beyond: int  # eseqs central holds that the agent never numbered
    outbox_rows: int
    gone: int = 0  # numbered eseqs the agent shed and said so (its replay answer's ``gone``): known, not lost


def tally(site: FaultSite, agent_id: str) -> AgentTally:
    a = site.agents[agent_id]
    last, rows = outbox_state(a.directory)
    seqs = stored_eseqs(site.store, agent_id)
    distinct = set(seqs)
    gone = gone_eseqs(site.store, agent_id) - distinct
    return AgentTally(
        agent=agent_id, made=last, stored=len(distinct), duplicates=len(seqs) - len(distinct),
        lost=len(set(range(1, last + 1)) - distinct - gone), beyond=len([e for e in distinct if e > last]),
        outbox_rows=rows, gone=len(gone),
    )


def settled(site: FaultSite, agent_ids: list[str]) -> list[AgentTally] | None:
    """Every agent drained and stored 1..last once; read twice so nothing moved in between."""
    tallies = []
    for agent_id in agent_ids:
        first = outbox_state(site.agents[agent_id].directory)
        t = tally(site, agent_id)
        if outbox_state(site.agents[agent_id].directory) != first:
            return None
        if t.outbox_rows or t.lost or t.beyond or t.duplicates or t.made == 0:
            return None
        tallies.append(t)
    return tallies


@dataclass
class Numbers:
    """What one scenario reports (printed, and written to artifacts/faults/)."""

    scenario: str
    made: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    gone: int = 0
    recovery_s: float | None = None
    wall_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, tallies: list[AgentTally]) -> None:
        for t in tallies:
            self.made += t.made
            self.stored += t.stored
            self.duplicates += t.duplicates
            self.lost += t.lost
            self.gone += t.gone
        self.details.setdefault("per_agent", {}).update({t.agent: {"made": t.made, "stored": t.stored} for t in tallies})

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "made": self.made, "stored": self.stored, "duplicates": self.duplicates,
            "lost": self.lost, "gone": self.gone, "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "wall_s": round(self.wall_s, 1), "details": self.details,
        }


def settle(site: FaultSite, agent_ids: list[str], numbers: Numbers, *, since: float, timeout: float = 60,
           togglers: list[Toggler] | None = None) -> list[AgentTally]:
    """Wait until everything made is stored once and every outbox drained; record the recovery time.

    ``since`` is the monotonic time the fault ended (the last heal, restart, ...).
    On timeout the assertion names every agent's tally, so a failure says what
    was missing.
    """
    found: list[list[AgentTally]] = []

    def check() -> bool:
        t = settled(site, agent_ids)
        if t is None:
            return False
        # The last transitions are confirmed by the agent's debounce after the
        # toggler's last drive: wait for them too, then check them in full.
        for toggler in togglers or ():
            boots = list(zone_events_by_boot(site, toggler.agent.agent_id).values())
            if not boots or len(boots[-1]) < toggler.this_life:
                return False
        found.append(t)
        return True

    try:
        wait_until(check, timeout=timeout, interval=0.1, message="every event stored once, outboxes drained")
    except AssertionError:
        zones = [(t.agent.agent_id, t.transitions, t.failures, [len(k) for k in zone_events_by_boot(site, t.agent.agent_id).values()])
                 for t in togglers or ()]
        raise AssertionError(f"not settled after {timeout} s: {[tally(site, a) for a in agent_ids]}; "
                             f"togglers (agent, transitions, failures, zone events per boot): {zones}") from None
    numbers.recovery_s = time.monotonic() - since
    numbers.add(found[-1])
    c = counters(site.store)
    numbers.details["central_counters"] = {k: v for k, v in sorted(c.items()) if v}
    assert c.get("events_suspicious", 0) == 0, "an eseq came twice with different content: numbering was reused"
    # Central never gives a gap up: all it counts lost is what agents said is gone (and quarantined messages).
    assert c.get("events_lost", 0) == sum(t.gone for t in found[-1]), (
        f"central counted {c.get('events_lost', 0)} events lost, the agents said {sum(t.gone for t in found[-1])} are gone")
    return found[-1]


def zone_events_by_boot(site: FaultSite, agent_id: str, source: str = "north-fence") -> dict[str, list[str]]:
    """The zone's alarm/restore events at central, per agent boot, in eseq order."""
    out: dict[str, list[str]] = {}
    for row in stored_rows(site.store, agent_id):
        if row["source"] == source and row["kind"] in ("alarm", "restore"):
            out.setdefault(row["boot_id"], []).append(row["kind"])
    return out


def assert_one_event_per_transition(site: FaultSite, togglers: list[Toggler]) -> None:
    """Each toggled agent kept one boot, and its zone's events at central alternate and match, one for one, the
    transitions driven: none lost, none doubled."""
    for toggler in togglers:
        agent = toggler.agent.agent_id
        boots = zone_events_by_boot(site, agent)
        assert len(boots) == 1, f"{agent} restarted: {site.log(agent)}"
        kinds = next(iter(boots.values()))
        assert_alternating(kinds)
        assert len(kinds) == toggler.transitions, (agent, len(kinds), toggler.transitions)


def assert_alternating(kinds: list[str]) -> None:
    """A loop that boots closed can only go alarm, restore, alarm, ...: a gap or a double breaks that."""
    expected = ["alarm" if i % 2 == 0 else "restore" for i in range(len(kinds))]
    if kinds != expected:
        first = next(i for i, (k, e) in enumerate(zip(kinds, expected)) if k != e)
        raise AssertionError(f"zone events do not alternate from index {first}: {kinds[max(0, first - 3):first + 3]}")


# -- alarms: read like a user, through the command line -------------------------------

ALARM_EVENT_KINDS = ("alarm", "tamper", "panic")  # the event kinds that raise an alarm (docs/alarms.md)
ALARMS_SETTLE_S = 10.0  # how long an alarm may trail its stored event before that counts as lost


def cli_json(site: FaultSite, *args: str) -> Any:
    """``gridpatrol ARGS --config central.toml --json``: the one JSON document it prints."""
    r = run_cli(*args, "--config", str(site.central_conf), "--json")
    assert r.returncode == 0, f"gridpatrol {' '.join(args)} --json exited {r.returncode}: {r.stderr.strip()}"
    return json.loads(r.stdout)


AlarmKey = tuple[str, str, str]  # (agent, source, kind)


def alarm_mismatches(events: list[dict[str, Any]], alarms: list[dict[str, Any]], agent_ids: list[str], *,
                     ignore: Collection[tuple[str, str]] = ()) -> list[str]:
    """What breaks "every stored alarm, tamper and panic event has exactly one alarm", one line each; [] if none.

    An input's events map to its alarm rows by (agent, source, kind). Until
    staff acknowledge, the input's alarm stays the one alarm: a second press
    of a panic button while its alarm is open, or a loop tripping again, is a
    retrip of it, not a new alarm (docs/alarms.md). So for each key:

    - stored events and no alarm: the alarm was lost (the failure of issue 11);
    - an alarm and no stored event: raised from nothing;
    - more alarms than events: one event raised two alarms;
    - a newer alarm for the key while an older one was never acknowledged:
      a retrip became a second alarm (or an alarm was raised twice);
    - nobody acknowledged anything: exactly one alarm per key.

    ``ignore``: (agent, source) pairs left out (a scenario's own injected fault).
    """
    wanted = set(agent_ids)
    by_key: dict[AlarmKey, list[int]] = {}
    for e in events:
        if e["agent"] in wanted and e["kind"] in ALARM_EVENT_KINDS:
            by_key.setdefault((e["agent"], e["source"], e["kind"]), []).append(e["eseq"])
    rows: dict[AlarmKey, list[dict[str, Any]]] = {}
    for a in alarms:
        if a["agent"] in wanted and a["kind"] in ALARM_EVENT_KINDS:
            rows.setdefault((a["agent"], a["source"], a["kind"]), []).append(a)
    problems = []
    for key in sorted(set(by_key) | set(rows)):
        if key[:2] in ignore:
            continue
        seqs, found = by_key.get(key, []), sorted(rows.get(key, []), key=lambda a: a["id"])
        name = "/".join(key)
        if not found:
            problems.append(f"{name}: {len(seqs)} stored event(s) (eseqs {seqs[:10]}) and no alarm")
        elif not seqs:
            problems.append(f"{name}: alarm(s) {[a['id'] for a in found]} and no stored event")
        elif len(found) > len(seqs):
            problems.append(f"{name}: {len(found)} alarms for {len(seqs)} stored event(s)")
        else:
            unacked = [a["id"] for a in found[:-1] if a["acked_ts"] is None]
            if unacked:
                problems.append(f"{name}: alarm(s) {unacked} were never acknowledged, yet a newer one was raised "
                                f"(of {[a['id'] for a in found]}): a retrip became a new alarm")
    return problems


def assert_one_alarm_per_alarm_event(site: FaultSite, agent_ids: list[str], *, timeout: float = ALARMS_SETTLE_S,
                                     ignore: Collection[tuple[str, str]] = ()) -> dict[str, int]:
    """Every stored alarm, tamper and panic event of these agents has its alarm (see :func:`alarm_mismatches`).

    Read through ``gridpatrol events --json`` and ``gridpatrol alarms --all
    --json``, as staff would. Waits up to ``timeout`` for an alarm to follow
    its event (central may still be working through the last batch); once the
    alarm is written with its event, it holds at the first look. Returns the
    counts for the scenario's numbers.
    """
    seen: list[tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]] = []

    def check() -> bool:
        events = cli_json(site, "events")
        alarms = cli_json(site, "alarms", "--all")
        seen[:] = [(events, alarms, alarm_mismatches(events, alarms, agent_ids, ignore=ignore))]
        return not seen[0][2]

    try:
        wait_until(check, timeout=timeout, interval=0.5, message="every stored alarm event with its alarm")
    except AssertionError:
        raise AssertionError(f"alarms do not match the stored alarm events after {timeout} s: "
                             + "; ".join(seen[0][2])) from None
    events, alarms, _ = seen[0]
    wanted = set(agent_ids)
    return {
        "alarm_events_stored": sum(1 for e in events if e["agent"] in wanted and e["kind"] in ALARM_EVENT_KINDS),
        "alarms_of_them": sum(1 for a in alarms if a["agent"] in wanted and a["kind"] in ALARM_EVENT_KINDS),
    }


def write_numbers(numbers: Numbers) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{numbers.scenario}.json"
    path.write_text(json.dumps(numbers.as_dict(), indent=2, sort_keys=True) + "\n")
    return path


def seeded_rng() -> tuple[random.Random, int]:
    """A fresh random generator and its seed (recorded in the numbers, to replay a run)."""
    seed = random.SystemRandom().randrange(2**32)
    return random.Random(seed), seed
