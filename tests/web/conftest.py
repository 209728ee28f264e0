"""A small district for the dashboard's tests, built from central's real objects.

The store (central.store), the alarm book (central.alarms), the plan registry
(central.plan.registry), the bus and the report are the real ones; an alarm is
raised exactly as ingest does it: the event is committed to the store, then
handed to the alarm book's ``events_stored``, which announces it on the bus.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx2
import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from central.alarms import AlarmBook
from central.app import BusBridge
from central.bus import Bus
from central.config import CentralConfig, parse_config
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store import AgentRow, Store, StoredEvent
from central.web.app import build_app
from central.web.logins import LoginThrottle
from central.web.server import WebServer
from central.web.users import UserBook
from central.web.wiring import StoreCompletionReports

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
# argon2id as in production, with a small cost so that a test makes its users
# in milliseconds; tests/web/test_users.py checks the production parameters.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)

PLAN = """
timezone = "Asia/Shanghai"
unit = [
  { id = "fengze",       tier = "district",  name = "丰泽区" },
  { id = "quanxiu",      tier = "street",    parent = "fengze",    name = "泉秀街道" },
  { id = "chengzhou",    tier = "community", parent = "quanxiu",   name = "城洲社区" },
  { id = "chengzhou-g1", tier = "grid",      parent = "chengzhou", name = "城洲第一网格" },
  { id = "xinxing",      tier = "community", parent = "quanxiu",   name = "新星社区" },
  { id = "xinxing-g1",   tier = "grid",      parent = "xinxing",   name = "新星第一网格" },
]
agent = [
  { id = "school-9-gate-1", unit = "chengzhou-g1", name = "第九中学东门" },
  { id = "school-3-gate-1", unit = "xinxing-g1",   name = "第三小学北门" },
]
checkpoint = [
  { id = "cp-east-gate",   unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-1", name = "东门" },
  { id = "cp-north-fence", unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-2", name = "北围墙" },
  { id = "cp-library",     unit = "chengzhou-g1", agent = "school-9-gate-1", reader = "gate-3", name = "图书馆" },
]
[[team]]
id = "volunteers-7"
unit = "chengzhou"
name = "城洲志愿者七队"
members = [ { name = "林", tag = "67003B51C6" } ]

[[route]]
id = "night-loop"
unit = "chengzhou-g1"
name = "夜间巡逻"
teams = ["volunteers-7"]
order = "strict"
checkpoints = ["cp-east-gate", "cp-north-fence", "cp-library"]
window = { start = "22:00", end = "06:00", every_min = 120, tolerance_min = 15 }
"""

USERS = {"duty": "fengze", "lin": "chengzhou", "wang": "xinxing"}


@dataclass
class World:
    root: Path
    config: CentralConfig
    store: Store
    bus: Bus
    plans: PlanRegistry
    alarms: AlarmBook
    reports: StoreCompletionReports
    users: UserBook
    _eseq: dict[str, itertools.count[int]] = field(default_factory=dict)

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def store_event(self, agent: str, kind: str, source: str, *, ts: int | None = None, replayed: bool = False,
                    **fields: Any) -> StoredEvent:
        """Commit one event and hand it to the listeners, as ingest does after its batch commit."""
        counter = self._eseq.setdefault(agent, itertools.count(1))
        ts = self.now_ms() if ts is None else ts
        event = StoredEvent(agent=agent, eseq=next(counter), kind=kind, source=source, ts=ts, ts_est=ts,
                            ts_estimated=False, received_ts=self.now_ms(), replayed=replayed, fields=fields,
                            boot_id="boot-1", mono_ms=1000, clock_synced=True)
        conn = self.store.connect()
        try:
            with conn:
                self.store.insert_events(conn, [event])
        finally:
            conn.close()
        self.alarms.events_stored([event])
        BusBridge(self.bus).events_stored([event])
        return event

    def raise_alarm(self, agent: str, source: str, kind: str = "panic", *, replayed: bool = False) -> int:
        self.store_event(agent, kind, source, replayed=replayed)
        conn = self.store.connect(readonly=True)
        try:
            row = conn.execute("SELECT max(id) FROM alarms WHERE agent = ? AND source = ?", (agent, source)).fetchone()
        finally:
            conn.close()
        return int(row[0])

    def set_presence(self, agent: str, state: str, **tele: Any) -> None:
        now = self.now_ms()
        conn = self.store.connect()
        try:
            with conn:
                self.store.save_agents(conn, [AgentRow(agent=agent, state=state, bdseq=1, boot_id="boot-1", last_seen=now,
                                                       acked_eseq=0, first_seen=now, tele=tele or None)])
        finally:
            conn.close()
        BusBridge(self.bus).presence_changed(agent, state, now)

    def alarm_row(self, alarm_id: int) -> dict[str, Any]:
        conn = self.store.connect(readonly=True)
        try:
            cur = conn.execute("SELECT id, state, acked_by, acked_ts FROM alarms WHERE id = ?", (alarm_id,))
            row = cur.fetchone()
        finally:
            conn.close()
        return dict(zip(("id", "state", "acked_by", "acked_ts"), row))

    def build_app(self, **kw: Any) -> Any:
        kw.setdefault("users", self.users)
        return build_app(config=self.config, store=self.store, bus=self.bus, plan=self.plans, alarms=self.alarms,
                         report=self.reports, **kw)


def make_world(root: Path) -> World:
    data = root / "data"
    data.mkdir(parents=True)
    config = parse_config(f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[store]\nurl = "sqlite:///{data}/central.db"\n')

    store = Store(config.store.path)
    store.connect().close()  # the writer's connection makes the schema, as ingest's does
    plans = PlanRegistry.for_data_dir(config.data_dir)
    # The plan governs from a month back, so the report and chart have history to show.
    effective = (dt.date.today() - dt.timedelta(days=30)).isoformat()
    plans.add(parse_plan_bytes(f'effective = "{effective}"\n{PLAN}'.encode()))
    bus = Bus()
    alarms = AlarmBook(config.store.path, plans=plans, bus=bus)
    users = UserBook(config.store.path, hasher=TEST_HASHER)
    for name, unit in USERS.items():
        users.add(name, unit, PASSWORD)
    reports = StoreCompletionReports(store=store, plans=plans)
    return World(root, config, store, bus, plans, alarms, reports, users)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        w.alarms.close()


@pytest.fixture
def server(world: World) -> Iterator[WebServer]:
    """The dashboard on a free port; login limits loose enough for many logins in one test."""
    srv = WebServer(world.build_app(throttle=LoginThrottle(free_tries=50, address_free_tries=500)), "127.0.0.1:0")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps
    an event loop on the main thread while it runs, which would break any later
    test of the session that calls asyncio.run()."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium); browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chromium(chromium_browser: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) per test, on the session's Chromium."""
    context = chromium_browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    try:
        yield context
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def copy_artifact(src: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, ARTIFACTS / name)


# -- logging in through the form (TestClient) -------------------------------------

BASE = "http://testserver"
# Every page and API path that needs a login (ids that exist in the world of make_world).
PAGES = ["/", "/agents", "/units", "/events", "/report", "/routes/night-loop", "/fragments/alarm/1"]
API = ["/api/agents", "/api/alarms", "/api/alarms/1", "/api/events", "/api/units", "/api/completion", "/api/stream",
       "/api/quarantine"]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token (as the pages carry it)."""
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "name": name, "password": password, "next": "/agents"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/agents"
    return csrf_of(client.get("/").text)


# -- logging in through the form (a browser page) ---------------------------------


def log_in(context: Any, server: WebServer, name: str, path: str = "/") -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors
    page.goto(server.url + path)
    assert page.url.startswith(server.url + "/login?next=")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + path)
    page.wait_for_selector("#live.on")  # the live stream is connected
    return page


def plan_with_camera(url: str, stream: str = "rtsp://admin:pw@10.0.0.64:554/Streaming/Channels/101") -> bytes:
    """The world's plan with a camera on school-9-gate-1 that watches its loop and its panic button."""
    camera = (f'camera = [{{ id = "cam-east", agent = "school-9-gate-1", sources = ["north-fence", "office-panic"], '
              f'snapshot = "{url}", stream = "{stream}" }}]\n')
    return PLAN.replace("[[team]]", camera + "\n[[team]]").encode()


# -- the live stream as one browser sees it --------------------------------------

READ_TIMEOUT_S = 5.0


class Stream:
    """One browser's view of /api/stream, read event by event."""

    def __init__(self, server: WebServer, user: str) -> None:
        self.client = httpx2.Client(base_url=server.url, timeout=READ_TIMEOUT_S, follow_redirects=True)
        page = self.client.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        r = self.client.post("/login", data={"csrf": token, "name": user, "password": PASSWORD})
        assert r.status_code == 200 and r.url.path == "/"
        self._cm = self.client.stream("GET", "/api/stream")
        self.response = self._cm.__enter__()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._lines = self.response.iter_lines()
        assert self.next_event()[0] == "hello"

    def next_event(self) -> tuple[str, dict[str, Any]]:
        """The next named event (comments and keepalives skipped); ReadTimeout after READ_TIMEOUT_S of silence."""
        name, data = None, None
        for line in self._lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and name is not None:
                return name, data or {}
        raise EOFError("stream ended")

    def next_of(self, kind: str) -> dict[str, Any]:
        while True:
            name, data = self.next_event()
            if name == kind:
                return data

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.client.close()

