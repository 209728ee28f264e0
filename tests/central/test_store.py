"""The SQLite store: idempotent inserts, gap-free eseq, queries others rely on."""

from __future__ import annotations

import dataclasses
from contextlib import closing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.store import INT64_MAX, AgentRow, Store, StoredEvent, StoreError
from tests.support import ev, insert
from wire.messages import Event


def test_connect_creates_the_file_in_wal_mode(sqlite_store: Store) -> None:
    store = sqlite_store
    with closing(store.connect()) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "agents", "counters"} <= tables


def test_a_readonly_connection_cannot_write(store: Store) -> None:
    store.connect().close()
    with closing(store.connect(readonly=True)) as conn:
        with pytest.raises(store.errors):
            conn.execute("DELETE FROM events")


def test_reading_a_store_that_does_not_exist_says_so(sqlite_store: Store) -> None:
    store = sqlite_store
    with pytest.raises(StoreError) as info:
        store.list_events()
    assert str(info.value) == f"store {store.path} does not exist (has `gridpatrol central` run?)"
    assert not store.path.exists()


def test_insert_is_idempotent_and_returns_what_was_new(store: Store) -> None:
    assert insert(store, [ev("a", 1), ev("a", 2)]) == [ev("a", 1), ev("a", 2)]
    again = [ev("a", 2), ev("a", 3), ev("a", 3), ev("b", 2)]
    assert insert(store, again) == [ev("a", 3), ev("b", 2)]
    assert [(e.agent, e.eseq) for e in store.list_events()] == [("a", 1), ("a", 2), ("a", 3), ("b", 2)]
    assert store.list_events()[0] == ev("a", 1)  # every column comes back as it went in


@pytest.mark.parametrize("count", [1, 127, 128, 301])
def test_a_large_batch_is_stored_whole_and_as_it_went_in(store: Store, count: int) -> None:
    # Inserted many rows to a statement: 301 = 128 + 128 + 32 + 8 + 4 + 1.
    events = [ev(f"agent-{i % 7}", i // 7 + 1, ts_est=-i, received_ts=10**15 + i, n=i, flag=i % 2 == 0, name="ü\n\"")
              for i in range(count)]
    assert insert(store, events) == events
    assert store.list_events() == sorted(events, key=lambda e: (e.agent, e.eseq))
    # The same batch again with one new event: only that one is new, the rest are duplicates.
    extra = ev("agent-0", 10_000)
    assert insert(store, [*events, extra]) == [extra]
    assert len(store.list_events()) == count + 1


def test_stored_contents_for_comparing_duplicates(store: Store) -> None:
    insert(store, [ev("a", 1)])
    with closing(store.connect(readonly=True)) as conn:
        found = store.stored_contents(conn, [("a", "", 1), ("a", "", 9), ("a", "other-epoch", 1)])
    assert found == {("a", "", 1): ev("a", 1).content()}


def test_contiguous_eseq(store: Store) -> None:
    store.connect().close()
    assert store.contiguous_eseq("a") == 0
    insert(store, [ev("a", n) for n in (1, 2, 3, 5, 6, 9)])
    assert store.contiguous_eseq("a") == 3
    assert store.contiguous_eseq("a", after=4) == 6  # 4 was covered by an earlier ack
    assert store.contiguous_eseq("a", after=7) == 7
    assert store.eseqs_above("a", "", 3) == [5, 6, 9]
    assert store.contiguous_eseq("a", "another-epoch") == 0  # each epoch counts on its own


def test_the_last_eseq_there_can_be_is_stored_and_counted(store: Store) -> None:
    top = INT64_MAX
    insert(store, [dataclasses.replace(ev("a", 1), eseq=n) for n in (1, 2, top - 1, top)])
    assert store.contiguous_eseq("a") == 2
    assert store.contiguous_eseq("a", after=top - 2) == top
    assert store.eseqs_above("a", "", 2) == [top - 1, top]
    with closing(store.connect()) as conn:
        store.add_counters(conn, {"lost": top})
        store.add_counters(conn, {"lost": top})  # stops at the top, never fails the batch
    assert store.counters() == {"lost": top}


def test_ranges_the_agent_said_are_gone_count_as_covered(store: Store) -> None:
    insert(store, [ev("a", n) for n in (1, 2, 5, 9)])
    with closing(store.connect()) as conn:
        store.record_lost(conn, "a", "", 3, 4, 0, reason="gone")
        store.record_lost(conn, "a", "", 6, 8, 0, reason="quarantined")
    assert store.contiguous_eseq("a") == 9
    assert store.lost_ranges("a", "") == [(3, 4), (6, 8)]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=40), max_size=30), st.integers(min_value=0, max_value=10))
def test_contiguous_eseq_matches_a_plain_count(tmp_path_factory: pytest.TempPathFactory, held: set[int],
                                               after: int) -> None:
    store = Store(tmp_path_factory.mktemp("c") / "c.db")
    insert(store, [ev("a", n) for n in sorted(held)])
    expected = after
    while expected + 1 in held:
        expected += 1
    assert store.contiguous_eseq("a", after=after) == expected


