"""What the hashing algorithms hash, and with which function.

Keys
----
``source``          the client address (``ctx.client_ip``);
``uri``             the path; ``uri(whole)`` adds ``?query`` so that ``/a?x=1`` and
                    ``/a?x=2`` may go to different servers;
``header(NAME)``    the value of header NAME (case-insensitive name);
``cookie(NAME)``    the value of cookie NAME;
``param(NAME)``     the value of query parameter NAME (first occurrence, not decoded,
                    as HAProxy's ``url_param``).

A request that lacks the key (no such header, empty path) has no key: the
scheduler falls back to round robin for it rather than sending every keyless
request to the one server that owns the hash of "".

Hash function
-------------
BLAKE2b cut to 64 bits. Every worker process and every pyvs instance must map a
key to the same server, so Python's ``hash()`` (salted per process) is out; and
the modulo (``map``) and ring placements need well-mixed bits even for keys that
differ in one character, which rules out CRC-32 on its own. BLAKE2b costs about
0.6 microseconds per key in CPython, measured, cheaper than CRC-32 plus a
pure-Python finaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b

from pyvs.balance.base import PickContext

KeyFn = Callable[[PickContext], "str | None"]

KEY_KINDS = ("source", "uri", "header", "cookie", "param")


def hash64(data: str) -> int:
    """A stable, well-mixed 64-bit hash of ``data`` (the same in every process)."""
    return int.from_bytes(blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def key_function(kind: str, arg: str = "") -> KeyFn:
    """The function extracting the key of ``kind`` (one of :data:`KEY_KINDS`)."""
    if kind == "source":
        if arg:
            raise ValueError("source takes no argument")
        return _source
    if kind == "uri":
        if arg == "whole":
            return _uri_whole
        if arg:
            raise ValueError(f"uri accepts only the argument 'whole', got {arg!r}")
        return _uri_path
    if not arg:
        raise ValueError(f"{kind} needs a name, e.g. {kind}(NAME)")
    if kind == "header":
        return _header_key(arg)
    if kind == "cookie":
        return _cookie_key(arg)
    if kind == "param":
        return _param_key(arg)
    raise ValueError(f"unknown hash key kind {kind!r}")


def _source(ctx: PickContext) -> str | None:
    return ctx.client_ip or None


def _uri_path(ctx: PickContext) -> str | None:
    return ctx.path or None


def _uri_whole(ctx: PickContext) -> str | None:
    if not ctx.path:
        return None
    q = ctx.query.lstrip("?")
    return f"{ctx.path}?{q}" if q else ctx.path


def _header_key(name: str) -> KeyFn:
    lower = name.lower()

    def key(ctx: PickContext) -> str | None:
        headers = ctx.headers
        value = headers.get(name)
        if value is None:
            value = headers.get(lower)
            if value is None:
                for k, v in headers.items():
                    if k.lower() == lower:
                        value = v
                        break
        return value or None

    return key


def _cookie_key(name: str) -> KeyFn:
    def key(ctx: PickContext) -> str | None:
        return ctx.cookies.get(name) or None

    return key


def _param_key(name: str) -> KeyFn:
    prefix = name + "="

    def key(ctx: PickContext) -> str | None:
        query = ctx.query
        if not query or prefix not in query:
            return None
        for part in query.lstrip("?").split("&"):
            if part.startswith(prefix):
                return part[len(prefix) :] or None
        return None

    return key
