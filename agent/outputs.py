"""Outputs on GPIO pins: sirens, strobes, LEDs, and the status LED.

An :class:`Output` is switched on and off, optionally for a number of seconds,
and is never left on longer than its ``max_on_s`` (a siren that sounds for an
hour is a nuisance complaint, and it stops meaning anything). Its timers run on
the input loop: :meth:`Output.tick` switches it off when a timer runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from gpiozero import DigitalOutputDevice

from agent.config import OutputConfig

_LOGGER = logging.getLogger(__name__)

# Status LED patterns, (on, off) seconds: a technician at the gate can tell
# "central unreachable" from "online, still sending a backlog".
OFFLINE_BLINK_S = (0.5, 0.5)
BACKLOG_BLINK_S = (0.1, 0.9)


def _ignore() -> None:
    pass


class TimedOutput:
    """What every output does whatever drives it: on, off, timers, the ``max_on_s`` cap, change callbacks.

    ``when_changed(name, on)`` is called whenever the output really changes,
    whoever switched it (a command, a local reaction, a timer); the runtime
    turns it into an ``output`` event. It runs on the thread that made the
    change, normally the input loop. A subclass drives the hardware in
    :meth:`_show` and lets it go in :meth:`_release`.
    """

    def __init__(
        self,
        config: OutputConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        when_changed: Callable[[str, bool], None] | None = None,
        wake: Callable[[], None] = _ignore,
    ) -> None:
        self.config = config
        self.name = config.name
        self.max_on_s = config.max_on_s
        self.when_changed = when_changed
        self._clock = clock
        self._wake = wake
        self._lock = threading.Lock()
        self._on_since: float | None = None
        self._off_at: float | None = None
        self._closed = False

    @property
    def is_on(self) -> bool:
        return self._on_since is not None

    @property
    def state(self) -> str:
        return "on" if self.is_on else "off"

    @property
    def off_at(self) -> float | None:
        """When a timer will switch it off (monotonic), or None."""
        return self._off_at

    def on(self, seconds: float | None = None) -> None:
        """Switch on, for ``seconds`` if given; ``max_on_s`` caps it either way.

        Switching on an output that is already on sets its timer again, but the
        ``max_on_s`` cap counts from when it first came on: repeated alarms
        cannot keep a siren sounding for ever.
        """
        if seconds is not None and not seconds > 0:
            raise ValueError(f"output {self.name!r}: seconds must be greater than 0, not {seconds}")
        with self._lock:
            if self._closed:
                raise ValueError(f"output {self.name!r} is closed")
            now = self._clock()
            changed = self._on_since is None
            if self._on_since is None:
                self._on_since = now
            limit = None if self.max_on_s is None else self._on_since + self.max_on_s
            until = None if seconds is None else now + seconds
            candidates = [t for t in (limit, until) if t is not None]
            self._off_at = min(candidates) if candidates else None
            self._show(now)
        if changed:
            _LOGGER.info("output %s on%s", self.name, "" if seconds is None else f" for {seconds:g} s")
            self._changed(True)
        # The loop must learn the new deadline, even if it ticked us earlier in this pass.
        self._wake()

    def off(self) -> None:
        with self._lock:
            changed = self._switch_off()
        if changed:
            _LOGGER.info("output %s off", self.name)
            self._changed(False)

    def tick(self, now: float) -> float | None:
        """Switch off when a timer ran out; return the next deadline."""
        with self._lock:
            if self._off_at is None or now < self._off_at:
                return self._off_at
            changed = self._switch_off()
        if changed:
            _LOGGER.info("output %s off: timer ran out", self.name)
            self._changed(False)
        return None

    def close(self) -> None:
        """Switch off and let the hardware go. Silent: no ``when_changed`` at shutdown."""
        with self._lock:
            if self._closed:
                return
            self._switch_off()
            self._closed = True
            self._release()

    def _switch_off(self) -> bool:
        self._off_at = None
        if self._on_since is None or self._closed:
            return False
        self._on_since = None
        self._show(self._clock())
        return True

    def _changed(self, on: bool) -> None:
        if self.when_changed is None:
            return
        try:
            self.when_changed(self.name, on)
        except Exception:
            _LOGGER.exception("output %s: when_changed callback failed", self.name)

    def _show(self, now: float) -> None:
        """Make the hardware match ``is_on`` and the timer (called with the lock held, on every change)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Let the hardware go (called once, with the lock held, after the last :meth:`_show`)."""


class Output(TimedOutput):
    """A siren, strobe or LED on a GPIO pin (``active_high`` as configured)."""

    def __init__(
        self,
        config: OutputConfig,
        *,
        pin_factory=None,
        clock: Callable[[], float] = time.monotonic,
        when_changed: Callable[[str, bool], None] | None = None,
        wake: Callable[[], None] = _ignore,
    ) -> None:
        if config.pin is None:
            raise ValueError(f"output {config.name!r} is on mcu {config.mcu!r}, not a GPIO pin")
        super().__init__(config, clock=clock, when_changed=when_changed, wake=wake)
        self._device = DigitalOutputDevice(
            config.pin, active_high=config.active_high, initial_value=False, pin_factory=pin_factory
        )

    def __repr__(self) -> str:
        return f"<Output {self.name!r} pin {self.config.pin} {self.state}>"

    def _show(self, now: float) -> None:
        if self._on_since is None:
            self._device.off()
        elif not self._device.is_active:  # a new timer alone leaves the pin as it is
            self._device.on()

    def _release(self) -> None:
        self._device.close()


class StatusLed:
    """The status LED: steady when central is online and the outbox is empty.

    Otherwise it blinks: evenly (``OFFLINE_BLINK_S``) while central is not
    online, with short flashes (``BACKLOG_BLINK_S``) while online with events
    still to deliver. gpiozero's own background thread does the blinking; it
    never emits events.
    """

    def __init__(self, output_config: OutputConfig, *, pin_factory=None) -> None:
        if output_config.pin is None:
            raise ValueError(f"status LED {output_config.name!r} is on mcu {output_config.mcu!r}, not a GPIO pin")
        self.name = output_config.name
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._closed = False
        self._device = DigitalOutputDevice(
            output_config.pin, active_high=output_config.active_high, initial_value=False, pin_factory=pin_factory
        )

    @property
    def mode(self) -> str | None:
        """``steady``, ``offline`` or ``backlog``; None before the first :meth:`set`."""
        return self._mode

    def set(self, central_online: bool, outbox_empty: bool) -> None:
        if central_online and outbox_empty:
            mode = "steady"
        elif central_online:
            mode = "backlog"
        else:
            mode = "offline"
        with self._lock:
            # Restarting a blink on every call would make it stutter: only a
            # change of mode touches the pin.
            if self._closed or mode == self._mode:
                return
            self._mode = mode
            if mode == "steady":
                self._device.on()
            else:
                on_s, off_s = OFFLINE_BLINK_S if mode == "offline" else BACKLOG_BLINK_S
                self._device.blink(on_time=on_s, off_time=off_s, background=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._device.off()  # stops the blink thread and leaves the LED dark
            self._device.close()
