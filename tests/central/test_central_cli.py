"""`gridpatrol central`, `agents` and `events` as a user runs them, against a real broker."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest

from central.config import load_config
from central.store import Store, StoredEvent
from tests.support import T0, Broker, FakeAgent, Processes, hang_up, run_cli, wait_until
from wire import topics
from wire.messages import CentralStatus, EventKind

AGENT = "school-9-gate-1"


def write_config(tmp_path: Path, broker: Broker, *, extra: str = "") -> Path:
    path = tmp_path / "central.toml"
    path.write_text(
        f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n{extra}'
    )
    return path


class StatusWatcher:
    """Keeps every central status it sees (the retained one first)."""

    def __init__(self, broker: Broker) -> None:
        self.seen: list[CentralStatus] = []
        self._lock = threading.Lock()
        self._gone = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-watcher", protocol=mqtt.MQTTv5)
        self.client.on_disconnect = lambda *a: self._gone.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topics.CENTRAL_STATUS, 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append(CentralStatus.from_payload(msg.payload))

    def last(self) -> CentralStatus | None:
        with self._lock:
            return self.seen[-1] if self.seen else None

    def close(self) -> None:
        hang_up(self.client, self._gone)


@pytest.fixture
def watcher(broker: Broker) -> Iterator[StatusWatcher]:
    w = StatusWatcher(broker)
    try:
        yield w
    finally:
        w.close()


def start_central(processes: Processes, config: Path, watcher: StatusWatcher, log: Path) -> Any:
    proc = processes.gridpatrol("central", "--config", str(config), log=log)
    wait_until(lambda: (watcher.last() or CentralStatus(False, 0)).online or proc.poll() is not None,
               timeout=20, message="central's online status")
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.mark.slow
def test_central_stores_what_agents_send_and_the_cli_lists_it(tmp_path: Path, broker: Broker,
                                                             processes: Processes, watcher: StatusWatcher) -> None:
    config = write_config(tmp_path, broker)
    log = tmp_path / "central.log"
    proc = start_central(processes, config, watcher, log)
    before = int(time.time() * 1000)
    agent = FakeAgent(broker, AGENT)
    try:
        agent.online(bdseq=4)
        agent.event(1)
        agent.event(2, kind=EventKind.FAULT, source="front-end", code="port-lost", detail="/dev/ttyACM0 gone")
        agent.event(3, kind=EventKind.OUTPUT, source="siren", replayed=True, output="siren", on=True)
        wait_until(lambda: agent.acked(3), timeout=15, message="ack of eseq 3")
    finally:
        agent.close()
    after = int(time.time() * 1000)

    # While central runs: the store is read from another process.
    out = run_cli("agents", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert set(row) == {"agent", "state", "bdseq", "last_seen", "acked_eseq", "epoch"}
    assert (row["agent"], row["state"], row["bdseq"], row["acked_eseq"]) == (AGENT, "online", 4, 3)
    assert before <= row["last_seen"] <= after

    out = run_cli("events", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)
    received = [e.pop("received_ts") for e in events]
    assert all(before <= r <= after for r in received)
    # No plan has been imported, so no plan knows this agent: every event is
    # stored and acked like any other, and flagged.
    assert [e.pop("unplanned") for e in events] == [True, True, True]
    assert events == [
        {"agent": AGENT, "eseq": 1, "kind": "scan", "source": "gate-1", "ts": T0 + 1000, "replayed": False,
         "epoch": "", "tag": "0000000001", "cards": ["0000000001", "0,1"]},
        {"agent": AGENT, "eseq": 2, "kind": "fault", "source": "front-end", "ts": T0 + 2000, "replayed": False,
         "epoch": "", "code": "port-lost", "detail": "/dev/ttyACM0 gone"},
        {"agent": AGENT, "eseq": 3, "kind": "output", "source": "siren", "ts": T0 + 3000, "replayed": True,
         "epoch": "", "output": "siren", "on": True},
    ]

    out = run_cli("events", "--config", str(config), "--json", "--kind", "fault", "--agent", AGENT)
    assert [e["eseq"] for e in json.loads(out.stdout)] == [2]
    out = run_cli("events", "--config", str(config), "--json", "--agent", "someone-else")
    assert json.loads(out.stdout) == []

    out = run_cli("events", "--config", str(config))
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "ESEQ", "KIND", "SOURCE", "HAPPENED", "RECEIVED", "FLAGS", "DETAILS"]
    # T0 + 1 s is 2023-11-15 06:13:21 in Asia/Shanghai.
    assert lines[1].split()[:6] == [AGENT, "1", "scan", "gate-1", "2023-11-15", "06:13:21"]
    assert lines[1].endswith("tag=0000000001")
    assert "replayed" in lines[3] and "on=True output=siren" in lines[3]
    out = run_cli("agents", "--config", str(config))
    assert out.stdout.splitlines()[0].split() == ["AGENT", "STATE", "BDSEQ", "LAST", "SEEN", "ACKED", "ESEQ"]
    assert out.stdout.splitlines()[1].split()[:3] == [AGENT, "online", "4"]

    # SIGTERM: a clean stop that says so on the retained status.
    assert Processes.terminate(proc) == 0, log.read_text()
    wait_until(lambda: watcher.last() is not None and not watcher.last().online, message="offline status")  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_crashed_central_leaves_its_will(tmp_path: Path, broker: Broker, processes: Processes,
                                           watcher: StatusWatcher) -> None:
    config = write_config(tmp_path, broker, extra="keepalive_s = 2\n")
    proc = start_central(processes, config, watcher, tmp_path / "central.log")
    Processes.kill(proc)
    wait_until(lambda: not watcher.last().online, timeout=15, message="central's Will")  # type: ignore[union-attr]
    # And it comes back online, with the events sent while it was away.
    agent = FakeAgent(broker, AGENT)
    try:
        agent.online()
        agent.event(1)
        start_central(processes, config, watcher, tmp_path / "central2.log")
        wait_until(lambda: agent.acked(1), timeout=15, message="ack after the restart")
    finally:
        agent.close()


def test_bad_usage_exits_2_with_one_line(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker)
    out = run_cli("events", "--config", str(config), "--kind", "explode")
    assert out.returncode == 2
    assert out.stderr == ("gridpatrol: --kind: 'explode' is not one of alarm, restore, tamper, panic, scan, fault, "
                          "output\n")
    out = run_cli("events", "--config", str(config), "--agent", "Not An Id", "--json")
    assert out.returncode == 2 and out.stdout == ""
    bad = tmp_path / "pg.toml"
    bad.write_text('timezone = "UTC"\ndata_dir = "/tmp/x"\n[store]\nurl = "postgresql://db"\n')
    out = run_cli("agents", "--config", str(bad), "--json")
    assert out.returncode == 2
    assert out.stderr == (f"gridpatrol: {bad}: store.url: 'postgresql://db' names no database"
                          " (postgresql://USER@HOST/DB)\n")
    out = run_cli("central", "--config", str(bad))
    assert out.returncode == 2 and "names no database" in out.stderr


def test_before_central_ever_ran_the_lists_are_empty(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker)
    out = run_cli("agents", "--config", str(config), "--json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    assert "does not exist yet" in out.stderr
    out = run_cli("events", "--config", str(config), "--json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    out = run_cli("events", "--config", str(config))
    assert out.stdout == "no events\n"


def test_events_of_a_clock_no_calendar_holds_are_listed(tmp_path: Path, broker: Broker) -> None:
    """An agent's clock can say anything and its events are kept: the table shows the raw number, not a crash."""
    config = write_config(tmp_path, broker)
    store = Store(load_config(config).store.path)
    conn = store.connect()
    with conn:
        store.insert_events(conn, [StoredEvent(
            agent="gate-a", eseq=1, kind="scan", source="gate-1", ts=2**62, ts_est=2**62, ts_estimated=False,
            received_ts=T0, replayed=False, fields={"tag": "67003B51C6"}, boot_id="b", mono_ms=0, clock_synced=True)])
    conn.close()
    out = run_cli("events", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert f"? ({2**62} ms)" in out.stdout and "67003B51C6" in out.stdout
