"""Outputs and the status LED on gpiozero's mock pins."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import OutputConfig
from agent.inputs.loop import InputLoop
from agent.outputs import BACKLOG_BLINK_S, OFFLINE_BLINK_S, Output, StatusLed
from tests.support import FakeClock, wait_until

SIREN = OutputConfig(name="siren", pin=22, max_on_s=180)
LED = OutputConfig(name="panic-led", pin=23)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, name: str, on: bool) -> None:
        self.seen.append((name, on))


def test_on_and_off_drive_the_pin_and_report_real_changes(mock_factory: MockFactory, clock: FakeClock) -> None:
    changes = Changes()
    out = Output(LED, pin_factory=mock_factory, clock=clock, when_changed=changes)
    try:
        pin = mock_factory.pin(23)
        assert (pin.state, out.is_on, out.state) == (False, False, "off")
        out.on()
        assert (pin.state, out.is_on, out.state) == (True, True, "on")
        out.on()  # already on: no second change
        assert out.tick(clock.advance(1e6)) is None  # no limit: stays on
        assert pin.state is True
        out.off()
        out.off()
        assert (pin.state, out.is_on, out.state) == (False, False, "off")
        assert changes.seen == [("panic-led", True), ("panic-led", False)]
    finally:
        out.close()


def test_active_low_output(mock_factory: MockFactory, clock: FakeClock) -> None:
    out = Output(OutputConfig(name="relay", pin=24, active_high=False), pin_factory=mock_factory, clock=clock)
    try:
        assert mock_factory.pin(24).state is True  # off is high on an active-low relay board
        out.on()
        assert mock_factory.pin(24).state is False
    finally:
        out.close()
    assert mock_factory.pin(24).state is True


def test_on_for_seconds_switches_off_when_the_timer_runs_out(mock_factory: MockFactory, clock: FakeClock) -> None:
    changes = Changes()
    out = Output(SIREN, pin_factory=mock_factory, clock=clock, when_changed=changes)
    try:
        start = clock.now
        out.on(10)
        assert out.tick(clock.now) == pytest.approx(start + 10)
        assert out.tick(clock.advance(9.9)) == pytest.approx(start + 10)
        assert out.is_on
        assert out.tick(clock.advance(0.1)) is None
        assert not out.is_on
        assert mock_factory.pin(22).state is False
        assert changes.seen == [("siren", True), ("siren", False)]
    finally:
        out.close()


def test_max_on_caps_even_an_unlimited_on(mock_factory: MockFactory, clock: FakeClock) -> None:
    out = Output(SIREN, pin_factory=mock_factory, clock=clock)
    try:
        start = clock.now
        out.on()
        assert out.off_at == pytest.approx(start + 180)
        out.tick(clock.advance(179))
        assert out.is_on
        out.tick(clock.advance(1))
        assert not out.is_on
    finally:
        out.close()


def test_switching_on_again_does_not_extend_past_max_on(mock_factory: MockFactory, clock: FakeClock) -> None:
    out = Output(SIREN, pin_factory=mock_factory, clock=clock)
    try:
        start = clock.now
        out.on(60)
        clock.advance(50)
        out.on(60)  # a second alarm: the timer runs from now ...
        assert out.off_at == pytest.approx(start + 110)
        clock.advance(50)
        out.on(120)  # ... but never past max_on_s from when it first came on
        assert out.off_at == pytest.approx(start + 180)
        out.tick(start + 180)
        assert not out.is_on
        out.on(5)  # after it went off, a new alarm may sound it again
        assert out.off_at == pytest.approx(clock.now + 5)
    finally:
        out.close()


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_on_refuses_nonsense_seconds(mock_factory: MockFactory, seconds: float) -> None:
    out = Output(SIREN, pin_factory=mock_factory)
    try:
        with pytest.raises(ValueError, match=rf"^output 'siren': seconds must be greater than 0, not {seconds}$"):
            out.on(seconds)
        assert not out.is_on
    finally:
        out.close()


def test_close_switches_off_silently_and_frees_the_pin(mock_factory: MockFactory, clock: FakeClock) -> None:
    changes = Changes()
    out = Output(SIREN, pin_factory=mock_factory, clock=clock, when_changed=changes)
    out.on()
    out.close()
    out.close()
    assert mock_factory.pin(22).state is False
    assert changes.seen == [("siren", True)]
    with pytest.raises(ValueError, match=r"^output 'siren' is closed$"):
        out.on()
    Output(SIREN, pin_factory=mock_factory).close()  # the pin is free again


def test_output_on_an_mcu_is_not_a_gpio_output(mock_factory: MockFactory) -> None:
    with pytest.raises(ValueError, match=r"^output 'bell' is on mcu 'fe', not a GPIO pin$"):
        Output(OutputConfig(name="bell", mcu="fe", output=0), pin_factory=mock_factory)


def test_timer_through_the_real_loop(mock_factory: MockFactory) -> None:
    changes = Changes()
    loop = InputLoop(reread_s=5.0)  # only the output's own deadline can switch it off in time
    out = Output(SIREN, pin_factory=mock_factory, when_changed=changes, wake=loop.wake)
    loop.add(out)
    loop.start()
    try:
        wait_until(lambda: loop.passes >= 1, timeout=5, message="first pass")
        start = time.monotonic()
        loop.post(lambda: out.on(0.2)).result(timeout=5)
        wait_until(lambda: not out.is_on, timeout=5, message="the siren off")
        elapsed = time.monotonic() - start
        assert 0.2 <= elapsed < 2.0
        assert mock_factory.pin(22).state is False
        assert changes.seen == [("siren", True), ("siren", False)]
    finally:
        loop.stop()
        out.close()


# -- status LED -----------------------------------------------------------------------


def _toggles(pin, since: int) -> int:
    return len(pin.states) - since


def test_status_led_is_steady_when_online_and_empty(mock_factory: MockFactory) -> None:
    led = StatusLed(OutputConfig(name="status-led", pin=24), pin_factory=mock_factory)
    try:
        led.set(True, True)
        pin = mock_factory.pin(24)
        assert led.mode == "steady"
        assert pin.state is True
        marks = len(pin.states)
        led.set(True, True)  # the same again changes nothing
        assert len(pin.states) == marks
    finally:
        led.close()
    assert mock_factory.pin(24).state is False


@pytest.mark.parametrize(("online", "empty", "mode", "pattern"), [
    (False, True, "offline", OFFLINE_BLINK_S),
    (True, False, "backlog", BACKLOG_BLINK_S),
])
def test_status_led_blinks_otherwise(mock_factory: MockFactory, online: bool, empty: bool, mode: str, pattern: tuple[float, float]) -> None:
    led = StatusLed(OutputConfig(name="status-led", pin=24), pin_factory=mock_factory)
    try:
        led.set(online, empty)
        assert led.mode == mode
        pin = mock_factory.pin(24)
        start = len(pin.states)
        wait_until(lambda: _toggles(pin, start) >= 3, timeout=10, message="the LED blinking")
        # pin.states holds (seconds since the previous change, new state): a change
        # to off carries how long it was on. A loaded machine only ever lengthens it.
        on_times = [s.timestamp for prev, s in zip(pin.states[start:], pin.states[start + 1:]) if prev.state and not s.state]
        assert on_times
        assert pattern[0] - 0.02 <= min(on_times) < pattern[0] + 0.3
    finally:
        led.close()
    assert mock_factory.pin(24).state is False


def test_status_led_modes(mock_factory: MockFactory) -> None:
    led = StatusLed(OutputConfig(name="status-led", pin=24), pin_factory=mock_factory)
    try:
        assert led.mode is None
        seen = []
        for online, empty in [(True, True), (False, False), (False, True), (True, False), (True, True)]:
            led.set(online, empty)
            seen.append(led.mode)
        assert seen == ["steady", "offline", "offline", "backlog", "steady"]
    finally:
        led.close()


def test_status_led_on_an_mcu_is_refused(mock_factory: MockFactory) -> None:
    with pytest.raises(ValueError, match=r"^status LED 'status-led' is on mcu 'fe', not a GPIO pin$"):
        StatusLed(OutputConfig(name="status-led", mcu="fe", output=3), pin_factory=mock_factory)


def test_status_led_stops_blinking_when_steady(mock_factory: MockFactory) -> None:
    led = StatusLed(OutputConfig(name="status-led", pin=24), pin_factory=mock_factory)
    try:
        pin = mock_factory.pin(24)
        led.set(False, False)
        start = len(pin.states)
        wait_until(lambda: _toggles(pin, start) >= 2, timeout=10, message="the LED blinking")
        led.set(True, True)
        assert led.mode == "steady"
        assert pin.state is True
        marks = len(pin.states)
        # Showing that nothing happens takes a window: longer than one blink
        # phase, so a blink thread still running would have toggled the pin.
        time.sleep(max(OFFLINE_BLINK_S) + 0.2)
        assert len(pin.states) == marks
        assert pin.state is True
    finally:
        led.close()
