"""Who is online: agents' retained status, their Will, their birth.

Availability follows Sparkplug's birth and death with ``bdseq``: an agent's
Will carries the bdseq of the connection it belongs to, and a Will whose bdseq
is not the agent's current one is a late death of an older connection (the
broker publishes it when the new connection takes the old one over) and is
ignored. Pure bookkeeping: no MQTT, no SQL; the ingest thread feeds it and
persists the rows it marks dirty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from central.store import AgentRow
from wire.messages import AgentState, AgentStatus, Birth, StateSnapshot, Telemetry

_LOGGER = logging.getLogger(__name__)

REBIRTH_INTERVAL_S = 30.0  # at most one rebirth request per agent this often


STATUS_BDSEQ = "status_bdseq"  # in the agent's flags: the bdseq of its last online status, which its Will carries


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the Will: the connection died
    DISCONNECTED = "disconnected"  # a clean shutdown
    UNKNOWN = "unknown"  # heard of, but never a status or birth


@dataclass(frozen=True, slots=True)
class PresenceChange:
    agent: str
    state: PresenceState
    ts: int  # central's clock, UTC ms


@dataclass(slots=True)
class AgentRecord:
    """What central knows of one agent; mutable, owned by the ingest thread."""

    agent: str
    state: PresenceState = PresenceState.UNKNOWN
    bdseq: int | None = None  # the current connection's, from its online status or birth
    birth_bdseq: int | None = None  # the bdseq of the birth held
    boot_id: str | None = None
    birth: dict[str, Any] | None = None
    last_seen: int | None = None
    first_seen: int | None = None
    acked_eseq: int = 0
    tele: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    epoch: str = ""  # the agent's current outbox epoch (from its births, else its first events)
    rebirth_asked_at: float | None = None  # monotonic; not persisted

    def row(self) -> AgentRow:
        return AgentRow(
            agent=self.agent,
            state=None if self.state is PresenceState.UNKNOWN else str(self.state),
            bdseq=self.bdseq,
            boot_id=self.boot_id,
            last_seen=self.last_seen,
            acked_eseq=self.acked_eseq,
            first_seen=self.first_seen,
            birth=self.birth,
            tele=self.tele,
            snapshot=self.snapshot,
            flags=MappingProxyType(dict(self.flags)),
            epoch=self.epoch,
        )

    @classmethod
    def from_row(cls, row: AgentRow) -> AgentRecord:
        try:
            state = PresenceState(row.state) if row.state is not None else PresenceState.UNKNOWN
        except ValueError:
            state = PresenceState.UNKNOWN
        birth = dict(row.birth) if row.birth is not None else None
        birth_bdseq = birth.get("bdseq") if birth is not None else None
        return cls(
            agent=row.agent, state=state, bdseq=row.bdseq,
            birth_bdseq=birth_bdseq if isinstance(birth_bdseq, int) else None,
            boot_id=row.boot_id, birth=birth, last_seen=row.last_seen, first_seen=row.first_seen,
            acked_eseq=row.acked_eseq, tele=_dict(row.tele), snapshot=_dict(row.snapshot), flags=dict(row.flags),
            epoch=row.epoch,
        )


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


class Presence:
    """Agent records and the rules that move their state. Not thread-safe."""

    def __init__(self, *, rebirth_interval_s: float = REBIRTH_INTERVAL_S) -> None:
        self._rebirth_interval_s = rebirth_interval_s
        self._records: dict[str, AgentRecord] = {}
        self._dirty: set[str] = set()  # rows to write in full
        self._moved: set[str] = set()  # rows where only last_seen or acked_eseq changed
        self.stale_statuses = 0  # Wills of older connections, ignored

    def load(self, rows: Iterable[AgentRow]) -> None:
        for row in rows:
            self._records[row.agent] = AgentRecord.from_row(row)

    def get(self, agent: str) -> AgentRecord | None:
        return self._records.get(agent)

    def record(self, agent: str, now_ms: int) -> AgentRecord:
        rec = self._records.get(agent)
        if rec is None:
            rec = self._records[agent] = AgentRecord(agent=agent, first_seen=now_ms)
            self._dirty.add(agent)
        return rec

    def touch(self, agent: str, now_ms: int) -> AgentRecord:
        """The agent itself sent something just now."""
        rec = self.record(agent, now_ms)
        rec.last_seen = now_ms
        self._moved.add(agent)
        return rec

    def set_acked(self, agent: str, eseq: int, epoch: str | None = None) -> None:
        """Central's ack point in the agent's current epoch (``epoch``: only if it is that one)."""
        rec = self.record(agent, 0)
        if epoch is not None and epoch != rec.epoch:
            return
        rec.acked_eseq = eseq
        self._moved.add(agent)

    def mark_dirty(self, agent: str) -> None:
        self._dirty.add(agent)

    def take_dirty(self) -> tuple[list[AgentRow], list[AgentRow]]:
        """Rows to save in the current transaction: (in full, only last_seen and acked_eseq).

        Most batches only move last_seen and acked_eseq; writing those alone
        spares re-encoding each agent's birth, telemetry and snapshot per batch.
        """
        full = [self._records[a].row() for a in sorted(self._dirty)]
        light = [self._records[a].row() for a in sorted(self._moved - self._dirty)]
        self._dirty.clear()
        self._moved.clear()
        return full, light

    def restore_dirty(self, rows: Iterable[AgentRow]) -> None:
        """The transaction that was to save ``rows`` failed: save them next time."""
        self._dirty.update(r.agent for r in rows)

    def _move(self, rec: AgentRecord, state: PresenceState, now_ms: int) -> PresenceChange | None:
        self._dirty.add(rec.agent)
        if rec.state is state:
            return None
        rec.state = state
        return PresenceChange(rec.agent, state, now_ms)

    def on_status(self, agent: str, status: AgentStatus, now_ms: int, *, retained: bool) -> PresenceChange | None:
        rec = self.touch(agent, now_ms) if not retained else self.record(agent, now_ms)
        if status.state is AgentState.ONLINE:
            if self._stale_online(rec, status.bdseq):
                self.stale_statuses += 1
                _LOGGER.info("agent %s: ignoring online status of bdseq %s (current connection has bdseq %s, %s)",
                             agent, status.bdseq, rec.bdseq, rec.state)
                return None
            rec.bdseq = status.bdseq
            rec.flags[STATUS_BDSEQ] = status.bdseq
            return self._move(rec, PresenceState.ONLINE, now_ms)
        if rec.bdseq is not None and status.bdseq != rec.bdseq and status.bdseq != rec.flags.get(STATUS_BDSEQ):
            self.stale_statuses += 1
            _LOGGER.info("agent %s: ignoring %s status of bdseq %s (current connection has bdseq %s)",
                         agent, status.state, status.bdseq, rec.bdseq)
            return None
        rec.bdseq = status.bdseq
        return self._move(rec, PresenceState(str(status.state)), now_ms)

    @staticmethod
    def _stale_online(rec: AgentRecord, bdseq: int) -> bool:
        """An online status of a connection older than the current one, or of one whose death was seen.

        Every connection takes a higher bdseq, so such a status is a replay:
        taken, it would show an agent that has gone as online and silence its
        offline alarm. An agent that really lost its bdseq (a full disk, a
        re-imaged card) comes back online all the same with its birth.
        """
        # Against the last online status when there is one: a birth (which
        # anyone who can publish on the agent's topics can forge) must not make
        # the agent's own next connection look old.
        ref = rec.flags.get(STATUS_BDSEQ, rec.bdseq)
        if not isinstance(ref, int):
            return False
        ended = rec.state in (PresenceState.OFFLINE, PresenceState.DISCONNECTED)
        return bdseq < ref or (bdseq == ref and ended)

    def on_birth(self, agent: str, birth: Birth, now_ms: int) -> PresenceChange | None:
        """Take the agent's inventory and connection; a birth is sent on connect.

        A birth moves ``bdseq`` (an agent that lost its counter comes back
        with its birth), but never the bdseq of the agent's last online status,
        which its Will is also matched against: no birth, forged or not, can
        make central ignore the agent's death.
        """
        rec = self.touch(agent, now_ms)
        rec.bdseq = rec.birth_bdseq = birth.bdseq
        epoch = birth.epoch
        if epoch and epoch != rec.epoch:
            rec.epoch = epoch
            rec.acked_eseq = 0  # an outbox of its own: acked_eseq counts in it from now on
        rec.boot_id = birth.boot_id
        rec.birth = {
            "bdseq": birth.bdseq, "boot_id": birth.boot_id, "fw": birth.fw, "config_hash": birth.config_hash,
            "versions": dict(birth.versions),
            "inventory": {kind: [dict(item) for item in items] for kind, items in birth.inventory.items()},
            "received_ts": now_ms,
        }
        return self._move(rec, PresenceState.ONLINE, now_ms)  # a birth is sent on connect

    def on_tele(self, agent: str, tele: Telemetry, now_ms: int) -> None:
        rec = self.touch(agent, now_ms)
        rec.tele = {
            "uptime_s": tele.uptime_s, "outbox_depth": tele.outbox_depth, "reconnects": tele.reconnects,
            "clock_synced": tele.clock_synced, "ts": tele.ts, "cpu_temp_c": tele.cpu_temp_c, "rss_kb": tele.rss_kb,
            "counters": dict(tele.counters), "received_ts": now_ms,
        }

    def on_snapshot(self, agent: str, snapshot: StateSnapshot, now_ms: int, *, retained: bool) -> None:
        rec = self.touch(agent, now_ms) if not retained else self.record(agent, now_ms)
        rec.snapshot = {"ts": snapshot.ts, "inputs": dict(snapshot.inputs), "outputs": dict(snapshot.outputs),
                        "latched": list(snapshot.latched)}
        self._dirty.add(agent)

    def needs_rebirth(self, agent: str, now: float) -> bool:
        """True (at most once per interval) when central holds no birth of the agent's current connection."""
        rec = self._records.get(agent)
        if rec is None:
            return False
        if rec.birth is not None and (rec.bdseq is None or rec.birth_bdseq == rec.bdseq):
            return False
        if rec.rebirth_asked_at is not None and now - rec.rebirth_asked_at < self._rebirth_interval_s:
            return False
        rec.rebirth_asked_at = now
        return True
