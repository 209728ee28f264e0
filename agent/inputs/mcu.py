"""Inputs and outputs behind a microcontroller front end.

One :class:`McuLink` per ``[[mcu]]``: it keeps the serial link
(:class:`firmware_bridge.link.SerialLink`, its own thread) and turns the
microcontroller's frames into events on the input loop's thread, in
:meth:`McuLink.tick`:

- supervised loops (``zone`` frames, debounced on the microcontroller):
  ``alarm``; ``tamper`` with ``state`` = ``tamper-short`` or ``tamper-cut``;
  ``restore`` when a loop in alarm or tamper is normal again;
- buttons (``button`` frames): ``panic`` once a press has lasted ``hold_ms``
  (the same :class:`~agent.inputs.logic.HoldToTrigger` as GPIO buttons);
- Wiegand readers (``wiegand`` frames, decoded here, bad parity counted and
  dropped) and card readers (``tag`` frames): ``scan``, one per presentation;
- the link itself: ``fault`` ``link-lost`` after 3 s without a frame,
  ``link-back`` when frames come again; ``port-lost`` / ``port-back`` when the
  serial device disappears and returns. While the link is down every input
  behind it reads ``unknown``, and after every (re)connection the Pi sends
  ``sync`` and believes only the answers.

Outputs behind the microcontroller (:class:`McuOutput`) have the shape of
GPIO outputs, and the same ``max_on_s`` safety twice over: the Pi switches
them off on time, and every ``out`` frame carries ``ms`` so the
microcontroller switches off by itself if the Pi dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from importlib import metadata
from typing import Any, Callable, Sequence

import serial

from agent.config import ButtonConfig, McuConfig, OutputConfig, ReaderConfig, ZoneConfig
from agent.events import EventSink, FaultCode
from agent.inputs.logic import HoldToTrigger
from agent.inputs.readers.errors import WiegandError
from agent.inputs.readers.presence import PRESENCE_ABSENT_S, PresenceFilter
from agent.inputs.readers.wiegand import SUPPORTED_BITS, decode_wiegand
from agent.outputs import TimedOutput
from firmware_bridge import framing
from firmware_bridge.link import REOPEN_S, LinkError, SerialLink
from wire.messages import EventKind, ScanFormat

_LOGGER = logging.getLogger(__name__)

LINK_TIMEOUT_S = 3.0  # the microcontroller beats every second; three missed is a lost link
MIN_HOLD_S = 0.02  # as GPIO buttons: a release's bounce is not a second press
INBOX_MAX = 4096  # frames waiting for the input loop; a flood loses the oldest
CLOSE_DRAIN_S = 0.5  # at close, how long the last "off" frames may take
MAX_UID_BYTES = 10  # ISO 14443A UIDs are 4, 7 or 10 bytes
UNKNOWN = "unknown"


def _ignore() -> None:
    pass


def _agent_fw() -> str:
    try:
        return f"gridpatrol-agent/{metadata.version('gridpatrol')}"
    except metadata.PackageNotFoundError:
        return "gridpatrol-agent"


def _index(value: Any, limit: int = 256) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        return None
    return value


class McuZone:
    """A supervised loop read by the microcontroller (state only; the link emits)."""

    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        self.name = config.name
        self.state = UNKNOWN  # what the microcontroller said since the last (re)connection
        self.last_known: str | None = None  # survives link loss: events compare against it


class McuButton:
    """An emergency button read by the microcontroller, latched after a panic like a GPIO one."""

    def __init__(self, config: ButtonConfig) -> None:
        self.config = config
        self.name = config.name
        self.silent = config.silent
        self.when_panic: Callable[[McuButton], None] | None = None
        self.known = False
        self._hold = HoldToTrigger(max(config.hold_ms / 1000, MIN_HOLD_S))
        self._latched = False
        self._lock = threading.Lock()

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def pressed(self) -> bool:
        return self._hold.pressed

    @property
    def state(self) -> str:
        if self._latched:
            return "latched"
        if not self.known:
            return UNKNOWN
        return "pressed" if self._hold.pressed else "idle"

    @property
    def deadline(self) -> float | None:
        return self._hold.deadline

    def relatch(self) -> None:
        """A panic latched before the agent restarted: latched again, until central's ``alarm-ack``."""
        with self._lock:
            self._latched = True

    def acknowledge(self) -> bool:
        """Central acknowledged the alarm: release the latch. True if it was latched."""
        with self._lock:
            was, self._latched = self._latched, False
        return was

    def press(self, at: float) -> None:
        self.known = True
        self._hold.press(at)

    def release(self, at: float) -> None:
        self.known = True
        self._hold.release(at)

    def forget(self) -> None:
        """The link is down: a press in progress can no longer be trusted."""
        self.known = False
        self._hold = HoldToTrigger(self._hold.hold_s)

    def tick(self, now: float) -> bool:
        """True once per press held long enough; the button is then latched."""
        if not self._hold.tick(now):
            return False
        with self._lock:
            self._latched = True
        return True


