"""PROXY protocol on tcp listeners: sent to servers (``send_proxy``), accepted from a
trusted front (``accept_proxy``), malformed headers closed. Real pyvs, real sockets;
the backend parses what it receives with :mod:`pyvs.l4.proxyproto`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.l4 import proxyproto
from tests.integration.harness import LoopThread, Pyvs
from tests.integration.test_l4_tcp import L4Backend, closed_by_peer, connect, read_all, start, tcp_config


@pytest.fixture
def started() -> Iterator[list[Pyvs]]:
    procs: list[Pyvs] = []
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def proxied(loop_thread: LoopThread) -> Iterator[L4Backend]:
    b = L4Backend(loop_thread, "pp", proxy_header=True)
    yield b
    b.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_tells_the_server_who_the_client_is(version: str, proxied: L4Backend,
                                                       started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config([proxied], listener={"send_proxy": version})
    start(started, cfg, tmp_path)
    with connect(port, source="127.0.0.9") as s:
        local = s.getsockname()
        s.sendall(b"NAME\n")
        assert read_all(s) == b"pp"
    (hdr,) = proxied.heads
    assert hdr.version == int(version[1])
    assert hdr.src == ("127.0.0.9", local[1])
    assert hdr.dst == ("127.0.0.1", port)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_accept_proxy_takes_the_client_from_the_header(version: str, proxied: L4Backend,
                                                       started: list[Pyvs], tmp_path: Path) -> None:
    """A front proxy says the client is 192.0.2.7:4242; pyvs passes that on (send_proxy)
    and payload glued to the header is not lost."""
    cfg, port = tcp_config([proxied], listener={"accept_proxy": True, "send_proxy": "v2"})
    start(started, cfg, tmp_path)
    header = proxyproto.build(version, ("192.0.2.7", 4242), ("198.51.100.1", 443))
    with connect(port) as s:
        s.sendall(header + b"NAME\n")
        assert read_all(s) == b"pp"
    (hdr,) = proxied.heads
    assert (hdr.src, hdr.dst) == (("192.0.2.7", 4242), ("198.51.100.1", 443))


def test_accept_proxy_source_hashing_uses_the_real_client(loop_thread: LoopThread, started: list[Pyvs],
                                                           tmp_path: Path) -> None:
    servers = [L4Backend(loop_thread, f"h{i}") for i in range(3)]
    try:
        cfg, port = tcp_config(list(servers), listener={"accept_proxy": True}, backend={"balance": "source"})
        start(started, cfg, tmp_path)
        chosen: dict[str, set[bytes]] = {}
        for i in range(12):
            client = f"203.0.113.{i + 1}"
            for _ in range(2):
                with connect(port) as s:
                    s.sendall(proxyproto.build("v1", (client, 1000 + i), ("127.0.0.1", port)) + b"NAME\n")
                    chosen.setdefault(client, set()).add(read_all(s))
        assert all(len(v) == 1 for v in chosen.values())
        assert len(set().union(*chosen.values())) > 1  # all from 127.0.0.1, yet spread by the header's client
    finally:
        for b in servers:
            b.close()


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a PROXY speaker at all
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",  # port out of range
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 80\r\n",  # family and address disagree
    proxyproto.V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # v2 with version 3
])
def test_malformed_proxy_header_closes_the_connection(garbage: bytes, proxied: L4Backend, started: list[Pyvs],
                                                      tmp_path: Path) -> None:
    cfg, port = tcp_config([proxied], listener={"accept_proxy": True})
    p = start(started, cfg, tmp_path)
    with connect(port) as s:
        s.sendall(garbage)
        assert closed_by_peer(s)
    p.wait_status(lambda st: st["totals"]["l4_proxy_errors"] == 1)
    assert proxied.connections == 0


def test_missing_proxy_header_times_out(proxied: L4Backend, started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config([proxied], listener={"accept_proxy": True, "timeouts": {"request": "300ms"}})
    p = start(started, cfg, tmp_path)
    with connect(port) as s:
        s.sendall(b"PROXY TCP4 1.2.3.4")  # a prefix, then silence
        assert closed_by_peer(s)
    p.wait_status(lambda st: st["totals"]["l4_proxy_errors"] == 1)
    assert proxied.connections == 0


def test_proxy_header_split_across_segments(proxied: L4Backend, started: list[Pyvs], tmp_path: Path) -> None:
    cfg, port = tcp_config([proxied], listener={"accept_proxy": True, "send_proxy": "v1"})
    start(started, cfg, tmp_path)
    header = proxyproto.build_v2(("10.9.8.7", 65000), ("10.0.0.1", 80))
    with connect(port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(header)):
            s.sendall(header[i : i + 1])
        s.sendall(b"NAME\n")
        assert read_all(s) == b"pp"
    assert proxied.heads[0].src == ("10.9.8.7", 65000)
