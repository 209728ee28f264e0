"""The CPython stand-in for the Pico's ``hw.Hardware``: the same methods, driven from Python.

The firmware's logic (``firmware/app.py``) runs on it in the simulator and in
the tests. Inputs are set from outside (``set_zone``, ``buttons[i] = True``,
``pulse_wiegand``, ``tags[i] = uid``); outputs are read back from ``outputs``.
The UART is whatever object with ``read() -> bytes | None``, ``write(bytes)``
and ``wait(seconds)`` it is given (the simulator's pseudo-terminal).
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from firmware_bridge.firmware import framing

# ADC readings (read_u16 scale) that the Pico's loop circuit gives in each
# state: the pin sits at R / (4.7k + R) of full scale (see firmware/app.py).
_PULL_UP_OHM = 4700.0
_EOL_OHM = 4700.0


def _reading(loop_ohm: float) -> int:
    return round(65535 * loop_ohm / (_PULL_UP_OHM + loop_ohm))


ZONE_ADC: dict[str, int] = {
    framing.TAMPER_SHORT: 120,  # a few tens of ohms of cable, not a perfect zero
    framing.NORMAL: _reading(_EOL_OHM),
    framing.ALARM: _reading(2 * _EOL_OHM),
    framing.TAMPER_CUT: 65535,
}


class Uart(Protocol):
    def read(self) -> bytes | None: ...

    def write(self, data: bytes) -> None: ...

    def wait(self, seconds: float) -> None: ...


class SimHardware:
    """Simulated Pico: loops, buttons, Wiegand and tag readers, outputs, a UART."""

    def __init__(
        self,
        uart: Uart,
        *,
        zones: int = 4,
        buttons: int = 2,
        wiegand: int = 2,
        tags: int = 2,
        outputs: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uart = uart
        self.zone_count = zones
        self.button_count = buttons
        self.wiegand_count = wiegand
        self.tag_count = tags
        self.output_count = outputs
        self._clock = clock
        self.adc = [ZONE_ADC[framing.NORMAL]] * zones
        self.buttons = [False] * buttons  # True while pressed
        self.tags: list[bytes | None] = [None] * tags  # the card lying on each reader
        self.outputs = [False] * outputs
        self.feeds = 0
        self._wiegand: list[Callable[[int, int], None] | None] = [None] * wiegand

    def set_zone(self, index: int, state: str) -> None:
        """Put loop ``index`` in ``state`` (normal, alarm, tamper-short, tamper-cut)."""
        self.adc[index] = ZONE_ADC[state]

    def pulse_wiegand(self, index: int, bits: int, data: int) -> None:
        """Clock one frame into reader ``index``'s D0/D1 lines, first bit most significant."""
        callback = self._wiegand[index]
        if callback is None:
            raise RuntimeError(f"wiegand input {index} has no interrupt attached")
        now = self.ticks_ms()
        for position in range(bits - 1, -1, -1):
            callback((data >> position) & 1, now)

    # -- the methods of hw.Hardware --------------------------------------------

    def ticks_ms(self) -> int:
        return int(self._clock() * 1000)

    def uart_read(self) -> bytes | None:
        return self.uart.read()

    def uart_write(self, data: bytes) -> None:
        self.uart.write(data)

    def read_zone_adc(self, index: int) -> int:
        return self.adc[index]

    def read_button(self, index: int) -> bool:
        return self.buttons[index]

    def attach_wiegand(self, index: int, callback: Callable[[int, int], None]) -> None:
        self._wiegand[index] = callback

    def read_tag(self, index: int) -> bytes | None:
        return self.tags[index]

    def set_output(self, index: int, on: bool) -> None:
        self.outputs[index] = on

    def feed(self) -> None:
        self.feeds += 1

    def idle(self, ms: int) -> None:
        self.uart.wait(ms / 1000)
