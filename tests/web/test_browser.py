"""The dashboard in a real headless Chromium: what a control-room desk sees and does.

Alarms are raised through central's real objects (store commit, then the
alarm book, which announces on the bus), so the page learns of them exactly
as it will in a running central: a notice on the bus, then /api/stream.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from central.web.server import WebServer
from tests.support import wait_until
from tests.web.conftest import World, log_in, screenshot

APPEAR_TIMEOUT_MS = 5000


def test_alarm_appears_live_and_is_acknowledged(world: World, server: WebServer, chromium: Any) -> None:
    page = log_in(chromium, server, "duty")
    assert page.inner_text("#alarm-count") == "0"
    page.evaluate("window.__noReload = true")
    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic", kind="panic")
    raised = time.time()
    page.wait_for_selector(f"#active-list #alarm-{alarm_id}", timeout=APPEAR_TIMEOUT_MS)
    seen = page.evaluate(f"window.gpLive.seen['{alarm_id}:active']") / 1000
    assert page.evaluate("window.__noReload") is True, "the page reloaded"
    assert seen - raised < APPEAR_TIMEOUT_MS / 1000
    assert page.is_visible("#banner")
    assert page.inner_text("#banner-text") == "Panic button · office-panic · 第九中学东门 · 城洲第一网格"
    assert page.inner_text("#alarm-count") == "1"
    assert page.evaluate("window.gpLive.beeps") == 1
    assert page.inner_text(f"#alarm-{alarm_id} .trail").startswith(dt.datetime.fromtimestamp(raised, ZoneInfo("Asia/Shanghai")).strftime("%H:%M"))

    page.click(f"#alarm-{alarm_id} .ack-btn")
    page.wait_for_selector(f"#recent-list #alarm-{alarm_id}[data-state=resolved]", timeout=APPEAR_TIMEOUT_MS)
    assert page.inner_text("#alarm-count") == "0"
    assert page.is_visible("#no-active")
    assert "Acknowledged by duty at" in page.inner_text(f"#alarm-{alarm_id} .acked")
    row = world.alarm_row(alarm_id)
    assert (row["state"], row["acked_by"]) == ("resolved", "duty")
    assert abs(row["acked_ts"] / 1000 - time.time()) < 60
    assert page.evaluate("window.__noReload") is True
    assert page.errors == []


def test_acknowledgement_by_a_colleague_reaches_every_desk(world: World, server: WebServer, chromium: Any,
                                                           chromium_browser: Any) -> None:
    alarm_id = world.raise_alarm("school-9-gate-1", "north-fence", kind="alarm")
    desk_a = log_in(chromium, server, "duty")
    other = chromium_browser.new_context(locale="zh-CN")
    try:
        desk_b = log_in(other, server, "lin")
        assert desk_b.is_visible(f"#active-list #alarm-{alarm_id}")
        desk_a.click(f"#alarm-{alarm_id} .ack-btn")
        # An acknowledged intrusion stays on the record until its loop is restored.
        desk_b.wait_for_selector(f"#recent-list #alarm-{alarm_id}[data-state=acknowledged]", timeout=APPEAR_TIMEOUT_MS)
        assert "duty" in desk_b.inner_text(f"#alarm-{alarm_id} .acked")
        assert desk_b.inner_text("#alarm-count") == "0"
        assert desk_b.errors == []
    finally:
        other.close()


def test_a_community_desk_sees_only_its_community(world: World, server: WebServer, chromium: Any) -> None:
    page = log_in(chromium, server, "lin")
    theirs = world.raise_alarm("school-3-gate-1", "office-panic")
    mine = world.raise_alarm("school-9-gate-1", "office-panic")
    # Notices reach a stream in order: once lin's own alarm is shown, the other
    # community's (raised first) would have been shown before it if it were going to be.
    page.wait_for_selector(f"#alarm-{mine}", timeout=APPEAR_TIMEOUT_MS)
    assert page.query_selector(f"#alarm-{theirs}") is None
    assert page.inner_text("#alarm-count") == "1"
    assert "第三小学北门" not in page.content()

    token = page.evaluate("JSON.parse(document.getElementById('gp-config').textContent).csrf")
    # Lin's own session, straight at the API: the other alarm does not exist for her.
    r = page.request.post(f"{server.url}/api/alarms/{theirs}/ack", headers={"X-CSRF-Token": token, "Origin": server.url})
    assert (r.status, r.json()) == (404, {"error": f"alarm {theirs} not found", "alarm": None})
    assert page.request.get(f"{server.url}/api/alarms/{theirs}").status == 404
    assert world.alarm_row(theirs)["state"] == "active"
    assert page.errors == []


def test_no_page_without_login_and_no_post_without_token(world: World, server: WebServer, chromium: Any) -> None:
    anonymous = chromium.new_page()
    for path in ("/", "/agents", "/units", "/events", "/report", "/routes/night-loop"):
        anonymous.goto(server.url + path)
        assert anonymous.url == f"{server.url}/login?next={path}", path
    r = anonymous.request.get(server.url + "/api/alarms")
    assert (r.status, r.json()) == (401, {"error": "login required"})
    anonymous.close()

    page = log_in(chromium, server, "duty")
    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic")
    status = page.evaluate(f"fetch('/api/alarms/{alarm_id}/ack', {{method: 'POST'}}).then(r => r.status)")
    assert status == 403
    assert world.alarm_row(alarm_id)["state"] == "active"


def test_presence_and_scans_arrive_live(world: World, server: WebServer, chromium: Any) -> None:
    world.set_presence("school-9-gate-1", "online", outbox_depth=0, reconnects=1, clock_synced=True)
    page = log_in(chromium, server, "duty", "/agents")
    assert page.inner_text("#agent-school-9-gate-1 .state") == "online"
    world.set_presence("school-9-gate-1", "offline", outbox_depth=7, reconnects=2, clock_synced=True)
    page.wait_for_function("() => document.querySelector('#agent-school-9-gate-1 .state').textContent === 'offline'",
                           timeout=APPEAR_TIMEOUT_MS)
    assert page.get_attribute("#agent-school-9-gate-1", "class").startswith("s-offline")

    page.goto(server.url + "/")
    page.wait_for_selector("#live.on")
    world.store_event("school-9-gate-1", "scan", "gate-2", tag="67003B51C6")
    item = page.wait_for_selector("#scan-feed li.fresh", timeout=APPEAR_TIMEOUT_MS)
    assert "gate-2" in item.inner_text() and "林" in item.inner_text()
    assert page.errors == []


@pytest.mark.parametrize(("path", "listing"), [("/", "#scan-feed"), ("/events", "#events")], ids=["alarms", "events"])
def test_a_flood_of_scans_past_the_live_budget_ends_in_the_newest_scans_on_the_page(
        world: World, server: WebServer, chromium: Any, path: str, listing: str) -> None:
    """Past the budget scans are not sent one by one; the page reads its list again once the flood eases."""
    from central.app import LIVE_EVENTS_BURST, BusBridge
    from central.store import StoredEvent

    page = log_in(chromium, server, "duty", path)
    page.wait_for_selector("#live.on")
    now = world.now_ms()
    flood = [StoredEvent(agent="school-9-gate-1", eseq=i, kind="scan", source="gate-2", ts=now + i, ts_est=now + i,
                         ts_estimated=False, received_ts=now + i, replayed=False, fields={"tag": f"AB{i:08X}"},
                         boot_id="boot-1", mono_ms=i, clock_synced=True) for i in range(1, 2 * LIVE_EVENTS_BURST + 1)]
    conn = world.store.connect()
    try:
        with conn:
            world.store.insert_events(conn, flood)
    finally:
        conn.close()
    bridge = BusBridge(world.bus)
    bridge.events_stored(flood)  # one stored batch, as ingest hands it on
    assert bridge.skipped == LIVE_EVENTS_BURST
    newest = f"AB{len(flood):08X}"  # no printed card number (a decimal column beside it) can look like it
    page.wait_for_function(f"() => document.querySelector('{listing}').innerText.includes('{newest}')",
                           timeout=APPEAR_TIMEOUT_MS)
    assert page.errors == []


def _history(world: World) -> None:
    """A fortnight of nights walked more or less well, for the report and the timeline."""
    tz = ZoneInfo("Asia/Shanghai")
    today = dt.datetime.now(tz).date()
    for back in range(1, 15):
        night = today - dt.timedelta(days=back)
        base = int(dt.datetime.combine(night, dt.time(22, 5), tzinfo=tz).timestamp() * 1000)
        for slot in range(4):
            if (back + slot) % 4 == 0:
                continue  # a missed round
            start = base + slot * 7_200_000 + (6_900_000 if (back * slot) % 7 == 3 else 0)  # sometimes late
            readers = ["gate-1", "gate-2", "gate-3"]
            if back % 5 == 2 and slot == 1:
                readers = ["gate-1", "gate-3", "gate-2"]  # out of order
            for i, reader in enumerate(readers):
                if (back * slot) % 6 == 1 and i == 2:
                    continue  # incomplete
                world.store_event("school-9-gate-1", "scan", reader, ts=start + i * 600_000, tag="67003B51C6")


@pytest.mark.slow
def test_screenshots_of_every_page(world: World, server: WebServer, chromium: Any, chromium_browser: Any) -> None:
    """Saved under artifacts/screenshots/ for people to look at; the checks here are that each page renders clean."""
    _history(world)
    world.set_presence("school-9-gate-1", "online", outbox_depth=0, reconnects=1, clock_synced=True)
    world.set_presence("school-3-gate-1", "disconnected", outbox_depth=42, reconnects=9, clock_synced=False)
    world.raise_alarm("school-9-gate-1", "north-fence", kind="alarm")
    acked = world.raise_alarm("school-3-gate-1", "office-panic")
    world.alarms.acknowledge(acked, "lin")
    yesterday = (dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)).isoformat()
    page = log_in(chromium, server, "duty")
    new = world.raise_alarm("school-9-gate-1", "office-panic")
    page.wait_for_selector(f"#alarm-{new}")
    screenshot(page, "alarms-en")
    pages = {"agents": "/agents", "units": "/units", "events": "/events", "report": f"/report?date={yesterday}",
             "route": f"/routes/night-loop?date={yesterday}"}
    for name, path in pages.items():
        page.goto(server.url + path)
        page.wait_for_selector("#live.on")
        screenshot(page, f"{name}-en")
    assert page.errors == []

    phone = chromium_browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                         has_touch=True, locale="zh-CN")
    try:
        p = log_in(phone, server, "duty")
        screenshot(p, "alarms-zh-phone")
        for name, path in pages.items():
            p.goto(server.url + path)
            p.wait_for_selector("#live.on")
            overflow = p.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} is wider than a phone screen by {overflow} px"
            screenshot(p, f"{name}-zh-phone")
        assert p.inner_text("h1").startswith("巡更时间线")
        assert p.errors == []
    finally:
        phone.close()


TABS = ["/", "/agents", "/units", "/events", "/report", "/routes/night-loop", "/", "/agents", "/events", "/"]


def test_ten_tabs_share_one_stream_all_live_and_each_can_acknowledge(world: World, server: WebServer,
                                                                      chromium: Any) -> None:
    """Browsers allow six connections per host: with a stream per tab, the sixth tab broke Acknowledge."""
    first = log_in(chromium, server, "duty")
    tabs = [first]
    for path in TABS[1:]:
        tab = chromium.new_page()
        tab.errors = []
        tab.on("pageerror", lambda exc, tab=tab: tab.errors.append(str(exc)))
        tab.goto(server.url + path)
        tab.wait_for_selector("#live.on", timeout=APPEAR_TIMEOUT_MS)
        tabs.append(tab)
    assert len(tabs) == 10
    assert all(tab.evaluate("window.gpLive.shared") for tab in tabs)
    assert server.app.state.hub.client_count == 1  # one stream for the whole browser
    for n, tab in enumerate(tabs):
        alarm_id = world.raise_alarm("school-9-gate-1", f"panic-{n}")
        for other in tabs:  # every tab hears of it live, without a reload
            other.wait_for_function(f"() => window.gpLive.seen['{alarm_id}:active']", timeout=APPEAR_TIMEOUT_MS)
        # Acknowledge from this tab: the card on an alarms page, the banner on any other.
        button = f"#alarm-{alarm_id} .ack-btn" if tab.url.rstrip("/") == server.url else "#banner-ack .ack-btn"
        tab.click(button, timeout=APPEAR_TIMEOUT_MS)
        wait_until(lambda alarm_id=alarm_id: world.alarm_row(alarm_id)["state"] != "active", timeout=5,
                   message=f"ack of {alarm_id} from tab {n}")
        assert world.alarm_row(alarm_id)["acked_by"] == "duty"
        for other in tabs:
            other.wait_for_function(f"() => window.gpLive.seen['{alarm_id}:resolved']", timeout=APPEAR_TIMEOUT_MS)
        assert all(other.inner_text("#alarm-count") == "0" for other in tabs)
    # An eleventh tab still loads at once: connections are left for pages.
    extra = chromium.new_page()
    extra.goto(server.url + "/agents", timeout=APPEAR_TIMEOUT_MS)
    extra.wait_for_selector("#live.on", timeout=APPEAR_TIMEOUT_MS)
    assert [e for tab in tabs for e in tab.errors] == []


def test_cards_stay_put_panics_first_then_by_time_raised(world: World, server: WebServer, chromium: Any) -> None:
    intrusion = world.raise_alarm("school-9-gate-1", "north-fence", kind="alarm")
    page = log_in(chromium, server, "duty")
    panic = world.raise_alarm("school-9-gate-1", "office-panic", kind="panic")
    later = world.raise_alarm("school-3-gate-1", "east-wall", kind="tamper")
    page.wait_for_selector(f"#active-list #alarm-{later}", timeout=APPEAR_TIMEOUT_MS)
    order = page.eval_on_selector_all("#active-list .alarm", "cards => cards.map(c => Number(c.dataset.id))")
    assert order == [panic, intrusion, later]
    # Escalations update the cards where they stand.
    world.alarms.tick(time.time() + 10_000)
    page.wait_for_function(f"() => [{panic}, {intrusion}, {later}].every(id => "
                           "document.querySelector('#alarm-' + id + ' .trail').textContent.includes('escalate'))",
                           timeout=APPEAR_TIMEOUT_MS)
    order = page.eval_on_selector_all("#active-list .alarm", "cards => cards.map(c => Number(c.dataset.id))")
    assert order == [panic, intrusion, later]
    world.raise_alarm("school-9-gate-1", "office-panic-2", kind="panic")
    page.wait_for_function("() => document.querySelectorAll('#active-list .alarm').length === 4", timeout=APPEAR_TIMEOUT_MS)
    order = page.eval_on_selector_all("#active-list .alarm", "cards => cards.map(c => c.dataset.kind)")
    assert order == ["panic", "panic", "alarm", "tamper"]
    assert page.inner_text(f"#alarm-{intrusion} .kind") == "Intrusion"
    # The banner sits below the navigation, never over it.
    nav = page.query_selector("nav.nav").bounding_box()
    banner = page.query_selector("#banner").bounding_box()
    assert banner["y"] >= nav["y"] + nav["height"]
    assert page.errors == []


def test_without_shared_worker_each_tab_streams_on_its_own(world: World, server: WebServer, chromium: Any) -> None:
    """Chrome on Android has no SharedWorker: the page falls back to its own EventSource."""
    chromium.add_init_script("window.gpNoSharedWorker = true")
    page = log_in(chromium, server, "duty")
    assert page.evaluate("window.gpLive.shared") is False
    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic")
    page.wait_for_selector(f"#active-list #alarm-{alarm_id}", timeout=APPEAR_TIMEOUT_MS)
    assert page.errors == []
