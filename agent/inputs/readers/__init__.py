"""RFID checkpoint readers: RDM6300 and PN532 on serial ports, Wiegand through an mcu.

The frame parsers (:mod:`.rdm6300`, :mod:`.pn532`, :mod:`.wiegand`) and
:mod:`.presence` are pure: bytes or values in, values out, no port. The
thread that owns a port lives in :mod:`.serial_reader`; :mod:`.sim` holds
simulated modules on pseudo-terminals for tests and the demo.
"""

from agent.inputs.readers.errors import Cancelled, DeviceError, ReaderError, ReaderFrameError, ReaderSilent, WiegandError
from agent.inputs.readers.pn532 import FrameReader, Pn532Driver, build_frame
from agent.inputs.readers.presence import PRESENCE_ABSENT_S, PresenceFilter
from agent.inputs.readers.rdm6300 import Rdm6300Parser
from agent.inputs.readers.serial_reader import ReaderState, SerialReader
from agent.inputs.readers.wiegand import decode_wiegand

__all__ = [
    "PRESENCE_ABSENT_S",
    "Cancelled",
    "DeviceError",
    "ReaderFrameError",
    "FrameReader",
    "Pn532Driver",
    "PresenceFilter",
    "Rdm6300Parser",
    "ReaderError",
    "ReaderSilent",
    "ReaderState",
    "SerialReader",
    "WiegandError",
    "build_frame",
    "decode_wiegand",
]
