"""The dashboard's queries and the staff accounts on each engine (central/store/dashboard.py, users.py)."""

from __future__ import annotations

from contextlib import closing

from central.store import Store, quarantine, transaction
from central.store import alarms as alarms_sql
from central.store.dashboard import StoreReader
from central.store.users import AccountStore, UserRow
from tests.support import ev, insert


def test_accounts_and_sessions(store: Store) -> None:
    accounts = AccountStore(store)
    assert accounts.insert_user(UserRow("lin", "g1", 5), "hash-1") is True
    assert accounts.insert_user(UserRow("lin", "g2", 6), "hash-2") is False  # the name is taken
    assert accounts.user_and_hash("lin") == (UserRow("lin", "g1", 5), "hash-1")
    accounts.insert_session("sid-1", "lin", now_ms=10, expires_ms=100)
    accounts.insert_session("sid-2", "lin", now_ms=10, expires_ms=100)
    assert accounts.session_user("sid-1", 50) == UserRow("lin", "g1", 5)
    assert accounts.session_user("sid-1", 100) is None  # expired
    assert accounts.session_count("lin") == 2
    assert accounts.set_disabled("lin", True) is True
    assert accounts.session_count("lin") == 0 and accounts.session_user("sid-2", 50) is None
    assert accounts.users() == [UserRow("lin", "g1", 5, disabled=True)]
    assert accounts.delete_user("lin") is True and accounts.users() == []


def test_the_dashboards_queries(store: Store) -> None:
    reader = StoreReader(store)
    insert(store, [ev("gate-a", 1, kind="panic"), ev("gate-a", 2)])
    with closing(store.connect()) as conn, transaction(conn):
        alarm_id = alarms_sql.insert_alarm(conn, agent="gate-a", source="gate-1", kind="panic", unit=None,
                                           raised_ts=1001, eseq=1, epoch="")
        alarms_sql.step(conn, alarm_id, 1001, None, None, "raise")
        quarantine.put(conn, agent="gate-b", topic="t", payload=b"x", reason="r", received_ts=7)
    assert [e["eseq"] for e in reader.events()] == [1, 2]
    (alarm,) = reader.alarms()
    assert (alarm["id"], alarm["kind"], [s["action"] for s in alarm["trail"]]) == (alarm_id, "panic", ["raise"])
    assert [q["agent"] for q in reader.quarantined()] == ["gate-b"]
    assert reader.agents() == []
