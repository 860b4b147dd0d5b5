"""Message body framing (RFC 9112 section 6-7), sans-I/O and copy-free.

A framer is told where a body starts in a buffer and answers how far the body goes
in that buffer and whether it has ended. The proxy forwards the raw bytes of the
body as they are, chunk framing and trailers included, so that in the common case a
body costs no Python work per byte; only a client that cannot take chunked coding
(HTTP/1.0) needs the decoded data, which :class:`ChunkedBody` can also produce.

Knowing the exact end offset is what makes pipelining and connection reuse safe:
bytes after the end belong to the next message (or, from a server, are garbage that
forbids reusing the connection).
"""

from __future__ import annotations

from pyvs.http.errors import ProtocolError

_MAX_LINE = 4096  # a chunk-size line with extensions, or one trailer field
_MAX_TRAILERS = 65536
_HEX = frozenset(b"0123456789abcdefABCDEF")

# ChunkedBody states
_SIZE = 0
_DATA = 1
_DATA_CR = 2
_DATA_LF = 3
_TRAILER = 4
_DONE = 5


class LengthBody:
    """A body of ``Content-Length`` bytes."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def feed(self, data: bytes, pos: int) -> tuple[int, bool]:
        """Body bytes are ``data[pos:end]``; returns ``(end, finished)``."""
        take = len(data) - pos
        if take >= self.remaining:
            end = pos + self.remaining
            self.remaining = 0
            return end, True
        self.remaining -= take
        return len(data), False


class UntilClose:
    """A response body delimited by the server closing the connection."""

    __slots__ = ()

    def feed(self, data: bytes, pos: int) -> tuple[int, bool]:
        return len(data), False


class ChunkedBody:
    """Incremental, strict chunked-coding scanner.

    ``feed`` consumes the raw chunked stream; with ``decode=True`` the chunk data
    found is appended to ``decoded`` (a list of bytes) for a recipient that needs it
    without the coding, and the trailer section is kept in ``trailers``.

    ``limit`` (0: none) bounds the sum of the chunk sizes: a chunk-size line that
    takes it past the limit raises ``ProtocolError`` with status 413, before any of
    that chunk's data is passed on.
    """

    __slots__ = ("_line", "_state", "decode", "decoded", "limit", "remaining", "total", "trailer_bytes", "trailers")

    def __init__(self, decode: bool = False, limit: int = 0) -> None:
        self._state = _SIZE
        self._line = b""
        self.remaining = 0
        self.total = 0
        self.limit = limit
        self.decode = decode
        self.decoded: list[bytes] = []
        self.trailers = b""
        self.trailer_bytes = 0

    def feed(self, data: bytes, pos: int) -> tuple[int, bool]:
        n = len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self.remaining, n - pos)
                if self.decode:
                    self.decoded.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[pos] != 13:
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[pos] != 10:
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 1
                self._state = _SIZE
            elif state == _SIZE or state == _TRAILER:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._line += data[pos:]
                    # A line cut between its CR and LF: the CR is not part of the line
                    # (whole or split, a line means the same).
                    if len(self._line) - self._line.endswith(b"\r") > _MAX_LINE:
                        raise ProtocolError("chunk line too long")
                    return n, False
                line = self._line + data[pos:nl] if self._line else data[pos:nl]
                self._line = b""
                pos = nl + 1
                if not line.endswith(b"\r"):
                    raise ProtocolError("chunk line not terminated by CRLF")
                line = line[:-1]
                if len(line) > _MAX_LINE:
                    raise ProtocolError("chunk line too long")
                if state == _SIZE:
                    self._size_line(line)
                elif line:
                    self._trailer_line(line)
                else:
                    self._state = _DONE
                    return pos, True
            else:
                return pos, True
        return pos, self._state == _DONE

    def _size_line(self, line: bytes) -> None:
        size, _, ext = line.partition(b";")
        if not size or len(size) > 16 or not all(c in _HEX for c in size):
            raise ProtocolError(f"invalid chunk size {size[:20]!r}")
        if ext and (b"\r" in ext or b"\n" in ext or b"\x00" in ext):
            raise ProtocolError("invalid chunk extension")
        self.remaining = n = int(size, 16)
        if n:
            self.total += n
            if self.limit and self.total > self.limit:
                raise ProtocolError("request body too large", 413)
            self._state = _DATA
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        name, colon, _ = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise ProtocolError("invalid trailer field")
        self.trailer_bytes += len(line) + 2
        if self.trailer_bytes > _MAX_TRAILERS:
            raise ProtocolError("trailer section too large")
        if self.decode:
            self.trailers += line + b"\r\n"
