"""Where the dashboard meets the rest of central: config, plan registry, reports.

Small adapters, so that web code depends on the narrow protocols of ports.py
and central's app object can hand over what it already holds.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from central.config import CentralConfig, load_config
from central.plan.registry import PlanRegistry
from central.report import CompletionReport, report_from_store
from central.store import StoreError


def load_central_config(path: str | Path) -> CentralConfig:
    return load_config(path)


def store_path_of(config: CentralConfig) -> Path:
    if config.store.path is None:
        raise StoreError(f"store {config.store.url} is not a file (PostgreSQL): open it with open_store(url)")
    return Path(config.store.path)


def plan_unit_ids(config: CentralConfig) -> frozenset[str] | None:
    """The units of the plan in force, or None before any import."""
    plan = PlanRegistry.for_data_dir(config.data_dir).current()
    return None if plan is None else frozenset(plan.unit_by_id)


def plan_team_ids(config: CentralConfig) -> frozenset[str] | None:
    """The teams of the plan in force, or None before any import."""
    plan = PlanRegistry.for_data_dir(config.data_dir).current()
    return None if plan is None else frozenset(t.id for t in plan.teams)


class _Tracker(Protocol):
    def report(self, day: dt.date | None = None) -> CompletionReport | None: ...


class StoreCompletionReports:
    """``CompletionReports``: the live tracker's report for the days it tracks, else one built from the store."""

    def __init__(self, *, store: Any, plans: PlanRegistry, tracker: _Tracker | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._plans = plans
        self._tracker = tracker
        self._clock = clock

    def completion(self, date: dt.date) -> CompletionReport | None:
        if self._tracker is not None:
            tracked = self._tracker.report(date)
            if tracked is not None:
                return tracked
        history = self._plans.history()
        if not history:
            return None
        return report_from_store(self._store, history, date, int(self._clock() * 1000))
