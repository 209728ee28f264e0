"""Prometheus metrics for central, read when scraped.

:class:`CentralCollector` holds no numbers of its own: on every scrape it asks
its sources (plain callables) and turns what they say into metric families,
so nothing on the ingest or alarm path does extra work for metrics and the
figures are exactly the ones ``gridpatrol agents`` and the dashboard show.
``/metrics`` on the web app serves it (docs/reference.md, ``[web] metrics``).

Sources, each optional:

- ``counters``: central's cumulative counters (``events_stored``,
  ``store_errors``, ``bad_message.garbage``, ...), each exported as
  ``gridpatrol_<name>_total``;
- ``queue_depths``: queue name -> items waiting now (``gridpatrol_queue_depth``:
  ``ingest``, each relay of derived work, ``relay:<name>``, and in a group
  ``group_feed``, the other members' events announced and not yet read);
- ``alarms``: ``(state, kind, count)`` rows (``gridpatrol_alarms``);
- ``agents``: ``(agent, state, outbox_depth)`` rows, the outbox depth as the
  agent last reported it in its telemetry, None before any
  (``gridpatrol_agents`` by state, ``gridpatrol_agent_outbox_depth`` by agent).

A source that fails is logged and left out of that scrape; the others still
answer (``gridpatrol_metrics_source_errors_total`` counts the failures).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter as Tally
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from central.app import Central

_LOGGER = logging.getLogger(__name__)

PREFIX = "gridpatrol"
AGENT_STATES = ("online", "offline", "disconnected", "unknown")
ALARM_STATES = ("active", "acknowledged", "resolved")
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]")

AlarmRow = tuple[str, str, int]
AgentReading = tuple[str, str, "int | None"]


def metric_name(counter: str) -> str:
    """``bad_message.garbage`` -> ``gridpatrol_bad_message_garbage`` (Prometheus names: [a-zA-Z0-9_])."""
    return f"{PREFIX}_{_NOT_A_NAME.sub('_', counter)}"


@dataclass(frozen=True, slots=True)
class MetricSources:
    counters: Callable[[], Mapping[str, int]] | None = None
    queue_depths: Callable[[], Mapping[str, int]] | None = None
    alarms: Callable[[], Iterable[AlarmRow]] | None = None
    agents: Callable[[], Iterable[AgentReading]] | None = None


class CentralCollector(Collector):
    """A prometheus_client collector that reads :class:`MetricSources` on each scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self._lock = threading.Lock()
        self.source_errors = 0

    def _read(self, name: str, source: Callable[[], object] | None) -> object | None:
        if source is None:
            return None
        try:
            return source()
        except Exception:  # one failing source must not take the whole scrape down
            with self._lock:
                self.source_errors += 1
            _LOGGER.exception("metrics: the %s source failed", name)
            return None

    def collect(self) -> Iterator[Metric]:
        counters = self._read("counters", self.sources.counters)
        if isinstance(counters, Mapping):
            for name, value in sorted(counters.items()):
                # CounterMetricFamily adds the _total suffix itself.
                yield CounterMetricFamily(metric_name(name), f"central's counter {name}", value=int(value))

        depths = self._read("queue_depths", self.sources.queue_depths)
        if isinstance(depths, Mapping):
            family = GaugeMetricFamily(f"{PREFIX}_queue_depth", "items waiting in a queue of central now", labels=["queue"])
            for queue, depth in sorted(depths.items()):
                family.add_metric([queue], int(depth))
            yield family

        alarm_rows = self._read("alarms", self.sources.alarms)
        if alarm_rows is not None:
            family = GaugeMetricFamily(f"{PREFIX}_alarms", "alarms in the book, by state and kind", labels=["state", "kind"])
            for state, kind, count in sorted(alarm_rows):  # type: ignore[call-overload]  # rows, as the source says
                family.add_metric([state, kind], int(count))
            yield family

        readings = self._read("agents", self.sources.agents)
        if readings is not None:
            by_state: Tally[str] = Tally(dict.fromkeys(AGENT_STATES, 0))
            outbox = GaugeMetricFamily(f"{PREFIX}_agent_outbox_depth",
                                       "events in an agent's outbox that central has not acked, as its last telemetry said",
                                       labels=["agent"])
            for agent, state, depth in readings:  # type: ignore[attr-defined]  # rows, as the source says
                by_state[state] += 1
                if depth is not None:
                    outbox.add_metric([agent], int(depth))
            agents = GaugeMetricFamily(f"{PREFIX}_agents", "agents central knows, by presence state", labels=["state"])
            for state, count in sorted(by_state.items()):
                agents.add_metric([state], count)
            yield agents
            yield outbox

        yield CounterMetricFamily(f"{PREFIX}_metrics_source_errors", "metric sources that failed during a scrape",
                                  value=self.source_errors)


class Metrics:
    """What ``/metrics`` answers: the collector in a registry of its own (not the process-wide one)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, sources: MetricSources) -> None:
        self.collector = CentralCollector(sources)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- sources read from central ---------------------------------------------------------


class AgentRowLike(Protocol):
    """What the agents source needs of one of central's agent rows."""

    @property
    def agent(self) -> str: ...

    @property
    def state(self) -> str | None: ...

    @property
    def tele(self) -> Mapping[str, Any] | None: ...


def agent_readings(list_agents: Callable[[], Iterable[AgentRowLike]]) -> Callable[[], list[AgentReading]]:
    """``(agent, state, outbox_depth)`` from central's agent rows (``state`` None: ``unknown``)."""

    def read() -> list[AgentReading]:
        rows: list[AgentReading] = []
        for row in list_agents():
            depth = (row.tele or {}).get("outbox_depth")
            rows.append((row.agent, row.state or "unknown", depth if isinstance(depth, int) else None))
        return rows

    return read


def central_metrics(central: Central) -> Metrics:
    """The metrics of a running central: its ingest's counters and queues, its store's alarms and agents."""
    ingest = central.ingest

    feed = central.feed  # a group's (central/feed.py)

    def queue_depths() -> dict[str, int]:
        depths = dict(ingest.queue_depths)
        depths.update((f"relay:{relay.name}", relay.depth) for relay in central.relays)
        if feed is not None:
            depths["group_feed"] = feed.depth
        return depths

    def counters() -> dict[str, int]:
        return {**ingest.counters, **(feed.counters if feed is not None else {})}

    return Metrics(MetricSources(
        counters=counters,
        queue_depths=queue_depths,
        alarms=central.store.alarm_counts,
        agents=agent_readings(central.store.list_agents),
    ))
