"""Staff accounts: the users table and `gridpatrol users add`."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.web import UserError
from central.web.users import UserBook, check_name, read_password
from tests.support import run_cli
from tests.web.conftest import PLAN, TEST_HASHER


@pytest.fixture
def central_toml(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    conf = tmp_path / "central.toml"
    conf.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[store]\nurl = "sqlite:///{data}/central.db"\n')
    return conf


def _rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, unit, pw_hash FROM users ORDER BY name").fetchall()
    conn.close()
    return rows


def test_users_add_reads_the_password_from_stdin_and_stores_an_argon2id_hash(central_toml: Path, tmp_path: Path) -> None:
    PlanRegistry.for_data_dir(tmp_path / "data").add(parse_plan_bytes(PLAN.encode()))
    r = run_cli("users", "add", "王芳", "--unit", "chengzhou", "--config", str(central_toml), stdin=b"s3cret-passw0rd\n")
    # On a store no central has opened yet, the store's migrations say so (INFO); nothing else is on stderr.
    noise = [line for line in r.stderr.splitlines() if "store: schema migrated to version" not in line]
    assert (r.returncode, r.stdout, noise) == (0, "user 王芳 added, scope chengzhou\n", [])
    [(name, unit, pw_hash)] = _rows(tmp_path / "data" / "central.db")
    assert (name, unit) == ("王芳", "chengzhou")
    # The production parameters: argon2id, RFC 9106's low-memory profile.
    assert pw_hash.startswith("$argon2id$v=19$m=32768,t=4,p=1$")
    assert "s3cret" not in pw_hash
    book = UserBook(tmp_path / "data" / "central.db")
    assert book.verify("王芳", "s3cret-passw0rd") is not None
    assert book.verify("王芳", "s3cret-passw0rd\n") is None

    again = run_cli("users", "add", "王芳", "--unit", "chengzhou", "--config", str(central_toml), stdin=b"another-password\n")
    assert (again.returncode, again.stderr) == (2, "gridpatrol: user '王芳' already exists\n")


def test_users_add_refuses_a_unit_outside_the_plan_and_a_short_password(central_toml: Path, tmp_path: Path) -> None:
    PlanRegistry.for_data_dir(tmp_path / "data").add(parse_plan_bytes(PLAN.encode()))
    r = run_cli("users", "add", "lin", "--unit", "atlantis", "--config", str(central_toml), stdin=b"long enough password\n")
    assert (r.returncode, r.stderr) == (2, "gridpatrol: --unit 'atlantis': not a unit of the plan in force\n")
    r = run_cli("users", "add", "lin", "--unit", "chengzhou", "--config", str(central_toml), stdin=b"short\n")
    assert (r.returncode, r.stderr) == (2, "gridpatrol: password: expected at least 8 characters\n")
    r = run_cli("users", "add", "two words", "--unit", "chengzhou", "--config", str(central_toml), stdin=b"long enough password\n")
    assert (r.returncode, r.stderr) == (2, "gridpatrol: user name 'two words': no spaces or control characters allowed\n")
    assert not (tmp_path / "data" / "central.db").exists() or _rows(tmp_path / "data" / "central.db") == []


def test_users_add_has_no_password_option() -> None:
    r = run_cli("users", "add", "lin", "--unit", "chengzhou", "--config", "x.toml", "--password", "hunter22")
    assert r.returncode == 2
    assert "unrecognized arguments: --password hunter22" in r.stderr


def test_users_add_with_a_bad_config_names_it(tmp_path: Path) -> None:
    r = run_cli("users", "add", "lin", "--unit", "chengzhou", "--config", str(tmp_path / "missing.toml"), stdin=b"password123\n")
    assert r.returncode == 2
    assert r.stderr.startswith(f"gridpatrol: {tmp_path / 'missing.toml'}: cannot read")


def test_read_password_from_a_terminal_asks_twice() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["first-password", "first-password"])
    assert read_password(stdin=Tty(), prompt=lambda _: next(answers)) == "first-password"
    answers = iter(["first-password", "typo-password"])
    with pytest.raises(UserError, match="^password: the two entries differ$"):
        read_password(stdin=Tty(), prompt=lambda _: next(answers))


def test_verify_and_unknown_names(tmp_path: Path) -> None:
    book = UserBook(tmp_path / "c.db", hasher=TEST_HASHER)
    book.add("duty", "fengze", "password-1234")
    assert book.verify("duty", "password-1234") == book.get("duty")
    assert book.verify("duty", "password-12345") is None
    assert book.verify("nobody", "password-1234") is None
    assert book.verify("duty", "x" * 100_000) is None  # oversized: refused before hashing
    assert book.names() == ["duty"]


def test_an_old_hash_is_upgraded_at_login(tmp_path: Path) -> None:
    old = UserBook(tmp_path / "c.db", hasher=TEST_HASHER)
    old.add("duty", "fengze", "password-1234")
    new = UserBook(tmp_path / "c.db")  # production parameters
    assert new.verify("duty", "password-1234") is not None
    [(_, _, pw_hash)] = _rows(tmp_path / "c.db")
    assert pw_hash.startswith("$argon2id$v=19$m=32768,t=4,p=1$")


@settings(deadline=None)
@given(st.text(max_size=80))
def test_check_name_accepts_or_names_the_problem(name: str) -> None:
    try:
        assert check_name(name) == name
    except UserError as exc:
        assert str(exc).startswith("user name ")


def test_users_add_a_team_leader_scoped_to_a_team_of_the_plan(central_toml: Path, tmp_path: Path) -> None:
    PlanRegistry.for_data_dir(tmp_path / "data").add(parse_plan_bytes(PLAN.encode()))
    r = run_cli("users", "add", "leader", "--team", "volunteers-7", "--config", str(central_toml), stdin=b"long enough password\n")
    noise = [line for line in r.stderr.splitlines() if "store: schema migrated to version" not in line]
    assert (r.returncode, r.stdout, noise) == (0, "user leader added, scope team:volunteers-7\n", [])
    assert [(n, u) for n, u, _ in _rows(tmp_path / "data" / "central.db")] == [("leader", "team:volunteers-7")]
    r = run_cli("users", "add", "other", "--team", "volunteers-99", "--config", str(central_toml), stdin=b"long enough password\n")
    assert (r.returncode, r.stderr) == (2, "gridpatrol: --team 'volunteers-99': not a team of the plan in force\n")
    r = run_cli("users", "add", "both", "--team", "volunteers-7", "--unit", "chengzhou", "--config", str(central_toml))
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
