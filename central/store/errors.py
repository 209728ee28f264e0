"""The store's exceptions; :class:`StoreError` is the root."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used (missing file, wrong or newer schema, bad URL)."""
