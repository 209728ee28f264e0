"""Rounds and their statuses, pure: slots from windows, scans in, a verdict out.

docs/reference.md ("Patrol plan") defines the rules; this module is their one
implementation, shared by the report (a whole day from the store) and the
live tracker (one round at a time as scans arrive). Times are UTC ms; local
wall-clock times are turned into instants with the plan's ``zoneinfo`` zone.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from central.cards import Roster
from central.plan.model import Order, Route

MS_PER_MIN = 60_000


class RoundStatus(StrEnum):
    COMPLETE = "complete"
    LATE = "late"
    INCOMPLETE = "incomplete"
    MISSED = "missed"
    OPEN = "open"


STATUSES = tuple(RoundStatus)


@dataclass(slots=True, frozen=True)
class Scan:
    """A card presented at a reader; ``ts`` is when it happened (the store's ``ts_est``)."""

    ts: int
    agent: str
    reader: str
    tag: str
    eseq: int = 0
    fmt: str | None = None


@dataclass(slots=True, frozen=True)
class Slot:
    """One round of a route: ``[start_ms, end_ms)``, scans count until ``close_ms``.

    ``close_ms`` is the end plus the window's tolerance. ``day`` is the date on
    which the window opened, which is the date the round belongs to.
    """

    route: str
    unit: str
    day: dt.date
    window: int
    index: int
    start_ms: int
    end_ms: int
    close_ms: int
    tz: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False, repr=False)

    @property
    def start_iso(self) -> str:
        return iso(self.start_ms, self.tz)

    @property
    def key(self) -> tuple[str, dt.date, int, int]:
        return (self.route, self.day, self.window, self.index)


def to_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso(ts_ms: int, tz: ZoneInfo) -> str:
    """ISO 8601 with the zone's offset, e.g. ``2024-05-01T22:00:00+08:00``."""
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz).isoformat()


def local_midnight_ms(day: dt.date, tz: ZoneInfo) -> int:
    return to_ms(dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz))


