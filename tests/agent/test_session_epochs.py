"""The session against a real Mosquitto: epochs, replay answers with last and gone, txns answered once, logs a
sender cannot forge or flood."""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import pytest

from agent.memory import Memory
from tests.agent.conftest import Harness, wait_until
from tests.support import AGENT_ID as AGENT
from tests.support import Broker, CentralSide
from wire import topics
from wire.messages import Command, CommandName, CommandResponse, EventKind


def test_events_and_births_carry_the_epoch_and_an_ack_of_another_is_ignored(harness: Harness,
                                                                             central: CentralSide) -> None:
    harness.session().start()
    epoch = wait_until(central.births, message="birth")[-1].epoch
    assert epoch == harness.outbox.epoch != ""
    for _ in range(3):
        harness.append()
    wait_until(lambda: len(central.events()) == 3, message="events")
    assert {e.epoch for e in central.events()} == {epoch}
    # Central's ack point of the outbox this one replaced, and one from a central that predates epochs.
    central.ack(3, "the-old-sd-card")
    central.ack(3, "")
    wait_until(lambda: harness.outbox.counters["outbox_acks_other_epoch"] == 2, message="both acks counted")
    assert harness.outbox.depth == 3
    central.ack(2)
    wait_until(lambda: harness.outbox.depth == 1, message="the ack of this epoch")


def test_a_replay_is_answered_with_last_and_gone_and_only_what_is_held_is_sent(tmp_path: Path, broker: Broker,
                                                                                central: CentralSide) -> None:
    harness = Harness(tmp_path, broker)
    harness.outbox.close()
    from agent.outbox import Outbox

    harness.outbox = Outbox(tmp_path / "bounded.db", max_events=2, warn_fraction=1.0)
    try:
        harness.append(EventKind.ALARM)  # 1
        harness.append(EventKind.ALARM)  # 2, and the outbox-filling fault 3
        assert harness.outbox.append(EventKind.RESTORE, "north-fence", {}, ts=1, mono_ms=1, clock_synced=False,
                                     boot_id="b") is None  # 4 gone, the outbox-full fault 5
        assert harness.outbox.append(EventKind.RESTORE, "north-fence", {}, ts=1, mono_ms=1, clock_synced=False,
                                     boot_id="b") is None  # 6 gone
        harness.append(EventKind.PANIC, "office-panic")  # 7
        session = harness.session().start()
        wait_until(lambda: len(central.events()) == 5, message="the five events held")
        assert sorted({e.eseq for e in central.events()}) == [1, 2, 3, 5, 7]
        mark = central.mark()
        central.command(Command(CommandName.REPLAY, "t-r", {"from": 4, "epoch": harness.outbox.epoch}).to_payload())
        wait_until(lambda: central.responses(), message="the answer")
        assert central.responses() == [CommandResponse("t-r", True, last=7, gone=((4, 4), (6, 6)))]
        wait_until(lambda: [e.eseq for e in central.events(mark)] == [5, 7], message="what is held, again")
        # Central acks past the gone ranges once it has recorded them: they leave the outbox.
        central.ack(7)
        wait_until(lambda: harness.outbox.depth == 0, message="all acked")
        assert harness.outbox.gone == ()
        assert session.connected
    finally:
        harness.close()


def test_a_replay_of_another_epoch_is_refused_naming_both(harness: Harness, central: CentralSide) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    harness.append()
    wait_until(lambda: central.events(), message="the event")
    mark = central.mark()
    central.command(Command(CommandName.REPLAY, "t-old", {"from": 1, "epoch": "0ld"}).to_payload())
    central.command(Command(CommandName.REPLAY, "t-none", {"from": 1}).to_payload())
    wait_until(lambda: len(central.responses()) == 2, message="both answers")
    epoch = harness.outbox.epoch
    assert central.responses() == [
        CommandResponse("t-old", False, f"replay of epoch '0ld': this outbox's epoch is {epoch!r}"),
        CommandResponse("t-none", False, f"replay of epoch '': this outbox's epoch is {epoch!r}"),
    ]
    assert central.events(mark) == []  # nothing sent again for another epoch


