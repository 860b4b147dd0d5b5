"""Background revalidation for ``stale-while-revalidate`` (RFC 5861): an exchange
with no client.

Theory of operation
-------------------
When a stale entry may still be served while it is revalidated, the cache answers
the client at once with the stale response and asks this module to refresh the
entry. The refresh is the client's request as the route's filters left it (rewritten
path, added fields), made conditional with the entry's validator, sent through the
same route, backend and server pool (nginx's ``proxy_cache_background_update`` is a
subrequest in the same spirit): routing and request filters are not run again
(:meth:`Exchange.start_filtered`). A :class:`Revalidation` is one more
:class:`pyvs.l7.downstream.Downstream`, like an HTTP/1 connection or an HTTP/2
stream, whose response body goes nowhere; the response filters run as for any
request, so the 304 or the new response updates the store. The cache recognises it
(``revalidating``) and does not count it as a client's hit or miss.

One revalidation per key for the instance: the cache claims the key's fetch in the
shared zone before starting one (:meth:`CacheStore.claim_fetch`) and this downstream
gives the claim back when its exchange ends, however it ends. Background requests are
not client requests: they are not in the access log or the request counters.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from pyvs.http.h1 import CHUNKED
from pyvs.upstream.connection import DECODE, REBUILT

if TYPE_CHECKING:
    import asyncio

    from pyvs.http.h1 import RequestHead, ResponseHead
    from pyvs.l7.exchange import Exchange
    from pyvs.l7.listener import RouteRuntime
    from pyvs.upstream.connection import UpstreamConn

log = logging.getLogger("pyvs.cache")


class Revalidation:
    """The downstream of one background revalidation (see the module docstring)."""

    transport: asyncio.Transport | None = None
    close_after = False
    inbuf = b""
    revalidating = True  # read by the cache filter (pyvs/accel/cache.py)

    def __init__(self, origin: Any, release: Any) -> None:
        from pyvs.l7.exchange import Exchange

        self.req_ended = True
        self.client_write_blocked = False
        self.reading_paused = False
        self.up_write_blocked = False
        self.deadline = 0.0
        self.wbuf: list[bytes] = []
        self.done = False
        self.status = 0
        self.release = release  # gives the key's fetch claim back
        self.ex = ex = Exchange(origin.lst, self)
        # The client facts of the request that found the entry stale: the route, the
        # filters and the forwarding fields see what they saw for it.
        ex.client_ip, ex.trusted, ex.xff_line, ex.fw_plain = origin.client_ip, origin.trusted, origin.xff_line, False
        cls = type(origin.view)  # a TLS connection's view carries its TLS facts
        view = cls(origin.view.tls) if hasattr(origin.view, "tls") else cls()
        view.client_ip, view.local_ip, view.scheme = origin.view.client_ip, origin.view.local_ip, origin.view.scheme
        ex.view = view

    def start(self, head: RequestHead, route: RouteRuntime, lines: list[bytes]) -> None:
        try:
            self.ex.start_filtered(head, route, lines)
        except Exception:  # a background request must never hurt the worker
            log.exception("cache: background revalidation failed to start")
            self._finish(0)

    # ------------------------------------------------------ the response
    def present(self, ex: Exchange, rh: ResponseHead) -> int:
        self.status = rh.status
        return DECODE if rh.framing == CHUNKED else REBUILT

    def flush_client(self) -> None:
        self.wbuf.clear()  # the body's copy went to the cache's stage already

    def on_interim(self, rh: ResponseHead) -> None:
        pass

    def response_ended(self) -> None:
        self.wbuf.clear()

    def exchange_done(self, status: int, now: float) -> None:
        self._finish(status)

    def whole_response_done(self, now: float) -> None:
        self._finish(self.status)

    def send_error(self, status: int, *, close: bool, data: bytes | None = None) -> None:
        if not self.done:
            self.ex.drop_upstream()
            self._finish(status)

    def abort(self) -> None:
        if not self.done:
            self.ex.drop_upstream()
            self._finish(0)

    def _finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        self.wbuf.clear()
        self.release()
        if self.ex.head is not None:
            self.ex.finished()
        log.debug("cache: background revalidation ended with %s", status or "no response")

    # ------------------------------------------------------- the rest
    def pause_reading(self) -> None:
        self.reading_paused = True

    def maybe_resume(self) -> None:
        self.reading_paused = False

    def in_tunnel(self) -> bool:
        return False

    def response_until_close(self) -> bool:
        return False

    def on_tunnel_data(self, data: bytes) -> None:
        self.abort()

    def upstream_eof(self, conn: UpstreamConn) -> None:
        self.abort()

    def tunnel_ended(self) -> None:
        self.abort()


def revalidate_in_background(origin: Any, validator: bytes, release: Any) -> None:
    """Start a background revalidation on the next loop turn, from the exchange
    ``origin`` that found the entry stale (a bodiless GET, its request filters run):
    its head and filters' lines as they are now, plus ``validator``."""
    head = copy.copy(origin.head)  # the client's exchange moves on; (a header filter may have removed Host)
    lines = [*origin.add_lines, validator] if validator else list(origin.add_lines)
    r = Revalidation(origin, release)
    origin.loop.call_soon(r.start, head, origin.route, lines)
