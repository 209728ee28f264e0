"""Fetching a snapshot from a real local HTTP camera: auth as the camera asks, a deadline, no junk kept."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from central.cameras.address import public_address
from central.cameras.fetch import SnapshotError, fetch_jpeg
from tests.central.http_fakes import JPEG, FakeCamera


@pytest.fixture
def camera() -> Iterator[FakeCamera]:
    cam = FakeCamera("digest")
    cam.start()
    try:
        yield cam
    finally:
        cam.stop()


@pytest.mark.parametrize("mode", ["digest", "basic", "open"])
def test_a_jpeg_with_the_auth_the_camera_asks_for(camera: FakeCamera, mode: str) -> None:
    camera.mode = mode
    assert fetch_jpeg(camera.url()) == JPEG
    assert camera.jpegs_served() == 1


def test_wrong_credentials_are_a_401_not_a_picture(camera: FakeCamera) -> None:
    with pytest.raises(SnapshotError, match="^HTTP 401$"):
        fetch_jpeg(camera.url().replace("pass%20word", "nope"))


def test_a_500_and_a_page_that_is_no_jpeg_are_refused(camera: FakeCamera) -> None:
    camera.mode = "500"
    with pytest.raises(SnapshotError, match="^HTTP 500$"):
        fetch_jpeg(camera.url())
    camera.mode = "html"
    with pytest.raises(SnapshotError, match="^the answer is not a JPEG$"):
        fetch_jpeg(camera.url())


def test_a_hanging_camera_gives_up_within_the_deadline(camera: FakeCamera) -> None:
    camera.mode = "hang"
    started = time.monotonic()
    with pytest.raises(SnapshotError, match="^no answer within 0.5 s$"):
        fetch_jpeg(camera.url(), timeout_s=0.5)
    assert time.monotonic() - started < 1.5


def test_a_camera_that_is_not_there() -> None:
    from tests.support import free_port

    with pytest.raises(SnapshotError, match="^ConnectError"):
        fetch_jpeg(f"http://admin:secret@127.0.0.1:{free_port()}/snap.jpg")


def test_operators_see_the_stream_without_its_password() -> None:
    assert public_address("rtsp://admin:Secret1@10.0.0.64:554/Streaming/Channels/101") == \
        "rtsp://10.0.0.64:554/Streaming/Channels/101"
    assert public_address("rtsp://10.0.0.64/live") == "rtsp://10.0.0.64/live"
