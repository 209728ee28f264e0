"""Exceptions of the RFID reader package.

:class:`ReaderError` (an ``agent.AgentError``) is the root; each subclass also inherits the builtin it
resembles, so a caller that only knows ``ValueError`` (bad input) or
``TimeoutError`` (a silent device) still catches the right thing.
"""

from __future__ import annotations

from agent.errors import AgentError


class ReaderError(AgentError):
    """Root of every error raised by ``agent.inputs.readers``."""


class WiegandError(ReaderError, ValueError):
    """A Wiegand frame of an unsupported length or with a bad parity bit."""


class ReaderFrameError(ReaderError, ValueError):
    """A reader frame that cannot be encoded or decoded as given."""


class ReaderSilent(ReaderError, TimeoutError):
    """The reader did not answer within its timeout (power glitch, unplugged)."""


class DeviceError(ReaderError, RuntimeError):
    """The reader reported an error of its own (a PN532 error frame)."""


class Cancelled(ReaderError):
    """The owner asked the driver to stop while it waited for the reader."""
