"""Sessions that end for good, logins that cannot lock anyone out, and accounts to manage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import pytest
from starlette.testclient import TestClient

from central.web.auth import SESSION_COOKIE
from tests.support import run_cli
from tests.web.conftest import BASE, PASSWORD, World, csrf_of, login


def _client(world: World, address: str, **kw) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(world.build_app(**kw), base_url=BASE, client=(address, 50000))


@pytest.fixture
def desk(world: World) -> Iterator[TestClient]:
    with _client(world, "10.0.0.7") as c:
        yield c


def test_a_cookie_is_refused_after_its_logout(desk: TestClient) -> None:
    token = login(desk, "duty")
    kept = desk.cookies[SESSION_COOKIE]
    assert desk.get("/api/agents").status_code == 200
    assert desk.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    desk.cookies.clear()
    desk.cookies.set(SESSION_COOKIE, kept)  # the copy someone kept, or a stale tab
    assert desk.get("/api/agents").status_code == 401
    assert desk.get("/", follow_redirects=False).status_code == 303


def test_ten_wrong_passwords_from_one_address_do_not_stop_the_right_one_from_another(world: World) -> None:
    app = world.build_app()  # the production throttle
    with TestClient(app, base_url=BASE, client=("10.0.0.66", 50000)) as attacker:
        token = csrf_of(attacker.get("/login").text)
        statuses = [attacker.post("/login", data={"csrf": token, "name": "duty", "password": f"guess-{n}"}).status_code
                    for n in range(10)]
        assert statuses[:3] == [401, 401, 401]
        assert 429 in statuses  # backing off, before any hashing
        r = attacker.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 429  # even the right password waits, from that address
    with TestClient(app, base_url=BASE, client=("10.0.0.7", 50000)) as night_shift:
        login(night_shift, "duty")
        assert night_shift.get("/api/agents").status_code == 200


def test_x_forwarded_for_counts_only_from_a_configured_proxy(world: World) -> None:
    def try_as(peer: str, forwarded: str, trusted: tuple[str, ...]) -> int:
        world.config = world.config.__class__(**{**{f: getattr(world.config, f) for f in world.config.__dataclass_fields__},
                                                 "web": world.config.web.__class__(trusted_proxies=trusted)})
        app = world.build_app()
        with TestClient(app, base_url=BASE, client=(peer, 50000)) as c:
            token = csrf_of(c.get("/login").text)
            for n in range(4):
                c.post("/login", data={"csrf": token, "name": "duty", "password": f"guess-{n}"},
                       headers={"X-Forwarded-For": f"192.0.2.{n}"})
            return c.post("/login", data={"csrf": token, "name": "duty", "password": PASSWORD},
                          headers={"X-Forwarded-For": forwarded}, follow_redirects=False).status_code

    # A client's own X-Forwarded-For is ignored: its guesses all count against its real address.
    assert try_as("10.0.0.66", "198.51.100.1", ()) == 429
    # Behind a trusted proxy, each client is told apart by the address the proxy saw.
    assert try_as("10.0.0.1", "198.51.100.1", ("10.0.0.1",)) == 303


def test_disabling_a_user_ends_their_session_at_once_and_enabling_lets_them_in_again(world: World,
                                                                                    desk: TestClient) -> None:
    login(desk, "wang")
    world.users.disable("wang")
    assert desk.get("/api/agents").status_code == 401
    token = csrf_of(desk.get("/login").text)
    r = desk.post("/login", data={"csrf": token, "name": "wang", "password": PASSWORD})
    assert r.status_code == 401
    world.users.enable("wang")
    login(desk, "wang")
    assert desk.get("/api/agents").status_code == 200


def test_a_new_password_ends_the_old_sessions(world: World, desk: TestClient) -> None:
    login(desk, "lin")
    world.users.set_password("lin", "a brand new passphrase")
    assert desk.get("/api/agents").status_code == 401


@pytest.fixture
def central_toml(world: World) -> Path:
    conf = world.root / "central.toml"
    conf.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{world.config.data_dir}"\n'
                    f'[store]\nurl = "sqlite://{world.config.store.path}"\n')
    return conf


def test_users_list_disable_enable_remove_passwd_on_the_command_line(world: World, central_toml: Path,
                                                                     desk: TestClient) -> None:
    conf = str(central_toml)
    r = run_cli("users", "list", "--json", "--config", conf)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"name": "duty", "unit": "fengze", "disabled": False},
                                    {"name": "lin", "unit": "chengzhou", "disabled": False},
                                    {"name": "wang", "unit": "xinxing", "disabled": False}]
    login(desk, "wang")
    r = run_cli("users", "disable", "wang", "--config", conf)
    assert (r.returncode, r.stdout) == (0, "user wang disabled; their sessions are ended\n")
    assert desk.get("/api/agents").status_code == 401
    assert {u["name"]: u["disabled"] for u in json.loads(run_cli("users", "list", "--json", "--config", conf).stdout)}["wang"]
    assert run_cli("users", "enable", "wang", "--config", conf).returncode == 0
    r = run_cli("users", "passwd", "wang", "--config", conf, stdin=b"another long passphrase\n")
    assert (r.returncode, r.stdout) == (0, "password of wang changed; their sessions are ended\n"), r.stderr
    r = run_cli("users", "passwd", "wang", "--config", conf, stdin=b"short\n")
    assert (r.returncode, r.stderr) == (2, "gridpatrol: password: expected at least 8 characters\n")
    assert run_cli("users", "remove", "wang", "--config", conf).returncode == 0
    r = run_cli("users", "remove", "wang", "--config", conf)
    assert (r.returncode, r.stderr) == (2, "gridpatrol: user 'wang': no such user\n")
    r = run_cli("users", "list", "--config", conf)
    assert r.stdout.splitlines()[0].split() == ["NAME", "UNIT", "STATE"]
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["duty", "lin"]


def test_an_administrator_manages_accounts_in_the_dashboard_and_no_one_else_can(world: World, desk: TestClient) -> None:
    with _client(world, "10.0.0.8") as lin_desk:
        lin_token = login(lin_desk, "lin")
        assert lin_desk.get("/users").status_code == 403  # a community is not the district
        r = lin_desk.post("/users/wang/disable", data={"csrf": lin_token}, follow_redirects=False)
        assert r.status_code == 403
        token = login(desk, "duty")
        page = desk.get("/users").text
        assert 'id="user-wang"' in page and 'href="/users"' in page
        r = desk.post("/users/lin/disable", data={"csrf": token}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/users?done=disable")
        assert lin_desk.get("/api/agents").status_code == 401  # lin's session ended with it
        assert world.users.get("lin").disabled
        desk.post("/users/lin/enable", data={"csrf": token})
        r = desk.post("/users/lin/passwd", data={"csrf": token, "password": "short"}, follow_redirects=False)
        assert unquote(r.headers["location"]) == "/users?error=password: expected at least 8 characters"
        desk.post("/users/lin/passwd", data={"csrf": token, "password": "a fresh passphrase"})
        assert world.users.verify("lin", "a fresh passphrase") is not None
        r = desk.post("/users/duty/remove", data={"csrf": token}, follow_redirects=False)
        assert "error=" in r.headers["location"] and world.users.get("duty") is not None
        desk.post("/users/wang/remove", data={"csrf": token})
        assert world.users.get("wang") is None
        world.users.add("night/desk", "fengze", "a long passphrase")  # any printable name, "/" too
        r = desk.post("/users/night%2Fdesk/disable", data={"csrf": token}, follow_redirects=False)
        assert r.headers["location"] == "/users?done=disable" and world.users.get("night/desk").disabled
        assert desk.post("/users/lin/disable").status_code == 403  # no token, no change
