"""Live completion: rounds of the nights in progress, updated scan by scan.

The tracker holds the rounds of today and yesterday (in the plan's zone: a
night that began yesterday is still being walked). An incoming scan is routed
through (agent, reader) -> checkpoint -> routes -> the one or two rounds whose
``[start, close)`` holds its time; only those rounds are judged again and only
their units' counts move (up the tree, four tiers at most). A round turns from
``open`` to its final status by the clock (:meth:`tick`), not by a scan.

What changes is published as retained JSON on ``completion/<unit>`` for the
*live date* (the latest tracked date with a round already begun) and as a
``completion`` notice on the bus. Scans older than yesterday's rounds are left
to the report, which reads the store.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import json
import logging
import secrets
import threading
import time
from typing import Any, Callable, Collection, Iterable, Mapping, Protocol

from central.bus import Bus
from central.completion import Round, RoundStatus, RoundTally, Scan, Slot
from central.plan.model import Route, Unit
from central.plan.registry import PlanHistory, PlanVersion
from central.report import CompletionReport, Counts, UnitRow, planned_slots, rollup, scan_range, scans_between, tree_order, unit_tree
from central.verdict import Verdict, verdict
from wire import topics
from wire.messages import Command, CommandName

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.5  # how often the ticker looks for a new plan version and closing rounds
TRACKED_DAYS = 2  # today and yesterday
# A round closed this long ago keeps only its verdict, not its scans: memory follows the open rounds,
# not the day's scans. A scan that still falls in such a round (a backlog replayed after an outage)
# has the day read again from the store, at most every REBUILD_EVERY_S.
COMPACT_AFTER_MS = 10 * 60 * 1000
REBUILD_EVERY_S = 5.0
# A verdict later than this reaches nobody at the checkpoint (a replayed backlog, a late batch).
FEEDBACK_MAX_AGE_MS = 10_000


class HistorySource(Protocol):
    def history(self) -> PlanHistory: ...


Publish = Callable[..., Any]  # publish(topic, payload_bytes, retain=True)
SendCommand = Callable[[str, Command], bool]  # Ingest.send_command
FeedbackReaders = Callable[[str], Collection[str]]  # agent -> its readers with a feedback output
FEEDBACK_READERS_TTL_S = 60.0  # a birth's list is read again after this, or at the agent's next presence change
LoadScans = Callable[[int, int], Iterable[Scan]]


def store_feedback_readers(store: Any) -> FeedbackReaders:
    """The readers an agent's last birth lists with a ``feedback`` output (older agents: none)."""
    def readers(agent: str) -> frozenset[str]:
        row = store.get_agent(agent)
        birth = row.birth if row is not None else None
        inventory = birth.get("inventory") if isinstance(birth, Mapping) else None
        items = inventory.get("readers") if isinstance(inventory, Mapping) else None
        if not isinstance(items, (list, tuple)):
            return frozenset()
        return frozenset(r["name"] for r in items
                         if isinstance(r, Mapping) and isinstance(r.get("name"), str) and r.get("feedback"))
    return readers


def store_scans(store: Any) -> LoadScans:
    """Scans of central's store with ``ts_est`` in ``[lo, hi)``."""
    return lambda lo_ms, hi_ms: scans_between(store, lo_ms, hi_ms)


class _Live:
    """One round being tracked; mutable, owned under the tracker's lock.

    ``status`` is the last status counted in the unit tallies; the round's
    scans live in a :class:`RoundTally`, so a scan costs the same whether the
    round holds ten scans or a hundred thousand. Once the round has been
    closed for COMPACT_AFTER_MS it is *compacted*: ``tally`` goes (``None``),
    the judged round stays in ``final``.
    """

    __slots__ = ("version", "route", "slot", "tally", "status", "judged_ms", "seen", "final")

    def __init__(self, version: PlanVersion, route: Route, slot: Slot) -> None:
        self.version = version
        self.route = route
        self.slot = slot
        self.tally: RoundTally | None = RoundTally(route, slot, authorised=version.plan.route_tags[route.id],
                                                   plan_version=version.version)
        self.status: RoundStatus | None = None
        self.judged_ms = 0
        self.seen: set[tuple[str, int]] = set()  # (agent, eseq) counted in this round
        self.final: Round | None = None  # the compacted round's verdict

    def judge(self, now_ms: int) -> RoundStatus:
        if self.tally is None:  # compacted: only a scan could change it, and a scan rebuilds the day
            assert self.status is not None
            return self.status
        self.judged_ms = now_ms
        self.status = self.tally.status(now_ms)
        return self.status

    def compact(self, now_ms: int) -> None:
        """Keep the verdict, let the scans go (a closed round's)."""
        if self.tally is None:
            return
        self.judge(now_ms)
        self.final = self.tally.round(now_ms)  # closed: what it says now it says for good, but for a late scan
        self.tally = None
        self.seen = set()

    @property
    def round(self) -> Round | None:
        """The round as last judged (flags built on demand)."""
        if self.tally is None:
            return self.final
        return None if self.status is None else self.tally.round(self.judged_ms)


