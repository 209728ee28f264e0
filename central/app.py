"""Central: the collector built from a CentralConfig.

Today it is the store and the ingest (MQTT session, presence, acks, replays)
plus the bridge that turns stored events and presence changes into notices
on the bus for the dashboard. The alarm book, the plan registry, the
completion tracker and the web server attach at the marked hook points.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Callable, Iterable, Sequence

from central.bus import Bus
from central.config import CentralConfig
from central.ingest import Ingest, Listener
from central.store import Store, StoredEvent
from wire.messages import Command

_LOGGER = logging.getLogger(__name__)


class BusBridge:
    """A listener that hands what ingest stored on to the bus (``event`` and ``presence`` notices)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        for e in events:
            self._bus.publish("event", e.to_notice())

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        self._bus.publish("presence", {"agent": agent, "state": state, "ts": ts})


class Central:
    """Everything ``gridpatrol central`` runs; start() and stop() from one thread."""

    def __init__(self, config: CentralConfig, *, clock: Callable[[], float] = time.time,
                 listeners: Iterable[Listener] = (), bus: Bus | None = None,
                 is_planned: Callable[[str], bool] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.bus = bus if bus is not None else Bus()
        self.store = Store(config.store.path)
        # Hook: the plan registry is opened here and its lookup handed to ingest
        # as ``is_planned`` (or later through set_plan_check()).
        # Hook: the alarm book and the completion tracker are built here and
        # passed in ``listeners``; they get events after each commit.
        self.ingest = Ingest(config.mqtt, self.store, listeners=(*listeners, BusBridge(self.bus)),
                             is_planned=is_planned, clock=clock)
        self._started = False

    def add_listener(self, listener: Listener) -> None:
        """Attach another listener before start()."""
        if self._started:
            raise RuntimeError("add listeners before Central.start()")
        self.ingest.add_listener(listener)

    def set_plan_check(self, is_planned: Callable[[str], bool] | None) -> None:
        """Swap the plan lookup; takes effect from the next batch (a plan import applies within a second)."""
        self.ingest.is_planned = is_planned

    def send_command(self, agent_id: str, command: Command) -> bool:
        """Publish a command to an agent from any thread (the alarm book sends ``alarm-ack``)."""
        return self.ingest.send_command(agent_id, command)

    def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ingest.start()
        self._started = True
        # Hook: the alarm book's timers (escalation, offline grace) start here.
        # Hook: the web server starts here, serving self.store and self.bus.
        _LOGGER.info("central: store %s, broker %s:%s", self.store.path, self.config.mqtt.host, self.config.mqtt.port)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        # Hook: stop the web server and timers here, before ingest goes.
        self.ingest.stop()

    def __enter__(self) -> Central:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
