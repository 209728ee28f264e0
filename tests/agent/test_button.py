"""Emergency buttons through gpiozero's mock pins."""

from __future__ import annotations

import time
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import ButtonConfig
from agent.inputs.button import MIN_HOLD_S, EmergencyButton
from agent.inputs.loop import InputLoop
from agent.simsocket import ClosedLoopPin
from tests.support import FakeClock, Recorder, wait_until
from wire.messages import EventKind

PANIC = (EventKind.PANIC, "office-panic", {})
CONFIG = ButtonConfig(name="office-panic", pin=27, hold_ms=1500)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_button(factory: MockFactory, clock: FakeClock, sink: Recorder, config: ButtonConfig = CONFIG, **kw: Any) -> EmergencyButton:
    return EmergencyButton(config, emit=sink, pin_factory=factory, clock=clock, **kw)


def test_button_reads_high_at_rest(mock_factory: MockFactory, clock: FakeClock) -> None:
    button = make_button(mock_factory, clock, Recorder())
    try:
        assert mock_factory.pin(27).state is True
        assert button.state == "idle"
        assert button.tick(clock.now) is None
    finally:
        button.close()


def test_a_brush_does_nothing(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        pin = mock_factory.pin(27)
        pin.drive_low()
        assert button.tick(clock.now) == pytest.approx(clock.now + 1.5)
        assert button.state == "pressed"
        clock.advance(1.4)
        pin.drive_high()
        button.tick(clock.now)
        button.tick(clock.advance(10))
        assert sink.events == []
        assert button.state == "idle"
        assert not button.latched
    finally:
        button.close()


def test_panic_fires_when_the_hold_is_reached_while_still_held_and_only_once(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    panics: list[str] = []
    button.when_panic = lambda b: panics.append(b.name)
    try:
        pin = mock_factory.pin(27)
        pin.drive_low()
        button.tick(clock.now)
        button.tick(clock.advance(1.499))
        assert sink.events == []
        button.tick(clock.advance(0.001))
        assert sink.events == [PANIC]  # still held: it fired at the hold, not at the release
        assert panics == ["office-panic"]
        assert button.state == "latched"
        for _ in range(100):  # held for a long time
            button.tick(clock.advance(1.0))
        pin.drive_high()
        button.tick(clock.advance(0.1))
        assert sink.events == [PANIC]
        assert button.latched
    finally:
        button.close()


def test_latch_holds_until_acknowledged(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        assert button.acknowledge() is False  # nothing to release
        pin = mock_factory.pin(27)
        pin.drive_low()
        button.tick(clock.now)
        button.tick(clock.advance(1.5))
        pin.drive_high()
        button.tick(clock.advance(3600))
        assert button.state == "latched"
        assert button.acknowledge() is True
        assert button.state == "idle"
        assert not button.latched
        assert button.acknowledge() is False
    finally:
        button.close()


def test_acknowledge_while_still_held_gives_no_second_panic(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        mock_factory.pin(27).drive_low()
        button.tick(clock.now)
        button.tick(clock.advance(1.5))
        assert button.acknowledge() is True
        assert button.state == "pressed"
        button.tick(clock.advance(5))
        assert sink.events == [PANIC]
    finally:
        button.close()


def test_a_new_press_and_hold_is_a_new_panic_even_while_latched(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        pin = mock_factory.pin(27)
        for _ in range(2):
            pin.drive_low()
            button.tick(clock.now)
            button.tick(clock.advance(1.5))
            pin.drive_high()
            button.tick(clock.advance(1))
        assert sink.events == [PANIC, PANIC]
        assert button.state == "latched"
    finally:
        button.close()


def test_long_press_seen_only_after_release_still_panics_once(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        pin = mock_factory.pin(27)
        pin.drive_low()
        clock.advance(2.0)
        pin.drive_high()  # both edges queued before the loop got round to a tick
        button.tick(clock.advance(0.5))
        button.tick(clock.advance(0.5))
        assert sink.events == [PANIC]
    finally:
        button.close()


def test_zero_hold_still_needs_a_real_press(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink, ButtonConfig(name="office-panic", pin=27, hold_ms=0))
    try:
        pin = mock_factory.pin(27)
        pin.drive_low()  # release bounce: a few ms of contact
        clock.advance(0.005)
        pin.drive_high()
        button.tick(clock.advance(0.1))
        assert sink.events == []
        pin.drive_low()
        button.tick(clock.now)
        button.tick(clock.advance(MIN_HOLD_S / 2))
        assert sink.events == []
        button.tick(clock.advance(MIN_HOLD_S))
        assert sink.events == [PANIC]
    finally:
        button.close()


def test_button_held_at_boot_panics_after_the_hold(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    # A pin held low against its pull-up from the start (a stuck or held button).
    mock_factory.pin(27, pin_class=ClosedLoopPin)
    button = make_button(mock_factory, clock, sink)
    try:
        assert button.state == "pressed"
        button.tick(clock.advance(1.4))
        assert sink.events == []
        button.tick(clock.advance(1.5))
        assert sink.events == [PANIC]
    finally:
        button.close()


def test_missed_release_is_caught_by_the_reread(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    button = make_button(mock_factory, clock, sink)
    try:
        pin = mock_factory.pin(27)
        pin.drive_low()
        button.tick(clock.advance(0.5))
        pin.edges = "none"
        pin.drive_high()  # the release edge is lost
        button.tick(clock.advance(0.1))
        assert button.state == "idle"
        button.tick(clock.advance(5))
        assert sink.events == []
    finally:
        button.close()


def test_edges_only_record_and_wake(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    wakes: list[int] = []
    button = make_button(mock_factory, clock, sink, ButtonConfig(name="office-panic", pin=27, hold_ms=0), wake=lambda: wakes.append(1))
    try:
        mock_factory.pin(27).drive_low()
        clock.advance(5)
        mock_factory.pin(27).drive_high()
        assert wakes == [1, 1]
        assert sink.events == []
    finally:
        button.close()


def test_button_on_an_mcu_is_not_a_gpio_button(mock_factory: MockFactory) -> None:
    with pytest.raises(ValueError, match=r"^button 'b' is on mcu 'fe', not a GPIO pin$"):
        EmergencyButton(ButtonConfig(name="b", mcu="fe", input=2), emit=Recorder(), pin_factory=mock_factory)


def test_panic_through_the_real_loop_fires_at_the_hold(mock_factory: MockFactory) -> None:
    config = ButtonConfig(name="office-panic", pin=27, hold_ms=200)
    sink = Recorder()
    loop = InputLoop(reread_s=5.0)  # long: the hold deadline, not the reread, must wake it
    button = EmergencyButton(config, emit=sink, wake=loop.wake, pin_factory=mock_factory)
    loop.add(button)
    loop.start()
    try:
        pin = mock_factory.pin(27)
        start = time.monotonic()
        pin.drive_low()
        wait_until(lambda: sink.events, timeout=5, message="the panic")
        held = sink.times[0] - start
        assert sink.events == [PANIC]
        assert held >= 0.2
        assert held < 2.0
        assert pin.state is False  # it fired while the button was still down
        assert loop.post(lambda: button.state).result(timeout=5) == "latched"
        pin.drive_high()
        assert loop.post(button.acknowledge).result(timeout=5) is True
        assert sink.events == [PANIC]
    finally:
        loop.stop()
        button.close()
