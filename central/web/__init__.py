"""The control-room dashboard: Starlette pages, a JSON API and a live stream.

``build_app`` (app.py) assembles it from central's objects; ``WebServer``
(server.py) runs it under uvicorn on a thread of central's process.
"""

from __future__ import annotations

from central.errors import CentralError


class WebError(CentralError):
    """Root of the dashboard's own errors."""


class UserError(WebError, ValueError):
    """A staff account request that cannot be honoured (bad name, unit, password)."""
