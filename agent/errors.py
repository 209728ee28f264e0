"""The root of the agent's exceptions.

Every error the agent raises inherits :class:`AgentError` and the builtin it
resembles (``OutboxError(AgentError, OSError)``, ``ReaderError`` below it for
the readers). A configuration mistake is ``gridpatrol.base.errors.ConfigError``
(re-exported by :mod:`agent.config`): agent and central share one.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error raised by :mod:`agent`."""
