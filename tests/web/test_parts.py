"""The dashboard's small parts on their own: sessions, login limits, languages, scope, chart, server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from central.plan.parse import parse_plan_bytes
from central.web import WebError
from central.web.auth import Session, SessionCodec, load_secret, safe_next
from central.web.chart import completion_chart
from central.web.csrf import same_origin
from central.web.i18n import CATALOGS, JS_KEYS, Translator, negotiate, parse_accept_language
from central.web.logins import LoginThrottle
from central.web.scope import Scope
from central.web.server import WebServer, parse_listen
from tests.web.conftest import PLAN, World


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_round_trip_and_tampering() -> None:
    codec = SessionCodec(b"k" * 32)
    session = Session.fresh("duty", 1.0)
    assert codec.loads(codec.dumps(session)) == session
    value = codec.dumps(session)
    # One character of the signature changed. Not the last one: of its six bits, two are base64 padding that
    # decoding drops, so A -> B there can leave the signature as it was (one session in sixteen).
    i = len(value) - 5
    assert codec.loads(value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1:]) is None
    assert SessionCodec(b"other key" * 4).loads(value) is None
    assert codec.loads("x" * 5000) is None


def test_session_expires() -> None:
    codec = SessionCodec(b"k" * 32, max_age_s=-1)  # already too old when read
    assert codec.loads(codec.dumps(Session.fresh("duty", 1.0))) is None


@settings(deadline=None)
@given(st.text(max_size=300))
def test_session_loads_never_raises(value: str) -> None:
    assert SessionCodec(b"k" * 32).loads(value) is None


def test_secret_file_is_private_and_kept(tmp_path: Path) -> None:
    first = load_secret(tmp_path / "web-secret")
    assert len(first) == 32
    assert (tmp_path / "web-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path / "web-secret") == first
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="web session secret is shorter than 32 bytes$"):
        load_secret(tmp_path / "short")


def test_login_throttle_backs_off_per_name_and_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_tries=2, address_free_tries=20, base_s=2, max_s=30, clock=clock)
    for _ in range(2):
        assert throttle.retry_after("duty", "10.0.0.1") == 0
        throttle.failed("duty", "10.0.0.1")
    waits = []
    for _ in range(6):
        waits.append(throttle.retry_after("duty", "10.0.0.1"))
        clock.now += waits[-1]
        throttle.failed("duty", "10.0.0.1")
    assert waits == [2, 4, 8, 16, 30, 30]  # doubling, then capped
    # The same name from another desk is never held up by it.
    assert throttle.retry_after("duty", "10.0.0.9") == 0
    throttle.succeeded("duty", "10.0.0.1")
    assert throttle.retry_after("duty", "10.0.0.1") == 0
    # An address spraying names is slowed on its own count, and only it.
    throttle = LoginThrottle(free_tries=2, address_free_tries=5, base_s=2, max_s=30, clock=clock)
    for name in "abcde":
        throttle.failed(name, "10.0.0.2")
    assert throttle.retry_after("f", "10.0.0.2") == pytest.approx(2)
    assert throttle.retry_after("f", "10.0.0.3") == 0


@pytest.mark.parametrize("target, expected", [
    ("/agents?x=1", "/agents?x=1"), (None, "/"), ("", "/"), ("https://evil.example/", "/"), ("//evil.example", "/"),
    ("/\\evil.example", "/"), ("agents", "/"),
])
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize("header, cookie, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh-CN"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", None, "en"),
    ("fr-FR, zh-TW;q=0.5", None, "zh-CN"),
    ("fr-FR, de;q=0.5", None, "en"),
    ("en;q=0.2, zh;q=0.7", None, "zh-CN"),
    ("zh;q=0, en", None, "en"),
    ("zh-CN", "en", "en"),
    ("en", "zh-CN", "zh-CN"),
    ("en", "klingon", "en"),
    (None, None, "en"),
    (";;;,q=abc,zh;q=nan,zh;q=2", None, "en"),
])
def test_language_negotiation(header: str | None, cookie: str | None, expected: str) -> None:
    assert negotiate(header, cookie) == expected


@settings(deadline=None)
@given(st.text(max_size=2000))
def test_accept_language_parser_takes_anything(header: str) -> None:
    tags = parse_accept_language(header)
    assert all(isinstance(t, str) and t for t in tags)
    assert negotiate(header, None) in ("en", "zh-CN")


def test_every_alarm_kind_has_a_name_for_people_in_both_languages() -> None:
    from central.alarms import AlarmKind

    for kind in AlarmKind:
        for lang in ("en", "zh-CN"):
            name = Translator(lang)(f"kind-{kind}")
            assert name != f"kind-{kind}" and name.lower() != str(kind), (lang, kind)


def test_every_script_string_is_translated() -> None:
    missing = [k for k in JS_KEYS if k not in CATALOGS["zh-CN"]]
    assert missing == []


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "desk.local:8080", **headers}.items()]
    return Request({"type": "http", "method": "POST", "scheme": scheme, "path": "/x", "headers": raw,
                    "server": ("desk.local", 8080), "query_string": b""})


@pytest.mark.parametrize("headers, ok", [
    ({"origin": "http://desk.local:8080"}, True),
    ({"origin": "http://DESK.local:8080"}, True),
    ({"origin": "https://desk.local:8080"}, False),
    ({"origin": "http://desk.local:8081"}, False),
    ({"origin": "null"}, False),
    ({"referer": "http://desk.local:8080/agents"}, True),
    ({"referer": "http://evil.example/desk.local:8080"}, False),
    ({}, True),  # no browser: the token alone decides
])
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    assert same_origin(_request(headers)) is ok


def test_scope_of_units_and_unplanned_things() -> None:
    plan = parse_plan_bytes(PLAN.encode())
    top, lin, ghost = Scope.of("fengze", plan), Scope.of("chengzhou", plan), Scope.of("atlantis", plan)
    assert lin.units == {"chengzhou", "chengzhou-g1"}
    assert lin.sees_agent("school-9-gate-1") and not lin.sees_agent("school-3-gate-1")
    assert top.sees_agent("stray-agent") and not lin.sees_agent("stray-agent")
    assert top.sees_alarm({"agent": "stray-agent", "unit": None}) and not lin.sees_alarm({"agent": "stray-agent", "unit": None})
    assert not lin.sees_alarm({"agent": "school-9-gate-1", "unit": "xinxing-g1"})  # the alarm's own unit rules
    assert ghost.units == frozenset() and not ghost.sees_agent("school-9-gate-1") and not ghost.sees_agent("stray")
    assert Scope.of("fengze", None).sees_agent("school-9-gate-1") is False


def test_chart_draws_a_line_per_tier_and_breaks_on_empty_nights() -> None:
    svg = completion_chart(["2026-01-01", "2026-01-02", "2026-01-03"],
                           {"grid": [0.5, None, 1.0], "street": [0.25, 0.5, 0.75]}, label=str.upper, empty_text="none")
    assert svg.startswith('<svg class="chart"') and svg.endswith("</svg>")
    assert svg.count('<polyline class="series s-street"') == 1
    assert svg.count('<polyline class="series s-grid"') == 0  # two single points, no line across the gap
    assert svg.count('<circle class="dot s-grid"') == 2
    assert ">GRID 100%</text>" in svg and ">STREET 75%</text>" in svg
    assert "none" in completion_chart([], {}, label=str, empty_text="none")


def test_chart_escapes_labels() -> None:
    svg = completion_chart(["2026-01-01"], {"grid": [0.5]}, label=lambda _: "<script>", empty_text="x")
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", "host:", ":80", "host:99999", "host:http"):
        with pytest.raises(WebError, match=r"^web.listen '.*': expected HOST:PORT$"):
            parse_listen(bad)


def test_server_port_taken_is_a_clear_error(world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = WebServer(world.build_app(), f"127.0.0.1:{port}")
        with pytest.raises(WebError, match=rf"^web.listen 127.0.0.1:{port}: cannot listen: Address already in use$"):
            server.start()


def test_server_starts_on_a_free_port_and_stops(world: World) -> None:
    import httpx2

    server = WebServer(world.build_app(), "127.0.0.1:0")
    server.start()
    try:
        assert server.port > 0
        assert httpx2.get(f"{server.url}/healthz").json() == {"ok": True}
    finally:
        server.stop()
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{server.port}/healthz")


def test_web_config_names_trusted_proxies_and_the_connection_cap() -> None:
    from central.config import ConfigError, parse_config

    base = 'timezone = "UTC"\ndata_dir = "/tmp/gp"\n[web]\n'
    config = parse_config(base + 'trusted_proxies = ["10.0.0.5", "10.0.1.0/24", "::1"]\nmax_connections = 64\n')
    assert (config.web.trusted_proxies, config.web.max_connections) == (("10.0.0.5", "10.0.1.0/24", "::1"), 64)
    assert (parse_config(base).web.trusted_proxies, parse_config(base).web.max_connections) == ((), 256)
    with pytest.raises(ConfigError, match=r"web.trusted_proxies: 'proxy.lan' is not an IP address or network"):
        parse_config(base + 'trusted_proxies = ["proxy.lan"]\n')
    with pytest.raises(ConfigError, match="web.max_connections: must be 16 to 4096"):
        parse_config(base + "max_connections = 5\n")


def test_log_budget_lets_ten_of_a_kind_through_a_minute_then_counts_the_rest() -> None:
    import logging

    from central.web.logbudget import LogBudget

    clock = Clock()
    budget = LogBudget(per_window=10, window_s=60, clock=clock)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [budget.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert passed.count(True) == 10 and budget.suppressed == 990
    assert budget.filter(record("another message"))  # each message has its own budget
    clock.now += 60
    first = record("socket.accept() out of system resource")
    assert budget.filter(first)
    assert first.getMessage() == ("socket.accept() out of system resource "
                                  "[990 more like this left out of the log in the last 60 s]")
