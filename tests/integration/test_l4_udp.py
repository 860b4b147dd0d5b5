"""User-space UDP balancing (``mode: udp``) with DNS as the test case.

Two small DNS servers (:class:`DnsServer`, A records only) each answer every name with
their own address; a client resolves through pyvs and the answer tells which server
it reached. Also: per-flow sessions, replies to the right client, source hashing,
the bounded session table with eviction, and the idle timeout.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import LoopThread, Pyvs, free_port


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(qid: int, name: str) -> bytes:
    """A standard recursive query for ``name`` IN A."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes, address: str) -> bytes:
    """Answer ``query`` (one question) with one A record pointing at ``address``."""
    qid = struct.unpack("!H", query[:2])[0]
    end = query.index(b"\x00", 12) + 5  # the question: name, type, class
    question = query[12:end]
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer


def parse_answer(reply: bytes) -> tuple[int, str]:
    """(query id, the A record's address) of a reply to one question."""
    qid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert flags & 0x8000 and qd == 1 and an == 1, reply
    return qid, socket.inet_ntoa(reply[-4:])


class DnsServer(asyncio.DatagramProtocol):
    """Answers every A query with ``address``; records who asked."""

    def __init__(self, lt: LoopThread, address: str) -> None:
        self.lt = lt
        self.address = address
        self.port = free_port()
        self.peers: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None
        lt.run(lt.loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", self.port)))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peers.append(addr)
        assert self.transport is not None
        self.transport.sendto(dns_answer(data, self.address), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.lt.loop.call_soon_threadsafe(self.transport.close)


class Resolver:
    """A client socket (one flow) that resolves through pyvs."""

    def __init__(self, port: int, rng: random.Random, source: str = "127.0.0.1") -> None:
        self.port = port
        self.rng = rng
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(5)

    def resolve(self, name: str = "www.example.test") -> str:
        qid = self.rng.randrange(1 << 16)
        self.sock.sendto(dns_query(qid, name), ("127.0.0.1", self.port))
        reply, peer = self.sock.recvfrom(512)
        assert peer == ("127.0.0.1", self.port)  # the reply comes from the address asked
        got_id, address = parse_answer(reply)
        assert got_id == qid
        return address

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dns(loop_thread: LoopThread) -> Iterator[list[DnsServer]]:
    servers = [DnsServer(loop_thread, "10.78.0.1"), DnsServer(loop_thread, "10.78.0.2")]
    yield servers
    for s in servers:
        s.close()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(5)


def udp_pyvs(tmp: Path, servers: list[DnsServer], *, udp: dict[str, Any] | None = None,
             backend: dict[str, Any] | None = None) -> tuple[Pyvs, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "dns", "mode": "udp", "bind": [f"127.0.0.1:{port}"], "backend": "dns",
                       **({"udp": udp} if udp else {})}],
        "backends": [{"name": "dns", "servers": [
            {"name": f"ns{i + 1}", "address": f"127.0.0.1:{s.port}"} for i, s in enumerate(servers)
        ], **(backend or {})}],
    }
    return Pyvs(cfg, tmp), port


