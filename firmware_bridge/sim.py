"""A simulated microcontroller front end on a pseudo-terminal.

:class:`McuSim` runs the real firmware logic (``firmware/app.py``) on the
CPython stand-in hardware (:mod:`firmware_bridge.simhw`), with its UART on a
new pseudo-terminal whose slave path the Pi side opens like a serial port.
Tests and the demo drive it from Python (``set_zone``, ``tap``, ``wiegand``,
``dropout``, ``unplug``...) or from a script (:mod:`firmware_bridge.script`).

Faults of the cable are simulated below the firmware, on the pty: a
``dropout`` swallows every byte both ways (the firmware keeps running, its
heartbeats go nowhere); ``drop`` loses chosen frames; ``unplug`` closes the pty
(the Pi's reads fail as on a pulled USB adapter) and ``replug`` opens a new
one, to which the ``link`` symlink, if any, then points, as udev's
``/dev/serial/by-id`` links do.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import select
import threading
import time
import tty
from collections import deque
from pathlib import Path
from typing import Any, Callable

from firmware_bridge.firmware import framing
from firmware_bridge.firmware.app import FW_VERSION, WIEGAND_GAP_MS, App
from firmware_bridge.simhw import SimHardware

_LOGGER = logging.getLogger(__name__)

WAIT_S = 0.005  # longest the simulator sleeps between passes of the firmware loop
LOG_SIZE = 2000  # frames kept per direction for tests and inspection
READ_BYTES = 4096
TAP_S = 0.3  # how long a tapped card lies on the reader by default
# From one Wiegand frame to the next: the firmware's end-of-frame silence and then some.
WIEGAND_SPACING_S = (WIEGAND_GAP_MS + 25) / 1000


def wiegand_frame(bits: int, facility: int, card: int) -> int:
    """The raw bits of an H10301 (26) or H10306 (34) frame, parity bits set right."""
    if bits == 26:
        facility_bits = 8
    elif bits == 34:
        facility_bits = 16
    else:
        raise ValueError(f"wiegand frames have 26 or 34 bits, not {bits}")
    if not 0 <= facility < 1 << facility_bits or not 0 <= card < 1 << 16:
        raise ValueError(f"facility {facility} / card {card} do not fit a {bits}-bit frame")
    half = (bits - 2) // 2
    payload = (facility << 16) | card
    even = bin(payload >> half).count("1") & 1  # makes the first half's 1s even
    odd = 1 - (bin(payload & ((1 << half) - 1)).count("1") & 1)  # makes the second half's odd
    return (even << (bits - 1)) | (payload << 1) | odd


class _DropRule:
    def __init__(self, count: int, kind: str | None) -> None:
        self.count = count
        self.kind = kind

    def matches(self, body: dict[str, Any] | None) -> bool:
        if body is None:
            return False
        if self.kind is None:
            return body["t"] != framing.ACK
        return body["t"] == self.kind


class _PtyUart:
    """The firmware's UART, on the master side of a pseudo-terminal."""

    def __init__(self) -> None:
        self.master: int | None = None
        self.slave: int | None = None
        self.slave_path = ""
        self.dropout_until = 0.0
        self.rules: dict[str, list[_DropRule]] = {"rx": [], "tx": []}
        self.logs: dict[str, deque[dict[str, Any]]] = {"rx": deque(maxlen=LOG_SIZE), "tx": deque(maxlen=LOG_SIZE)}
        self.counts = {"rx_dropped": 0, "tx_dropped": 0, "tx_overflow": 0}
        self._rx_partial = bytearray()
        self.now: Callable[[], float] = time.monotonic

    def open(self) -> str:
        master, slave = os.openpty()
        # Raw: no echo, no line editing, every byte as it is. The simulator
        # keeps the slave open too, so the master never reads EIO while the
        # Pi side has the port closed.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        self.slave_path = os.ttyname(slave)
        self._rx_partial = bytearray()
        return self.slave_path

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def _cut(self) -> bool:
        return self.master is None or self.now() < self.dropout_until

    def read(self) -> bytes | None:
        if self.master is None:
            return None
        try:
            data = os.read(self.master, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # EIO: nothing at the other end; as quiet as a cut wire
            return None
        if self._cut() or not data:
            return None
        self._rx_partial += data
        end = self._rx_partial.rfind(b"\x00")
        if end < 0:
            return None
        whole = bytes(self._rx_partial[: end + 1])
        del self._rx_partial[: end + 1]
        return self._filter("rx", whole) or None

    def write(self, data: bytes) -> None:
        if self._cut():
            return
        self.write_raw(self._filter("tx", data))

    def write_raw(self, data: bytes) -> None:
        if self.master is None or not data:
            return
        try:
            written = os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            return
        if written < len(data):
            # Nobody reads the port and the pty's buffer is full: a UART's bytes
            # go out on the wire anyway and are lost.
            self.counts["tx_overflow"] += 1

    def wait(self, seconds: float) -> None:
        if self.master is None:
            time.sleep(seconds)
            return
        select.select([self.master], [], [], seconds)

    def _filter(self, direction: str, data: bytes) -> bytes:
        """Log the whole frames in ``data`` and leave out those a drop rule takes."""
        kept = bytearray()
        for segment in data.split(b"\x00")[:-1]:
            try:
                body: dict[str, Any] | None = framing.decode_frame(segment) if segment else None
            except framing.FrameError:
                body = None
            rules = self.rules[direction]
            if rules and rules[0].matches(body):
                rules[0].count -= 1
                if rules[0].count <= 0:
                    rules.pop(0)
                self.counts[f"{direction}_dropped"] += 1
                continue
            if body is not None:
                self.logs[direction].append(body)
            kept += segment + b"\x00"
        return bytes(kept)


class McuSim:
    """A simulated front end: the firmware on stand-in hardware, behind a pty.

    Use as a context manager, or ``start()`` and ``close()``. ``path`` is what
    the Pi side opens: the ``link`` symlink when one was given (it follows
    replugs), else the pty's own path.
    """

    def __init__(
        self,
        *,
        zones: int = 4,
        buttons: int = 2,
        wiegand: int = 2,
        tags: int = 2,
        outputs: int = 2,
        link: str | Path | None = None,
        fw: str = FW_VERSION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._uart = _PtyUart()
        self._uart.now = clock
        self.hw = SimHardware(self._uart, zones=zones, buttons=buttons, wiegand=wiegand, tags=tags, outputs=outputs, clock=clock)
        self.fw = fw
        self.link = Path(link) if link is not None else None
        self.app: App | None = None
        self.boots = 0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wiegand_free_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------

    def start(self) -> McuSim:
        with self._lock:
            self._plug()
            self._boot()
        self._thread = threading.Thread(target=self._run, name="mcu-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._uart.close()
            if self.link is not None and self.link.is_symlink():
                self.link.unlink()

    def __enter__(self) -> McuSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self._uart.slave_path

    @property
    def pty_path(self) -> str:
        return self._uart.slave_path

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._fire_timers()
                if self.app is not None:
                    self.app.step()
            self._uart.wait(WAIT_S)

    def _boot(self) -> None:
        self.boots += 1
        self.app = App(self.hw, fw=self.fw)

    def _plug(self) -> None:
        slave = self._uart.open()
        if self.link is not None:
            temp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            temp.unlink(missing_ok=True)
            temp.symlink_to(slave)
            os.replace(temp, self.link)
        _LOGGER.info("simulated microcontroller on %s", self.path)

    def _fire_timers(self) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            try:
                action()
            except Exception:  # one bad step must not stop the simulated board
                _LOGGER.exception("simulator: scheduled action failed")

    def after(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the simulator's thread ``seconds`` from now."""
        with self._lock:
            heapq.heappush(self._timers, (self._clock() + seconds, next(self._seq), action))

    # -- inputs -----------------------------------------------------------------

    def set_zone(self, index: int, state: str) -> None:
        if state not in framing.ZONE_STATES:
            raise ValueError(f"zone state {state!r} is not one of {', '.join(framing.ZONE_STATES)}")
        with self._lock:
            self.hw.set_zone(self._index(index, self.hw.zone_count, "zone"), state)

    def set_adc(self, index: int, value: int) -> None:
        with self._lock:
            self.hw.adc[self._index(index, self.hw.zone_count, "zone")] = max(0, min(65535, value))

    def press(self, index: int) -> None:
        with self._lock:
            self.hw.buttons[self._index(index, self.hw.button_count, "button")] = True

    def release(self, index: int) -> None:
        with self._lock:
            self.hw.buttons[self._index(index, self.hw.button_count, "button")] = False

    def hold(self, index: int, seconds: float) -> None:
        """Press button ``index`` and let go ``seconds`` later."""
        self.press(index)
        self.after(seconds, lambda: self.release(index))

    def tap(self, index: int, uid: bytes, seconds: float = TAP_S) -> None:
        """Lay a card with ``uid`` on tag reader ``index`` for ``seconds``."""
        with self._lock:
            slot = self._index(index, self.hw.tag_count, "tag reader")
            self.hw.tags[slot] = bytes(uid)
        self.after(seconds, lambda: self._lift(slot, bytes(uid)))

    def _lift(self, slot: int, uid: bytes) -> None:
        if self.hw.tags[slot] == uid:
            self.hw.tags[slot] = None

    def wiegand(self, index: int, bits: int, data: int) -> None:
        """Clock a raw frame into Wiegand reader ``index`` (parity as given).

        Frames asked for in quick succession go out with the silence between
        them that a real reader leaves (else they would run into one).
        """
        with self._lock:
            slot = self._index(index, self.hw.wiegand_count, "wiegand reader")
            now = self._clock()
            start = max(now, self._wiegand_free_at.get(slot, 0.0))
            self._wiegand_free_at[slot] = start + WIEGAND_SPACING_S
            if start <= now:
                self.hw.pulse_wiegand(slot, bits, data)
            else:
                self.after(start - now, lambda: self.hw.pulse_wiegand(slot, bits, data))

    def wiegand_card(self, index: int, bits: int, facility: int, card: int) -> None:
        """Present a card to Wiegand reader ``index``: a well-formed 26- or 34-bit frame."""
        self.wiegand(index, bits, wiegand_frame(bits, facility, card))

    # -- the link and the board -------------------------------------------------

    def dropout(self, seconds: float) -> None:
        """Let no byte through either way for ``seconds`` (the firmware keeps running)."""
        with self._lock:
            self._uart.dropout_until = self._clock() + seconds

    def drop(self, direction: str, count: int = 1, kind: str | None = None) -> None:
        """Lose the next ``count`` frames going ``direction`` ("rx": from the Pi, "tx": to it).

        ``kind`` limits it to frames of that ``t``; without it, acks pass.
        """
        if direction not in ("rx", "tx"):
            raise ValueError(f"direction must be 'rx' or 'tx', not {direction!r}")
        with self._lock:
            self._uart.rules[direction].append(_DropRule(count, kind))

    def noise(self, data: bytes | int) -> None:
        """Send garbage to the Pi: these bytes, or that many random ones."""
        raw = os.urandom(data) if isinstance(data, int) else bytes(data)
        with self._lock:
            self._uart.write_raw(raw)

    def unplug(self, seconds: float | None = None) -> None:
        """Close the pty, as a pulled cable; with ``seconds``, plug back in after them."""
        with self._lock:
            self._uart.close()
            if seconds is not None:
                self.after(seconds, self.replug)

    def replug(self) -> None:
        with self._lock:
            if self._uart.master is None:
                self._plug()

    def reboot(self) -> None:
        """Restart the firmware: outputs off, fresh link state, an unprompted hello."""
        with self._lock:
            self._boot()

    # -- what happened ----------------------------------------------------------

    def received(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Frames that came from the Pi (and were not dropped), oldest first."""
        return self._log("rx", kind)

    def sent(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Frames the firmware sent to the Pi (and were not dropped), oldest first."""
        return self._log("tx", kind)

    def _log(self, direction: str, kind: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self._uart.logs[direction] if kind is None or b["t"] == kind]

    @property
    def outputs(self) -> list[bool]:
        with self._lock:
            return list(self.hw.outputs)

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            merged = dict(self._uart.counts)
            if self.app is not None:
                merged.update(self.app.link.counters)
                merged.update(self.app.stats)
            return merged

    @staticmethod
    def _index(index: int, count: int, what: str) -> int:
        if not 0 <= index < count:
            raise IndexError(f"{what} {index} does not exist (the simulator has {count})")
        return index


def random_uid(rng: random.Random | None = None) -> bytes:
    """A 4-byte ISO 14443A UID, as a simulated card."""
    return bytes((rng or random.Random()).randrange(256) for _ in range(4))
