"""Wire-valid but extreme values (64-bit boundaries) through the real ingest: nothing in central may fail on them.

The decoders take any eseq up to 2**63 - 1; what central derives from one (the
next eseq, a lost range's size, a counter's total) must still fit SQLite's
signed 64-bit INTEGER, or the batch holding it fails, unacked, every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import msgpack
import pytest

from central.ingest import Ingest
from central.store import Store
from tests.support import Broker, FakeAgent, make_ingest, wait_until
from wire import topics
from wire.codec import pack
from wire.messages import CommandName

INT64_MAX = 2**63 - 1


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "central.db")


@pytest.fixture
def agents(broker: Broker) -> Iterator[list[FakeAgent]]:
    made = [FakeAgent(broker, f"gate-{n}") for n in (1, 2, 3)]
    try:
        yield made
    finally:
        for a in made:
            a.close()


def give_up_quickly(broker: Broker, store: Store) -> Ingest:
    ing = make_ingest(broker, store, gap_grace_s=0.05, replay_interval_s=0.05)
    ing.start()
    assert ing.wait_connected(10)
    return ing


def jump_to_the_last_eseq(agents: list[FakeAgent]) -> None:
    """eseq 1, then 2**63 - 1; asked for a replay, each agent answers that it made 2**63 - 1 and no longer holds
    anything between: central records the range as lost and acks 2**63 - 1."""
    for a in agents:
        a.online()
        a.event(1)
    for a in agents:
        a.event(INT64_MAX, synced=False, ts=0, mono_ms=INT64_MAX)
    for a in agents:
        wait_until(lambda a=a: a.command_list(CommandName.REPLAY), message="a replay request")
        txn = a.command_list(CommandName.REPLAY)[0].txn
        a.publish(topics.cmd_resp(a.agent_id), pack({"txn": txn, "ok": True, "last": INT64_MAX,
                                                     "gone": [[2, INT64_MAX - 1]]}))
    wait_until(lambda: all(a.acked(INT64_MAX) for a in agents), message="the gone range recorded, the last eseq acked")


def test_lost_ranges_past_64_bits_in_one_batch_cannot_stop_the_store(broker: Broker, store: Store,
                                                                    agents: list[FakeAgent]) -> None:
    """Two such agents lose 2 * (2**63 - 3) eseqs together: the counter stops at 2**63 - 1, the batch commits."""
    ing = give_up_quickly(broker, store)
    try:
        jump_to_the_last_eseq(agents[:2])
        agents[2].online()
        agents[2].event(1)
        wait_until(lambda: agents[2].acked(1))
        assert ing.counters.get("store_errors", 0) == 0
    finally:
        ing.stop()
    assert store.counters()["events_lost"] == INT64_MAX


def test_an_agent_at_the_last_eseq_is_still_stored_after_a_restart(broker: Broker, store: Store,
                                                                   agents: list[FakeAgent]) -> None:
    """Central restarts with an ack of 2**63 - 1 held: its ledger starts there and must not look past it (nor
    fail the batch, and every other agent's events in it, on every try)."""
    first, other = agents[0], agents[2]
    ing = give_up_quickly(broker, store)
    try:
        jump_to_the_last_eseq([first])
    finally:
        ing.stop()
    assert store.get_agent(first.agent_id).acked_eseq == INT64_MAX  # type: ignore[union-attr]
    second = make_ingest(broker, store)
    try:
        second.start()
        assert second.wait_connected(10)
        first.event(INT64_MAX, replayed=True, synced=False, ts=0, mono_ms=INT64_MAX)  # its ack was lost
        other.online()
        other.event(1)
        wait_until(lambda: other.acked(1) and first.acks.count(INT64_MAX) >= 2, message="acks after the restart")
        assert second.counters.get("store_errors", 0) == 0
        assert [e.eseq for e in store.list_events(agent=first.agent_id)] == [1, INT64_MAX]
    finally:
        second.stop()


def _deep_birth(depth: int) -> bytes:
    """A birth whose one zone carries a list nested ``depth`` deep: a few hundred bytes msgpack decodes fine."""
    def key(k: str, v: bytes) -> bytes:
        return msgpack.packb(k) + v

    item = b"\x82" + key("name", msgpack.packb("north-fence")) + key("deep", b"\x91" * depth + msgpack.packb("x"))
    return (b"\x84" + key("bdseq", msgpack.packb(1)) + key("boot_id", msgpack.packb("boot-a"))
            + key("fw", msgpack.packb("1")) + key("inventory", b"\x81" + key("zones", b"\x91" + item)))


def test_a_birth_nested_too_deep_for_json_is_refused_not_stored(broker: Broker, store: Store,
                                                                 agents: list[FakeAgent]) -> None:
    """Central writes a birth into the agents table as JSON; one nested 900 deep made that write fail, and
    the agent's row stayed to be written with every later batch: none committed, nothing acked, for anyone."""
    hostile, other = agents[0], agents[1]
    ing = make_ingest(broker, store)
    ing.start()
    try:
        assert ing.wait_connected(10)
        hostile.publish(topics.birth(hostile.agent_id), _deep_birth(900))
        other.online()
        other.event(1)
        wait_until(lambda: other.acked(1), message="the other agent's ack")
        wait_until(lambda: ing.counters.get("bad_message.wrong_types", 0) == 1, message="the birth refused")
        assert ing.counters.get("store_errors", 0) == 0
    finally:
        ing.stop()
