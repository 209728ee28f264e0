"""The plan registry: every imported version of the plan, in a TinyDB file.

TinyDB rewrites its whole file on every write and does so in place, so a crash
mid-write would leave half a plan. :class:`AtomicJSONStorage` writes a
temporary file, fsyncs it, renames it over the old one and fsyncs the folder:
a reader (another process) sees the old file or the new one, never a mix.
Only the plan lives here; events never do.

Which version judges a moment: a version governs from its start (local
midnight of its ``effective`` date, else the moment it was imported) until the
next version's start. Before the first start no version governs: those nights
have no rounds (a new district's first plan must not report every earlier
night as missed). Two versions with the same start: the later import wins.
"""

from __future__ import annotations

import bisect
import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tinydb import TinyDB
from tinydb.storages import Storage

from central.plan.model import Plan
from central.plan.parse import PlanError, parse_plan, plan_to_data

_LOGGER = logging.getLogger(__name__)

REGISTRY_FILE = "plan.json"
_TABLE = "versions"
_NEVER = -(2**62)  # "since always": a start before any moment (tests build histories with it)


class RegistryError(PlanError):
    """The registry file cannot be read as a registry (names the file)."""


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file JSON, replaced atomically on every write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"{self.path}: not a plan registry (invalid JSON: {exc})") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{self.path}: not a plan registry (no JSON object at the top)")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)


@dataclass(slots=True, frozen=True, eq=False)  # identity: hashing a whole district's plan is not cheap
class PlanVersion:
    version: int
    imported_ms: int
    source: str
    plan: Plan
    start_ms: int  # from when it governs

    @property
    def governs_from(self) -> str:
        if self.start_ms == _NEVER:
            return "the beginning"
        return dt.datetime.fromtimestamp(self.start_ms / 1000, self.plan.tz).isoformat()


class PlanHistory:
    """Immutable view of all versions; answers "which plan judged this moment?"."""

    def __init__(self, versions: tuple[PlanVersion, ...]) -> None:
        self.versions = versions  # in import order
        self._timeline = sorted(versions, key=lambda v: (v.start_ms, v.version))
        self._starts = [v.start_ms for v in self._timeline]

    def __bool__(self) -> bool:
        return bool(self.versions)

    @property
    def latest(self) -> PlanVersion | None:
        return self.versions[-1] if self.versions else None

    def at(self, ts_ms: int) -> PlanVersion | None:
        i = bisect.bisect_right(self._starts, ts_ms)
        return self._timeline[i - 1] if i else None

    def between(self, lo_ms: int, hi_ms: int) -> list[PlanVersion]:
        """Versions governing some moment of ``[lo, hi)``, oldest start first."""
        out = []
        for i, v in enumerate(self._timeline):
            end = self._starts[i + 1] if i + 1 < len(self._starts) else 2**62
            if end > v.start_ms and v.start_ms < hi_ms and end > lo_ms:  # the first test skips a version overtaken at once
                out.append(v)
        return out

    def timezone_at(self, ts_ms: int) -> Any:
        v = self.at(ts_ms) or self.latest
        return v.plan.tz if v else None


EMPTY_HISTORY = PlanHistory(())


class PlanRegistry:
    """Versions of the plan in ``path``; safe to share between threads.

    :meth:`history` re-reads the file only when it changed (its inode, size or
    mtime), so a central polling it notices a CLI import within one poll.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._history = EMPTY_HISTORY
        self._parsed: dict[tuple[int, int, bool], PlanVersion] = {}  # versions never change: parse each once

    @classmethod
    def for_data_dir(cls, data_dir: str | os.PathLike[str], **kw: Any) -> PlanRegistry:
        return cls(Path(data_dir) / REGISTRY_FILE, **kw)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def history(self) -> PlanHistory:
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp or stamp is None and self._history:
                self._history = self._load() if stamp is not None else EMPTY_HISTORY
                self._stamp = stamp
            return self._history

    def changed_since(self, history: PlanHistory) -> bool:
        return self.history() is not history

    def current(self, now_ms: int | None = None) -> Plan | None:
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        v = self.history().at(now)
        return v.plan if v else None

    def is_planned(self, agent_id: str) -> bool:
        """Whether the plan in force now knows the agent (events of others are flagged)."""
        plan = self.current()
        return plan is not None and plan.is_planned(agent_id)

    def add(self, plan: Plan, *, source: str = "") -> PlanVersion:
        """Store ``plan`` as the next version; returns it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two imports at once must not take one number
            with TinyDB(self.path, storage=AtomicJSONStorage) as db:
                table = db.table(_TABLE)
                number = 1 + max((int(d.get("version", 0)) for d in table.all()), default=0)
                imported_ms = int(self._clock() * 1000)
                table.insert({"version": number, "imported_ms": imported_ms, "source": source, "plan": plan_to_data(plan)})
        _LOGGER.info("plan version %s imported from %s", number, source)
        return self.history().versions[-1]

    def _load(self) -> PlanHistory:
        with TinyDB(self.path, storage=AtomicJSONStorage) as db:
            docs = db.table(_TABLE).all()
        docs = sorted(docs, key=lambda d: int(d.get("version", 0)))
        versions = []
        for i, doc in enumerate(docs):
            number = int(doc.get("version", 0))
            cache_key = (number, int(doc.get("imported_ms", 0)), i == 0)
            v = self._parsed.get(cache_key)
            if v is None:
                try:
                    plan = parse_plan(doc["plan"], name=f"{self.path.name} version {number}")
                    imported_ms = int(doc["imported_ms"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise RegistryError(f"{self.path}: version {number} is damaged: {exc}") from None
                if plan.effective is not None:
                    start = int(dt.datetime.combine(plan.effective, dt.time(0, 0), tzinfo=plan.tz).timestamp() * 1000)
                else:
                    start = imported_ms
                v = PlanVersion(number, imported_ms, str(doc.get("source", "")), plan, start)
                self._parsed[cache_key] = v
            versions.append(v)
        return PlanHistory(tuple(versions))
