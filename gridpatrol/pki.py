"""Per-identity certificates for the district and a production Mosquitto configuration.

One small certificate authority per district signs the broker's server
certificate and one client certificate per identity: each agent (CN = its
agent id), central (CN = ``central``) and each read-only client (CN =
``client-<name>``). Mosquitto takes the CN as the MQTT username
(``use_identity_as_username``), so the ACL can confine every agent to
``gridpatrol/v1/<its id>/...`` with ``pattern`` lines.

Layout of a PKI directory (keys 0600, the folders holding keys 0700)::

    ca.crt ca.key crl.pem index.json broker.crt broker.key
    central.crt central.key
    agents/<agent id>.crt .key
    clients/<name>.crt .key
    acl                      written by broker-config, issue-client and revoke
    mosquitto/               the broker's persistence folder
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import getpass
import ipaddress
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridpatrol.base.errors import GridpatrolError
from wire.codec import MAX_PAYLOAD_BYTES
from wire.topics import CENTRAL_ID, ROOT, is_valid_agent_id

_LOGGER = logging.getLogger(__name__)

CA_VALIDITY_DAYS = 20 * 365
LEAF_VALIDITY_DAYS = 10 * 365
# OpenSSL refuses every client once the CRL's nextUpdate has passed, so the CRL
# is signed for as long as the certificates it can name; each revoke re-signs it.
CRL_VALIDITY_DAYS = LEAF_VALIDITY_DAYS
# Certificates start a day early: a Pi without a real-time clock, or a broker a
# few hours off, would otherwise see a fresh certificate as "not yet valid".
NOT_BEFORE_SLACK = dt.timedelta(days=1)
DEFAULT_BROKER_HOSTS = ("localhost", "127.0.0.1")
CLIENT_PREFIX = "client-"
BROKER_CN = "gridpatrol broker"  # a space: can never be an agent id or MQTT username of ours
HOME_ASSISTANT_ROOT = "homeassistant"
_DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
_PRIVATE_FILE_MODE = 0o600
_PUBLIC_FILE_MODE = 0o644
_PRIVATE_DIR_MODE = 0o700


class PkiError(GridpatrolError, ValueError):
    """Bad input to a ``gridpatrol pki`` command: names the file or value at fault."""


class Kind(StrEnum):
    BROKER = "broker"
    AGENT = "agent"
    CENTRAL = "central"
    CLIENT = "client"


@dataclass(slots=True, frozen=True)
class Identity:
    """A certificate and its private key on disk."""

    name: str  # the certificate's CN, which Mosquitto takes as the username
    cert: Path
    key: Path


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------- files


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, the file created with ``mode`` (a key: 0600) before any byte is in it.

    Created under a temporary name with os.open, so a key is never readable by
    others, not even for an instant, and a half-written file never replaces a
    good one.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise PkiError(f"{path}: not found; is {directory} a PKI directory made by `gridpatrol pki init`?")
    return path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One pki command at a time per directory: index.json is read, changed and rewritten."""
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, _PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- index of serials


