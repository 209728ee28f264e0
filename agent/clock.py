"""Time sources of the agent: is the wall clock synchronised, and a boot clock.

A Raspberry Pi has no real-time clock: until NTP (or chrony) has set it, the
wall clock may be days wrong. Every event therefore carries three stamps:
``ts`` (UTC milliseconds by the wall clock), ``mono_ms`` (milliseconds since
boot, which never jumps) and ``clock_synced`` (whether the kernel believes the
wall clock). Central can then place an unsynced event in real time from any
synced sample of the same boot (``ts - mono_ms`` is constant within a boot).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from typing import Callable

_LOGGER = logging.getLogger(__name__)

# adjtimex(2) return values; TIME_ERROR means "clock not synchronised".
TIME_ERROR = 5
# struct timex is ~208 bytes on 64-bit Linux and differs between ABIs (time64
# on 32-bit ARM); a zeroed buffer larger than any of them with modes = 0 is a
# pure read on every one of them, and only the return value is used.
_TIMEX_BUFFER_BYTES = 1024

_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)

_adjtimex: Callable[[ctypes.c_char_p], int] | None = None
_adjtimex_loaded = False


def _load_adjtimex() -> Callable[[ctypes.c_char_p], int] | None:
    global _adjtimex, _adjtimex_loaded
    if _adjtimex_loaded:
        return _adjtimex
    _adjtimex_loaded = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.adjtimex
    except (OSError, AttributeError) as exc:
        _LOGGER.warning("adjtimex is not available (%s): the clock counts as unsynchronised", exc)
        return None
    func.argtypes = [ctypes.c_void_p]
    func.restype = ctypes.c_int
    _adjtimex = func
    return func


def kernel_clock_state() -> int | None:
    """The kernel's clock state from adjtimex(2) (0 = TIME_OK ... 5 = TIME_ERROR), or None."""
    func = _load_adjtimex()
    if func is None:
        return None
    buf = ctypes.create_string_buffer(_TIMEX_BUFFER_BYTES)  # zeroed: modes = 0, read only
    state = func(ctypes.cast(buf, ctypes.c_char_p))
    if state < 0:
        _LOGGER.warning("adjtimex failed with errno %s", ctypes.get_errno())
        return None
    return state


def clock_synced() -> bool:
    """True when the kernel says the wall clock is synchronised (NTP, chrony, PTP).

    Unknown counts as not synchronised: claiming a good clock we do not have
    would make central trust a wrong ``ts``.
    """
    state = kernel_clock_state()
    return state is not None and state != TIME_ERROR


def monotonic() -> float:
    """Seconds since boot, including time suspended (CLOCK_BOOTTIME where it exists).

    Shared by every process of one boot, so ``mono_ms`` of events from an agent
    that restarted still lines up with the agent's earlier samples.
    """
    if _BOOT_CLOCK is not None:
        return time.clock_gettime(_BOOT_CLOCK)
    return time.monotonic()


def to_ms(seconds: float) -> int:
    return int(seconds * 1000)
