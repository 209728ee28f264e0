"""A group's feed: what the other members stored, told to this member's bus, tracker and Home Assistant.

In a group (``[ingest] group``, docs/scaling.md) the broker gives each event to
one member, which stores it and tells its own listeners. The dashboard of
every member must show every event live, and the leader's completion tracker
must count (and answer, ``feedback``) every member's scans; so each member
also learns what the others committed:

- **Sending**, inside ingest's transaction (:meth:`GroupFeed.write`, a batch
  writer like the alarm book): one ``NOTIFY`` naming the member and the eseq
  ranges it inserted, ``{"m": "central-a", "e": [["gate-1", "ep", 5, 9]]}``.
  PostgreSQL delivers it when that transaction commits, never for one rolled
  back, so a row is announced once, by the one member that inserted it.
- **Alarm changes** are announced after the fact: the member's own ``alarm``
  notices (raised, escalated, acknowledged, restored, a snapshot) are sent on
  a thread of the feed's, ``{"m": ..., "a": [[12, "raised"]]}``; the others
  publish ``{"id": 12, "change": "raised"}`` and their dashboard reads the row.
- **Receiving**, on a thread of its own with a listening connection: a member
  skips its own notifications, reads the rows of the ranges the others
  announced (at most CHUNK_EVENTS a query) and hands them to its listeners:
  the bus (``event`` notices, as for its own events), the completion tracker
  and Home Assistant. Never the alarm book: the member that stored an event
  wrote its alarms in the same transaction.

Bounded: at most PENDING_MAX events wait to be read. A flood past that (another
member draining a backlog of 20,000 scans) is dropped, not queued: once the
feed has caught up, each listener with a ``resync()`` reads the store again
(the tracker) and the bus carries a ``resync`` notice, on which every browser
reloads. The same happens after the listening connection was lost (what was
committed meanwhile was never heard) and on a payload that cannot be read.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from central.bus import Bus, Notice
from central.store import Store, StoredEvent
from central.store import feed as sql
from gridpatrol.base.logsafe import LogLimiter, escaped

_LOGGER = logging.getLogger(__name__)

PENDING_MAX = 5000  # events announced by others and not yet read; past it, dropped and resynced
CHUNK_EVENTS = 500  # events read (and handed on) at once
RECEIVE_MAX = 200  # notifications taken before the next chunk is read
WAIT_S = 0.5  # how long the receiver waits for a notification when it has nothing to do
RETRY_S = 1.0  # after the listening connection failed
RESYNC_AFTER_S = 5.0  # a flood that does not end still gets a resync this often
OUTBOX_MAX = 1000  # alarm notices waiting to be sent; past it, the others are told to resync
LISTEN_WAIT_S = 5.0  # start() waits this long for the first LISTEN

Range = tuple[str, str, int, int]  # (agent, epoch, first eseq, last eseq)


def ranges_of(events: Iterable[StoredEvent]) -> list[Range]:
    """The runs of consecutive eseqs of ``events``, per agent and epoch."""
    by_stream: dict[tuple[str, str], list[int]] = {}
    for e in events:
        by_stream.setdefault((e.agent, e.epoch), []).append(e.eseq)
    out: list[Range] = []
    for (agent, epoch), eseqs in by_stream.items():
        eseqs.sort()
        first = last = eseqs[0]
        for eseq in eseqs[1:]:
            if eseq != last + 1:
                out.append((agent, epoch, first, last))
                first = eseq
            last = eseq
        out.append((agent, epoch, first, last))
    return out


def payloads(member: str, key: str, items: Sequence[Sequence[Any]]) -> list[str]:
    """``{"m": member, key: [...items]}`` in as few payloads as fit PostgreSQL's limit.

    An item too large to fit any payload (it cannot happen with valid agent ids
    and epochs) becomes a ``resync`` for the others: never silently lost.
    """
    head = json.dumps({"m": member, key: []}, separators=(",", ":"))[:-2]  # '{"m":"...","e":['
    out: list[str] = []
    parts: list[str] = []
    size = len(head.encode()) + 2
    for item in items:
        text = json.dumps(list(item), separators=(",", ":"))
        n = len(text.encode()) + 1
        if len(head.encode()) + n + 2 > sql.PAYLOAD_MAX:
            out.append(resync_payload(member))
            continue
        if parts and size + n > sql.PAYLOAD_MAX:
            out.append(head + ",".join(parts) + "]}")
            parts, size = [], len(head.encode()) + 2
        parts.append(text)
        size += n
    if parts:
        out.append(head + ",".join(parts) + "]}")
    return out


def resync_payload(member: str) -> str:
    return json.dumps({"m": member, "resync": True}, separators=(",", ":"))


@dataclass(slots=True)
class Announcement:
    """One notification, read: who sent it, the ranges it stored, the alarm changes, or a resync."""

    member: str
    ranges: list[Range] = field(default_factory=list)
    alarms: list[tuple[int, str]] = field(default_factory=list)
    resync: bool = False


def parse(payload: str) -> Announcement:
    """Read a notification's payload; ValueError says what is wrong with one that is not the feed's."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"feed payload is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("m"), str) or not body["m"]:
        raise ValueError("feed payload names no member (\"m\")")
    out = Announcement(body["m"], resync=body.get("resync") is True)
    for item in _list(body, "e"):
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str) and isinstance(item[1], str)
                and all(type(v) is int for v in item[2:]) and 0 < item[2] <= item[3]):
            raise ValueError(f"feed payload: {str(item)[:80]!r} is not [agent, epoch, first, last]")
        out.ranges.append((item[0], item[1], item[2], item[3]))
    for item in _list(body, "a"):
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], str)):
            raise ValueError(f"feed payload: {str(item)[:80]!r} is not [alarm id, change]")
        out.alarms.append((item[0], item[1]))
    return out


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"feed payload: {key!r} is not a list")
    return value


