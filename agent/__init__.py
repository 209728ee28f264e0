"""The edge agent: inputs, outputs, durable outbox, MQTT session, commands."""
