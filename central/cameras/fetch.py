"""One JPEG from an IP camera's snapshot URL, within a deadline.

Credentials come from the URL's userinfo (``http://user:pass@cam/...``) and
are answered to whatever the camera asks for: Digest (Hikvision, Dahua,
Axis and most others by default) or Basic. Nothing is sent with the first
request, so a password never travels in clear text to a camera that wanted
Digest.
"""

from __future__ import annotations

import time
from typing import Generator

import httpx

from central.cameras.address import split_credentials

SNAPSHOT_TIMEOUT_S = 2.0  # the whole fetch: connect, headers, body
SNAPSHOT_MAX_BYTES = 8 * 1024 * 1024  # a 4K camera's JPEG is 1-2 MB
JPEG_MAGIC = b"\xff\xd8"


class SnapshotError(Exception):
    """A camera gave no usable JPEG; the message says why, without the credentials."""


class CameraAuth(httpx.Auth):
    """Digest or Basic, as the camera's 401 asks."""

    def __init__(self, username: str, password: str) -> None:
        self._digest = httpx.DigestAuth(username, password)
        self._basic = httpx.BasicAuth(username, password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        scheme = response.headers.get("www-authenticate", "").split(" ", 1)[0].lower()
        if scheme == "digest":
            flow = self._digest.auth_flow(request)
            next(flow)
            try:
                retry = flow.send(response)
            except StopIteration:
                return
            yield retry
        elif scheme == "basic":
            yield next(self._basic.auth_flow(request))


def fetch_jpeg(url: str, *, timeout_s: float = SNAPSHOT_TIMEOUT_S, max_bytes: int = SNAPSHOT_MAX_BYTES) -> bytes:
    """The camera's JPEG, or SnapshotError within about ``timeout_s``."""
    try:
        bare, user, password = split_credentials(url)
    except ValueError as exc:
        raise SnapshotError(f"not a usable address: {exc}") from None
    auth = CameraAuth(user, password) if user is not None else None
    deadline = time.monotonic() + timeout_s
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout_s), auth=auth, follow_redirects=False) as client:
            with client.stream("GET", bare, headers={"Accept": "image/jpeg"}) as response:
                if response.status_code != 200:
                    raise SnapshotError(f"HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise SnapshotError(f"larger than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise SnapshotError(f"not complete within {timeout_s} s")
    except httpx.TimeoutException:
        raise SnapshotError(f"no answer within {timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise SnapshotError(f"{type(exc).__name__}: {exc}".replace(url, bare)) from None
    if not body.startswith(JPEG_MAGIC):
        raise SnapshotError("the answer is not a JPEG")
    return bytes(body)
