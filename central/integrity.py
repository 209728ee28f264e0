"""Central's own checks of what agents say about themselves.

The broker's ACL confines each certificate to its own agent's topics. These
checks catch what an ACL cannot see, and what a broker without an ACL (a lab,
the demo) lets through: a payload that contradicts the topic it came on, a
birth replayed from the past, an eseq reused for something else. Each finding
is a :class:`Violation`; ingest stores the event all the same (the record is
never edited), counts the finding, keeps it in the agent's flags and tells its
listeners, and the alarm book raises a ``suspicious`` alarm for staff.

What holds for every genuine agent, and is checked:

- A boot id is 64 random bits, made once per process: it belongs to one agent.
  An event or birth carrying a boot id of another agent's birth is
  ``foreign-boot``.
- Every event of a boot is numbered from the one persistent counter while that
  boot runs, so the eseqs of two boots of one agent never interleave:
  ``boots-interleaved``.
- A live event (``replayed`` false: its first send) is sent on the current
  connection, right after that connection's birth, so it carries the boot of
  that birth. One that does not is held as unverified and a rebirth is asked
  for: if the answer names the event's boot, central had only missed a birth;
  if it names the boot central already held, the event's boot is no boot of
  this agent: ``unknown-boot``. (A birth of yet another, new boot proves
  nothing: the agent may have restarted before it answered.)
- A boot never comes back once a newer one has been born (``stale-boot``),
  and within a boot bdseq only grows: a birth below the bdseq of an earlier
  birth or of a death (Will or clean goodbye) already seen of that boot is a
  replay (``bdseq-backwards``).
- An eseq is never reused: the same eseq again with other content is
  ``eseq-conflict`` (a legitimate resend carries the same content and is only
  a duplicate).

A new boot with a lower bdseq is not flagged: an agent whose disk was full
could not save its bdseq, and a re-imaged one starts again from 1. Pure
bookkeeping (no MQTT, no SQL); the ingest thread owns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable, Mapping, Sequence

from central.presence import AgentRecord, PresenceState
from central.store import AgentRow

_LOGGER = logging.getLogger(__name__)

BOOTS_KEPT = 16  # boots remembered per agent (persisted in the agent's flags)
VIOLATIONS_KEPT = 20  # findings kept in the agent's flags for the record
UNVERIFIED_KEPT = 16  # unknown boots held per agent until its next birth (a forger may invent any number)
COUNTER_PREFIX = "integrity."


class Reason(StrEnum):
    """What was contradicted; the ``source`` of the ``suspicious`` alarm."""

    FOREIGN_BOOT = "foreign-boot"
    UNKNOWN_BOOT = "unknown-boot"
    BOOTS_INTERLEAVED = "boots-interleaved"
    STALE_BOOT = "stale-boot"
    BDSEQ_BACKWARDS = "bdseq-backwards"
    ESEQ_CONFLICT = "eseq-conflict"
    ESEQ_NEVER_MADE = "eseq-never-made"  # held above the ``last`` the agent answered a replay with
    EVENTS_GONE = "events-gone"  # the agent answered a replay: it no longer holds these
    QUARANTINED = "quarantined"  # a message that could not be stored, kept raw


@dataclass(frozen=True, slots=True)
class Violation:
    agent: str  # the agent whose topic it came on
    reason: Reason
    detail: str  # one line for staff and the log
    ts: int  # central's clock when it was noticed, UTC ms

    @property
    def counter(self) -> str:
        return COUNTER_PREFIX + str(self.reason)

    def to_flag(self) -> dict[str, Any]:
        return {"ts": self.ts, "reason": str(self.reason), "detail": self.detail}


@dataclass(slots=True)
class _AgentBoots:
    # boot id -> the highest bdseq of its births; in order of birth, the newest last.
    boots: dict[str, int] = field(default_factory=dict)
    # boot id -> [lowest, highest] eseq seen of it since central started.
    ranges: dict[str, list[int]] = field(default_factory=dict)
    top: str | None = None  # the boot whose range is highest: nothing lies above it
    # Boot ids of live events that no birth announced, with the first such eseq:
    # settled by the agent's next birth.
    unverified: dict[str, int] = field(default_factory=dict)


class IntegrityChecker:
    """The checks above, fed by the ingest thread in the order messages arrive. Not thread-safe."""

    def __init__(self) -> None:
        self._agents: dict[str, _AgentBoots] = {}
        self._owner: dict[str, str] = {}  # boot id -> the agent whose birth carried it

    # -- memory -----------------------------------------------------------------

    def load(self, agent: str, boots: Iterable[Sequence[Any]]) -> None:
        """Boots of ``agent`` as :meth:`export` gave them, oldest first (from the agent's flags)."""
        st = self._state(agent)
        for item in boots:
            if len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int):
                self._register(agent, st, item[0], item[1])

    @staticmethod
    def boots_of(row: AgentRow) -> list[list[Any]]:
        """What :meth:`load` takes for a stored agent: its saved boots, else the boot of its last birth."""
        saved = row.flags.get("boots")
        if isinstance(saved, list):
            return [list(item) for item in saved if isinstance(item, (list, tuple))]
        bdseq = row.birth.get("bdseq") if row.birth is not None else None
        if row.boot_id is not None and isinstance(bdseq, int):
            return [[row.boot_id, bdseq]]
        return []

    def export(self, agent: str) -> list[list[Any]]:
        """The boots of ``agent`` to persist, oldest first."""
        st = self._agents.get(agent)
        return [] if st is None else [[boot, bdseq] for boot, bdseq in st.boots.items()]

    def _state(self, agent: str) -> _AgentBoots:
        st = self._agents.get(agent)
        if st is None:
            st = self._agents[agent] = _AgentBoots()
        return st

    def _register(self, agent: str, st: _AgentBoots, boot_id: str, bdseq: int) -> None:
        if self._owner.setdefault(boot_id, agent) != agent:
            return
        st.boots.pop(boot_id, None)
        st.boots[boot_id] = bdseq
        while len(st.boots) > BOOTS_KEPT:
            oldest = next(iter(st.boots))
            del st.boots[oldest]
            if st.ranges.pop(oldest, None) is not None:
                st.top = max(st.ranges, key=lambda b: st.ranges[b][1], default=None)
            if self._owner.get(oldest) == agent:
                del self._owner[oldest]

    # -- births -----------------------------------------------------------------

    def on_birth(self, agent: str, boot_id: str, bdseq: int, rec: AgentRecord | None,
                 now_ms: int) -> list[Violation]:
        """Check a birth before presence takes it; ``rec`` is central's record of the agent until now.

        A birth with a violation must not be taken as the agent's: a replayed
        birth would otherwise bring an agent that has gone back online.
        """
        owner = self._owner.get(boot_id)
        if owner is not None and owner != agent:
            return [Violation(agent, Reason.FOREIGN_BOOT,
                              f"birth (bdseq {bdseq}) carries boot {boot_id}, a boot of agent {owner}", now_ms)]
        st = self._state(agent)
        latest = next(reversed(st.boots), None)
        found: list[Violation] = []
        if boot_id in st.boots and boot_id != latest:
            found.append(Violation(agent, Reason.STALE_BOOT,
                                   f"birth of boot {boot_id} (bdseq {bdseq}) after the newer boot {latest}", now_ms))
        elif boot_id == latest:
            highest = st.boots[boot_id]
            dead = rec.bdseq if rec is not None and rec.state in (PresenceState.OFFLINE,
                                                                   PresenceState.DISCONNECTED) else None
            if bdseq < highest:
                found.append(Violation(agent, Reason.BDSEQ_BACKWARDS,
                                       f"birth of boot {boot_id} with bdseq {bdseq}, below its earlier bdseq {highest}",
                                       now_ms))
            elif dead is not None and bdseq <= dead:
                found.append(Violation(agent, Reason.BDSEQ_BACKWARDS,
                                       f"birth of boot {boot_id} with bdseq {bdseq} after the {rec.state if rec else ''}"
                                       f" status of bdseq {dead}", now_ms))
        elif st.boots and bdseq <= max(st.boots.values()):
            _LOGGER.info("agent %s: new boot %s starts again at bdseq %s (was %s): an unsaved or reset outbox",
                         agent, boot_id, bdseq, max(st.boots.values()))
        if found:
            return found
        new_boot = boot_id not in st.boots
        self._register(agent, st, boot_id, max(bdseq, st.boots.get(boot_id, bdseq)))
        for other, eseq in st.unverified.items():
            if other == boot_id:
                _LOGGER.info("agent %s: the birth of boot %s had been missed; its events are the agent's", agent, other)
                continue
            if new_boot:
                # The agent restarted before it answered: the unverified boot may
                # have been its last one, whose birth central missed. Unprovable.
                _LOGGER.warning("agent %s: boot %s of live event eseq %s cannot be verified (the agent restarted as %s)",
                                agent, other, eseq, boot_id)
                continue
            found.append(Violation(agent, Reason.UNKNOWN_BOOT,
                                   f"live event eseq {eseq} of boot {other}, which no birth of this agent announced"
                                   f" (its birth says boot {boot_id})", now_ms))
        st.unverified.clear()
        return found

    # -- events -----------------------------------------------------------------

    def on_event(self, agent: str, boot_id: str, eseq: int, replayed: bool, rec: AgentRecord | None,
                 now_ms: int) -> tuple[Violation | None, bool]:
        """Check one event as it arrives; returns (a violation or None, whether to ask for a rebirth)."""
        owner = self._owner.get(boot_id)
        if owner is not None and owner != agent:
            return Violation(agent, Reason.FOREIGN_BOOT,
                             f"event eseq {eseq} carries boot {boot_id}, a boot of agent {owner}", now_ms), False
        st = self._agents.get(agent)
        if st is None:
            st = self._state(agent)
        if boot_id == st.top and eseq > st.ranges[boot_id][1]:
            st.ranges[boot_id][1] = eseq  # the hot path: the newest boot numbering on
        else:
            violation = self._place(agent, st, boot_id, eseq, now_ms)
            if violation is not None:
                return violation, False
        if replayed or boot_id in st.boots or boot_id in st.unverified:
            return None, False
        current = _current_boot(rec)
        if current is None or current == boot_id:
            return None, False
        # Central holds the birth of the connection this live event came on, and
        # it names another boot: ask the agent who it is before crying wolf.
        ask = not st.unverified
        if len(st.unverified) >= UNVERIFIED_KEPT:
            return None, False  # enough to tell genuine from forged; the first ones settle it
        st.unverified[boot_id] = eseq
        _LOGGER.info("agent %s: live event eseq %s of boot %s, but its birth says boot %s; asking for a rebirth",
                     agent, eseq, boot_id, current)
        return None, ask

    def _place(self, agent: str, st: _AgentBoots, boot_id: str, eseq: int, now_ms: int) -> Violation | None:
        """Widen the boot's eseq range to ``eseq``, unless that would cross another boot's range."""
        span = st.ranges.get(boot_id)
        if span is not None and span[0] <= eseq <= span[1]:
            return None
        lo, hi = (eseq, eseq) if span is None else (min(span[0], eseq), max(span[1], eseq))
        for other, (olo, ohi) in st.ranges.items():
            if other != boot_id and olo <= hi and lo <= ohi:
                return Violation(agent, Reason.BOOTS_INTERLEAVED,
                                 f"event eseq {eseq} of boot {boot_id} falls among eseqs {olo}..{ohi} of boot {other}",
                                 now_ms)
        if span is None:
            st.ranges[boot_id] = [lo, hi]
            if len(st.ranges) > BOOTS_KEPT:
                del st.ranges[next(iter(st.ranges))]
        else:
            span[0], span[1] = lo, hi
        st.top = max(st.ranges, key=lambda b: st.ranges[b][1])
        return None

    @staticmethod
    def eseq_conflict(agent: str, eseq: int, held: Mapping[str, Any], got: Mapping[str, Any],
                      now_ms: int) -> Violation:
        """The same eseq again with other content; the first stays stored."""
        keys = sorted(k for k in held.keys() | got.keys() if held.get(k) != got.get(k))
        return Violation(agent, Reason.ESEQ_CONFLICT,
                         f"eseq {eseq} sent again with a different {', '.join(keys)}; the first is kept", now_ms)


def _current_boot(rec: AgentRecord | None) -> str | None:
    """The boot of the birth central holds for the agent's current connection, if it holds that birth."""
    if rec is None or rec.birth is None or rec.state is not PresenceState.ONLINE:
        return None
    if rec.bdseq is not None and rec.birth_bdseq != rec.bdseq:
        return None
    return rec.boot_id
