"""The collector: ingest, store, presence, alarms, patrol plan, completion, reports, web."""
