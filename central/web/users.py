"""Staff accounts: a ``users`` table in central's SQLite store file.

Each account has a scope, a unit of the plan: its holder sees that unit and
everything below it. Passwords are stored as argon2id hashes (parameters
below, chosen for the host); the clear password never reaches argv, a log or the store.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import secrets
import sys
import time
import unicodedata
from pathlib import Path
from typing import Callable, TextIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from central.store import Store, open_store
from central.store.users import AccountStore, UserRow
from central.web import UserError

_LOGGER = logging.getLogger(__name__)

NAME_MAX_CHARS = 64
PASSWORD_MIN_CHARS = 8
# argon2 would hash a megabyte happily; a login form has no business sending one.
PASSWORD_MAX_CHARS = 1024
# argon2id for a small host (docs/security.md): 32 MiB and 4 passes take 0.13 s
# on the reference 2-core x86 host and about 0.5 s on a Raspberry Pi 4; at most
# PASSWORD_CHECKS_AT_ONCE (2) run at once, so logins can never hold more than
# 64 MiB. RFC 9106's low-memory profile (64 MiB, 4 lanes) needed 2.2 GB for a
# burst of 40 before checks were bounded, and more than a small host can spare.
ARGON2_TIME_COST = 4
ARGON2_MEMORY_KIB = 32 * 1024
ARGON2_PARALLELISM = 1


def production_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM)


User = UserRow


def check_name(name: str) -> str:
    """Names are what staff type at the login: any letters (王芳 too), no spaces or controls."""
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise UserError(f"user name {name[:NAME_MAX_CHARS]!r}: expected 1 to {NAME_MAX_CHARS} characters")
    for ch in name:
        if ch.isspace() or unicodedata.category(ch).startswith("C"):
            raise UserError(f"user name {name!r}: no spaces or control characters allowed")
    return name


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_CHARS:
        raise UserError(f"password: expected at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise UserError(f"password: expected at most {PASSWORD_MAX_CHARS} characters")
    return password


class UserBook:
    """Staff accounts and their sessions: the policy (names, passwords, hashing) over :class:`AccountStore`.

    Any thread may call; each call is a short transaction of its own.
    """

    def __init__(self, where: Path | str | Store, *, hasher: PasswordHasher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``where``: the store (either engine), or the path of a SQLite store."""
        self._hasher = hasher or production_hasher()
        self._clock = clock
        self._dummy: str | None = None
        self.accounts = AccountStore(where if isinstance(where, Store) else Path(where))
        self.path = self.accounts.path  # None on PostgreSQL

    def _dummy_hash(self) -> str:
        """Verifying against this when the name is unknown keeps the answer time
        the same, so a login form does not tell which names exist."""
        if self._dummy is None:
            self._dummy = self._hasher.hash("not a password of anyone")
        return self._dummy

    def add(self, name: str, unit: str, password: str) -> User:
        check_name(name)
        check_password(password)
        user = User(name, unit, int(self._clock() * 1000))
        if not self.accounts.insert_user(user, self._hasher.hash(password)):
            raise UserError(f"user {name!r} already exists")
        return user

    def get(self, name: str) -> User | None:
        """The account, disabled or not."""
        return self.accounts.user(name)

    def names(self) -> list[str]:
        return [u.name for u in self.accounts.users()]

    def list(self) -> list[User]:
        return self.accounts.users()

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is right and the account enabled, else None. Slow on purpose (argon2)."""
        if len(password) > PASSWORD_MAX_CHARS:
            return None
        found = self.accounts.user_and_hash(name)
        pw_hash = found[1] if found else self._dummy_hash()
        try:
            self._hasher.verify(pw_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if found is None or found[0].disabled:
            return None
        if self._hasher.check_needs_rehash(pw_hash):
            # Parameters changed since this hash was made: re-hash now that we
            # hold the clear password, once.
            self.accounts.set_hash(name, self._hasher.hash(password), end_sessions=False)
        return found[0]

    def _must_exist(self, name: str, done: bool) -> None:
        if not done:
            raise UserError(f"user {name!r}: no such user")

    def disable(self, name: str) -> None:
        """No more logins, and every open session of the user ends now."""
        self._must_exist(name, self.accounts.set_disabled(name, True))

    def enable(self, name: str) -> None:
        self._must_exist(name, self.accounts.set_disabled(name, False))

    def remove(self, name: str) -> None:
        self._must_exist(name, self.accounts.delete_user(name))

    def set_password(self, name: str, password: str) -> None:
        """A new password; the user's open sessions end (whoever knew the old one is out)."""
        check_password(password)
        self._must_exist(name, self.accounts.set_hash(name, self._hasher.hash(password), end_sessions=True))

    # --- sessions ------------------------------------------------------------

    def start_session(self, name: str, max_age_s: float) -> str:
        """A new session id for a user who just logged in (the cookie carries it)."""
        session_id = secrets.token_urlsafe(32)
        now_ms = int(self._clock() * 1000)
        self.accounts.insert_session(session_id, name, now_ms, now_ms + int(max_age_s * 1000))
        return session_id

    def session_user(self, session_id: str) -> User | None:
        return self.accounts.session_user(session_id, int(self._clock() * 1000))

    def end_session(self, session_id: str) -> None:
        self.accounts.delete_session(session_id)


