"""The dashboard: one self-contained HTML page served at ``GET /`` of the admin listener.

Everything it needs (markup, style, script) is inline in ``static/dashboard.html``,
shipped as package data: it works on a machine with no Internet access and fetches
nothing but this admin endpoint's own ``/events`` (Server-Sent Events, one summary a
second: :func:`pyvs.admin.api.summary`) and the action routes its buttons call.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=1)
def page() -> str:
    """The dashboard's HTML (read once from the package)."""
    return files("pyvs.admin").joinpath("static/dashboard.html").read_text(encoding="utf-8")
