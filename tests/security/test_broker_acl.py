"""The printed production broker configuration, enforced by a real Mosquitto.

"Nothing arrives" is never shown by waiting a while: every forbidden publish is
followed by an allowed one (the positive control). Mosquitto is one event
loop: it routes a PUBLISH to every matching subscriber's queue before it sends
the PUBACK, and each subscriber's queue is delivered in order. So once the
control message has arrived, a forbidden message published (and PUBACKed)
before it would already have arrived had the ACL let it through.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Callable

import pytest

from gridpatrol import pki
from tests.security.tlsbroker import CertClient, ConnectRefused, TlsBroker, make_pki, raw_mqtt_connect
from tests.support import run_cli

pytestmark = pytest.mark.slow

A, B = "gate-a", "gate-b"
ROOT = "gridpatrol/v1"
AGENT_CHANNELS = ("status", "birth", "evt", "state", "tele", "cmd/resp")


def test_an_agent_cannot_publish_as_another_agent_or_as_central(tls_client: Callable[[str], CertClient]) -> None:
    central = tls_client("central")
    assert [rc.value for rc in central.subscribe("#")] == [1]
    agent_a = tls_client(A)

    forbidden = [f"{ROOT}/{B}/{ch}" for ch in AGENT_CHANNELS] + [
        f"{ROOT}/{B}/cmd", f"{ROOT}/{B}/ack", f"{ROOT}/central/status", "homeassistant/status", "elsewhere",
    ]
    for topic in forbidden:
        agent_a.publish(topic, b"forged by gate-a")
    agent_a.publish(f"{ROOT}/{A}/evt", b"control")

    assert central.wait_for(f"{ROOT}/{A}/evt", b"control") == [(f"{ROOT}/{A}/evt", b"control")]


def test_an_agent_reads_only_its_own_cmd_and_ack_and_central_status(tls_client: Callable[[str], CertClient]) -> None:
    central = tls_client("central")
    agent_b = tls_client(B)
    agent_a = tls_client(A)
    agent_a.subscribe("#")
    agent_a.subscribe(f"{ROOT}/{B}/cmd")  # asking by name changes nothing

    for ch in AGENT_CHANNELS:
        agent_b.publish(f"{ROOT}/{B}/{ch}", b"b's own")  # routed (and refused to A) before its PUBACK
    central.publish(f"{ROOT}/{B}/cmd", b"for b")
    central.publish(f"{ROOT}/{B}/ack", b"for b")
    central.publish("homeassistant/sensor/x/config", b"discovery")
    central.publish(f"{ROOT}/central/completion/grid-1", b"{}")
    central.publish(f"{ROOT}/central/status", b'{"online": true}')
    central.publish(f"{ROOT}/{A}/ack", b"ack for a")
    central.publish(f"{ROOT}/{A}/cmd", b"control")

    assert agent_a.wait_for(f"{ROOT}/{A}/cmd", b"control") == [
        (f"{ROOT}/central/status", b'{"online": true}'),
        (f"{ROOT}/{A}/ack", b"ack for a"),
        (f"{ROOT}/{A}/cmd", b"control"),
    ]


def test_central_commands_agents_but_cannot_forge_their_messages(tls_client: Callable[[str], CertClient]) -> None:
    central = tls_client("central")
    central.subscribe("#")
    for ch in AGENT_CHANNELS:
        central.publish(f"{ROOT}/{A}/{ch}", b"forged by central")
    central.publish(f"{ROOT}/{A}/cmd", b"cmd")
    central.publish(f"{ROOT}/{A}/ack", b"ack")
    central.publish(f"{ROOT}/central/status", b"status")
    central.publish("homeassistant/binary_sensor/x/config", b"control")

    assert central.wait_for("homeassistant/binary_sensor/x/config", b"control") == [
        (f"{ROOT}/{A}/cmd", b"cmd"),
        (f"{ROOT}/{A}/ack", b"ack"),
        (f"{ROOT}/central/status", b"status"),
        ("homeassistant/binary_sensor/x/config", b"control"),
    ]


def test_a_read_only_client_reads_statuses_and_publishes_only_its_own_ha_status(tls_client: Callable[[str], CertClient]) -> None:
    central = tls_client("central")
    central.subscribe("#")
    agent_a = tls_client(A)
    central.publish(f"{ROOT}/central/status", b'{"online": true}', retain=True)
    agent_a.publish(f"{ROOT}/{A}/status", b'{"state": "online"}', retain=True)
    agent_a.publish(f"{ROOT}/{A}/evt", b"an event")

    ha = tls_client("client-ha")
    ha.subscribe("#")  # one filter: overlapping ones may deliver a message twice
    central.publish("homeassistant/sensor/y/config", b"control")
    assert sorted(ha.wait_for("homeassistant/sensor/y/config", b"control")) == sorted([
        (f"{ROOT}/central/status", b'{"online": true}'),
        (f"{ROOT}/{A}/status", b'{"state": "online"}'),
        ("homeassistant/sensor/y/config", b"control"),
    ])

    central.wait_for("homeassistant/sensor/y/config", b"control")
    for topic in (f"{ROOT}/{A}/evt", f"{ROOT}/{A}/cmd", f"{ROOT}/{A}/status", f"{ROOT}/central/status",
                  f"{ROOT}/client-ha/evt", f"{ROOT}/client-ha/status", "homeassistant/sensor/y/config"):
        ha.publish(topic, b"from the dashboard")
    ha.publish("homeassistant/status", b"online")
    assert central.wait_for("homeassistant/status", b"online") == [("homeassistant/status", b"online")]


def test_the_client_id_is_the_certificate_name_so_no_session_can_be_taken_over(tls_broker: TlsBroker) -> None:
    central = tls_broker.client("central").connect()
    intruder = tls_broker.client(A, client_id="central")
    try:
        central.subscribe(f"{ROOT}/+/evt")
        intruder.connect()
        intruder.publish(f"{ROOT}/{A}/evt", b"still here")
        assert central.wait_for(f"{ROOT}/{A}/evt", b"still here") == [(f"{ROOT}/{A}/evt", b"still here")]
        assert central.disconnects == 0
        assert "as gate-a (p5" in tls_broker.log.read_text()
    finally:
        intruder.close()
        central.close()


@pytest.mark.parametrize("who", ["no certificate", "certificate of another CA", "the broker's own certificate"])
def test_a_client_without_a_district_client_certificate_cannot_connect(tls_broker: TlsBroker, tmp_path: Path, who: str) -> None:
    if who == "no certificate":
        client = tls_broker.client(None)
    else:
        if who == "certificate of another CA":
            foreign = make_pki(tmp_path / "foreign", agents=(A,), clients=())
            identity = foreign.identity("central")  # same CN, wrong issuer
        else:
            identity = pki.Identity("gridpatrol broker", tls_broker.pki.directory / "broker.crt", tls_broker.pki.directory / "broker.key")
        client = CertClient(tls_broker.host, tls_broker.port, tls_broker.pki.ca, identity, client_id="x")
    try:
        with pytest.raises(ConnectRefused):
            client.connect()
    finally:
        client.close()
    tls_broker.client(A).connect().close()  # the broker is fine and serves others


def test_a_plaintext_connection_to_the_tls_port_gets_no_connack(tls_broker: TlsBroker) -> None:
    answer = raw_mqtt_connect(tls_broker.host, tls_broker.port)
    assert not answer.startswith(b"\x20"), answer  # 0x20 would be a CONNACK
    listeners = [line for line in tls_broker.conf.read_text().splitlines() if line.startswith("listener")]
    assert listeners == [f"listener {tls_broker.port}"]


def test_a_revoked_agent_is_refused_after_a_reload_while_others_connect(tls_broker: TlsBroker) -> None:
    tls_broker.client(B).connect().close()

    result = run_cli("pki", "revoke", B, "--pki", str(tls_broker.pki.directory))
    assert result.returncode == 0, result.stderr
    tls_broker.reload()

    revoked = tls_broker.client(B)
    try:
        with pytest.raises(ConnectRefused):
            revoked.connect()
    finally:
        revoked.close()
    for name in (A, "central", "client-ha"):
        tls_broker.client(name).connect().close()

    # A replacement certificate for the same agent works at once (the CRL names serials).
    assert run_cli("pki", "issue", B, "--pki", str(tls_broker.pki.directory)).returncode == 0
    tls_broker.client(B).connect().close()


def test_a_revoked_read_only_client_loses_its_acl_entry(tls_broker: TlsBroker) -> None:
    assert "user client-ha" in (tls_broker.pki.directory / "acl").read_text()
    assert run_cli("pki", "revoke", "client-ha", "--pki", str(tls_broker.pki.directory)).returncode == 0
    assert "client-ha" not in (tls_broker.pki.directory / "acl").read_text()
    tls_broker.reload()
    revoked = tls_broker.client("client-ha")
    try:
        with pytest.raises(ConnectRefused):
            revoked.connect()
    finally:
        revoked.close()


def test_the_printed_config_runs_as_its_generator_and_persists_inside_the_pki(tls_broker: TlsBroker) -> None:
    conf = tls_broker.conf.read_text().splitlines()
    data = tls_broker.pki.directory.resolve() / "mosquitto"
    assert f"user {getpass.getuser()}" in conf
    assert f"persistence_location {data}/" in conf
    client = tls_broker.client("central").connect()
    client.publish(f"{ROOT}/central/status", json.dumps({"online": True, "ts": 1}).encode(), retain=True)
    client.close()
    tls_broker.stop()
    assert (data / "mosquitto.db").is_file()
