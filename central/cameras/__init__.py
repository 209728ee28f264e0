"""Camera snapshots kept with alarms (docs/cameras.md)."""
