"""The answer at the checkpoint: a buzzer or LED beside a reader that tells the volunteer what a tap meant.

A reader may name a ``feedback`` output. The agent plays :data:`READ` the
moment it reads a card, network or not; central then answers each scan at a
planned checkpoint with a verdict (``feedback`` command) and the agent plays
that verdict's pattern. Patterns are ``(on_s, off_s, n)``: ``n`` pulses of
``on_s`` seconds, ``off_s`` apart. They are told apart by count and length;
docs/readers.md lists them for the volunteers' instruction sheet.

Wiring: an active buzzer or an LED (with its resistor) between the GPIO pin and
ground, or through a transistor for more than a few mA; ``active_high`` as
for any output. The pin belongs to this signal alone: it is never an
``output`` event and never switched by an ``output`` command.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Final

from gpiozero import DigitalOutputDevice

from agent.config import OutputConfig

_LOGGER = logging.getLogger(__name__)

Pattern = tuple[float, float, int]  # (on_s, off_s, pulses)

READ: Final[Pattern] = (0.05, 0.0, 1)  # a short tick: the card was read
VERDICTS: Final[dict[str, Pattern]] = {
    "counted": (0.15, 0.1, 2),  # two short
    "unknown-card": (0.8, 0.0, 1),  # one long
    "not-on-route": (0.15, 0.1, 4),  # four short
    "out-of-order": (0.4, 0.15, 2),  # two long
    "outside-window": (0.4, 0.15, 3),  # three long
}
UNKNOWN_VERDICT: Final[Pattern] = (0.05, 0.05, 6)  # a verdict this agent does not know: a flutter
PAUSE_S: Final = 0.25  # between two patterns, so the read tick and the verdict stay apart
QUEUE_PATTERNS: Final = 8  # a burst of taps beyond this is dropped (counted), never waited for
JOIN_TIMEOUT_S: Final = 3.0


class FeedbackSignal:
    """Plays patterns on one GPIO pin, one after another, on its own thread.

    :meth:`show` only enqueues (readers' and the session's threads call it);
    a full queue drops the pattern and counts it in ``dropped``.
    """

    def __init__(self, config: OutputConfig, *, pin_factory=None) -> None:
        if config.pin is None:
            raise ValueError(f"feedback output {config.name!r} is on mcu {config.mcu!r}, not a GPIO pin")
        self.name = config.name
        self.dropped = 0
        self.played = 0
        self._device = DigitalOutputDevice(config.pin, active_high=config.active_high, initial_value=False,
                                           pin_factory=pin_factory)
        self._queue: queue.Queue[Pattern | None] = queue.Queue(QUEUE_PATTERNS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feedback-{self.name}", daemon=True)
        self._thread.start()

    def show(self, pattern: Pattern) -> None:
        try:
            self._queue.put_nowait(pattern)
        except queue.Full:
            self.dropped += 1

    def show_verdict(self, verdict: str) -> None:
        self.show(VERDICTS.get(verdict, UNKNOWN_VERDICT))

    def close(self) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(JOIN_TIMEOUT_S)
        self._device.off()
        self._device.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            pattern = self._queue.get()
            if pattern is None or self._stop.is_set():
                return
            on_s, off_s, n = pattern
            try:
                for i in range(n):
                    self._device.on()
                    self._stop.wait(on_s)
                    self._device.off()
                    if i + 1 < n:
                        self._stop.wait(off_s)
                self.played += 1
            except Exception:
                _LOGGER.exception("feedback %s: playing a pattern failed", self.name)
            self._stop.wait(PAUSE_S)