def _load_index(directory: Path) -> dict:
    path = _require(directory, "index.json")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PkiError(f"{path}: not a readable index ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("certificates"), list):
        raise PkiError(f"{path}: expected an object with a list 'certificates'")
    if type(index.get("crl_number", 0)) is not int or index.get("crl_number", 0) < 0:
        raise PkiError(f"{path}: crl_number must be a whole number >= 0")
    for n, entry in enumerate(index["certificates"]):
        if not _entry_ok(entry):
            raise PkiError(f"{path}: certificates[{n}] is not {{serial (hex), cn, kind, not_after, revoked_at (ISO or null)}}")
    return index


def _entry_ok(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("cn"), str) or entry.get("kind") not in set(Kind):
        return False
    try:
        int(entry["serial"], 16)
        if entry.get("revoked_at") is not None:
            dt.datetime.fromisoformat(entry["revoked_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _save_index(directory: Path, index: dict) -> None:
    _write_file(directory / "index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), _PUBLIC_FILE_MODE)


def _active(index: dict, name: str) -> list[dict]:
    return [c for c in index["certificates"] if c.get("cn") == name and not c.get("revoked_at")]


# ---------------------------------------------------------------- certificates


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: small, fast on a Pi Zero, supported by every OpenSSL and by Home Assistant.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf signs TLS handshakes (ECDHE: nothing else)."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = _require(directory, "ca.crt"), _require(directory, "ca.key")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{directory}: ca.crt or ca.key is not a PEM certificate and unencrypted key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: expected an EC private key")
    return cert, key


def _sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    usage: x509.ObjectIdentifier,
    *,
    now: dt.datetime,
    san: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - NOT_BEFORE_SLACK)
        .not_valid_after(min(now + dt.timedelta(days=LEAF_VALIDITY_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        # One purpose per certificate: OpenSSL checks it, so a client certificate
        # cannot serve as a broker and the broker's cannot log in as a client.
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _record(index: dict, cert: x509.Certificate, cn: str, kind: Kind) -> None:
    index["certificates"].append({
        "serial": format(cert.serial_number, "x"),
        "cn": cn,
        "kind": str(kind),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "revoked_at": None,
    })


def _write_crl(directory: Path, index: dict, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> None:
    index["crl_number"] = index.get("crl_number", 0) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - NOT_BEFORE_SLACK)
        .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
        .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for entry in index["certificates"]:
        if entry.get("revoked_at"):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_file(directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM), _PUBLIC_FILE_MODE)


def _broker_san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME_RE.fullmatch(host):
            raise PkiError(f"--broker-host {host!r}: expected a DNS name or an IP address")
        names.append(x509.DNSName(host.rstrip(".")))
    return names


def init_pki(directory: Path, broker_hosts: Sequence[str] = DEFAULT_BROKER_HOSTS, *, now: Callable[[], dt.datetime] = _utcnow) -> Identity:
    """Create the CA, an empty CRL, the index and the broker's certificate; return the broker's identity."""
    directory = Path(directory)
    san = _broker_san(broker_hosts or DEFAULT_BROKER_HOSTS)
    if directory.exists() and not directory.is_dir():
        raise PkiError(f"{directory}: exists and is not a directory")
    _private_dir(directory)
    with _locked(directory):
        for name in ("ca.key", "ca.crt", "index.json"):
            if (directory / name).exists():
                raise PkiError(f"{directory / name}: already exists; refusing to replace the district's CA")
        t = now()
        ca_key = _new_key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gridpatrol district CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - NOT_BEFORE_SLACK)
            .not_valid_after(t + dt.timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_file(directory / "ca.key", _key_pem(ca_key), _PRIVATE_FILE_MODE)
        _write_file(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_FILE_MODE)
        index: dict = {"certificates": [], "crl_number": 0}
        broker_cert, broker_key = _sign_leaf(ca_cert, ca_key, BROKER_CN, ExtendedKeyUsageOID.SERVER_AUTH, now=t, san=san)
        _write_file(directory / "broker.key", _key_pem(broker_key), _PRIVATE_FILE_MODE)
        _write_file(directory / "broker.crt", broker_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_FILE_MODE)
        _record(index, broker_cert, BROKER_CN, Kind.BROKER)
        _write_crl(directory, index, ca_cert, ca_key, t)
        _save_index(directory, index)
    return Identity(BROKER_CN, directory / "broker.crt", directory / "broker.key")


def _issue(directory: Path, cn: str, kind: Kind, cert_path: Path, *, now: Callable[[], dt.datetime]) -> Identity:
    directory = Path(directory)
    _require(directory, "ca.key")
    with _locked(directory):
        ca_cert, ca_key = _load_ca(directory)
        index = _load_index(directory)
        if _active(index, cn):
            raise PkiError(f"{cert_path}: {cn!r} already holds a valid certificate; revoke it first to issue a new one")
        _private_dir(cert_path.parent)
        cert, key = _sign_leaf(ca_cert, ca_key, cn, ExtendedKeyUsageOID.CLIENT_AUTH, now=now())
        key_path = cert_path.with_suffix(".key")
        _write_file(key_path, _key_pem(key), _PRIVATE_FILE_MODE)
        _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_FILE_MODE)
        _record(index, cert, cn, kind)
        _save_index(directory, index)
        if kind is Kind.CLIENT and (directory / "acl").exists():
            write_acl(directory, index)
    return Identity(cn, cert_path, key_path)


def issue_agent(directory: Path, agent_id: str, *, now: Callable[[], dt.datetime] = _utcnow) -> Identity:
    """DIR/agents/AGENT_ID.crt and .key; CN = the agent id, for client authentication."""
    if not is_valid_agent_id(agent_id):
        raise PkiError(f"agent id {agent_id!r}: expected 1-64 of [a-z0-9-], not starting or ending with '-', not 'central'")
    if agent_id.startswith(CLIENT_PREFIX):
        raise PkiError(f"agent id {agent_id!r}: the prefix {CLIENT_PREFIX!r} is reserved for read-only clients")
    return _issue(Path(directory), agent_id, Kind.AGENT, Path(directory) / "agents" / f"{agent_id}.crt", now=now)


def issue_central(directory: Path, *, now: Callable[[], dt.datetime] = _utcnow) -> Identity:
    """DIR/central.crt and .key; CN = ``central``."""
    return _issue(Path(directory), CENTRAL_ID, Kind.CENTRAL, Path(directory) / "central.crt", now=now)


def client_cn(name: str) -> str:
    """The CN (and so the MQTT username) of read-only client ``name``."""
    return f"{CLIENT_PREFIX}{name}"


def issue_client(directory: Path, name: str, *, now: Callable[[], dt.datetime] = _utcnow) -> Identity:
    """DIR/clients/NAME.crt and .key; CN = ``client-NAME``; read-only rights in the ACL."""
    if not is_valid_agent_id(name) or len(client_cn(name)) > 64:
        raise PkiError(f"client name {name!r}: expected 1-57 of [a-z0-9-], not starting or ending with '-'")
    return _issue(Path(directory), client_cn(name), Kind.CLIENT, Path(directory) / "clients" / f"{name}.crt", now=now)


def revoke(directory: Path, name: str, *, now: Callable[[], dt.datetime] = _utcnow) -> list[int]:
    """Revoke every valid certificate of ``name`` (an agent id, ``central`` or ``client-NAME``); re-sign crl.pem."""
    directory = Path(directory)
    _require(directory, "ca.key")
    with _locked(directory):
        ca_cert, ca_key = _load_ca(directory)
        index = _load_index(directory)
        entries = [e for e in _active(index, name) if e.get("kind") != Kind.BROKER]
        if not entries:
            raise PkiError(f"{directory / 'index.json'}: no valid certificate issued to {name!r}")
        t = now()
        for entry in entries:
            entry["revoked_at"] = t.isoformat()
        _write_crl(directory, index, ca_cert, ca_key, t)
        _save_index(directory, index)
        if (directory / "acl").exists():
            write_acl(directory, index)
    return [int(e["serial"], 16) for e in entries]


# ---------------------------------------------------------------- broker


def acl_text(clients: Sequence[str]) -> str:
    """The Mosquitto ACL: agents by pattern, central and each read-only client by name.

    Mosquitto grants access when any ``user`` line of the client or any
    ``pattern`` line matches, and patterns apply to every user. The pattern
    lines below therefore also give ``central`` its own subtree (which it owns
    anyway) and give ``client-NAME`` ``gridpatrol/v1/client-NAME/#``: each
    client's own ``topic deny`` line takes that back (a user's deny lines are
    checked before any pattern), so a read-only client cannot pose as an agent.
    """
    lines = [
        "# Gridpatrol broker ACL, written by `gridpatrol pki`. The username is the",
        "# certificate's CN (use_identity_as_username).",
        "",
        "# Agents: write their own subtree, read their own cmd and ack and central's status.",
        f"pattern write {ROOT}/%u/#",
        f"pattern read {ROOT}/%u/cmd",
        f"pattern read {ROOT}/%u/ack",
        f"pattern read {ROOT}/{CENTRAL_ID}/status",
        "",
        "# Central: reads everything; writes commands, acks, its own subtree and Home Assistant discovery.",
        f"user {CENTRAL_ID}",
        "topic read #",
        f"topic write {ROOT}/+/cmd",
        f"topic write {ROOT}/+/ack",
        f"topic write {ROOT}/{CENTRAL_ID}/#",
        f"topic write {HOME_ASSISTANT_ROOT}/#",
    ]
    for cn in sorted(set(clients)):
        lines += [
            "",
            f"# Read-only client {cn}.",
            f"user {cn}",
            f"topic deny {ROOT}/{cn}/#",
            f"topic read {ROOT}/{CENTRAL_ID}/#",
            f"topic read {ROOT}/+/status",
            f"topic read {HOME_ASSISTANT_ROOT}/#",
            f"topic write {HOME_ASSISTANT_ROOT}/status",
        ]
    return "\n".join(lines) + "\n"


def write_acl(directory: Path, index: dict | None = None) -> Path:
    """Write DIR/acl from the index (clients with a valid certificate); mode 0600 as Mosquitto wants."""
    directory = Path(directory)
    index = index if index is not None else _load_index(directory)
    clients = [c["cn"] for c in index["certificates"] if c.get("kind") == Kind.CLIENT and not c.get("revoked_at")]
    path = directory / "acl"
    _write_file(path, acl_text(clients).encode(), _PRIVATE_FILE_MODE)
    return path


# Queueing for a slow or absent central. Mosquitto's default max_queued_messages
# (1000) silently drops QoS 1 messages queued for an offline collector (agents
# resend them, but only later). Not 0 ("no limit"): Mosquitto 2.0.11 with 0
# disconnects a client whose QoS 1 publish the ACL refused as soon as it
# publishes again (15 of 16 runs here); a million is a day of a busy district.
# The packet cap is four times our largest payload (wire.codec.MAX_PAYLOAD_BYTES).
QUEUE_SETTINGS = (
    "max_queued_messages 1000000",
    "max_inflight_messages 100",
    "set_tcp_nodelay true",  # no Nagle delay on a lone alarm (about 40 ms a hop without)
    "queue_qos0_messages false",
    "persistent_client_expiration 14d",
    f"max_packet_size {4 * MAX_PAYLOAD_BYTES}",
    "autosave_interval 30",
)


def broker_config(directory: Path, port: int, *, user: str | None = None) -> str:
    """A whole Mosquitto configuration for ``mosquitto -c``; writes DIR/acl and DIR/mosquitto/."""
    directory = Path(directory).resolve()
    if not 1 <= port <= 65535:
        raise PkiError(f"--port {port}: expected 1-65535")
    ca, cert, key, crl = (_require(directory, n) for n in ("ca.crt", "broker.crt", "broker.key", "crl.pem"))
    with _locked(directory):
        acl = write_acl(directory)
    data = _private_dir(directory / "mosquitto")
    user = user or getpass.getuser()
    return "\n".join([
        "# Gridpatrol production broker, written by `gridpatrol pki broker-config`.",
        "# TLS only: no plaintext listener; every client shows a certificate of the district CA.",
        "per_listener_settings false",
        # Started as root, Mosquitto switches to this user before it reads the keys
        # and the ACL; naming whoever generated the files keeps them readable.
        f"user {user}",
        "persistence true",
        f"persistence_location {data}/",
        "log_dest stderr",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "allow_anonymous false",
        f"acl_file {acl}",
        *QUEUE_SETTINGS,
        "",
        f"listener {port}",
        f"cafile {ca}",
        f"certfile {cert}",
        f"keyfile {key}",
        f"crlfile {crl}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        # The client id is the CN too: otherwise any identity could connect with
        # the id "central" and take over (disconnect) central's session.
        "use_username_as_clientid true",
        "",
    ])


# ---------------------------------------------------------------- command line


def run_init(args: argparse.Namespace) -> int:
    identity = init_pki(Path(args.dir), tuple(args.broker_host or DEFAULT_BROKER_HOSTS))
    print(f"CA {Path(args.dir) / 'ca.crt'}, CRL {Path(args.dir) / 'crl.pem'}, broker {identity.cert} and {identity.key}")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    identity = issue_agent(Path(args.pki), args.agent_id)
    print(f"{identity.name}: {identity.cert} and {identity.key}")
    return 0


def run_issue_central(args: argparse.Namespace) -> int:
    identity = issue_central(Path(args.pki))
    print(f"{identity.name}: {identity.cert} and {identity.key}")
    return 0


def run_issue_client(args: argparse.Namespace) -> int:
    identity = issue_client(Path(args.pki), args.name)
    print(f"{identity.name}: {identity.cert} and {identity.key} (reload the broker if it runs: the ACL changed)")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    serials = revoke(Path(args.pki), args.agent_id)
    print(f"{args.agent_id}: revoked serial {', '.join(format(s, 'x') for s in serials)}; "
          f"reload or restart the broker to apply {Path(args.pki) / 'crl.pem'}")
    return 0


def run_broker_config(args: argparse.Namespace) -> int:
    print(broker_config(Path(args.pki), args.port), end="")
    return 0
