"""Central: the collector built from a CentralConfig.

The store and the ingest (MQTT session, presence, acks, replays) at its core;
around them the plan registry (which agents are planned), the alarm book
(raise, escalate, acknowledge, agent-offline), the completion tracker
(rounds as scans arrive, retained on ``completion/<unit>``) and the web
dashboard, all fed by ingest's listeners and the in-process bus.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, cast

from central.alarms import AlarmBook, offline_agents
from central.bus import Bus
from central.cameras.taker import SnapshotTaker  # issue 14
from central.config import CentralConfig
from central.feed import GroupFeed
from central.homeassistant import HomeAssistant
from central.ingest import URGENT_KINDS, Ingest, Listener
from central.leader import Leadership
from central.notify.notifier import Notifier  # issue 14
from central.plan.registry import PlanRegistry
from central.relay import Relay
from central.session import GroupVoice
from central.store import StoredEvent, open_store
from central.tracker import CompletionTracker, store_feedback_readers, store_scans
from wire.messages import Command

if TYPE_CHECKING:
    from central.web.server import WebServer

_LOGGER = logging.getLogger(__name__)

# A loop that has not turned for this long is stalled: the watchdog pings stop.
STALL_S = 30.0
RETENTION_EVERY_S = 3600.0
# The leader's tracker reads the day's scans back from the store this often: a safety net only, since the
# group's feed (central/feed.py) hands it every member's scans as they commit, and resyncs it when it missed some.
GROUP_RESYNC_S = 60.0
# Events sent to browsers live, per second and in a burst (BusBridge); alarms always go.
LIVE_EVENTS_PER_S = 50.0
LIVE_EVENTS_BURST = 200


def config_retains(config: CentralConfig) -> bool:
    return config.store.retain_days > 0


class BusBridge:
    """A listener that hands what ingest stored on to the bus (``event`` and ``presence`` notices).

    Browsers get the events live within a budget (LIVE_EVENTS_PER_S, bursts up
    to LIVE_EVENTS_BURST). Past it, during a flood of scans, the rest are not
    shaped into notices at all: an ``events-skipped`` notice per batch tells the
    live hub, which has the open pages read their lists again once the flood
    eases. Alarm, tamper, panic and restore events always go live. The budget
    protects the collector: every notice costs the process that also reads the
    broker's socket, where a panic may be waiting behind the flood.
    """

    def __init__(self, bus: Bus, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self._monotonic = monotonic
        self._tokens = float(LIVE_EVENTS_BURST)
        self._filled_at = monotonic()
        self.skipped = 0  # events not sent live, in all

    def events_stored(self, events: Sequence[StoredEvent]) -> None:
        if not self._bus.listened:
            return  # no browser open: shaping a flood of scans into notices would only cost the collector CPU
        now = self._monotonic()
        self._tokens = min(float(LIVE_EVENTS_BURST), self._tokens + (now - self._filled_at) * LIVE_EVENTS_PER_S)
        self._filled_at = now
        publish = self._bus.publish
        skipped = 0
        for e in events:
            if e.kind in URGENT_KINDS:
                publish("event", e.to_notice())
            elif self._tokens >= 1.0:
                self._tokens -= 1.0
                publish("event", e.to_notice())
            else:
                skipped += 1
        if skipped:
            self.skipped += skipped
            publish("events-skipped", {"count": skipped})

    def presence_changed(self, agent: str, state: str, ts: int) -> None:
        self._bus.publish("presence", {"agent": agent, "state": state, "ts": ts})


class Central:
    """Everything ``gridpatrol central`` runs; start() and stop() from one thread.

    ``alarms``, ``tracker`` and ``web`` switch those parts off for tests and
    benchmarks that want the ingest alone (or bring their own).
    """

    def __init__(self, config: CentralConfig, *, clock: Callable[[], float] = time.time,
                 listeners: Iterable[Listener] = (), bus: Bus | None = None,
                 is_planned: Callable[[str], bool] | None = None,
                 alarms: bool = True, tracker: bool = True, web: bool = True) -> None:
        self.config = config
        self.clock = clock
        self.bus = bus if bus is not None else Bus()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(config.store.url)
        self.plans = PlanRegistry.for_data_dir(config.data_dir)
        # Derived work runs behind relays (bounded queues, threads of their own): ingest never waits on it.
        # One bridge, so one live budget for what this member stored and what the others did (a group's feed).
        self.bus_bridge = BusBridge(self.bus)
        self.relays: list[Relay] = [Relay(self.bus_bridge, name="dashboard-feed")]
        group = config.ingest.group
        self.ingest = Ingest(config.mqtt, self.store, listeners=(*listeners, self.relays[0]),
                             is_planned=is_planned if is_planned is not None else self.plans.is_planned, clock=clock,
                             group=group)
        # A group's once-only duties go to the member that holds the store's lock (central/leader.py).
        self.leadership: Leadership | None = None
        self.voice: GroupVoice | None = None
        if group is not None:
            self.leadership = Leadership(self.store, group, on_gain=self._lead, on_loss=self._follow)
            self.ingest.session.member_changed = self._member_changed
        self.alarm_book: AlarmBook | None = None
        if alarms:
            esc = config.escalation
            self.alarm_book = AlarmBook(
                self.store, plans=self.plans, grid_s=esc.grid_s, community_s=esc.community_s,
                street_s=esc.street_s, offline_grace_s=config.alarms.offline_grace_s,
                send_command=self.ingest.send_command, bus=self.bus, offline_agents=offline_agents(self.store),
                clock=clock, leading=self._leading if group is not None else None,
            )
            self.ingest.add_writer(self.alarm_book)  # alarms commit with their events
            self.ingest.add_listener(self.alarm_book)  # presence and command answers
        # -- issue 14: both read alarm_steps on threads of their own, never on ingest's --
        self.notifier = Notifier(self.store, targets=config.notify, plans=self.plans, tz=config.tz,
                                 public_url=config.web.public_url, clock=clock) if alarms and config.notify else None
        self.snapshots = SnapshotTaker(self.store, plans=self.plans, keep_days=config.cameras.keep_days,
                                       max_mb=config.cameras.max_mb, bus=self.bus, clock=clock) if alarms else None
        # -- end issue 14 --
        self.tracker: CompletionTracker | None = None
        if tracker:
            # In a group every member's tracker counts every member's scans (the feed), and only the
            # leader's answers them: one feedback command per scan, whichever member stored it.
            self.tracker = CompletionTracker(self.plans, load_scans=store_scans(self.store),
                                             publish=self._leader_publish, bus=self.bus, clock=clock,
                                             send_command=self._leader_command,
                                             feedback_readers=store_feedback_readers(self.store))
            self._relay(self.tracker, "completion-tracker")
        self.homeassistant: HomeAssistant | None = None
        if config.homeassistant.enabled:  # docs/homeassistant.md
            self.homeassistant = HomeAssistant(config.homeassistant, store=self.store, plans=self.plans,
                                               publish=self._leader_publish, clock=clock)
            for topic_filter in self.homeassistant.subscriptions:
                self.ingest.subscribe_extra(topic_filter, self.homeassistant.message_received)
            self._relay(self.homeassistant, "homeassistant")
        # In a group: what the other members store reaches this member's bus, tracker and Home Assistant.
        self.feed: GroupFeed | None = None
        if group is not None:
            self.feed = GroupFeed(self.store, group, member=config.mqtt.client_id, bus=self.bus,
                                  listeners=[part for part in (self.bus_bridge, self.tracker, self.homeassistant)
                                             if part is not None])
            self.ingest.add_writer(self.feed)  # announced inside the batch's transaction
        self._want_web = web
        self.web_server: WebServer | None = None
        self._started = False
        self._housekeeping = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._group_stop = threading.Event()
        self._group_wake = threading.Event()
        self._group_thread: threading.Thread | None = None
        self._resync_at = 0.0

    # -- a group's leader ([ingest] group, docs/scaling.md) ----------------------------

    def _leading(self) -> bool:
        return self.leadership is None or self.leadership.leading

    def _leader_publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publications made once for the group (completion, Home Assistant): only the leader's go out.

        A member that does not lead answers False, as for a publish that could
        not be queued, so the caller keeps it as unpublished.
        """
        return self._leading() and self.ingest.publish(topic, payload, retain=retain)

    def _leader_command(self, agent_id: str, command: Command) -> bool:
        """Commands sent once for the group (the tracker's ``feedback``): only the leader's go out."""
        return self._leading() and self.ingest.send_command(agent_id, command)

    def _lead(self) -> None:
        """This member leads now: central's status, the alarm book's clocks, the group-wide views."""
        assert self.config.ingest.group is not None
        self.voice = GroupVoice(self.config.mqtt, self.config.ingest.group, clock=self.clock)
        self.voice.start()
        if self.alarm_book is not None:
            self.alarm_book.take_over()
        for part in (self.notifier, self.snapshots):  # notifications and camera snapshots: once per group
            if part is not None:
                part.start()
        self._resync_at = 0.0
        self._group_wake.set()

    def _follow(self) -> None:
        voice, self.voice = self.voice, None
        if voice is not None:
            voice.stop()
        for part in (self.notifier, self.snapshots):
            if part is not None:
                part.stop()

    def _member_changed(self, member: str, online: bool, retained: bool) -> None:
        """A member of the group went offline (its Will): the leader says central is online anew, so every
        agent sends again what no ack covered, among it what the dead member had taken and not stored."""
        voice = self.voice
        if not online and not retained and voice is not None and member != self.config.mqtt.client_id:
            _LOGGER.warning("group member %s is gone: agents are asked to send their unacknowledged events again",
                            member)
            voice.announce()

    def _group_duties(self) -> None:
        """While leading: read the completion of the day back from the store on taking over, then every
        GROUP_RESYNC_S (the feed hands the tracker every member's scans; this covers a member that does not
        announce them, such as one still on an older version during an upgrade)."""
        while not self._group_stop.is_set():
            if self._leading() and self.tracker is not None and time.monotonic() >= self._resync_at:
                self._resync_at = time.monotonic() + GROUP_RESYNC_S
                try:
                    self.tracker.resync()
                except Exception:
                    _LOGGER.exception("reading the completion back from the store failed")
            self._group_wake.wait(1.0)
            self._group_wake.clear()

    def _relay(self, listener: Listener, name: str) -> None:
        relay = Relay(listener, name=name)
        self.relays.append(relay)
        self.ingest.add_listener(relay)

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

    @property
    def web_url(self) -> str | None:
        return None if self.web_server is None else self.web_server.url

    def start(self) -> None:
        for relay in self.relays:
            relay.start()
        self.ingest.start()
        self._started = True
        if self.feed is not None:
            self.feed.start()  # listening before the tracker reads the store: nothing falls in between
        # The tracker reads the store at start and counts each event once, so
        # nothing ingest stores around this moment is lost or doubled.
        if self.alarm_book is not None:
            self.alarm_book.start()
        for part in (self.notifier, self.snapshots):  # issue 14
            if part is not None and self.leadership is None:  # in a group: the leader's (_lead)
                part.start()
        if self.tracker is not None:
            self.tracker.start()
        if self.homeassistant is not None:
            self.homeassistant.start()
        if self.leadership is not None:
            self.leadership.start()
            self._group_stop.clear()
            self._group_thread = threading.Thread(target=self._group_duties, name="group-duties", daemon=True)
            self._group_thread.start()
        if config_retains(self.config):
            self._housekeeping.clear()
            self._housekeeper = threading.Thread(target=self._keep_house, name="store-retention", daemon=True)
            self._housekeeper.start()
        if self._want_web:
            self._start_web()
        _LOGGER.info("central: store %s, broker %s:%s%s", self.store.name, self.config.mqtt.host, self.config.mqtt.port,
                     f", dashboard {self.web_url}" if self.web_url else "")

    def _keep_house(self) -> None:
        """Retention (``[store] retain_days``): prune once at start, then every RETENTION_EVERY_S."""
        while not self._housekeeping.is_set():
            before_ms = int((self.clock() - self.config.store.retain_days * 86_400) * 1000)
            try:
                removed = self.store.prune(before_ms)
                if any(removed.values()):
                    _LOGGER.info("store retention (%s days): removed %s", self.config.store.retain_days, removed)
            except Exception:
                _LOGGER.exception("store retention failed; tried again in %s s", RETENTION_EVERY_S)
            self._housekeeping.wait(RETENTION_EVERY_S)

    def _start_web(self) -> None:
        # Imported here: the web stack is only for the long-running central. Metrics wiring (issue 16):
        # central_metrics (central/metrics.py) reads ingest and the store on each scrape of /metrics.
        from central.metrics import central_metrics
        from central.web.app import build_app
        from central.web.server import WebServer
        from central.web.wiring import StoreCompletionReports

        app = build_app(config=self.config, store=self.store, bus=self.bus, plan=self.plans, alarms=cast(Any, self.alarm_book),  # None only in tests that run central without alarms
                        report=StoreCompletionReports(store=self.store, plans=self.plans, tracker=self.tracker),
                        clock=self.clock, metrics=central_metrics(self))
        server = WebServer(app, self.config.web.listen)
        server.start()
        self.web_server = server

    def healthy(self) -> bool:
        """True while the ingest writer and the escalation thread turn and every relay runs (the watchdog's
        test: a hung store or a dead thread stops the pings, and systemd restarts central)."""
        if not self.ingest.alive(STALL_S):
            return False
        if self.alarm_book is not None and not self.alarm_book.alive(STALL_S):
            return False
        if self.leadership is not None and not self.leadership.alive(STALL_S):
            return False
        if self.feed is not None and not self.feed.alive(STALL_S):
            return False
        return all(relay.alive() for relay in self.relays)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.web_server is not None:
            self.web_server.stop()
        # Ingest first: a batch in hand still tells its listeners, so they
        # must outlive it. What they send afterwards is not queued (paho's
        # client has stopped), and agents resend whatever no ack covered.
        self._housekeeping.set()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=30)
            self._housekeeper = None
        if self.leadership is not None:
            self._group_stop.set()
            self._group_wake.set()
            if self._group_thread is not None:
                self._group_thread.join(timeout=30)
                self._group_thread = None
            self.leadership.stop()  # hands the voice over: its Will waits for the next leader
        self.ingest.stop()
        for relay in self.relays:
            relay.stop()
        if self.feed is not None:
            self.feed.stop()
        if self.tracker is not None:
            self.tracker.stop()
        if self.homeassistant is not None:
            self.homeassistant.stop()
        for part in (self.notifier, self.snapshots):  # issue 14
            if part is not None:
                part.close()
        if self.alarm_book is not None:
            self.alarm_book.close()
        self.store.close()

    def __enter__(self) -> Central:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
