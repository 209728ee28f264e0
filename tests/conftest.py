"""Fixtures, one per seam, restored in ``finally``."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from tests.support import Broker, Processes

# The PostgreSQL that CI machines run (trust auth); a test makes a database of its own on it.
PG_ADMIN_URL = os.environ.get("GRIDPATROL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of this test's own on a free port; killed at teardown."""
    b = Broker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    """gpiozero's own mock pins, installed as the default factory for one test."""
    saved = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = saved


@pytest.fixture(autouse=True)
def _fail_on_logged_exceptions(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An exception that was only logged is a failure (as Home Assistant's tests do).

    A test that provokes such a log on purpose marks itself with
    ``@pytest.mark.allow_logged_exceptions``.
    """
    yield
    if request.node.get_closest_marker("allow_logged_exceptions"):
        return
    bad = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR and r.exc_info]
    if bad:
        pytest.fail(f"exception logged during the test: {bad[0].getMessage()}", pytrace=False)


def _pg_unreachable() -> str | None:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database of this test's own; dropped at teardown.

    Skipped with the reason when no PostgreSQL answers at GRIDPATROL_TEST_PG
    (default 127.0.0.1:5432, user postgres), unless GRIDPATROL_REQUIRE_PG=1
    (CI), where that is a failure.
    """
    import psycopg

    reason = _pg_unreachable()
    if reason is not None:
        if os.environ.get("GRIDPATROL_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required (GRIDPATROL_REQUIRE_PG=1): {reason}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {reason}")
    name = f"gp_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
