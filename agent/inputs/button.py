"""An emergency (panic) button on a GPIO pin.

Wiring (internal pull-up on): the button reads high at rest and low while
pressed. It must be held ``hold_ms`` to trigger; the hold is also its debounce,
since contact bounce only ever shortens a press.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from gpiozero import DigitalInputDevice

from agent.config import ButtonConfig
from agent.events import EventSink
from agent.inputs.logic import HoldToTrigger
from wire.messages import EventKind

_LOGGER = logging.getLogger(__name__)

# Even with hold_ms = 0 a press must last this long: the bounce of a release
# (a few ms of re-contact) must not count as a second press.
MIN_HOLD_S = 0.02
EDGE_QUEUE_MAX = 1024


class ButtonState:
    IDLE = "idle"
    PRESSED = "pressed"
    LATCHED = "latched"


def _ignore() -> None:
    pass


class EmergencyButton:
    """Sends one ``panic`` per press held ``hold_ms``, at the moment the hold is reached.

    The panic then stays latched on the agent until central's ``alarm-ack``
    (:meth:`acknowledge`). A press held for minutes is still one panic; a new
    press-and-hold, even while latched, is a new panic (someone pressed again).
    Whether the button drives a siren is the runtime's business (``silent``
    buttons never do); this class only reports.
    """

    def __init__(
        self,
        config: ButtonConfig,
        *,
        emit: EventSink,
        wake: Callable[[], None] = _ignore,
        pin_factory=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.pin is None:
            raise ValueError(f"button {config.name!r} is on mcu {config.mcu!r}, not a GPIO pin")
        self.config = config
        self.name = config.name
        self.silent = config.silent
        self._emit = emit
        self._wake = wake
        self._clock = clock
        self.when_panic: Callable[[EmergencyButton], None] | None = None
        self._hold = HoldToTrigger(max(config.hold_ms / 1000, MIN_HOLD_S))
        self._edges: deque[tuple[bool, float]] = deque(maxlen=EDGE_QUEUE_MAX)
        self._latched = False
        self._closed = False
        self._lock = threading.Lock()  # latch and close against the loop thread
        self._device = DigitalInputDevice(config.pin, pull_up=True, pin_factory=pin_factory)
        try:
            # Held at boot (someone is pressing, or it is stuck): the hold runs
            # from now, and a panic follows if it is still held after hold_ms.
            if self._device.is_active:
                self._hold.press(clock())
            self._device.when_activated = self._on_press
            self._device.when_deactivated = self._on_release
        except BaseException:
            self._device.close()
            raise

    def __repr__(self) -> str:
        return f"<EmergencyButton {self.name!r} pin {self.config.pin} {self.state}>"

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def pressed(self) -> bool:
        return self._hold.pressed

    @property
    def state(self) -> str:
        if self._latched:
            return ButtonState.LATCHED
        return ButtonState.PRESSED if self._hold.pressed else ButtonState.IDLE

    def _on_press(self) -> None:
        # gpiozero's thread: record and wake only.
        self._edges.append((True, self._clock()))
        self._wake()

    def _on_release(self) -> None:
        self._edges.append((False, self._clock()))
        self._wake()

    def relatch(self) -> None:
        """A panic latched before the agent restarted: latched again, until central's ``alarm-ack``."""
        with self._lock:
            self._latched = True

    def acknowledge(self) -> bool:
        """Central acknowledged the alarm: release the latch. True if it was latched."""
        with self._lock:
            was, self._latched = self._latched, False
        if was:
            _LOGGER.info("button %s: panic acknowledged", self.name)
        return was

    def tick(self, now: float) -> float | None:
        with self._lock:
            if self._closed:
                return None
            while self._edges:
                pressed, at = self._edges.popleft()
                self._apply(pressed, at)
                now = max(now, at)
            # Re-read: an edge gpiozero never reported must not leave a stale press.
            self._apply(self._device.is_active, now)
            fired = self._hold.tick(now)
            if fired:
                self._latched = True
        if fired:
            _LOGGER.warning("button %s: panic", self.name)
            self._emit(EventKind.PANIC, self.name)
            if self.when_panic is not None:
                try:
                    self.when_panic(self)
                except Exception:
                    _LOGGER.exception("button %s: when_panic callback failed", self.name)
        return self._hold.deadline

    def _apply(self, pressed: bool, at: float) -> None:
        if pressed:
            self._hold.press(at)
        else:
            self._hold.release(at)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._device.close()
