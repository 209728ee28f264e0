"""What to send when: the delivery rule as pure logic, without MQTT or SQLite.

The outbox holds exactly the events ``(acked, last]``. The session tells the
:class:`Publisher` what happens (connected, new events appended, PUBACKs,
acks, central's status, replay commands) and asks it :meth:`Publisher.due`
which eseqs to publish now. Priorities, highest first:

1. live: events appended while connected go out at once, ahead of any
   backlog, so a new alarm never queues behind 50,000 old scans
   (``replayed = False`` on their first send);
2. resends: events sent earlier that no ack covered within ``resend_s``,
   in eseq order (so central's gap-free ack can move on);
3. backlog: everything else unacked, in eseq order (``replayed = True``).

A window caps the QoS 1 publishes waiting for their PUBACK, so a large backlog
drains at the broker's pace instead of piling up in the MQTT client's queue.
Whenever central's status turns online, and on every new connection, the whole
unacked backlog goes out again: a broker that drops messages drops the newest,
so a lost tail would leave central no gap to notice. While central is known to
be offline, resend timers wait: its return brings that full resend anyway.

Not thread-safe by design: only the session thread calls it.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

IN_FLIGHT_WINDOW = 64


@dataclass(frozen=True, slots=True)
class Send:
    eseq: int
    replayed: bool


class Publisher:
    """Decides which outbox events to (re)publish, and when."""

    def __init__(self, *, resend_s: float, window: int = IN_FLIGHT_WINDOW) -> None:
        if resend_s <= 0:
            raise ValueError(f"resend_s must be greater than 0, not {resend_s}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.resend_s = resend_s
        self.window = window
        self.connected = False
        self._acked = 0
        self._high = 0
        self._cursor = 1
        self._live: deque[int] = deque()
        self._live_set: set[int] = set()
        self._sent: dict[int, float] = {}  # eseq -> monotonic time of its last send, until acked
        self._timers: deque[tuple[float, int]] = deque()  # (sent at, eseq) in send order; lazily checked
        self._resend: list[int] = []  # heap of eseqs whose resend is due
        self._resend_set: set[int] = set()
        self._in_flight: set[int] = set()  # published, PUBACK not yet seen
        self._central: bool | None = None
        self._central_ts: int | None = None
        self.counters = {"published_live": 0, "published_replayed": 0, "resends_due": 0, "full_resends": 0}

    # -- what happened -----------------------------------------------------------

    def connect(self, *, acked_eseq: int, last_eseq: int) -> None:
        """A new MQTT connection: every unacked event is backlog again."""
        self._reset()
        self.connected = True
        self._acked = max(self._acked, acked_eseq)
        self._high = max(self._high, last_eseq)
        self._cursor = self._acked + 1

    def disconnect(self) -> None:
        self._reset()
        self.connected = False
        self._central = None
        self._central_ts = None

    def _reset(self) -> None:
        self._live.clear()
        self._live_set.clear()
        self._sent.clear()
        self._timers.clear()
        self._resend.clear()
        self._resend_set.clear()
        self._in_flight.clear()

    def appended(self, last_eseq: int) -> None:
        """The outbox now ends at ``last_eseq``; eseqs above the known end are new."""
        if last_eseq <= self._high:
            return
        if self.connected:
            for eseq in range(self._high + 1, last_eseq + 1):
                self._live.append(eseq)
                self._live_set.add(eseq)
        # Appended while disconnected: the next connect sends them as backlog.
        self._high = last_eseq

    def published(self, eseq: int) -> None:
        """The broker's PUBACK for ``eseq``: one more slot in the window."""
        self._in_flight.discard(eseq)

    def absent(self, eseq: int) -> None:
        """``eseq`` is not in the outbox (acked meanwhile, or gone): nothing of it to wait for or resend."""
        self._in_flight.discard(eseq)
        self._sent.pop(eseq, None)

    def acked(self, eseq: int) -> None:
        """Central holds everything up to ``eseq`` (already clamped by the outbox)."""
        if eseq > self._acked:
            self._acked = eseq
            self._high = max(self._high, eseq)
            self._cursor = max(self._cursor, eseq + 1)

    def central_status(self, online: bool, ts: int, *, retained: bool) -> bool:
        """Central's status message; True when it starts a full resend.

        A retained status is what the broker kept from before we subscribed:
        our connect sent everything anyway. A live one saying online after
        offline (or from a new central session, told by its ``ts``) means
        central may have missed the tail of what we sent.
        """
        prev, prev_ts = self._central, self._central_ts
        self._central, self._central_ts = online, ts
        if not online or retained or not self.connected:
            return False
        if prev is True and prev_ts == ts:
            return False
        self.counters["full_resends"] += 1
        self._resend_from(self._acked + 1)
        return True

    def replay(self, from_eseq: int) -> None:
        """Central asks for every unacked event from ``from_eseq`` again."""
        self._resend_from(max(from_eseq, self._acked + 1))

    def _resend_from(self, start: int) -> None:
        # Events on their way right now (no PUBACK yet) keep their timers.
        for eseq in [e for e in self._sent if e >= start and e not in self._in_flight]:
            del self._sent[eseq]
        self._cursor = min(self._cursor, start)

    # -- what to do ---------------------------------------------------------------

    @property
    def central_online(self) -> bool | None:
        return self._central

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent (acks may still be outstanding)."""
        return not self._live and not self._resend and self._next_backlog() is None

    def due(self, now: float) -> list[Send]:
        """The eseqs to publish now, in this order, within the free window."""
        if not self.connected:
            return []
        self._expire(now)
        slots = self.window - len(self._in_flight)
        sends: list[Send] = []
        while slots > 0 and self._live:
            eseq = self._live.popleft()
            self._live_set.discard(eseq)
            if eseq <= self._acked or eseq in self._sent:
                continue
            sends.append(self._send(eseq, replayed=False, now=now))
            slots -= 1
        while slots > 0 and self._resend:
            eseq = heapq.heappop(self._resend)
            self._resend_set.discard(eseq)
            if eseq <= self._acked or eseq in self._sent:
                continue
            sends.append(self._send(eseq, replayed=True, now=now))
            slots -= 1
        while slots > 0:
            backlog = self._next_backlog()
            if backlog is None:
                break
            self._cursor = backlog + 1
            sends.append(self._send(backlog, replayed=True, now=now))
            slots -= 1
        return sends

    def _next_backlog(self) -> int | None:
        """The lowest eseq at or above the cursor that nothing else will send."""
        eseq = max(self._cursor, self._acked + 1)
        while eseq <= self._high:
            if eseq not in self._sent and eseq not in self._live_set and eseq not in self._resend_set:
                self._cursor = eseq
                return eseq
            eseq += 1
        self._cursor = eseq
        return None

    def _send(self, eseq: int, *, replayed: bool, now: float) -> Send:
        self._sent[eseq] = now
        self._timers.append((now, eseq))
        self._in_flight.add(eseq)
        self.counters["published_replayed" if replayed else "published_live"] += 1
        return Send(eseq, replayed)

    def _expire(self, now: float) -> None:
        if self._central is False:
            return  # central is away: resending to nobody only loads the broker
        while self._timers and self._timers[0][0] + self.resend_s <= now:
            sent_at, eseq = self._timers.popleft()
            if self._sent.get(eseq) != sent_at:
                continue  # sent again since, or reset
            if eseq <= self._acked:
                del self._sent[eseq]
                continue
            if eseq in self._in_flight:
                # Not even PUBACKed yet: the connection is stalling, and the
                # keepalive will tell. Sending it twice would not help.
                self._sent[eseq] = now
                self._timers.append((now, eseq))
                continue
            del self._sent[eseq]
            heapq.heappush(self._resend, eseq)
            self._resend_set.add(eseq)
            self.counters["resends_due"] += 1

    def next_deadline(self) -> float | None:
        """Monotonic time of the next resend check, or None when none is pending."""
        if not self.connected or self._central is False or not self._timers:
            return None
        return self._timers[0][0] + self.resend_s
