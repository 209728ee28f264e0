"""The assembled agent: mock pins in, real broker out, local reactions in between."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import AgentConfig, parse_config
from agent.inputs.readers.sim import SimulatedRdm6300
from agent.outbox import OutboxError
from agent.runtime import Agent
from agent.simsocket import wire_at_rest
from firmware_bridge.sim import McuSim
from tests.support import Broker, CentralSide, agent_toml, device, free_port, wait_until
from wire import topics
from wire.messages import AgentState, Command, CommandName, CommandResponse, EventKind, StateSnapshot, Telemetry

AGENT = "school-9-gate-1"
WALL_S = 1_750_000_000.0


def _config(tmp_path: Path, port: int, *, tele_s: float = 60.0) -> AgentConfig:
    return parse_config(agent_toml(
        tmp_path / "data", port, agent_id=AGENT, mqtt={"resend_s": 60}, gpio={"pin_factory": None, "status_led": "status-led"},
        telemetry_s=tele_s, devices=(
            device("zone", name="north-fence", pin=17, contact="nc", debounce_ms=20, siren="siren"),
            device("button", name="office-panic", pin=27, hold_ms=100, siren="siren", indicator="panic-led"),
            device("button", name="quiet-panic", pin=5, hold_ms=100, silent=True, indicator="quiet-led"),
            device("output", name="siren", pin=22, max_on_s=180),
            device("output", name="panic-led", pin=23),
            device("output", name="quiet-led", pin=6),
            device("output", name="status-led", pin=24),
        )), source="agent.toml")


class Site:
    def __init__(self, tmp_path: Path, factory: MockFactory, port: int, **kw: float) -> None:
        self.config = _config(tmp_path, port, **kw)
        self.factory = factory
        wire_at_rest(factory, self.config.zones)
        self.agent = Agent(self.config, pin_factory=factory, wall_clock=lambda: WALL_S, clock_synced=lambda: True)

    def stored(self) -> list[tuple[EventKind, str, dict[str, object]]]:
        return [(e.kind, e.source, dict(e.fields)) for e in self.agent.outbox.unacked()]


@pytest.fixture
def site(tmp_path: Path, mock_factory: MockFactory, broker: Broker) -> Iterator[Site]:
    s = Site(tmp_path, mock_factory, broker.port)
    try:
        yield s
    finally:
        s.agent.stop()


def _press(factory: MockFactory, pin: int) -> None:
    factory.pin(pin).drive_low()


def test_a_zone_alarm_sounds_the_siren_with_no_broker_at_all(tmp_path: Path, mock_factory: MockFactory) -> None:
    site = Site(tmp_path, mock_factory, free_port())  # nothing listens there
    agent = site.agent.start()
    try:
        mock_factory.pin(17).drive_high()  # the nc loop opens
        wait_until(lambda: agent.outputs["siren"].is_on, message="the siren")
        assert mock_factory.pin(22).state is True
        wait_until(lambda: len(site.stored()) == 2, message="both events stored")
        assert site.stored() == [
            (EventKind.ALARM, "north-fence", {}),
            (EventKind.OUTPUT, "siren", {"output": "siren", "on": True}),
        ]
        event = agent.outbox.unacked()[0]
        assert (event.eseq, event.boot_id, event.ts, event.clock_synced) == (1, agent.boot_id, int(WALL_S * 1000), True)
        assert len(agent.boot_id) == 16 and int(agent.boot_id, 16) >= 0
        assert agent.snapshot().inputs["north-fence"] == "alarm"
        assert agent.snapshot().outputs == {"siren": True, "panic-led": False, "quiet-led": False}
    finally:
        agent.stop()


def test_a_panic_latches_its_indicator_until_central_acknowledges(site: Site, broker: Broker) -> None:
    central = CentralSide(broker)
    try:
        agent = site.agent.start()
        wait_until(lambda: central.births(), message="birth")
        _press(site.factory, 27)
        wait_until(lambda: [e.kind for e in central.events()][:3] == [EventKind.PANIC, EventKind.OUTPUT, EventKind.OUTPUT],
                   message="panic, siren and indicator")
        panic, *outputs = central.events()[:3]
        assert (panic.source, panic.replayed) == ("office-panic", False)
        assert sorted((e.fields["output"], e.fields["on"]) for e in outputs) == [("panic-led", True), ("siren", True)]
        site.factory.pin(27).drive_high()  # released: still latched
        wait_until(lambda: _last_state(central).latched == ("office-panic",), message="latched in state")
        central.command(Command(CommandName.ALARM_ACK, "t-ack", {"source": "office-panic"}).to_payload())
        wait_until(lambda: central.responses(), message="the answer")
        assert central.responses() == [CommandResponse("t-ack", True)]
        wait_until(lambda: not agent.outputs["panic-led"].is_on, message="indicator off")
        assert agent.outputs["siren"].is_on  # the siren runs to max_on_s, or until told
        wait_until(lambda: _last_state(central).latched == (), message="latch released in state")
        assert _last_state(central).outputs == {"siren": True, "panic-led": False, "quiet-led": False}
    finally:
        central.close()


def _last_state(central: CentralSide) -> StateSnapshot:
    states = central.received(topics.Channel.STATE)
    return StateSnapshot.from_payload(states[-1].payload) if states else StateSnapshot(0, {}, {})


def test_a_silent_panic_never_sounds_the_siren(site: Site) -> None:
    agent = site.agent.start()
    _press(site.factory, 5)
    wait_until(lambda: agent.outputs["quiet-led"].is_on, message="its indicator")
    wait_until(lambda: len(site.stored()) == 2, message="panic and indicator stored")
    assert site.stored() == [
        (EventKind.PANIC, "quiet-panic", {}),
        (EventKind.OUTPUT, "quiet-led", {"output": "quiet-led", "on": True}),
    ]
    assert not agent.outputs["siren"].is_on


def test_output_commands_switch_outputs_and_refuse_unknown_names(site: Site, broker: Broker) -> None:
    central = CentralSide(broker)
    try:
        agent = site.agent.start()
        wait_until(lambda: central.births(), message="birth")
        central.command(Command(CommandName.OUTPUT, "t-1", {"output": "siren", "on": True, "seconds": 30.0}).to_payload())
        wait_until(lambda: agent.outputs["siren"].is_on, message="siren on")
        central.command(Command(CommandName.OUTPUT, "t-2", {"output": "siren", "on": False}).to_payload())
        central.command(Command(CommandName.OUTPUT, "t-3", {"output": "bell", "on": True}).to_payload())
        central.command(Command(CommandName.OUTPUT, "t-4", {"output": "status-led", "on": True}).to_payload())
        central.command(Command(CommandName.OUTPUT, "t-5", {"output": "siren", "on": True, "seconds": 0.0}).to_payload())
        central.command(Command(CommandName.ALARM_ACK, "t-6", {"source": "north-fence"}).to_payload())
        wait_until(lambda: len(central.responses()) == 6, message="six answers")
        assert central.responses() == [
            CommandResponse("t-1", True),
            CommandResponse("t-2", True),
            CommandResponse("t-3", False, "no output is named 'bell'"),
            CommandResponse("t-4", False, "no output is named 'status-led'"),
            CommandResponse("t-5", False, "seconds must be greater than 0, not 0.0"),
            CommandResponse("t-6", False, "no button is named 'north-fence'"),
        ]
        wait_until(lambda: len(central.events()) == 2, message="two output events")
        assert [(e.kind, dict(e.fields)) for e in central.events()] == [
            (EventKind.OUTPUT, {"output": "siren", "on": True}),
            (EventKind.OUTPUT, {"output": "siren", "on": False}),
        ]
    finally:
        central.close()


def test_birth_and_tele_describe_the_agent(tmp_path: Path, mock_factory: MockFactory, broker: Broker) -> None:
    site = Site(tmp_path, mock_factory, broker.port, tele_s=0.2)
    central = CentralSide(broker)
    try:
        agent = site.agent.start()
        wait_until(lambda: len(central.received(topics.Channel.TELE)) >= 2, message="two tele messages")
        birth = central.births()[0]
        assert (birth.bdseq, birth.boot_id, birth.config_hash) == (1, agent.boot_id, site.config.config_hash)
        assert birth.names("zones") == ("north-fence",)
        assert birth.names("buttons") == ("office-panic", "quiet-panic")
        assert birth.names("outputs") == ("siren", "panic-led", "quiet-led", "status-led")
        assert dict(birth.inventory["zones"][0]) == {"name": "north-fence", "pin": 17, "contact": "nc",
                                                     "debounce_ms": 20, "siren": "siren"}
        assert (birth.ts, birth.clock_synced, birth.versions["protocol"]) == (int(WALL_S * 1000), True, "1")
        tele = Telemetry.from_payload(central.received(topics.Channel.TELE)[-1].payload)
        assert (tele.outbox_depth, tele.reconnects, tele.clock_synced, tele.ts) == (0, 0, True, int(WALL_S * 1000))
        assert tele.uptime_s > 0 and tele.mono_ms > 0 and tele.rss_kb is not None and tele.rss_kb > 0
        assert {"outbox_dropped", "outbox_disk_full", "bad_commands", "published_live", "emit_failures",
                "input_loop_errors"} <= set(tele.counters)
    finally:
        central.close()
        site.agent.stop()


def test_the_status_led_is_steady_only_with_central_online_and_nothing_to_send(site: Site, broker: Broker) -> None:
    agent = site.agent
    agent.start()
    assert agent.status_led is not None
    wait_until(lambda: agent.status_led.led.mode == "offline", message="blinking: no central yet")
    central = CentralSide(broker)
    try:
        wait_until(lambda: agent.status_led.led.mode == "steady", message="steady")
        _press(site.factory, 5)
        wait_until(lambda: len(central.events()) >= 2, message="events out")
        wait_until(lambda: agent.status_led.led.mode == "backlog", message="flashing: unacked events")
        central.ack(agent.outbox.last_eseq, agent.outbox.epoch)  # its birth came before this central listened
        wait_until(lambda: agent.status_led.led.mode == "steady", message="steady again")
    finally:
        central.close()


def test_stop_says_disconnected_switches_outputs_off_and_closes_the_outbox(site: Site, broker: Broker) -> None:
    central = CentralSide(broker)
    try:
        agent = site.agent.start()
        wait_until(lambda: central.births(), message="birth")
        agent.loop.post(lambda: agent.outputs["siren"].on()).result(timeout=5)
        assert site.factory.pin(22).state is True
        agent.stop()
        assert site.factory.pin(22).state is False
        wait_until(lambda: central.statuses()[-1].state is AgentState.DISCONNECTED, message="the goodbye")
        with pytest.raises(OutboxError, match="the outbox is closed$"):
            agent.outbox.append(EventKind.ALARM, "x", ts=0, mono_ms=0, clock_synced=False, boot_id="x")
    finally:
        central.close()


def test_a_new_agent_process_continues_numbering_with_a_new_boot_id(tmp_path: Path, mock_factory: MockFactory) -> None:
    first = Site(tmp_path, mock_factory, free_port())
    first.agent.emit(EventKind.FAULT, "test", code="x", detail="")
    boot = first.agent.boot_id
    first.agent.stop()
    mock_factory.reset()
    second = Site(tmp_path, mock_factory, free_port())
    try:
        second.agent.emit(EventKind.FAULT, "test", code="y", detail="")
        events = second.agent.outbox.unacked()
        assert [(e.eseq, e.boot_id) for e in events] == [(1, boot), (2, second.agent.boot_id)]
        assert second.agent.boot_id != boot
    finally:
        second.agent.stop()


def test_a_card_on_a_serial_reader_becomes_a_scan_event(tmp_path: Path, mock_factory: MockFactory) -> None:
    module = SimulatedRdm6300()  # a module on a real pseudo-terminal; the agent opens its path
    try:
        config = parse_config(agent_toml(tmp_path / "data", free_port(), agent_id=AGENT, gpio={"pin_factory": None},
                                         devices=(device("reader", name="gate-1", port=module.path, protocol="rdm6300"),)))
        agent = Agent(config, pin_factory=mock_factory, wall_clock=lambda: WALL_S).start()
        try:
            wait_until(lambda: agent.snapshot().inputs["gate-1"] == "up", message="the reader's port open")
            module.tap("67003B51C6")
            wait_until(lambda: agent.outbox.depth == 1, message="the scan stored")
            scan = agent.outbox.unacked()[0]
            assert (scan.kind, scan.source, dict(scan.fields)) == (EventKind.SCAN, "gate-1", {"tag": "67003B51C6", "fmt": "em4100"})
            assert agent.telemetry().counters["gate-1.scans"] == 1
        finally:
            agent.stop()
    finally:
        module.close()


def test_inputs_and_outputs_behind_a_microcontroller_get_the_same_reactions(
    tmp_path: Path, mock_factory: MockFactory, broker: Broker,
) -> None:
    with McuSim(link=tmp_path / "ttyMCU") as mcu:
        config = parse_config(agent_toml(tmp_path / "data", broker.port, agent_id=AGENT, gpio={"pin_factory": None}, devices=(
            device("mcu", name="front-end", port=mcu.path),
            device("zone", name="east-wall", mcu="front-end", input=1, siren="siren"),
            device("button", name="office-panic", mcu="front-end", input=0, hold_ms=100, indicator="panic-led"),
            device("output", name="siren", mcu="front-end", output=0, max_on_s=60),
            device("output", name="panic-led", mcu="front-end", output=1),
        )))
        central = CentralSide(broker)
        agent = Agent(config, pin_factory=mock_factory).start()
        try:
            wait_until(lambda: agent.snapshot().inputs == {"east-wall": "normal", "office-panic": "idle"},
                       message="the mcu's first sync")
            mcu.set_zone(1, "tamper-cut")
            wait_until(lambda: agent.outputs["siren"].is_on, message="the siren on the mcu")
            wait_until(lambda: any(f.get("output") == 0 and f.get("on") for f in mcu.received("out")),
                       message="the out frame at the mcu")
            mcu.hold(0, 0.3)
            wait_until(lambda: agent.outputs["panic-led"].is_on, message="the indicator")
            assert agent.snapshot().latched == ("office-panic",)
            central.command(Command(CommandName.ALARM_ACK, "t-ack", {"source": "office-panic"}).to_payload())
            wait_until(lambda: not agent.outputs["panic-led"].is_on, message="indicator off after alarm-ack")
            assert agent.snapshot().latched == ()
            expected = [
                (EventKind.TAMPER, "east-wall", {"state": "tamper-cut"}),
                (EventKind.OUTPUT, "siren", {"output": "siren", "on": True}),
                (EventKind.PANIC, "office-panic", {}),
                (EventKind.OUTPUT, "panic-led", {"output": "panic-led", "on": True}),
                (EventKind.OUTPUT, "panic-led", {"output": "panic-led", "on": False}),
            ]
            wait_until(lambda: _stored(agent) == expected, message=f"the five events: {expected}")
        finally:
            agent.stop()
            central.close()


def _stored(agent: Agent) -> list[tuple[EventKind, str, dict[str, object]]]:
    return [(e.kind, e.source, dict(e.fields)) for e in agent.outbox.unacked()]


def test_a_latched_panic_relights_its_indicator_after_a_restart_until_central_acknowledges(
    tmp_path: Path, mock_factory: MockFactory, broker: Broker,
) -> None:
    """Central's alarm is still open: a dark lamp would tell whoever pressed that nobody came."""
    central = CentralSide(broker)
    site = Site(tmp_path, mock_factory, broker.port)
    try:
        agent = site.agent.start()
        wait_until(central.births, message="the first process's birth")
        _press(site.factory, 27)
        wait_until(lambda: agent.outputs["panic-led"].is_on, message="the indicator")
        panic = agent.outbox.unacked()[0]
        site.factory.pin(27).drive_high()
        agent.stop()  # a clean stop switches every output off
        assert not agent.outputs["panic-led"].is_on

        site = Site(tmp_path, mock_factory, broker.port)
        agent = site.agent.start()
        # Lit again at start, broker or no broker, and latched in the state central sees.
        assert agent.outputs["panic-led"].is_on and mock_factory.pin(23).state is True
        assert agent.buttons["office-panic"].state == "latched"
        assert not agent.outputs["siren"].is_on  # only the latch comes back, not the siren
        assert agent.memory.latches()["office-panic"].eseq == panic.eseq
        # The new process's birth: only then does it listen for commands.
        wait_until(lambda: len(central.births()) == 2 and _last_state(central).latched == ("office-panic",),
                   message="the latch in the retained state")
        # Central says nothing: it stays lit.
        central.command(Command(CommandName.PING, "t-ping").to_payload())
        wait_until(lambda: central.responses(), message="the ping answered")
        assert agent.outputs["panic-led"].is_on
        central.command(Command(CommandName.ALARM_ACK, "t-ack", {"source": "office-panic"}).to_payload())
        wait_until(lambda: not agent.outputs["panic-led"].is_on, message="the indicator off on central's alarm-ack")
        assert agent.buttons["office-panic"].state == "idle"
        agent.stop()

        site = Site(tmp_path, mock_factory, broker.port)
        agent = site.agent.start()
        assert not agent.outputs["panic-led"].is_on and agent.memory.latches() == {}
    finally:
        site.agent.stop()
        central.close()


def test_an_unreadable_outbox_no_longer_keeps_the_agent_down(tmp_path: Path, mock_factory: MockFactory) -> None:
    """A new outbox is a new epoch, which central tells apart; the old file is kept, and central told why."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "outbox.db").write_bytes(b"not sqlite" * 100)
    site = Site(tmp_path, mock_factory, free_port())
    try:
        [aside] = (tmp_path / "data").glob("outbox.db.unreadable-*")
        assert site.stored() == [(EventKind.FAULT, "outbox", {
            "code": "outbox-renewed", "detail": f"the outbox could not be read; kept as {aside.name}; a new epoch begins"})]
        assert site.agent.outbox.unacked()[0].eseq == 1
        assert site.agent.birth(1).epoch == site.agent.outbox.epoch != ""
    finally:
        site.agent.stop()
