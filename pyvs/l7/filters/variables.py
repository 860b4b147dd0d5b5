"""``%{name}`` templates: field values (and log text) that depend on the exchange.

Theory of operation
-------------------
A template is parsed once, when the configuration is loaded, into a tuple of parts:
literal bytes, and the names of the variables it uses. Rendering then asks the
exchange (:meth:`FilterExchange.variable`) for those names only and joins the parts;
a template without variables is its precompiled bytes and costs one attribute read.

Syntax: ``%{name}`` is a variable, ``%%`` a literal ``%``; a ``%`` followed by
anything else is kept as it is (so ``50%`` needs no escaping). An unknown name or an
unterminated ``%{`` is a configuration error, reported at load time with the name.

Rendered values are spliced into header lines, and some of them come from the
client (the path, a request id taken from a header). CR, LF and NUL are therefore
deleted from every variable's value: whatever a client sends, a template cannot
start a new field line or end the head.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pyvs.l7.filters.base import FilterExchange

# What FilterExchange.variable answers for. Kept here, next to the syntax, so the
# configuration reference and the exchange have one list to agree on.
VARIABLES: Final = frozenset({
    "client_ip",  # after trusted-proxy / PROXY protocol handling
    "request_id",
    "host",  # the Host field as sent
    "method",
    "path",  # without the query
    "query",  # without "?"
    "scheme",  # http or https, as the client connected
    "start_ms",  # when the request head arrived, ms since the epoch
    "server",  # the chosen server's name (empty before a server is picked)
    "backend",
    "route",
    "vhost",
    "listener",
    "tls_version",  # TLSv1.2 / TLSv1.3 (empty on a plain connection; docs/tls.md)
    "tls_cipher",
    "tls_sni",  # the name the client sent in SNI
    "tls_client_subject",  # the verified client certificate's subject (RFC 4514)
})

_TOKEN = re.compile(r"%%|%\{([^}]*)\}|%\{")
_UNSAFE = b"\r\n\x00"


def clean(value: bytes) -> bytes:
    """``value`` without CR, LF and NUL: safe inside one header line."""
    return value.translate(None, _UNSAFE)


class Template:
    """A compiled ``%{name}`` template (see the module docstring).

    ``constant`` is the rendered bytes when the template uses no variable (callers
    precompute whole lines from it), else None. ``names`` lists the variables used,
    in order of first use, so a caller can refuse one that is not known at its phase.
    """

    __slots__ = ("_parts", "_single", "constant", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        parts: list[bytes | str] = []
        literal: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(source):
            literal.append(source[pos:m.start()])
            pos = m.end()
            text = m.group(0)
            if text == "%%":
                literal.append("%")
                continue
            name = m.group(1)
            if name is None:
                raise ValueError(f"unterminated %{{ in template {source!r}")
            if name not in VARIABLES:
                raise ValueError(
                    f"unknown variable %{{{name}}} in template {source!r} (known: {', '.join(sorted(VARIABLES))})"
                )
            if literal:
                lit = "".join(literal).encode("utf-8")
                if lit:
                    parts.append(lit)
                literal = []
            parts.append(name)
        literal.append(source[pos:])
        tail = "".join(literal).encode("utf-8")
        if tail:
            parts.append(tail)
        self._parts = tuple(parts)
        self.names = tuple(dict.fromkeys(p for p in parts if isinstance(p, str)))
        self.constant: bytes | None = None
        if not self.names:
            self.constant = tail
        # A template that is exactly one variable (the usual "%{request_id}") skips the join.
        self._single = parts[0] if len(parts) == 1 and isinstance(parts[0], str) else None

    def render(self, ex: FilterExchange) -> bytes:
        """The template's bytes for this exchange, values cleaned of CR/LF/NUL."""
        const = self.constant
        if const is not None:
            return const
        single = self._single
        if single is not None:
            return ex.variable(single).translate(None, _UNSAFE)
        variable = ex.variable
        return b"".join([
            p if isinstance(p, bytes) else variable(p).translate(None, _UNSAFE) for p in self._parts
        ])

    def __repr__(self) -> str:
        return f"Template({self.source!r})"
