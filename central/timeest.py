"""When did it really happen: central's estimate of an event's time.

An agent stamps each event with ``ts`` (its wall clock, UTC ms), ``mono_ms``
(its monotonic clock, which starts at boot and never jumps) and
``clock_synced``. A Pi without a real-time clock boots with a wall clock that
may be days off until NTP catches up, so ``ts`` alone cannot be trusted when
``clock_synced`` is false. Within one boot (one ``boot_id``) the monotonic
clock is a good ruler; all we need is its offset to UTC:

1. ``clock_synced``: ``ts`` is the answer.
2. The agent reported a synced sample for the same boot (birth, tele or
   event with ``clock_synced``): offset = ts - mono_ms of the latest one.
3. Live (not replayed) messages of that boot: received_ts - mono_ms is the
   offset plus the network delay; the smallest seen is the best estimate
   (the NTP minimum filter).
4. Nothing known for that boot: ``ts`` as sent.

Estimates (2 to 4) never lie after the time central received the event, nor
before the earliest ``ts`` an event may carry (``TS_MIN``): an offset from a
hostile or broken sample can be far past 64 bits, and an estimate the store
cannot hold would fail every batch that contains it.
Nothing is recomputed retroactively: an event keeps the estimate it got when
it arrived (a later synced sample would improve it, but rewriting stored
history behind the completion engine's back is not worth it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_BOOTS_PER_AGENT = 4  # replays rarely reach further back than the last reboot or two
TS_MIN = -(2**63 - 1)  # the earliest ts wire.messages lets an event carry


@dataclass(slots=True)
class _Boot:
    synced: int | None = None  # ts - mono_ms from the latest synced sample
    live: int | None = None  # min(received_ts - mono_ms) over live samples


@dataclass(frozen=True, slots=True)
class Estimate:
    ts_est: int
    estimated: bool  # True when not taken from a synced clock


@dataclass(slots=True)
class ClockEstimator:
    """Offsets per (agent, boot_id); fed with samples, asked for estimates. Not thread-safe."""

    _boots: dict[str, dict[str, _Boot]] = field(default_factory=dict)

    def observe(self, agent: str, boot_id: str, *, ts: int, mono_ms: int, clock_synced: bool, received_ts: int,
                live: bool) -> bool:
        """Learn from one message; returns True when an offset changed."""
        boot = self._boot(agent, boot_id)
        changed = False
        if clock_synced:
            offset = ts - mono_ms
            changed = offset != boot.synced
            boot.synced = offset
        if live:
            offset = received_ts - mono_ms
            if boot.live is None or offset < boot.live:
                boot.live = offset
                changed = True
        return changed

    def estimate(self, agent: str, boot_id: str, *, ts: int, mono_ms: int, clock_synced: bool,
                 received_ts: int) -> Estimate:
        if clock_synced:
            return Estimate(ts, False)
        boot = self._boots.get(agent, {}).get(boot_id)
        if boot is not None and boot.synced is not None:
            guess = mono_ms + boot.synced
        elif boot is not None and boot.live is not None:
            guess = mono_ms + boot.live
        else:
            guess = ts
        return Estimate(max(TS_MIN, min(guess, received_ts)), True)

    def stamp(self, agent: str, boot_id: str, ts: int, mono_ms: int, clock_synced: bool, received_ts: int,
              live: bool) -> tuple[int, bool, bool]:
        """observe() then estimate() in one step, for the ingest hot path: (ts_est, estimated, changed)."""
        boots = self._boots.get(agent)
        boot = boots.get(boot_id) if boots is not None else None
        if boot is None:
            boot = self._boot(agent, boot_id)
        changed = False
        if clock_synced:
            offset = ts - mono_ms
            if offset != boot.synced:
                boot.synced = offset
                changed = True
        if live:
            offset = received_ts - mono_ms
            if boot.live is None or offset < boot.live:
                boot.live = offset
                changed = True
        if clock_synced:
            return ts, False, changed
        if boot.synced is not None:
            guess = mono_ms + boot.synced
        elif boot.live is not None:
            guess = mono_ms + boot.live
        else:
            guess = ts
        return max(TS_MIN, min(guess, received_ts)), True, changed

    def _boot(self, agent: str, boot_id: str) -> _Boot:
        boots = self._boots.setdefault(agent, {})
        boot = boots.get(boot_id)
        if boot is None:
            boot = boots[boot_id] = _Boot()
            while len(boots) > MAX_BOOTS_PER_AGENT:
                del boots[next(iter(boots))]  # the oldest boot learned
        return boot

    def export(self, agent: str) -> dict[str, Any]:
        """The agent's offsets, JSON-ready, to survive a restart of central."""
        return {b: {"synced": o.synced, "live": o.live} for b, o in self._boots.get(agent, {}).items()}

    def load(self, agent: str, saved: Mapping[str, Any]) -> None:
        """Take back what :meth:`export` gave; malformed entries are skipped."""
        for boot_id, o in saved.items():
            if not isinstance(o, Mapping):
                continue
            synced, live = o.get("synced"), o.get("live")
            boot = self._boot(agent, str(boot_id))
            boot.synced = synced if isinstance(synced, int) and not isinstance(synced, bool) else None
            boot.live = live if isinstance(live, int) and not isinstance(live, bool) else None
