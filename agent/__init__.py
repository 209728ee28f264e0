"""The edge agent: inputs, outputs, durable outbox, MQTT session, commands."""

from agent.errors import AgentError

__all__ = ["AgentError"]
