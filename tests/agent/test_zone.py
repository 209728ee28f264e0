"""GPIO zones through gpiozero's mock pins, and the input loop that ticks them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import ZoneConfig
from agent.events import FaultCode
from agent.inputs.loop import InputLoop
from agent.inputs.zone import FLAP_MAX_TRANSITIONS, FLAP_WINDOW_S, Zone
from agent.simsocket import wire_at_rest
from tests.support import FakeClock, Recorder, wait_until
from wire.messages import EventKind

NC = ZoneConfig(name="north-fence", pin=17, contact="nc", debounce_ms=50)
NO = ZoneConfig(name="gate-contact", pin=18, contact="no", debounce_ms=50)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_zone(factory: MockFactory, config: ZoneConfig, clock: FakeClock, sink: Recorder, **kw: Any) -> Zone:
    wire_at_rest(factory, [config])
    return Zone(config, emit=sink, pin_factory=factory, clock=clock, **kw)


def test_nc_loop_opening_is_an_alarm_and_closing_a_restore(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    try:
        assert zone.state == "normal"
        assert zone.tick(clock.now) is None
        pin = mock_factory.pin(17)
        pin.drive_high()  # the loop is cut
        assert zone.tick(clock.now) == pytest.approx(clock.now + 0.05)
        assert zone.tick(clock.advance(0.049)) is not None
        assert sink.events == []
        zone.tick(clock.advance(0.001))
        assert sink.events == [(EventKind.ALARM, "north-fence", {})]
        assert zone.state == "alarm"
        pin.drive_low()
        zone.tick(clock.advance(0.01))
        zone.tick(clock.advance(0.05))
        assert sink.events == [(EventKind.ALARM, "north-fence", {}), (EventKind.RESTORE, "north-fence", {})]
        assert zone.state == "normal"
    finally:
        zone.close()


def test_no_contact_closing_is_an_alarm(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NO, clock, sink)
    try:
        assert mock_factory.pin(18).state is True  # the pull-up holds it high at rest
        assert zone.state == "normal"
        mock_factory.pin(18).drive_low()
        zone.tick(clock.now)
        zone.tick(clock.advance(0.05))
        assert sink.events == [(EventKind.ALARM, "gate-contact", {})]
        mock_factory.pin(18).drive_high()
        zone.tick(clock.now)
        zone.tick(clock.advance(0.05))
        assert sink.events == [(EventKind.ALARM, "gate-contact", {}), (EventKind.RESTORE, "gate-contact", {})]
    finally:
        zone.close()


def test_bounce_shorter_than_debounce_is_ignored(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    try:
        pin = mock_factory.pin(17)
        for _ in range(5):
            pin.drive_high()
            clock.advance(0.01)
            pin.drive_low()
            clock.advance(0.01)
        zone.tick(clock.now)
        zone.tick(clock.advance(1.0))
        assert sink.events == []
        assert zone.state == "normal"
    finally:
        zone.close()


def test_loop_open_at_boot_is_reported_after_the_debounce(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    # A plain mock pin follows its pull-up: an nc loop that is open (nothing wired).
    zone = Zone(NC, emit=sink, pin_factory=mock_factory, clock=clock)
    try:
        assert zone.state == "unknown"
        assert zone.tick(clock.now) == pytest.approx(clock.now + 0.05)
        zone.tick(clock.advance(0.05))
        assert sink.events == [(EventKind.ALARM, "north-fence", {})]
        assert zone.state == "alarm"
        zone.tick(clock.advance(10))
        assert len(sink.events) == 1
    finally:
        zone.close()


def test_closed_loop_at_boot_reports_nothing(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    try:
        for _ in range(3):
            zone.tick(clock.advance(1))
        assert sink.events == []
        assert zone.state == "normal"
    finally:
        zone.close()


def test_open_at_boot_that_closes_within_the_debounce_reports_nothing(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = Zone(NC, emit=sink, pin_factory=mock_factory, clock=clock)
    try:
        clock.advance(0.02)
        mock_factory.pin(17).drive_low()
        zone.tick(clock.now)
        zone.tick(clock.advance(0.1))
        assert sink.events == []
        assert zone.state == "normal"
    finally:
        zone.close()


def test_missed_edge_is_caught_by_the_reread(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    try:
        pin = mock_factory.pin(17)
        pin.edges = "none"  # the edge interrupt is lost; the level changes all the same
        pin.drive_high()
        zone.tick(clock.advance(1.0))  # the periodic pass reads the pin
        zone.tick(clock.advance(0.05))
        assert sink.events == [(EventKind.ALARM, "north-fence", {})]
    finally:
        zone.close()


def test_flapping_zone_reports_every_transition_and_one_fault(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    try:
        pin = mock_factory.pin(17)
        transitions = FLAP_MAX_TRANSITIONS + 4
        for i in range(transitions):
            pin.drive_high() if i % 2 == 0 else pin.drive_low()
            zone.tick(clock.now)
            zone.tick(clock.advance(0.1))
            clock.advance(1.0)
        kinds = [kind for kind, _, _ in sink.events]
        fault = (EventKind.FAULT, "north-fence", {"code": FaultCode.ZONE_FLAPPING, "detail": f"more than {FLAP_MAX_TRANSITIONS} changes within {FLAP_WINDOW_S:g} s"})
        assert sink.events.count(fault) == 1
        # The fault follows the transition that crossed the limit, and every transition is still there.
        assert kinds.index(EventKind.FAULT) == FLAP_MAX_TRANSITIONS + 1
        transitions_seen = [k for k in kinds if k != EventKind.FAULT]
        assert transitions_seen == [EventKind.ALARM, EventKind.RESTORE] * (transitions // 2)
        # After a quiet window the detector re-arms: a second episode is reported again.
        clock.advance(FLAP_WINDOW_S + 1)
        for i in range(transitions):
            pin.drive_high() if i % 2 == 0 else pin.drive_low()
            zone.tick(clock.now)
            zone.tick(clock.advance(0.1))
        assert sink.events.count(fault) == 2
    finally:
        zone.close()


def test_when_tripped_and_when_restored_are_called(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    calls: list[tuple[str, str]] = []
    zone.when_tripped = lambda z: calls.append(("tripped", z.name))
    zone.when_restored = lambda z: calls.append(("restored", z.name))
    try:
        mock_factory.pin(17).drive_high()
        zone.tick(clock.now)
        zone.tick(clock.advance(0.05))
        mock_factory.pin(17).drive_low()
        zone.tick(clock.now)
        zone.tick(clock.advance(0.05))
        assert calls == [("tripped", "north-fence"), ("restored", "north-fence")]
    finally:
        zone.close()


def test_edge_wakes_the_loop_and_only_records(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    wakes: list[str] = []
    zone = make_zone(mock_factory, NC, clock, sink, wake=lambda: wakes.append(threading.current_thread().name))
    try:
        mock_factory.pin(17).drive_high()
        assert wakes == [threading.current_thread().name]
        assert sink.events == []  # nothing is emitted from the callback thread
    finally:
        zone.close()


def test_zone_on_an_mcu_is_not_a_gpio_zone(mock_factory: MockFactory) -> None:
    config = ZoneConfig(name="east-wall", mcu="front-end", input=1)
    with pytest.raises(ValueError, match=r"^zone 'east-wall' is on mcu 'front-end', not a GPIO pin$"):
        Zone(config, emit=Recorder(), pin_factory=mock_factory)


def test_close_releases_the_pin_and_stops_ticking(mock_factory: MockFactory, clock: FakeClock) -> None:
    sink = Recorder()
    zone = make_zone(mock_factory, NC, clock, sink)
    zone.close()
    zone.close()
    mock_factory.pin(17).drive_high()
    assert zone.tick(clock.advance(1)) is None
    again = Zone(NC, emit=sink, pin_factory=mock_factory, clock=clock)  # the pin is free again
    again.close()
    assert sink.events == []


# -- through the real input loop -------------------------------------------------------


def test_alarm_goes_out_on_the_next_pass_with_zero_debounce(mock_factory: MockFactory) -> None:
    config = ZoneConfig(name="north-fence", pin=17, contact="nc", debounce_ms=0)
    sink = Recorder()
    loop = InputLoop(reread_s=5.0)  # long: only the wake can make this quick
    wire_at_rest(mock_factory, [config])
    zone = Zone(config, emit=sink, wake=loop.wake, pin_factory=mock_factory)
    loop.add(zone)
    loop.start()
    try:
        wait_until(lambda: loop.passes >= 1, timeout=5, message="first pass")
        latencies = []
        for i in range(FLAP_MAX_TRANSITIONS):  # more would (rightly) add a flapping fault
            before = len(sink.events)
            start = time.monotonic()
            if i % 2 == 0:
                mock_factory.pin(17).drive_high()
            else:
                mock_factory.pin(17).drive_low()
            wait_until(lambda before=before: len(sink.events) > before, timeout=2, interval=0.001, message="the event")
            latencies.append(sink.times[-1] - start)
        assert [kind for kind, _, _ in sink.events] == [EventKind.ALARM, EventKind.RESTORE] * (FLAP_MAX_TRANSITIONS // 2)
        # Far below the reread period: the wake, not the timeout, ran the pass.
        assert max(latencies) < 1.0
    finally:
        loop.stop()
        zone.close()


def test_debounced_alarm_through_the_loop_waits_for_the_deadline(mock_factory: MockFactory) -> None:
    sink = Recorder()
    loop = InputLoop(reread_s=5.0)
    wire_at_rest(mock_factory, [NC])
    zone = Zone(NC, emit=sink, wake=loop.wake, pin_factory=mock_factory)
    loop.add(zone)
    loop.start()
    try:
        start = time.monotonic()
        mock_factory.pin(17).drive_high()
        wait_until(lambda: sink.events, timeout=3, message="the alarm")
        assert sink.events == [(EventKind.ALARM, "north-fence", {})]
        assert sink.times[0] - start >= 0.05
        assert sink.times[0] - start < 1.0  # the deadline, not the 5 s reread, woke it
    finally:
        loop.stop()
        zone.close()


# -- the input loop itself -----------------------------------------------------------


class Ticker:
    def __init__(self, deadline: float | None = None) -> None:
        self.ticks: list[float] = []
        self.deadline = deadline

    def tick(self, now: float) -> float | None:
        self.ticks.append(now)
        return self.deadline


class Broken:
    def tick(self, now: float) -> float | None:
        raise RuntimeError("sensor fell off")


def test_run_pass_returns_the_earliest_deadline_capped_at_reread(clock: FakeClock) -> None:
    loop = InputLoop(clock=clock, reread_s=1.0)
    a, b = Ticker(clock.now + 0.3), Ticker(None)
    loop.add(a)
    loop.add(b)
    assert loop.run_pass() == pytest.approx(clock.now + 0.3)
    a.deadline = clock.now + 7
    assert loop.run_pass() == pytest.approx(clock.now + 1.0)
    assert a.ticks == b.ticks == [clock.now, clock.now]
    assert loop.last_beat == clock.now


@pytest.mark.allow_logged_exceptions
def test_a_failing_device_is_logged_counted_and_the_loop_goes_on(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    loop = InputLoop(clock=clock)
    good = Ticker()
    loop.add(Broken())
    loop.add(good)
    loop.run_pass()
    loop.run_pass()
    assert loop.errors == 2
    assert len(good.ticks) == 2
    assert any("tick of" in r.getMessage() and r.exc_info for r in caplog.records)


def test_post_runs_on_the_loop_thread_and_returns_through_a_future() -> None:
    loop = InputLoop(reread_s=5.0).start()
    try:
        assert loop.post(lambda: threading.current_thread().name).result(timeout=5) == "gridpatrol-inputs"

        def fail() -> None:
            raise ValueError("no such output")

        future = loop.post(fail)
        with pytest.raises(ValueError, match="^no such output$"):
            future.result(timeout=5)
        assert loop.errors == 1
    finally:
        loop.stop()
    late = loop.post(lambda: 1)
    with pytest.raises(RuntimeError, match="^the input loop is stopped$"):
        late.result(timeout=1)


def test_the_loop_rereads_periodically_and_beats() -> None:
    ticker = Ticker()
    loop = InputLoop(reread_s=0.05)
    loop.add(ticker)
    loop.start()
    try:
        wait_until(lambda: len(ticker.ticks) >= 5, timeout=5, message="periodic passes")
        beat = loop.last_beat
        assert beat is not None
        wait_until(lambda: loop.last_beat != beat, timeout=5, message="a newer beat")
    finally:
        loop.stop()
    assert not loop.running
