"""Notifications of alarms along the escalation tiers, through Apprise (docs/notify.md)."""
