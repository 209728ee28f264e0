"""The seam between inputs and the rest of the agent.

Inputs know no outbox and no MQTT: each is handed an :class:`EventSink` and
calls it with the kind, its own name and the kind's fields. The runtime's sink
stamps time and eseq, commits the event to the outbox and wakes the publisher.
"""

from __future__ import annotations

from typing import Any, Protocol

from wire.messages import EventKind


class EventSink(Protocol):
    def __call__(self, kind: EventKind, source: str, /, **fields: Any) -> None:
        """Record one event. Must return quickly; never blocks on the network."""


class FaultCode:
    """``code`` values of ``fault`` events raised by the agent itself."""

    ZONE_FLAPPING = "zone-flapping"
    OUTBOX_FILLING = "outbox-filling"
    OUTBOX_FULL = "outbox-full"
    PORT_LOST = "port-lost"
    PORT_BACK = "port-back"
    LINK_LOST = "link-lost"
    LINK_BACK = "link-back"
    READER_SILENT = "reader-silent"
    READER_BACK = "reader-back"
    DISK_FULL = "disk-full"
    OUTBOX_RENEWED = "outbox-renewed"  # the outbox could not be read: moved aside, a new epoch began
    CLOCK_UNSYNCED = "clock-unsynced"
