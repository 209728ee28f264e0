"""The alarm book: raise, escalate through the tiers, acknowledge, resolve.

An ``alarm``, ``tamper`` or ``panic`` event raises an alarm at the unit of its
agent, and so does a message that contradicts itself (``suspicious``, from
ingest's integrity checks). It stays ``active`` until staff acknowledge it;
then it is ``resolved`` at once for a panic (the ack releases the button's
latch) or a suspicious message (nothing restores a forgery), and otherwise
once its source has restored (before or after the ack), else ``acknowledged``.
Unacknowledged, it climbs one tier each time it has waited its tier's time
(``[escalation]`` grid_s, community_s, street_s) up to the district; every
step is a row of ``alarm_steps``.

Staff may acknowledge from the command line, in another process. Every state
change is therefore one SQL statement that decides from the row itself (no
read-then-write across processes), and the running central polls for acks it
has not yet told the agent about (``notified = 0``) to send the ``alarm-ack``
command and to stop escalating. ``notified``: 0 not yet told, 1 sent and
waiting for the agent's ok, 2 confirmed (or nothing to tell: agent alarms).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from central.bus import Bus
from central.plan.model import Plan
from central.plan.registry import PlanHistory
from central.store import Connection, Store, transaction
from central.store import alarms as sql
from central.store.alarms import (
    AGENT_KINDS,
    BY_MAX_LEN,
    RESOLVED_BY_ACK,
    Alarm,
    AlarmError,
    AlarmKind,
    AlarmState,
    AlarmStep,
    acknowledge,
    get_alarm,
    list_alarms,
    list_steps,
)
from wire.messages import Command, CommandName

__all__ = ["AGENT_KINDS", "BY_MAX_LEN", "RESOLVED_BY_ACK", "Alarm", "AlarmBook", "AlarmError", "AlarmKind",
           "AlarmState", "AlarmStep", "Pending", "acknowledge", "get_alarm", "list_alarms", "list_steps",
           "offline_agents"]

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.5  # how soon a running central notices an ack made by the command line
ACK_RESEND_DELAY_S = 1.0  # after an agent comes back, give it time to subscribe before resending
RECHECK_S = 30.0  # an open alarm not yet due is read again at least this often (a new plan may shorten its wait)
FLAP_WINDOW_S = 600.0
# This many drops to offline inside the window flag an agent. Drops, not every
# change: an agent that starts, loses its link once and comes back has changed
# state three times but has had one outage, which is no flapping.
FLAP_TRANSITIONS = 3


@dataclass(slots=True)
class Pending:
    """What a batch's alarm writes did, applied to memory and announced only once the batch commits."""

    climbs: dict[int, int] = field(default_factory=dict)  # alarm id -> when it reached its level
    announce: list[tuple[int, str, str | None]] = field(default_factory=list)  # (alarm id, change, detail)

    def __bool__(self) -> bool:
        return bool(self.climbs or self.announce)


def offline_agents(store: Any) -> Callable[[], list[tuple[str, int]]]:
    """For ``AlarmBook(offline_agents=...)``: agents the store holds as offline, since their last word."""

    def read() -> list[tuple[str, int]]:
        now_ms = int(time.time() * 1000)
        return [(r.agent, r.last_seen or now_ms) for r in store.list_agents() if r.state == "offline"]

    return read


class HistorySource(Protocol):
    def history(self) -> PlanHistory: ...


