"""The properties the fuzz tests check, shared by the Hypothesis tests (this folder)
and the atheris targets (``fuzz/``): each ``check_*`` takes raw input, raises
``AssertionError`` (or lets an unexpected exception through) on a violation, and
returns quietly otherwise. Hypothesis decides *which* inputs, bounded and
derandomised in the suite; atheris feeds the same checks coverage-guided bytes for as
long as it is left running (see docs/fuzzing.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings

from pyvs.config.loader import ConfigError, load_text
from pyvs.config.schema import Config
from pyvs.ha import packet
from pyvs.http import h1
from pyvs.http.errors import ProtocolError
from pyvs.http.framing import ChunkedBody
from pyvs.l4 import proxyproto


def fuzz(max_examples: int) -> settings:
    """Bounded and reproducible: the same examples on every run, nothing stored."""
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---------------------------------------------------------------- HTTP heads


@contextmanager
def no_scanner() -> Iterator[None]:
    """The llhttp path only (what PYVS_NO_EXTENSIONS=1 gives), for the duration."""
    saved = h1._scan_request, h1._scan_response
    h1._scan_request, h1._scan_response = None, None
    try:
        yield
    finally:
        h1._scan_request, h1._scan_response = saved


def _digest(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in type(obj).__slots__ if not k.startswith("_")}


Outcome = dict[str, Any] | tuple[str, int]


def _outcome(parse: Callable[[bytes], Any], block: bytes) -> tuple[Outcome, Any]:
    """(comparable digest or ("error", status), the head or None). Anything but a
    ProtocolError propagates: that is a bug."""
    try:
        head = parse(block)
    except ProtocolError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 599, exc.status
        return ("error", exc.status), None
    return _digest(head), head


def both_paths(parse: Callable[[bytes], Any], block: bytes) -> Any:
    """Parse with the C scanner (when built) and without: same outcome; the head or None."""
    fast, head = _outcome(parse, block)
    with no_scanner():
        slow, _ = _outcome(parse, block)
    assert fast == slow, (block, fast, slow)
    return head


def cut(raw: bytes) -> bytes:
    """What the connection hands the parser: everything up to the first empty line."""
    raw += b"\r\n\r\n"
    return raw[: raw.find(b"\r\n\r\n") + 4]


# Field names the proxy must never forward as received (hop-by-hop, forwarding).
_HOP_REQ = re.compile(
    rb"(?:connection|keep-alive|te|trailer|transfer-encoding|upgrade|proxy-[!#$%&'*+.^_`|~0-9a-z-]+"
    rb"|x-forwarded-for|x-forwarded-proto|x-forwarded-host|forwarded)",
    re.IGNORECASE,
)
_HOP_RESP = re.compile(
    rb"(?:connection|keep-alive|te|trailer|transfer-encoding|upgrade|proxy-[!#$%&'*+.^_`|~0-9a-z-]+)", re.IGNORECASE
)


def _forwarded_hop_fields(block: bytes, hop: re.Pattern[bytes]) -> list[bytes]:
    """Hop-by-hop field lines left in a block; a Connection field that says only
    keep-alive (any case, empty list elements) is forwarded on purpose (pyvs.http.h1:
    the common case costs no rewrite)."""
    out = []
    for line in block[:-2].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if hop.fullmatch(name) is None:
            continue
        tokens = {t.strip(b" \t").lower() for t in value.split(b",")} - {b""}
        if name.lower() == b"connection" and tokens == {b"keep-alive"}:
            continue
        out.append(line)
    return out


def _sane_block(block: bytes) -> list[bytes]:
    """A block is lines ending in CRLF, no final empty line, no stray CR or LF."""
    assert block.endswith(b"\r\n") and not block.endswith(b"\r\n\r\n"), block
    lines = block[:-2].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, block
    for line in lines[1:]:
        assert b":" in line and line.split(b":", 1)[0], block  # every field line has a name
    return lines


def check_request_head(block: bytes) -> None:
    """Both paths agree; an accepted head re-serialises, as the proxy forwards it, into
    a head that parses to the same request with nothing hop-by-hop left."""
    head = both_paths(h1.parse_request_head, block)
    if head is None:
        return
    assert not head.method.startswith((b"\n", b"\r")), head.method
    lines = _sane_block(head.block)
    assert lines[0] == head.method + b" " + head.target + b" HTTP/" + head.version, head.block
    assert head.version in (b"1.0", b"1.1")
    assert not _forwarded_hop_fields(head.block, _HOP_REQ), head.block
    assert head.framing in (h1.NO_BODY, h1.LENGTH, h1.CHUNKED)
    assert head.length >= 0
    # Re-serialise as pyvs.l7.upstream_leg does on its general path (forwarding
    # fields left out: they are pyvs's own and tested elsewhere).
    out = head.block
    if head.version == b"1.0":
        out = out.replace(b" HTTP/1.0\r\n", b" HTTP/1.1\r\n", 1)
    host = head.host
    if host is None:
        host = b"backend.example:80"
        out += b"Host: " + host + b"\r\n"
    if head.framing == h1.CHUNKED:
        out += b"Transfer-Encoding: chunked\r\n"
    if head.upgrade:
        out += b"Connection: upgrade\r\nUpgrade: " + head.upgrade + b"\r\n"
    out += b"\r\n"
    again = both_paths(h1.parse_request_head, out)
    assert again is not None, ("re-serialised head refused", block, out)
    assert (again.method, again.target, again.version, again.host) == (head.method, head.target, b"1.1", host)
    # (An empty Upgrade value is kept as b"" but, falsy, is no upgrade anywhere.)
    assert (again.framing, again.length, again.upgrade or None) == (head.framing, head.length, head.upgrade or None)
    assert again.keep_alive and again.xff is None and again.forwarded is None
    if head.framing != h1.CHUNKED and not head.upgrade:
        assert again.block == out[:-2], (block, out, again.block)  # a fixpoint


def _response_parser(head_request: bool) -> Callable[[bytes], h1.ResponseHead]:
    def parse(block: bytes) -> h1.ResponseHead:
        return h1.parse_response_head(block, head_request=head_request)

    return parse


def check_response_head(block: bytes) -> None:
    """As :func:`check_request_head`, for both a GET and a HEAD request."""
    for head_request in (False, True):
        parse = _response_parser(head_request)
        head = both_paths(parse, block)
        if head is None:
            continue
        lines = _sane_block(head.block)
        assert lines[0].startswith(b"HTTP/1.1 ") and int(lines[0][9:12]) == head.status, head.block
        assert 100 <= head.status <= 599
        if head.raw_ok:
            assert head.block == block[:-2]
        else:
            assert not _forwarded_hop_fields(head.block, _HOP_RESP), head.block
        if head_request or head.status < 200 or head.status in (204, 304):
            assert head.framing == h1.NO_BODY
        if head.status < 200:
            continue  # interim and 101: forwarded as they are (tunnel), not re-framed
        # Re-serialise as pyvs.l7.h1conn.present does for an HTTP/1.1 keep-alive client.
        framing = head.framing
        codings = getattr(head, "codings", None)  # transfer codings besides chunked, kept
        if head.raw_ok and framing != h1.UNTIL_CLOSE:
            out = head.block + b"\r\n"
        else:
            out = h1.strip_hop_fields(head.block) if head.raw_ok else head.block
            if framing in (h1.CHUNKED, h1.UNTIL_CLOSE):
                out += b"Transfer-Encoding: " + (codings + b", " if codings else b"") + b"chunked\r\n"
            out += b"\r\n"
        again = both_paths(parse, out)
        assert again is not None, ("re-serialised head refused", block, out)
        assert again.status == head.status and again.version == b"1.1"
        expected = h1.CHUNKED if framing == h1.UNTIL_CLOSE else framing
        assert (again.framing, again.length) == (expected, head.length), (block, out)
        assert getattr(again, "codings", None) == codings


def check_head(block: bytes) -> None:
    if block.startswith(b"HTTP/"):
        check_response_head(block)
    else:
        check_request_head(block)
        head = None
        try:
            head = h1.parse_request_head(block)
        except ProtocolError:
            return
        if not head.target.startswith(b"/"):
            try:
                h1.to_origin_form(head)
            except ProtocolError:
                return
            lines = _sane_block(head.block)
            assert head.target.startswith(b"/") or head.target == b"*", head.target
            assert lines[0].split(b" ")[1] == head.target


# ---------------------------------------------------------------- chunked bodies

ChunkedOutcome = tuple[str, int, bytes, bytes]


def chunked_outcome(stream: bytes, cuts: list[int], *, offset: int = 0) -> ChunkedOutcome:
    """Feed ``stream`` to a decoding framer in pieces cut at ``cuts`` (each piece handed
    over after ``offset`` bytes of something else, as a body that starts mid-buffer
    is). ("done", end, decoded, trailers), ("error", ...) or ("more", ...)."""
    f = ChunkedBody(decode=True)
    bounds = [*sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    start = 0
    consumed = 0
    try:
        for b in bounds:
            piece = b"X" * offset + stream[start:b]
            end, done = f.feed(piece, offset)
            assert offset <= end <= len(piece)
            consumed += end - offset
            if done:
                return "done", consumed, b"".join(f.decoded), f.trailers
            assert end == len(piece), "not done, yet did not take the whole piece"
            start = b
    except ProtocolError:
        return "error", 0, b"", b""
    return "more", consumed, b"", b""


def check_chunked(stream: bytes, cuts: list[int]) -> None:
    """Any split (and any start offset) means the same as the stream in one piece;
    invalid input raises ProtocolError only (anything else propagates)."""
    whole = chunked_outcome(stream, [])
    assert chunked_outcome(stream, cuts) == whole, (stream, cuts)
    assert chunked_outcome(stream, cuts, offset=3) == whole
    # Undecoded mode finds the same end.
    f = ChunkedBody()
    try:
        end, done = f.feed(stream, 0)
        assert ("done" if done else "more") == whole[0] and (not done or end == whole[1])
    except ProtocolError:
        assert whole[0] == "error"


# ---------------------------------------------------------------- PROXY protocol


def check_proxy_bytes(data: bytes) -> None:
    """Random bytes: a header, None (need more) or ProxyProtocolError -- and the answer
    is stable as more bytes arrive and the same for bytes, bytearray and memoryview."""
    results: list[proxyproto.ProxyHeader | str | None] = []
    for buf in (data, bytearray(data), memoryview(data)):
        try:
            results.append(proxyproto.parse(buf))
        except proxyproto.ProxyProtocolError:
            results.append("error")
    assert results[0] == results[1] == results[2], results
    got = results[0]
    if isinstance(got, proxyproto.ProxyHeader):
        assert 0 < got.consumed <= len(data)
        # What follows the header is payload: it changes nothing.
        assert proxyproto.parse(data + b"\r\n\x00PROXY ") == got
        if got.src is not None:
            assert got.dst is not None
            for ip, port in (got.src, got.dst):
                ipaddress.ip_address(ip)
                assert 0 <= port <= 65535
        if got.version == 1:
            assert data[: got.consumed].endswith(b"\r\n")
    elif got is None:
        # Need more: every prefix needed more too (never accepted, then un-accepted).
        for i in range(len(data)):
            try:
                assert proxyproto.parse(data[:i]) is None, (data, i)
            except proxyproto.ProxyProtocolError as exc:
                raise AssertionError(f"prefix {data[:i]!r} refused but {data!r} needs more") from exc
    else:
        # Refused: no longer input makes it acceptable.
        for more in (b"\r\n", b" 1 2\r\n", b"\x00" * 64):
            try:
                r = proxyproto.parse(data + more)
            except proxyproto.ProxyProtocolError:
                continue
            raise AssertionError(f"{data!r} refused but {data + more!r} gives {r!r}")


def check_proxy_round_trip(version: str, src: tuple[str, int] | None, dst: tuple[str, int] | None,
                           transport: str, payload: bytes) -> None:
    header = proxyproto.build(version, src, dst, transport)
    for i in range(len(header)):
        assert proxyproto.parse(header[:i]) is None, (header, i)  # incomplete: wait
    got = proxyproto.parse(header + payload)
    assert got is not None and got.consumed == len(header)
    assert got.version == (1 if version == "v1" else 2)
    if src is None or dst is None:
        assert got.src is None and got.dst is None
        return
    assert got.src is not None and got.dst is not None
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    gs, gd = ipaddress.ip_address(got.src[0]), ipaddress.ip_address(got.dst[0])
    if s.version == d.version:
        assert (gs, gd) == (s, d)
    else:  # one family on the wire: the IPv4 one mapped, or both as IPv4
        def same(a: Any, b: Any) -> bool:
            return bool(a == b or getattr(a, "ipv4_mapped", None) == b or getattr(b, "ipv4_mapped", None) == a)

        assert same(gs, s) and same(gd, d), (src, dst, got)
    assert (got.src[1], got.dst[1]) == (src[1], dst[1])
    if version == "v2":
        assert got.transport == transport


# ---------------------------------------------------------------- VRRP

SRC4 = ipaddress.IPv4Address("192.0.2.1")
SRC6 = ipaddress.IPv6Address("fe80::1")


def check_vrrp_bytes(data: bytes) -> None:
    """Random payloads and datagrams: an Advert or PacketError, nothing else; what
    decodes re-encodes to the same bytes (v3, and v2 whose checksum is canonical)."""
    for family, src, dst in ((4, SRC4, packet.GROUP_V4), (6, SRC6, packet.GROUP_V6)):
        try:
            adv = packet.decode(data, src, dst, family)
        except packet.PacketError:
            pass
        else:
            again = packet.encode(adv, src, dst)
            assert packet.decode(again, src, dst, family) == adv
            if adv.version == 2 or data[4] >> 4 == 0:  # (v3: unless reserved bits were set)
                assert _same_sum(again, data), (data, again)
        expect = packet.Expect(version=3, vrid=data[1] if len(data) > 1 else 1, family=family, interval=100,
                               addresses=frozenset({src}))
        try:
            packet.validate(data, src, dst, 255, expect)
        except packet.PacketError:
            pass
    try:
        _src, _dst, ttl, payload = packet.parse_ipv4(data)
    except packet.PacketError:
        return
    assert 0 <= ttl <= 255 and len(payload) <= len(data)


def _same_sum(a: bytes, b: bytes) -> bool:
    """Equal but for the checksum's two spellings of zero (0x0000 / 0xFFFF)."""
    return a[:6] == b[:6] and a[8:] == b[8:]


# ---------------------------------------------------------------- config


def check_config_text(text: str) -> Config | None:
    """load_text returns a Config or raises ConfigError with a non-empty list of
    one-line problems; anything else propagates."""
    try:
        cfg = load_text(text, "<fuzz>")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems), exc.problems
        return None
    assert isinstance(cfg, Config)
    return cfg
