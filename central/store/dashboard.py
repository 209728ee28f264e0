"""The dashboard's read-only queries (moved here from central/web/reader.py).

The web never writes the tables of ingest or the alarm book; it reads them
with short read-only connections of the store's policy (WAL lets it read
while ingest writes) and shapes rows into the objects of docs/reference.md's
"Machine-readable output". Writes go through their owners
(``AlarmActions.acknowledge``). Every list is bounded: at most
EVENTS_MAX_LIMIT rows, and trails cut to their newest steps in SQL.

Each call opens a short connection, so any thread may call; the dashboard
runs these on uvicorn's thread pool, never on its event loop.
"""

from __future__ import annotations

import json
import logging
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from central.cards import with_cards
from central.store import notifications as outbox  # issue 14: delivery attempts in the trail
from central.store import snapshots as album  # issue 14: snapshots kept with alarms
from central.store.cards import Sighting, card_sightings
from central.store.dialect import Connection, dialect_of
from central.store.errors import StoreError
from central.store.events import Store

_LOGGER = logging.getLogger(__name__)

EVENTS_DEFAULT_LIMIT = 200
# No list answers more rows than this at once (docs/reference.md: ?limit= at most 1000);
# one events query once answered 95 MB and took central to 621 MB.
EVENTS_MAX_LIMIT = 1000
# ... and no more than this of their stored JSON, read from SQLite row by row.
EVENTS_MAX_BYTES = 1024 * 1024
# Steps of an escalation trail shown on a card: the newest ones; the alarm's own route has them all.
CARD_TRAIL_STEPS = 10
# The kind's own keys live in events.fields; these are never taken from it.
_EVENT_CORE_KEYS = ("agent", "eseq", "kind", "source", "ts", "received_ts", "replayed")
_ALARM_KEYS = ("id", "agent", "source", "kind", "unit", "state", "raised_ts", "acked_by", "acked_ts", "escalated_to")
# Whether the event that raised the alarm came late from the agent's outbox.
_ALARM_SELECT = (f"SELECT {', '.join(_ALARM_KEYS)}, (SELECT max(e.replayed) FROM events e WHERE e.agent = alarms.agent "
                 "AND e.epoch = coalesce(alarms.event_epoch, '') AND e.eseq = alarms.event_eseq) AS replayed FROM alarms")


def _json_object(text: Any) -> dict[str, Any]:
    """A JSON column as a dict; anything else (NULL, damage) as an empty one."""
    if not isinstance(text, (str, bytes)) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _no_tables_yet(exc: BaseException) -> bool:
    """Before ingest or the alarm book has made its tables (a fresh install) there is nothing to show."""
    text = str(exc)
    return ("no such table" in text or "unable to open" in text  # SQLite
            or type(exc).__name__ == "UndefinedTable")  # PostgreSQL


