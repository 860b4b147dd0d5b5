"""HPACK (RFC 7541) for the HTTP/2 front end: a decoder with memory, a stateless encoder.

Theory of operation
-------------------
**Decoding** request header blocks keeps the dynamic table in step with the client's
encoder: every block must be decoded, even one whose stream is refused, or every
later block of the connection would be misread. The static table and the Huffman
code are the ``hpack`` package's (a dependency of ``h2``); the walk over the block
is ours, because it can do what a general decoder cannot: most clients index every
field they send, so from the second request on a block is a few "indexed field"
bytes whose meaning depends only on the table. Such a block (nothing in it changes
the table) is remembered with the table's generation (bumped by each insertion,
eviction or resize); the same bytes against the same generation decode to the same
list, found with one dictionary lookup. h2load, curl and browsers repeating a
request all hit it.

**Encoding** response heads uses no dynamic table at all: each field is a static
table reference where one exists, else a literal *without indexing*. The output
therefore depends on the fields alone, so a whole encoded block can be cached by the
HTTP/1.1 head it came from (:func:`encode_head`): a server's response heads repeat
byte for byte between requests (nginx's ``Date`` changes once a second), and a hit
skips both the translation of the head and its encoding. The client's
SETTINGS_HEADER_TABLE_SIZE needs no answer: an encoder that never inserts never
has to announce a size.
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from pyvs.h2.headers import response_fields

Fields = list[tuple[bytes, bytes]]

STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE  # index 1..61 at [0..60]
NSTATIC = len(STATIC)
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: each entry's size is name + value + 32

_PAIR_INDEX: dict[tuple[bytes, bytes], int] = {}
_NAME_INDEX: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(STATIC, 1):
    _PAIR_INDEX.setdefault((_n, _v), _i)
    _NAME_INDEX.setdefault(_n, _i)

CACHE_MAX = 256  # remembered blocks per decoder / encoded heads per worker; cleared when full
CACHE_BLOCK = 1024  # larger blocks are never remembered (a request's block is far smaller)


class HpackError(Exception):
    """A header block that cannot be decoded: COMPRESSION_ERROR for the connection."""


class Decoder:
    """The request side of one connection's HPACK context (see the module docstring)."""

    __slots__ = ("cache", "gen", "limit", "list_limit", "max_size", "size", "table")

    def __init__(self, limit: int = 4096, list_limit: int = 1 << 20) -> None:
        self.table: deque[tuple[bytes, bytes]] = deque()  # newest first: index 62 is table[0]
        self.size = 0
        self.max_size = limit  # the size the encoder last chose (<= limit)
        self.limit = limit  # our SETTINGS_HEADER_TABLE_SIZE
        # Past this header list size the fields are no longer collected (the block is
        # still read to the end, for the table): a block of one-byte references to a
        # large entry cannot become a huge list (an "HPACK bomb").
        self.list_limit = list_limit
        self.gen = 0
        self.cache: dict[bytes, tuple[int, Fields, int]] = {}

    def decode(self, block: bytes) -> tuple[Fields, int]:
        """The fields of one header block and its header list size (RFC 9113 6.5.2:
        names, values and 32 octets per field; over ``list_limit`` the list is cut
        short and only the size tells). Raises :class:`HpackError`."""
        hit = self.cache.get(block)
        if hit is not None and hit[0] == self.gen:
            return hit[1], hit[2]
        out: Fields = []
        size = 0
        pure = True  # nothing in the block changed the table
        pos = 0
        n = len(block)
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx, pos = _int(block, pos, 7)
                    field = self._get(idx)
                elif b & 0x40:  # literal with incremental indexing
                    pure = False
                    field, pos = self._literal(block, pos, 6)
                    self._add(field)
                elif b & 0x20:  # dynamic table size update: only before the first field
                    pure = False
                    if out:
                        raise HpackError("table size update after a field")
                    new, pos = _int(block, pos, 5)
                    if new > self.limit:
                        raise HpackError("table size update over the limit")
                    self.max_size = new
                    self._evict(new)  # entries beyond the new size go (RFC 7541 4.3), not all of them
                    self.gen += 1
                    continue
                else:  # literal without indexing (0000) or never indexed (0001)
                    field, pos = self._literal(block, pos, 4)
                size += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
                if size <= self.list_limit:
                    out.append(field)
        except IndexError:
            raise HpackError("truncated header block") from None
        if pure and n <= CACHE_BLOCK and size <= self.list_limit:  # (a request's block, not an attacker's bulk)
            cache = self.cache
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[block] = (self.gen, out, size)
        return out, size

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[tuple[bytes, bytes], int]:
        """A literal field: its name indexed (``prefix``-bit index) or literal, its value."""
        idx, pos = _int(block, pos, prefix)
        if idx:
            name = self._get(idx)[0]
        else:
            name, pos = _str(block, pos)
        value, pos = _str(block, pos)
        return (name, value), pos

    def _get(self, idx: int) -> tuple[bytes, bytes]:
        if idx <= NSTATIC:
            if idx == 0:
                raise HpackError("index 0")
            return STATIC[idx - 1]
        try:
            return self.table[idx - NSTATIC - 1]
        except IndexError:
            raise HpackError(f"index {idx} beyond the table") from None

    def _add(self, field: tuple[bytes, bytes]) -> None:
        need = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        self.gen += 1
        if need > self.max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            self.table.clear()
            self.size = 0
            return
        self._evict(self.max_size - need)
        self.table.appendleft(field)
        self.size += need

    def _evict(self, room: int) -> None:
        table = self.table
        while self.size > room and table:
            n, v = table.pop()
            self.size -= len(n) + len(v) + ENTRY_OVERHEAD


