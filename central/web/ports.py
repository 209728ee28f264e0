"""What the dashboard needs from the rest of central, as narrow protocols.

The web reads the store through central.store.dashboard; for everything else it holds
these. central's app object wires the real things (wiring.py adapts them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from central.plan.model import Plan
from central.report import CompletionReport


class PlanSource(Protocol):
    def current(self) -> Plan | None:
        """The plan in force now, or None before any import."""


class AlarmActions(Protocol):
    def acknowledge(self, alarm_id: int, by: str, now: float) -> Any:
        """Acknowledge; raises ``AlarmError`` when the alarm is unknown or no longer active. ``now``: UTC seconds."""


class CompletionReports(Protocol):
    def completion(self, date: dt.date) -> CompletionReport | None:
        """The completion report of that night, every unit (None: nothing to report)."""


class StoreLike(Protocol):
    """What build_app needs of central's Store: where its file is."""

    path: Any
