"""Health checks over HTTP/2: ``http`` checks of ``proto: h2`` / ``h2c`` servers, and
``grpc`` checks (the gRPC health checking protocol, ``grpc.health.v1.Health/Check``).

Theory of operation
-------------------
A server that speaks only HTTP/2 (a gRPC server) answers an HTTP/1.1 check with a
protocol error: the check must speak its protocol, as the data path does
(pyvs/h2/pool.py). Each check opens its own connection (TLS with ALPN ``h2`` when the
server has ``tls``, else cleartext with prior knowledge), sends one request on stream
1 with the ``h2`` library as client, reads the response head, body (at most 64 KiB)
and trailers, and closes. ``grpc`` sends a ``HealthCheckRequest`` for
``grpc_service`` (empty: the server as a whole) and is healthy when the reply says
``SERVING`` with ``grpc-status: 0`` (Envoy's ``grpc_health_check``; Kubernetes'
gRPC probe asks the same). The two protobuf messages have one field each and are
encoded here by hand: no generated code, no grpcio in the supervisor.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvs.config.health_schema import HealthCheck
    from pyvs.health.checks import Target

_MAX_BODY = 65536
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_CONTEXTS: dict[int, tuple[Any, ssl.SSLContext]] = {}


@dataclass
class H2Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)


def _context(t: Target) -> ssl.SSLContext | None:
    """The server's TLS settings with ALPN h2 only (None: cleartext h2c)."""
    tls = t.tls
    if tls is None:
        return None
    key = id(tls)  # the ServerTls of this config: a reload with other TLS settings gets a new one
    got = _CONTEXTS.get(key)
    if got is None or got[0] is not tls:
        from pyvs.tls.client import client_context

        ctx = client_context(tls.verify, tls.ca, tls.cert, tls.key)
        ctx.set_alpn_protocols(["h2"])
        if len(_CONTEXTS) > 4096:
            _CONTEXTS.clear()
        got = _CONTEXTS[key] = (tls, ctx)
    return got[1]


def _check_context(cfg: HealthCheck, t: Target) -> ssl.SSLContext | None:
    """The server's TLS settings, else the check's ``tls: true`` (unverified, as over HTTP/1.1)."""
    ctx = _context(t)
    if ctx is None and cfg.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    return ctx


async def h2_request(t: Target, method: str, path: str, authority: str, headers: list[tuple[str, str]],
                     body: bytes = b"", ctx: ssl.SSLContext | None = None) -> H2Reply:
    """One request on a new HTTP/2 connection to ``t``; raises ConnectionError when the
    server does not speak HTTP/2 or resets the stream."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    sni = (t.tls.sni or t.host) if t.tls is not None else None
    reader, writer = await asyncio.open_connection(t.host, t.port, ssl=ctx, server_hostname=sni)
    try:
        if ctx is not None:
            sslobj: Any = writer.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                raise ConnectionError("the server did not choose h2 by ALPN")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        scheme = "https" if ctx is not None else "http"
        conn.send_headers(sid, [(":method", method), (":scheme", scheme), (":authority", authority),
                                (":path", path), ("user-agent", "pyvs-health-check"), *headers],
                          end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
        writer.write(conn.data_to_send())
        reply = H2Reply()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before the response ended")
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise ConnectionError(f"HTTP/2 protocol error: {exc}") from None
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    hdrs = {str(k): str(v) for k, v in ev.headers}
                    reply.status = int(hdrs.get(":status", "0"))
                    reply.headers = hdrs
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    if len(reply.body) < _MAX_BODY:
                        reply.body += ev.data[:_MAX_BODY - len(reply.body)]
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    reply.trailers = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError(f"stream reset by the server (error {ev.error_code})")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY from the server (error {ev.error_code})")
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    return reply
            out = conn.data_to_send()
            if out:
                writer.write(out)
    finally:
        writer.close()


def _authority(cfg: HealthCheck, t: Target) -> str:
    return cfg.host or (f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}")


async def http2_check(cfg: HealthCheck, t: Target) -> tuple[bool, str]:
    """``type: http`` against a ``proto: h2`` server: the same rules as over HTTP/1.1."""
    from pyvs.health.checks import _status_ok

    extra = [(k.lower(), v) for k, v in cfg.headers.items() if k.lower() not in ("host", "connection")]
    reply = await h2_request(t, cfg.method, cfg.path, _authority(cfg, t), extra, ctx=_check_context(cfg, t))
    if not _status_ok(cfg, reply.status):
        return False, f"status {reply.status}, expected {', '.join(map(str, cfg.expect_status))}"
    if cfg.expect_body is not None and not re.search(cfg.expect_body, reply.body.decode("utf-8", "replace")):
        return False, f"status {reply.status}, body does not match {cfg.expect_body!r}"
    return True, f"status {reply.status} (h2)"


def health_request(service: str) -> bytes:
    """A gRPC message frame holding ``HealthCheckRequest{service}``."""
    name = service.encode()
    msg = (b"\x0a" + _varint(len(name)) + name) if name else b""
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def serving_status(body: bytes) -> int | None:
    """``HealthCheckResponse.status`` from a gRPC response body (None: not one)."""
    if len(body) < 5 or body[0] != 0:
        return None  # (a compressed message: not asked for, not accepted)
    length = int.from_bytes(body[1:5], "big")
    msg = body[5:5 + length]
    if len(msg) != length:
        return None
    status = 0  # proto3: an absent field is its default, UNKNOWN
    i = 0
    while i < len(msg):
        tag, i = _read_varint(msg, i)
        if tag is None:
            return None
        if tag == 0x08:  # field 1, varint
            value, i = _read_varint(msg, i)
            if value is None:
                return None
            status = value
        elif tag & 7 == 0:
            _, i = _read_varint(msg, i)
        elif tag & 7 == 2:
            n, i = _read_varint(msg, i)
            if n is None:
                return None
            i += n
        else:
            return None
    return status


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int | None, int]:
    value = shift = 0
    while i < len(data) and shift < 64:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return None, i


async def grpc_check(cfg: HealthCheck, t: Target) -> tuple[bool, str]:
    """``type: grpc``: grpc.health.v1.Health/Check for ``grpc_service``."""
    reply = await h2_request(t, "POST", "/grpc.health.v1.Health/Check", _authority(cfg, t),
                             [("content-type", "application/grpc"), ("te", "trailers")],
                             health_request(cfg.grpc_service), ctx=_check_context(cfg, t))
    if reply.status != 200:
        return False, f"HTTP status {reply.status}"
    ending = reply.trailers or reply.headers  # a "trailers-only" answer carries it in the head
    code = ending.get("grpc-status")
    if code != "0":
        message = ending.get("grpc-message", "")
        return False, f"grpc-status {code}" + (f": {message}" if message else "")
    status = serving_status(reply.body)
    if status is None:
        return False, "not a HealthCheckResponse"
    name = SERVING_STATUS.get(status, str(status))
    return status == 1, name
