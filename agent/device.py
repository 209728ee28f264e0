"""The one shape every device of the agent has (docs/architecture.md).

A zone, an emergency button, an output, a serial reader and a
microcontroller link are built from their config table and then only ticked,
read and closed; :class:`~agent.inputs.loop.InputLoop` and
:class:`~agent.runtime.Agent` treat them alike through this protocol.

Constructor convention (not expressible in a Protocol, kept by every class):
``(config, *, emit: EventSink, wake: Callable[[], None] = ..., pin_factory=None,
clock=time.monotonic)``, each collaborator keyword-only and defaulting to the
real thing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Device(Protocol):
    """Something the input loop ticks: time-driven work only, never blocking."""

    name: str

    @property
    def state(self) -> str:
        """A short word for the retained state snapshot (``normal``, ``up``, ``on``, ...)."""
        ...

    def tick(self, now: float) -> float | None:
        """Do time-driven work (debounce, hold timers, output limits); the next monotonic time a tick is due, or None."""
        ...

    def close(self) -> None:
        """Release the pin or port; the device is not used again."""
        ...


@runtime_checkable
class ThreadedDevice(Device, Protocol):
    """A device with a thread of its own (a serial reader, a microcontroller link).

    ``last_beat`` is the monotonic time that thread last went round its loop;
    the agent's health (the systemd watchdog) goes stale when it stops moving.
    """

    @property
    def last_beat(self) -> float | None: ...
