"""Moving a SQLite store into PostgreSQL: ``gridpatrol central copy-store --to postgresql://...``.

A district that outgrows one file keeps its history: every row of every
table is copied, ids and all, into a new PostgreSQL database, which then
carries on from where the file stopped.

The tables and their columns are read from the two stores themselves, not
from a list kept here: whatever the migrations made is copied, and a table
or column that is in one store and not the other (a migration one engine
got and the other did not) stops the copy before it writes anything. Only
``schema_version`` is not copied: the target's migrations write it.

The source is read in one read transaction, a consistent snapshot, and
never written. The target is filled in one transaction, so a copy that
fails leaves it as empty as it was, ready for another try. A source that
another process has open (central still running on it) is refused: what
central stored after the snapshot would be missing from the copy, and the
agents, their events acked, would no longer hold them either.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central.store import schema
from central.store.dialect import transaction
from central.store.errors import StoreError
from central.store.events import Store

BATCH_ROWS = 1000  # rows read from SQLite at a time: memory stays flat whatever the table's size

# Tables in the schema that are deliberately not copied, and why.
NOT_COPIED = {"schema_version": "the target's migrations write it"}

# SQLite's WAL index (the -shm file beside the store) has a "dead man's switch" byte that every open
# connection holds a shared lock on, whatever process it is in (os_unix.c: UNIX_SHM_DMS).
_SHM_DMS_BYTE = 128


class TargetNotEmpty(StoreError, ValueError):
    """The target already holds rows: copying into it would mix two histories (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One table to copy: its columns as the target names them, and what to read for each from SQLite."""

    name: str
    columns: tuple[str, ...]
    source_columns: tuple[str, ...]  # what SELECT reads from SQLite for each, quoted (rowid: the implicit one)
    identity: tuple[str, ...]  # target columns a sequence numbers (set past the copied ids afterwards)


@dataclass(slots=True)
class CopyReport:
    source: str
    target: str
    version: int
    rows: dict[str, int] = field(default_factory=dict)  # per table, in the order copied
    next_ids: dict[str, int] = field(default_factory=dict)  # "table.column": the next id the target hands out


def copy_store(source: Store, target: Store) -> CopyReport:
    """Copy every row of the SQLite store ``source`` into the PostgreSQL store ``target``, which must be empty.

    ``target`` is migrated to the current schema first; ``source`` must be
    at it already (``gridpatrol central migrate`` brings it there).
    """
    if source.path is None:
        raise StoreError(f"copy-store: store {source.name} is already PostgreSQL (copy-store reads a SQLite store)")
    if target.path is not None:
        raise StoreError(f"copy-store: the target {target.name} is not a postgresql:// URL")
    if not source.path.exists():
        raise StoreError(f"copy-store: store {source.path} does not exist (has `gridpatrol central` run?)")
    if in_use(source.path):
        raise StoreError(f"copy-store: store {source.path} is open in another process (is central running?):"
                         " stop central first, or what it stores during the copy would be missing from"
                         f" {target.name}")
    try:
        src = source.connect(readonly=True)
    except sqlite3.Error as exc:
        raise StoreError(f"copy-store: store {source.path} cannot be read: {exc}") from exc
    assert isinstance(src, sqlite3.Connection)
    with closing(src):
        src.isolation_level = None  # transactions as written below, none opened behind our back
        try:
            changes_before = src.execute("PRAGMA data_version").fetchone()[0]
            src.execute("BEGIN")  # a read transaction: every table read from one snapshot
            version = _source_version(src, source.path)
        except sqlite3.Error as exc:
            raise StoreError(f"copy-store: store {source.path} cannot be read: {exc}") from exc
        try:
            with closing(target.connect()) as dst:  # a writer's connection migrates the target first
                return _copy(src, dst, CopyReport(source.name, target.name, version), changes_before)
        except sqlite3.Error as exc:
            raise StoreError(f"copy-store: store {source.path} cannot be read: {exc}") from exc
        except target.errors as exc:
            raise StoreError(f"copy-store: {target.name}: {str(exc).strip()}") from exc


def in_use(path: Path) -> bool:
    """Whether another process has the SQLite store at ``path`` open (central, or a command reading it).

    Asks for the WAL index's dead man's switch byte exclusively and lets go
    at once: every open connection holds it shared, so the request fails
    while any is open. No -shm file: no connection open anywhere. Call it
    before this process opens the store: closing the probe's file lets go of
    this process's own locks on it.
    """
    shm = path.with_name(path.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise StoreError(f"copy-store: {shm} is not writable by this user, so whether central has the store open"
                         " cannot be told: run copy-store as the user central runs as") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:  # EAGAIN or EACCES: held by another process
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _source_version(src: sqlite3.Connection, path: Path) -> int:
    version = schema.version_of(src)
    if version < schema.VERSION:
        raise StoreError(f"copy-store: store {path} is at schema version {version}, this Gridpatrol's is"
                         f" {schema.VERSION}: run `gridpatrol central migrate` on it first (copy-store never"
                         " writes the source)")
    if version > schema.VERSION:
        raise StoreError(f"copy-store: store {path} is at schema version {version}, newer than this Gridpatrol"
                         f" ({schema.VERSION}): upgrade Gridpatrol instead")
    return version


def _copy(src: sqlite3.Connection, dst: Any, report: CopyReport, changes_before: int) -> CopyReport:
    tables = plan(src, dst)
    with transaction(dst):
        # No other writer while we look and fill (a central already started on the target, say).
        dst.execute(f"LOCK TABLE {', '.join(_q(t.name) for t in tables)} IN EXCLUSIVE MODE")
        held = [t.name for t in tables if dst.execute(f"SELECT EXISTS(SELECT 1 FROM {_q(t.name)})").fetchone()[0]]
        if held:
            raise TargetNotEmpty(f"copy-store: {report.target} already holds rows (in {', '.join(held)}): it copies"
                                 " only into an empty store; give it a new database (createdb)")
        for table in tables:
            report.rows[table.name] = _copy_rows(src, dst, table)
        for table in tables:
            for column in table.identity:
                report.next_ids[f"{table.name}.{column}"] = int(dst.execute(
                    f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({_q(column)}), 0) + 1, false)"
                    f" FROM {_q(table.name)}", (_q(table.name), column)).fetchone()[0])
        src.execute("COMMIT")  # the snapshot's end
        if src.execute("PRAGMA data_version").fetchone()[0] != changes_before:
            raise StoreError(f"copy-store: store {report.source} was written during the copy (central started?):"
                             f" nothing was kept in {report.target}; stop central and copy again")
    return report


def plan(src: sqlite3.Connection, dst: Any) -> list[Table]:
    """The tables to copy, parents before the tables that refer to them; a schema mismatch is a :class:`StoreError`.

    ``dst`` must be migrated: its tables and columns are what gets filled.
    """
    source = [r[0] for r in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    target = {r[0] for r in dst.execute(
        "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()")}
    only_source = [t for t in source if t not in target and t not in NOT_COPIED]
    only_target = sorted(target - set(source) - set(NOT_COPIED))
    if only_source or only_target:
        raise StoreError("copy-store: the two schemas differ: "
                         + "; ".join([f"table {t} is only in the SQLite store" for t in only_source]
                                     + [f"table {t} is only in PostgreSQL" for t in only_target])
                         + ": nothing copied")
    tables = [_table(src, dst, name) for name in source if name not in NOT_COPIED]
    return _parents_first(tables, dst)


def _table(src: sqlite3.Connection, dst: Any, name: str) -> Table:
    declared = [r[1] for r in src.execute(f"PRAGMA table_info({_q(name)})")]
    rows = dst.execute("SELECT column_name, is_identity FROM information_schema.columns"
                       " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                       (name,)).fetchall()
    columns = tuple(r[0] for r in rows)
    # PostgreSQL spells out, as a column, the insertion order SQLite keeps in a table's implicit rowid
    # (read unquoted: a quoted "rowid" that names no column is a string to SQLite).
    source_columns = tuple(_q(c) if c in declared else "rowid" for c in columns)
    missing = [c for c in columns if c not in declared and c != "rowid"]
    extra = [c for c in declared if c not in columns]
    if missing or extra:
        raise StoreError(f"copy-store: table {name} differs between the two stores (only in PostgreSQL: {missing},"
                         f" only in SQLite: {extra}): nothing copied")
    return Table(name, columns, source_columns, tuple(r[0] for r in rows if r[1] == "YES"))


def _parents_first(tables: list[Table], dst: Any) -> list[Table]:
    """``tables`` in their order, except that a table another refers to (a foreign key) comes before it."""
    refers: dict[str, set[str]] = {}
    for child, parent in dst.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_catalog.pg_constraint c"
            " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"):
        if child != parent:
            refers.setdefault(child.strip('"'), set()).add(parent.strip('"'))
    done: list[Table] = []
    left = list(tables)
    while left:
        ready = next((t for t in left if not refers.get(t.name, set()) - {d.name for d in done}), left[0])
        done.append(ready)
        left.remove(ready)
    return done


def _copy_rows(src: sqlite3.Connection, dst: Any, table: Table) -> int:
    """Stream one table in batches through PostgreSQL's COPY (which writes identity columns as given)."""
    rows = src.execute(f"SELECT {', '.join(table.source_columns)} FROM {_q(table.name)}")
    n = 0
    with dst.raw.cursor() as cur, cur.copy(
            f"COPY {_q(table.name)} ({', '.join(_q(c) for c in table.columns)}) FROM STDIN") as copy:
        while batch := rows.fetchmany(BATCH_ROWS):
            for row in batch:
                copy.write_row(row)
            n += len(batch)
    return n


def _q(name: str) -> str:
    """An identifier quoted for either engine (sessions has a column named user)."""
    return '"' + name.replace('"', '""') + '"'
