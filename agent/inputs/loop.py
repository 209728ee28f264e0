"""The input loop: the one thread that ticks every input and output.

Device callbacks (gpiozero, pyserial readers) only record an edge and call
:meth:`InputLoop.wake`; this thread then does the debouncing, the hold timers,
the output timers and the emitting, so all of that runs in one place, in order,
and gpiozero is driven from one thread. Each pass ticks every device and then
waits until the earliest deadline any of them returned, a wake, or
``reread_s`` at most (so every input is read again at least that often).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Protocol, TypeVar

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

REREAD_S = 1.0
STOP_TIMEOUT_S = 5.0


class Tickable(Protocol):
    def tick(self, now: float) -> float | None:
        """Do time-driven work; return the next time a tick is needed, or None."""


class InputLoop:
    """Ticks devices on one thread; ``wake()`` and ``post()`` are thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, reread_s: float = REREAD_S) -> None:
        if not reread_s > 0:
            raise ValueError(f"reread_s must be greater than 0, not {reread_s}")
        self._clock = clock
        self.reread_s = reread_s
        self._devices: list[Tickable] = []
        self._posted: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_beat: float | None = None
        """Monotonic time of the last completed pass (None before the first): the watchdog's pulse."""
        self.errors = 0
        """Exceptions raised by device ticks and posted callables, counted."""
        self.passes = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add(self, device: Tickable) -> None:
        """Tick ``device`` on every pass from now on."""
        with self._lock:
            self._devices.append(device)
        self.wake()

    def remove(self, device: Tickable) -> None:
        with self._lock:
            try:
                self._devices.remove(device)
            except ValueError:
                pass

    def wake(self) -> None:
        """Ask for a pass as soon as possible (from any thread, never blocks)."""
        self._wakeup.set()

    def post(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the loop thread, before the next pass's ticks.

        The returned future carries its result or its exception. After
        :meth:`stop` the future fails at once with RuntimeError.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._stopping:
                future.set_exception(RuntimeError("the input loop is stopped"))
                return future
            self._posted.append((fn, future))
        self.wake()
        return future

    def start(self) -> InputLoop:
        if self._thread is not None:
            raise RuntimeError("the input loop was already started")
        self._thread = threading.Thread(target=self._run, name="gridpatrol-inputs", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the thread (after the pass in progress). Idempotent."""
        with self._lock:
            self._stopping = True
            left = list(self._posted)
            self._posted.clear()
        for _, future in left:
            future.set_exception(RuntimeError("the input loop is stopped"))
        self.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.error("the input loop did not stop within %s s", timeout)

    close = stop

    def run_pass(self) -> float:
        """One pass: posted callables, then every device's tick. Returns when the next is due."""
        while True:
            with self._lock:
                if not self._posted:
                    break
                fn, future = self._posted.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except Exception as exc:
                self.errors += 1
                # The poster holds the future and decides; a warning keeps a trace.
                _LOGGER.warning("posted %r failed: %r", fn, exc)
                future.set_exception(exc)
            else:
                future.set_result(result)
        now = self._clock()
        due = now + self.reread_s
        with self._lock:
            devices = list(self._devices)
        for device in devices:
            try:
                deadline = device.tick(now)
            except Exception:
                self.errors += 1
                _LOGGER.exception("tick of %r failed", device)
                continue
            if deadline is not None and deadline < due:
                due = deadline
        self.last_beat = self._clock()
        self.passes += 1
        return due

    def _run(self) -> None:
        _LOGGER.debug("input loop started")
        while not self._stopping:
            # Cleared before the pass: a wake during the pass makes the next
            # wait return at once, so no edge waits for a timeout.
            self._wakeup.clear()
            due = self.run_pass()
            if self._stopping:
                break
            self._wakeup.wait(max(0.0, due - self._clock()))
        _LOGGER.debug("input loop stopped")
