"""Two centrals of one group on one PostgreSQL store; the leader SIGKILLed while four agents stream.

The group shares the agents' events through ``$share/district-1/...``; the
store decides the ack point and the leader. Killing the leader mid-stream
must lose and double nothing (every agent's outbox drains, the store holds
each eseq once), leave one alarm per input and one per panic, and move the leader's duties
(central's status among them) to the survivor within 10 s.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from central.store import open_store
from tests.e2e.site import central_toml
from tests.faults.harness import FaultSite, Toggler, outbox_state
from tests.support import Processes, wait_until
from wire import topics
from wire.messages import CentralStatus

pytestmark = pytest.mark.slow

AGENTS = ("gate-a", "gate-b", "gate-c", "gate-d")
GROUP = "district-1"
TAKEOVER_S = 10.0


def collector_conf(site: FaultSite, name: str, pg_url: str) -> Path:
    d = site.root / name
    d.mkdir(parents=True, exist_ok=True)
    text = central_toml(d, site.broker.port)
    text = text.replace(f'url = "sqlite://{d}/central.db"', f'url = "{pg_url}"')
    text = text.replace("[mqtt]\n", f'[mqtt]\nclient_id = "central-{name}"\n')
    conf = d / "central.toml"
    conf.write_text(text + f'\n[ingest]\ngroup = "{GROUP}"\n')
    return conf


def leads(site: FaultSite, name: str) -> bool:
    log = site.root / f"{name}.log"
    return log.exists() and f"this central leads group {GROUP}" in log.read_text(errors="replace")


def stored(pg_url: str, agent: str) -> list[int]:
    store = open_store(pg_url)
    try:
        with closing(store.connect(readonly=True)) as conn:
            return [r[0] for r in conn.execute("SELECT eseq FROM events WHERE agent = ? ORDER BY eseq", (agent,))]
    finally:
        store.close()


PANIC_PIN = 27
PANIC_HOLD_S = 0.75  # the button's hold_ms is 600 (tests/e2e/site.py)


class Staff:
    """Presses one agent's panic button, waits for its alarm in the store, acknowledges it, again."""

    def __init__(self, site: FaultSite, agent_id: str, pg_url: str) -> None:
        self.agent = site.agents[agent_id]
        self.store = open_store(pg_url)
        self.presses = 0
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"staff {agent_id}", daemon=True)

    def start(self) -> Staff:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.store.close()

    def _open_panic(self) -> int | None:
        return next((a.id for a in self.store.alarms() if a.agent == self.agent.agent_id and a.kind == "panic"
                     and a.state == "active"), None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.agent.drive(PANIC_PIN, "low")
                time.sleep(PANIC_HOLD_S)
                self.agent.drive(PANIC_PIN, "high")
                self.presses += 1
                alarm_id = wait_until(self._open_panic, timeout=30, interval=0.2, message="the panic's alarm")
                self.store.acknowledge(alarm_id, "fault-suite", int(time.time() * 1000))
                self._stop.wait(0.3)
        except Exception as exc:  # noqa: BLE001  # a thread's exception would otherwise only be printed
            self.failure = f"{self.agent.agent_id}: press {self.presses}: {exc!r}"


def panics_and_alarms(pg_url: str, agent: str) -> tuple[int, int]:
    store = open_store(pg_url)
    try:
        events = len(store.list_events(agent=agent, kind="panic"))
        alarms = sum(1 for a in store.alarms(include_all=True) if a.agent == agent and a.kind == "panic")
    finally:
        store.close()
    return events, alarms


class StatusWatch:
    """Every central status the broker delivers (retained first), with the time it came."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[float, bool, bool]] = []  # (monotonic, online, retained)
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-watch", protocol=mqtt.MQTTv5)
        self._client.on_connect = lambda c, *a: c.subscribe(topics.CENTRAL_STATUS, qos=1)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload:
            with self._lock:
                self.seen.append((time.monotonic(), CentralStatus.from_payload(bytes(msg.payload)).online,
                                  bool(msg.retain)))

    def offline_since(self, t: float) -> list[float]:
        with self._lock:
            return [at for at, online, _ in self.seen if at >= t and not online]

    def online_since(self, t: float) -> bool:
        with self._lock:
            return any(online for at, online, _ in self.seen if at >= t)

    def close(self) -> None:
        gone = threading.Event()
        self._client.on_disconnect = lambda *a: gone.set()
        self._client.disconnect()
        gone.wait(10)  # paho's thread closes the socket once DISCONNECT is out
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # noqa: SLF001


@pytest.mark.timeout(240)
@pytest.mark.parametrize("killed", ["leader", "member"])
def test_two_collectors_one_sigkilled_mid_stream_lose_and_double_nothing(make_site, pg_url: str,  # type: ignore[no-untyped-def]
                                                                         processes: Processes, killed: str) -> None:
    site: FaultSite = make_site()
    confs = {name: collector_conf(site, name, pg_url) for name in ("one", "two")}
    procs = {}
    for name in ("one", "two"):
        procs[name] = processes.gridpatrol("central", "--config", str(confs[name]), log=site.root / f"{name}.log")
        if name == "one":
            wait_until(lambda: leads(site, "one"), timeout=20, message="the first collector leading")
    watch = StatusWatch(site.broker.port)
    togglers: list[Toggler] = []
    staff: list[Staff] = []
    try:
        wait_until(lambda: watch.online_since(0), message="central's status online")
        for agent_id in AGENTS:
            site.add_agent(agent_id, resend_s=2, keepalive_s=5)
            site.start_agent(agent_id)
        togglers = [Toggler(site.agents[a]).start() for a in AGENTS]
        staff = [Staff(site, a, pg_url).start() for a in AGENTS]
        wait_until(lambda: all(len(stored(pg_url, a)) >= 40 for a in AGENTS), timeout=60, interval=0.2,
                   message="the stream reaching both collectors")
        two_log = (site.root / "two.log").read_text(errors="replace")
        assert "could not store" not in two_log

        dead, survivor = ("one", "two") if killed == "leader" else ("two", "one")
        Processes.kill(procs[dead])  # mid-stream
        killed_at = time.monotonic()
        wait_until(lambda: leads(site, survivor), timeout=TAKEOVER_S, interval=0.05, message="the survivor leading")
        took_over_s = time.monotonic() - killed_at
        marks = {a: len(stored(pg_url, a)) for a in AGENTS}
        wait_until(lambda: all(len(stored(pg_url, a)) >= marks[a] + 40 for a in AGENTS), timeout=60, interval=0.2,
                   message="the stream going on through the survivor")
        for t in togglers:
            t.stop()
        for person in staff:
            person.stop()
        assert [p.failure for p in staff if p.failure] == []
        assert all(p.presses >= 2 for p in staff), [p.presses for p in staff]

        def drained() -> bool:
            for a in AGENTS:
                last, rows = outbox_state(site.agents[a].directory)
                if rows or stored(pg_url, a) != list(range(1, last + 1)):
                    return False
            return True

        wait_until(drained, timeout=60, interval=0.5, message="every outbox drained, every eseq stored once")
        # Central never said offline: the dead leader's Will waited, and the survivor took its voice over.
        assert watch.offline_since(killed_at) == []
        store = open_store(pg_url)
        try:
            alarms = store.alarms(include_all=True)
        finally:
            store.close()
        by_input: dict[tuple[str, str, str], int] = {}
        for alarm in alarms:
            key = (alarm.agent, alarm.source, alarm.kind)
            by_input[key] = by_input.get(key, 0) + 1
        # The zones tripped hundreds of times, never acknowledged: one alarm per input, however many members.
        assert {k: n for k, n in by_input.items() if k[2] == "alarm"} == {(a, "north-fence", "alarm"): 1
                                                                          for a in AGENTS}
        # Every panic stored is one alarm (each was acknowledged before the next press): none lost, none doubled.
        for a in AGENTS:
            events, alarms_of_panics = panics_and_alarms(pg_url, a)
            assert events == alarms_of_panics >= 2, (a, events, alarms_of_panics)
        assert took_over_s < TAKEOVER_S
        if killed == "member":  # the leader asked every agent to send its unacknowledged events again
            log = (site.root / "one.log").read_text(errors="replace")
            assert re.search(r"group member central-two is gone", log), log[-3000:]
        print(f"\ngroup, {killed} killed: leader after {took_over_s:.2f} s;"
              f" stored {sum(len(stored(pg_url, a)) for a in AGENTS)} events")
    finally:
        for t in togglers:
            t.stop()
        for person in staff:
            person.stop()
        watch.close()
