"""Dashboard figures: bus-to-browser latency and memory with 500 agents.

    .venv/bin/python -m bench.bench_web [--alarms 50] [--scans 200] [--agents 500]

Latency: a real headless Chromium (Debian's /usr/bin/chromium) logged in on
the alarms page; each alarm is raised through the real store and alarm book,
which publishes the notice on the bus. Measured from that publish (a bus
subscriber notes the time) to the moment the page has the card in its DOM
(the page notes ``performance.timeOrigin + performance.now()``). Alarms go
one at a time; an alarm card costs the stream message plus one fragment
fetch. Scans are measured the same way (stream message only).

Memory: a generated plan of 500 agents in 100 grids, every agent with a row
and telemetry; the server's allocations while rendering the agents page and
/api/agents (tracemalloc peak), the process's RSS, and the browser's JS heap
and DOM size on the agents page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.bus import Notice  # noqa: E402
from central.plan.parse import parse_plan_bytes  # noqa: E402
from central.web.server import WebServer  # noqa: E402
from tests.web.conftest import CHROMIUM, PASSWORD, World, make_world  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def login(context: Any, url: str, path: str = "/") -> Any:
    page = context.new_page()
    page.goto(url + path)
    page.fill("input[name=name]", "duty")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + path)
    page.wait_for_selector("#live.on")
    return page


def big_plan(agents: int) -> bytes:
    lines = ['timezone = "Asia/Shanghai"', "unit = [", '  { id = "fengze", tier = "district", name = "丰泽区" },']
    grids = []
    for s in range(5):
        lines.append(f'  {{ id = "s{s}", tier = "street", parent = "fengze", name = "街道{s}" }},')
        for c in range(5):
            lines.append(f'  {{ id = "s{s}c{c}", tier = "community", parent = "s{s}", name = "社区{s}-{c}" }},')
            for g in range(4):
                gid = f"s{s}c{c}g{g}"
                grids.append(gid)
                lines.append(f'  {{ id = "{gid}", tier = "grid", parent = "s{s}c{c}", name = "网格{s}-{c}-{g}" }},')
    lines += ["]", "agent = ["]
    lines += [f'  {{ id = "agent-{i:03d}", unit = "{grids[i % len(grids)]}", name = "学校{i}号门" }},' for i in range(agents)]
    lines.append("]")
    return "\n".join(lines).encode()


def measure_latency(world: World, browser: Any, n_alarms: int, n_scans: int) -> dict[str, list[float]]:
    published: dict[str, float] = {}
    lock = threading.Lock()

    def note(notice: Notice) -> None:
        key = None
        if notice.topic == "alarm" and notice.data.get("state") == "active":
            key = f"{notice.data['id']}:active"
        elif notice.topic == "event":
            key = f"event:{notice.data['agent']}:{notice.data['eseq']}"
        if key:
            with lock:
                published.setdefault(key, time.time())

    world.bus.subscribe(note)
    server = WebServer(world.build_app(), "127.0.0.1:0")
    server.start()
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    out: dict[str, list[float]] = {"alarm": [], "scan": []}
    try:
        page = login(context, server.url)
        for i in range(n_alarms):
            alarm_id = world.raise_alarm("school-9-gate-1", f"button-{i}")
            key = f"{alarm_id}:active"
            seen = page.wait_for_function("(k) => window.gpLive.seen[k]", arg=key, timeout=10_000).json_value()
            out["alarm"].append(seen / 1000 - published[key])
        for _ in range(n_scans):
            event = world.store_event("school-9-gate-1", "scan", "gate-1", tag="67003B51C6")
            key = f"event:{event.agent}:{event.eseq}"
            seen = page.wait_for_function("(k) => window.gpLive.seen[k]", arg=key, timeout=10_000).json_value()
            out["scan"].append(seen / 1000 - published[key])
    finally:
        context.close()
        server.stop()
    return out


def measure_memory(root: Path, browser: Any, agents: int) -> list[tuple[str, str]]:
    world = make_world(root)
    world.plans.add(parse_plan_bytes(big_plan(agents)))
    for i in range(agents):
        world.set_presence(f"agent-{i:03d}", "offline" if i % 17 == 0 else "online",
                           outbox_depth=i % 5, reconnects=i % 3, clock_synced=i % 11 != 0, uptime_s=3600.0)
    rows: list[tuple[str, str]] = []
    rss_before = rss_mib()
    app = world.build_app()
    server = WebServer(app, "127.0.0.1:0")
    server.start()
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        import httpx2

        page = login(context, server.url, "/agents")
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        with httpx2.Client(base_url=server.url, cookies=cookies, timeout=30) as client:
            for path in ("/agents", "/api/agents"):
                client.get(path)  # warm
                tracemalloc.start()
                started = time.perf_counter()
                r = client.get(path)
                took = time.perf_counter() - started
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert r.status_code == 200, r.status_code
                rows.append((f"server {path}: answer", f"{len(r.content) / 1024:.0f} KiB in {took * 1000:.0f} ms"))
                rows.append((f"server {path}: allocation peak", f"{peak / 2**20:.1f} MiB"))
        page.reload()
        page.wait_for_selector("#live.on")
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        rows.append(("browser agents page: JS heap used", f"{metrics['JSHeapUsedSize'] / 2**20:.1f} MiB"))
        rows.append(("browser agents page: DOM nodes", f"{int(metrics['Nodes'])}"))
        rows.append(("browser agents page: rows", str(page.eval_on_selector_all("#agents tbody tr", "r => r.length"))))
        rows.append(("server process RSS (after build + pages)", f"{rss_mib():.0f} MiB (+{rss_mib() - rss_before:.0f})"))
        rows.append(("server process peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))
    finally:
        context.close()
        server.stop()
        world.alarms.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=50)
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--agents", type=int, default=500)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is not installed", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            world = make_world(Path(tmp) / "latency")
            try:
                lat = measure_latency(world, browser, args.alarms, args.scans)
            finally:
                world.alarms.close()
            memory = measure_memory(Path(tmp) / "memory", browser, args.agents)
        finally:
            browser.close()

    print(f"bench_web  {dt.datetime.now().isoformat(timespec='seconds')}  chromium headless, same machine")
    print()
    print(f"{'bus notice -> browser DOM':<34}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, values in (("new alarm card (stream + fragment)", lat["alarm"]), ("scan in live feed (stream)", lat["scan"])):
        ms = [v * 1000 for v in values]
        print(f"{name:<34}{len(ms):>6}{statistics.median(ms):>10.1f}{percentile(ms, 99):>10.1f}{max(ms):>10.1f}")
    print()
    print(f"{'dashboard with %d agents' % args.agents:<44}value")
    for name, value in memory:
        print(f"{name:<44}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
