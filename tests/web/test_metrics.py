"""Prometheus metrics at /metrics: what central reports and who may read it."""

from __future__ import annotations

import dataclasses

import pytest
from starlette.testclient import TestClient

from central.config import ConfigError, parse_config
from central.metrics import Metrics, MetricSources, agent_readings
from tests.web.conftest import BASE, World, login

CENTRAL_TOML = 'timezone = "Asia/Shanghai"\ndata_dir = "/var/lib/gridpatrol"\n'


def _lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def test_the_collector_reads_its_sources_on_each_scrape() -> None:
    counters = {"events_stored": 7, "bad_message.garbage": 2}
    metrics = Metrics(MetricSources(
        counters=lambda: counters,
        queue_depths=lambda: {"ingest": 3},
        alarms=lambda: [("active", "panic", 1), ("resolved", "alarm", 4)],
        agents=lambda: [("gate-1", "online", 0), ("gate-2", "offline", 12), ("gate-3", "unknown", None)],
    ))
    text = metrics.render().decode()
    assert {
        "gridpatrol_events_stored_total 7.0",
        "gridpatrol_bad_message_garbage_total 2.0",
        'gridpatrol_queue_depth{queue="ingest"} 3.0',
        'gridpatrol_alarms{kind="panic",state="active"} 1.0',
        'gridpatrol_alarms{kind="alarm",state="resolved"} 4.0',
        'gridpatrol_agents{state="online"} 1.0',
        'gridpatrol_agents{state="offline"} 1.0',
        'gridpatrol_agents{state="disconnected"} 0.0',
        'gridpatrol_agents{state="unknown"} 1.0',
        'gridpatrol_agent_outbox_depth{agent="gate-1"} 0.0',
        'gridpatrol_agent_outbox_depth{agent="gate-2"} 12.0',
        "gridpatrol_metrics_source_errors_total 0.0",
    } <= _lines(text)
    counters["events_stored"] = 9  # read again at the next scrape, not cached
    assert "gridpatrol_events_stored_total 9.0" in _lines(metrics.render().decode())


@pytest.mark.allow_logged_exceptions
def test_a_failing_source_leaves_the_others_answering() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("store gone")

    text = Metrics(MetricSources(counters=broken, queue_depths=lambda: {"ingest": 0})).render().decode()
    assert {'gridpatrol_queue_depth{queue="ingest"} 0.0', "gridpatrol_metrics_source_errors_total 1.0"} <= _lines(text)


def test_alarms_and_agents_are_read_from_the_store(world: World) -> None:
    world.raise_alarm("school-9-gate-1", "office-panic")
    world.set_presence("school-9-gate-1", "online", outbox_depth=5, reconnects=0, clock_synced=True)
    assert world.store.alarm_counts() == [("active", "panic", 1)]
    assert agent_readings(world.store.list_agents)() == [("school-9-gate-1", "online", 5)]


def _app(world: World, access: str) -> TestClient:
    config = dataclasses.replace(world.config, web=dataclasses.replace(world.config.web, metrics=access))
    world.config = config
    metrics = Metrics(MetricSources(queue_depths=lambda: {"ingest": 0}))
    return TestClient(world.build_app(metrics=metrics), base_url=BASE)


def test_metrics_need_a_login_by_default(world: World) -> None:
    with _app(world, "login") as client:
        r = client.get("/metrics")
        assert (r.status_code, r.json()) == (401, {"error": "login required"})
        login(client, "lin")
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=")
        assert 'gridpatrol_queue_depth{queue="ingest"} 0.0' in r.text


def test_open_metrics_answer_anyone_and_nothing_else_opens(world: World) -> None:
    with _app(world, "open") as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/agents").status_code == 401


def test_the_metrics_setting() -> None:
    assert parse_config(CENTRAL_TOML).web.metrics == "login"
    assert parse_config(CENTRAL_TOML + '[web]\nmetrics = "open"\n').web.metrics == "open"
    with pytest.raises(ConfigError) as info:
        parse_config(CENTRAL_TOML + '[web]\nmetrics = "public"\n', source="central.toml")
    assert str(info.value) == "central.toml: web.metrics: 'public' is not one of login, open"
