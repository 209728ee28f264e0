"""Exceptions of the bottom layer and the command-line package.

:class:`GridpatrolError` is the root of ``gridpatrol``'s exceptions; each
class also inherits the builtin it resembles, so a caller that only knows
``ValueError`` (bad input, exit status 2) still catches the right thing.
The other packages have roots of their own: ``wire.WireError``,
``agent.AgentError``, ``central.CentralError``, ``firmware_bridge.BridgeError``.
"""

from __future__ import annotations


class GridpatrolError(Exception):
    """Root of every error raised by :mod:`gridpatrol`."""


class ConfigError(GridpatrolError, ValueError):
    """A configuration file is wrong; the message names the file and the key.

    One class for both the agent's and central's configuration: both are read
    by gridpatrol/base/tomlconfig.py, and agent.config and central.config
    re-export it.
    """