class StoreReader:
    def __init__(self, where: Path | str | Store) -> None:
        """``where``: the store, or the path of a SQLite store."""
        self._store = where if isinstance(where, Store) else Store(Path(where))
        self.path = self._store.path  # None on PostgreSQL

    def _connect(self) -> Connection:
        return self._store.connect(readonly=True)

    def _rows(self, db: Connection, sql: str, params: Sequence[Any]) -> Iterable[Mapping[str, Any]]:
        """The rows of ``sql``, each readable by column name."""
        return dialect_of(db).by_name(db, sql, params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        try:
            with closing(self._connect()) as db:
                return list(self._rows(db, sql, params))
        except StoreError:
            return []  # no store file yet: a fresh install has nothing to show
        except self._store.errors as exc:
            if _no_tables_yet(exc):
                return []
            raise

    def _query_bounded(self, sql: str, params: Sequence[Any]) -> tuple[list[Mapping[str, Any]], bool]:
        """Rows until their ``fields`` pass EVENTS_MAX_BYTES: a thousand of the largest events an agent
        can send would be 64 MB, and eight worker threads each holding that is more than a Pi has.
        The first row is always kept; True: cut short, the caller's cursor continues after the last one."""
        out: list[Mapping[str, Any]] = []
        size = 0
        try:
            with closing(self._connect()) as db:
                for row in self._rows(db, sql, params):
                    size += len(row["fields"] or "")
                    if out and size > EVENTS_MAX_BYTES:
                        return out, True
                    out.append(row)
        except StoreError:
            return [], False
        except self._store.errors as exc:
            if _no_tables_yet(exc):
                return [], False
            raise
        return out, False

    # --- agents -------------------------------------------------------------

    def agents(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT agent, state, bdseq, last_seen, acked_eseq, first_seen, tele, birth FROM agents ORDER BY agent")
        return [self._agent(row) for row in rows]

    def agent(self, agent: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT agent, state, bdseq, last_seen, acked_eseq, first_seen, tele, birth FROM agents WHERE agent = ?", (agent,))
        return self._agent(rows[0]) if rows else None

    @staticmethod
    def _agent(row: Mapping[str, Any]) -> dict[str, Any]:
        tele = _json_object(row["tele"])
        return {
            "agent": row["agent"],
            "state": row["state"] or "unknown",
            "bdseq": row["bdseq"],
            "last_seen": row["last_seen"],
            "acked_eseq": row["acked_eseq"],
            "first_seen": row["first_seen"],
            # The latest telemetry as presence keeps it (wire.messages.Telemetry's keys).
            "outbox_depth": tele.get("outbox_depth"),
            "clock_synced": tele.get("clock_synced"),
            "reconnects": tele.get("reconnects"),
            "uptime_s": tele.get("uptime_s"),
            "cpu_temp_c": tele.get("cpu_temp_c"),
        }

    # --- events -------------------------------------------------------------

    def events(self, *, agents: Iterable[str] | None = None, kind: str | None = None, source: str | None = None,
               since_ts: int | None = None, until_ts: int | None = None,
               limit: int = EVENTS_DEFAULT_LIMIT, by_time: bool = False,
               before: tuple[int, str, int] | None = None) -> list[dict[str, Any]]:
        """:meth:`events_page` without its "more" flag."""
        return self.events_page(agents=agents, kind=kind, source=source, since_ts=since_ts, until_ts=until_ts,
                                limit=limit, by_time=by_time, before=before)[0]

    def events_page(self, *, agents: Iterable[str] | None = None, kind: str | None = None, source: str | None = None,
                    since_ts: int | None = None, until_ts: int | None = None,
                    limit: int = EVENTS_DEFAULT_LIMIT, by_time: bool = False,
                    before: tuple[int, str, int] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The newest ``limit`` matching events (by ts), returned oldest first, and whether there may be more.

        Oldest first means docs/reference.md's order, by agent then eseq, unless
        ``by_time`` asks for the order in which they happened (the event log).
        ``before`` (ts, agent, eseq) pages back: only events older than that one.
        """
        where: list[str] = ["1 = 1"]  # TRUE on either engine
        params: list[Any] = []
        if agents is not None:
            names = sorted(set(agents))
            if not names:
                return [], False
            where.append(f"agent IN ({','.join('?' * len(names))})")
            params.extend(names)
        for column, value in (("kind", kind), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since_ts is not None:
            where.append("ts >= ?")
            params.append(since_ts)
        if until_ts is not None:
            where.append("ts < ?")
            params.append(until_ts)
        if before is not None:
            where.append("(ts, agent, eseq) < (?, ?, ?)")
            params.extend(before)
        limit = max(1, min(int(limit), EVENTS_MAX_LIMIT))
        rows, cut = self._query_bounded(
            "SELECT agent, eseq, kind, source, ts, received_ts, replayed, fields, unplanned FROM events "
            f"WHERE {' AND '.join(where)} ORDER BY ts DESC, agent DESC, eseq DESC LIMIT ?", [*params, limit])
        events = [self._event(row) for row in reversed(rows)]
        if not by_time:
            events.sort(key=lambda e: (e["agent"], e["eseq"]))
        return events, cut or len(rows) >= limit

    def scans(self, agents: Iterable[str], lo_ms: int, hi_ms: int) -> list[tuple[int, str, str, str, str | None]]:
        """``(ts_est, agent, reader, tag, fmt)`` of scans that happened in ``[lo, hi)``, by time.

        By central's estimate of when they happened, as the completion engine counts them.
        """
        names = sorted(set(agents))
        out: list[tuple[int, str, str, str, str | None]] = []
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            for row in self._query(
                f"SELECT ts_est, agent, source, fields FROM events WHERE kind = 'scan' AND agent IN ({','.join('?' * len(chunk))}) "
                "AND ts_est >= ? AND ts_est < ?", [*chunk, lo_ms, hi_ms]):
                fields = _json_object(row["fields"])
                tag, fmt = fields.get("tag"), fields.get("fmt")
                if isinstance(tag, str):
                    out.append((row["ts_est"], row["agent"], row["source"], tag, fmt if isinstance(fmt, str) else None))
        out.sort(key=lambda s: s[:4])
        return out

    def card_sightings(self, since_ms: int) -> list[Sighting]:
        """Cards seen at every reader since ``since_ms`` (central/enrolment.py's query)."""
        try:
            with closing(self._connect()) as db:
                return card_sightings(db, since_ms)
        except StoreError:
            return []  # no store file yet
        except self._store.errors as exc:
            if _no_tables_yet(exc):
                return []
            raise

    def event(self, agent: str, eseq: int) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT agent, eseq, kind, source, ts, received_ts, replayed, fields, unplanned FROM events "
            "WHERE agent = ? AND eseq = ?", (agent, eseq))
        return self._event(rows[0]) if rows else None

    @staticmethod
    def _event(row: Mapping[str, Any]) -> dict[str, Any]:
        fields = _json_object(row["fields"])
        event = {key: value for key, value in fields.items() if key not in _EVENT_CORE_KEYS}
        event.update({
            "agent": row["agent"], "eseq": row["eseq"], "kind": row["kind"], "source": row["source"],
            "ts": row["ts"], "received_ts": row["received_ts"], "replayed": bool(row["replayed"]),
        })
        if row["unplanned"]:
            event["unplanned"] = True
        return with_cards(event)

    # --- alarms -------------------------------------------------------------

    def alarms(self, *, include_closed: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        """For the alarms page: the newest active alarms, plus the newest closed ones when asked, newest first.
        Each card carries the newest CARD_TRAIL_STEPS steps of its trail."""
        limit = max(1, min(limit, EVENTS_MAX_LIMIT))
        rows = list(self._query(f"{_ALARM_SELECT} WHERE state = 'active' ORDER BY raised_ts DESC, id DESC LIMIT ?", (limit,)))
        if include_closed:
            rows += self._query(f"{_ALARM_SELECT} WHERE state != 'active' ORDER BY raised_ts DESC, id DESC LIMIT ?", (limit,))
        alarms = [self._alarm(row) for row in rows]
        self._attach_trails(alarms, newest=CARD_TRAIL_STEPS)
        return alarms

    def alarm_page(self, *, include_closed: bool, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """For /api/alarms: up to ``limit`` alarms older than ``before_id``, newest first, each with the last step of its trail."""
        where = ["1 = 1" if include_closed else "state = 'active'"]
        params: list[Any] = []
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        rows = self._query(f"{_ALARM_SELECT} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                           [*params, max(1, min(limit, EVENTS_MAX_LIMIT))])
        alarms = [self._alarm(row) for row in rows]
        self._attach_trails(alarms, newest=1)
        return alarms

    def alarm(self, alarm_id: int) -> dict[str, Any] | None:
        rows = self._query(f"{_ALARM_SELECT} WHERE id = ?", (alarm_id,))
        if not rows:
            return None
        alarm = self._alarm(rows[0])
        self._attach_trails([alarm])
        return alarm

    @staticmethod
    def _alarm(row: Mapping[str, Any]) -> dict[str, Any]:
        alarm = dict(row)
        alarm["replayed"] = bool(alarm.get("replayed"))
        return alarm

    def _attach_trails(self, alarms: list[dict[str, Any]], *, newest: int | None = None) -> None:
        """The escalation trail of each alarm, as ``trail``: the steps in time order (only the
        ``newest`` ones when given), and ``trail_length``, how many steps there are in all."""
        if not alarms:
            return
        by_id = {a["id"]: a for a in alarms}
        for alarm in alarms:
            alarm["trail"] = []
            alarm["trail_length"] = 0
        ids = list(by_id)
        keep = "" if newest is None else "WHERE n <= ?"
        for start in range(0, len(ids), 500):  # SQLite's parameter limit
            chunk = ids[start:start + 500]
            # Only the newest steps leave the database: a flapping loop may have thousands.
            for step in self._query(
                "SELECT alarm_id, ts, unit, tier, action, total FROM ("
                "SELECT alarm_id, ts, unit, tier, action, rowid AS r, count(*) OVER (PARTITION BY alarm_id) AS total, "
                "row_number() OVER (PARTITION BY alarm_id ORDER BY ts DESC, rowid DESC) AS n "
                f"FROM alarm_steps WHERE alarm_id IN ({','.join('?' * len(chunk))})) AS steps {keep} ORDER BY ts, r",
                    [*chunk, *(() if newest is None else (newest,))]):
                alarm = by_id[step["alarm_id"]]
                alarm["trail_length"] = step["total"]
                alarm["trail"].append({"ts": step["ts"], "unit": step["unit"], "tier": step["tier"], "action": step["action"]})
        self._attach_notify_and_snapshots(by_id, newest=newest)

    def _attach_notify_and_snapshots(self, by_id: dict[int, dict[str, Any]], *, newest: int | None = None) -> None:
        """Issue 14: each delivery attempt joins the trail; ``snapshots`` counts the pictures kept.
        ``newest``: keep only that many of the trail's last steps (the list's cards and /api/alarms)."""
        try:
            with closing(self._connect()) as db:
                attempts = outbox.trail(db, list(by_id))
                held = album.numbers(db, list(by_id))
        except StoreError:
            attempts, held = [], {}
        except self._store.errors as exc:
            if not _no_tables_yet(exc):
                raise  # before the store is made (or migrated to version 3) there is nothing to show
            attempts, held = [], {}
        for item in attempts:
            alarm = by_id[item.pop("alarm_id")]
            alarm["trail"].append({"unit": None, "tier": None, **item})
            alarm["trail_length"] += 1
        for alarm_id, alarm in by_id.items():
            alarm["trail"].sort(key=lambda s: s["ts"])  # stable: the steps keep their order
            if newest is not None:
                del alarm["trail"][:-newest]
            alarm["snapshot_numbers"] = held.get(alarm_id, [])
            alarm["snapshots"] = len(alarm["snapshot_numbers"])

    def snapshot(self, alarm_id: int, n: int) -> bytes | None:
        """One snapshot's JPEG (issue 14)."""
        try:
            with closing(self._connect()) as db:
                return album.jpeg(db, alarm_id, n)
        except StoreError:
            return None
        except self._store.errors as exc:
            if _no_tables_yet(exc):
                return None
            raise

    # --- quarantine -----------------------------------------------------------

    def quarantined(self, *, before_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Messages kept raw because they could not be stored, newest first (without the payload)."""
        where, params = "", []
        if before_id is not None:
            where, params = " WHERE id < ?", [before_id]
        rows = self._query("SELECT id, agent, topic, reason, received_ts, epoch, eseq FROM quarantine"
                           f"{where} ORDER BY id DESC LIMIT ?", [*params, max(1, min(int(limit), 1000))])
        return [dict(row) for row in rows]
