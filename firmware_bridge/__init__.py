"""The serial link to a microcontroller front end, its simulator and its firmware.

- :mod:`firmware_bridge.framing`: COBS + CRC-16/CCITT-FALSE + msgpack frames and
  the stop-and-wait endpoint (the firmware's own module, shared by both ends);
- :mod:`firmware_bridge.link`: :class:`SerialLink`, the Pi's end over pyserial;
- :mod:`firmware_bridge.sim`: :class:`McuSim`, the firmware on a pseudo-terminal;
- ``firmware_bridge/firmware/``: the MicroPython firmware for a Raspberry Pi Pico.

Imports neither ``agent`` nor ``central``. :class:`BridgeError` is the root of
this package's exceptions.
"""

from firmware_bridge.firmware.framing import BridgeError, FrameError

__all__ = ["BridgeError", "FrameError"]