class GroupFeed:
    """One member's feed (see the module's docstring); ``member`` is its MQTT client id, unique in the group.

    ``listeners`` get ``events_stored(events)`` for the events other members
    stored, on the feed's thread, and ``resync()`` (those that have it) when
    the feed missed some.
    """

    def __init__(self, store: Store, group: str, *, member: str, bus: Bus, listeners: Iterable[Any] = (),
                 pending_max: int = PENDING_MAX, chunk_events: int = CHUNK_EVENTS) -> None:
        self.member = member
        self.channel = sql.channel(group)
        self._store = store
        self._bus = bus
        self._listeners = tuple(listeners)
        self._pending_max = pending_max
        self._chunk = chunk_events
        self._pending: deque[Range] = deque()
        self._pending_events = 0
        self._missed_at: float | None = None  # monotonic time of the first miss not yet resynced
        self._outbox: deque[tuple[int, str]] = deque()
        self._outbox_overflow = False
        self._out_cond = threading.Condition()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._receiver: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._unsubscribe: Any = None
        self._log = LogLimiter(_LOGGER, lines=1, period_s=10.0)
        self.last_beat = time.monotonic()
        self.received = 0  # events of other members handed on
        self.dropped = 0  # events announced and not handed on (past PENDING_MAX): resynced instead
        self.resyncs = 0

    # -- ingest's batch writer (its thread, inside its transaction) ----------------------

    def write(self, conn: Any, inserted: Sequence[StoredEvent], suspicious: Sequence[Any] = ()) -> None:
        """Announce the batch's new events; delivered to the other members when the batch commits."""
        if inserted:
            for payload in payloads(self.member, "e", ranges_of(inserted)):
                sql.announce(conn, self.channel, payload)

    def committed(self, result: None) -> None:
        """Nothing to do after the commit: PostgreSQL delivers the notification then."""

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Listen (waiting up to LISTEN_WAIT_S for it, so what the tracker reads next is not missed), then send."""
        self._stop.clear()
        self._unsubscribe = self._bus.subscribe(self._on_notice)
        self._receiver = threading.Thread(target=self._receive_loop, name="group-feed", daemon=True)
        self._receiver.start()
        self._sender = threading.Thread(target=self._send_loop, name="group-feed-send", daemon=True)
        self._sender.start()
        if not self._listening.wait(LISTEN_WAIT_S):
            _LOGGER.warning("group feed: not listening yet; what others store is resynced once it is")

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._out_cond:
            self._out_cond.notify()
        for thread in (self._sender, self._receiver):
            if thread is not None:
                thread.join(10)
        self._sender = self._receiver = None

    @property
    def depth(self) -> int:
        """Events the others announced that wait to be read (at most PENDING_MAX)."""
        return self._pending_events

    @property
    def counters(self) -> dict[str, int]:
        """For /metrics: ``group_feed.received``, ``group_feed.dropped`` (resynced instead), ``group_feed.resyncs``."""
        return {"group_feed.received": self.received, "group_feed.dropped": self.dropped,
                "group_feed.resyncs": self.resyncs}

    def alive(self, stall_s: float) -> bool:
        threads = (self._receiver, self._sender)
        return (all(t is not None and t.is_alive() for t in threads)
                and time.monotonic() - self.last_beat < stall_s)

    # -- alarm changes made here: queued on the publisher's thread, sent by the feed's -----

    def _on_notice(self, notice: Notice) -> None:
        if notice.topic != "alarm" or threading.current_thread() is self._receiver:
            return  # the alarm notices the receiver publishes came from the others
        alarm_id, change = notice.data.get("id"), notice.data.get("change")
        if type(alarm_id) is not int or not isinstance(change, str):
            return
        with self._out_cond:
            if len(self._outbox) >= OUTBOX_MAX:
                self._outbox_overflow = True
            else:
                self._outbox.append((alarm_id, change))
            self._out_cond.notify()

    def _send_loop(self) -> None:
        while True:
            with self._out_cond:
                while not self._outbox and not self._outbox_overflow and not self._stop.is_set():
                    self._out_cond.wait()
                if self._stop.is_set():
                    return
                items, self._outbox = list(self._outbox), deque()
                overflow, self._outbox_overflow = self._outbox_overflow, False
            texts = payloads(self.member, "a", items) + ([resync_payload(self.member)] if overflow else [])
            try:
                with closing(self._store.connect(readonly=True)) as conn:
                    for text in texts:
                        sql.announce(conn, self.channel, text)
            except Exception as exc:  # the store's errors (psycopg's are Exceptions): the next change tries again
                self._log.warning(("send",), "group feed: %s alarm change(s) not told to the other members: %s",
                                  len(items), escaped(str(exc), 200))

    # -- what the others stored: the receiver's thread -------------------------------------

    def _receive_loop(self) -> None:
        listening: sql.Listening | None = None
        lost = False
        try:
            while not self._stop.is_set():
                self.last_beat = time.monotonic()
                try:
                    if listening is None:
                        listening = sql.Listening(self._store, self.channel)
                        self._listening.set()
                        if lost:
                            _LOGGER.warning("group feed: listening again; reading the store again for what was missed")
                            self._missed()
                    got = listening.receive(0 if self._pending else WAIT_S, RECEIVE_MAX)
                    for _pid, payload in got:
                        self._take(payload)
                    if self._pending:
                        self._hand_on()
                    if self._missed_at is not None and not self._pending and (
                            not got or time.monotonic() - self._missed_at >= RESYNC_AFTER_S):
                        self._resync()
                except Exception as exc:  # the store's errors, and any surprise: the feed must go on
                    self._log.warning(("receive", type(exc).__name__), "group feed: %s; connecting again",
                                      escaped(str(exc), 200))
                    if listening is not None:
                        try:
                            listening.close()
                        except Exception:  # already broken
                            pass
                        listening = None
                    lost = True
                    self._drop_pending()
                    self._stop.wait(RETRY_S)
        finally:
            if listening is not None:
                listening.close()

    def _take(self, payload: str) -> None:
        try:
            got = parse(payload)
        except ValueError as exc:
            self._log.warning(("parse",), "group feed: %s; reading the store again instead", escaped(str(exc), 200))
            self._missed()
            return
        if got.member == self.member:
            return  # its own: told to its listeners by its ingest already
        if got.resync:
            self._missed()
        for alarm_id, change in got.alarms:
            self._bus.publish("alarm", {"id": alarm_id, "change": change})
        for r in got.ranges:
            n = r[3] - r[2] + 1
            if self._missed_at is not None or self._pending_events + n > self._pending_max:
                # Past the bound: stop reading event by event; a resync covers it all once caught up.
                self.dropped += n
                self._drop_pending()
                continue
            self._pending.append(r)
            self._pending_events += n

    def _drop_pending(self) -> None:
        if self._pending_events:
            self.dropped += self._pending_events
            self._pending.clear()
            self._pending_events = 0
        self._missed()

    def _missed(self) -> None:
        if self._missed_at is None:
            self._missed_at = time.monotonic()

    def _hand_on(self) -> None:
        """Read the next chunk of what the others announced, and give it to the listeners."""
        chunk: list[Range] = []
        room = self._chunk
        while self._pending and room > 0:
            agent, epoch, first, last = self._pending.popleft()
            if last - first + 1 > room:  # the rest waits for the next chunk
                self._pending.appendleft((agent, epoch, first + room, last))
                last = first + room - 1
            chunk.append((agent, epoch, first, last))
            room -= last - first + 1
            self._pending_events -= last - first + 1
        events = self._store.events_in(chunk)
        self.received += len(events)
        self._tell("events_stored", events)

    def _resync(self) -> None:
        self._missed_at = None
        self.resyncs += 1
        _LOGGER.warning("group feed: %s events of other members dropped so far; listeners read the store again",
                        self.dropped)
        self._bus.publish("resync", {})
        self._tell("resync")

    def _tell(self, method: str, *args: Any) -> None:
        for listener in self._listeners:
            if hasattr(listener, method):
                try:
                    getattr(listener, method)(*args)
                except Exception:
                    _LOGGER.exception("group feed: %r failed in %s", listener, method)
