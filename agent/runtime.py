"""The agent assembled: outbox, session, inputs, outputs and the local reactions.

:class:`Agent` builds everything from an :class:`~agent.config.AgentConfig`.
Every event goes through :meth:`Agent.emit`, which stamps it (``ts``,
``mono_ms``, ``clock_synced``, ``boot_id``), commits it to the outbox, wakes
the session, and applies the local reactions docs/reference.md asks for, broker or no
broker: an alarm or tamper from a zone with a ``siren`` switches it on, a
panic from a non-silent button with a ``siren`` too, and a panic lights the
button's ``indicator`` until central's ``alarm-ack`` for that button. The
latch is kept in :class:`~agent.memory.Memory`, so a restart lights the
indicator again and keeps it lit until that ``alarm-ack``.
"""

from __future__ import annotations

import functools
import logging
import platform
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Callable, Protocol

from agent import clock as agent_clock
from agent.config import AgentConfig, ButtonConfig, ConfigError, ZoneConfig
from agent.device import Device, ThreadedDevice
from agent.events import FaultCode
from agent.feedback import READ, FeedbackSignal
from agent.health import Health
from agent.inputs.button import EmergencyButton
from agent.inputs.loop import InputLoop
from agent.inputs.zone import Zone
from agent.memory import Memory
from agent.outbox import OUTBOX_SOURCE, OutboxError, open_outbox
from agent.outputs import Output, StatusLed
from agent.session import Session
from gridpatrol.base.systemd import Heartbeats
from wire.messages import Birth, Command, CommandName, EventKind, StateSnapshot

if TYPE_CHECKING:  # imported when the config has them: a Pi without readers never loads pyserial's readers
    from agent.inputs.mcu import McuLink
    from agent.inputs.readers.serial_reader import SerialReader

_LOGGER = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
MEMORY_FILE = "memory.db"
BOOT_ID_HEX_CHARS = 16
STATUS_LED_PERIOD_S = 0.5
PROTOCOL_VERSION = "1"
# The agent is healthy (systemd watchdog pings go on) while every one of its
# threads (input loop, MQTT session, each serial reader and microcontroller
# link) has gone round its loop within this many seconds. The slowest of them
# beats at least every 2 s (a reader backing off from a missing port).
STALE_AFTER_S = 10.0


