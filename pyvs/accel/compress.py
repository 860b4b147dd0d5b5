"""Response compression: gzip (zlib), brotli and zstd, streamed as the server sends.

Theory of operation
-------------------
:class:`Compression` is a response filter (pyvs/l7/filters/base.py). When a response
head arrives it decides, from the head alone, whether the body may be compressed:

* never a response without a body (HEAD, 1xx, 204, 304), a partial one (206, or any
  Content-Range), one already encoded (Content-Encoding other than identity, or a
  transfer coding besides chunked), nor one whose Cache-Control says ``no-transform``
  (RFC 9110 7.7);
* only the configured content types, and with a known Content-Length only from
  ``min_size`` up (a body of unknown length is compressed: it is usually large).

Such an *eligible* response gets ``Vary: Accept-Encoding`` whatever the client
accepted, so that any cache downstream keeps the variants apart (nginx's
``gzip_vary``). Then the coding is negotiated (:mod:`pyvs.accel.negotiate`); when one
is chosen, ``Content-Encoding`` is added, a strong ETag becomes weak (the bytes differ
from the server's representation, RFC 9110 8.8.1), and a per-response encoder is
attached with ``ex.stage_body``. The exchange drops Content-Length and frames the
output chunked (HTTP/1.1) or by the close (HTTP/1.0).

Streaming: each server read is compressed and flushed at once (zlib ``Z_SYNC_FLUSH``,
brotli ``flush()``, zstd ``FLUSH_BLOCK``), so nothing of the body waits in pyvs for
the next read and memory stays at one read plus the compressor's window. The price is
a slightly worse ratio for a body that arrives in many small reads.

Integrity fields: ``Content-Digest`` and ``Content-MD5`` describe the content, which
the new coding changes (RFC 9530 2); ``Repr-Digest`` and RFC 3230's ``Digest``
describe the representation, of which Content-Encoding is a part (RFC 9110 8.4,
RFC 9530 3), so they change too. Left in place they would make a checking client
reject a correct body; pyvs drops them from the head of a response it compresses
(:data:`STALE_DIGESTS`). Fields that hold for the unencoded bytes whatever the coding
(``Unencoded-Digest``) stay.

Trailers: a chunked response's trailer section follows the compressed body
(:meth:`_Stage.trailers` is the stage's say over it, see ``stage_body`` in
pyvs/l7/filters/base.py): the same integrity fields are dropped from it, every other
field goes on -- in the chunked trailer section to an HTTP/1.1 client, as a trailing
HEADERS frame to an HTTP/2 client; an HTTP/1.0 client, whose body ends with the close,
gets none (as without compression).
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING

from pyvs.accel.negotiate import Negotiator
from pyvs.http.h1 import LENGTH, NO_BODY, strip_hop_fields
from pyvs.l7.filters.base import Filter, Verdict
from pyvs.l7.request import field_pattern

if TYPE_CHECKING:
    from pyvs.config.accel_schema import Compress
    from pyvs.http.h1 import ResponseHead
    from pyvs.l7.filters.base import BodyStage, FilterExchange

_CONTENT_ENCODING = field_pattern(b"content-encoding")
_CONTENT_TYPE = field_pattern(b"content-type")
_CACHE_CONTROL = field_pattern(b"cache-control")
_CONTENT_RANGE = field_pattern(b"content-range")
_NO_TRANSFORM = re.compile(rb"(?i)(?:^|[ ,])no-transform(?:$|[ ,;=])")
_STRONG_ETAG = re.compile(rb'(?im)^(etag[ \t]*:[ \t]*)(")')
_NOT_COMPRESSED = frozenset({204, 206, 304})
_VARY_LINE = b"Vary: Accept-Encoding\r\n"
_VARIES = re.compile(rb"(?im)^vary[ \t]*:[^\r\n]*(?:\baccept-encoding\b|\*)")
# Integrity fields computed over the bytes the coding changes (module docstring): in the
# head of a response pyvs compresses, and in its trailer section.
STALE_DIGESTS = re.compile(rb"(?im)^(?:content-digest|content-md5|repr-digest|digest)[ \t]*:[^\r\n]*\r\n")
_HAS_DIGEST = re.compile(rb"(?i)\n(?:content-(?:digest|md5)|repr-digest|digest):")  # a quick test of a head


class CompressStats:
    """Counters of one filter (per worker): responses compressed and bytes in/out."""

    __slots__ = ("bytes_in", "bytes_out", "responses", "skipped")

    def __init__(self) -> None:
        self.responses = 0  # responses compressed
        self.skipped = 0  # eligible responses the client did not accept a coding for
        self.bytes_in = 0
        self.bytes_out = 0


class _Stage:
    """What the three encoders share: their say over the server's trailers."""

    __slots__ = ()

    def trailers(self, lines: bytes) -> bytes:
        """The trailer section (CRLF-terminated field lines) that may follow the
        compressed body: without the integrity fields the new coding made wrong."""
        return STALE_DIGESTS.sub(b"", lines)


