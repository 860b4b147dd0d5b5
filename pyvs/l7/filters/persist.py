"""Session persistence as a filter: the response side of a sticky backend.

A backend with ``persistence`` (pyvs/persist) takes part in two phases of an
exchange. Choosing the server is the *pick* phase (Pingora's ``upstream_peer``): the
exchange asks the backend's persistence instead of the scheduler, because only it
knows the session key and the table. Editing the response (insert or rewrite the
``Set-Cookie`` that names the server, learn a token the server issued) is an ordinary
response filter, this one, placed in the chain of every route to such a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvs.l7.filters.base import Filter, Verdict

if TYPE_CHECKING:
    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.filters.base import FilterExchange
    from pyvs.upstream.server import SessionPicker


class StickyResponse(Filter):
    """Hands the response head to the backend's persistence (cookie or table)."""

    __slots__ = ("persist",)
    name = "persistence"
    responses = True

    def __init__(self, persist: SessionPicker) -> None:
        self.persist = persist

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        server: Any = getattr(ex, "server", None)
        if server is not None:  # may edit rh.block and clear rh.raw_ok (Set-Cookie)
            self.persist.on_response(ex, rh, server)
        return Verdict.CONTINUE

    def describe(self) -> str:
        stats = self.persist.statistics()
        return f"persistence {stats.get('type', '')}".strip()
