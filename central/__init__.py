"""The collector: ingest, store, presence, alarms, patrol plan, completion, reports, web."""

from central.errors import CentralError

__all__ = ["CentralError"]