class GzipStage(_Stage):
    """gzip (RFC 1952 framing, zlib's deflate) for one response."""

    __slots__ = ("c", "stats")

    def __init__(self, level: int, stats: CompressStats) -> None:
        self.c = zlib.compressobj(level, zlib.DEFLATED, 31, 8)
        self.stats = stats

    def feed(self, data: bytes, end: bool) -> bytes:
        c = self.c
        out = c.compress(data) + (c.flush() if end else c.flush(zlib.Z_SYNC_FLUSH) if data else b"")
        self.stats.bytes_in += len(data)
        self.stats.bytes_out += len(out)
        return out


class BrotliStage(_Stage):
    """brotli (RFC 7932) for one response."""

    __slots__ = ("c", "stats")

    def __init__(self, level: int, stats: CompressStats) -> None:
        import brotli  # type: ignore[import-untyped]

        self.c = brotli.Compressor(quality=level)
        self.stats = stats

    def feed(self, data: bytes, end: bool) -> bytes:
        c = self.c
        out: bytes = c.process(data) if data else b""
        out += c.finish() if end else c.flush() if data else b""
        self.stats.bytes_in += len(data)
        self.stats.bytes_out += len(out)
        return out


class ZstdStage(_Stage):
    """zstd (RFC 8878) for one response."""

    __slots__ = ("c", "stats")

    def __init__(self, level: int, stats: CompressStats) -> None:
        import zstandard

        self.c = zstandard.ZstdCompressor(level=level).compressobj()
        self.stats = stats

    def feed(self, data: bytes, end: bool) -> bytes:
        import zstandard

        c = self.c
        out = c.compress(data) if data else b""
        if end:
            out += c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        elif data:
            out += c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        self.stats.bytes_in += len(data)
        self.stats.bytes_out += len(out)
        return out


_STAGES: dict[str, type[GzipStage | BrotliStage | ZstdStage]] = {
    "gzip": GzipStage, "br": BrotliStage, "zstd": ZstdStage,
}


def new_stage(alg: str, level: int, stats: CompressStats | None = None) -> BodyStage:
    """A fresh encoder for one response body."""
    stage: BodyStage = _STAGES[alg](level, stats or CompressStats())
    return stage


class Compression(Filter):
    """``compress``: see the module docstring."""

    __slots__ = ("any_type", "codings", "levels", "min_size", "negotiate", "prefixes", "stats", "types")
    name = "compress"
    responses = True

    def __init__(self, cfg: Compress) -> None:
        offered: tuple[str, ...] = tuple(cfg.algorithms)
        self.negotiate = Negotiator(offered)
        self.levels = {a: cfg.level_of(a) for a in offered}
        self.codings = {a: b"Content-Encoding: " + a.encode() + b"\r\n" for a in offered}
        self.min_size = max(1, cfg.min_size)
        self.any_type = "*" in cfg.types
        self.types = frozenset(t.encode() for t in cfg.types if not t.endswith("/*"))
        self.prefixes = tuple(t[:-1].encode() for t in cfg.types if t.endswith("/*"))  # "text/"
        self.stats = CompressStats()
        if "br" in offered:
            import brotli  # noqa: F401  # fail at load, not on the first response
        if "zstd" in offered:
            import zstandard  # noqa: F401

    def eligible(self, method: bytes, rh: ResponseHead) -> bool:
        """May this response be compressed (the head alone decides)?"""
        if rh.framing == NO_BODY or rh.status < 200 or rh.status in _NOT_COMPRESSED or rh.codings is not None:
            return False
        if method == b"HEAD" or (rh.framing == LENGTH and rh.length < self.min_size):
            return False
        block = rh.block
        m = _CONTENT_ENCODING.search(block)
        if m is not None and m.group(1).strip().lower() not in (b"", b"identity"):
            return False
        if _CONTENT_RANGE.search(block) is not None:
            return False
        for cc in _CACHE_CONTROL.findall(block):
            if _NO_TRANSFORM.search(cc):
                return False
        m = _CONTENT_TYPE.search(block)
        ctype = m.group(1).split(b";", 1)[0].strip().lower() if m is not None else None
        if ctype is not None and ctype.startswith(b"application/grpc"):
            return False  # gRPC compresses its messages itself (grpc-encoding); its clients decode no HTTP coding
        if not self.any_type:
            if ctype is None:
                return False
            if ctype not in self.types and not ctype.startswith(self.prefixes):
                return False
        return True

    def on_response(self, ex: FilterExchange, rh: ResponseHead) -> Verdict:
        head = ex.head
        if head is None or not self.eligible(head.method, rh):
            return Verdict.CONTINUE
        block = rh.block
        if rh.raw_ok:  # rebuilt from here on: its "Connection: keep-alive" goes too
            block = strip_hop_fields(block)
            rh.raw_ok = False
        if not _VARIES.search(block):
            block += _VARY_LINE
        alg = self.negotiate(ex.view.header(b"accept-encoding"))
        if alg is None:
            self.stats.skipped += 1
            rh.block = block
            return Verdict.CONTINUE
        block = _STRONG_ETAG.sub(rb'\1W/\2', block)
        if _HAS_DIGEST.search(block) is not None:  # (rare: the search costs a quarter of the removal)
            block = STALE_DIGESTS.sub(b"", block)
        rh.block = block + self.codings[alg]
        self.stats.responses += 1
        ex.stage_body(_STAGES[alg](self.levels[alg], self.stats))
        return Verdict.CONTINUE

    def describe(self) -> str:
        return "compress " + ",".join(self.levels)
