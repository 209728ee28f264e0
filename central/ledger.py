"""Which eseqs central holds of one agent, and what to do about a gap.

Pure bookkeeping with injected time: the ingest thread tells it what was
stored and asks it whether to request a replay or give a gap up.

Agents send new events ahead of their backlog, so while a backlog drains a
gap opens and closes all the time. A replay is only asked for a gap that has
stood still for a grace period, and at most once per interval. A gap that
many replays could not fill is given up (its eseqs taken as lost): the agent
no longer holds them, which happens when central's store lost events it had
already acked (restored from a backup, say). Without that the agent's ack
would be stuck and its whole outbox resent forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GAP_GRACE_S = 1.0  # a gap must stand this long without progress before asking for a replay
REPLAY_INTERVAL_S = 5.0  # at most one replay request per agent this often
REPLAY_GIVE_UP = 12  # replay requests without progress before the gap is taken as lost


class GapAction(StrEnum):
    REPLAY = "replay"
    GIVE_UP = "give-up"


@dataclass(frozen=True, slots=True)
class GapPolicy:
    grace_s: float = GAP_GRACE_S
    replay_interval_s: float = REPLAY_INTERVAL_S
    give_up_after: int = REPLAY_GIVE_UP


@dataclass(slots=True)
class EseqLedger:
    """Every eseq up to ``contiguous`` is covered; ``above`` are held past a gap."""

    contiguous: int
    above: set[int]
    progress_at: float  # monotonic: when contiguous last moved, or the gap opened
    replay_at: float | None = None
    attempts: int = 0  # replay requests since the last progress

    @property
    def gap(self) -> bool:
        return bool(self.above)

    def add(self, eseq: int, now: float) -> None:
        """``eseq`` is stored now."""
        if eseq == self.contiguous + 1:
            self.contiguous = eseq
            self.above.discard(eseq)
            while self.contiguous + 1 in self.above:
                self.contiguous += 1
                self.above.remove(self.contiguous)
            self.progress_at = now
            self.attempts = 0
        elif eseq > self.contiguous + 1:
            if not self.above:
                self.progress_at = now  # a gap opens
            self.above.add(eseq)
        # eseq <= contiguous: a late arrival of a range given up on; nothing moves.

    def next_action(self, now: float, policy: GapPolicy, *, online: bool) -> GapAction | None:
        """What to do about the gap now; ``online``: the agent's status says it is connected."""
        if not self.above or now - self.progress_at < policy.grace_s:
            return None
        if self.replay_at is not None and now - self.replay_at < policy.replay_interval_s:
            return None
        if self.attempts >= policy.give_up_after and online:
            return GapAction.GIVE_UP
        return GapAction.REPLAY

    def replay_asked(self, now: float) -> int:
        """A replay was requested now; returns the eseq it starts from."""
        self.attempts += 1
        self.replay_at = now
        return self.contiguous + 1

    def give_up(self, now: float) -> tuple[int, int]:
        """Take the first gap as lost; returns its first and last eseq."""
        first, last = self.contiguous + 1, min(self.above) - 1
        self.contiguous = last
        self.add(last + 1, now)
        return first, last
