"""A perimeter alarm loop on a GPIO pin.

Wiring (internal pull-up on): an ``nc`` loop reads low while closed (normal)
and high when opened or cut (alarm); an ``no`` contact reads high at rest and
low while closed (alarm).

gpiozero calls back on its own thread; the callback only records the level and
the time and wakes the input loop. The loop thread calls :meth:`Zone.tick`,
which debounces, emits and keeps the state. Every tick also reads the pin
again, so an edge gpiozero never reported cannot leave a stale state for
longer than one loop pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from gpiozero import DigitalInputDevice

from agent.config import ZoneConfig
from agent.events import EventSink, FaultCode
from agent.inputs.logic import DebouncedContact, FlapDetector
from wire.messages import EventKind

_LOGGER = logging.getLogger(__name__)

# More than this many confirmed transitions inside the window is a flapping zone:
# a fence opened and closed a few times a minute by people is plausible, eight
# changes in a minute is a loose wire or a failing contact.
FLAP_MAX_TRANSITIONS = 8
FLAP_WINDOW_S = 60.0
# Edges waiting for the loop thread; a pin flapping faster than the loop can
# drain is summarised by the re-read, so the oldest edges may go.
EDGE_QUEUE_MAX = 1024


class ZoneState:
    NORMAL = "normal"
    ALARM = "alarm"
    UNKNOWN = "unknown"


def _ignore() -> None:
    pass


class Zone:
    """A GPIO perimeter loop: ``alarm`` when it opens, ``restore`` when it closes.

    A zone that flaps also raises a ``fault`` (code ``zone-flapping``) once per
    flapping episode; every transition is still sent. At start the zone reads
    its pin: a closed loop is ``normal`` at once and reports nothing, an open
    one is confirmed after ``debounce_ms`` and reported as an ``alarm`` (an
    agent booting with a loop open must say so).
    """

    def __init__(
        self,
        config: ZoneConfig,
        *,
        emit: EventSink,
        wake: Callable[[], None] = _ignore,
        pin_factory=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.pin is None:
            raise ValueError(f"zone {config.name!r} is on mcu {config.mcu!r}, not a GPIO pin")
        self.config = config
        self.name = config.name
        self._emit = emit
        self._wake = wake
        self._clock = clock
        self.when_tripped: Callable[[Zone], None] | None = None
        self.when_restored: Callable[[Zone], None] | None = None
        # An nc loop is in alarm when its pin is high, an no contact when low.
        self._alarm_when_high = config.contact == "nc"
        self._edges: deque[tuple[bool, float]] = deque(maxlen=EDGE_QUEUE_MAX)
        self._flaps = FlapDetector(FLAP_MAX_TRANSITIONS, FLAP_WINDOW_S)
        self._closed = False
        self._lock = threading.Lock()  # close() against a tick on the loop thread
        self._device = DigitalInputDevice(config.pin, pull_up=True, pin_factory=pin_factory)
        try:
            first = self._read()
            # A closed loop at boot is believed at once (no event); an open one
            # must survive the debounce like any alarm, then it is reported.
            self._contact = DebouncedContact(config.debounce_ms / 1000, initial=None if first else False)
            self._contact.feed(first, clock())
            # With the pull-up, "active" is a low pin: the level of each edge
            # comes from which callback fired, not from a later read.
            self._device.when_activated = self._on_low
            self._device.when_deactivated = self._on_high
        except BaseException:
            self._device.close()
            raise

    def __repr__(self) -> str:
        return f"<Zone {self.name!r} pin {self.config.pin} {self.config.contact} {self.state}>"

    @property
    def state(self) -> str:
        level = self._contact.level
        if level is None:
            return ZoneState.UNKNOWN
        return ZoneState.ALARM if level else ZoneState.NORMAL

    @property
    def in_alarm(self) -> bool:
        return self._contact.level is True

    def _read(self) -> bool:
        """True when the pin says alarm right now."""
        return bool(self._device.pin.state) == self._alarm_when_high

    def _on_low(self) -> None:
        self._edge(not self._alarm_when_high)

    def _on_high(self) -> None:
        self._edge(self._alarm_when_high)

    def _edge(self, alarm: bool) -> None:
        # gpiozero's thread: record and wake, nothing more (never block it).
        self._edges.append((alarm, self._clock()))
        self._wake()

    def tick(self, now: float) -> float | None:
        """Debounce, emit what changed; return when the next tick is needed."""
        with self._lock:
            if self._closed:
                return None
            while self._edges:
                alarm, at = self._edges.popleft()
                self._contact.feed(alarm, at)
                now = max(now, at)
            self._contact.feed(self._read(), now)
            before = self._contact.level
            changed = self._contact.tick(now)
        if changed is not None:
            self._report(changed, now, booting=before is None)
        return self._contact.deadline

    def _report(self, alarm: bool, now: float, *, booting: bool) -> None:
        if booting and not alarm:
            return  # an open loop at boot closed again within the debounce: nothing happened
        kind = EventKind.ALARM if alarm else EventKind.RESTORE
        _LOGGER.info("zone %s: %s", self.name, kind)
        self._emit(kind, self.name)
        callback = self.when_tripped if alarm else self.when_restored
        if callback is not None:
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("zone %s: %s callback failed", self.name, "when_tripped" if alarm else "when_restored")
        # The alarm confirmed at boot is a reading, not a transition.
        if not booting and self._flaps.transition(now):
            detail = f"more than {FLAP_MAX_TRANSITIONS} changes within {FLAP_WINDOW_S:g} s"
            _LOGGER.warning("zone %s is flapping: %s", self.name, detail)
            self._emit(EventKind.FAULT, self.name, code=FaultCode.ZONE_FLAPPING, detail=detail)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._device.close()