def test_dns_resolves_through_pyvs_round_robin(dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    p, port = udp_pyvs(tmp_path, dns)
    try:
        answers = []
        for _ in range(6):  # a new client socket per lookup: a new flow each time
            r = Resolver(port, rng)
            answers.append(r.resolve())
            r.close()
        assert sorted(answers) == ["10.78.0.1"] * 3 + ["10.78.0.2"] * 3
        p.wait_status(lambda st: st["totals"]["udp_sessions"] == 6 and st["totals"]["udp_datagrams_out"] == 6)
    finally:
        p.stop()


def test_a_flow_sticks_to_its_server_and_replies_reach_the_right_client(
        dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    p, port = udp_pyvs(tmp_path, dns)
    try:
        a, b = Resolver(port, rng), Resolver(port, rng)
        first_a, first_b = a.resolve(), b.resolve()
        assert first_a != first_b
        for _ in range(5):
            assert a.resolve() == first_a
            assert b.resolve() == first_b
        a.close()
        b.close()
        # one upstream socket per flow: each server saw exactly one source port
        assert [len(set(s.peers)) for s in dns] == [1, 1]
    finally:
        p.stop()


def test_weighted_round_robin(dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    port = free_port()
    cfg = {
        "listeners": [{"name": "dns", "mode": "udp", "bind": [f"127.0.0.1:{port}"], "backend": "dns"}],
        "backends": [{"name": "dns", "servers": [
            {"name": "ns1", "address": f"127.0.0.1:{dns[0].port}", "weight": 3},
            {"name": "ns2", "address": f"127.0.0.1:{dns[1].port}", "weight": 1},
        ]}],
    }
    p = Pyvs(cfg, tmp_path)
    try:
        answers = []
        for _ in range(8):
            r = Resolver(port, rng)
            answers.append(r.resolve())
            r.close()
        assert answers.count("10.78.0.1") == 6 and answers.count("10.78.0.2") == 2
    finally:
        p.stop()


def test_source_hashing(dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    p, port = udp_pyvs(tmp_path, dns, backend={"balance": "source"})
    try:
        by_source: dict[str, set[str]] = {}
        for i in range(2, 14):
            src = f"127.0.0.{i}"
            for _ in range(2):  # two flows (two source ports) per client address
                r = Resolver(port, rng, source=src)
                by_source.setdefault(src, set()).add(r.resolve())
                r.close()
        assert all(len(v) == 1 for v in by_source.values())
        assert set().union(*by_source.values()) == {"10.78.0.1", "10.78.0.2"}
    finally:
        p.stop()


def test_full_session_table_evicts_the_oldest_idle_flow(dns: list[DnsServer], rng: random.Random,
                                                        tmp_path: Path) -> None:
    p, port = udp_pyvs(tmp_path, dns[:1], udp={"max_sessions": 2})
    try:
        flows = [Resolver(port, rng) for _ in range(3)]
        flows[0].resolve()
        flows[1].resolve()
        flows[0].resolve()  # flow 1 is now the least recently active
        flows[2].resolve()  # table full: flow 1 is evicted
        st = p.wait_status(lambda st: st["totals"]["udp_evictions"] == 1)
        assert st["totals"]["udp_sessions"] == 3
        flows[0].resolve()  # still has its session
        flows[1].resolve()  # comes back as a new session, evicting flow 2 (oldest idle now)
        p.wait_status(lambda st: st["totals"]["udp_evictions"] == 2 and st["totals"]["udp_sessions"] == 4)
        assert len({peer for peer in dns[0].peers}) == 4  # one upstream socket per session
        for f in flows:
            f.close()
    finally:
        p.stop()


def test_idle_flows_expire(dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    p, port = udp_pyvs(tmp_path, dns[:1], udp={"session_timeout": "200ms"})
    try:
        r = Resolver(port, rng)
        r.resolve()
        r.resolve()
        # 200 ms of silence and the flow is forgotten ...
        p.wait_status(lambda st: st["totals"]["udp_timeouts"] == 1)
        # ... so the next query from the same client socket opens a new session.
        r.resolve()
        p.wait_status(lambda st: st["totals"]["udp_sessions"] == 2)
        assert len(set(dns[0].peers)) == 2
        r.close()
    finally:
        p.stop()


def test_reload_loses_no_datagram(dns: list[DnsServer], rng: random.Random, tmp_path: Path) -> None:
    """Two workers, 20 client flows asking in turn while pyvs reloads twice: every query
    is answered (the new worker of each slot reads the very socket the old one read,
    datagrams queued on it included)."""
    import os
    import signal
    import threading

    port = free_port()
    cfg = {
        "listeners": [{"name": "dns", "mode": "udp", "bind": [f"127.0.0.1:{port}"], "backend": "dns"}],
        "backends": [{"name": "dns", "servers": [
            {"name": f"ns{i + 1}", "address": f"127.0.0.1:{s.port}"} for i, s in enumerate(dns)]}],
    }
    pyvs = Pyvs(cfg, tmp_path, workers=2)
    clients = [Resolver(port, random.Random(i), f"127.0.3.{i + 1}") for i in range(20)]
    failures: list[str] = []
    done = threading.Event()
    asked = [0]

    def ask() -> None:
        while not done.is_set():
            for c in clients:
                try:
                    c.resolve()
                    asked[0] += 1
                except (TimeoutError, OSError, AssertionError) as exc:
                    failures.append(repr(exc))

    t = threading.Thread(target=ask)
    t.start()
    try:
        for generation in (1, 2):
            os.kill(pyvs.proc.pid, signal.SIGHUP)
            pyvs.wait_status(lambda s, g=generation: s["generation"] == g and not s["retiring"], timeout=30)
        done.set()
        t.join(30)
        assert asked[0] > 100
        assert failures == []
    finally:
        done.set()
        for c in clients:
            c.close()
        pyvs.stop()