class _Day:
    """The rounds of one date and their counts per unit."""

    def __init__(self, day: dt.date, history: PlanHistory, planned: list[tuple[PlanVersion, Route, Slot]]) -> None:
        self.day = day
        self.rounds = [_Live(v, r, s) for v, r, s in planned]
        self.versions = {v.version: v for v, _, _ in planned}
        # (version, route) -> its rounds by start, to find the one or two a scan falls in
        self.by_route: dict[tuple[int, str], list[_Live]] = {}
        for live in self.rounds:
            self.by_route.setdefault((live.version.version, live.route.id), []).append(live)
        self.starts = {k: [lv.slot.start_ms for lv in v] for k, v in self.by_route.items()}
        self.span = {k: max(lv.slot.close_ms - lv.slot.start_ms for lv in v) for k, v in self.by_route.items()}
        self.by_unit: dict[str, list[_Live]] = {}
        for live in self.rounds:
            self.by_unit.setdefault(live.slot.unit, []).append(live)
        self.units: dict[str, Unit] = unit_tree(history, day, self.versions.values())
        self.own: dict[str, Counts] = {}
        self.total: dict[str, Counts] = {}  # rollups, kept up to date along the lineage
        self.stale = False  # a scan fell in a compacted round: the day is read again from the store
        self.first_start = min((lv.slot.start_ms for lv in self.rounds), default=None)

    def sum_up(self) -> None:
        self.total = {row.unit: row.rollup for row in rollup(self.units, self.own)}

    def row(self, unit: str) -> UnitRow | None:
        u = self.units.get(unit)
        if u is None:
            return None
        return UnitRow(unit, u.tier, u.name, self.own.get(unit, Counts()), self.total.get(unit, Counts()))

    def rounds_at(self, agent: str, reader: str, ts: int) -> Iterable[tuple[_Live, str]]:
        for version in self.versions.values():
            cp = version.plan.checkpoint_at.get((agent, reader))
            if cp is None:
                continue
            for route in version.plan.routes_at.get(cp.id, ()):
                key = (version.version, route.id)
                lives = self.by_route.get(key)
                if not lives:
                    continue
                # Tolerance reaches into the next slot (and windows may overlap):
                # walk back over every round that started recently enough to hold ts.
                j = bisect.bisect_right(self.starts[key], ts) - 1
                earliest = ts - self.span[key]
                while j >= 0 and lives[j].slot.start_ms >= earliest:
                    if ts < lives[j].slot.close_ms:
                        yield lives[j], cp.id
                    j -= 1

    def lineage(self, unit: str) -> list[str]:
        chain: list[str] = []
        current: str | None = unit
        while current is not None and current in self.units and current not in chain:
            chain.append(current)
            current = self.units[current].parent
        return chain


