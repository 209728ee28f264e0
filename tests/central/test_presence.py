"""Presence: status, Will with bdseq, birth, rebirth requests (pure bookkeeping)."""

from __future__ import annotations

from central.presence import Presence, PresenceChange, PresenceState
from central.store import AgentRow
from wire.messages import AgentState, AgentStatus, Birth


def birth(bdseq: int, boot_id: str = "boot-1") -> Birth:
    return Birth(bdseq=bdseq, boot_id=boot_id, fw="1.0", inventory={"zones": ({"name": "north-fence"},)})


def test_online_then_offline_of_the_same_connection() -> None:
    p = Presence()
    assert p.on_status("a", AgentStatus(AgentState.ONLINE, 1, 0), 100, retained=False) == PresenceChange(
        "a", PresenceState.ONLINE, 100)
    assert p.on_status("a", AgentStatus(AgentState.ONLINE, 1, 0), 150, retained=False) is None  # no change
    assert p.on_status("a", AgentStatus(AgentState.OFFLINE, 1, 0), 200, retained=False) == PresenceChange(
        "a", PresenceState.OFFLINE, 200)
    rec = p.get("a")
    assert rec is not None and (rec.first_seen, rec.last_seen, rec.bdseq) == (100, 200, 1)


def test_a_will_of_another_bdseq_is_ignored() -> None:
    p = Presence()
    p.on_birth("a", birth(5), 100)
    assert p.on_status("a", AgentStatus(AgentState.OFFLINE, 4, 0), 200, retained=False) is None
    assert p.on_status("a", AgentStatus(AgentState.DISCONNECTED, 6, 0), 200, retained=False) is None
    assert p.stale_statuses == 2
    assert p.get("a").state is PresenceState.ONLINE  # type: ignore[union-attr]
    assert p.on_status("a", AgentStatus(AgentState.DISCONNECTED, 5, 0), 300, retained=False) == PresenceChange(
        "a", PresenceState.DISCONNECTED, 300)


def test_a_retained_status_does_not_count_as_seen() -> None:
    p = Presence()
    p.on_status("a", AgentStatus(AgentState.OFFLINE, 2, 0), 100, retained=True)
    rec = p.get("a")
    assert rec is not None and rec.state is PresenceState.OFFLINE and rec.last_seen is None


def test_a_birth_means_online_and_is_kept_for_the_row() -> None:
    p = Presence()
    assert p.on_birth("a", birth(2), 100) == PresenceChange("a", PresenceState.ONLINE, 100)
    (row,), () = p.take_dirty()
    assert row == AgentRow(agent="a", state="online", bdseq=2, boot_id="boot-1", last_seen=100, first_seen=100,
                           birth={"bdseq": 2, "boot_id": "boot-1", "fw": "1.0", "config_hash": "", "versions": {},
                                  "inventory": {"zones": [{"name": "north-fence"}]}, "received_ts": 100})
    assert p.take_dirty() == ([], [])
    p.touch("a", 150)
    p.set_acked("a", 9)
    assert [(r.last_seen, r.acked_eseq) for r in p.take_dirty()[1]] == [(150, 9)]


def test_rebirth_is_asked_without_a_birth_of_the_current_connection_and_rate_limited() -> None:
    p = Presence(rebirth_interval_s=30)
    assert p.needs_rebirth("nobody", 0.0) is False  # never heard of
    p.touch("a", 100)
    assert p.needs_rebirth("a", 10.0) is True
    assert p.needs_rebirth("a", 20.0) is False
    assert p.needs_rebirth("a", 40.0) is True
    p.on_birth("a", birth(1), 200)
    assert p.needs_rebirth("a", 100.0) is False
    p.on_status("a", AgentStatus(AgentState.ONLINE, 2, 0), 300, retained=False)  # reconnected; its birth not yet here
    assert p.needs_rebirth("a", 200.0) is True


def test_records_survive_through_rows() -> None:
    p = Presence()
    p.on_birth("a", birth(3), 100)
    p.set_acked("a", 42)
    rows, _ = p.take_dirty()
    q = Presence()
    q.load(rows)
    rec = q.get("a")
    assert rec is not None and (rec.state, rec.bdseq, rec.birth_bdseq, rec.acked_eseq) == (
        PresenceState.ONLINE, 3, 3, 42)
    assert q.needs_rebirth("a", 0.0) is False
    q.load([AgentRow(agent="odd", state="confused")])
    assert q.get("odd").state is PresenceState.UNKNOWN  # type: ignore[union-attr]
