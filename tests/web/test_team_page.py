"""A team's own page on a team leader's phone: tonight's rounds, each checkpoint ticked as it is scanned.

Real headless Chromium at a phone-sized window; scans are stored through
central's real objects, and the page learns of them without a reload.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from central.plan.parse import parse_plan_bytes
from central.web.server import WebServer
from central.web.views import NIGHT_TURNS_AT_HOUR
from tests.web.conftest import PASSWORD, PLAN, World, log_in, login, screenshot

TZ = ZoneInfo("Asia/Shanghai")
LIN = "67003B51C6"
PHONE = {"width": 390, "height": 844}


def plan_walked_now(world: World) -> None:
    """A new version of the test plan whose night-loop has a round open now, on tonight's date."""
    now = dt.datetime.now(TZ).replace(second=0, microsecond=0)
    if now.hour >= NIGHT_TURNS_AT_HOUR:  # tonight is today: a window that opened 20 min ago
        start, end = now - dt.timedelta(minutes=20), now + dt.timedelta(minutes=100)
    else:  # tonight began yesterday: a 23-hour window that opened yesterday, its current slot from now
        start, end = now + dt.timedelta(hours=2), now + dt.timedelta(hours=1)
    text = PLAN.replace('window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }',
                        f'window = {{ start = "{start:%H:%M}", end = "{end:%H:%M}", every_min = 60 }}')
    assert text != PLAN
    effective = (dt.date.today() - dt.timedelta(days=30)).isoformat()
    world.plans.add(parse_plan_bytes(f'effective = "{effective}"\n{text}'.encode()))  # same start: it wins


@pytest.fixture
def phone(chromium_browser: Any) -> Iterator[Any]:
    context = chromium_browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                           locale="en-US")
    try:
        yield context
    finally:
        context.close()


def test_the_team_page_fills_live_on_a_phone(world: World, server: WebServer, phone: Any) -> None:
    plan_walked_now(world)
    world.users.add("leader", "team:volunteers-7", PASSWORD)
    page = log_in(phone, server, "leader", "/teams/volunteers-7")
    page.evaluate("window.__noReload = true")
    now_round = ".team-round.now"
    assert page.locator(f"{now_round} li").count() == 3
    assert page.locator(f"{now_round} li.todo").count() == 3
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than the phone"

    world.store_event("school-9-gate-1", "scan", "gate-1", tag=LIN, fmt="em4100")
    page.wait_for_selector(f'{now_round} li.done[data-checkpoint="cp-east-gate"]', timeout=10_000)
    assert "林" in page.inner_text(f'{now_round} li[data-checkpoint="cp-east-gate"]')
    world.store_event("school-9-gate-1", "scan", "gate-2", tag=LIN, fmt="em4100")
    page.wait_for_selector(f'{now_round} li.done[data-checkpoint="cp-north-fence"]', timeout=10_000)
    assert page.locator(f"{now_round} li.todo").count() == 1
    assert page.evaluate("window.__noReload") is True, "the page reloaded"
    screenshot(page, "team-page-phone")
    assert page.errors == []


def test_a_team_leader_sees_only_the_team(world: World) -> None:
    world.users.add("leader", "team:volunteers-7", PASSWORD)
    client = TestClient(world.build_app())
    login(client, "leader")
    home = client.get("/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (303, "/teams/volunteers-7")
    assert client.get("/teams/volunteers-7").status_code == 200
    assert client.get("/teams/volunteers-8").status_code == 404
    world.raise_alarm("school-9-gate-1", "office-panic", kind="panic")
    assert client.get("/api/alarms").json() == []  # no unit in its scope
    assert client.get("/api/events").json() == []
    client.cookies.clear()
    login(client, "wang")  # staff of another community
    assert client.get("/teams/volunteers-7").status_code == 404
    client.cookies.clear()
    login(client, "lin")  # staff of the team's community
    assert client.get("/teams/volunteers-7").status_code == 200
