"""The dev server: the HTTP API (an ASGI app), its log output and hot reload.

Nothing in the core imports this package; it is built on :class:`convexpy.Runtime`.
"""

from __future__ import annotations

from .http import MAX_REQUEST_BYTES, Reporter, create_app

__all__ = ["MAX_REQUEST_BYTES", "Reporter", "create_app"]
