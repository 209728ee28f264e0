"""Staff accounts: a ``users`` table in central's SQLite store file.

Each account has a scope, a unit of the plan: its holder sees that unit and
everything below it. Passwords are stored as argon2id hashes (parameters
below, chosen for the host); the clear password never reaches argv, a log or the store.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sqlite3
import sys
import time
import unicodedata
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from central.web import UserError

_LOGGER = logging.getLogger(__name__)

USERS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users("
    "name TEXT PRIMARY KEY, unit TEXT NOT NULL, pw_hash TEXT NOT NULL, created_ts INTEGER NOT NULL)"
)
NAME_MAX_CHARS = 64
PASSWORD_MIN_CHARS = 8
# argon2 would hash a megabyte happily; a login form has no business sending one.
PASSWORD_MAX_CHARS = 1024
SQLITE_BUSY_TIMEOUT_S = 5.0
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


@dataclass(slots=True, frozen=True)
class User:
    name: str
    unit: str
    created_ts: int


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
    """The ``users`` table. Each call opens its own short connection, so any thread may call."""

    def __init__(self, path: Path | str, *, hasher: PasswordHasher | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._hasher = hasher or production_hasher()
        self._clock = clock
        self._dummy: str | None = None
        with closing(self._connect()) as db, db:
            db.execute(USERS_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S)

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
        pw_hash = self._hasher.hash(password)
        try:
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO users(name, unit, pw_hash, created_ts) VALUES (?, ?, ?, ?)",
                    (user.name, user.unit, pw_hash, user.created_ts),
                )
        except sqlite3.IntegrityError:
            raise UserError(f"user {name!r} already exists") from None
        return user

    def get(self, name: str) -> User | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT name, unit, created_ts FROM users WHERE name = ?", (name,)).fetchone()
        return User(*row) if row else None

    def names(self) -> list[str]:
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT name FROM users ORDER BY name")]

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None. Slow on purpose (argon2)."""
        if len(password) > PASSWORD_MAX_CHARS:
            return None
        with closing(self._connect()) as db:
            row = db.execute("SELECT name, unit, created_ts, pw_hash FROM users WHERE name = ?", (name,)).fetchone()
        pw_hash = row[3] if row else self._dummy_hash()
        try:
            self._hasher.verify(pw_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self._hasher.check_needs_rehash(pw_hash):
            # Parameters were raised since this hash was made: upgrade it now
            # that we hold the clear password, once.
            with closing(self._connect()) as db, db:
                db.execute("UPDATE users SET pw_hash = ? WHERE name = ?", (self._hasher.hash(password), name))
        return User(row[0], row[1], row[2])


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
    """``gridpatrol users add NAME --unit UNIT --config central.toml``."""
    from central.web.wiring import load_central_config, plan_unit_ids, store_path_of

    config = load_central_config(args.config)
    check_name(args.name)
    known = plan_unit_ids(config)
    if known is not None and args.unit not in known:
        raise UserError(f"--unit {args.unit!r}: not a unit of the plan in force")
    if known is None:
        _LOGGER.warning("no plan imported yet: unit %s is not checked", args.unit)
    password = check_password(read_password())
    path = store_path_of(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    user = UserBook(path).add(args.name, args.unit, password)
    print(f"user {user.name} added, scope {user.unit}")
    return 0
