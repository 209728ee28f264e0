"""The whole foundation over TLS (issue 6): the production broker, central and an agent with certificates.

Mosquitto runs exactly what ``gridpatrol pki broker-config`` prints (TLS only,
client certificates, per-agent ACL, the CN as username and client id);
``gridpatrol central`` and ``gridpatrol agent`` run as processes with
``tls_ca``/``tls_cert``/``tls_key``. Central keeps its configured client id
(``gridpatrol-central``): the broker replaces it with the certificate's CN,
``central``, and central's persistent session lives under that name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.site import Site, assert_once_in_order, kinds
from tests.security.tlsbroker import TlsBroker, with_tls
from tests.support import Processes, run_cli, wait_until

pytestmark = pytest.mark.slow

AGENT = "gate-a"  # tls_pki issued its certificate
ZONE = 17


@pytest.fixture
def site(tmp_path: Path, tls_broker: TlsBroker, processes: Processes) -> Iterator[Site]:
    s = Site(tmp_path / "site", tls_broker, processes)  # type: ignore[arg-type]  # Site only needs .port
    with_tls(s.central_conf, tls_broker.pki.identity("central"), tls_broker.pki.ca)
    yield s


def _alarms(site: Site) -> list[dict[str, Any]]:
    r = run_cli("alarms", "--config", str(site.central_conf), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _zone(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [k for k in kinds(events, AGENT) if k[1] == "north-fence"]


def test_alarm_restore_and_a_broker_restart_over_tls(site: Site, tls_broker: TlsBroker) -> None:
    site.start_central()
    a = site.add_agent(AGENT)
    with_tls(a.config, tls_broker.pki.identity(AGENT), tls_broker.pki.ca)
    site.start_agent(AGENT)
    wait_until(lambda: [r["state"] for r in site.agents_json() if r["agent"] == AGENT] == ["online"], timeout=30,
               interval=0.2, message="the agent online at central")

    # Loop opened: the event and the alarm at central.
    a.drive(ZONE, "high")  # an nc loop reads high when opened or cut
    events = site.wait_events(lambda ev: ("alarm", "north-fence") in kinds(ev), message="the alarm event")
    alarm = next(e for e in events if e["kind"] == "alarm")
    # No plan imported: the agent is not in it, and its events say so (stored and acked all the same).
    assert (alarm["agent"], alarm["replayed"], alarm["unplanned"]) == (AGENT, False, True)
    wait_until(lambda: [(x["agent"], x["source"], x["kind"], x["state"]) for x in _alarms(site)]
               == [(AGENT, "north-fence", "alarm", "active")], timeout=20, interval=0.2, message="the alarm raised")

    # Closed: the restore.
    a.drive(ZONE, "low")
    events = site.wait_events(lambda ev: ("restore", "north-fence") in kinds(ev), message="the restore")
    assert _zone(events) == [("alarm", "north-fence"), ("restore", "north-fence")]

    # The broker dies (no goodbye to anyone) while the loop is worked; it comes back.
    assert tls_broker.proc is not None
    tls_broker.proc.kill()
    tls_broker.proc.wait(timeout=10)
    for level in ("high", "low", "high", "low"):
        a.drive(ZONE, level)
        time.sleep(0.05)  # apart by more than the 20 ms debounce: each is a real transition
    tls_broker.start()

    events = site.wait_events(lambda ev: len(_zone(ev)) >= 6, timeout=60, message="all six zone events")
    assert _zone(events) == [("alarm", "north-fence"), ("restore", "north-fence")] * 3
    assert_once_in_order(events, AGENT)
    assert any(e["replayed"] for e in events if e["agent"] == AGENT), "made while the broker was down: replayed"

    def all_acked() -> bool:
        top = max(e["eseq"] for e in site.events("--agent", AGENT))
        return [r["acked_eseq"] for r in site.agents_json() if r["agent"] == AGENT] == [top]

    wait_until(all_acked, timeout=30, interval=0.2, message="central's ack of everything")
    assert [(r["agent"], r["state"]) for r in site.agents_json()] == [(AGENT, "online")]
    # Over TLS with the CN as client id, nothing was refused and no identity was taken over.
    broker_log = tls_broker.log.read_text()
    assert "Denied PUBLISH" not in broker_log and "not authorised" not in broker_log.lower()
    # The CN became each client id; central's session is the persistent one (c0: clean start off).
    assert "as central (p5, c0," in broker_log and f"as {AGENT} (p5," in broker_log
    assert "already connected, closing old connection" not in broker_log
    for name in ("central", AGENT):
        assert "Traceback" not in site.log(name)
