"""Set, add and remove header fields on the request to the server and the response to the client.

Theory of operation
-------------------
Everything that can be decided at load time is: the names to remove (and the names
that ``set`` replaces) become one compiled pattern that deletes every matching field
line, any case, in one ``sub`` over the head block; constant ``Name: value`` lines are
encoded once. Per request, a filter therefore costs one regex pass plus a list
extend, and a templated value one render (see :mod:`pyvs.l7.filters.variables`).

``set`` means "exactly this value": every field of that name the peer sent is
removed, then one line is appended. ``add`` appends a line and keeps what was sent.
``remove`` deletes every field of that name. New lines go after the existing ones
(on the request side through ``ex.add_lines``, which the exchange writes before the
final CRLF; on the response side straight onto ``rh.block``).

What a filter may not touch, and why (refused at load time with a ValueError):

* the framing fields, Content-Length and Transfer-Encoding: the body is delimited
  by pyvs from what the peer sent, and a head that says otherwise is a desync
  (request smuggling, truncated responses);
* the hop-by-hop fields (Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-*):
  they describe one connection, and pyvs writes its own;
* on requests, X-Forwarded-For/-Proto/-Host and Forwarded: pyvs removes what the
  client sent and writes them per the listener's forwarding settings, in one place;
* on requests, removing or adding Host (an HTTP/1.1 request needs exactly one).
  *Setting* Host is allowed -- pointing a virtual host at a server that expects its
  own name is common. ``head.host`` keeps the value the client sent (routing and
  X-Forwarded-Host are about the client's request).

A response head that was going to be forwarded byte for byte (``raw_ok``) may still
hold ``Connection: keep-alive``; once edited, the head is rebuilt by the exchange,
which writes its own Connection field, so that line is removed in the same pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

from pyvs.l7.filters.base import Filter, Verdict
from pyvs.l7.filters.variables import Template

if TYPE_CHECKING:
    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.filters.base import FilterExchange

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})

_TOKEN_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# Field-value characters (RFC 9110 5.5): no control character but HTAB.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

FRAMING: Final = frozenset({"content-length", "transfer-encoding"})
HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade"})  # and proxy-*
FORWARDING: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})


def check_name(name: str) -> str:
    """``name`` lower-cased, or ValueError when it is not a field name (RFC 9110 token)."""
    if not _TOKEN_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid header field name")
    return name.lower()


def check_value(name: str, value: str) -> None:
    """ValueError when ``value`` holds a control character (CR and LF above all)."""
    if _BAD_VALUE.search(value):
        raise ValueError(f"the value of header {name!r} holds a control character (CR, LF, NUL, ...): {value!r}")


def check_managed(name: str, lname: str) -> None:
    """ValueError for a framing or hop-by-hop field, which no configuration may write."""
    if lname in FRAMING:
        raise ValueError(f"header {name!r} frames the message; pyvs sets it from the body and it cannot be configured")
    if lname in HOP_BY_HOP or lname.startswith("proxy-"):
        raise ValueError(f"header {name!r} is hop-by-hop; pyvs manages it per connection and it cannot be configured")


def removal_pattern(lnames: Sequence[str]) -> re.Pattern[bytes]:
    """One pattern deleting every field line named in ``lnames`` (any case) from a head block.

    The match takes the CRLF *before* the line and the line itself; the line's own CRLF
    then ends the previous line, so the block stays well formed.
    """
    alternation = b"|".join(re.escape(n.encode("ascii")) for n in lnames)
    return re.compile(rb"\r\n(?i:" + alternation + rb")[ \t]*:[^\r\n]*(?=\r\n)")


# One appended field: a finished line, or (b"Name: ", value template).
_Line: TypeAlias = bytes | tuple[bytes, Template]


class _Compiled:
    """What both directions compile from set/add/remove (built once, shared by nothing else)."""

    __slots__ = ("const", "describe", "lines", "strip_names")

    def __init__(self, set_: Mapping[str, str], add: Mapping[str, str], remove: Sequence[str], *,
                 request: bool) -> None:
        seen_set: dict[str, str] = {}
        seen_remove: dict[str, str] = {}
        for name in remove:
            lname = check_name(name)
            check_managed(name, lname)
            if request and lname == "host":
                raise ValueError("header 'Host' cannot be removed from a request (HTTP/1.1 needs it); set it instead")
            if request and lname in FORWARDING:
                raise ValueError(f"header {name!r} is written by pyvs from the listener's forwarding settings")
            seen_remove.setdefault(lname, name)
        lines: list[_Line] = []
        for kind, fields in (("set", set_), ("add", add)):
            for name, value in fields.items():
                lname = check_name(name)
                check_managed(name, lname)
                if request and lname in FORWARDING:
                    raise ValueError(f"header {name!r} is written by pyvs from the listener's forwarding settings")
                if lname in seen_remove:
                    raise ValueError(f"header {name!r} is both removed and {kind} (use set alone)")
                if kind == "set":
                    if lname in seen_set:
                        raise ValueError(f"header {name!r} is set twice (as {seen_set[lname]!r} too)")
                    seen_set[lname] = name
                elif request and lname == "host":
                    raise ValueError("header 'Host' cannot be added to a request (it would be sent twice); set it")
                check_value(name, value)
                tpl = Template(value)
                if request and "server" in tpl.names:
                    raise ValueError(f"header {name!r}: %{{server}} is not known yet when the request is edited")
                prefix = name.encode("ascii") + b": "
                lines.append(prefix + tpl.constant + b"\r\n" if tpl.constant is not None else (prefix, tpl))
        self.lines = tuple(lines)
        # All constant: one precomputed tuple for the exchange to take as it is.
        self.const: tuple[bytes, ...] | None = None
        if all(isinstance(ln, bytes) for ln in lines):
            self.const = tuple(ln for ln in lines if isinstance(ln, bytes))
        self.strip_names = tuple(dict.fromkeys([*seen_remove, *seen_set]))
        parts = []
        if seen_set:
            parts.append("set " + ", ".join(seen_set.values()))
        if add:
            parts.append("add " + ", ".join(add))
        if seen_remove:
            parts.append("remove " + ", ".join(seen_remove.values()))
        self.describe = "; ".join(parts)


def _render(lines: tuple[_Line, ...], ex: FilterExchange) -> list[bytes]:
    """The appended lines of one exchange, in configuration order."""
    return [ln if isinstance(ln, bytes) else ln[0] + ln[1].render(ex) + b"\r\n" for ln in lines]


class RequestHeaders(Filter):
    """Edit the request head sent to the server (see the module docstring)."""

    __slots__ = ("_const", "_desc", "_lines", "_strip")
    name = "request_headers"
    requests = True

    def __init__(self, set: Mapping[str, str] = _EMPTY, add: Mapping[str, str] = _EMPTY,
                 remove: Sequence[str] = ()) -> None:
        c = _Compiled(set, add, remove, request=True)
        if not (c.lines or c.strip_names):
            raise ValueError("request_headers: nothing to set, add or remove")
        self._strip = removal_pattern(c.strip_names) if c.strip_names else None
        self._lines = c.lines
        self._const = c.const
        self._desc = c.describe

    def on_request(self, ex: FilterExchange) -> Verdict:
        head = ex.head
        if head is None:
            return Verdict.CONTINUE
        strip = self._strip
        if strip is not None:
            head.block = strip.sub(b"", head.block)
        const = self._const
        if const is not None:
            ex.add_lines.extend(const)
        else:
            ex.add_lines.extend(_render(self._lines, ex))
        return Verdict.CONTINUE

    def describe(self) -> str:
        return f"request headers: {self._desc}"


class ResponseHeaders(Filter):
    """Edit the response head sent to the client (see the module docstring)."""

    __slots__ = ("_const", "_desc", "_lines", "_strip", "_strip_raw")
    name = "response_headers"
    responses = True

    def __init__(self, set: Mapping[str, str] = _EMPTY, add: Mapping[str, str] = _EMPTY,
                 remove: Sequence[str] = ()) -> None:
        c = _Compiled(set, add, remove, request=False)
        if not (c.lines or c.strip_names):
            raise ValueError("response_headers: nothing to set, add or remove")
        self._strip = removal_pattern(c.strip_names) if c.strip_names else None
        # For a raw_ok head, the same pass also drops its "Connection: keep-alive".
        self._strip_raw = removal_pattern([*c.strip_names, "connection"])
        self._lines = c.lines
        self._const = b"".join(c.const) if c.const is not None else None
        self._desc = c.describe

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        block = rh.block
        if rh.raw_ok:
            block = self._strip_raw.sub(b"", block)
            rh.raw_ok = False
        elif self._strip is not None:
            block = self._strip.sub(b"", block)
        const = self._const
        if const is not None:
            rh.block = block + const
        else:
            rh.block = block + b"".join(_render(self._lines, ex))
        return Verdict.CONTINUE

    def describe(self) -> str:
        return f"response headers: {self._desc}"