def slots_for(route: Route, tz: ZoneInfo, day: dt.date) -> list[Slot]:
    """The rounds of ``route`` whose windows open on ``day``.

    Slots are cut every ``every_min`` of elapsed time from the window's start;
    the last one ends with the window even if that makes it shorter.
    """
    slots = []
    for wi, w in enumerate(route.windows):
        start = to_ms(dt.datetime.combine(day, dt.time(w.start_min // 60, w.start_min % 60), tzinfo=tz))
        end_day = day if w.end_min > w.start_min else day + dt.timedelta(days=1)
        end = to_ms(dt.datetime.combine(end_day, dt.time(w.end_min // 60, w.end_min % 60), tzinfo=tz))
        every = w.every_min * MS_PER_MIN
        tolerance = w.tolerance_min * MS_PER_MIN
        s, i = start, 0
        while s < end:
            e = min(s + every, end)
            slots.append(Slot(route.id, route.unit, day, wi, i, s, e, e + tolerance, tz))
            s, i = s + every, i + 1
    return slots


@dataclass(slots=True, frozen=True)
class Round:
    """A judged round with what a supervisor wants to see next to the status.

    ``repeated`` maps a checkpoint to the most scans one card made there in
    the round (only when 2 or more); ``min_gap_s`` is the shortest time between
    two consecutive scans at different checkpoints; ``unauthorised`` lists cards
    seen at the route's checkpoints that no team of the route holds.
    """

    slot: Slot
    status: RoundStatus
    scanned: tuple[str, ...]
    missing: tuple[str, ...]
    out_of_order: bool = False
    repeated: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    min_gap_s: float | None = None
    unauthorised: tuple[str, ...] = ()
    plan_version: int = 0

    def to_json(self) -> dict[str, Any]:
        """The keys docs/reference.md lists for a round of ``report completion --format json``."""
        return {
            "route": self.slot.route,
            "unit": self.slot.unit,
            "slot_start": self.slot.start_iso,
            "status": str(self.status),
            "scanned": list(self.scanned),
            "missing": list(self.missing),
        }

    def flags(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.out_of_order:
            out["out_of_order"] = True
        if self.repeated:
            out["repeated"] = dict(self.repeated)
        if self.min_gap_s is not None:
            out["min_gap_s"] = self.min_gap_s
        if self.unauthorised:
            out["unauthorised"] = list(self.unauthorised)
        return out


# (ts, checkpoint, tag[, fmt]), sorted by ts then arrival: the scans at a route's checkpoints.
RouteScan = tuple[Any, ...]
Authorised = Roster | Collection[str]


def admitter(authorised: Authorised) -> Callable[[str, str | None], bool]:
    """``admit(tag, fmt)`` for a route's :class:`~central.cards.Roster` (or a plain set of tags)."""
    if isinstance(authorised, Roster):
        return authorised.admits
    return lambda tag, fmt: tag in authorised


def judge(
    route: Route,
    slot: Slot,
    scans: Sequence[RouteScan],
    now_ms: int,
    *,
    authorised: Authorised,
    plan_version: int = 0,
) -> Round:
    """The status and flags of one round from the scans at the route's checkpoints.

    ``scans`` may hold scans outside the round and of any card: only those in
    ``[start, close)`` by an authorised card count.
    """
    admit = admitter(authorised)
    ok: list[tuple[int, str, str]] = []
    bad: set[str] = set()
    for s in scans:
        ts, cp, tag = s[0], s[1], s[2]
        if slot.start_ms <= ts < slot.close_ms:
            if admit(tag, s[3] if len(s) > 3 else None):
                ok.append((ts, cp, tag))
            else:
                bad.add(tag)
    seen = {cp for _, cp, _ in ok}
    scanned = tuple(cp for cp in route.checkpoints if cp in seen)
    missing = tuple(cp for cp in route.checkpoints if cp not in seen)
    if now_ms < slot.close_ms:
        status = RoundStatus.OPEN
    else:
        finish = finish_time(route.order, route.checkpoints, ok)
        if finish is not None and finish < slot.end_ms:
            status = RoundStatus.COMPLETE
        elif finish is not None:
            status = RoundStatus.LATE
        elif ok:
            status = RoundStatus.INCOMPLETE
        else:
            status = RoundStatus.MISSED
    return Round(
        slot=slot,
        status=status,
        scanned=scanned,
        missing=missing,
        out_of_order=_out_of_order(route, ok),
        repeated=MappingProxyType(_repeated(ok)),
        min_gap_s=_min_gap_s(ok),
        unauthorised=tuple(sorted(bad)),
        plan_version=plan_version,
    )


def finish_time(order: Order, checkpoints: Sequence[str], ok: Sequence[tuple[int, str, str]]) -> int | None:
    """When the last scan needed fell, in the earliest valid walk; None if there is none.

    Greedy matching gives the earliest finish: for ``strict`` the first scan of
    each checkpoint after the previous one's; for ``start-then-any`` the first
    start scan, then each other checkpoint's first scan after it.
    """
    if order is Order.STRICT:
        k, finish = 0, None
        for ts, cp, _ in ok:
            if k < len(checkpoints) and cp == checkpoints[k]:
                k, finish = k + 1, ts
        return finish if k == len(checkpoints) else None
    first: dict[str, int] = {}
    if order is Order.START_THEN_ANY:
        start = checkpoints[0]
        begun = False
        for ts, cp, _ in ok:
            if not begun:
                if cp == start:
                    begun = True
                    first[cp] = ts
                continue
            first.setdefault(cp, ts)
    else:
        for ts, cp, _ in ok:
            first.setdefault(cp, ts)
    if all(cp in first for cp in checkpoints):
        return max(first[cp] for cp in checkpoints)
    return None


def _out_of_order(route: Route, ok: Sequence[tuple[int, str, str]]) -> bool:
    """A scan made while a checkpoint the route puts before it was still unscanned."""
    if route.order is Order.ANY or not ok:
        return False
    if route.order is Order.START_THEN_ANY:
        return ok[0][1] != route.checkpoints[0]
    position = {cp: i for i, cp in enumerate(route.checkpoints)}
    done = [False] * len(route.checkpoints)
    low = 0  # every checkpoint before this one has been scanned
    for _, cp, _ in ok:
        p = position[cp]
        if p > low:
            return True
        done[p] = True
        while low < len(done) and done[low]:
            low += 1
    return False


def _repeated(ok: Sequence[tuple[int, str, str]]) -> dict[str, int]:
    per_card: dict[tuple[str, str], int] = {}
    for _, cp, tag in ok:
        per_card[(cp, tag)] = per_card.get((cp, tag), 0) + 1
    out: dict[str, int] = {}
    for (cp, _), n in per_card.items():
        if n >= 2 and n > out.get(cp, 0):
            out[cp] = n
    return out


def _min_gap_s(ok: Sequence[tuple[int, str, str]]) -> float | None:
    best: int | None = None
    for (t0, c0, _), (t1, c1, _) in zip(ok, ok[1:]):
        if c0 != c1 and (best is None or t1 - t0 < best):
            best = t1 - t0
    return None if best is None else best / 1000


def route_scans(route: Route, by_checkpoint: Mapping[str, Sequence[tuple[int, str, str | None]]],
                lo_ms: int, hi_ms: int) -> list[RouteScan]:
    """The scans at the route's checkpoints with ``lo <= ts < hi``, in time order.

    ``by_checkpoint`` maps a checkpoint to its ``(ts, tag, fmt)`` scans sorted by time.
    """
    out: list[RouteScan] = []
    for cp in route.checkpoints:
        seq = by_checkpoint.get(cp)
        if not seq:
            continue
        i = bisect_left(seq, lo_ms, key=lambda x: x[0])
        while i < len(seq) and seq[i][0] < hi_ms:
            out.append((seq[i][0], cp, seq[i][1], seq[i][2]))
            i += 1
    out.sort(key=lambda s: s[0])  # stable: equal times keep the route's order
    return out


def index_scans(scans: Iterable[Scan], checkpoint_at: Mapping[tuple[str, str], Any]) -> dict[str, list[tuple[int, str, str | None]]]:
    """Group scans by the checkpoint their reader is, each list sorted by time."""
    by_cp: dict[str, list[tuple[int, str, str | None]]] = {}
    for s in scans:
        cp = checkpoint_at.get((s.agent, s.reader))
        if cp is not None:
            by_cp.setdefault(cp.id, []).append((s.ts, s.tag, s.fmt))
    for seq in by_cp.values():
        seq.sort(key=lambda x: x[0])
    return by_cp


class RoundTally:
    """One round judged scan by scan: the same verdict as :func:`judge`, kept up to date.

    :func:`judge` walks every scan of the round, so calling it for each new
    scan made a flood of n scans cost O(n^2) (30,000 scans at one checkpoint
    held central for 110 s). The tally keeps only what the rules need: per
    checkpoint the sorted keys of its authorised scans (for the earliest valid
    walk of each order and the first visit of each checkpoint), the set of
    unauthorised cards, per-card repeat counts and the shortest gap. A scan
    costs O(k log n) for a route of k checkpoints (an insertion into sorted
    lists; arrivals in time order append). Scans must lie in ``[start, close)``.

    Equal times keep arrival order, as :func:`judge` does with a stable sort.
    """

    def __init__(self, route: Route, slot: Slot, *, authorised: Authorised, plan_version: int = 0) -> None:
        self.route = route
        self.slot = slot
        self.plan_version = plan_version
        self._admit = admitter(authorised)
        self._arrivals = 0
        self._per_cp: dict[str, list[tuple[int, int]]] = {}  # checkpoint -> sorted (ts, arrival)
        self._walk: list[tuple[int, int, str]] = []  # every authorised scan, sorted, for the gaps
        self._bad: set[str] = set()
        self._count: dict[tuple[str, str], int] = {}
        self._repeated: dict[str, int] = {}
        self._min_gap_ms: int | None = None
        self._cached: tuple[int, Round] | None = None

    def add(self, ts: int, cp: str, tag: str, fmt: str | None = None) -> bool:
        """Count one scan at checkpoint ``cp``; True when its card is authorised."""
        self._cached = None
        if not self._admit(tag, fmt):
            self._bad.add(tag)
            return False
        self._arrivals += 1
        key = (ts, self._arrivals)
        insort(self._per_cp.setdefault(cp, []), key)
        n = self._count[(cp, tag)] = self._count.get((cp, tag), 0) + 1
        if n >= 2 and n > self._repeated.get(cp, 0):
            self._repeated[cp] = n
        # The shortest gap never grows when a scan is put between two others
        # (the two new gaps add up to the old one), so only the new pairs matter.
        item = (ts, self._arrivals, cp)
        i = bisect_right(self._walk, item)
        self._walk.insert(i, item)
        for a, b in ((i - 1, i), (i, i + 1)):
            if 0 <= a and b < len(self._walk) and self._walk[a][2] != self._walk[b][2]:
                gap = self._walk[b][0] - self._walk[a][0]
                if self._min_gap_ms is None or gap < self._min_gap_ms:
                    self._min_gap_ms = gap
        return True

    def status(self, now_ms: int) -> RoundStatus:
        if now_ms < self.slot.close_ms:
            return RoundStatus.OPEN
        finish = self._finish()
        if finish is not None:
            return RoundStatus.COMPLETE if finish < self.slot.end_ms else RoundStatus.LATE
        return RoundStatus.INCOMPLETE if self._walk else RoundStatus.MISSED

    def _finish(self) -> int | None:
        cps, per = self.route.checkpoints, self._per_cp
        if any(cp not in per for cp in cps):
            return None
        if self.route.order is Order.ANY:
            return max(per[cp][0][0] for cp in cps)
        if self.route.order is Order.START_THEN_ANY:
            begun = per[cps[0]][0]
            finish = begun[0]
            for cp in cps[1:]:
                keys = per[cp]
                i = bisect_right(keys, begun)
                if i == len(keys):
                    return None
                finish = max(finish, keys[i][0])
            return finish
        last: tuple[int, int] | None = None
        for cp in cps:
            keys = per[cp]
            i = 0 if last is None else bisect_right(keys, last)
            if i == len(keys):
                return None
            last = keys[i]
        return None if last is None else last[0]

    def _out_of_order(self) -> bool:
        if self.route.order is Order.ANY or not self._walk:
            return False
        if self.route.order is Order.START_THEN_ANY:
            return self._walk[0][2] != self.route.checkpoints[0]
        # A checkpoint's first scan made before the first scan of one the route puts earlier.
        latest: tuple[int, int] | None = None
        unscanned_before = False
        for cp in self.route.checkpoints:
            keys = self._per_cp.get(cp)
            if not keys:
                unscanned_before = True
                continue
            if unscanned_before or (latest is not None and keys[0] < latest):
                return True
            latest = keys[0] if latest is None or keys[0] > latest else latest
        return False

    def in_order(self, cp: str, ts: int) -> bool:
        """Whether a scan at ``cp`` at ``ts`` keeps the route's order (every checkpoint it needs first was scanned by then)."""
        cps = self.route.checkpoints
        if self.route.order is Order.ANY or cp not in cps:
            return True
        before = cps[:1] if self.route.order is Order.START_THEN_ANY else cps[:cps.index(cp)]
        return all(q == cp or (q in self._per_cp and self._per_cp[q][0][0] <= ts) for q in before)

    def scanned(self) -> tuple[str, ...]:
        return tuple(cp for cp in self.route.checkpoints if cp in self._per_cp)

    def missing(self) -> tuple[str, ...]:
        return tuple(cp for cp in self.route.checkpoints if cp not in self._per_cp)

    def to_json(self, now_ms: int) -> dict[str, Any]:
        """:meth:`Round.to_json` without building the round's flags."""
        return {
            "route": self.slot.route,
            "unit": self.slot.unit,
            "slot_start": self.slot.start_iso,
            "status": str(self.status(now_ms)),
            "scanned": list(self.scanned()),
            "missing": list(self.missing()),
        }

    def round(self, now_ms: int) -> Round:
        """The judged round (cached until the next scan or a change of status)."""
        status = self.status(now_ms)
        if self._cached is not None and self._cached[1].status is status:
            return self._cached[1]
        r = Round(
            slot=self.slot,
            status=status,
            scanned=self.scanned(),
            missing=self.missing(),
            out_of_order=self._out_of_order(),
            repeated=MappingProxyType(dict(self._repeated)),
            min_gap_s=None if self._min_gap_ms is None else self._min_gap_ms / 1000,
            unauthorised=tuple(sorted(self._bad)),
            plan_version=self.plan_version,
        )
        self._cached = (self._arrivals, r)
        return r
