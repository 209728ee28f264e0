"""Pure input logic: debounce, hold-to-trigger, flap detection.

No I/O, no threads, no clock of their own: every method is handed the time as
float seconds on a monotonic clock. The GPIO devices (``zone.py``,
``button.py``) and the microcontroller link feed them edges and ticks, so one
tested implementation decides what counts as a real change everywhere.
None of these classes is thread-safe; each is driven from one thread (the
input loop).
"""

from __future__ import annotations

from collections import deque


class DebouncedContact:
    """A contact whose level counts only once it has been stable ``debounce_s``.

    ``feed()`` the raw level whenever it is seen (an edge, or a periodic
    re-read: feeding the same level again changes nothing); ``tick()`` returns
    the new confirmed level once the raw level has differed from the confirmed
    one, without a break, for ``debounce_s`` seconds. A bounce that returns to
    the confirmed level before then is forgotten.

    Edges are fed with the time they happened, and the thread that ticks may
    be late (busy with a commit, or starved of CPU). A level that was already
    held longer than ``debounce_s`` when the next edge came still counts,
    even if no tick saw it in time: ``tick()`` then returns the changes one by
    one, in order (``deadline`` is in the past until they are all out).

    ``initial`` is the confirmed level to start from; None means unknown, and
    the first raw level is confirmed after ``debounce_s`` like any change.
    """

    def __init__(self, debounce_s: float, initial: bool | None = None) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must not be negative, not {debounce_s}")
        self.debounce_s = debounce_s
        self._level = initial
        self._changed_at: float | None = None  # when the raw edge behind _level came
        self._raw: bool | None = initial
        self._raw_since: float | None = None  # when _raw took its present value
        self._last_fed: float | None = None
        # Levels confirmed by a later edge before any tick saw them: (level, since).
        self._confirmed: deque[tuple[bool, float]] = deque()

    @property
    def level(self) -> bool | None:
        """The confirmed level (None until one is confirmed)."""
        return self._level

    @property
    def raw(self) -> bool | None:
        """The last raw level fed in."""
        return self._raw

    @property
    def changed_at(self) -> float | None:
        """When the raw edge that led to the confirmed level happened (None for ``initial``)."""
        return self._changed_at

    @property
    def _latest(self) -> bool | None:
        """The level confirmed last, whether or not a tick has returned it yet."""
        return self._confirmed[-1][0] if self._confirmed else self._level

    @property
    def deadline(self) -> float | None:
        """The time a tick would confirm the pending change, or None if none is pending."""
        if self._confirmed:
            return self._confirmed[0][1] + self.debounce_s
        if self._raw is None or self._raw == self._level or self._raw_since is None:
            return None
        return self._raw_since + self.debounce_s

    def feed(self, active: bool, now: float) -> None:
        """Record the raw level seen at ``now``."""
        active = bool(active)
        # Edges recorded on another thread can arrive a hair out of order; time
        # never runs backwards here, so a late one counts as happening now.
        if self._last_fed is not None and now < self._last_fed:
            now = self._last_fed
        self._last_fed = now
        if active != self._raw:
            if (self._raw is not None and self._raw_since is not None and self._raw != self._latest
                    and now - self._raw_since > self.debounce_s):
                # The level being left had held long enough: it happened, late tick or not.
                self._confirmed.append((self._raw, self._raw_since))
            self._raw = active
            self._raw_since = now

    def tick(self, now: float) -> bool | None:
        """Return the newly confirmed level if it changed, else None."""
        if self._confirmed:
            self._level, self._changed_at = self._confirmed.popleft()
            return self._level
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        self._level = self._raw
        self._changed_at = self._raw_since
        return self._level


class HoldToTrigger:
    """Fires once per press, when the press has lasted ``hold_s`` seconds.

    A press shorter than ``hold_s`` (a brush) does nothing. A press held for an
    hour fires once. A press whose release is only learnt late (the loop was
    busy) still fires on the next tick if press and release were ``hold_s``
    apart, since it was held long enough.
    """

    def __init__(self, hold_s: float) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must not be negative, not {hold_s}")
        self.hold_s = hold_s
        self._pressed_at: float | None = None
        self._fired = False
        self._owed = False  # a finished press that was long enough, not yet reported
        self._released_at = 0.0

    @property
    def pressed(self) -> bool:
        return self._pressed_at is not None

    @property
    def deadline(self) -> float | None:
        """The time a tick would fire, or None while nothing is pending."""
        if self._owed:
            return self._released_at
        if self._pressed_at is None or self._fired:
            return None
        return self._pressed_at + self.hold_s

    def press(self, now: float) -> None:
        if self._pressed_at is not None:
            return  # already held: a repeated press edge does not restart the hold
        self._pressed_at = now
        self._fired = False

    def release(self, now: float) -> None:
        if self._pressed_at is None:
            return
        if not self._fired and now - self._pressed_at >= self.hold_s:
            self._owed = True
            self._released_at = now
        self._pressed_at = None
        self._fired = False

    def tick(self, now: float) -> bool:
        """True exactly once per press that has been (or was) held ``hold_s``."""
        if self._owed:
            self._owed = False
            return True
        if self._pressed_at is None or self._fired:
            return False
        if now - self._pressed_at >= self.hold_s:
            self._fired = True
            return True
        return False

    _released_at: float = 0.0


class FlapDetector:
    """Tells when a contact changes more than ``max_transitions`` times in ``window_s``.

    ``transition()`` returns True once per flapping episode: on the transition
    that first exceeds the limit. The episode ends, and the detector re-arms,
    after a quiet ``window_s`` with no transition at all.
    """

    def __init__(self, max_transitions: int, window_s: float) -> None:
        if max_transitions < 1:
            raise ValueError(f"max_transitions must be at least 1, not {max_transitions}")
        if window_s <= 0:
            raise ValueError(f"window_s must be greater than 0, not {window_s}")
        self.max_transitions = max_transitions
        self.window_s = window_s
        # Only the last max_transitions + 1 times matter: memory stays bounded
        # however fast a broken loop flaps.
        self._times: deque[float] = deque(maxlen=max_transitions + 1)
        self._flapping = False

    @property
    def flapping(self) -> bool:
        """True from the transition that reported flapping until the next re-arm."""
        return self._flapping

    def transition(self, now: float) -> bool:
        if self._times and now - self._times[-1] >= self.window_s:
            self._flapping = False
            self._times.clear()
        self._times.append(now)
        if self._flapping:
            return False
        full = len(self._times) == self._times.maxlen
        if full and now - self._times[0] <= self.window_s:
            self._flapping = True
            return True
        return False
