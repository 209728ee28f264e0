"""Which eseqs central holds of one agent's epoch, and when to ask for a replay.

Pure bookkeeping with injected time: the ingest thread tells it what was
stored and asks it whether to request a replay.

Agents send new events ahead of their backlog, so while a backlog drains a
gap opens and closes all the time. A replay is only asked for a gap that has
stood still for a grace period, then again with a doubling interval (capped),
for as long as the gap stands: central never gives a gap up on its own. Only
the agent can close it, by sending the events or by answering the replay
with ``last`` (the highest eseq it made: anything held above it was never the
agent's and is quarantined) and ``gone`` (ranges it no longer holds, recorded
as lost and skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

GAP_GRACE_S = 1.0  # a gap must stand this long without progress before asking for a replay
REPLAY_INTERVAL_S = 5.0  # the first wait between replay requests of one agent; doubles while nothing moves
REPLAY_INTERVAL_MAX_S = 120.0  # ... up to this


class GapAction(StrEnum):
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class GapPolicy:
    grace_s: float = GAP_GRACE_S
    replay_interval_s: float = REPLAY_INTERVAL_S
    replay_interval_max_s: float = REPLAY_INTERVAL_MAX_S

    def interval(self, attempts: int) -> float:
        return min(self.replay_interval_s * 2 ** min(max(attempts - 1, 0), 16), self.replay_interval_max_s)


@dataclass(slots=True)
class EseqLedger:
    """Every eseq up to ``contiguous`` is covered; ``above`` are held past a gap."""

    contiguous: int
    above: set[int]
    progress_at: float  # monotonic: when contiguous last moved, or the gap opened
    replay_at: float | None = None
    attempts: int = 0  # replay requests since the last progress
    # Ranges above ``contiguous`` covered with no event (gone, or quarantined), lowest first:
    # the run of held eseqs steps over them.
    covered: list[tuple[int, int]] = field(default_factory=list)

    @property
    def gap(self) -> bool:
        return bool(self.above)

    def add(self, eseq: int, now: float) -> None:
        """``eseq`` is stored now."""
        if eseq == self.contiguous + 1:
            self.contiguous = eseq
            self.above.discard(eseq)
            self._run_on()
            self.progress_at = now
            self.attempts = 0
        elif eseq > self.contiguous + 1:
            if not self.above:
                self.progress_at = now  # a gap opens
            self.above.add(eseq)
        # eseq <= contiguous: a late arrival of a range the agent said was gone; nothing moves.

    def covered_to(self, eseq: int, now: float) -> None:
        """Everything up to ``eseq`` is held, as the store says (in a group, other centrals store some)."""
        if eseq <= self.contiguous:
            return
        self.contiguous = eseq
        self.above = {e for e in self.above if e > eseq}
        self._run_on()
        self.progress_at = now
        self.attempts = 0

    def next_action(self, now: float, policy: GapPolicy) -> GapAction | None:
        """What to do about the gap now."""
        if not self.above or now - self.progress_at < policy.grace_s:
            return None
        if self.replay_at is not None and now - self.replay_at < policy.interval(self.attempts):
            return None
        return GapAction.REPLAY

    def replay_asked(self, now: float) -> int:
        """A replay was requested now; returns the eseq it starts from."""
        self.attempts += 1
        self.replay_at = now
        return self.contiguous + 1

    def _run_on(self) -> None:
        """Move ``contiguous`` over every held eseq and covered range that follows it."""
        while True:
            if self.contiguous + 1 in self.above:
                self.contiguous += 1
                self.above.remove(self.contiguous)
                continue
            while self.covered and self.covered[0][1] <= self.contiguous:
                self.covered.pop(0)
            if self.covered and self.covered[0][0] <= self.contiguous + 1:
                self.contiguous = self.covered.pop(0)[1]
                self.above = {e for e in self.above if e > self.contiguous}
                continue
            return
