"""The JSON API and the login gate, through Starlette's TestClient on the real app."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from central.web.auth import SESSION_COOKIE
from central.web.logins import LoginThrottle
from tests.web.conftest import API, BASE, PAGES, PASSWORD, World, csrf_of, login


@pytest.fixture
def app(world: World):  # type: ignore[no-untyped-def]
    return world.build_app(throttle=LoginThrottle(free_tries=3, address_free_tries=100))


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url=BASE) as c:
        yield c


def test_nothing_but_healthz_answers_without_a_login(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    for path in API:
        r = client.get(path)
        assert (r.status_code, r.json()) == (401, {"error": "login required"}), path
    r = client.post("/api/alarms/1/ack")
    assert (r.status_code, r.json()) == (401, {"error": "login required"})
    for path in PAGES:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=/"), path
    # The login page and its assets answer, nothing else.
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_a_forged_or_foreign_session_cookie_is_no_login(client: TestClient, world: World) -> None:
    login(client, "duty")
    good = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"))
    assert client.get("/api/agents").status_code == 401
    other = world.build_app()  # the same secret file: a restart keeps sessions
    with TestClient(other, base_url=BASE) as c2:
        c2.cookies.set(SESSION_COOKIE, good)
        assert c2.get("/api/agents").status_code == 200


def test_login_cookie_flags(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http here; over https it is set (next test)


def test_cookie_is_secure_over_https(app) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="https://testserver") as c:
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 303
        assert "Secure" in r.headers["set-cookie"]


def test_wrong_password_then_rate_limit(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    for _ in range(3):
        r = client.post("/login", data={"csrf": token, "name": "duty", "password": "wrong password"})
        assert r.status_code == 401
        assert "Wrong name or password." in r.text
    r = client.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert "Too many failed logins" in r.text
    # Another name from the same desk still may log in (the per-address limit is higher).
    r = client.post("/login", data={"csrf": token, "name": "lin", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303


def test_login_never_redirects_off_site(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD, "next": "//evil.example/x"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "name": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and "Wrong name or password." in r.text


def test_every_post_route_is_csrf_protected(app) -> None:  # type: ignore[no-untyped-def]
    posts = [r for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert {r.path for r in posts} == {"/login", "/logout", "/api/alarms/{alarm_id}/ack", "/alarms/{alarm_id}/ack",
                                       "/users/{name:path}/{action}"}
    for route in posts:
        assert getattr(route.endpoint, "csrf_protected", False), route.path


def test_post_without_token_or_from_another_origin_is_refused(client: TestClient, world: World) -> None:
    token = login(client, "duty")
    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic")
    r = client.post(f"/api/alarms/{alarm_id}/ack")
    assert (r.status_code, r.json()) == (403, {"error": "missing or wrong CSRF token"})
    r = client.post(f"/api/alarms/{alarm_id}/ack", headers={"X-CSRF-Token": "not-the-token"})
    assert (r.status_code, r.json()) == (403, {"error": "missing or wrong CSRF token"})
    r = client.post(f"/api/alarms/{alarm_id}/ack", headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert (r.status_code, r.json()) == (403, {"error": "cross-origin request refused"})
    r = client.post(f"/alarms/{alarm_id}/ack", data={"csrf": "nope"}, headers={"Referer": "http://evil.example/page"})
    assert r.status_code == 403
    # A login form posted from elsewhere is refused too (login CSRF).
    r = client.post("/login", data={"name": "duty", "password": PASSWORD})
    assert r.status_code == 403
    assert world.alarm_row(alarm_id)["state"] == "active"


def test_ack_through_the_api(client: TestClient, world: World) -> None:
    token = login(client, "lin")
    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic")
    r = client.post(f"/api/alarms/{alarm_id}/ack", headers={"X-CSRF-Token": token, "Origin": BASE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved"  # a panic is done once answered (central.alarms' rule)
    assert body["acked_by"] == "lin"
    assert [s["action"] for s in body["trail"]] == ["raise", "ack", "resolve"]
    row = world.alarm_row(alarm_id)
    assert (row["state"], row["acked_by"]) == ("resolved", "lin")
    again = client.post(f"/api/alarms/{alarm_id}/ack", headers={"X-CSRF-Token": token})
    assert again.status_code == 409
    assert again.json()["error"] == f"alarm {alarm_id} is already resolved"
    assert again.json()["alarm"]["acked_by"] == "lin"


def test_scope_hides_other_communities(client: TestClient, world: World) -> None:
    mine = world.raise_alarm("school-9-gate-1", "office-panic")
    theirs = world.raise_alarm("school-3-gate-1", "office-panic")
    world.set_presence("school-3-gate-1", "online", outbox_depth=0, reconnects=0, clock_synced=True)
    token = login(client, "lin")
    assert [a["id"] for a in client.get("/api/alarms").json()] == [mine]
    assert [a["agent"] for a in client.get("/api/agents").json()] == ["school-9-gate-1"]
    assert {e["agent"] for e in client.get("/api/events").json()} == {"school-9-gate-1"}
    assert client.get(f"/api/alarms/{theirs}").status_code == 404
    assert client.get(f"/fragments/alarm/{theirs}").status_code == 404
    assert [u["unit"] for u in client.get("/api/units").json()] == ["chengzhou", "chengzhou-g1"]
    assert {u["unit"] for u in client.get("/api/completion").json()["units"]} == {"chengzhou", "chengzhou-g1"}
    r = client.post(f"/api/alarms/{theirs}/ack", headers={"X-CSRF-Token": token})
    assert (r.status_code, r.json()) == (404, {"error": f"alarm {theirs} not found", "alarm": None})
    r = client.post(f"/alarms/{theirs}/ack", data={"csrf": token})
    assert r.status_code == 404
    assert world.alarm_row(theirs)["state"] == "active"
    assert client.get("/routes/night-loop").status_code == 200
    html = client.get("/").text
    assert "第九中学东门" in html and "第三小学北门" not in html


def test_top_scope_sees_everything(client: TestClient, world: World) -> None:
    a = world.raise_alarm("school-9-gate-1", "office-panic")
    b = world.raise_alarm("school-3-gate-1", "office-panic")
    login(client, "duty")
    assert sorted(x["id"] for x in client.get("/api/alarms").json()) == [a, b]
    agents = client.get("/api/agents").json()
    assert [x["agent"] for x in agents] == ["school-3-gate-1", "school-9-gate-1"]  # never heard from: unknown
    assert set(agents[0]) >= {"agent", "state", "bdseq", "last_seen", "acked_eseq"}


def test_contract_field_names(client: TestClient, world: World) -> None:
    world.set_presence("school-9-gate-1", "online", outbox_depth=4, reconnects=2, clock_synced=False, uptime_s=5.0)
    world.store_event("school-9-gate-1", "scan", "gate-1", tag="67003B51C6")
    alarm_id = world.raise_alarm("school-9-gate-1", "north-fence", kind="alarm")
    login(client, "duty")
    agent = next(a for a in client.get("/api/agents").json() if a["agent"] == "school-9-gate-1")
    assert {k: agent[k] for k in ("agent", "state", "bdseq", "acked_eseq", "outbox_depth", "reconnects", "clock_synced")} == {
        "agent": "school-9-gate-1", "state": "online", "bdseq": 1, "acked_eseq": 0, "outbox_depth": 4, "reconnects": 2,
        "clock_synced": False}
    alarm = client.get("/api/alarms").json()[0]
    assert list(alarm)[:10] == ["id", "agent", "source", "kind", "unit", "state", "raised_ts", "acked_by", "acked_ts",
                                "escalated_to"]
    assert (alarm["id"], alarm["kind"], alarm["unit"], alarm["state"]) == (alarm_id, "alarm", "chengzhou-g1", "active")
    events = client.get("/api/events", params={"kind": "scan"}).json()
    assert len(events) == 1
    e = events[0]
    assert {k: e[k] for k in ("agent", "eseq", "kind", "source", "tag", "replayed")} == {
        "agent": "school-9-gate-1", "eseq": 1, "kind": "scan", "source": "gate-1", "tag": "67003B51C6", "replayed": False}
    assert e["cards"] == ["0003887558", "59,20934"]  # printed numbers, derived from the 10-digit tag (no fmt sent)
    assert isinstance(e["ts"], int) and isinstance(e["received_ts"], int)
    report = client.get("/api/completion").json()
    assert set(report) == {"date", "units", "rounds"}
    unit = report["units"][0]
    assert set(unit) >= {"unit", "tier", "rounds_scheduled", "rounds_complete", "rounds_late", "rounds_incomplete",
                         "rounds_missed", "rounds_open", "completion", "rollup"}
    assert set(report["rounds"][0]) == {"route", "unit", "slot_start", "status", "scanned", "missing"}


def test_events_filters_and_bad_parameters(client: TestClient, world: World) -> None:
    for i in range(5):
        world.store_event("school-9-gate-1", "scan", f"gate-{i % 2 + 1}", tag="67003B51C6")
    world.store_event("school-9-gate-1", "fault", "gate-1", code="reader-lost", detail="port closed")
    login(client, "duty")
    assert len(client.get("/api/events", params={"source": "gate-2"}).json()) == 2
    assert [e["kind"] for e in client.get("/api/events", params={"kind": "fault"}).json()] == ["fault"]
    limited = client.get("/api/events", params={"limit": 2}).json()
    assert [e["eseq"] for e in limited] == [5, 6]  # the newest two, oldest first
    for params, message in (
        ({"kind": "bogus"}, "kind: expected one of alarm, restore, tamper, panic, scan, fault, output, got 'bogus'"),
        ({"limit": "0"}, "limit: expected 1..1000, got 0"),
        ({"limit": "1001"}, "limit: expected 1..1000, got 1001"),
        ({"before": "not-a-cursor"}, "before: expected a cursor from a previous page's Link header"),
        ({"since": "yesterday"}, "since: expected an integer, got 'yesterday'"),
        ({"agent": "x" * 500}, "agent: expected a short printable value"),
    ):
        r = client.get("/api/events", params=params)
        assert (r.status_code, r.json()) == (400, {"error": message})
    r = client.get("/api/completion", params={"date": "2024-13-40"})
    assert (r.status_code, r.json()) == (400, {"error": "date: expected YYYY-MM-DD, got '2024-13-40'"})
    assert client.get("/api/alarms/abc").status_code == 400


def test_completion_csv_download(client: TestClient, world: World) -> None:
    login(client, "lin")
    day = (dt.date.today() - dt.timedelta(days=3)).isoformat()  # a night the plan governs (from a month back)
    r = client.get("/api/completion", params={"format": "csv", "date": day})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="completion-{day}.csv"'
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:])))
    units = [row for row in rows[1:] if row[0] == "unit"]
    assert [row[2] for row in units] == ["chengzhou", "chengzhou-g1"]  # lin's scope only
    assert len([row for row in rows[1:] if row[0] == "round"]) == 4


def test_pages_render_in_both_languages(client: TestClient, world: World) -> None:
    world.raise_alarm("school-9-gate-1", "office-panic")
    login(client, "duty")
    html = client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).text
    assert '<html lang="zh-CN">' in html and "未处理告警" in html and "紧急求助" in html
    html = client.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"}).text
    assert '<html lang="en">' in html and "Active alarms" in html
    r = client.get("/lang", params={"to": "zh-CN", "next": "/agents"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/agents")
    html = client.get("/agents", headers={"Accept-Language": "en"}).text
    assert '<html lang="zh-CN">' in html  # the switch beats the browser's preference
    for path in ["/units", "/events", "/report", "/routes/night-loop", "/agents", "/events?kind=scan&since_date=2026-01-01"]:
        assert client.get(path).status_code == 200, path
    assert client.get("/routes/no-such-route").status_code == 404
    assert client.get("/events?since_date=garbage").status_code == 200  # shown as a notice, not a crash


def test_security_headers(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/static/app.js").headers.get("cache-control", "")


def test_logout_ends_the_session(client: TestClient) -> None:
    token = login(client, "duty")
    r = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert client.get("/api/agents").status_code == 401


def test_a_deleted_account_is_refused_at_once(client: TestClient, world: World) -> None:
    login(client, "wang")
    import sqlite3

    with sqlite3.connect(world.config.store.path) as db:
        db.execute("DELETE FROM users WHERE name = 'wang'")
    db.close()
    assert client.get("/api/agents").status_code == 401


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/events", "/api/alarms", "/api/units", "/api/completion", "/events", "/report", "/units"]),
       params=st.dictionaries(st.sampled_from(["agent", "kind", "source", "since", "until", "limit", "date", "all", "format",
                                               "since_date", "until_date", "tier"]),
                              st.text(max_size=300), max_size=6))
def test_hostile_query_strings_answer_200_or_400(client: TestClient, path: str, params: dict[str, str]) -> None:
    if "gp_session" not in client.cookies:
        login(client, "duty")
    r = client.get(path, params=params)
    assert r.status_code in (200, 400), (path, params, r.text[:200])
    if r.status_code == 400 and path.startswith("/api/"):
        assert set(r.json()) == {"error"}


@pytest.mark.parametrize("date", ["0001-01-01", "9999-12-31", "1999-12-31"])
def test_dates_out_of_range_are_refused_not_crashed_on(client: TestClient, date: str) -> None:
    login(client, "duty")
    r = client.get("/api/completion", params={"date": date})
    assert (r.status_code, r.json()) == (400, {"error": f"date: expected a date from 2000-01-01 to 2099-12-31, got {date}"})
    for path in ("/api/units", "/units", "/report", "/routes/night-loop", "/api/completion?format=csv"):
        assert client.get(path, params={"date": date}).status_code == 400, path
    r = client.get("/events", params={"until_date": date})
    assert r.status_code == 200 and "expected a date from 2000-01-01 to 2099-12-31" in r.text


@pytest.mark.parametrize("ts", [2**62, -(2**62), 253402300800000])  # far future, far past, 10000-01-01
def test_an_agent_clock_out_of_every_calendar_shows_a_dash_not_an_error(client: TestClient, world: World,
                                                                         ts: int) -> None:
    """Central stores an event whatever the agent's clock said; the pages that show it must not fail on it."""
    world.store_event("school-9-gate-1", "scan", "gate-1", ts=ts, tag="67003B51C6")
    login(client, "duty")
    for path in ("/events", "/"):
        r = client.get(path)
        assert r.status_code == 200, path
    assert "67003B51C6" in client.get("/events").text
    assert [e["ts"] for e in client.get("/api/events").json()] == [ts]


