"""Every list pages (?limit=, ?before=), no answer passes a fixed size, and no id answers 500."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from central.web.api import MAX_LIST_BYTES
from tests.web.conftest import BASE, World, login


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.build_app(), base_url=BASE) as c:
        login(c, "duty")
        yield c


def walk(client: TestClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following each page's Link header."""
    pages = []
    r = client.get(path, params=params)
    while True:
        assert r.status_code == 200, r.text
        pages.append(r.json())
        link = r.headers.get("link")
        if link is None:
            return pages
        assert link.endswith('>; rel="next"') and r.headers["x-next-before"] in link
        r = client.get(link[1:link.index(">")])


def test_events_page_back_in_time_without_gaps_or_repeats(client: TestClient, world: World) -> None:
    for i in range(25):
        world.store_event("school-9-gate-1" if i % 2 else "school-3-gate-1", "scan", "gate-1", ts=1_700_000_000_000 + i * 1000,
                          tag="67003B51C6")
    pages = walk(client, "/api/events", limit=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [(e["ts"], e["agent"], e["eseq"]) for p in pages for e in p]
    assert len(set(seen)) == 25
    # Pages go back in time; inside a page, docs/reference.md's order (agent, then eseq).
    assert min(e["ts"] for e in pages[0]) > max(e["ts"] for e in pages[1])
    for p in pages:
        assert [(e["agent"], e["eseq"]) for e in p] == sorted((e["agent"], e["eseq"]) for e in p)
    assert len(client.get("/api/events").json()) == 25  # default 200


def test_alarms_page_and_carry_only_the_last_step_of_their_trail(client: TestClient, world: World) -> None:
    ids = [world.raise_alarm("school-9-gate-1", f"zone-{i}", kind="alarm") for i in range(7)]
    world.alarms.tick(__import__("time").time() + 100_000)  # every one escalates: trails of several steps
    pages = walk(client, "/api/alarms", limit=3)
    assert [a["id"] for p in pages for a in p] == sorted(ids, reverse=True)
    for a in (a for p in pages for a in p):
        assert len(a["trail"]) == 1 and a["trail_length"] > 1
        assert a["trail"][0]["action"] == "escalate"
        assert a["replayed"] is False
    whole = client.get(f"/api/alarms/{ids[0]}").json()
    assert len(whole["trail"]) == whole["trail_length"] > 1
    assert whole["trail"][0]["action"] == "raise"


def test_agents_and_units_page_too(client: TestClient, world: World) -> None:
    world.set_presence("school-9-gate-1", "online")
    assert [len(p) for p in walk(client, "/api/agents", limit=1)] == [1, 1]
    units = walk(client, "/api/units", limit=4)
    assert [len(p) for p in units] == [4, 2]
    assert len({u["unit"] for p in units for u in p}) == 6


def test_no_list_answer_passes_its_bound_even_of_the_largest_events(client: TestClient, world: World) -> None:
    # Events as large as the wire lets an agent send (64 KiB messages), many of them.
    for _ in range(40):
        world.store_event("school-9-gate-1", "fault", "gate-1", code="x", detail="界" * 20_000)
    r = client.get("/api/events", params={"limit": 1000})
    assert len(r.content) <= MAX_LIST_BYTES
    assert 0 < len(r.json()) < 40 and "x-next-before" in r.headers
    total = sum(len(p) for p in walk(client, "/api/events", limit=1000))
    assert total == 40


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(["²", "٣", "1²", "00", "9" * 19, "-1", "1e3", " 1", "%00"])))
def test_no_alarm_id_answers_500(client: TestClient, raw: str) -> None:
    from urllib.parse import quote

    ident = quote(raw, safe="")
    token = client.get("/").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    for method, path in (("GET", f"/api/alarms/{ident}"), ("GET", f"/fragments/alarm/{ident}"),
                         ("GET", f"/alarms/{ident}"), ("GET", f"/api/alarms/1/snapshots/{ident}"),
                         ("GET", f"/api/alarms/{ident}/snapshots/1"),
                         ("POST", f"/api/alarms/{ident}/ack"), ("POST", f"/alarms/{ident}/ack"),
                         ("GET", f"/routes/{ident}"), ("GET", f"/api/events?before={ident}"),
                         ("GET", f"/api/alarms?before={ident}"), ("GET", f"/api/agents?before={ident}"),
                         ("POST", f"/users/{ident}/disable")):
        r = client.request(method, path, headers={"X-CSRF-Token": token}, data={"csrf": token}, follow_redirects=False)
        assert r.status_code < 500, (method, path, r.status_code, r.text[:200])


