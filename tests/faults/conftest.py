"""Fixtures of the fault suite: a site per test (its own Mosquitto, central, agents) and its numbers.

Each scenario's numbers are printed (``pytest -s`` shows them) and written to
``artifacts/faults/<scenario>.json``; ``artifacts/faults/summary.json`` collects
those of the whole run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from tests.faults.harness import ARTIFACTS, FaultSite, Numbers, write_numbers
from tests.security.tlsbroker import TlsBroker, make_pki
from tests.support import Broker, Processes

_RUN: list[dict] = []  # type: ignore[type-arg]


@pytest.fixture
def central_store(request: pytest.FixtureRequest) -> str | None:
    """The store of the site's central: None for its SQLite file (the default), or the URL of a PostgreSQL
    database of the test's own for a scenario parametrized with
    ``@pytest.mark.parametrize("central_store", ["sqlite", "postgresql"], indirect=True)``.

    Made before the site, so the database is dropped only after the site's processes are gone.
    """
    engine = getattr(request, "param", "sqlite")
    if engine == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    assert engine == "sqlite", engine
    return None


@pytest.fixture
def make_site(tmp_path: Path, processes: Processes, central_store: str | None) -> Iterator[Callable[..., FaultSite]]:
    """``make_site(broker_extra=[...])``: a site whose Mosquitto has these extra configuration lines, and
    whose central's store is the one :func:`central_store` names."""
    brokers: list[Broker] = []

    def make(*, broker_extra: Sequence[str] = ()) -> FaultSite:
        b = Broker(tmp_path / "broker", extra=broker_extra)
        brokers.append(b)
        b.start()
        site = FaultSite(tmp_path, b, processes)
        if central_store is not None:
            site.use_postgresql(central_store)
        return site

    try:
        yield make
    finally:
        processes.close()  # agents and central first, so they do not log a vanished broker at teardown
        for b in brokers:
            b.kill()


@pytest.fixture
def make_tls_site(tmp_path: Path, processes: Processes) -> Iterator[Callable[..., FaultSite]]:
    """``make_tls_site(agents)``: a site on the production broker (``pki broker-config``: TLS only, client
    certificates, the per-agent ACL), with certificates for central and these agents."""
    brokers: list[TlsBroker] = []

    def make(agents: Sequence[str]) -> FaultSite:
        b = TlsBroker(tmp_path / "broker", make_pki(tmp_path / "pki", agents=tuple(agents), clients=()))
        brokers.append(b)
        b.start()
        site = FaultSite(tmp_path, b, processes)  # type: ignore[arg-type]  # a site needs port, start and kill
        site.use_tls(b.pki)
        return site

    try:
        yield make
    finally:
        processes.close()
        for b in brokers:
            b.kill()


@pytest.fixture
def numbers(request: pytest.FixtureRequest) -> Iterator[Numbers]:
    """The scenario's numbers; printed and written when the test passed."""
    name = request.node.name.removeprefix("test_").replace("[", ".").replace("]", "")  # a parameter: scenario.postgresql
    n = Numbers(scenario=name)
    started = time.monotonic()
    yield n
    n.wall_s = time.monotonic() - started
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.passed:
        return
    path = write_numbers(n)
    _RUN.append(n.as_dict())
    print(f"\n[faults] {name}: made {n.made}, stored {n.stored}, duplicates {n.duplicates}, lost {n.lost}, "
          f"gone (shed, and said so) {n.gone}, "
          f"recovery {n.recovery_s if n.recovery_s is None else round(n.recovery_s, 2)} s, wall {n.wall_s:.1f} s"
          f"\n[faults]   details: {json.dumps(n.details, sort_keys=True)}\n[faults]   -> {path}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RUN:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.json").write_text(json.dumps(_RUN, indent=2, sort_keys=True) + "\n")
