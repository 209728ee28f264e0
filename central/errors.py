"""The root of central's exceptions.

Every error central raises inherits :class:`CentralError` and the builtin it
resembles (``PlanError(CentralError, ValueError)``, ``WebError``, ...). A
configuration mistake is ``gridpatrol.base.errors.ConfigError`` (re-exported
by :mod:`central.config`): agent and central share one.
"""

from __future__ import annotations


class CentralError(Exception):
    """Root of every error raised by :mod:`central`."""
