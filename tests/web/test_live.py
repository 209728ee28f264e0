"""/api/stream: bus notices to server-sent events, per scope, over a real socket."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Iterator

import httpx2
import pytest

from central.bus import Bus, Notice
from central.web.live import CLIENT_QUEUE_MAX, LiveHub, LiveMessage
from central.web.scope import Scope
from central.web.server import WebServer
from tests.web.conftest import READ_TIMEOUT_S, Stream, World


def run_loop(coro: Any) -> Any:
    """Run a coroutine on a loop of its own thread (Playwright's sync API may hold this thread's)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(coro, 20))
        except BaseException as exc:  # handed to the test's thread
            box["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def streams(server: WebServer) -> Iterator[Any]:
    opened: list[Stream] = []

    def open_for(user: str) -> Stream:
        s = Stream(server, user)
        opened.append(s)
        return s

    try:
        yield open_for
    finally:
        for s in opened:
            s.close()


def test_alarms_reach_each_desk_by_scope_and_in_order(world: World, streams: Any) -> None:
    duty, lin = streams("duty"), streams("lin")
    theirs = world.raise_alarm("school-3-gate-1", "office-panic")
    mine = world.raise_alarm("school-9-gate-1", "office-panic")
    first, second = duty.next_of("alarm"), duty.next_of("alarm")
    assert (first["id"], second["id"]) == (theirs, mine)
    got = lin.next_of("alarm")
    assert got["id"] == mine  # the other community's alarm, raised first, never came
    assert {k: got[k] for k in ("agent", "source", "kind", "unit", "state", "acked_by", "escalated_to")} == {
        "agent": "school-9-gate-1", "source": "office-panic", "kind": "panic", "unit": "chengzhou-g1",
        "state": "active", "acked_by": None, "escalated_to": None}
    assert got["unit_name"] == "城洲第一网格" and got["agent_name"] == "第九中学东门"
    assert [s["action"] for s in got["trail"]] == ["raise"]


def test_acknowledgements_presence_and_scans_are_streamed(world: World, streams: Any) -> None:
    lin = streams("lin")
    alarm_id = world.raise_alarm("school-9-gate-1", "north-fence", kind="alarm")
    assert lin.next_of("alarm")["state"] == "active"
    world.alarms.acknowledge(alarm_id, "duty")
    acked = lin.next_of("alarm")
    assert (acked["id"], acked["state"], acked["acked_by"]) == (alarm_id, "acknowledged", "duty")
    world.set_presence("school-9-gate-1", "offline", outbox_depth=3, reconnects=4, clock_synced=True)
    agent = lin.next_of("agent")
    assert {k: agent[k] for k in ("agent", "state", "outbox_depth", "reconnects", "unit")} == {
        "agent": "school-9-gate-1", "state": "offline", "outbox_depth": 3, "reconnects": 4, "unit": "chengzhou-g1"}
    world.store_event("school-9-gate-1", "scan", "gate-1", tag="67003B51C6")
    scan = lin.next_of("event")
    assert {k: scan[k] for k in ("agent", "kind", "source", "tag", "member")} == {
        "agent": "school-9-gate-1", "kind": "scan", "source": "gate-1", "tag": "67003B51C6", "member": "林"}


def test_notices_published_from_another_thread(world: World, streams: Any) -> None:
    duty = streams("duty")
    ids: list[int] = []
    worker = threading.Thread(target=lambda: ids.append(world.raise_alarm("school-3-gate-1", "office-panic")))
    worker.start()
    worker.join(10)
    assert duty.next_of("alarm")["id"] == ids[0]


def test_the_stream_needs_a_login(server: WebServer) -> None:
    with httpx2.Client(base_url=server.url, timeout=READ_TIMEOUT_S) as c:
        r = c.get("/api/stream")
        assert (r.status_code, r.json()) == (401, {"error": "login required"})


def test_stopping_the_server_ends_open_streams(world: World) -> None:
    server = WebServer(world.build_app(), "127.0.0.1:0")
    server.start()
    stream = Stream(server, "duty")
    try:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5.0
        with pytest.raises((EOFError, httpx2.RemoteProtocolError, httpx2.ReadError)):
            stream.next_event()
    finally:
        stream.close()
        server.stop()


def test_a_browser_that_falls_behind_is_told_to_resync() -> None:
    """The hub itself on a loop: a stream nobody reads is cut loose, not buffered without end."""

    async def scenario() -> list[bytes]:
        bus = Bus()
        hub = LiveHub(bus, lambda n: [LiveMessage("event", dict(n.data), everyone=True)])
        await hub.start()
        stream = hub.stream(Scope("x", frozenset(), False, None))
        frames = [await stream.__anext__(), await stream.__anext__()]  # retry/comment, hello
        for i in range(CLIENT_QUEUE_MAX + 5):
            bus.publish("event", {"n": i})
        while hub.client_count:
            await asyncio.sleep(0.01)
        frames += [frame async for frame in stream]
        await hub.stop()
        return frames

    frames = run_loop(scenario())
    assert frames[-1].endswith(b"event: resync\ndata: {}\n\n")
    assert len(frames) == 3


def test_a_resync_notice_tells_every_browser_to_reload() -> None:
    """A group's feed that lost notices says so on the bus: no browser keeps a view with holes in it."""

    async def scenario() -> list[list[bytes]]:
        bus = Bus()
        hub = LiveHub(bus, lambda n: [LiveMessage("event", dict(n.data), everyone=True)])
        await hub.start()
        streams = [hub.stream(Scope(name, frozenset(), False, None)) for name in ("a", "b")]
        for stream in streams:
            await stream.__anext__()  # retry/comment
            await stream.__anext__()  # hello
        bus.publish("event", {"n": 1})
        bus.publish("resync", {})
        frames = [[frame async for frame in stream] for stream in streams]
        await hub.stop()
        return frames

    for frames in run_loop(scenario()):
        assert len(frames) == 2 and b"event: event\n" in frames[0]
        assert frames[1].endswith(b"event: resync\ndata: {}\n\n")


@pytest.mark.allow_logged_exceptions
def test_a_failing_notice_is_logged_and_the_stream_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> bytes:
        bus = Bus()

        def prepare(notice: Notice) -> list[LiveMessage]:
            if notice.data.get("bad"):
                raise KeyError("boom")
            return [LiveMessage("event", dict(notice.data), everyone=True)]

        hub = LiveHub(bus, prepare)
        await hub.start()
        stream = hub.stream(Scope("x", frozenset(), False, None))
        await stream.__anext__()
        await stream.__anext__()
        bus.publish("event", {"bad": True})
        bus.publish("event", {"good": 1})
        frame = await stream.__anext__()
        await stream.aclose()
        await hub.stop()
        return frame

    frame = run_loop(scenario())
    assert frame.endswith(b'event: event\ndata: {"good":1}\n\n')
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["could not prepare a live event notice"]


def test_a_stream_ends_once_its_session_has_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.web import live

    monkeypatch.setattr(live, "KEEPALIVE_S", 0.05)
    valid = [True]

    async def scenario() -> list[bytes]:
        hub = LiveHub(Bus(), lambda n: [])
        await hub.start()
        stream = hub.stream(Scope("x", frozenset(), False, None), still_valid=lambda: valid[0])
        frames = [await stream.__anext__(), await stream.__anext__(), await stream.__anext__()]  # ..., a keepalive
        valid[0] = False  # logged out, or the account disabled
        frames += [frame async for frame in stream]
        await hub.stop()
        return frames

    frames = run_loop(scenario())  # returns at all: the stream ended by itself
    assert frames[2] == b": keepalive\n\n"
    assert frames[3:] == []  # nothing more once the session is gone


def test_the_hub_listens_to_the_bus_only_while_a_stream_is_open() -> None:
    """No browser, no cost: a flood of scans must not be shaped into notices that nobody reads."""

    async def scenario() -> tuple[list[bool], list[bytes]]:
        bus = Bus()
        hub = LiveHub(bus, lambda n: [LiveMessage("event", dict(n.data), everyone=True)])
        await hub.start()
        seen = [bus.listened]
        stream = hub.stream(Scope("x", frozenset(), False, None))
        await stream.__anext__()
        await stream.__anext__()
        seen.append(bus.listened)
        # A burst from another thread, as ingest's relay sends one: every notice arrives, in order.
        await asyncio.to_thread(lambda: [bus.publish("event", {"n": i}) for i in range(800)])
        frames = [await stream.__anext__() for _ in range(800)]
        await stream.aclose()
        seen.append(bus.listened)
        await hub.stop()
        return seen, frames

    seen, frames = run_loop(scenario())
    assert seen == [False, True, False]
    assert [json.loads(f.split(b"data: ", 1)[1]) for f in frames] == [{"n": i} for i in range(800)]


def test_a_flood_of_scans_goes_live_within_a_budget_and_alarms_always_go() -> None:
    """Past the budget scans are not shaped at all (the collector's CPU carries the alarms); the pages are told."""
    from central.app import LIVE_EVENTS_BURST, LIVE_EVENTS_PER_S, BusBridge
    from tests.support import ev

    bus = Bus()
    got: list[Notice] = []
    bus.subscribe(got.append)
    now = [100.0]
    bridge = BusBridge(bus, monotonic=lambda: now[0])
    flood = [ev("gate", i) for i in range(1, 1001)]
    bridge.events_stored([*flood[:500], ev("school", 1, kind="panic"), *flood[500:]])
    scans = [n for n in got if n.topic == "event" and n.data["kind"] == "scan"]
    assert len(scans) == LIVE_EVENTS_BURST
    assert [n.data["agent"] for n in got if n.topic == "event" and n.data["kind"] == "panic"] == ["school"]
    assert [n.data for n in got if n.topic == "events-skipped"] == [{"count": 1000 - LIVE_EVENTS_BURST}]
    got.clear()
    now[0] += 1.0  # a second later: a second's worth of budget
    bridge.events_stored([ev("gate", i) for i in range(1001, 1201)])
    assert sum(1 for n in got if n.topic == "event") == int(LIVE_EVENTS_PER_S)
    assert bridge.skipped == 1000 - LIVE_EVENTS_BURST + 200 - int(LIVE_EVENTS_PER_S)


def test_skipped_events_end_in_one_refresh_once_the_flood_eases(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.web import live

    monkeypatch.setattr(live, "SKIPPED_QUIET_S", 0.05)

    async def scenario() -> list[bytes]:
        bus = Bus()
        hub = LiveHub(bus, lambda n: [LiveMessage("event", dict(n.data), everyone=True)])
        await hub.start()
        stream = hub.stream(Scope("x", frozenset(), False, None))
        frames = [await stream.__anext__(), await stream.__anext__()]
        for _ in range(5):  # one notice per stored batch that had skips
            bus.publish("events-skipped", {"count": 100})
            await asyncio.sleep(0.01)
        bus.publish("event", {"n": 1})
        frames += [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        await hub.stop()
        return frames

    frames = run_loop(scenario())
    assert frames[2].endswith(b'event: event\ndata: {"n":1}\n\n')
    assert frames[3].endswith(b'event: refresh\ndata: {"topic":"events"}\n\n')  # one, after the last skip