def test_a_store_failure_during_an_ack_is_no_conflict(world: World) -> None:
    """Only the alarm book's refusal is a 409; a failing database is a server error."""
    import sqlite3

    class FailingBook:
        def acknowledge(self, alarm_id: int, by: str, now: float) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    alarm_id = world.raise_alarm("school-9-gate-1", "office-panic")
    app = world.build_app()
    app.state.dashboard.alarm_actions = FailingBook()
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        token = login(c, "lin")
        r = c.post(f"/api/alarms/{alarm_id}/ack", headers={"X-CSRF-Token": token, "Origin": BASE})
    assert r.status_code == 500
    assert world.alarm_row(alarm_id)["state"] == "active"


def test_unknown_cards_page_lists_printed_numbers_and_a_plan_line_in_scope(client: TestClient, world: World) -> None:
    world.store_event("school-9-gate-1", "scan", "gate-1", tag="6F007B3972", fmt="em4100")
    world.store_event("school-9-gate-1", "scan", "gate-2", tag="67003B51C6")  # 林's card
    login(client, "duty")
    page = client.get("/cards")
    assert page.status_code == 200
    assert "<code>6F007B3972</code>" in page.text and "0008075634 123,14706" in page.text
    assert "{ name = &#34;NAME&#34;, tag = &#34;6F007B3972&#34;, card = &#34;0008075634&#34; }" in page.text
    assert "67003B51C6" not in page.text
    assert "tag=6F007B3972 fmt=em4100 cards=0008075634 123,14706" in client.get("/events").text
    client.post("/logout", data={"csrf": client.cookies.get("gp_csrf", "")})
    client.cookies.clear()
    login(client, "wang")  # xinxing: not where the card was seen
    theirs = client.get("/cards")
    assert theirs.status_code == 200 and 'id="unknown-cards"' in theirs.text
    assert "6F007B3972" not in theirs.text
