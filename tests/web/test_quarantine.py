"""The quarantine on the dashboard: each desk sees its own agents' messages, never the payload, paged."""

from __future__ import annotations

from contextlib import closing
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from central.store import quarantine
from central.store.sqlite import transaction
from central.web.logins import LoginThrottle
from tests.web.conftest import BASE, World, login


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.build_app(throttle=LoginThrottle(free_tries=3, address_free_tries=100)), base_url=BASE) as c:
        yield c


def put(world: World, agent: str | None, eseq: int | None, reason: str) -> None:
    with closing(world.store.connect()) as conn, transaction(conn):
        quarantine.put(conn, agent=agent, topic=f"gridpatrol/v1/{agent}/evt", payload=b"\x80secret", reason=reason,
                       received_ts=world.now_ms(), epoch="e1" if eseq else None, eseq=eseq)


def test_each_desk_sees_the_quarantine_of_its_own_agents(client: TestClient, world: World) -> None:
    put(world, "school-9-gate-1", 7, "refused: <script>alert(1)</script>")
    put(world, "school-3-gate-1", 3, "refused by a trigger")
    put(world, None, None, "no agent at all")
    assert client.get("/api/quarantine").status_code == 401
    login(client, "lin")  # chengzhou: school 9 only
    rows = client.get("/api/quarantine").json()
    assert [(r["agent"], r["eseq"], r["epoch"]) for r in rows] == [("school-9-gate-1", 7, "e1")]
    assert "payload" not in rows[0] and "payload_hex" not in rows[0]
    page = client.get("/agents").text
    assert 'id="quarantine"' in page and "&lt;script&gt;" in page and "<script>alert" not in page


def test_the_district_desk_sees_all_and_pages(client: TestClient, world: World) -> None:
    for n in range(1, 6):
        put(world, "school-3-gate-1", n, f"reason {n}")
    put(world, None, None, "no agent at all")
    login(client, "duty")  # fengze: the root
    first = client.get("/api/quarantine?limit=4")
    assert [r["reason"] for r in first.json()] == ["no agent at all", "reason 5", "reason 4", "reason 3"]
    rest = client.get(f"/api/quarantine?limit=4&before={first.headers['X-Next-Before']}").json()
    assert [r["reason"] for r in rest] == ["reason 2", "reason 1"]
    assert client.get("/api/quarantine?before=%C2%B2").status_code == 400


def test_an_empty_quarantine_shows_no_section(client: TestClient, world: World) -> None:
    login(client, "duty")
    assert client.get("/api/quarantine").json() == []
    assert 'id="quarantine"' not in client.get("/agents").text
