"""A real ``gridpatrol central`` under hostile web load, and what it costs the collector.

Used by tests/web/test_hostile.py (the checks of issue 12) and runnable on its
own to print the figures for docs/web.md::

    python -m tests.web.hostile [--nofile N] [--hold-s S]

Everything is on loopback: a Mosquitto of its own, central as its own process
(with the open-file limit the systemd unit gives it, set with prlimit), users
made with the production argon2 parameters by ``gridpatrol users add``. An
alarm is a panic published over MQTT as an agent would; its latency is from
the publish to the alarm row being readable in the store.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import resource
import socket
import sqlite3
import sys
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.support import Broker, Processes, free_port, run_cli, wait_until
from tests.web.conftest import PLAN
from wire import topics
from wire.messages import Event, EventKind

AGENT = "school-9-gate-1"
PASSWORD = "correct horse battery"
UNIT_NOFILE = 8192  # systemd/gridpatrol-central.service: LimitNOFILE
SYSTEMD_DEFAULT_NOFILE = 1024  # what a unit without LimitNOFILE gets
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of ``pid`` in MB, from /proc."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


@dataclass
class RunningCentral:
    root: Path
    broker: Broker
    proc: object
    port: int
    store: Path
    log: Path
    _eseq: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[attr-defined,no-any-return]

    def get(self, path: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def raise_panic(self, source: str) -> float:
        """Publish a panic as the agent would; seconds until central has stored its alarm."""
        self._eseq += 1
        event = Event(eseq=self._eseq, boot_id="boot-hostile", kind=EventKind.PANIC, source=source,
                      ts=int(time.time() * 1000), mono_ms=1000 + self._eseq, clock_synced=True)
        start = time.monotonic()
        self.broker.pub(topics.evt(AGENT), event.to_payload(), qos=1)
        wait_until(lambda: self.alarm_stored(source), timeout=30, interval=0.01, message=f"alarm for {source}")
        return time.monotonic() - start

    def alarm_stored(self, source: str) -> bool:
        with closing(sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)) as db:
            try:
                return db.execute("SELECT count(*) FROM alarms WHERE source = ?", (source,)).fetchone()[0] > 0
            except sqlite3.OperationalError:
                return False

    def sample_rss(self, stop: threading.Event, every_s: float = 0.05) -> threading.Thread:
        def run() -> None:
            while not stop.is_set():
                try:
                    self.samples.append(rss_mb(self.pid)[0])
                except OSError:
                    return
                stop.wait(every_s)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@contextmanager
def running_central(root: Path, *, nofile: int = UNIT_NOFILE, extra_web: str = "") -> Iterator[RunningCentral]:
    """Broker, plan, a user ``duty`` at the root unit, then ``gridpatrol central`` with ``nofile`` open files."""
    root.mkdir(parents=True, exist_ok=True)
    broker = Broker(root / "broker").start()
    procs = Processes()
    try:
        data = root / "data"
        port = free_port()
        config = root / "central.toml"
        config.write_text(
            f'timezone = "Asia/Shanghai"\ndata_dir = "{data}"\n[store]\nurl = "sqlite:///{data}/central.db"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n[web]\nlisten = "127.0.0.1:{port}"\n'
        f'trusted_proxies = ["127.0.0.1"]\n{extra_web}')
        plan = root / "plan.toml"
        plan.write_text(PLAN)
        for args, stdin in ((("plan", "import", str(plan)), None),
                            (("users", "add", "duty", "--unit", "fengze"), PASSWORD.encode() + b"\n")):
            done = run_cli(*args, "--config", str(config), stdin=stdin)
            assert done.returncode == 0, done.stderr
        log = root / "central.log"
        proc = procs.gridpatrol("central", "--config", str(config), log=log)
        # As systemd's LimitNOFILE does: soft and hard limit of the service's process.
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (nofile, nofile))
        running = RunningCentral(root, broker, proc, port, data / "central.db", log)

        def healthy() -> bool:
            try:
                return running.get("/healthz", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout=30, interval=0.1, message="central's /healthz")
        # Ingest is up once a first alarm goes through; later latencies are then comparable.
        running.raise_panic("warm-up")
        yield running
    finally:
        procs.close()
        broker.kill()


def _login(port: int, results: list[int], start: threading.Event, *, password: str | None = None,
           forwarded_for: str = "198.51.100.66", took: list[float] | None = None) -> None:
    """One login through the form; ``password`` None: a wrong one. Central trusts X-Forwarded-For from
    loopback here (``web.trusted_proxies``), so each client can be given an address of its own."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/login")
        resp = conn.getresponse()
        page = resp.read().decode()
        cookie = resp.getheader("set-cookie", "").split(";", 1)[0]
        match = _CSRF_RE.search(page)
        token = match.group(1) if match else ""
        start.wait(30)
        body = f"name=duty&password={password or f'wrong-{threading.get_ident()}'}&csrf={token}&next=/"
        began = time.monotonic()
        conn.request("POST", "/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "X-Forwarded-For": forwarded_for})
        resp = conn.getresponse()
        resp.read()
        results.append(resp.status)
        if took is not None:
            took.append(time.monotonic() - began)
        conn.close()
    except OSError:
        results.append(-1)


@dataclass(frozen=True)
class Figures:
    peak_rss_mb: float
    alarm_latency_s: float
    statuses: dict[str, int] = field(default_factory=dict)
    desk_login: tuple[int, float] | None = None  # the right password from another address meanwhile: status, seconds
    healthz_s: float | None = None
    log_growth_mb: float | None = None
    held: int | None = None


def login_burst(central: RunningCentral, logins: int = 40, *, addresses: int = 1) -> Figures:
    """``logins`` concurrent wrong-password logins for one name from ``addresses`` addresses; meanwhile a
    panic is raised and the same name logs in with the right password from another desk."""
    results: list[int] = []
    desk: list[int] = []
    desk_took: list[float] = []
    start = threading.Event()
    threads = [threading.Thread(target=_login, args=(central.port, results, start), daemon=True,
                                kwargs={"forwarded_for": f"198.51.100.{n % addresses + 1}"})
               for n in range(logins)]
    threads.append(threading.Thread(target=_login, args=(central.port, desk, start), daemon=True,
                                    kwargs={"password": PASSWORD, "forwarded_for": "10.0.0.7", "took": desk_took}))
    for t in threads:
        t.start()
    stop = threading.Event()
    sampler = central.sample_rss(stop)
    try:
        time.sleep(0.5)  # every client has its login page and token
        start.set()
        time.sleep(0.2)  # the hashing (if any) is under way
        latency = central.raise_panic("burst-panic")
        for t in threads:
            t.join(120)
    finally:
        stop.set()
        sampler.join()
    statuses: dict[str, int] = {}
    for status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return Figures(max(central.samples), latency, statuses, desk_login=(desk[0], desk_took[0]) if desk_took else None)


def idle_hold(central: RunningCentral, connections: int = 1100, hold_s: float = 20.0) -> Figures:
    """``connections`` idle TCP connections opened at once and kept for ``hold_s``; /healthz and a panic meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 1024), hard))
    log_before = central.log.stat().st_size
    socks: list[socket.socket] = []
    stop = threading.Event()
    sampler = central.sample_rss(stop)
    health: list[float] = []
    latency = 0.0
    try:
        for _ in range(connections):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", central.port))
            except BlockingIOError:
                pass
            socks.append(s)
        deadline = time.monotonic() + hold_s
        raised = False
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                status, _ = central.get("/healthz", timeout=5)
            except OSError:
                status = -1
            health.append(time.monotonic() - t0 if status == 200 else float("inf"))
            if not raised:
                latency = central.raise_panic("hold-panic")
                raised = True
            time.sleep(0.5)
        held = sum(1 for s in socks if _still_open(s))
    finally:
        stop.set()
        sampler.join()
        for s in socks:
            s.close()
    growth = (central.log.stat().st_size - log_before) / 1e6
    return Figures(max(central.samples), latency, healthz_s=max(health), log_growth_mb=growth, held=held)


def _session_cookie(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    page = resp.read().decode()
    cookie = resp.getheader("set-cookie", "").split(";", 1)[0]
    match = _CSRF_RE.search(page)
    body = f"name=duty&password={PASSWORD}&csrf={match.group(1) if match else ''}&next=/"
    conn.request("POST", "/login", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "X-Forwarded-For": "10.0.0.7"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 303, resp.status
    return resp.getheader("set-cookie", "").split(";", 1)[0]


def request_flood(central: RunningCentral, clients: int = 50, seconds: float = 10.0,
                  paths: tuple[str, ...] = ("/api/events?limit=1000", "/", "/api/alarms?all=1&limit=1000")) -> Figures:
    """``clients`` logged-in clients asking for the largest lists as fast as they can; a panic meanwhile."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-flood")
    client.connect("127.0.0.1", central.broker.port)
    client.loop_start()
    try:
        for n in range(300):  # something to read: large events (a 512-character detail, 200 free keys of 64)
            central._eseq += 1
            event = Event(eseq=central._eseq, boot_id="boot-hostile", kind=EventKind.FAULT, source=f"gate-{n}",
                          ts=int(time.time() * 1000), mono_ms=1000 + central._eseq, clock_synced=True,
                          fields={"code": "x", "detail": "界" * 512,
                                  **{f"n{k}": "界" * 64 for k in range(200)}})
            client.publish(topics.evt(AGENT), event.to_payload(), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    last = f"gate-{299}"

    def stored() -> bool:
        with closing(sqlite3.connect(f"file:{central.store}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM events WHERE source = ?", (last,)).fetchone()[0] > 0

    wait_until(stored, timeout=60, message="the large events stored")
    cookie = _session_cookie(central.port)
    stop = threading.Event()
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def hammer(n: int) -> None:
        while not stop.is_set():
            try:
                status, _ = central.get(paths[n % len(paths)], timeout=30, headers={"Cookie": cookie})
            except OSError:
                status = -1
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(clients)]
    sampler_stop = threading.Event()
    sampler = central.sample_rss(sampler_stop)
    try:
        for t in threads:
            t.start()
        time.sleep(seconds / 2)
        latency = central.raise_panic("flood-panic")
        health_t0 = time.monotonic()
        central.get("/healthz", timeout=30)
        health = time.monotonic() - health_t0
        time.sleep(seconds / 2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sampler_stop.set()
        sampler.join()
    return Figures(max(central.samples), latency, statuses, healthz_s=health)


def _still_open(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nofile", type=int, default=UNIT_NOFILE)
    parser.add_argument("--hold-s", type=float, default=20.0)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    out = {}
    with running_central(args.root / "burst", nofile=args.nofile) as central:
        base = rss_mb(central.pid)[0]
        out["login_burst"] = {"rss_before_mb": round(base, 1), **login_burst(central).__dict__}
    with running_central(args.root / "burst-spread", nofile=args.nofile) as central:
        out["login_burst_40_addresses"] = login_burst(central, addresses=40).__dict__
    with running_central(args.root / "flood", nofile=args.nofile) as central:
        out["request_flood"] = request_flood(central).__dict__
    with running_central(args.root / "hold", nofile=args.nofile) as central:
        out["idle_hold"] = idle_hold(central, hold_s=args.hold_s).__dict__
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
