"""Fixtures, one per seam, restored in ``finally``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from tests.support import Broker, Processes


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