def test_list_events_filters_and_orders(store: Store) -> None:
    insert(store, [ev("b", 1), ev("a", 2, kind="fault", code="x", detail=""), ev("a", 1), ev("a", 3, received_ts=50)])
    assert [(e.agent, e.eseq) for e in store.list_events()] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert [(e.agent, e.eseq) for e in store.list_events(agent="a", kind="scan")] == [("a", 1), ("a", 3)]
    assert [(e.agent, e.eseq) for e in store.list_events(since=2001)] == [("a", 1), ("a", 2), ("b", 1)]
    assert [(e.agent, e.eseq) for e in store.list_events(limit=2)] == [("a", 1), ("a", 2)]
    assert [(e.agent, e.eseq) for e in store.recent_events(2)] == [("a", 2), ("a", 1)]


def test_events_between_uses_the_estimated_time(store: Store) -> None:
    insert(store, [ev("a", 1, ts_est=100), ev("a", 2, ts_est=200), ev("b", 1, ts_est=150),
                   ev("a", 3, kind="alarm", ts_est=150)])
    assert [(e.agent, e.eseq) for e in store.events_between("scan", 100, 200)] == [("a", 1), ("b", 1)]


def test_agents_and_counters(store: Store) -> None:
    row = AgentRow(agent="a", state="online", bdseq=3, boot_id="b", last_seen=5, acked_eseq=7, first_seen=1,
                   birth={"bdseq": 3, "inventory": {"readers": [{"name": "gate-1"}]}}, flags={"lost": [[2, 3]]})
    with closing(store.connect()) as conn:
        with conn:
            store.save_agents(conn, [row, AgentRow(agent="b")])
            store.add_counters(conn, {"x": 2, "y": 0})
        with conn:
            store.add_counters(conn, {"x": 3})
    assert store.list_agents() == [row, AgentRow(agent="b")]
    assert [a.to_json() for a in store.list_agents()] == [
        {"agent": "a", "state": "online", "bdseq": 3, "last_seen": 5, "acked_eseq": 7, "epoch": ""},
        {"agent": "b", "state": "unknown", "bdseq": None, "last_seen": None, "acked_eseq": 0, "epoch": ""},
    ]
    assert store.get_agent("nobody") is None
    assert store.counters() == {"x": 5}


def test_the_json_form_keeps_the_contract_keys_first() -> None:
    e = StoredEvent(agent="a", eseq=4, kind="fault", source="gate-1", ts=1, ts_est=1, ts_estimated=False,
                    received_ts=2, replayed=True, fields={"code": "c", "detail": "d", "agent": "spoof"})
    assert e.to_json() == {"agent": "a", "eseq": 4, "kind": "fault", "source": "gate-1", "ts": 1,
                           "received_ts": 2, "replayed": True, "epoch": "", "code": "c", "detail": "d"}
    flagged = StoredEvent(agent="a", eseq=1, kind="scan", source="s", ts=1, ts_est=1, ts_estimated=False,
                          received_ts=1, replayed=False, fields={"tag": "AB"}, unplanned=True)
    assert flagged.to_json()["unplanned"] is True
    assert flagged.to_notice()["ts_est"] == 1


def test_a_scan_in_json_carries_its_printed_numbers_and_its_fmt_when_sent() -> None:
    em = ev("a", 1, tag="6F007B3972", fmt="em4100").to_json()
    assert (em["tag"], em["fmt"], em["cards"]) == ("6F007B3972", "em4100", ["0008075634", "123,14706"])
    old = ev("a", 2, tag="6F007B3972").to_json()  # an older agent: no fmt, its tag says what it is
    assert "fmt" not in old and old["cards"] == ["0008075634", "123,14706"]
    assert ev("a", 3, tag="04A1B2C3", fmt="iso14443a").to_json()["cards"] == []
    assert "cards" not in ev("a", 4, kind="fault", code="c", detail="d").to_json()


@pytest.mark.parametrize("event_map", [
    {"kind": "scan", "tag": "67003B51C6"},
    {"kind": "fault", "code": "reader", "detail": "no answer", "extra": 3},
    {"kind": "output", "output": "siren", "on": True},
    {"kind": "alarm"},
])
@pytest.mark.parametrize("replayed", [False, True])
def test_an_event_received_is_the_one_init_builds(event_map: dict[str, object], replayed: bool) -> None:
    e = Event.from_map({"eseq": 7, "boot_id": "b1", "source": "gate-1", "ts": -5, "mono_ms": 9,
                        "clock_synced": False, "replayed": replayed, **event_map})
    got = StoredEvent.received("a", e, 2000, 1990, True, True)
    want = StoredEvent(agent="a", eseq=7, kind=str(e.kind), source="gate-1", ts=-5, ts_est=1990, ts_estimated=True,
                       received_ts=2000, replayed=replayed, fields=dict(e.fields), unplanned=True, boot_id="b1",
                       mono_ms=9, clock_synced=False)
    assert got == want
    assert type(got.kind) is str and got.kind == event_map["kind"]
    assert got.to_notice() == want.to_notice()
    assert got.content() == e.content()