class McuOutput(TimedOutput):
    """A siren, strobe or LED on output ``config.output`` of the microcontroller.

    It switches and times like :class:`agent.outputs.Output`; every change,
    a new timer included, goes to the microcontroller as an ``out`` frame with
    the time left, so the microcontroller's own timer stops the siren even if
    the Pi dies.
    """

    def __init__(
        self,
        config: OutputConfig,
        *,
        send: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
        wake: Callable[[], None] = _ignore,
    ) -> None:
        if config.output is None:
            raise ValueError(f"output {config.name!r} has no output number on mcu {config.mcu!r}")
        super().__init__(config, clock=clock, wake=wake)
        self.index = config.output
        self._send = send

    def __repr__(self) -> str:
        return f"<McuOutput {self.name!r} mcu {self.config.mcu} output {self.index} {self.state}>"

    def resend(self) -> None:
        """Tell the microcontroller the present state again (after it rebooted or came back)."""
        with self._lock:
            if not self._closed:
                self._show(self._clock())

    def _show(self, now: float) -> None:
        if self._on_since is None:
            self._send({"t": framing.OUT, "output": self.index, "on": False, "ms": 0})
            return
        ms = 0 if self._off_at is None else max(1, round((self._off_at - now) * 1000))
        self._send({"t": framing.OUT, "output": self.index, "on": True, "ms": ms})


