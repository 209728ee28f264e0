"""Bus notices shaped into live messages for browsers.

Runs on a worker thread (the hub's pump hands it there). An alarm or presence
notice is answered with the row as the store now holds it, so a browser
never shows half an object; an event notice already carries the whole event.
"""

from __future__ import annotations

import logging
from typing import Any

from central.bus import Notice
from central.web.live import LiveMessage
from central.web.scope import Scope
from central.web.views import Dashboard

_LOGGER = logging.getLogger(__name__)

_EVENT_PUBLIC_SKIP = ("ts_est", "ts_estimated")


class NoticeShaper:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def _everything(self) -> Scope:
        plan = self.dashboard.plan()
        return Scope("", frozenset(plan.unit_by_id) if plan else frozenset(), True, plan)

    def __call__(self, notice: Notice) -> list[LiveMessage]:
        data = notice.data
        if notice.topic == "alarm":
            return self._alarm(data)
        if notice.topic == "presence":
            return self._presence(data)
        if notice.topic == "event":
            return self._event(data)
        if notice.topic in ("completion", "plan"):
            return [LiveMessage("refresh", {"topic": notice.topic}, everyone=True)]
        _LOGGER.debug("no live message for a %s notice", notice.topic)
        return []

    def _alarm(self, data: dict[str, Any]) -> list[LiveMessage]:
        scope = self._everything()
        alarm_id = data.get("id", data.get("alarm_id"))
        alarm = self.dashboard.alarm(scope, alarm_id) if isinstance(alarm_id, int) else None
        if alarm is None:
            _LOGGER.warning("alarm notice for unknown alarm %r", alarm_id)
            return []
        unit = alarm.get("unit") or scope.agent_unit(alarm["agent"])
        return [LiveMessage("alarm", alarm, agent=alarm["agent"], unit=unit)]

    def _presence(self, data: dict[str, Any]) -> list[LiveMessage]:
        agent = data.get("agent")
        if not isinstance(agent, str):
            return []
        row = self.dashboard.reader.agent(agent) or {"agent": agent, "state": data.get("state", "unknown")}
        scope = self._everything()
        plan = scope.plan
        unit = scope.agent_unit(agent)
        names = {a.id: a.name for a in plan.agents} if plan else {}
        row.update(unit=unit, unit_name=self.dashboard.unit_name(plan, unit), name=names.get(agent, ""))
        if isinstance(data.get("state"), str):
            row["state"] = data["state"]  # the notice is the newest word on presence
        return [LiveMessage("agent", row, agent=agent, unit=unit)]

    def _event(self, data: dict[str, Any]) -> list[LiveMessage]:
        agent = data.get("agent")
        if not isinstance(agent, str):
            return []
        scope = self._everything()
        plan = scope.plan
        event = {k: v for k, v in data.items() if k not in _EVENT_PUBLIC_SKIP}
        if plan is not None:
            event["agent_name"] = next((a.name for a in plan.agents if a.id == agent), "")
            tag = event.get("tag")
            fmt = event.get("fmt")
            hit = plan.member_of(tag, fmt if isinstance(fmt, str) else None) if isinstance(tag, str) else None
            if hit is not None:
                event["member"] = hit[1].name
        unit = scope.agent_unit(agent)
        return [LiveMessage("event", event, agent=agent, unit=unit)]