class AlarmBook:
    """Alarms of a running central: decided inside ingest's batch, timed on a thread of its own.

    ``store`` is central's :class:`~central.store.Store` (or its SQLite path);
    ``plans`` the plan registry; ``send_command(agent, Command)`` is the MQTT
    session's. ``clock`` gives UTC seconds; :meth:`tick` does the time-driven
    work and is called by :meth:`start`'s thread, or by a test with its own
    clock.

    Ingest calls :meth:`write` with its own connection inside the batch's
    transaction, so an alarm event and its alarm (raise, retrip, restore)
    commit together or not at all, before the ack goes out; then
    :meth:`committed` with what :meth:`write` returned, to start the
    escalation clocks and tell the dashboard. A central killed between the
    commit and :meth:`committed` loses nothing: :meth:`_load_active` reads the
    clocks back from the store on start.
    """

    def __init__(
        self,
        store: Store | str | Path,
        *,
        plans: HistorySource,
        grid_s: float = 120.0,
        community_s: float = 300.0,
        street_s: float = 600.0,
        offline_grace_s: float = 60.0,
        send_command: Callable[[str, Command], bool] | None = None,
        bus: Bus | None = None,
        offline_agents: Callable[[], Iterable[tuple[str, int]]] | None = None,
        clock: Callable[[], float] = time.time,
        new_txn: Callable[[], str] = lambda: secrets.token_hex(6),
        poll_s: float = POLL_S,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store if isinstance(store, Store) else Store(Path(store))
        self._plans = plans
        self._wait_s = {"grid": grid_s, "community": community_s, "street": street_s}
        self._grace_ms = int(offline_grace_s * 1000)
        self._send = send_command
        self._bus = bus
        self._offline_agents = offline_agents
        self._clock = clock
        self._new_txn = new_txn
        self._poll_s = poll_s
        # In a group (docs/scaling.md) only the leader ticks: escalations, offline alarms, flapping, telling
        # agents of acks. Every member writes the alarms of the events it stores (write()); the leader reads
        # the alarms others raised back from the store each tick. None: a central on its own, always leading.
        self._leading = leading
        self._lock = threading.RLock()
        self._conn = self._store.connect(check_same_thread=False)
        self._climb: dict[int, int] = {}  # active alarm id -> when it reached its current level (UTC ms)
        # active alarm id -> the earliest it can next climb (UTC ms): a tick reads only those due, not
        # every open alarm (500 open alarms were 500 queries a tick, holding the book's lock).
        self._next_check: dict[int, int] = {}
        self._offline_since: dict[str, int] = {}  # agent -> when it went offline (UTC ms)
        self._offline_alarmed: set[str] = set()
        self._changes: dict[str, deque[int]] = {}
        self._resend_at: dict[str, int] = {}
        self._acks_announced: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat = time.monotonic()  # the thread's last turn, for the watchdog
        self._load_active()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._offline_agents is not None:
            with self._lock:
                for agent, since in self._offline_agents():
                    self._offline_since.setdefault(agent, since)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alarm-book", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._conn.close()

    def alive(self, stall_s: float) -> bool:
        """The escalation thread runs and has turned within ``stall_s`` (the watchdog's test)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and time.monotonic() - self.last_beat < stall_s

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            try:
                self.tick()
            except Exception:
                _LOGGER.exception("alarm book tick failed")
            self._stop.wait(self._poll_s)

    def _load_active(self) -> None:
        for a in list_alarms(self._conn):
            if a.state is AlarmState.ACTIVE and a.id not in self._climb:
                at = sql.last_climb(self._conn, a.id)
                self._climb[a.id] = at if at is not None else a.raised_ts

    def take_over(self) -> None:
        """This central became its group's leader: pick up the clocks from the store, as on a start."""
        with self._lock:
            self._load_active()
            if self._offline_agents is not None:
                for agent, since in self._offline_agents():
                    self._offline_since.setdefault(agent, since)
            for a in list_alarms(self._conn):
                if a.kind == AlarmKind.AGENT_OFFLINE:
                    self._offline_alarmed.add(a.agent)  # raised by the leader before: not twice
        _LOGGER.info("alarm book: took over %s active alarms, %s agents offline", len(self._climb),
                     len(self._offline_since))

    def _lead(self) -> bool:
        return self._leading is None or self._leading()

    # -- inside ingest's transaction -----------------------------------------------

    def write(self, conn: Connection, events: Iterable[Any],
              suspicious: Iterable[tuple[str, str, str, int]] = ()) -> Pending:
        """Raise, retrip and restore for ``events`` (``StoredEvent``s just inserted, in stored order) and
        raise a ``suspicious`` alarm for each ``(agent, check, detail, ts_ms)``, on ``conn`` inside the
        caller's transaction. Nothing in memory changes until :meth:`committed`."""
        pending = Pending()
        events = list(events)
        suspicious = list(suspicious)
        # Several centrals may write one agent's alarms at once: each agent's in turn, in one order.
        sql.lock_agents(conn, [e.agent for e in events if e.kind in AGENT_KINDS or e.kind == "restore"]
                        + [agent for agent, _, _, _ in suspicious])
        for e in events:
            kind = e.kind
            if kind in AGENT_KINDS:
                self._raise_on(conn, pending, e.agent, e.source, AlarmKind(kind), e.ts_est, e.received_ts,
                               eseq=e.eseq, epoch=e.epoch)
            elif kind == "restore":
                self._restore_on(conn, pending, e.agent, e.source, e.received_ts,
                                 kinds=(AlarmKind.ALARM, AlarmKind.TAMPER))
        for agent, check, detail, ts in suspicious:
            self._raise_on(conn, pending, agent, check, AlarmKind.SUSPICIOUS, ts, ts, detail=detail)
        return pending

    def committed(self, pending: Pending) -> None:
        """The transaction of :meth:`write` committed: start the clocks, tell the dashboard."""
        if not pending:
            return
        with self._lock:
            for alarm_id, since in pending.climbs.items():
                self._climb.setdefault(alarm_id, since)
        for alarm_id, what, detail in pending.announce:
            self._announce(alarm_id, what, detail=detail)

    # -- listener protocol (alarms decided outside a batch) ----------------------

    def events_stored(self, events: Iterable[Any]) -> None:
        """Raise alarms and note restores for events stored by someone else (a test, a tool)."""
        self._apply(lambda conn: self.write(conn, events))

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        with self._lock:
            if state == "offline":
                self._offline_since.setdefault(agent, ts)
            else:
                self._offline_since.pop(agent, None)
                self._offline_alarmed.discard(agent)
            if not self._lead():
                return  # every member sees every status; the leader raises and restores
            if state == "offline":
                changes = self._changes.setdefault(agent, deque())
                changes.append(ts)
                self._forget_old(changes, ts)
                if len(changes) >= FLAP_TRANSITIONS:
                    self._raise(agent, agent, AlarmKind.AGENT_FLAPPING, ts, ts)
            if state == "online":
                self._restore(agent, agent, ts, kinds=(AlarmKind.AGENT_OFFLINE,))
                self._resend_at[agent] = ts + int(ACK_RESEND_DELAY_S * 1000)

    def command_answered(self, agent: str, txn: str, ok: bool, error: str | None = None) -> None:
        """The agent's ``cmd/resp``: an ok to our alarm-ack confirms it."""
        if not ok:
            _LOGGER.warning("agent %s refused alarm-ack %s: %s", agent, txn, error)
            return
        with self._lock:
            sql.confirm_ack(self._conn, agent, txn)

    def integrity_violation(self, agent: str, reason: str, detail: str, ts: int) -> None:
        """Ingest found a message of ``agent`` that contradicts itself (central/integrity.py)."""
        self.raise_integrity_alarm(agent, reason, detail, ts / 1000)

    def raise_integrity_alarm(self, agent: str, reason: str, detail: str, now: float | None = None) -> None:
        """A ``suspicious`` alarm at the agent's unit, its source the check that failed.

        One open alarm per agent and check: a forger sending a thousand
        messages raises one alarm (ingest's counters keep the tally).
        """
        now_ms = int((self._clock() if now is None else now) * 1000)
        self._raise(agent, reason, AlarmKind.SUSPICIOUS, now_ms, now_ms, detail=detail)

    # -- staff -------------------------------------------------------------------

    def acknowledge(self, alarm_id: int, by: str, now: float | None = None) -> Alarm:
        """Acknowledge from the web; the agent is told at once."""
        now_ms = int((self._clock() if now is None else now) * 1000)
        with self._lock:
            current = get_alarm(self._conn, alarm_id)
            alarm = acknowledge(self._conn, alarm_id, by, now_ms, tier=self._tier(current.level if current else None, now_ms))
            self._climb.pop(alarm_id, None)
            if self._lead():
                self._notify_agents(now_ms)  # else the leader tells the agent at its next tick
        return alarm

    def alarms(self, *, include_all: bool = False) -> list[Alarm]:
        with self._lock:
            return list_alarms(self._conn, include_all=include_all)

    def steps(self, alarm_id: int) -> list[AlarmStep]:
        with self._lock:
            return list_steps(self._conn, alarm_id)

    # -- time ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Tell agents of acks, escalate what waited too long, raise offline and calm flapping."""
        now_ms = int((self._clock() if now is None else now) * 1000)
        if not self._lead():
            return
        with self._lock:
            if self._leading is not None:
                self._load_active()  # alarms the other centrals raised
            self._notify_agents(now_ms)
            for agent, at in list(self._resend_at.items()):
                if at <= now_ms:
                    del self._resend_at[agent]
                    self._resend(agent)
            for alarm_id, since in list(self._climb.items()):
                if self._next_check.get(alarm_id, 0) <= now_ms:
                    self._escalate(alarm_id, since, now_ms)
            for agent, since in list(self._offline_since.items()):
                if agent not in self._offline_alarmed and now_ms - since >= self._grace_ms:
                    at = since + self._grace_ms
                    self._raise(agent, agent, AlarmKind.AGENT_OFFLINE, at, at)
                    self._offline_alarmed.add(agent)
            for agent, changes in list(self._changes.items()):
                self._forget_old(changes, now_ms)
                if len(changes) < FLAP_TRANSITIONS:
                    self._restore(agent, agent, now_ms, kinds=(AlarmKind.AGENT_FLAPPING,))
                if not changes:
                    del self._changes[agent]

    @staticmethod
    def _forget_old(changes: deque[int], now_ms: int) -> None:
        while changes and changes[0] <= now_ms - FLAP_WINDOW_S * 1000:
            changes.popleft()

    # -- the work ------------------------------------------------------------------

    def _plan(self, ts_ms: int) -> Plan | None:
        """The plan in force at ``ts_ms`` (else the newest: a unit must be found somewhere)."""
        h = self._plans.history()
        v = h.at(ts_ms) or h.latest
        return v.plan if v else None

    def _unit_of(self, agent: str, ts_ms: int) -> str | None:
        plan = self._plan(ts_ms)
        return plan.agent_unit.get(agent) if plan else None

    def _tier(self, unit: str | None, ts_ms: int) -> str | None:
        plan = self._plan(ts_ms) if unit is not None else None
        u = plan.unit_by_id.get(unit) if plan and unit is not None else None
        return str(u.tier) if u else None

    def _apply(self, write: Callable[[Connection], Pending]) -> None:
        """Run ``write`` in a transaction of the book's own connection, then apply what it decided."""
        with self._lock:
            with transaction(self._conn):
                pending = write(self._conn)
            self.committed(pending)

    def _raise(self, agent: str, source: str, kind: AlarmKind, raised_ts: int, noticed_ts: int, *,
               detail: str | None = None) -> None:
        self._apply(lambda conn: self._raise_on(conn, Pending(), agent, source, kind, raised_ts, noticed_ts,
                                                detail=detail))

    def _restore(self, agent: str, source: str, ts: int, *, kinds: Sequence[AlarmKind]) -> None:
        self._apply(lambda conn: self._restore_on(conn, Pending(), agent, source, ts, kinds=kinds))

    def _raise_on(self, conn: Connection, pending: Pending, agent: str, source: str, kind: AlarmKind,
                  raised_ts: int, noticed_ts: int, *, eseq: int | None = None, epoch: str | None = None,
                  detail: str | None = None) -> Pending:
        sql.lock_agents(conn, [agent])  # held already when called from write()
        held = sql.open_alarm(conn, agent, source, str(kind))
        if held is not None:
            # The same input tripping again before it was dealt with: one alarm, not a flood.
            alarm_id, restored = held
            if restored:
                sql.mark_retripped(conn, alarm_id)
                sql.step(conn, alarm_id, noticed_ts, None, None, "retrip", detail)
                pending.announce.append((alarm_id, "retripped", detail))
            return pending
        unit = self._unit_of(agent, raised_ts)
        tier = self._tier(unit, noticed_ts)
        alarm_id = sql.insert_alarm(conn, agent=agent, source=source, kind=str(kind), unit=unit, raised_ts=raised_ts,
                                    eseq=eseq, epoch=epoch)
        sql.step(conn, alarm_id, noticed_ts, unit, tier, "raise", detail)
        pending.climbs[alarm_id] = noticed_ts
        pending.announce.append((alarm_id, "raised", detail))
        _LOGGER.warning("alarm %s raised: %s %r of %s (unit %s)", alarm_id, kind, source, agent, unit)
        return pending

    def _restore_on(self, conn: Connection, pending: Pending, agent: str, source: str, ts: int, *,
                    kinds: Sequence[AlarmKind]) -> Pending:
        sql.lock_agents(conn, [agent])
        for alarm_id in sql.unrestored(conn, agent, source, map(str, kinds)):
            alarm = sql.mark_restored(conn, alarm_id)
            tier = self._tier(alarm.level, ts)
            sql.step(conn, alarm_id, ts, alarm.level, tier, "restore")
            if alarm.state is AlarmState.RESOLVED:
                sql.step(conn, alarm_id, ts, alarm.level, tier, "resolve")
            pending.announce.append((alarm_id, "restored", None))
        return pending

    def _escalate(self, alarm_id: int, since: int, now_ms: int) -> None:
        alarm = get_alarm(self._conn, alarm_id)
        if alarm is None or alarm.state is not AlarmState.ACTIVE:
            self._climb.pop(alarm_id, None)
            self._next_check.pop(alarm_id, None)
            return
        # Checked again when its wait at this level ends, or in RECHECK_S (a new plan, an ack elsewhere).
        self._next_check[alarm_id] = now_ms + int(RECHECK_S * 1000)
        plan = self._plan(now_ms)
        climbed = False
        level = alarm.level
        while level is not None and plan is not None and level in plan.unit_by_id:
            tier = str(plan.unit_by_id[level].tier)
            wait_s = self._wait_s.get(tier)
            parent = plan.unit_by_id[level].parent
            if wait_s is None or parent is None:
                break  # a district (or a unit no longer in the plan) is as high as it goes
            due = since + int(wait_s * 1000)
            if due > now_ms:
                self._next_check[alarm_id] = min(due, now_ms + int(RECHECK_S * 1000))
                break
            with transaction(self._conn):
                if not sql.escalate(self._conn, alarm_id, parent):
                    break
                # Stamped with when it fell due, so a central that was down climbs as it should have.
                sql.step(self._conn, alarm_id, due, parent, str(plan.unit_by_id[parent].tier), "escalate")
            _LOGGER.warning("alarm %s unacknowledged for %s s at %s: escalated to %s", alarm_id, wait_s, level, parent)
            level, since, climbed = parent, due, True
        self._climb[alarm_id] = since
        if climbed:
            self._announce(alarm_id, "escalated")

    def _notify_agents(self, now_ms: int) -> None:
        """Tell agents of acks made here or by the command line, once each."""
        for alarm in sql.acks_to_tell(self._conn):
            self._climb.pop(alarm.id, None)
            if alarm.kind in AGENT_KINDS:
                done = self._send_ack(alarm)  # a send that could not even be queued stays 0: tried again next tick
            else:
                sql.set_notified(self._conn, alarm.id, 2, only_from=0)
                done = True
            first = alarm.id not in self._acks_announced  # tell the dashboard once, however many tries
            if done:
                self._acks_announced.discard(alarm.id)
            else:
                self._acks_announced.add(alarm.id)
            if first:
                self._announce(alarm.id, "acknowledged")

    def _send_ack(self, alarm: Alarm) -> bool:
        txn = self._new_txn()
        sent = False
        if self._send is not None:
            try:
                sent = self._send(alarm.agent, Command(CommandName.ALARM_ACK, txn, {"source": alarm.source}))
            except Exception:
                _LOGGER.exception("sending alarm-ack of alarm %s to %s failed", alarm.id, alarm.agent)
        if sent:
            sql.set_notified(self._conn, alarm.id, 1, txn=txn)
        return sent

    def _resend(self, agent: str) -> None:
        """The agent is back: central's state wins. Acks it has not confirmed are sent again, and a panic
        it still shows latched (its state snapshot) with no open alarm here is released."""
        told: set[str] = set()
        for alarm in sql.acks_sent(self._conn, agent):
            _LOGGER.info("agent %s is back: sending alarm-ack of alarm %s again", agent, alarm.id)
            self._send_ack(alarm)
            told.add(alarm.source)
        row = self._store.get_agent(agent, conn=self._conn)
        snapshot = row.snapshot if row is not None else None
        latched = snapshot.get("latched") if snapshot is not None else None
        if not isinstance(latched, (list, tuple)) or not latched or self._send is None:
            return
        open_ = set(sql.open_latches(self._conn, agent))
        for source in latched:
            if not isinstance(source, str) or source in open_ or source in told:
                continue
            last = sql.last_alarm(self._conn, agent, source, str(AlarmKind.PANIC))
            # No alarm at all: its panic may still be on its way in the agent's backlog. Keep it lit.
            if last is not None and last.state is not AlarmState.ACTIVE:
                _LOGGER.info("agent %s shows panic %r latched, but staff answered its alarm %s: releasing it",
                             agent, source, last.id)
                try:
                    self._send(agent, Command(CommandName.ALARM_ACK, self._new_txn(), {"source": source}))
                except Exception:
                    _LOGGER.exception("sending alarm-ack of %r to %s failed", source, agent)

    def _announce(self, alarm_id: int, what: str, *, detail: str | None = None) -> None:
        if self._bus is None:
            return
        with self._lock:
            alarm = get_alarm(self._conn, alarm_id)
        if alarm is not None:
            extra = {} if detail is None else {"detail": detail}
            self._bus.publish("alarm", {**alarm.to_json(), "change": what, **extra})