class McuLink:
    """Zones, buttons, readers and outputs behind the microcontroller ``config.name``.

    The sequences hold only the items with ``mcu == config.name``. Frames are
    read on the link's own thread and acted on in :meth:`tick`, on the input
    loop's thread (``wake`` tells the loop there is work).
    """

    def __init__(
        self,
        config: McuConfig,
        *,
        zones: Sequence[ZoneConfig],
        buttons: Sequence[ButtonConfig],
        readers: Sequence[ReaderConfig],
        outputs: Sequence[OutputConfig],
        emit: EventSink,
        clock: Callable[[], float] = time.monotonic,
        open_port: Callable[..., Any] = serial.serial_for_url,
        wake: Callable[[], None] = _ignore,
        reopen_s: float = REOPEN_S,
    ) -> None:
        self.config = config
        self.name = config.name
        self._emit = emit
        self._clock = clock
        self._wake = wake
        items: list[ZoneConfig | ButtonConfig | ReaderConfig | OutputConfig] = [*zones, *buttons, *readers, *outputs]
        for item in items:
            if item.mcu != config.name:
                raise ValueError(f"{item.name!r} belongs to mcu {item.mcu!r}, not {config.name!r}")
        self.zones = {z.input: McuZone(z) for z in zones if z.input is not None}
        self.buttons = {b.input: McuButton(b) for b in buttons if b.input is not None}
        self.readers = {r.input: r for r in readers if r.input is not None}
        self._presence = {r.name: PresenceFilter(PRESENCE_ABSENT_S) for r in readers}
        self.outputs = {o.name: McuOutput(o, send=self._send, clock=clock, wake=wake) for o in outputs}
        self._own_counters = dict.fromkeys(
            ("bad_wiegand_parity", "bad_wiegand_length", "unknown_input", "unknown_type", "bad_field", "inbox_drops"), 0
        )
        self._inbox: deque[tuple[str, Any, float]] = deque(maxlen=INBOX_MAX)
        self.state = "down"
        self.mcu_hello: dict[str, Any] | None = None
        self._port_open = False
        self._silent_since: float | None = None  # when the mcu was last heard, or the port opened
        self._link_lost = False  # link-lost reported, link-back owed
        self._port_lost = False  # port-lost reported, port-back owed
        self._link = SerialLink(
            config.port,
            hello=framing.hello_body(_agent_fw(), []),
            on_frame=self._on_frame,
            on_port=self._on_port,
            baudrate=config.baudrate,
            open_port=open_port,
            clock=clock,
            reopen_s=reopen_s,
            name=config.name,
        )

    def __repr__(self) -> str:
        return f"<McuLink {self.name!r} {self.config.port} {self.state}>"

    def start(self) -> None:
        self._link.start()

    def close(self) -> None:
        for output in self.outputs.values():
            output.close()
        self._link.drain(CLOSE_DRAIN_S)
        self._link.close()

    @property
    def last_beat(self) -> float:
        """When the link's thread last went round its loop (monotonic): a hung thread stops it."""
        return self._link.last_beat

    @property
    def counters(self) -> dict[str, int]:
        merged = self._link.counters
        merged.update(self._own_counters)
        return merged

    def inputs_state(self) -> dict[str, str]:
        states = {z.name: z.state for z in self.zones.values()}
        states.update((b.name, b.state) for b in self.buttons.values())
        return states

    # -- the link's thread: record and wake only ---------------------------------

    def _on_frame(self, body: dict[str, Any], at: float) -> None:
        self._enqueue("frame", body, at)

    def _on_port(self, is_open: bool, detail: str) -> None:
        self._enqueue("port", (is_open, detail), self._clock())

    def _enqueue(self, kind: str, item: Any, at: float) -> None:
        if len(self._inbox) == INBOX_MAX:  # the deque's maxlen drops the oldest
            self._own_counters["inbox_drops"] += 1
        self._inbox.append((kind, item, at))
        self._wake()

    def _send(self, body: dict[str, Any]) -> None:
        try:
            self._link.send(body)
        except LinkError:
            _LOGGER.debug("mcu %s: link closed, %s frame not sent", self.name, body["t"])

    # -- the input loop's thread --------------------------------------------------

    def tick(self, now: float) -> float | None:
        while self._inbox:
            kind, item, at = self._inbox.popleft()
            if kind == "port":
                is_open, detail = item
                self._port_changed(is_open, detail, at)
            else:
                self._frame(item, at)
        deadlines: list[float] = []
        if self._port_open and not self._link_lost and self._silent_since is not None:
            silent_until = self._silent_since + LINK_TIMEOUT_S
            if now >= silent_until:
                self._lose_link(now)
            else:
                deadlines.append(silent_until)
        for button in self.buttons.values():
            deadline = self._tick_button(button, now)
            if deadline is not None:
                deadlines.append(deadline)
        for presence in self._presence.values():
            presence.tick(now)
        for output in self.outputs.values():
            deadline = output.tick(now)
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines) if deadlines else None

    def _port_changed(self, is_open: bool, detail: str, at: float) -> None:
        if is_open:
            self._port_open = True
            self._silent_since = at
            if self._port_lost:
                self._port_lost = False
                self._fault(FaultCode.PORT_BACK, detail)
            return
        self._port_open = False
        self._silent_since = None
        self._link_lost = False  # port-lost says it all; port-back will follow
        self._go_down(at)
        if not self._port_lost:
            self._port_lost = True
            self._fault(FaultCode.PORT_LOST, detail)

    def _lose_link(self, now: float) -> None:
        self._link_lost = True
        self._go_down(now)
        self._fault(FaultCode.LINK_LOST, f"no frame from mcu {self.name} for {LINK_TIMEOUT_S:g} s")

    def _go_down(self, now: float) -> None:
        self.state = "down"
        for zone in self.zones.values():
            zone.state = UNKNOWN
        for button in self.buttons.values():
            # A hold completed before the loss still counts; one in progress
            # cannot be trusted: if it still is one, the answer to the next
            # sync says so and the hold starts again.
            self._tick_button(button, now)
            button.forget()

    def _alive(self, at: float, kind: str) -> None:
        self._silent_since = at
        if self.state == "up":
            return
        self.state = "up"
        if self._link_lost:
            self._link_lost = False
            self._fault(FaultCode.LINK_BACK, f"mcu {self.name} answers again")
        if kind != framing.HELLO:  # a hello gets its sync anyway
            self._sync()

    def _sync(self) -> None:
        """Ask for every input's state afresh and say every output's again."""
        self._send({"t": framing.SYNC})
        for output in self.outputs.values():
            output.resend()

    def _frame(self, body: dict[str, Any], at: float) -> None:
        kind = body["t"]
        self._alive(at, kind)
        if kind == framing.HELLO:
            self._hello(body)
        elif kind == framing.HB:
            pass
        elif kind == framing.ZONE:
            self._zone(body)
        elif kind == framing.BUTTON:
            self._button(body, at)
        elif kind == framing.WIEGAND:
            self._wiegand(body, at)
        elif kind == framing.TAG:
            self._tag(body, at)
        else:
            self._own_counters["unknown_type"] += 1
            _LOGGER.debug("mcu %s: frame type %r ignored", self.name, kind)

    def _hello(self, body: dict[str, Any]) -> None:
        hello = {k: v for k, v in body.items() if k != "n"}
        if hello != self.mcu_hello:
            _LOGGER.info("mcu %s: firmware %s, protocol %s, caps %s", self.name, body.get("fw"), body.get("proto"), body.get("caps"))
            if body.get("proto") != framing.PROTO:
                _LOGGER.warning("mcu %s speaks protocol %r, this agent %d", self.name, body.get("proto"), framing.PROTO)
        self.mcu_hello = hello
        self._sync()

    def _bad(self, body: dict[str, Any], problem: str) -> None:
        self._own_counters["bad_field"] += 1
        _LOGGER.debug("mcu %s: %s frame dropped: %s", self.name, body["t"], problem)

    def _zone(self, body: dict[str, Any]) -> None:
        index = _index(body.get("input"))
        state = body.get("state")
        if index is None or state not in framing.ZONE_STATES:
            return self._bad(body, "needs input and a loop state")
        zone = self.zones.get(index)
        if zone is None:
            self._own_counters["unknown_input"] += 1
            return None
        previous = zone.last_known
        zone.state = zone.last_known = state
        if state == previous:
            return None
        if state == framing.NORMAL:
            if previous is not None:
                _LOGGER.info("zone %s: restored", zone.name)
                self._emit(EventKind.RESTORE, zone.name)
        elif state == framing.ALARM:
            _LOGGER.warning("zone %s: alarm", zone.name)
            self._emit(EventKind.ALARM, zone.name)
        else:
            _LOGGER.warning("zone %s: %s", zone.name, state)
            self._emit(EventKind.TAMPER, zone.name, state=state)
        return None

    def _button(self, body: dict[str, Any], at: float) -> None:
        index = _index(body.get("input"))
        state = body.get("state")
        if index is None or state not in framing.BUTTON_STATES:
            return self._bad(body, "needs input and a button state")
        button = self.buttons.get(index)
        if button is None:
            self._own_counters["unknown_input"] += 1
            return None
        if state == framing.PRESSED:
            button.press(at)
        else:
            button.release(at)
        return None

    def _tick_button(self, button: McuButton, now: float) -> float | None:
        if not button.tick(now):
            return button.deadline
        _LOGGER.warning("button %s: panic", button.name)
        self._emit(EventKind.PANIC, button.name)
        if button.when_panic is not None:
            try:
                button.when_panic(button)
            except Exception:
                _LOGGER.exception("button %s: when_panic callback failed", button.name)
        return button.deadline

    def _reader(self, body: dict[str, Any]) -> ReaderConfig | None:
        index = _index(body.get("input"))
        if index is None:
            self._bad(body, "needs an input")
            return None
        reader = self.readers.get(index)
        if reader is None:
            self._own_counters["unknown_input"] += 1
        return reader

    def _wiegand(self, body: dict[str, Any], at: float) -> None:
        reader = self._reader(body)
        if reader is None:
            return
        bits, data = body.get("bits"), body.get("data")
        if isinstance(bits, bool) or not isinstance(bits, int) or isinstance(data, bool) or not isinstance(data, int) or data < 0:
            self._bad(body, "bits and data must be integers")
            return
        if bits not in SUPPORTED_BITS:
            self._own_counters["bad_wiegand_length"] += 1
            _LOGGER.debug("reader %s: %r-bit wiegand frame dropped", reader.name, bits)
            return
        try:
            tag = decode_wiegand(bits, data)
        except WiegandError as exc:
            self._own_counters["bad_wiegand_parity"] += 1
            _LOGGER.info("reader %s: %s", reader.name, exc)
            return
        self._scan(reader, tag, at, ScanFormat.WIEGAND26 if bits == 26 else ScanFormat.WIEGAND34)

    def _tag(self, body: dict[str, Any], at: float) -> None:
        reader = self._reader(body)
        if reader is None:
            return
        uid = body.get("uid")
        if not isinstance(uid, bytes) or not 1 <= len(uid) <= MAX_UID_BYTES:
            self._bad(body, "uid must be 1 to 10 bytes")
            return
        self._scan(reader, uid.hex().upper(), at, ScanFormat.ISO14443A)

    def _scan(self, reader: ReaderConfig, tag: str, at: float, fmt: ScanFormat) -> None:
        # Readers may repeat a frame; a card is one presentation until absent 1 s.
        if self._presence[reader.name].seen(tag, at):
            _LOGGER.info("reader %s: card %s", reader.name, tag)
            self._emit(EventKind.SCAN, reader.name, tag=tag, fmt=str(fmt))

    def _fault(self, code: str, detail: str) -> None:
        _LOGGER.warning("mcu %s: %s: %s", self.name, code, detail)
        self._emit(EventKind.FAULT, self.name, code=code, detail=detail)
