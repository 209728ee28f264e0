"""Fixtures of the security suite: a PKI under tmp_path and a broker running the production config.

Reusable by other suites (the end-to-end run over TLS): ``tls_broker`` yields a
running :class:`TlsBroker`; ``tls_broker.pki.identity("gate-a")`` gives the
certificate and key paths for an agent's ``[mqtt] tls_cert``/``tls_key``,
``tls_broker.pki.ca`` the ``tls_ca``, ``tls_broker.port`` the port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.security.tlsbroker import CertClient, Pki, TlsBroker, make_pki


@pytest.fixture
def tls_pki(tmp_path: Path) -> Pki:
    """CA, broker, central, agents gate-a and gate-b, read-only client client-ha."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, tls_pki: Pki) -> Iterator[TlsBroker]:
    """Mosquitto running `pki broker-config`'s output on a free port; stopped at teardown."""
    broker = TlsBroker(tmp_path / "broker", tls_pki).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_client(tls_broker: TlsBroker) -> Iterator[Callable[[str], CertClient]]:
    """``tls_client("gate-a")``: a connected client with that identity; all closed at teardown."""
    clients: list[CertClient] = []

    def connect(name: str) -> CertClient:
        client = tls_broker.client(name)
        clients.append(client)
        return client.connect()

    try:
        yield connect
    finally:
        for client in clients:
            client.close()
