"""One presentation of a card is one scan (pure, injectable time).

An RDM6300 repeats its frame for as long as a card lies on it and a PN532 finds
the card again on every poll; a volunteer who holds the card for three seconds
has still tapped once. A card counts as taken away once it has not been seen
for ``absent_s`` seconds; the next sighting after that is a new presentation.
"""

from __future__ import annotations

PRESENCE_ABSENT_S = 1.0


class PresenceFilter:
    """Turns a stream of sightings into presentations.

    ``seen(tag, now)`` is called for every sighting and answers True when that
    sighting starts a new presentation (a scan to report). ``tick(now)``
    forgets cards absent for ``absent_s`` seconds or more, so that memory stays
    bounded however many cards pass; ``seen`` applies the same rule by itself,
    so ``tick`` is housekeeping, not a precondition for correctness.
    ``now`` is monotonic seconds.
    """

    def __init__(self, absent_s: float = PRESENCE_ABSENT_S) -> None:
        if not absent_s > 0:
            raise ValueError(f"PresenceFilter: absent_s must be positive, not {absent_s!r}")
        self.absent_s = absent_s
        self._last_seen: dict[str, float] = {}

    def seen(self, tag: str, now: float) -> bool:
        last = self._last_seen.get(tag)
        self._last_seen[tag] = now
        return last is None or now - last >= self.absent_s

    def tick(self, now: float) -> None:
        gone = [tag for tag, last in self._last_seen.items() if now - last >= self.absent_s]
        for tag in gone:
            del self._last_seen[tag]

    @property
    def present(self) -> frozenset[str]:
        """Tags currently counted as lying on the reader (as of the last call)."""
        return frozenset(self._last_seen)
