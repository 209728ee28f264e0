"""The store's exceptions; :class:`StoreError` is the root."""

from __future__ import annotations

from central.errors import CentralError


class StoreError(CentralError):
    """The store cannot be used (missing file, wrong or newer schema, bad URL)."""
