"""Issue 14's tables in the store: made by migration 3, pruned with their alarms."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from central.store import Store, notifications, schema, snapshots, transaction


def test_migration_3_makes_the_tables_and_retention_takes_them_with_their_alarms(tmp_path: Path) -> None:
    store = Store(tmp_path / "central.db")
    with closing(store.connect()) as conn:
        assert schema.version_of(conn) == schema.VERSION >= 3
        with transaction(conn):
            for aid, raised in ((1, 1_000), (2, 9_000_000)):
                conn.execute("INSERT INTO alarms(id, agent, source, kind, state, raised_ts, acked_ts) VALUES"
                             " (?, 'gate', 'panic', 'panic', 'resolved', ?, ?)", (aid, raised, raised))
                conn.execute("INSERT INTO alarm_steps(alarm_id, ts, action) VALUES (?, ?, 'raise')", (aid, raised))
        steps = notifications.steps_after(conn, 0, actions=("raise",))
        notifications.record(conn, steps[-1].rowid, [notifications.NewNotification(s.rowid, s.alarm_id, "t", "raise", "T", "B")
                                                     for s in steps], 0)
        for note in notifications.pending(conn, "t"):
            notifications.attempted(conn, note, label="phone", ok=True, detail="sent", now_ms=1)
            snapshots.add(conn, note.alarm_id or 0, "cam", 1, b"\xff\xd8")
    assert store.prune(5_000)["alarms"] == 1
    with closing(store.connect(readonly=True)) as conn:
        assert [a["alarm_id"] for a in notifications.trail(conn, [1, 2])] == [2]
        assert snapshots.numbers(conn, [1, 2]) == {2: [1]}
        assert [r[0] for r in conn.execute("SELECT alarm_id FROM notifications")] == [2]
        top = notifications.last_step(conn)
    assert store.prune(10**15)["alarms"] == 1
    with closing(store.connect(readonly=True)) as conn:
        # The newest step row outlives its alarm: the rowid a cursor stands on is never handed out again.
        assert notifications.last_step(conn) == top
        assert notifications.steps_after(conn, 0, actions=("raise",)) == []  # and it names no alarm any more
        assert snapshots.numbers(conn, [1, 2]) == {}
        assert conn.execute("SELECT COUNT(*) FROM notify_attempts").fetchone()[0] == 0
