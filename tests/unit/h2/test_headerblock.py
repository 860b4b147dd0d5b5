"""HPACK of the HTTP/2 front end (pyvs/h2/headerblock.py) against the ``hpack`` package's
encoder and decoder: pure, no sockets."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.h2.headerblock import Decoder, HpackError, encode, encode_head

NAMES = st.sampled_from([b":method", b":path", b"accept", b"user-agent", b"x-a", b"x-long-custom-name", b"cookie"])
VALUES = st.binary(max_size=40)
LISTS = st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(LISTS, st.booleans()), min_size=1, max_size=6), st.sampled_from([0, 100, 256, 4096]))
def test_decoder_follows_the_encoder_block_after_block(blocks: list[tuple[list[tuple[bytes, bytes]], bool]],
                                                        table: int) -> None:
    """Indexing, Huffman, eviction and table size updates: every block decodes to what
    was encoded, and decoding it again later (cache) gives the same list."""
    enc = hpack.Encoder()
    enc.header_table_size = table  # emits a size update in the next block
    dec = Decoder()
    for fields, huffman in blocks:
        block = enc.encode(fields, huffman=huffman)
        got, size = dec.decode(block)
        assert got == fields
        assert size == sum(len(n) + len(v) + 32 for n, v in fields)


def test_a_repeated_indexed_block_is_remembered_while_the_table_stays() -> None:
    enc = hpack.Encoder()
    dec, ref = Decoder(), hpack.Decoder()
    req = [(b":method", b"GET"), (b":path", b"/x"), (b"user-agent", b"h2load")]
    block = enc.encode(req)  # literals with indexing: the table changes
    dec.decode(block)
    ref.decode(block, raw=True)
    again = enc.encode(req)
    assert all(b & 0x80 for b in again)  # indexed fields only
    first, _ = dec.decode(again)
    assert dec.decode(again)[0] is first == req  # the same list: a cache hit
    block = enc.encode([(b"x-new", b"1")])  # the table changes: the same bytes mean other fields
    dec.decode(block)
    ref.decode(block, raw=True)
    later, _ = dec.decode(again)
    assert later is not first and later == ref.decode(again, raw=True)


@pytest.mark.parametrize("block", [
    b"\x80",  # index 0
    b"\xbf\x20",  # index 95: beyond an empty dynamic table
    b"\x40\x05ab",  # a string beyond the block
    b"\x3f\xe2\x1f",  # table size update over our 4096
    b"\x82\x20",  # a size update after a field
    b"\xff\xff\xff\xff\xff\xff\x01",  # an integer too large
    b"\x00\x81\xff",  # a Huffman string that is all EOS padding
])
def test_bad_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(LISTS)
def test_encoder_output_decodes_with_hpack(fields: list[tuple[bytes, bytes]]) -> None:
    assert hpack.Decoder().decode(encode(fields), raw=True) == fields


def test_response_head_is_encoded_without_connection_fields_and_cached() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n" \
           b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    block = encode_head(head)
    assert encode_head(head) is block
    assert hpack.Decoder().decode(block, raw=True) == [
        (b":status", b"200"), (b"server", b"nginx"), (b"content-length", b"5"), (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2")]


def test_a_block_of_references_to_a_large_entry_is_cut_short() -> None:
    dec = Decoder(list_limit=10_000)
    enc = hpack.Encoder()
    dec.decode(enc.encode([(b"x-big", b"v" * 3000)]))  # into the table: index 62
    fields, size = dec.decode(b"\xbe" * 1000)  # 1000 references: ~3 MB of fields
    assert size == 1000 * (5 + 3000 + 32) and len(fields) == 3  # only what fits the limit was kept