def test_a_command_that_comes_again_is_answered_again_not_done_twice_even_after_a_restart(
    tmp_path: Path, harness: Harness, central: CentralSide,
) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    on = Command(CommandName.OUTPUT, "t-on", {"output": "siren", "on": True, "seconds": 5.0}).to_payload()
    central.command(on)
    wait_until(lambda: len(central.responses()) == 1, message="the first answer")
    harness.command_error = "no output is named 'siren'"
    central.command(Command(CommandName.OUTPUT, "t-refused", {"output": "siren", "on": True}).to_payload())
    wait_until(lambda: len(central.responses()) == 2, message="the refusal")
    harness.command_error = None
    central.command(on)
    wait_until(lambda: len(central.responses()) == 3, message="three answers")
    session.stop()
    # A new process: a new session and a new Memory over the same file.
    harness.memory.close()
    harness.memory = Memory(tmp_path / "memory.db")
    harness.sessions.clear()
    session = harness.session().start()
    wait_until(lambda: len(central.births()) == 2, message="connected again (its birth follows its subscriptions)")
    central.command(Command(CommandName.OUTPUT, "t-refused", {"output": "siren", "on": True}).to_payload())
    central.command(on)
    central.command(Command(CommandName.OUTPUT, "t-new", {"output": "siren", "on": False}).to_payload())
    wait_until(lambda: len(central.responses()) == 6, message="six answers")
    refused = CommandResponse("t-refused", False, "no output is named 'siren'")
    assert central.responses() == [CommandResponse("t-on", True), refused, CommandResponse("t-on", True),
                                   refused, CommandResponse("t-on", True), CommandResponse("t-new", True)]
    assert [c.txn for c in harness.commands] == ["t-on", "t-refused", "t-new"]
    assert session.counters["commands_repeated"] == 2


def test_the_answers_remembered_are_bounded_oldest_out(tmp_path: Path) -> None:
    with_file = tmp_path / "memory.db"
    memory = Memory(with_file, txns_kept=3)
    for i in range(5):
        memory.answered(f"t-{i}", f"r-{i}".encode())
    memory.answered("t-4", b"another answer")  # the first answer stands
    memory.close()
    memory = Memory(with_file, txns_kept=3)
    try:
        assert [memory.answer(f"t-{i}") for i in range(5)] == [None, None, b"r-2", b"r-3", b"r-4"]
        memory.answered("t-5", b"r-5")
        assert memory.answer("t-2") is None and memory.answer("t-5") == b"r-5"
    finally:
        memory.close()


def test_an_unreadable_memory_is_moved_aside_and_begun_again(tmp_path: Path) -> None:
    (tmp_path / "memory.db").write_bytes(b"not sqlite" * 100)
    memory = Memory(tmp_path / "memory.db")
    try:
        assert memory.latches() == {} and memory.answer("t") is None
        assert len(list(tmp_path.glob("memory.db.unreadable-*"))) == 1
    finally:
        memory.close()


def test_lines_from_what_a_sender_sends_are_escaped_and_a_flood_is_held_back(
    harness: Harness, central: CentralSide, caplog: pytest.LogCaptureFixture,
) -> None:
    session = harness.session().start()
    wait_until(lambda: session.connected and central.births(), message="connected")
    caplog.set_level(logging.INFO, logger="agent.session")
    forged = "t\nCRITICAL agent.session: forged line"
    central.command(Command(CommandName.PING, forged).to_payload())
    central.command(msgpack.packb({"cmd": "explode\nCRITICAL forged", "txn": "t-2"}))
    for i in range(200):
        central.client.publish(topics.ack(AGENT), msgpack.packb({"eseq": -1 - i}), qos=1)
    central.command(Command(CommandName.PING, "t-last").to_payload())
    wait_until(lambda: [r.txn for r in central.responses()][-1:] == ["t-last"], message="the last answer")
    wait_until(lambda: session.counters["bad_acks"] == 200, message="every bad ack counted")
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.session"]
    assert not [line for line in lines if "\n" in line]
    assert any(repr(forged) in line for line in lines)
    assert any("unknown cmd 'explode\\nCRITICAL forged'" in line for line in lines)
    assert len([line for line in lines if line.startswith("bad ack dropped")]) == 5
    assert session.counters["log_lines_held"] == 195
