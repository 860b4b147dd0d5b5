"""Answers pyvs gives itself instead of asking a server: respond, deny, redirect.

Theory of operation
-------------------
Each of these ends the exchange from ``on_request``: it sets ``ex.reply`` and returns
``RESPOND``, so no server is picked. A fixed answer (:class:`Respond`, :class:`Deny`,
a :class:`Redirect` whose target uses no variable) is one
:class:`~pyvs.l7.filters.base.Reply` built at load time and shared by every request;
the Reply caches its encoded bytes, so answering costs an attribute store.

A redirect target is a small template compiled once into parts::

    $scheme   http or https, as the client connected
    $host     the Host field as the client sent it, port included (empty if absent)
    $path     the path as the client sent it, without the query
    $query    "?" and the query when there is one, else nothing
    $$        a literal "$"

``${name}`` is the same as ``$name`` and can be followed by letters. Any other
``$`` is a configuration error, so a typo fails at load time, not in a Location.
The redirect carries no body and no caching directive: 301 and 308 are meant to
be cached, 302/303/307 are not by default (RFC 9111 4.2.2), which is what a
redirect rule wants.

Fields given to :class:`Respond` follow the rules of :mod:`pyvs.l7.filters.headers`:
no framing or hop-by-hop field (the Reply writes Content-Length and the exchange
Connection), names must be tokens, values hold no control character.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from pyvs.l7.filters.base import Filter, Reply, Verdict
from pyvs.l7.filters.headers import check_managed, check_name, check_value

if TYPE_CHECKING:
    from pyvs.l7.filters.base import FilterExchange

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_TEXT = "text/plain; charset=utf-8"
# Statuses that must not carry a body (RFC 9110 6.4.1): no Content-Type either.
_NO_BODY = frozenset({204, 304})
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


def _encode_body(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


class Respond(Filter):
    """Answer with a fixed response (a maintenance page, a health endpoint, a robots.txt)."""

    __slots__ = ("_desc", "_reply")
    name = "respond"
    requests = True

    def __init__(self, status: int = 200, body: str | bytes = "", headers: Mapping[str, str] = _EMPTY,
                 content_type: str = _TEXT) -> None:
        if not 200 <= status <= 599:
            raise ValueError(f"respond: status {status} must be 200-599 (an interim 1xx is not an answer)")
        data = _encode_body(body)
        if status in _NO_BODY and data:
            raise ValueError(f"respond: a {status} response has no body")
        fields = []
        if data:
            check_value("Content-Type", content_type)
            fields.append(b"Content-Type: " + content_type.encode("utf-8") + b"\r\n")
        for name, value in headers.items():
            lname = check_name(name)
            check_managed(name, lname)
            if lname == "content-type":
                raise ValueError("respond: give the Content-Type as content_type, not in headers")
            check_value(name, value)
            fields.append(name.encode("ascii") + b": " + value.encode("utf-8") + b"\r\n")
        self._reply = Reply(status, b"".join(fields), data)
        self._desc = f"respond {status} with {len(data)} bytes" + (f" and {', '.join(headers)}" if headers else "")

    def on_request(self, ex: FilterExchange) -> Verdict:
        ex.reply = self._reply
        return Verdict.RESPOND

    def describe(self) -> str:
        return self._desc


class Deny(Filter):
    """Refuse every request of the route with an error status.

    ``Cache-Control: no-store`` is sent because a deny rule is often one route among
    several for the same URL (chosen by a header, a method, an address), and a shared
    cache keyed by URL alone must not hand the refusal to the others.
    """

    __slots__ = ("_reply", "status")
    name = "deny"
    requests = True

    def __init__(self, status: int = 403, body: str | bytes | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"deny: status {status} is not an error status (400-599)")
        data = b"pyvs: access denied.\n" if body is None else _encode_body(body)
        fields = b"Content-Type: text/plain; charset=utf-8\r\n" if data else b""
        self._reply = Reply(status, fields + b"Cache-Control: no-store\r\n", data)
        self.status = status

    def on_request(self, ex: FilterExchange) -> Verdict:
        ex.reply = self._reply
        return Verdict.RESPOND

    def describe(self) -> str:
        return f"deny with {self.status}"


def _scheme(ex: FilterExchange) -> bytes:
    return ex.view.scheme


def _host(ex: FilterExchange) -> bytes:
    head = ex.head
    return (head.host or b"") if head is not None else b""


def _path(ex: FilterExchange) -> bytes:
    return ex.view.path


def _query(ex: FilterExchange) -> bytes:
    q = ex.view.query
    return b"?" + q if q else b""


_REDIRECT_VARS: Final[Mapping[str, Callable[[FilterExchange], bytes]]] = MappingProxyType(
    {"scheme": _scheme, "host": _host, "path": _path, "query": _query}
)
_DOLLAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))?")
# A Location is a URI reference: visible ASCII only (percent-encode anything else).
_BAD_LOCATION = re.compile(r"[^\x21-\x7e]")


class Redirect(Filter):
    """Answer with a redirect to a target built from the request (see the module docstring)."""

    __slots__ = ("_parts", "_reply", "status", "to")
    name = "redirect"
    requests = True

    def __init__(self, to: str, status: int = 302) -> None:
        if status not in REDIRECT_STATUSES:
            raise ValueError(f"redirect: status {status} is not one of {sorted(REDIRECT_STATUSES)}")
        if not to:
            raise ValueError("redirect: empty target")
        bad = _BAD_LOCATION.search(to)
        if bad:
            raise ValueError(f"redirect: target {to!r} holds {bad.group()!r}; percent-encode it")
        parts: list[bytes | Callable[[FilterExchange], bytes]] = []
        literal: list[str] = []
        pos = 0
        for m in _DOLLAR.finditer(to):
            literal.append(to[pos:m.start()])
            pos = m.end()
            if m.group(1):
                literal.append("$")
                continue
            name = m.group(2) or m.group(3)
            if name is None:
                raise ValueError(f"redirect: a lone '$' in {to!r} (write $$ for a literal one)")
            getter = _REDIRECT_VARS.get(name)
            if getter is None:
                raise ValueError(f"redirect: unknown variable ${name} in {to!r} (known: $scheme $host $path $query)")
            if "".join(literal):
                parts.append("".join(literal).encode("ascii"))
            literal = []
            parts.append(getter)
        literal.append(to[pos:])
        if "".join(literal):
            parts.append("".join(literal).encode("ascii"))
        self.to = to
        self.status = status
        self._parts = tuple(parts)
        self._reply: Reply | None = None
        if all(isinstance(p, bytes) for p in parts):
            self._reply = Reply(status, b"Location: " + b"".join(p for p in parts if isinstance(p, bytes)) + b"\r\n",
                                b"")

    def location(self, ex: FilterExchange) -> bytes:
        """The Location value for this exchange (CR/LF/NUL and spaces removed, whatever the request held)."""
        loc = b"".join([p if isinstance(p, bytes) else p(ex) for p in self._parts])
        return loc.translate(None, b"\r\n\x00 ")

    def on_request(self, ex: FilterExchange) -> Verdict:
        reply = self._reply
        if reply is None:
            reply = Reply(self.status, b"Location: " + self.location(ex) + b"\r\n", b"")
        ex.reply = reply
        return Verdict.RESPOND

    def describe(self) -> str:
        return f"redirect {self.status} to {self.to}"