def test_every_route_stays_under_a_megabyte_with_the_largest_events_and_many_alarms(client: TestClient, world: World) -> None:
    for n in range(300):
        world.store_event("school-9-gate-1", "fault", f"gate-{n}", code="x" * 100, detail="界" * 20_000)
    for n in range(300):
        world.raise_alarm("school-9-gate-1", f"zone-{n}-" + "z" * 60, kind="alarm")
    sizes = {}
    for path in ("/", "/agents", "/units", "/events", "/report", "/routes/night-loop", "/users", "/api/agents",
                 "/api/alarms?all=1&limit=1000", "/api/events?limit=1000", "/api/units?limit=1000", "/api/completion",
                 "/api/alarms/1", "/fragments/alarm/1"):
        r = client.get(path)
        assert r.status_code == 200, path
        sizes[path] = len(r.content)
    largest = max(sizes, key=sizes.__getitem__)
    print(f"largest answer: {largest} {sizes[largest]} bytes", json.dumps(sizes))
    assert sizes[largest] <= MAX_LIST_BYTES, sizes


def test_an_answer_past_the_backstop_is_refused_whole() -> None:
    import asyncio

    from starlette.responses import Response

    from central.web.guard import ResponseCap

    sent: list[dict[str, Any]] = []

    async def run() -> None:
        app = ResponseCap(Response(b"x" * 101), max_bytes=100)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "path": "/x", "method": "GET", "headers": []}, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 500
    assert b"too large" in sent[1]["body"] and len(sent) == 2


def test_replayed_alarms_unknown_kinds_and_quiet_pills_are_shown_as_such(client: TestClient, world: World) -> None:
    import sqlite3
    from contextlib import closing

    world.set_presence("school-9-gate-1", "online")
    world.set_presence("school-3-gate-1", "online")
    late = world.raise_alarm("school-9-gate-1", "office-panic", replayed=True)
    odd = world.raise_alarm("school-9-gate-1", "east-wall", kind="tamper")
    with closing(sqlite3.connect(world.config.store.path)) as db, db:
        db.execute("UPDATE alarms SET kind = 'smoke' WHERE id = ?", (odd,))  # a kind from a newer central
    assert client.get(f"/api/alarms/{late}").json()["replayed"] is True
    page = client.get("/").text
    assert 'class="pill warn tag-replayed"' in page.split(f'id="alarm-{late}"', 1)[1].split("</article>", 1)[0]
    card = page.split(f'id="alarm-{odd}"', 1)[0].rsplit("<article", 1)[1]
    assert "kind-unknown" in card
    assert "Unknown kind: smoke" in page
    assert "AGENT-OFFLINE" not in page and ">agent-offline<" not in page
    # Nothing offline: the "0 offline" pill is grey, not red.
    assert '<span class="pill" id="sum-offline">0 offline</span>' in page
    assert '<span class="pill good" id="sum-online">2 online</span>' in page


def test_the_events_page_links_to_older_events(client: TestClient, world: World) -> None:
    import re

    from central.web.pages import EVENT_PAGE_LIMIT

    for i in range(EVENT_PAGE_LIMIT + 5):
        world.store_event("school-9-gate-1", "scan", "gate-1", ts=1_700_000_000_000 + i * 1000, tag="67003B51C6")
    first = client.get("/events").text
    assert first.count('<tr class="k-scan') == EVENT_PAGE_LIMIT
    link = re.search(r'id="older" href="([^"]+)"', first)
    assert link is not None
    older = client.get(link.group(1).replace("&amp;", "&")).text
    assert older.count('<tr class="k-scan') == 5 and 'id="older"' not in older
    assert 'data-live=""' in older  # a page of the past does not take live rows
