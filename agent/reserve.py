"""Room kept in hand for the day the agent's disk fills up.

SQLite in WAL mode cannot even delete rows on a disk without a free block:
the deletion goes to the WAL first. An outbox on a full disk could then
neither store a new alarm nor apply central's acks, and would stay full for
good. So the outbox keeps a file of ``RESERVE_BYTES`` beside it, really
allocated (not sparse), and gives it back when SQLite first reports a full
disk. That room lets SQLite checkpoint and truncate its WAL (which gives back
far more), apply acks and go on storing the events that must not be lost.
The reserve is taken again only once the disk has room for it and
``RESUME_FREE_BYTES`` more, so a disk hovering at full does not flap.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20
# Beyond the reserve: a WAL grows to about 4 MiB (1000 pages) between
# checkpoints, and must fit before the disk counts as having room again.
RESUME_FREE_BYTES = 8 << 20
_CHUNK_BYTES = 64 << 10


class DiskReserve:
    """A file of ``size`` bytes at ``path``: :meth:`release` frees them, :meth:`take` claims them again."""

    def __init__(self, path: Path, *, size: int = RESERVE_BYTES, resume_free: int = RESUME_FREE_BYTES) -> None:
        self.path = Path(path)
        self.size = size
        self.resume_free = resume_free
        try:
            self._held = self.path.stat().st_size >= size
        except OSError:
            self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def take(self) -> bool:
        """Claim the reserve if the disk has room for it and the margin; True when it is held."""
        if self._held:
            return True
        free = self.free_bytes()
        if free is None or free < self.size + self.resume_free:
            return False
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                self._allocate(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as exc:
            _LOGGER.warning("cannot set aside %d bytes at %s: %s", self.size, self.path, exc)
            temp.unlink(missing_ok=True)
            return False
        self._held = True
        return True

    def _allocate(self, fd: int) -> None:
        try:
            os.posix_fallocate(fd, 0, self.size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: write it out
                raise
        zeros = bytes(_CHUNK_BYTES)
        left = self.size
        while left > 0:
            left -= os.write(fd, zeros[: min(left, _CHUNK_BYTES)])

    def release(self) -> bool:
        """Give the reserve back to the disk; True when there was one to give."""
        if not self._held and not self.path.exists():
            return False
        self._held = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            _LOGGER.error("cannot release the disk reserve %s: %s", self.path, exc)
            return False
        return True