class Switchable(Protocol):
    name: str

    def on(self, seconds: float | None = None) -> None: ...

    def off(self) -> None: ...


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def make_pin_factory(name: str, *, source: str = "<config>") -> Any:
    """A gpiozero pin factory by its entry-point name (``mock``, ``lgpio``, ...)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    from importlib.metadata import entry_points

    for ep in entry_points(group="gpiozero_pin_factories"):
        if ep.name.lower() == name.lower():
            return ep.load()()
    raise ConfigError(f"{source}: gpio.pin_factory: no gpiozero pin factory is named {name!r}")


class _StatusLedTicker:
    """Keeps the status LED in step with the link, on the input loop."""

    def __init__(self, led: StatusLed, agent: Agent) -> None:
        self.name = led.name
        self.led = led
        self.agent = agent

    @property
    def state(self) -> str:
        return self.led.mode or "off"

    def tick(self, now: float) -> float:
        self.led.set(self.agent.session.central_online, self.agent.outbox.depth == 0)
        return now + STATUS_LED_PERIOD_S

    def close(self) -> None:
        self.led.close()


class Agent:
    """One edge agent: build it, :meth:`start` it, :meth:`stop` it (a clean shutdown)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        pin_factory: Any = None,
        clock: Callable[[], float] = agent_clock.monotonic,
        wall_clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] | None = None,
        open_port: Callable[..., Any] | None = None,
    ) -> None:
        """``open_port`` opens a serial reader's port (default: pyserial's ``serial_for_url``)."""
        self.config = config
        self.boot_id = uuid.uuid4().hex[:BOOT_ID_HEX_CHARS]
        self._clock = clock
        self._wall = wall_clock
        self._clock_synced = clock_synced or agent_clock.clock_synced
        self._open_port = open_port
        self._lock = threading.Lock()
        self._latched: set[str] = set()
        self._zone_cfg: dict[str, ZoneConfig] = {z.name: z for z in config.zones}
        self._button_cfg: dict[str, ButtonConfig] = {b.name: b for b in config.buttons}
        self.counters = {"emit_failures": 0}
        self.zones: list[Zone] = []
        self.buttons: dict[str, EmergencyButton] = {}
        self.readers: list[SerialReader] = []
        self.mcus: dict[str, McuLink] = {}
        self.outputs: dict[str, Switchable] = {}
        self._gpio_outputs: list[Output] = []
        self._closables: list[Any] = []  # in the order they were made
        self.status_led: _StatusLedTicker | None = None
        self.feedback: dict[str, FeedbackSignal] = {}  # reader name -> its feedback output
        self.sim_socket: Any = None
        self._started = False
        self._stopped = False

        self._own_factory = pin_factory is None and config.gpio.pin_factory is not None
        self.pin_factory = (make_pin_factory(config.gpio.pin_factory, source=config.source)
                            if config.gpio.pin_factory is not None and pin_factory is None else pin_factory)

        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.outbox, unreadable = open_outbox(config.data_dir / OUTBOX_FILE, max_events=config.outbox.max_events,
                                                  warn_fraction=config.outbox.warn_fraction)
        except BaseException:
            if self._own_factory:
                self.pin_factory.close()
            raise
        try:
            self.memory = Memory(config.data_dir / MEMORY_FILE)
        except BaseException:
            self.outbox.close()
            if self._own_factory:
                self.pin_factory.close()
            raise
        self.loop = InputLoop(clock=clock)
        self.heartbeats = Heartbeats(stale_after_s=STALE_AFTER_S, clock=clock)
        self.health = Health(clock=clock, wall_clock=wall_clock, clock_synced=self._clock_synced)
        self.session = Session(
            agent_id=config.agent_id, mqtt_config=config.mqtt, outbox=self.outbox, birth=self.birth,
            snapshot=self.snapshot, on_command=self._command, telemetry=self.telemetry, memory=self.memory,
            tele_interval_s=config.telemetry.interval_s, clock=clock, wall_clock=wall_clock,
        )
        try:
            self._build_devices()
        except BaseException:
            self._close_devices()
            self.session.stop()
            self.outbox.close()
            self.memory.close()
            if self._own_factory:
                self.pin_factory.close()
            raise
        if unreadable is not None:
            # Central learns why this agent's history begins again at eseq 1.
            self.emit(EventKind.FAULT, OUTBOX_SOURCE, code=FaultCode.OUTBOX_RENEWED,
                      detail=f"the outbox could not be read; kept as {unreadable.name}; a new epoch begins")

    # -- building -------------------------------------------------------------

    def _build_devices(self) -> None:
        cfg = self.config
        factory = self.pin_factory
        if self._own_factory and cfg.gpio.pin_factory == "mock":
            from agent.simsocket import wire_at_rest

            wire_at_rest(factory, cfg.zones)  # a simulated site boots with its loops closed
        signals: dict[str, FeedbackSignal] = {}
        for out in cfg.outputs:
            if out.pin is None:
                continue
            if any(r.feedback == out.name for r in cfg.readers):
                signals[out.name] = signal = FeedbackSignal(out, pin_factory=factory)
                self._closables.append(signal)
                continue
            if out.name == cfg.gpio.status_led:
                led = StatusLed(out, pin_factory=factory)
                self._closables.append(led)
                self.status_led = _StatusLedTicker(led, self)
                continue
            output = Output(out, pin_factory=factory, clock=self._clock, when_changed=self._output_changed,
                            wake=self.loop.wake)
            self._closables.append(output)
            self._gpio_outputs.append(output)
            self.outputs[out.name] = output
        self.feedback = {r.name: signals[r.feedback] for r in cfg.readers if r.feedback is not None}
        for zone_cfg in cfg.zones:
            if zone_cfg.pin is not None:
                zone = Zone(zone_cfg, emit=self.emit, wake=self.loop.wake, pin_factory=factory, clock=self._clock)
                self._closables.append(zone)
                self.zones.append(zone)
        for button_cfg in cfg.buttons:
            if button_cfg.pin is not None:
                button = EmergencyButton(button_cfg, emit=self.emit, wake=self.loop.wake, pin_factory=factory,
                                         clock=self._clock)
                self._closables.append(button)
                self.buttons[button.name] = button
        serial_readers = [r for r in cfg.readers if r.port is not None]
        if serial_readers:
            from agent.inputs.readers.serial_reader import SerialReader

            for reader_cfg in serial_readers:
                kw: dict[str, Any] = {} if self._open_port is None else {"open_port": self._open_port}
                reader = SerialReader(reader_cfg, emit=self.emit, clock=self._clock, **kw)
                self._closables.append(reader)
                self.readers.append(reader)
        if cfg.mcus:
            from agent.inputs.mcu import McuLink

            for mcu_cfg in cfg.mcus:
                link = McuLink(
                    mcu_cfg,
                    zones=[z for z in cfg.zones if z.mcu == mcu_cfg.name],
                    buttons=[b for b in cfg.buttons if b.mcu == mcu_cfg.name],
                    readers=[r for r in cfg.readers if r.mcu == mcu_cfg.name],
                    outputs=[o for o in cfg.outputs if o.mcu == mcu_cfg.name],
                    emit=self.emit,
                    clock=self._clock,
                    wake=self.loop.wake,
                )
                self._closables.append(link)
                self.mcus[mcu_cfg.name] = link
                for name, mcu_output in link.outputs.items():
                    if name == cfg.gpio.status_led:
                        _LOGGER.warning("status LED %r is on mcu %r: it is not driven", name, mcu_cfg.name)
                        continue
                    mcu_output.when_changed = self._output_changed
                    self.outputs[name] = mcu_output
        if cfg.gpio.sim_socket is not None:
            from agent.simsocket import SimSocket

            self.sim_socket = SimSocket(cfg.gpio.sim_socket, factory=factory)

    # -- running --------------------------------------------------------------

    def start(self) -> Agent:
        if self._started:
            raise RuntimeError("the agent was already started")
        self._started = True
        self._restore_latches()
        for device in self.devices:
            self.loop.add(device)
        # Health: every thread that does the work, each by its own beat.
        self.heartbeats.add("input loop", lambda: self.loop.last_beat)
        self.heartbeats.add("mqtt session", lambda: self.session.last_beat)
        for threaded in self.threaded_devices:
            self.heartbeats.add(f"{type(threaded).__name__} {threaded.name}", functools.partial(getattr, threaded, "last_beat"))
        self.loop.start()
        for reader in self.readers:
            reader.start()
        for link in self.mcus.values():
            link.start()
        if self.sim_socket is not None:
            self.sim_socket.start()
        self.session.start()
        _LOGGER.info("agent %s started (boot %s): %d zones, %d buttons, %d readers, %d outputs, %d unacked events",
                     self.config.agent_id, self.boot_id, len(self.config.zones), len(self.config.buttons),
                     len(self.config.readers), len(self.config.outputs), self.outbox.depth)
        return self

    def stop(self) -> None:
        """Clean shutdown: inputs stop, status ``disconnected``, outputs off, outbox closed."""
        if self._stopped:
            return
        self._stopped = True
        if self.sim_socket is not None:
            self.sim_socket.close()
        self.loop.stop()
        for reader in self.readers:
            reader.close()
        self.session.stop()
        for name, output in self.outputs.items():
            try:
                output.off()
            except Exception as exc:  # one stuck output must not keep the others on
                _LOGGER.warning("output %s: could not switch off at shutdown: %s", name, exc)
        self._close_devices()
        self.outbox.close()
        self.memory.close()
        if self._own_factory:
            self.pin_factory.close()
        _LOGGER.info("agent %s stopped", self.config.agent_id)

    def _close_devices(self) -> None:
        for device in reversed(self._closables):
            try:
                device.close()
            except Exception:
                _LOGGER.exception("closing %r failed", device)
        self._closables.clear()
        if self.sim_socket is not None:
            self.sim_socket.close()

    @property
    def devices(self) -> list[Device]:
        """Every device the input loop ticks, in the order they are ticked."""
        devices: list[Device] = [*self._gpio_outputs, *self.zones, *self.buttons.values(), *self.readers, *self.mcus.values()]
        if self.status_led is not None:
            devices.append(self.status_led)
        return devices

    @property
    def threaded_devices(self) -> list[ThreadedDevice]:
        """The devices with a thread of their own: serial readers and microcontroller links."""
        return [*self.readers, *self.mcus.values()]

    def healthy(self, now: float | None = None) -> bool:
        """Every thread went round recently (the systemd watchdog's question); see :attr:`heartbeats`.

        False before :meth:`start`, and until each thread has gone round once:
        ``gridpatrol agent`` tells systemd READY=1 the first time it is True.
        """
        return self._started and self.heartbeats(now)

    # -- events and reactions -------------------------------------------------------

    def emit(self, kind: EventKind | str, source: str, /, **fields: Any) -> None:
        """Stamp, commit and hand on one event; then react locally. Any thread."""
        kind = EventKind(kind)
        if kind is EventKind.SCAN and source in self.feedback:
            self.feedback[source].show(READ)  # at once, and whether central is reachable or not
        ts = int(self._wall() * 1000)
        eseq: int | None = None
        try:
            try:
                stored = self.outbox.append(kind, source, fields, ts=ts, mono_ms=int(self._clock() * 1000),
                                            clock_synced=self._clock_synced(), boot_id=self.boot_id)
                eseq = stored.eseq if stored is not None else None
            except (OutboxError, sqlite3.Error) as exc:
                self.counters["emit_failures"] += 1
                _LOGGER.error("%s event from %s could not be stored: %s", kind, source, exc)
            self.session.wake()
        finally:
            # Safety first: the siren sounds even if the disk failed us.
            self._react(kind, source, eseq, ts)
        if kind is not EventKind.SCAN and kind is not EventKind.FAULT:
            self.session.state_changed()

    def _react(self, kind: EventKind, source: str, eseq: int | None = None, ts: int = 0) -> None:
        if kind in (EventKind.ALARM, EventKind.TAMPER):
            zone = self._zone_cfg.get(source)
            if zone is not None and zone.siren is not None:
                self._switch_on(zone.siren, f"{kind} on zone {source}")
        elif kind is EventKind.PANIC:
            button = self._button_cfg.get(source)
            if button is None:
                return
            with self._lock:
                self._latched.add(source)
            try:
                self.memory.latch(source, eseq, ts)
            except Exception:  # a closed or broken memory must not keep the siren quiet
                _LOGGER.exception("panic on %s: the latch could not be remembered", source)
            if button.siren is not None and not button.silent:
                self._switch_on(button.siren, f"panic on {source}")
            if button.indicator is not None:
                self._switch_on(button.indicator, f"panic on {source}")

    def _switch_on(self, name: str, why: str) -> None:
        output = self.outputs.get(name)
        if output is None:
            _LOGGER.warning("%s: output %s is not available", why, name)
            return
        try:
            output.on()
        except Exception as exc:
            _LOGGER.error("%s: output %s could not be switched on: %s", why, name, exc)

    def _output_changed(self, name: str, on: bool) -> None:
        self.emit(EventKind.OUTPUT, name, output=name, on=on)

    # -- what the session asks ---------------------------------------------------------

    def _command(self, command: Command) -> str | None:
        """``output`` and ``alarm-ack`` from central; runs on the session thread, acts on the loop's."""
        if command.cmd is CommandName.OUTPUT:
            name = command.args["output"]
            output = self.outputs.get(name)
            if output is None:
                return f"no output is named {name!r}"
            seconds = command.args.get("seconds")
            if command.args["on"]:
                if seconds is not None and seconds <= 0:
                    return f"seconds must be greater than 0, not {seconds}"
                self.loop.post(lambda: output.on(seconds))
            else:
                self.loop.post(output.off)
            return None
        if command.cmd is CommandName.FEEDBACK:
            signal = self.feedback.get(command.args["source"])
            if signal is None:
                return f"reader {command.args['source']!r} has no feedback output"
            signal.show_verdict(command.args["verdict"])
            return None
        if command.cmd is CommandName.ALARM_ACK:
            source = command.args["source"]
            if source not in self._button_cfg:
                return f"no button is named {source!r}"
            # On the disk before the answer (which remembers the txn): a restart
            # in between relights the lamp, and the same alarm-ack, not yet
            # remembered as answered, releases it again.
            self.memory.release(source)
            self.loop.post(lambda: self._release(source))
            return None
        return f"command {command.cmd!r} is not handled here"

    def _restore_latches(self) -> None:
        """Panics latched before a restart: latched again, indicators lit, until central's alarm-ack.

        Central's alarm is most likely still open (an alarm-ack would have
        released the latch), and a dark lamp would tell the person who
        pressed that nobody came. If central's staff answered meanwhile,
        central sends the alarm-ack again on seeing the latch in our state.
        """
        for source, latch in self.memory.latches().items():
            config = self._button_cfg.get(source)
            if config is None:
                _LOGGER.warning("latched panic of %s (eseq %s) forgotten: no button has that name now", source,
                                latch.eseq)
                self.memory.release(source)
                continue
            with self._lock:
                self._latched.add(source)
            for button in self._button_devices(config):
                button.relatch()
            if config.indicator is not None:
                self._switch_on(config.indicator, f"panic on {source} latched before the restart")
            _LOGGER.warning("panic of %s (eseq %s) is still latched from before the restart: waiting for central's "
                            "alarm-ack", source, latch.eseq)

    def _button_devices(self, config: ButtonConfig) -> list[Any]:
        button = self.buttons.get(config.name)
        if button is not None:
            return [button]
        if config.mcu is not None and config.mcu in self.mcus:
            return [b for b in self.mcus[config.mcu].buttons.values() if b.name == config.name]
        return []

    def _release(self, source: str) -> None:
        """Central's staff answered the panic: release the latch and the indicator."""
        with self._lock:
            self._latched.discard(source)
        config = self._button_cfg[source]
        for button in self._button_devices(config):
            button.acknowledge()
        indicator = config.indicator
        if indicator is not None and indicator in self.outputs:
            self.outputs[indicator].off()
        _LOGGER.info("panic of %s acknowledged by central", source)
        self.session.state_changed()

    def snapshot(self) -> StateSnapshot:
        inputs: dict[str, str] = {}
        input_devices: list[Device] = [*self.zones, *self.buttons.values(), *self.readers]
        for device in input_devices:
            inputs[device.name] = str(device.state)
        for link in self.mcus.values():
            inputs.update(link.inputs_state())
        outputs = {name: bool(getattr(out, "is_on", False)) for name, out in self.outputs.items()}
        with self._lock:
            latched = tuple(sorted(self._latched))
        return StateSnapshot(ts=int(self._wall() * 1000), inputs=inputs, outputs=outputs, latched=latched)

    def birth(self, bdseq: int) -> Birth:
        def items(configs: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
            return tuple({k: v for k, v in asdict(c).items() if v is not None} for c in configs)

        now = self._clock()
        return Birth(
            bdseq=bdseq,
            boot_id=self.boot_id,
            fw=_package_version("gridpatrol"),
            inventory={
                "zones": items(self.config.zones),
                "buttons": items(self.config.buttons),
                "readers": items(self.config.readers),
                "outputs": items(self.config.outputs),
            },
            config_hash=self.config.config_hash,
            epoch=self.outbox.epoch,
            versions={"protocol": PROTOCOL_VERSION, "python": platform.python_version(),
                      "paho-mqtt": _package_version("paho-mqtt"), "gpiozero": _package_version("gpiozero")},
            mono_ms=int(now * 1000),
            ts=int(self._wall() * 1000),
            clock_synced=self._clock_synced(),
        )

    def telemetry(self) -> Any:
        counters: dict[str, int] = {**self.outbox.counters, **self.session.counters, **self.session.publisher.counters,
                                    **self.memory.counters, **self.counters, "input_loop_errors": self.loop.errors}
        for device in self.threaded_devices:
            for key, value in dict(getattr(device, "counters", {})).items():
                counters[f"{device.name}.{key}"] = int(value)
        return self.health.telemetry(outbox_depth=self.outbox.depth, reconnects=self.session.reconnects,
                                     counters=counters)