def read_password(*, stdin: TextIO | None = None, prompt: Callable[[str], str] = getpass.getpass) -> str:
    """From the terminal (asked twice) or, when stdin is not a terminal, its first line."""
    stream = stdin or sys.stdin
    if stream.isatty():
        first = prompt("Password: ")
        if prompt("Password again: ") != first:
            raise UserError("password: the two entries differ")
        return first
    line = stream.readline(PASSWORD_MAX_CHARS + 2)
    return line.rstrip("\r\n")


def run_users_add(args: argparse.Namespace) -> int:
    """``gridpatrol users add NAME --unit UNIT|--team TEAM --config central.toml``."""
    from central.web.scope import TEAM_SCOPE_PREFIX
    from central.web.wiring import load_central_config, plan_team_ids, plan_unit_ids

    config = load_central_config(args.config)
    check_name(args.name)
    team = getattr(args, "team", None)
    if team is not None:
        known = plan_team_ids(config)
        if known is not None and team not in known:
            raise UserError(f"--team {team!r}: not a team of the plan in force")
        if known is None:
            _LOGGER.warning("no plan imported yet: team %s is not checked", team)
        scope = TEAM_SCOPE_PREFIX + team
    else:
        known = plan_unit_ids(config)
        if known is not None and args.unit not in known:
            raise UserError(f"--unit {args.unit!r}: not a unit of the plan in force")
        if known is None:
            _LOGGER.warning("no plan imported yet: unit %s is not checked", args.unit)
        scope = args.unit
    password = check_password(read_password())
    store = open_store(config.store.url)
    if store.path is not None:
        store.path.parent.mkdir(parents=True, exist_ok=True)
    user = UserBook(store).add(args.name, scope, password)
    print(f"user {user.name} added, scope {user.unit}")
    return 0


def _book(args: argparse.Namespace) -> UserBook:
    from central.web.wiring import load_central_config

    store = open_store(load_central_config(args.config).store.url)
    if not store.exists():
        raise UserError(f"store {store.name} does not exist yet: no users (add one with `gridpatrol users add`)")
    return UserBook(store)


def run_users_list(args: argparse.Namespace) -> int:
    """``gridpatrol users list [--json]``: name, unit, disabled."""
    users = _book(args).list()
    if args.json:
        json.dump([{"name": u.name, "unit": u.unit, "disabled": u.disabled} for u in users], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not users:
        print("no users")
        return 0
    width = max(4, *(len(u.name) for u in users))
    print(f"{'NAME'.ljust(width)}  {'UNIT'}  STATE")
    for u in users:
        print(f"{u.name.ljust(width)}  {u.unit}  {'disabled' if u.disabled else 'enabled'}")
    return 0


def run_users_disable(args: argparse.Namespace) -> int:
    _book(args).disable(args.name)
    print(f"user {args.name} disabled; their sessions are ended")
    return 0


def run_users_enable(args: argparse.Namespace) -> int:
    _book(args).enable(args.name)
    print(f"user {args.name} enabled")
    return 0


def run_users_remove(args: argparse.Namespace) -> int:
    _book(args).remove(args.name)
    print(f"user {args.name} removed")
    return 0


def run_users_passwd(args: argparse.Namespace) -> int:
    """A new password from the terminal (twice) or stdin; the user's sessions end."""
    book = _book(args)
    if book.get(args.name) is None:
        raise UserError(f"user {args.name!r}: no such user")
    book.set_password(args.name, check_password(read_password()))
    print(f"password of {args.name} changed; their sessions are ended")
    return 0
