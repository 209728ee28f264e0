"""A production-configured Mosquitto for tests, and MQTT clients holding certificates.

The broker runs exactly the configuration ``gridpatrol pki broker-config``
prints (run through the real command line), on a free port, from a PKI made
under the test's tmp_path. Other suites (the end-to-end run over TLS) reuse
:class:`TlsBroker` and :class:`CertClient` through the fixtures in
``tests/security/conftest.py`` or by importing this module.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gridpatrol import pki
from gridpatrol.localbroker import find_mosquitto
from tests.support import free_port, port_open, run_cli, wait_until

CONNECT_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 10.0


@dataclass(slots=True, frozen=True)
class Pki:
    """Paths of a PKI made for one test; ``identity(name)`` finds any issued certificate."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def identity(self, name: str) -> pki.Identity:
        if name == "central":
            cert = self.directory / "central.crt"
        elif name.startswith(pki.CLIENT_PREFIX):
            cert = self.directory / "clients" / f"{name.removeprefix(pki.CLIENT_PREFIX)}.crt"
        else:
            cert = self.directory / "agents" / f"{name}.crt"
        return pki.Identity(name, cert, cert.with_suffix(".key"))


def make_pki(directory: Path, *, agents: tuple[str, ...] = ("gate-a", "gate-b"), clients: tuple[str, ...] = ("ha",)) -> Pki:
    """A CA, the broker, central, the given agents and read-only clients."""
    pki.init_pki(directory)
    pki.issue_central(directory)
    for agent_id in agents:
        pki.issue_agent(directory, agent_id)
    for name in clients:
        pki.issue_client(directory, name)
    return Pki(directory)


class TlsBroker:
    """Mosquitto started with ``mosquitto -c`` of the printed production configuration."""

    def __init__(self, directory: Path, pki_: Pki, *, port: int | None = None, conf_text: str | None = None) -> None:
        """``conf_text``: run this configuration instead of the printed one (with ``port`` in it)."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki = pki_
        self.host = "127.0.0.1"
        self.port = port or free_port()
        if conf_text is None:
            result = run_cli("pki", "broker-config", "--pki", str(pki_.directory), "--port", str(self.port))
            if result.returncode != 0:
                raise RuntimeError(f"pki broker-config failed: {result.stderr}")
            conf_text = result.stdout
        self.conf = self.directory / "mosquitto.conf"
        self.conf.write_text(conf_text)
        self.log = self.directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> TlsBroker:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)], stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout=timeout, message=f"mosquitto on {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start: {self.log.read_text()[-2000:]}")
        return self

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP, as ``systemctl reload mosquitto`` does: re-reads the ACL and the CRL.

        Mosquitto handles the signal in its single event loop and logs
        "Reloading config." before reloading; a connection accepted after that
        line is served by the reloaded configuration.
        """
        assert self.proc is not None and self.proc.poll() is None
        before = self.log.read_text().count("Reloading config.")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log.read_text().count("Reloading config.") > before, timeout=timeout, message="mosquitto reload")

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut: no goodbye to anyone, nothing saved."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self, name: str | None, *, client_id: str = "") -> CertClient:
        """An MQTT 5 client with the certificate of ``name`` (None: no certificate)."""
        identity = self.pki.identity(name) if name else None
        return CertClient(self.host, self.port, self.pki.ca, identity, client_id=client_id or (name or "anonymous"))


class ConnectRefused(Exception):
    """The broker did not accept the connection (TLS handshake or CONNACK)."""


class CertClient:
    """A paho-mqtt client with a certificate; waits on acknowledgements, never sleeps.

    Every received message lands in ``received`` (topic, payload), in order.
    """

    def __init__(self, host: str, port: int, ca: Path, identity: pki.Identity | None, *, client_id: str) -> None:
        self.host, self.port = host, port
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if identity is None:
            self._client.tls_set(ca_certs=str(ca))
        else:
            self._client.tls_set(ca_certs=str(ca), certfile=str(identity.cert), keyfile=str(identity.key))
        self._connack: queue.Queue[tuple[str, object]] = queue.Queue()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_cv = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = lambda c, u, m: self.received.put((m.topic, m.payload))
        self._client.on_subscribe = self._on_subscribe
        self._started = False
        self.disconnects = 0

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack.put(("connack", reason_code))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnects += 1
        self._connack.put(("disconnect", reason_code))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._suback_cv:
            self._subacks[mid] = list(reason_codes)
            self._suback_cv.notify_all()

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> CertClient:
        """Connect and wait for a successful CONNACK; raise ConnectRefused otherwise."""
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except (ssl.SSLError, OSError) as exc:  # TLS 1.2 fails inside the handshake
            self._client.loop_stop()
            raise ConnectRefused(f"handshake: {exc}") from None
        self._client.loop_start()
        self._started = True
        try:
            what, code = self._connack.get(timeout=timeout)
        except queue.Empty:
            raise ConnectRefused(f"no CONNACK within {timeout} s") from None
        if what != "connack" or getattr(code, "is_failure", True):
            raise ConnectRefused(f"{what}: {code}")
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = CONNECT_TIMEOUT_S) -> list[ReasonCode]:
        _, mid = self._client.subscribe(topic, qos)
        with self._suback_cv:
            if not self._suback_cv.wait_for(lambda: mid in self._subacks, timeout=timeout):
                raise AssertionError(f"no SUBACK for {topic} within {timeout} s")
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1), denied or not: the broker has handled it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"no PUBACK for {topic} within {timeout} s")

    def wait_for(self, topic: str, payload: bytes, timeout: float = DELIVERY_TIMEOUT_S) -> list[tuple[str, bytes]]:
        """Collect messages until (topic, payload) arrives; return everything received before and with it."""
        seen: list[tuple[str, bytes]] = []
        while (topic, payload) not in seen:
            try:
                seen.append(self.received.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"{topic} {payload!r} did not arrive within {timeout} s; got {seen}") from None
        return seen

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
        else:
            self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()


def raw_mqtt_connect(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bytes:
    """Send a plaintext MQTT 3.1.1 CONNECT and return whatever comes back before the close."""
    connect = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 1]) + b"x"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(connect)
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def with_tls(conf: Path, identity: pki.Identity, ca: Path) -> None:
    """Give the agent or central configuration ``conf`` this certificate, key and CA under ``[mqtt]``."""
    text = conf.read_text()
    assert text.count("[mqtt]\n") == 1, conf
    conf.write_text(text.replace("[mqtt]\n", f'[mqtt]\ntls_ca = "{ca}"\ntls_cert = "{identity.cert}"\n'
                                              f'tls_key = "{identity.key}"\n'))


def key_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.key"))


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
