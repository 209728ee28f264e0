"""The writer: the thread that stores what arrives, in batches, and acks it.

The MQTT session (central/session.py) only decodes each message on paho's
network thread and puts it on a queue. One writer thread drains the queue in
batches: in one transaction it inserts a batch of events, lets the writers
(the alarm book) decide their alarms, takes the agents' replay answers and
saves the agents' rows; commits; and only then publishes one ``ack`` per agent
and epoch (the highest eseq held with no gap below it), calls the listeners
and asks for what is missing. Committing per message would cap ingest at the disk's fsync
rate; a batch costs one fsync however large it is.

The session is persistent (MQTT v5, clean_start false, a fixed client id, a
long session expiry) so that what agents send while central restarts waits at
the broker. The broker is not what makes delivery certain (its persistence is
a periodic snapshot a crash loses): the agents' outboxes and central's acks
are. A message decoded but not yet committed when central dies was never
acked, so its agent sends it again.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Protocol, Sequence

import paho.mqtt.client as mqtt

from central.config import MqttConfig
from central.inbound import Counter, Decoder, Inbound, Rejected, RejectLog
from central.integrity import VIOLATIONS_KEPT, IntegrityChecker, Reason, Violation
from central.ledger import GAP_GRACE_S, REPLAY_INTERVAL_S, EseqLedger, GapAction, GapPolicy
from central.presence import REBIRTH_INTERVAL_S, AgentRecord, Presence, PresenceChange, PresenceState
from central.session import CentralSession
from central.store import AgentRow, Store, StoredEvent, dialect_of, quarantine
from central.timeest import ClockEstimator
from gridpatrol.base.logsafe import LogLimiter, escaped, shown
from wire import topics
from wire.codec import pack
from wire.messages import Ack, AgentStatus, Birth, Command, CommandName, CommandResponse, Event, EventKind, StateSnapshot, Telemetry

_LOGGER = logging.getLogger(__name__)

BATCH_MAX = 1000  # events per transaction; bounds how long an alarm can wait for the batch in hand
QUEUE_MAX = 200_000  # decoded messages waiting; beyond this they are dropped unacked (agents resend)
TICK_S = 0.2  # the writer wakes this often to look at gaps when nothing arrives
LINGER_S = 0.02  # under a stream, a batch waits this long for more (one fsync for many events)
LINGER_GAP_S = 0.002  # ... looking again this often; a look that finds nothing new ends it (a burst is not a stream)
STOP_TIMEOUT_S = 10.0
LOG_EVERY_S = 10.0
LOG_KINDS_MAX = 4096  # (what, agent) kinds remembered: a forger may invent any number of agent ids
REPLAYS_PER_S = 50.0  # replay requests to all agents together, on average ...
REPLAY_BURST = 200.0  # ... and at once; a gap past the budget waits its turn (counted)
REPLAYS_REMEMBERED = 10_000  # replay txns awaiting the agent's answer


class BatchWriter(Protocol):
    """Writes inside ingest's batch transaction (the alarm book): what belongs with the events commits with them.

    ``write(conn, inserted, suspicious)`` runs in the transaction, before the
    commit and the acks; ``suspicious`` is ``(agent, check, detail, ts_ms)``
    of what the batch found contradicting itself. ``committed(result)`` runs
    after the commit with what ``write`` returned. A ``write`` that raises
    fails the batch, which is then stored message by message.
    """

    def write(self, conn: Any, inserted: Sequence[StoredEvent],
              suspicious: Sequence[tuple[str, str, str, int]]) -> Any: ...

    def committed(self, result: Any) -> None: ...


class Listener(Protocol):
    """Told on the ingest thread, after the commit; must return at once (hand work to a thread of its own)."""

    def events_stored(self, events: Sequence[StoredEvent]) -> None: ...

    def presence_changed(self, agent: str, state: str, ts: int) -> None: ...

    # Optional: ``integrity_violation(agent, reason, detail, ts)``, told after the
    # batch in which central found an agent's message contradicting itself
    # (central/integrity.py); ``command_answered(agent, txn, ok, error)``.


_STOP = object()
_URGENT = object()  # wakes the writer: an urgent event waits in its own lane
URGENT_KINDS = frozenset({EventKind.ALARM, EventKind.TAMPER, EventKind.PANIC, EventKind.RESTORE})
# What an agent says about itself (status, birth, state) goes in the urgent lane too, in order with the
# alarms: an alarm must not overtake the birth that tells central whose boot it carries. Command answers
# stay with the events: a replay's answer must not overtake the replayed events it speaks of.
# Up to this many waiting in the lane; past it (only a flood of them does that) they queue with the events.
CONTROL_IN_LANE_MAX = 1000
_CONTROL: frozenset[type] = frozenset({AgentStatus, Birth, StateSnapshot})


class Ingest:
    """Subscribes to every agent, stores events once, acks, asks for what is missing.

    ``is_planned(agent_id)`` says whether the patrol plan knows an agent; it is
    called on the ingest thread at most once per agent per batch and must be a
    quick in-memory lookup. Without it every event is stored as planned: no
    plan, nothing to flag.
    """

    def __init__(self, config: MqttConfig, store: Store, *, listeners: Iterable[Listener] = (),
                 is_planned: Callable[[str], bool] | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, gap_grace_s: float = GAP_GRACE_S,
                 replay_interval_s: float = REPLAY_INTERVAL_S, rebirth_interval_s: float = REBIRTH_INTERVAL_S,
                 batch_max: int = BATCH_MAX, queue_max: int = QUEUE_MAX, writers: Iterable[BatchWriter] = (),
                 group: str | None = None) -> None:
        self._config = config
        self._group = group  # docs/scaling.md: other centrals store some of the same agents' events
        self._store = store
        self._listeners: tuple[Listener, ...] = tuple(listeners)
        self.is_planned = is_planned
        self._clock = clock
        self._monotonic = monotonic
        self._gap_policy = GapPolicy(gap_grace_s, replay_interval_s)
        self._writers: tuple[BatchWriter, ...] = tuple(writers)
        self._replays: dict[str, tuple[str, str]] = {}  # replay txn -> (agent, epoch) asked
        self._replay_budget = REPLAY_BURST
        self._budget_at = monotonic()
        # Lines a sender controls: one per kind and agent per LOG_EVERY_S, the rest counted in the next.
        self._log = LogLimiter(_LOGGER, lines=1, period_s=LOG_EVERY_S, clock=monotonic, kinds_max=LOG_KINDS_MAX)
        self._last_store_error: str | None = None
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent: deque[Any] = deque()  # appended by paho's thread, taken by the writer
        self._decoder = Decoder()
        self._presence = Presence(rebirth_interval_s=rebirth_interval_s)
        self._times = ClockEstimator()
        self._integrity = IntegrityChecker()
        self._violations: list[Violation] = []
        self._times_changed: set[str] = set()
        self._ledgers: dict[tuple[str, str], EseqLedger] = {}  # (agent, epoch) -> what is held
        self._gapped: set[tuple[str, str]] = set()
        self._counts_lock = threading.Lock()
        self._totals: dict[str, int] = {}
        self._deltas: dict[str, int] = {}
        self._overflowed = 0  # written by paho's thread only
        self._overflow_taken = 0
        self._reject_log = RejectLog(_LOGGER, monotonic=monotonic)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._start_error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self.last_beat = 0.0  # monotonic time the writer last went round its loop (for the watchdog)
        self.session = CentralSession(config, deliver=self._on_message, clock=clock, group=group)

    # -- life cycle -------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Attach a listener; call before start()."""
        self._listeners = (*self._listeners, listener)

    def add_writer(self, writer: BatchWriter) -> None:
        """Attach a writer to every batch's transaction; call before start()."""
        self._writers = (*self._writers, writer)

    def subscribe_extra(self, topic_filter: str, callback: Callable[[str, bytes, bool], None]) -> None:
        """Also subscribe to ``topic_filter`` on the session (see :meth:`CentralSession.subscribe_extra`)."""
        self.session.subscribe_extra(topic_filter, callback)

    def start(self) -> None:
        """Open the store, then connect (in the background, retrying until the broker answers)."""
        self._writer = threading.Thread(target=self._run, name="central-ingest", daemon=True)
        self._writer.start()
        self._ready.wait()
        if self._start_error is not None:
            self._writer.join()
            raise self._start_error
        self.session.start()

    def stop(self) -> None:
        """Finish the batch in hand, publish the offline status, disconnect.

        Messages still queued are dropped without an ack: their agents send
        them again to the next central.
        """
        self._stopping.set()
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join(STOP_TIMEOUT_S)
            if self._writer.is_alive():
                _LOGGER.error("the ingest thread did not finish within %s s", STOP_TIMEOUT_S)
        self.session.stop()

    @property
    def connected(self) -> bool:
        return self.session.connected

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed."""
        return self.session.wait_connected(timeout)

    @property
    def counters(self) -> dict[str, int]:
        """Every counter since the store was created (committed and pending)."""
        with self._counts_lock:
            out = dict(self._totals)
            for name, n in self._deltas.items():
                out[name] = out.get(name, 0) + n
        if self._overflowed > self._overflow_taken:
            out[Counter.QUEUE_OVERFLOW] = out.get(Counter.QUEUE_OVERFLOW, 0) + self._overflowed - self._overflow_taken
        return out

    @property
    def queue_depths(self) -> dict[str, int]:
        """Decoded messages waiting for the writer: the main queue and the urgent (alarm) lane."""
        return {"ingest": self._queue.qsize(), "ingest:urgent": len(self._urgent)}

    def send_command(self, agent_id: str, command: Command) -> bool:
        """Publish a command to an agent (thread-safe); False when it could not even be queued."""
        return self.session.send_command(agent_id, command)

    def alive(self, stall_s: float = 30.0) -> bool:
        """The writer thread runs and has turned within ``stall_s`` (it turns at least every TICK_S)."""
        writer = self._writer
        return writer is not None and writer.is_alive() and self._monotonic() - self.last_beat < stall_s

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish QoS 1 from any thread (the completion tracker's retained JSON); False if not queued."""
        return self.session.publish(topic, payload, retain=retain)

    @staticmethod
    def new_txn() -> str:
        return secrets.token_hex(6)

    # -- MQTT (paho's thread: decode, enqueue, return) --------------------------

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            if self._queue.qsize() >= self._queue_max or len(self._urgent) >= self._queue_max:
                self._overflowed += 1  # not acked, so its agent sends it again
                return
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                self._queue.put(Rejected(Counter.BAD_TOPIC, repr(msg._topic), "topic is not UTF-8"))
                return
            item = self._decoder.decode(topic, bytes(msg.payload), received_ts=int(self._clock() * 1000), retained=msg.retain)
            if item is None:
                return
            urgent = False
            if type(item) is Inbound:
                message = item.message
                if type(message) is Event:
                    urgent = message.kind in URGENT_KINDS
                else:
                    urgent = type(message) in _CONTROL and len(self._urgent) < CONTROL_IN_LANE_MAX
            if urgent:
                # An alarm never waits behind a flood of scans: its own lane, taken first by the writer,
                # with what the agents said about themselves before it.
                self._urgent.append(item)
                self._queue.put(_URGENT)
            else:
                self._queue.put(item)
        except Exception:  # an exception here would end paho's network thread
            _LOGGER.exception("could not decode a message on %r", getattr(msg, "_topic", b"?"))

    # -- the writer thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = self._store.connect()
            self._presence.load(self._store.list_agents(conn=self._conn))
            for rec in self._store.list_agents(conn=self._conn):
                self._times.load(rec.agent, rec.flags.get("clock", {}))
                self._integrity.load(rec.agent, IntegrityChecker.boots_of(rec))
            self._totals = self._store.counters(conn=self._conn)
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                self.last_beat = self._monotonic()
                items = self._gather()
                stop = bool(items) and items[-1] is _STOP  # _gather takes nothing past a stop
                if stop:
                    items.pop()
                self._process(items)
                if stop or self._stopping.is_set():
                    return
        finally:
            self._conn.close()

    def _gather(self) -> list[Any]:
        """The next batch: what is queued, and under a stream a moment's more.

        Each commit costs an fsync and a round of acks, so while messages keep
        coming the writer waits up to LINGER_S for more. Only while they keep
        coming: more than one message waiting when the writer comes round
        (they piled up during the last commit) starts the wait, and a pause of
        LINGER_GAP_S with nothing new ends it. A lone alarm, or the few
        messages one alarm brings (its event and the agent's state), is stored
        at once or within LINGER_GAP_S; a backlog draining at thousands a
        second fills batches of hundreds. The wait is a sleep, not a get per
        message: every wake-up of this thread takes the GIL from paho's, which
        is what limits the rate.

        Alarm, tamper, panic and restore events come through a lane of their
        own (``_urgent``): when one waits, the batch is cut short and the next
        one holds only what is in that lane, so an alarm waits at most for the
        batch in hand, never for a backlog of scans. Statuses, births and
        state snapshots share the lane (up to
        CONTROL_IN_LANE_MAX waiting), so an alarm never overtakes the birth
        or status that came before it: presence and the boot checks see them
        in the order the broker delivered them. Scans, telemetry and command
        answers may be overtaken; eseq order is the ledger's business, not the
        queue's.
        """
        if self._urgent:
            return self._take_urgent()
        try:
            first = self._queue.get(timeout=TICK_S)
        except queue.Empty:
            return []
        if first is _URGENT:
            return self._take_urgent()
        items = [first]
        self._take_waiting(items)
        if len(items) > 1:
            deadline = self._monotonic() + LINGER_S
            while (len(items) < self._batch_max and items[-1] is not _STOP and not self._urgent
                   and self._monotonic() < deadline):
                before = len(items)
                time.sleep(LINGER_GAP_S)
                self._take_waiting(items)
                if len(items) == before:
                    break
        return [item for item in items if item is not _URGENT]

    def _take_urgent(self) -> list[Any]:
        items: list[Any] = []
        while self._urgent and len(items) < self._batch_max:
            items.append(self._urgent.popleft())
        return items

    def _take_waiting(self, items: list[Any]) -> None:
        """Append what is queued now, up to the batch size, never past a stop, and not while an alarm waits."""
        get = self._queue.get_nowait
        while len(items) < self._batch_max and items[-1] is not _STOP and not self._urgent:
            try:
                items.append(get())
            except queue.Empty:
                return

    def _count(self, name: Counter, n: int = 1) -> None:
        with self._counts_lock:
            self._deltas[name] = self._deltas.get(name, 0) + n

    def _process(self, items: list[Any]) -> None:
        now = self._monotonic()
        events: list[StoredEvent] = []
        raws: dict[int, Inbound] = {}  # id(stored event) -> what came, for the quarantine
        changes: list[PresenceChange] = []
        commands: list[tuple[str, Command]] = []
        answers: list[tuple[str, str, CommandResponse, int]] = []
        planned: dict[str, bool] = {}
        heard: dict[str, int] = {}  # agents that sent data, and when last: handled once per batch
        for item in items:
            if type(item) is Rejected:
                self._reject(item)
                continue
            agent, _, msg, ts, retained = item
            kind = type(msg)
            if kind is Event:
                heard[agent] = ts
                unplanned = planned.get(agent)
                if unplanned is None:
                    unplanned = planned[agent] = not self._planned(agent)
                stored = self._stored(agent, msg, ts, retained, unplanned=unplanned)
                events.append(stored)
                raws[id(stored)] = item
                rec = self._presence.get(agent)
                if rec is not None and not rec.epoch and stored.epoch:
                    rec.epoch = stored.epoch  # an agent whose births predate epochs, or none heard yet
                    self._presence.mark_dirty(agent)
                found, ask = self._integrity.on_event(agent, msg.boot_id, msg.eseq, msg.replayed,
                                                      self._presence.get(agent), ts)
                if found is not None:
                    self._violation(found)
                if ask:
                    commands.append((agent, Command(CommandName.REBIRTH, self.new_txn())))
                    self._count(Counter.REBIRTH_REQUESTS)
            elif kind is AgentStatus:
                change = self._presence.on_status(agent, msg, ts, retained=retained)
                if change is not None:
                    changes.append(change)
                if msg.state == "online" and retained:
                    self._want_birth(agent, now, commands)  # connected before central came up
            elif kind is Birth:
                heard[agent] = ts
                found_in_birth = self._integrity.on_birth(agent, msg.boot_id, msg.bdseq, self._presence.get(agent), ts)
                for v in found_in_birth:
                    self._violation(v)
                if any(v.reason is not Reason.UNKNOWN_BOOT for v in found_in_birth):
                    continue  # a replayed or foreign birth is not the agent's: presence does not take it
                change = self._presence.on_birth(agent, msg, ts)
                self._presence.record(agent, ts).flags["boots"] = self._integrity.export(agent)
                if change is not None:
                    changes.append(change)
                if msg.mono_ms or msg.ts:
                    self._observe_time(agent, msg.boot_id, msg.ts, msg.mono_ms, msg.clock_synced, ts, live=True)
            elif kind is Telemetry:
                heard[agent] = ts
                self._presence.on_tele(agent, msg, ts)
                rec = self._presence.record(agent, ts)
                # A sample belongs to a boot: tele names none, so it counts only
                # while central holds the birth of the agent's current connection.
                if rec.boot_id is not None and rec.birth_bdseq is not None and rec.birth_bdseq == rec.bdseq:
                    self._observe_time(agent, rec.boot_id, msg.ts, msg.mono_ms, msg.clock_synced, ts, live=True)
            elif kind is StateSnapshot:
                self._presence.on_snapshot(agent, msg, ts, retained=retained)
                if not retained:
                    heard[agent] = ts
            elif kind is CommandResponse:
                heard[agent] = ts
                asked = self._replays.pop(msg.txn, None)
                if asked is not None and asked[0] == agent:
                    answers.append((agent, asked[1], msg, ts))
                if not msg.ok:
                    self._log.warning(("cmd-resp", agent), "agent %s answered txn %s: not ok: %s", agent, shown(msg.txn),
                                      escaped(msg.error or ""))
                # Whoever sent the command (the alarm book's alarm-ack) learns the answer.
                self._tell("command_answered", agent, msg.txn, msg.ok, msg.error, optional=True)
        for agent, ts in heard.items():
            self._presence.touch(agent, ts)
            self._want_birth(agent, now, commands)
        stale = self._presence.stale_statuses
        if stale:
            self._count(Counter.STALE_STATUS, stale)
            self._presence.stale_statuses = 0
        if not items and not self._gapped:
            return
        self._commit(events, changes, commands, now, answers, raws)

    def _commit(self, events: list[StoredEvent], changes: list[PresenceChange], commands: list[tuple[str, Command]],
                now: float, answers: Sequence[tuple[str, str, CommandResponse, int]] = (),
                raws: dict[int, Inbound] | None = None) -> None:
        """Store a batch in one transaction; if that fails, message by message, quarantining what fails alone."""
        with self._counts_lock:
            deltas, self._deltas = self._deltas, {}
        overflowed = self._overflowed
        deltas[Counter.QUEUE_OVERFLOW] = deltas.get(Counter.QUEUE_OVERFLOW, 0) + overflowed - self._overflow_taken
        done = self._transact(events, answers, commands, now, deltas, presence=True)
        if done is None:
            self._count(Counter.STORE_ERRORS)
            done = self._one_by_one(events, answers, commands, now, raws or {})
        self._overflow_taken = overflowed
        inserted, acks, pending = done
        if self._group is not None:
            for key in acks:
                self._catch_up(key, now)
        for key in sorted(acks):
            ledger = self._ledgers.get(key)
            if ledger is not None and ledger.contiguous > 0:
                self.session.publish(topics.ack(key[0]), Ack(ledger.contiguous, key[1]).to_payload())
        for agent, command in commands:
            if command.cmd is CommandName.REPLAY:
                self._replays[command.txn] = (agent, str(command.args.get("epoch", "")))  # what was asked
                while len(self._replays) > REPLAYS_REMEMBERED:
                    self._replays.pop(next(iter(self._replays)))
            self.session.publish(topics.cmd(agent), command.to_payload())
        for writer, result in pending:
            try:
                writer.committed(result)
            except Exception:
                self._count(Counter.LISTENER_ERRORS)
                _LOGGER.exception("%r failed after the commit", writer)
        if inserted:
            self._tell("events_stored", inserted)
        for change in changes:
            self._tell("presence_changed", change.agent, str(change.state), change.ts)
        # Violations the writers did not take (none were given): the listeners that want them.
        violations, self._violations = self._violations, []
        if not self._writers:
            told: set[tuple[str, str]] = set()
            for v in violations:
                if (v.agent, v.reason) not in told:  # a flood of forgeries is one notice per batch
                    told.add((v.agent, v.reason))
                    self._tell("integrity_violation", v.agent, str(v.reason), v.detail, v.ts, optional=True)

    def _transact(self, events: list[StoredEvent], answers: Sequence[tuple[str, str, CommandResponse, int]],
                  commands: list[tuple[str, Command]], now: float, deltas: dict[str, int], *, presence: bool,
                  quarantine: tuple[StoredEvent, Inbound | None, str] | None = None
                  ) -> tuple[list[StoredEvent], set[tuple[str, str]], list[tuple[Any, Any]]] | None:
        """One transaction: events, their alarms, replay answers, ledgers, agents, counters. None if it failed.

        On failure everything in memory that the transaction would have made
        true is put back as the store has it, and ``deltas`` wait for the
        next commit.
        """
        conn = self._conn
        acks: set[tuple[str, str]] = set()
        full: list[AgentRow] = []
        progress: list[AgentRow] = []
        touched: set[tuple[str, str]] = {(e.agent, e.epoch) for e in events}
        try:
            conn.execute(dialect_of(conn).begin)  # SQLite: BEGIN IMMEDIATE, the write lock at once
            if quarantine is not None:
                self._quarantine(conn, *quarantine, deltas)
                touched.add((quarantine[0].agent, quarantine[0].epoch))  # acked past at once
            # Replay answers first: they judge what was held before them. The agent publishes its
            # answer before any event it makes afterwards, so events of this batch above ``last``
            # may be new, and are not the answer's to quarantine.
            for agent, epoch, answer, ts in answers:
                touched.add((agent, epoch))
                self._answered(conn, agent, epoch, answer, ts, deltas)
            inserted = self._store.insert_events(conn, events)
            self._check_duplicates(events, inserted, deltas)
            ledgers: dict[tuple[str, str], EseqLedger] = {}  # this batch's streams, looked up once each
            for e in inserted:
                key = (e.agent, e.epoch)
                ledger = ledgers.get(key)
                if ledger is None:
                    ledger = ledgers[key] = self._ledger(key, now)
                ledger.add(e.eseq, now)
            self._gapped.update(key for key, ledger in ledgers.items() if ledger.gap)
            acks.update(touched)
            acks.update(self._look_at_gaps(now, commands, deltas))
            for agent, epoch in acks:
                self._presence.set_acked(agent, self._ledger((agent, epoch), now).contiguous, epoch)
            suspicious = self._suspicious()
            pending = [(w, w.write(conn, inserted, suspicious)) for w in self._writers]
            deltas[Counter.EVENTS_STORED] = deltas.get(Counter.EVENTS_STORED, 0) + len(inserted)
            deltas[Counter.EVENTS_UNPLANNED] = deltas.get(Counter.EVENTS_UNPLANNED, 0) + sum(
                1 for e in inserted if e.unplanned)
            if presence:
                for agent in self._times_changed:
                    self._presence.record(agent, 0).flags["clock"] = self._times.export(agent)
                    self._presence.mark_dirty(agent)
                self._times_changed.clear()
                full, progress = self._presence.take_dirty()
                self._store.save_agent_rows(conn, full, progress)
            self._store.add_counters(conn, deltas)
            conn.execute("COMMIT")
        except Exception as exc:
            self._last_store_error = f"{type(exc).__name__}: {_one_line(exc)}"
            self._log.warning(("store", type(exc).__name__), "could not store a batch of %s events (%s); trying again"
                                    " message by message", len(events), _one_line(exc))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._forget_uncommitted({agent for agent, _ in touched | acks}, [*full, *progress])
            with self._counts_lock:  # counted again with the next batch that commits
                for name in (Counter.EVENTS_STORED, Counter.EVENTS_UNPLANNED):
                    deltas.pop(name, None)
                for counter, n in deltas.items():
                    self._deltas[counter] = self._deltas.get(counter, 0) + n
                deltas.clear()
            return None
        with self._counts_lock:
            for counter, n in deltas.items():
                self._totals[counter] = self._totals.get(counter, 0) + n
        return inserted, acks, pending

    def _one_by_one(self, events: list[StoredEvent], answers: Sequence[tuple[str, str, CommandResponse, int]],
                    commands: list[tuple[str, Command]], now: float, raws: dict[int, Inbound]
                    ) -> tuple[list[StoredEvent], set[tuple[str, str]], list[tuple[Any, Any]]]:
        """After a failed batch: each event alone; one that fails alone is quarantined and acked past.

        Agents' rows and replay answers go last, on their own: a poison there
        must not take an event down with it.
        """
        inserted: list[StoredEvent] = []
        acks: set[tuple[str, str]] = set()
        pending: list[tuple[Any, Any]] = []

        def take(done: tuple[list[StoredEvent], set[tuple[str, str]], list[tuple[Any, Any]]] | None) -> bool:
            if done is None:
                return False
            inserted.extend(done[0])
            acks.update(done[1])
            pending.extend(done[2])
            return True

        for e in events:
            if take(self._transact([e], (), commands, now, {}, presence=False)):
                continue
            reason = self._last_store_error or "the store refused it"
            if not take(self._transact([], (), commands, now, {}, presence=False,
                                       quarantine=(e, raws.get(id(e)), reason))):
                _LOGGER.error("agent %s eseq %s could neither be stored nor quarantined; it stays unacked",
                              e.agent, e.eseq)
        if answers and not take(self._transact([], answers, commands, now, {}, presence=False)):
            _LOGGER.error("replay answers of %s could not be stored; the agents will be asked again",
                          sorted({a for a, _, _, _ in answers}))
        if not take(self._transact([], (), commands, now, {}, presence=True)):
            rows = self._presence.take_dirty()  # a poison in an agent's row: dropped, not retried forever
            self._count(Counter.STORE_ERRORS)
            _LOGGER.error("the rows of agents %s could not be saved; kept in memory only",
                          sorted({r.agent for r in [*rows[0], *rows[1]]}))
        return inserted, acks, pending

    def _quarantine(self, conn: Any, e: StoredEvent, raw: Inbound | None, reason: str, deltas: dict[str, int]) -> None:
        """Keep ``e`` raw with ``reason``, count its eseq as covered, and flag its agent (inside a transaction)."""
        payload = raw.message.to_payload() if raw is not None else b""
        quarantine.put(conn, agent=e.agent, topic=topics.evt(e.agent), payload=payload, reason=reason,
                       received_ts=e.received_ts, epoch=e.epoch, eseq=e.eseq)
        self._store.record_lost(conn, e.agent, e.epoch, e.eseq, e.eseq, e.received_ts, reason="quarantined")
        self._ledgers.pop((e.agent, e.epoch), None)  # rebuilt from the store, which now covers it
        deltas[Counter.QUARANTINED] = deltas.get(Counter.QUARANTINED, 0) + 1
        self._violation(Violation(e.agent, Reason.QUARANTINED,
                                  f"eseq {e.eseq} of epoch {e.epoch!r} could not be stored ({reason}); quarantined",
                                  e.received_ts), deltas)

    def _answered(self, conn: Any, agent: str, epoch: str, answer: CommandResponse, ts: int,
                  deltas: dict[str, int]) -> None:
        """The agent's answer to a replay: record what it no longer holds, quarantine what it never made."""
        last = answer.last
        gone = list(answer.gone or ())
        if last is None and not gone:
            return
        named: list[str] = []
        for first, end in gone:
            if last is not None:
                end = min(end, last)
            if first > end:
                continue
            self._store.record_lost(conn, agent, epoch, first, end, ts, reason="gone")
            deltas[Counter.EVENTS_LOST] = deltas.get(Counter.EVENTS_LOST, 0) + end - first + 1
            named.append(f"{first}-{end}" if end > first else str(first))
        if named:
            self._violation(Violation(agent, Reason.EVENTS_GONE,
                                      f"the agent no longer holds eseq {', '.join(named[:20])} of epoch {epoch!r}:"
                                      " recorded as lost", ts), deltas)
        if last is not None:
            never = self._store.delete_events(conn, agent, epoch, last)
            for e in never:
                quarantine.put(conn, agent=agent, topic=topics.evt(agent), payload=_content_payload(e),
                               reason=f"eseq {e.eseq} is above {last}, the last the agent made in this epoch",
                               received_ts=e.received_ts, epoch=epoch, eseq=e.eseq)
            if never:
                deltas[Counter.QUARANTINED] = deltas.get(Counter.QUARANTINED, 0) + len(never)
                shown = ", ".join(str(e.eseq) for e in never[:5]) + (" ..." if len(never) > 5 else "")
                self._violation(Violation(agent, Reason.ESEQ_NEVER_MADE,
                                          f"{len(never)} event(s) claimed eseq {shown} of epoch {epoch!r}; the agent"
                                          f" made none past {last}: quarantined", ts), deltas)
        self._ledgers.pop((agent, epoch), None)  # rebuilt from the store
        self._gapped.discard((agent, epoch))

    def _suspicious(self) -> list[tuple[str, str, str, int]]:
        """This batch's violations for the writers, one per agent and check."""
        out: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        for v in self._violations:
            out.setdefault((v.agent, str(v.reason)), (v.agent, str(v.reason), v.detail, v.ts))
        return list(out.values())

    def _forget_uncommitted(self, agents: set[str], rows: list[AgentRow]) -> None:
        """After a rollback: what central believes it holds must be what was committed."""
        self._presence.restore_dirty(rows)
        for agent in agents:
            row = self._store.get_agent(agent, conn=self._conn)
            # Never ack from memory what the rollback took away: back to the committed ack.
            self._presence.set_acked(agent, row.acked_eseq if row is not None else 0)
            for key in [k for k in self._ledgers if k[0] == agent]:
                self._ledgers.pop(key, None)  # rebuilt from the store when next needed
                self._gapped.discard(key)

    def _tell(self, method: str, *args: Any, optional: bool = False) -> None:
        for listener in self._listeners:
            if optional and not hasattr(listener, method):
                continue
            try:
                getattr(listener, method)(*args)
            except Exception:
                self._count(Counter.LISTENER_ERRORS)
                _LOGGER.exception("listener %r failed in %s", listener, method)

    def _planned(self, agent: str) -> bool:
        if self.is_planned is None:
            return True
        try:
            return bool(self.is_planned(agent))
        except Exception:
            self._count(Counter.LISTENER_ERRORS)
            _LOGGER.exception("is_planned(%r) failed; storing its events as planned", agent)
            return True

    def _stored(self, agent: str, e: Event, received_ts: int, retained: bool, *, unplanned: bool) -> StoredEvent:
        ts_est, estimated, changed = self._times.stamp(agent, e.boot_id, e.ts, e.mono_ms, e.clock_synced, received_ts,
                                                       not e.replayed and not retained)
        if changed:
            self._times_changed.add(agent)
        return StoredEvent.received(agent, e, received_ts, ts_est, estimated, unplanned)

    def _observe_time(self, agent: str, boot_id: str, ts: int, mono_ms: int, synced: bool, received_ts: int, *,
                      live: bool) -> None:
        if self._times.observe(agent, boot_id, ts=ts, mono_ms=mono_ms, clock_synced=synced,
                               received_ts=received_ts, live=live):
            self._times_changed.add(agent)  # saved with the agent's row once per batch

    def _want_birth(self, agent: str, now: float, commands: list[tuple[str, Command]]) -> None:
        if self._presence.needs_rebirth(agent, now):
            commands.append((agent, Command(CommandName.REBIRTH, self.new_txn())))
            self._count(Counter.REBIRTH_REQUESTS)
            _LOGGER.info("agent %s: no birth for its current connection; asking for a rebirth", agent)

    def _reject(self, item: Rejected) -> None:
        self._reject_log.log(item)  # logged before counted: whoever sees the count can see the line too
        self._count(item.reason)

    def _check_duplicates(self, events: list[StoredEvent], inserted: list[StoredEvent],
                          deltas: dict[str, int]) -> None:
        if len(inserted) == len(events):
            return  # all of them were new (insert_events returns those it inserted)
        fresh = {id(e) for e in inserted}
        duplicates = [e for e in events if id(e) not in fresh]
        if not duplicates:
            return
        deltas[Counter.EVENTS_DUPLICATE] = deltas.get(Counter.EVENTS_DUPLICATE, 0) + len(duplicates)
        stored = self._store.stored_contents(self._conn, (e.key for e in duplicates))
        for e in duplicates:
            held = stored.get(e.key)
            if held is None:
                continue
            got = e.content()
            if held != got:
                deltas[Counter.EVENTS_SUSPICIOUS] = deltas.get(Counter.EVENTS_SUSPICIOUS, 0) + 1
                self._log.warning(("conflict", e.agent), "agent %s sent eseq %s of epoch %r again with different"
                                  " content; kept the first: held %s, got %s", e.agent, e.eseq, e.epoch, shown(held), shown(got))
                self._violation(self._integrity.eseq_conflict(e.agent, e.eseq, held, got, e.received_ts), deltas)

    def _violation(self, v: Violation, deltas: dict[str, int] | None = None) -> None:
        """Count it, keep it in the agent's flags (saved with the batch), raise it with the batch's alarms."""
        self._log.warning(("violation", v.agent, str(v.reason)), "agent %s: %s: %s", v.agent, v.reason, escaped(v.detail))
        if deltas is None:
            with self._counts_lock:
                self._deltas[v.counter] = self._deltas.get(v.counter, 0) + 1
        else:
            deltas[v.counter] = deltas.get(v.counter, 0) + 1
        rec = self._presence.record(v.agent, v.ts)
        rec.flags["integrity"] = [*rec.flags.get("integrity", []), v.to_flag()][-VIOLATIONS_KEPT:]
        self._presence.mark_dirty(v.agent)
        self._violations.append(v)

    def _ledger(self, key: tuple[str, str], now: float) -> EseqLedger:
        ledger = self._ledgers.get(key)
        if ledger is None:
            agent, epoch = key
            rec = self._presence.record(agent, 0)
            after = rec.acked_eseq if epoch == rec.epoch else 0
            contiguous = self._store.contiguous_eseq(agent, epoch, after=after, conn=self._conn)
            above = set(self._store.eseqs_above(agent, epoch, contiguous, conn=self._conn))
            covered = [r for r in self._store.lost_ranges(agent, epoch, conn=self._conn) if r[1] > contiguous]
            ledger = self._ledgers[key] = EseqLedger(contiguous, above, progress_at=now, covered=covered)
        return ledger

    def _catch_up(self, key: tuple[str, str], now: float) -> None:
        """In a group: the ack point as the store has it, every central's committed events counted.

        Read after this central's commit, each statement on its own (autocommit),
        so it sees whatever any central committed before it: the ack never passes
        what is committed, and of two centrals that stored one agent's events at
        once, the one that reads last acks them all.
        """
        ledger = self._ledger(key, now)
        held = self._store.contiguous_eseq(key[0], key[1], after=ledger.contiguous, conn=self._conn)
        if held > ledger.contiguous:
            ledger.covered_to(held, now)
            self._presence.set_acked(key[0], ledger.contiguous, key[1])

    def _look_at_gaps(self, now: float, commands: list[tuple[str, Command]],
                      deltas: dict[str, int]) -> set[tuple[str, str]]:
        """Ask for replays of gaps that stand still, within the per-agent backoff and the total budget.

        Central never moves an ack past a gap on its own: only the events, or
        the agent's own answer (``last``, ``gone``), close it.
        """
        self._replay_budget = min(REPLAY_BURST, self._replay_budget + (now - self._budget_at) * REPLAYS_PER_S)
        self._budget_at = now
        for key in sorted(self._gapped):
            ledger = self._ledgers.get(key)
            if ledger is None or not ledger.gap:
                self._gapped.discard(key)
                continue
            agent, epoch = key
            if self._group is not None and ledger.next_action(now, self._gap_policy) is GapAction.REPLAY:
                self._catch_up(key, now)  # another central may hold what this one misses
                if not ledger.gap:
                    self._gapped.discard(key)
                    continue
            rec: AgentRecord | None = self._presence.get(agent)
            state = rec.state if rec is not None else PresenceState.UNKNOWN
            if state in (PresenceState.OFFLINE, PresenceState.DISCONNECTED):
                continue  # it sends its whole backlog when it is back
            if ledger.next_action(now, self._gap_policy) is not GapAction.REPLAY:
                continue
            if self._replay_budget < 1:
                deltas[Counter.REPLAYS_DEFERRED] = deltas.get(Counter.REPLAYS_DEFERRED, 0) + 1
                continue
            self._replay_budget -= 1
            start = ledger.replay_asked(now)
            commands.append((agent, Command(CommandName.REPLAY, self.new_txn(), {"from": start, "epoch": epoch})))
            deltas[Counter.REPLAY_REQUESTS] = deltas.get(Counter.REPLAY_REQUESTS, 0) + 1
            self._log.info(("replay", agent), "agent %s: eseq %s of epoch %r missing (holding %s above it);"
                           " asking for a replay", agent, start, epoch, len(ledger.above))
        return set()


def _one_line(exc: BaseException) -> str:
    return escaped(str(exc), 200)


def _content_payload(e: StoredEvent) -> bytes:
    return pack(e.content())  # content() carries the epoch
