"""Exceptions of the wire protocol."""


class WireError(Exception):
    """Root of every error raised by :mod:`wire`."""


class DecodeError(WireError, ValueError):
    """A payload or topic from the network does not follow the protocol."""


class EncodeError(WireError, ValueError):
    """A message could not be encoded (a programming error on our side)."""
