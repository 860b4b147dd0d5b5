"""Rewrite the path of the request sent to the server.

Theory of operation
-------------------
The path is edited in place in the request line of ``ex.head.block`` (``METHOD SP
target SP HTTP/x.y``) and in ``ex.head.target``; the query is kept byte for byte.
Three steps, each optional, always in this order:

1. ``strip_prefix``: removed when the path starts with it *at a segment boundary*:
   ``/api`` strips ``/api`` and ``/api/x`` but leaves ``/apix`` alone (a prefix that
   ends in ``/`` is matched as it is). Plain ``startswith`` would turn ``/apix`` into
   ``/x``, which is never what a prefix route meant;
2. ``regex`` / ``replace``: Python :func:`re.sub` on the path, first match only,
   ``\\1`` and ``\\g<name>`` refer to groups. The replacement is checked against the
   pattern's groups at load time, so a bad ``\\3`` fails the configuration rather
   than a request. ``?`` and ``#`` are refused in it: the query is not the
   path's to change;
3. ``add_prefix``: put in front (``/v2`` + ``/x`` -> ``/v2/x``).

The result always starts with ``/`` (an empty one is ``/``). Paths are raw bytes,
matched as sent: no percent-decoding, so a pattern sees ``%2F`` as three characters.

The exchange's :class:`~pyvs.l7.request.RequestView` keeps describing the request as
the client sent it (what routing matched, what a later redirect or the log sees),
while the head is what the server gets. An absolute-form target (``http://h/p?q``) keeps its
scheme and authority; ``*`` (``OPTIONS *``) is not a path and is never rewritten.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pyvs.l7.filters.base import Filter, Verdict

if TYPE_CHECKING:
    from pyvs.l7.filters.base import FilterExchange


def _check_replacement(pattern: re.Pattern[bytes], replace: bytes) -> None:
    """Raise ValueError when ``replace`` refers to a group ``pattern`` lacks, or is malformed.

    :mod:`re` parses a replacement only when something matches. A stand-in pattern
    with the same groups (numbered and named alike) that matches the empty string
    makes it parse now, with the public API only.
    """
    names = {index: name for name, index in pattern.groupindex.items()}
    stand_in = b"".join(
        b"(?P<" + names[i].encode("ascii") + b">)" if i in names else b"()" for i in range(1, pattern.groups + 1)
    )
    try:
        re.compile(stand_in).sub(replace, b"", count=1)
    except (re.error, IndexError) as exc:
        raise ValueError(f"path rewrite: bad replacement {replace!r} for {pattern.pattern!r}: {exc}") from None


class PathRewrite(Filter):
    """Rewrite the request path before it is forwarded (see the module docstring)."""

    __slots__ = ("_add", "_regex", "_replace", "_strip", "_strip_exact")
    name = "path_rewrite"
    requests = True

    def __init__(self, strip_prefix: str | None = None, add_prefix: str | None = None, regex: str | None = None,
                 replace: str | None = None) -> None:
        if strip_prefix is None and add_prefix is None and regex is None:
            raise ValueError("path rewrite: nothing to do (give strip_prefix, add_prefix or regex)")
        if (regex is None) != (replace is None):
            raise ValueError("path rewrite: regex and replace go together")
        for what, prefix in (("strip_prefix", strip_prefix), ("add_prefix", add_prefix)):
            if prefix is not None and (not prefix.startswith("/") or re.search(r"[\x00-\x20\x7f?#]", prefix)):
                raise ValueError(f"path rewrite: {what} {prefix!r} must be a path: '/' first, no space, '?' or '#'")
        if replace is not None and re.search(r"[\x00-\x20\x7f?#]", replace):
            raise ValueError(f"path rewrite: replace {replace!r} holds a space, '?', '#' or a control character")
        if replace is not None and re.search(r"\\(?![1-9](?![0-9])|g<|\\)", replace):
            # re.sub would turn "\r", "\n" or "\040" into the very bytes refused above
            raise ValueError(f"path rewrite: replace {replace!r}: only \\1 to \\9 or \\g<name> may follow a backslash")
        if strip_prefix == "/":
            raise ValueError("path rewrite: strip_prefix '/' strips nothing")
        self._strip: bytes | None = None
        self._strip_exact = b""  # the prefix without a trailing "/": the whole path it also strips
        if strip_prefix is not None:
            self._strip = strip_prefix.encode("utf-8")
            self._strip_exact = self._strip.rstrip(b"/")
        # "/v2/" + "/x" must give "/v2/x": the joining slash comes from the path.
        self._add = add_prefix.encode("utf-8").rstrip(b"/") if add_prefix is not None else None
        self._regex: re.Pattern[bytes] | None = None
        self._replace = b""
        if regex is not None and replace is not None:
            try:
                self._regex = re.compile(regex.encode("utf-8"))
            except re.error as exc:
                raise ValueError(f"path rewrite: bad regex {regex!r}: {exc}") from None
            self._replace = replace.encode("utf-8")
            _check_replacement(self._regex, self._replace)

    def rewrite(self, path: bytes) -> bytes:
        """The new path for ``path`` (no query): the three steps of the module docstring."""
        prefix = self._strip
        if prefix is not None and path.startswith(prefix):
            rest = path[len(prefix):]
            if prefix[-1] == 0x2F or not rest or rest[0] == 0x2F:  # at a segment boundary
                path = rest
        elif prefix is not None and path == self._strip_exact:
            path = b""  # "/api/" strips "/api" too: the same resource as far as a prefix goes
        regex = self._regex
        if regex is not None:
            path = regex.sub(self._replace, path, count=1)
        if not path.startswith(b"/"):
            path = b"/" + path
        add = self._add
        if add is not None:
            path = add + path
        return path

    def on_request(self, ex: FilterExchange) -> Verdict:
        head = ex.head
        if head is None:
            return Verdict.CONTINUE
        target = head.target
        if target.startswith(b"/"):
            origin = b""
            rest = target
        elif b"://" in target:  # absolute form: keep scheme and authority
            after = target.index(b"://") + 3
            slash = target.find(b"/", after)
            qmark = target.find(b"?", after)
            cut = slash if slash >= 0 and (qmark < 0 or slash < qmark) else (qmark if qmark >= 0 else len(target))
            origin = target[:cut]
            rest = target[cut:]
        else:
            return Verdict.CONTINUE  # "*" or an authority (CONNECT): no path
        path, qmark_, query = rest.partition(b"?")
        new_path = self.rewrite(path or b"/")
        if new_path == path:
            return Verdict.CONTINUE
        # The view reads the target lazily: have it take the client's path now, or it
        # would see ours whenever routing had not asked for the path yet.
        ex.view.path  # noqa: B018
        new_target = origin + new_path + qmark_ + query
        # The request line is "METHOD SP target SP HTTP/x.y": splice the target in.
        start = len(head.method) + 1
        block = head.block
        head.block = block[:start] + new_target + block[start + len(target):]
        head.target = new_target
        return Verdict.CONTINUE

    def describe(self) -> str:
        steps = []
        if self._strip is not None:
            steps.append(f"strip prefix {self._strip.decode('utf-8')}")
        if self._regex is not None:
            steps.append(f"replace {self._regex.pattern.decode('utf-8')} by {self._replace.decode('utf-8')}")
        if self._add is not None:
            steps.append(f"add prefix {self._add.decode('utf-8') or '/'}")
        return "path rewrite: " + ", then ".join(steps)
