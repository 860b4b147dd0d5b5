"""Filters a TLS (or plain) listener adds in front of every route's chain.

* :class:`Hsts` -- ``Strict-Transport-Security`` on every response of a TLS
  listener (``tls.hsts``).
* :class:`ClientSubject` -- with ``tls.client_ca``: the verified client
  certificate's subject to the server in ``tls.client_subject_header``. What the
  client itself sent under that name is always removed first: the header is
  believed by servers, so a client must never be able to write it.
* :class:`HttpsRedirect` -- ``redirect_https`` on a plain listener: every request is
  answered ``308`` to the same host and target over https (308 keeps the method and
  body, unlike 301/302).

They are built once per listener (:func:`listener_filters`) and prepended to each
route's chain; a listener without these settings gets none, and its routes keep
the short path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pyvs.l7.filters.base import Filter, FilterExchange, Reply, Verdict
from pyvs.tls.conn import facts_of

if TYPE_CHECKING:
    from pyvs.http.h1 import ResponseHead


class Hsts(Filter):
    """Add Strict-Transport-Security to every response (the server's own is replaced)."""

    __slots__ = ("line",)
    name = "hsts"
    responses = True
    _own = re.compile(rb"\r\nstrict-transport-security[ \t]*:[^\r\n]*", re.IGNORECASE)

    def __init__(self, max_age: float, include_subdomains: bool, preload: bool) -> None:
        value = b"max-age=%d" % int(max_age)
        if include_subdomains:
            value += b"; includeSubDomains"
        if preload:
            value += b"; preload"
        self.line = b"Strict-Transport-Security: " + value + b"\r\n"

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        block = rh.block
        if b"trict-" in block or b"TRICT-" in block:
            block = self._own.sub(b"", block)
        rh.block = block + self.line
        rh.raw_ok = False
        return Verdict.CONTINUE

    def describe(self) -> str:
        return "hsts " + self.line[29:-2].decode()


class ClientSubject(Filter):
    """Pass the verified client subject to the server (see the module docstring)."""

    __slots__ = ("name_b", "pattern")
    name = "client-subject"
    requests = True

    def __init__(self, header: str) -> None:
        self.name_b = header.encode("ascii")
        self.pattern = re.compile(rb"\r\n" + re.escape(self.name_b) + rb"[ \t]*:[^\r\n]*", re.IGNORECASE)

    def on_request(self, ex: FilterExchange) -> Verdict:
        head = ex.head
        assert head is not None
        if self.name_b.lower() in head.block.lower():
            head.block = self.pattern.sub(b"", head.block)
        facts = facts_of(ex.view)
        subject = facts.client_subject if facts is not None else b""
        if subject:
            ex.add_lines.append(self.name_b + b": " + subject + b"\r\n")
        return Verdict.CONTINUE

    def describe(self) -> str:
        return f"client subject in {self.name_b.decode()}"


class HttpsRedirect(Filter):
    """redirect_https: 308 to ``https://host[:port]/target`` for every request."""

    __slots__ = ("port",)
    name = "redirect-https"
    requests = True

    def __init__(self, port: int) -> None:
        self.port = b"" if port == 443 else b":%d" % port

    def on_request(self, ex: FilterExchange) -> Verdict:
        head = ex.head
        assert head is not None
        host = ex.view.host
        if not host or not re.fullmatch(rb"[a-z0-9._\[\]:-]+", host):
            ex.reply = Reply(400, b"Content-Type: text/plain\r\n", b"a request to redirect to https needs a Host\n")
            return Verdict.RESPOND
        target = head.target if head.target.startswith(b"/") else b"/"
        location = b"https://" + host + self.port + target
        ex.reply = Reply(308, b"Location: " + location + b"\r\nContent-Type: text/plain\r\n",
                         b"moved to " + location + b"\n")
        return Verdict.RESPOND

    def describe(self) -> str:
        return "redirect to https" + (f" (port {self.port[1:].decode()})" if self.port else "")


def listener_filters(cfg: Any) -> tuple[Filter, ...]:
    """The filters a TLS listener puts before every route's own (may be none);
    ``redirect_https`` runs before routing instead (:func:`https_redirect`)."""
    out: list[Filter] = []
    tls = cfg.tls
    if tls is not None:
        if tls.client_ca is not None:
            out.append(ClientSubject(tls.client_subject_header))
        if tls.hsts is not None:
            out.append(Hsts(tls.hsts.max_age, tls.hsts.include_subdomains, tls.hsts.preload))
    return tuple(out)


class Before(Filter):
    """Two request filters as one: the listener's own ACL, then ``redirect_https``
    (both run before routing, as ``ListenerRuntime.acl``)."""

    __slots__ = ("first", "second")
    name = "before-routing"
    requests = True

    def __init__(self, first: Filter, second: Filter) -> None:
        self.first = first
        self.second = second

    def on_request(self, ex: FilterExchange) -> Verdict:
        if self.first.on_request(ex) == Verdict.RESPOND:
            return Verdict.RESPOND
        return self.second.on_request(ex)


def https_redirect(cfg: Any) -> HttpsRedirect | None:
    """The listener's ``redirect_https`` filter, or None."""
    if cfg.redirect_https is False:
        return None
    return HttpsRedirect(443 if cfg.redirect_https is True else int(cfg.redirect_https))
