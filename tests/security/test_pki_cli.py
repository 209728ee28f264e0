"""`gridpatrol pki`: the files it writes, their modes, and its errors."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gridpatrol import pki
from tests.security.tlsbroker import key_files, mode
from tests.support import run_cli


def _ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _crl(directory: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((directory / "crl.pem").read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _signed_by_ca(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    cert.verify_directly_issued_by(ca)  # raises if not
    return True


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Modes must not depend on the caller's umask (keys are created 0600, not chmod-ed)."""
    saved = os.umask(0)
    try:
        yield
    finally:
        os.umask(saved)


@pytest.mark.slow
def test_every_command_writes_its_files_with_private_keys_0600_and_key_folders_0700(tmp_path: Path, umask_zero: None) -> None:
    d = tmp_path / "pki"
    _ok("pki", "init", str(d))
    _ok("pki", "issue", "school-9-gate-1", "--pki", str(d))
    _ok("pki", "issue-central", "--pki", str(d))
    _ok("pki", "issue-client", "wall", "--pki", str(d))
    _ok("pki", "broker-config", "--pki", str(d), "--port", "8883")
    _ok("pki", "revoke", "school-9-gate-1", "--pki", str(d))

    keys = key_files(d)
    assert [p.relative_to(d).as_posix() for p in keys] == [
        "agents/school-9-gate-1.key", "broker.key", "ca.key", "central.key", "clients/wall.key",
    ]
    assert {p.name: mode(p) for p in keys} == {p.name: 0o600 for p in keys}
    assert {n: mode(d / n) for n in ("", "agents", "clients", "mosquitto")} == {n: 0o700 for n in ("", "agents", "clients", "mosquitto")}
    assert mode(d / "acl") == 0o600
    assert {n: mode(d / n) for n in ("ca.crt", "broker.crt", "crl.pem", "index.json")} == dict.fromkeys(("ca.crt", "broker.crt", "crl.pem", "index.json"), 0o644)
    assert not [p for p in d.rglob("*.tmp")], "no temporary files left behind"


def test_init_makes_a_ca_an_empty_signed_crl_and_a_broker_certificate_for_localhost(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    ca, broker, crl = _cert(d / "ca.crt"), _cert(d / "broker.crt"), _crl(d)

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert _signed_by_ca(broker, ca)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.public_key())
    assert crl.next_update_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=5 * 365)


def test_init_names_the_given_broker_hosts_and_puts_addresses_in_ip_sans(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    _ok("pki", "init", str(d), "--broker-host", "broker.district.lan", "--broker-host", "10.0.0.5", "--broker-host", "fd00::5")
    san = _cert(d / "broker.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.district.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")]


