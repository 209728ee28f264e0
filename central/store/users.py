"""Staff accounts and their dashboard sessions: the ``users`` and ``sessions`` tables.

- ``users``: name, unit (the scope), argon2 hash, created, ``disabled``
  (schema version 4). A disabled account cannot log in and has no sessions.
- ``sessions`` (version 4): one row per logged-in browser. The cookie
  carries a random session id; the table keeps only its SHA-256, so a copy
  of the store opens no one's session. Logout deletes the row, so the cookie
  never works again; disabling, removing or a new password deletes all of a
  user's rows in the same transaction.

The web (central/web/users.py) holds the policy: names, passwords, hashing.
"""

from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from central.store.dialect import Connection, transaction
from central.store.events import Store


@dataclass(slots=True, frozen=True)
class UserRow:
    name: str
    unit: str
    created_ts: int
    disabled: bool = False


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class AccountStore:
    """Each call opens its own short connection: any thread may call."""

    def __init__(self, where: Path | str | Store) -> None:
        """``where``: the store, or the path of a SQLite store."""
        self._store = where if isinstance(where, Store) else Store(Path(where))
        self.path = self._store.path  # None on PostgreSQL
        # A writer's connection brings the schema to this version (``users add`` may come before central ever ran).
        self._store.connect().close()

    def _reading(self) -> Connection:
        return self._store.connect(readonly=True)

    def _writing(self) -> Connection:
        return self._store.backend.connect()  # migrated above

    # --- users ---------------------------------------------------------------

    def insert_user(self, user: UserRow, pw_hash: str) -> bool:
        """False when the name is taken."""
        with closing(self._writing()) as db, transaction(db):
            row = db.execute("INSERT INTO users(name, unit, pw_hash, created_ts, disabled) VALUES (?, ?, ?, ?, ?)"
                             " ON CONFLICT(name) DO NOTHING RETURNING name",
                             (user.name, user.unit, pw_hash, user.created_ts, int(user.disabled))).fetchone()
        return row is not None

    def user(self, name: str) -> UserRow | None:
        with closing(self._reading()) as db:
            row = db.execute("SELECT name, unit, created_ts, disabled FROM users WHERE name = ?", (name,)).fetchone()
        return UserRow(row[0], row[1], row[2], bool(row[3])) if row else None

    def user_and_hash(self, name: str) -> tuple[UserRow, str] | None:
        with closing(self._reading()) as db:
            row = db.execute("SELECT name, unit, created_ts, disabled, pw_hash FROM users WHERE name = ?",
                             (name,)).fetchone()
        return (UserRow(row[0], row[1], row[2], bool(row[3])), row[4]) if row else None

    def users(self) -> list[UserRow]:
        with closing(self._reading()) as db:
            rows = db.execute("SELECT name, unit, created_ts, disabled FROM users ORDER BY name").fetchall()
        return [UserRow(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def set_hash(self, name: str, pw_hash: str, *, end_sessions: bool) -> bool:
        """False when there is no such user. A new password ends the user's sessions when asked."""
        with closing(self._writing()) as db, transaction(db):
            changed = db.execute("UPDATE users SET pw_hash = ? WHERE name = ?", (pw_hash, name)).rowcount
            if changed and end_sessions:
                db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
        return bool(changed)

    def set_disabled(self, name: str, disabled: bool) -> bool:
        """False when there is no such user; disabling ends every session of the user in the same transaction."""
        with closing(self._writing()) as db, transaction(db):
            changed = db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount
            if changed and disabled:
                db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
        return bool(changed)

    def delete_user(self, name: str) -> bool:
        with closing(self._writing()) as db, transaction(db):
            changed = db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount
            db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
        return bool(changed)

    # --- sessions ------------------------------------------------------------

    def insert_session(self, session_id: str, user: str, now_ms: int, expires_ms: int) -> None:
        with closing(self._writing()) as db, transaction(db):
            db.execute("DELETE FROM sessions WHERE expires_ts <= ?", (now_ms,))
            db.execute('INSERT INTO sessions(id_hash, "user", created_ts, expires_ts) VALUES (?, ?, ?, ?)',
                       (session_hash(session_id), user, now_ms, expires_ms))

    def session_user(self, session_id: str, now_ms: int) -> UserRow | None:
        """The enabled user of a live session, else None (logged out, expired, disabled, removed)."""
        with closing(self._reading()) as db:
            row = db.execute(
                'SELECT u.name, u.unit, u.created_ts, u.disabled FROM sessions s JOIN users u ON u.name = s."user" '
                "WHERE s.id_hash = ? AND s.expires_ts > ? AND u.disabled = 0",
                (session_hash(session_id), now_ms)).fetchone()
        return UserRow(row[0], row[1], row[2], bool(row[3])) if row else None

    def delete_session(self, session_id: str) -> None:
        with closing(self._writing()) as db, transaction(db):
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (session_hash(session_id),))

    def session_count(self, user: str) -> int:
        with closing(self._reading()) as db:
            return int(db.execute('SELECT count(*) FROM sessions WHERE "user" = ?', (user,)).fetchone()[0])