def _int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 5.1) at ``pos``; the value and the next position."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too large")


def _str(data: bytes, pos: int) -> tuple[bytes, int]:
    """An HPACK string literal (RFC 7541 5.2): Huffman-coded or raw."""
    huff = data[pos] & 0x80
    n, pos = _int(data, pos, 7)
    end = pos + n
    if end > len(data):
        raise HpackError("string beyond the block")
    raw = data[pos:end]
    if huff:
        try:
            raw = decode_huffman(raw)
        except Exception as exc:  # hpack's own HPACKDecodingError: bad padding or EOS
            raise HpackError(f"bad Huffman string: {exc}") from None
    return raw, end


# ------------------------------------------------------------------ encoding
def _enc_int(value: int, prefix: int, first: int) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(fields: Fields) -> bytes:
    """A header block for ``fields`` without dynamic table (see the module docstring).
    It starts with a dynamic table size update to 0 (RFC 7541 6.3): a client whose
    SETTINGS_HEADER_TABLE_SIZE is below the default 4096 requires one before any block,
    and since this encoder never inserts, 0 suits every client."""
    parts: list[bytes] = [b"\x20"]
    for name, value in fields:
        idx = _PAIR_INDEX.get((name, value))
        if idx is not None:
            parts.append(bytes((0x80 | idx,)))
            continue
        idx = _NAME_INDEX.get(name)
        if idx is not None:
            parts.append(_enc_int(idx, 4, 0))
        else:
            parts.append(b"\x00")
            parts.append(_enc_int(len(name), 7, 0))
            parts.append(name)
        parts.append(_enc_int(len(value), 7, 0))
        parts.append(value)
    return b"".join(parts)


# Encoded response blocks by HTTP/1 head; public so that the hot path
# (pyvs.h2.stream.H2Exchange.on_whole_response) looks a hit up without a call.
HEAD_CACHE: dict[bytes, bytes] = {}


def encode_head(block: bytes) -> bytes:
    """The HPACK block of an HTTP/1 response head, cached by the head's bytes."""
    enc = HEAD_CACHE.get(block)
    if enc is None:
        enc = encode(response_fields(block))
        if len(HEAD_CACHE) >= CACHE_MAX:
            HEAD_CACHE.clear()
        HEAD_CACHE[block] = enc
    return enc