class CompletionTracker:
    """Listener of ingest (``events_stored``) keeping completion up to date.

    ``plans`` is the :class:`~central.plan.registry.PlanRegistry` (anything with
    ``history()``); ``load_scans(lo_ms, hi_ms)`` reads scans from the store when a
    day is (re)built; ``publish(topic, payload, retain=True)`` is the MQTT
    session's publish. ``send_command(agent, Command)`` (``Ingest.send_command``)
    answers each fresh planned scan with its :class:`~central.verdict.Verdict`
    as a ``feedback`` command, to the readers ``feedback_readers(agent)`` names
    (those its birth lists with a feedback output; all when not given), so
    an agent that cannot show it is not asked to. ``clock`` gives UTC seconds.
    """

    def __init__(
        self,
        plans: HistorySource,
        *,
        load_scans: LoadScans,
        publish: Publish | None = None,
        bus: Bus | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
        send_command: SendCommand | None = None,
        feedback_readers: FeedbackReaders | None = None,
    ) -> None:
        self._plans = plans
        self._send_command = send_command
        self._feedback_readers = feedback_readers
        self._feedback_known: dict[str, tuple[float, Collection[str]]] = {}  # agent -> (read at, readers)
        self._load_scans = load_scans
        self._publish = publish
        self._bus = bus
        self._clock = clock
        self._poll_s = poll_s
        self._lock = threading.RLock()
        self._history: PlanHistory | None = None
        self._days: dict[dt.date, _Day] = {}
        self._closing: list[tuple[int, int, dt.date, int]] = []  # (close_ms, seq, day, index) of open rounds
        self._compacting: list[tuple[int, int, dt.date, int]] = []  # (when, seq, day, index) of rounds to compact
        self.rebuilds = 0  # days read again because a scan fell in a compacted round
        self._rebuilt_ms: dict[dt.date, int] = {}  # day -> when (the tracker's clock) a late scan last rebuilt it
        self._seq = 0
        self._live_day: dt.date | None = None
        self._dirty: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans_counted = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Build today's and yesterday's rounds from the store, then tick on a thread."""
        self.tick()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="completion-tracker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:
                _LOGGER.exception("completion tracker tick failed")
                wait = self._poll_s
            self._stop.wait(min(wait, self._poll_s))

    # -- listener protocol -------------------------------------------------------

    def events_stored(self, events: Iterable[Any]) -> None:
        """Count new scans (``StoredEvent``); called on the ingest thread after the commit."""
        with self._lock:
            if self._history is None:
                return  # not started: start() reads these from the store
            now_ms = self._now_ms()
            answers: list[tuple[str, str, Verdict, int]] = []
            for e in events:
                if e.kind != "scan":
                    continue
                tag = e.fields.get("tag")
                if isinstance(tag, str):
                    fmt = e.fields.get("fmt")
                    scan = Scan(ts=e.ts_est, agent=e.agent, reader=e.source, tag=tag, eseq=e.eseq,
                                fmt=fmt if isinstance(fmt, str) else None)
                    # Counted already (read from the store when its day was built): answered then or never.
                    touched, counted = self._count(scan, now_ms)
                    if (self._send_command is not None and not counted and not getattr(e, "replayed", False)
                            and now_ms - e.ts_est <= FEEDBACK_MAX_AGE_MS):
                        v = self._verdict(scan, touched)
                        if v is not None:
                            answers.append((e.agent, e.source, v, e.eseq))
            self._rebuild_stale(now_ms)  # a late scan for a compacted round: at once, unless one was just now
            messages = self._flush()
        self._send(messages)
        self._answer(answers)

    def presence_changed(self, agent: str, state: Any, ts: Any = None) -> None:
        """Presence does not move completion; a new birth may change which readers give feedback."""
        self._feedback_known.pop(agent, None)

    def resync(self) -> None:
        """Scans were dropped on the way here (central/relay.py): read the days again from the store.

        Counting is idempotent per (agent, eseq), so scans that arrive both in
        the store read and as notices count once.
        """
        with self._lock:
            self._history = None
        self.tick()

    # -- time --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> float:
        """Apply a new plan, open a new day, close due rounds; returns seconds until needed again."""
        now_s = self._clock() if now is None else now
        now_ms = int(now_s * 1000)
        history = self._plans.history()
        with self._lock:
            if history is not self._history:
                self._rebuild(history, now_ms)
            else:
                self._roll_days(now_ms)
            while self._closing and self._closing[0][0] <= now_ms:
                _, _, day, index = heapq.heappop(self._closing)
                state = self._days.get(day)
                if state is not None:
                    self._rejudge(state, state.rounds[index], now_ms)
            while self._compacting and self._compacting[0][0] <= now_ms:
                _, _, day, index = heapq.heappop(self._compacting)
                state = self._days.get(day)
                if state is not None:
                    state.rounds[index].compact(now_ms)
            self._rebuild_stale(now_ms)
            self._update_live_day(now_ms)
            messages = self._flush()
            next_ms = self._closing[0][0] if self._closing else None
        self._send(messages)
        wait = self._poll_s if next_ms is None else max(0.0, (next_ms - now_ms) / 1000)
        return min(wait, self._poll_s)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _today(self, history: PlanHistory, now_ms: int) -> dt.date | None:
        v = history.at(now_ms) or history.latest
        if v is None:
            return None
        return dt.datetime.fromtimestamp(now_ms / 1000, v.plan.tz).date()

    def _rebuild(self, history: PlanHistory, now_ms: int) -> None:
        first = self._history is None
        self._history = history
        self._days.clear()
        self._closing.clear()
        self._compacting.clear()
        self._roll_days(now_ms)
        self._dirty.update(u for d in self._days.values() for u in d.units)
        if not first and self._bus is not None and history.latest is not None:
            self._bus.publish("plan", {"version": history.latest.version})
        _LOGGER.info("completion tracker follows plan version %s",
                     history.latest.version if history.latest else None)

    def _roll_days(self, now_ms: int) -> None:
        assert self._history is not None
        today = self._today(self._history, now_ms)
        if today is None:
            return
        wanted = [today - dt.timedelta(days=k) for k in range(TRACKED_DAYS)]
        for day in list(self._days):
            if day not in wanted:
                del self._days[day]
        for day in wanted:
            if day not in self._days:
                self._days[day] = self._build_day(day, now_ms)

    def _build_day(self, day: dt.date, now_ms: int) -> _Day:
        assert self._history is not None
        planned = planned_slots(self._history, day)
        state = _Day(day, self._history, planned)
        span = scan_range(planned)
        if span is not None:
            for scan in sorted(self._load_scans(span[0], span[1]), key=lambda s: s.ts):
                self._count_in(state, scan)  # judged below, once, with every scan in
        for index, live in enumerate(state.rounds):
            status = live.judge(now_ms)
            state.own[live.slot.unit] = state.own.get(live.slot.unit, Counts()).plus(status)
            if status is RoundStatus.OPEN:
                self._seq += 1
                heapq.heappush(self._closing, (live.slot.close_ms, self._seq, day, index))
            compact_at = live.slot.close_ms + COMPACT_AFTER_MS
            if compact_at <= now_ms:
                live.compact(now_ms)
            else:
                self._seq += 1
                heapq.heappush(self._compacting, (compact_at, self._seq, day, index))
        state.sum_up()
        return state

    def _update_live_day(self, now_ms: int) -> None:
        begun = [d for d, s in self._days.items() if s.first_start is not None and s.first_start <= now_ms]
        live = max(begun) if begun else (max(self._days) if self._days else None)
        if live != self._live_day:
            self._live_day = live
            if live is not None:
                self._dirty.update(self._days[live].units)

    # -- counting ----------------------------------------------------------------

    def _count_in(self, state: _Day, scan: Scan) -> tuple[list[tuple[_Live, str]], bool]:
        """Count ``scan`` in the rounds of ``state`` that hold it: those it newly counts in, and whether one of
        them had counted it already."""
        key = (scan.agent, scan.eseq)
        touched = []
        already = False
        for live, cp in state.rounds_at(scan.agent, scan.reader, scan.ts):
            if live.tally is None:
                state.stale = True  # its round let its scans go: the store has this one, the day is read again
                continue
            if scan.eseq:
                if key in live.seen:
                    already = True
                    continue
                live.seen.add(key)
            live.tally.add(scan.ts, cp, scan.tag, scan.fmt)
            touched.append((live, cp))
        return touched, already

    def _rebuild_stale(self, now_ms: int) -> None:
        """Read again from the store each day in which a scan fell in a compacted round (not too often)."""
        for day, state in list(self._days.items()):
            last = self._rebuilt_ms.get(day)
            if state.stale and (last is None or now_ms - last >= REBUILD_EVERY_S * 1000):
                self._rebuilt_ms = {d: ms for d, ms in self._rebuilt_ms.items() if d in self._days}
                self._rebuilt_ms[day] = now_ms
                self.rebuilds += 1
                _LOGGER.info("completion tracker: a late scan for a closed round of %s; reading the day again", day)
                # The day's clocks are made anew with it: drop the old ones, or a replay storm piles them up.
                self._closing = [e for e in self._closing if e[2] != day]
                self._compacting = [e for e in self._compacting if e[2] != day]
                heapq.heapify(self._closing)
                heapq.heapify(self._compacting)
                fresh = self._days[day] = self._build_day(day, now_ms)
                if day == self._live_day:
                    self._dirty.update(fresh.units)

    def _count(self, scan: Scan, now_ms: int) -> tuple[list[tuple[_Live, str]], bool]:
        """The rounds ``scan`` newly counts in, and whether a round had counted it already (read from the store
        when its day was built: answered then or never)."""
        touched = []
        counted = False
        for state in self._days.values():
            fresh, already = self._count_in(state, scan)
            counted = counted or already
            for live, cp in fresh:
                self.scans_counted += 1
                self._rejudge(state, live, now_ms)
                touched.append((live, cp))
        return touched, counted

    def _verdict(self, scan: Scan, touched: list[tuple[_Live, str]]) -> Verdict | None:
        """The answer to a scan at a planned checkpoint (None elsewhere)."""
        assert self._history is not None
        version = self._history.at(scan.ts)
        cp = version.plan.checkpoint_at.get((scan.agent, scan.reader)) if version is not None else None
        if version is None or cp is None:
            return None
        rounds = [live.tally for live, _ in touched if live.version is version and live.tally is not None]
        return verdict(version.plan, cp.id, scan.tag, scan.fmt, scan.ts, rounds)

    def _answer(self, answers: list[tuple[str, str, Verdict, int]]) -> None:
        assert self._send_command is not None or not answers
        for agent, reader, v, eseq in answers:
            if not self._gives_feedback(agent, reader):
                continue
            command = Command(CommandName.FEEDBACK, secrets.token_hex(6),
                              {"source": reader, "verdict": str(v), "eseq": eseq})
            try:
                self._send_command(agent, command)  # type: ignore[misc]
            except Exception:
                _LOGGER.exception("sending the verdict on %s of %s failed", reader, agent)

    def _rejudge(self, state: _Day, live: _Live, now_ms: int) -> None:
        before = live.status
        after = live.judge(now_ms)
        unit = live.slot.unit
        if before is not after:
            state.own[unit] = _moved(state.own.get(unit, Counts()), before, after)
            for u in state.lineage(unit):
                state.total[u] = _moved(state.total.get(u, Counts()), before, after)
        if state.day == self._live_day:
            # A scan in an open round changes only its unit's progress; a status, every rollup above.
            self._dirty.update(state.lineage(unit) if before is not after else (unit,))

    def _gives_feedback(self, agent: str, reader: str) -> bool:
        if self._feedback_readers is None:
            return True
        now = time.monotonic()
        known = self._feedback_known.get(agent)
        if known is None or now - known[0] > FEEDBACK_READERS_TTL_S:
            try:
                known = (now, self._feedback_readers(agent))
            except Exception:
                _LOGGER.exception("reading which readers of %s give feedback failed", agent)
                known = (now, frozenset())
            self._feedback_known[agent] = known
        return reader in known[1]

    # -- output ------------------------------------------------------------------

    def _flush(self) -> list[tuple[str, dict[str, Any]]]:
        """Payloads for the dirty units of the live date (under the lock)."""
        if not self._dirty or self._live_day is None or self._live_day not in self._days:
            self._dirty.clear()
            return []
        state = self._days[self._live_day]
        messages = []
        for unit in sorted(self._dirty):
            row = state.row(unit)
            if row is not None:
                messages.append((unit, self._payload(state, row)))
        self._dirty.clear()
        return messages

    def _payload(self, state: _Day, row: UnitRow) -> dict[str, Any]:
        now_ms = self._now_ms()
        body = {"date": state.day.isoformat(), **row.to_json(), "ts": now_ms}
        body["open_rounds"] = [
            live.tally.to_json(live.judged_ms) for live in state.by_unit.get(row.unit, ())
            if live.status is RoundStatus.OPEN and live.tally is not None  # open rounds are never compacted
        ]
        return body

    def _send(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for unit, body in messages:
            if self._publish is not None:
                try:
                    self._publish(topics.completion(unit), json.dumps(body, ensure_ascii=False).encode(), retain=True)
                except Exception:
                    _LOGGER.exception("publishing completion of %s failed", unit)
            if self._bus is not None:
                self._bus.publish("completion", body)

    # -- queries (web API) -------------------------------------------------------

    def report(self, day: dt.date | None = None) -> CompletionReport | None:
        """The tracked report of ``day`` (default: the live date); None if not tracked."""
        with self._lock:
            day = self._live_day if day is None else day
            state = self._days.get(day) if day is not None else None
            if state is None:
                return None
            rounds = tuple(lv.round for lv in state.rounds if lv.round is not None)
            rows = tuple(row for row in (state.row(u) for u in tree_order(state.units)) if row is not None)
            return CompletionReport(state.day, rows, rounds)

    def held_scans(self) -> int:
        """Scans the tracker holds in memory: those of rounds not yet compacted (a figure for tests and soaks)."""
        with self._lock:
            return sum(len(live.seen) for state in self._days.values() for live in state.rounds)

    @property
    def live_day(self) -> dt.date | None:
        return self._live_day


def _moved(counts: Counts, before: RoundStatus | None, after: RoundStatus) -> Counts:
    if before is not None:
        counts = counts.plus(before, -1)
    return counts.plus(after)