def test_issued_certificates_carry_the_identity_as_cn_for_client_auth_only(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    agent = pki.issue_agent(d, "school-9-gate-1")
    central = pki.issue_central(d)
    client = pki.issue_client(d, "home-assistant")
    ca = _cert(d / "ca.crt")

    assert (agent.cert, central.cert, client.cert) == (d / "agents/school-9-gate-1.crt", d / "central.crt", d / "clients/home-assistant.crt")
    for identity, cn in ((agent, "school-9-gate-1"), (central, "central"), (client, "client-home-assistant")):
        cert = _cert(identity.cert)
        assert _cn(cert) == cn == identity.name
        assert _signed_by_ca(cert, ca)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    index = json.loads((d / "index.json").read_text())
    assert [(c["cn"], c["kind"]) for c in index["certificates"]] == [
        ("gridpatrol broker", "broker"), ("school-9-gate-1", "agent"), ("central", "central"), ("client-home-assistant", "client"),
    ]


def test_revoke_lists_the_serial_in_a_resigned_crl_and_allows_a_replacement(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    first = _cert(pki.issue_agent(d, "gate-a").cert)
    pki.issue_agent(d, "gate-b")
    assert pki.revoke(d, "gate-a") == [first.serial_number]

    crl, ca = _crl(d), _cert(d / "ca.crt")
    assert [r.serial_number for r in crl] == [first.serial_number]
    assert crl.is_signature_valid(ca.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    second = _cert(pki.issue_agent(d, "gate-a").cert)
    assert second.serial_number != first.serial_number
    assert [r.serial_number for r in _crl(d)] == [first.serial_number]


def test_the_acl_gives_each_read_only_client_its_own_block(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    pki.issue_client(d, "wall")
    pki.broker_config(d, 8883, user="mosquitto")
    pki.issue_client(d, "ha")  # after broker-config: the ACL follows
    text = (d / "acl").read_text()
    assert text.endswith(
        "# Read-only client client-ha.\n"
        "user client-ha\n"
        "topic deny gridpatrol/v1/client-ha/#\n"
        "topic read gridpatrol/v1/central/#\n"
        "topic read gridpatrol/v1/+/status\n"
        "topic read homeassistant/#\n"
        "topic write homeassistant/status\n"
        "\n"
        "# Read-only client client-wall.\n"
        "user client-wall\n"
        "topic deny gridpatrol/v1/client-wall/#\n"
        "topic read gridpatrol/v1/central/#\n"
        "topic read gridpatrol/v1/+/status\n"
        "topic read homeassistant/#\n"
        "topic write homeassistant/status\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pki", "issue", "Gate_1"), "agent id 'Gate_1': expected 1-64 of [a-z0-9-], not starting or ending with '-', not 'central'"),
        (("pki", "issue", "central"), "agent id 'central': expected 1-64 of [a-z0-9-], not starting or ending with '-', not 'central'"),
        (("pki", "issue", "client-ha"), "agent id 'client-ha': the prefix 'client-' is reserved for read-only clients"),
        (("pki", "issue", "gate-a"), "{d}/agents/gate-a.crt: 'gate-a' already holds a valid certificate; revoke it first to issue a new one"),
        (("pki", "issue-client", "wall-"), "client name 'wall-': expected 1-57 of [a-z0-9-], not starting or ending with '-'"),
        (("pki", "revoke", "gate-z"), "{d}/index.json: no valid certificate issued to 'gate-z'"),
        (("pki", "revoke", "gridpatrol broker"), "{d}/index.json: no valid certificate issued to 'gridpatrol broker'"),
        (("pki", "broker-config", "--port", "70000"), "--port 70000: expected 1-65535"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_value(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    pki.issue_agent(d, "gate-a")
    result = run_cli(*args, "--pki", str(d))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"gridpatrol: {message.format(d=d)}\n")


def test_a_directory_that_is_no_pki_and_a_second_init_exit_2(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    result = run_cli("pki", "issue", "gate-a", "--pki", str(d))
    assert (result.returncode, result.stderr) == (2, f"gridpatrol: {d}/ca.key: not found; is {d} a PKI directory made by `gridpatrol pki init`?\n")
    pki.init_pki(d)
    result = run_cli("pki", "init", str(d))
    assert (result.returncode, result.stderr) == (2, f"gridpatrol: {d}/ca.key: already exists; refusing to replace the district's CA\n")
    result = run_cli("pki", "init", str(tmp_path / "other"), "--broker-host", "bad host")
    assert (result.returncode, result.stderr) == (2, "gridpatrol: --broker-host 'bad host': expected a DNS name or an IP address\n")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("damage", "at_fault"), [("index.json", "index.json"), ("ca.key", "ca.crt or ca.key")])
@pytest.mark.parametrize("content", [
    b"", b'{"certificates": 3}', b'{"certificates": [{"serial": "zz", "cn": "a", "kind": "agent"}]}',
    b'{"certificates": [{"serial": "1f", "cn": "a", "kind": "agent", "revoked_at": "yesterday"}]}',
    b"-----BEGIN PRIVATE KEY-----\nAAAA", bytes(range(256)),
])
def test_damaged_files_exit_2_naming_them(tmp_path: Path, damage: str, at_fault: str, content: bytes) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d)
    (d / damage).write_bytes(content)
    result = run_cli("pki", "issue", "gate-a", "--pki", str(d))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and at_fault in result.stderr and str(d) in result.stderr, result.stderr
    assert not (d / "agents" / "gate-a.key").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=3))
def test_any_broker_host_is_a_san_or_a_pki_error(hosts: list[str]) -> None:
    try:
        names = pki._broker_san(hosts)
    except pki.PkiError as exc:
        assert "--broker-host" in str(exc)
    else:
        assert len(names) == len(hosts)
        x509.SubjectAlternativeName(names)  # encodable
