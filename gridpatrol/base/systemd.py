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
from typing import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

# Ping at half the watchdog period, as sd_watchdog_enabled(3) recommends.
WATCHDOG_FRACTION = 0.5
# How often health is looked at when systemd set no watchdog (a stall is still logged).
HEALTH_CHECK_S = 5.0


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


def supervise(stop: threading.Event, healthy: Callable[[], bool], *, notifier: SystemdNotifier, name: str,
              check_s: float = HEALTH_CHECK_S) -> None:
    """READY=1, then until ``stop`` is set WATCHDOG=1 while ``healthy()``; STOPPING=1 at the end.

    Call once the service is up. ``healthy()`` says whether the threads that
    do the work are going round (the agent's input loop and session, central's
    ingest writer). While it says no, the pings are withheld, so systemd's
    watchdog restarts a hung service instead of leaving it half alive; the
    stall is logged once, and so is the recovery. Health is looked at every
    ``check_s`` seconds, or at the ping interval if that is shorter.
    """
    notifier.ready()
    ping_s = notifier.watchdog_interval_s
    interval = check_s if ping_s is None else min(check_s, ping_s)
    stalled = False
    try:
        while not stop.wait(interval):
            if healthy():
                if stalled:
                    _LOGGER.warning("%s is going round again: watchdog pings resume", name)
                stalled = False
                if ping_s is not None:
                    notifier.watchdog()
            elif not stalled:
                stalled = True
                # No ping: systemd's watchdog restarts the service if this lasts.
                _LOGGER.error("%s is stalled: watchdog pings withheld", name)
    finally:
        notifier.stopping()
