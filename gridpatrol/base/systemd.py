"""sd_notify(3) over the standard library: READY=1, WATCHDOG=1, STOPPING=1.

systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket; a leading ``@``
means the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``.
Without them every call is a no-op, so agent and central run the same by hand.
Shared by both, which may not import each other: :func:`supervise` is the
main thread's loop of ``gridpatrol agent`` and ``gridpatrol central`` alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

# Ping at half the watchdog period, as sd_watchdog_enabled(3) recommends.
WATCHDOG_FRACTION = 0.5
# How often health is looked at when systemd set no watchdog (a stall is still logged).
HEALTH_CHECK_S = 5.0
# How often health is looked at before the first READY=1, so ready is told promptly.
READY_CHECK_S = 0.05


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_interval_s: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1_000_000 * WATCHDOG_FRACTION

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state string; False (and a log line) if systemd could not be told."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            _LOGGER.warning("sd_notify %r to %r failed: %s", state, self.address, exc)
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


class Heartbeats:
    """The threads a service needs going round, each known by its ``last_beat``.

    Each thread stamps a monotonic ``last_beat`` every time it goes round its
    loop; ``add`` registers a callable that reads it. The service is healthy
    while every one has beaten within ``stale_after_s``; a thread that has not
    beaten yet (None) is not healthy either. A ``Heartbeats`` is the
    ``healthy`` callable :func:`supervise` takes, and it names the stale
    threads in the log.
    """

    def __init__(self, *, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be greater than 0, not {stale_after_s}")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._beats: dict[str, Callable[[], float | None]] = {}

    def add(self, name: str, last_beat: Callable[[], float | None]) -> None:
        """Watch one more thread; ``name`` is what the log says when it stalls."""
        if name in self._beats:
            raise ValueError(f"a thread named {name!r} is already watched")
        self._beats[name] = last_beat

    @property
    def names(self) -> list[str]:
        return list(self._beats)

    def stale(self, now: float | None = None) -> list[str]:
        """The threads that have not gone round within ``stale_after_s``, in the order added."""
        now = self._clock() if now is None else now
        stale = []
        for name, last_beat in self._beats.items():
            beat = last_beat()
            if beat is None or now - beat >= self.stale_after_s:
                stale.append(name)
        return stale

    def __call__(self, now: float | None = None) -> bool:
        return not self.stale(now)


def supervise(stop: threading.Event, healthy: Callable[[], bool], *, notifier: SystemdNotifier, name: str,
              check_s: float = HEALTH_CHECK_S) -> None:
    """READY=1 once ``healthy()``, then WATCHDOG=1 while ``healthy()`` until ``stop``; STOPPING=1 at the end.

    Call once the service's threads are started. ``healthy()`` says whether
    the threads that do the work are going round (a :class:`Heartbeats`: the
    agent's input loop, session, readers and microcontroller links; central's
    ingest writer and what else central adds). Ready means exactly that, the
    first time it holds: READY=1 is withheld until then. Afterwards, while it
    says no, the pings are withheld, so systemd's watchdog restarts a hung
    service instead of leaving it half alive; the stall is logged once (with
    the stale threads' names when ``healthy`` can tell them), and so is the
    recovery. Health is looked at every ``check_s`` seconds, or at the ping
    interval if that is shorter.
    """
    ping_s = notifier.watchdog_interval_s
    interval = check_s if ping_s is None else min(check_s, ping_s)
    stalled = False
    try:
        while not healthy():
            if stop.wait(READY_CHECK_S):
                return
        notifier.ready()
        _LOGGER.info("%s is ready: every thread is going round", name)
        while not stop.wait(interval):
            if healthy():
                if stalled:
                    _LOGGER.warning("%s is going round again: watchdog pings resume", name)
                stalled = False
                if ping_s is not None:
                    notifier.watchdog()
            elif not stalled:
                stalled = True
                stale = healthy.stale() if isinstance(healthy, Heartbeats) else []
                # No ping: systemd's watchdog restarts the service if this lasts.
                _LOGGER.error("%s is stalled%s: watchdog pings withheld", name,
                              f" ({', '.join(stale)} not going round)" if stale else "")
    finally:
        notifier.stopping()
