"""The authoritative DNS responder end to end: a real pyvs (two workers), real health
checks against listening sockets the test opens and closes, dig and dnspython as
clients over UDP and TCP."""

from __future__ import annotations

import collections
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from tests.integration.harness import Pyvs, free_port

FAST = {"type": "tcp", "interval": "100ms", "timeout": "300ms", "rise": 1, "fall": 1, "jitter": 0.1}
ZONE = "example.com."


def wait_until(pred: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Listening:
    """A TCP socket listening on ``host``: what the tcp health check finds up. ``kill``
    closes it (the check is refused), ``revive`` listens on the same port again."""

    def __init__(self, host: str) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.family = family
        self.sock: socket.socket | None = None
        self.port = 0
        self.revive()

    def revive(self) -> None:
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.sock = s

    def kill(self) -> None:
        assert self.sock is not None
        self.sock.close()
        self.sock = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def query(port: int, name: str, rdtype: str = "A", *, tcp: bool = False, **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=True)


def addresses(msg: dns.message.Message) -> list[str]:
    return [rd.address for rrset in msg.answer if rrset.rdtype in (1, 28) for rd in rrset]


def dig(port: int, *args: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), *args], capture_output=True, timeout=20, check=True)
    return out.stdout.decode()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Listening]]:
    out = {
        "web1": Listening("127.0.0.11"),
        "web2": Listening("127.0.0.12"),
        "web6": Listening("::1"),
        "flap1": Listening("127.0.0.21"),
        "flap2": Listening("127.0.0.22"),
    }
    yield out
    for s in out.values():
        if s.sock is not None:
            s.sock.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, Listening]) -> Iterator[tuple[Pyvs, int]]:
    assert shutil.which("dig"), "dig is missing: run the tests through `make test` (bind9-dnsutils)"
    port = free_port()
    s = servers
    cfg: dict[str, Any] = {
        "listeners": [{
            "name": "dns", "mode": "dns", "bind": [f"127.0.0.1:{port}"],
            "dns": {
                "regions": {"10.1.0.0/16": "eu", "10.2.0.0/16": "us", "127.0.0.0/8": "us"},
                "sites": [{"name": "eu", "region": "eu", "pool": "eu"},
                          {"name": "us", "region": "us", "pool": "us"}],
            },
            "zones": [{
                "name": "example.com", "ttl": "30s", "degraded_ttl": "2s",
                "records": [
                    {"name": "www", "pool": "web"},
                    {"name": "w", "pool": "web", "policy": "weighted"},
                    {"name": "flap", "pool": "flap"},
                    {"name": "big", "pool": "big"},
                    {"name": "geo", "sites": ["eu", "us"]},
                    {"name": "mail", "type": "MX", "value": "10 mx.example.com."},
                    {"name": "mx", "type": "A", "value": "192.0.2.25"},
                    {"name": "txt", "type": "TXT", "value": '"v=spf1 -all"'},
                    {"name": "alias", "type": "CNAME", "value": "www"},
                    {"name": "*.apps", "pool": "web", "policy": "failover"},
                    {"name": "a.deep", "type": "TXT", "value": "x"},
                ],
            }],
        }],
        "backends": [
            {"name": "web", "health": FAST, "servers": [
                {"name": "web1", "address": s["web1"].address, "weight": 3},
                {"name": "web2", "address": s["web2"].address, "weight": 1},
                {"name": "web6", "address": s["web6"].address},
            ]},
            {"name": "flap", "health": FAST, "servers": [
                {"name": "flap1", "address": s["flap1"].address},
                {"name": "flap2", "address": s["flap2"].address},
            ]},
            {"name": "big", "servers": [{"name": f"b{i}", "address": f"127.0.1.{i}:80"} for i in range(1, 41)]},
            {"name": "eu", "servers": [{"name": "eu1", "address": "127.0.0.31:80"}]},
            {"name": "us", "servers": [{"name": "us1", "address": "127.0.0.41:80"}]},
        ],
    }
    pyvs = Pyvs(cfg, tmp_path_factory.mktemp("dns"), workers=2)
    try:
        yield pyvs, port
    finally:
        pyvs.stop()


def test_a_and_aaaa_from_healthy_servers(env: tuple[Pyvs, int]) -> None:
    _, port = env
    assert sorted(dig(port, "www.example.com", "A", "+short").split()) == ["127.0.0.11", "127.0.0.12"]
    assert dig(port, "www.example.com", "AAAA", "+short").split() == ["::1"]
    r = query(port, "www.example.com", "A")
    assert r.flags & dns.flags.AA and r.rcode() == dns.rcode.NOERROR
    assert r.answer[0].ttl == 30


def test_all_policy_rotates(env: tuple[Pyvs, int]) -> None:
    _, port = env
    firsts = {addresses(query(port, "www.example.com"))[0] for _ in range(8)}
    assert firsts == {"127.0.0.11", "127.0.0.12"}


def test_case_preserved_and_static_records(env: tuple[Pyvs, int]) -> None:
    _, port = env
    r = query(port, "WwW.ExAmPlE.cOm", "A")
    assert r.question[0].name.to_text() == "WwW.ExAmPlE.cOm."
    assert r.answer[0].name.to_text() == "WwW.ExAmPlE.cOm."
    assert dig(port, "mail.example.com", "MX", "+short").strip() == "10 mx.example.com."
    assert dig(port, "txt.example.com", "TXT", "+short").strip() == '"v=spf1 -all"'
    out = dig(port, "alias.example.com", "A", "+short").split()
    assert out[0] == "www.example.com." and sorted(out[1:]) == ["127.0.0.11", "127.0.0.12"]
    soa = query(port, "example.com", "SOA")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA


def test_nxdomain_nodata_refused(env: tuple[Pyvs, int]) -> None:
    _, port = env
    nx = query(port, "nope.example.com")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and not nx.answer
    nodata = query(port, "www.example.com", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    ent = query(port, "deep.example.com", "A")  # empty non-terminal: exists, no data
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    refused = query(port, "example.org")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    assert "status: NXDOMAIN" in dig(port, "nope.example.com")
    assert "status: REFUSED" in dig(port, "www.example.net")
    assert "flags: qr aa" in dig(port, "www.example.com")


def test_wildcard(env: tuple[Pyvs, int]) -> None:
    _, port = env
    r = query(port, "Shop.Apps.example.com")
    assert r.answer[0].name.to_text() == "Shop.Apps.example.com."
    assert addresses(r) == ["127.0.0.11"]  # failover: the first healthy server


def test_weights_respected(env: tuple[Pyvs, int]) -> None:
    _, port = env
    counts = collections.Counter(addresses(query(port, "w.example.com"))[0] for _ in range(400))
    share = counts["127.0.0.11"] / 400  # weight 3 of 4
    assert 0.65 < share < 0.85, counts


def test_truncated_udp_then_tcp(env: tuple[Pyvs, int]) -> None:
    _, port = env
    udp = query(port, "big.example.com", use_edns=False)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = query(port, "big.example.com", tcp=True)
    assert len(addresses(tcp)) == 40
    out = dig(port, "big.example.com", "+noedns")
    assert "Truncated, retrying in TCP mode" in out and out.count("IN\tA\t127.0.1.") == 40


def test_edns_and_client_subnet(env: tuple[Pyvs, int]) -> None:
    _, port = env
    # Without ECS the resolver's own address decides: 127.0.0.0/8 is region us.
    assert addresses(query(port, "geo.example.com")) == ["127.0.0.41"]
    ecs = dns.edns.ECSOption("10.1.2.0", 24)
    r = query(port, "geo.example.com", use_edns=0, options=[ecs])
    assert addresses(r) == ["127.0.0.31"]
    echoed = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
    assert echoed and echoed[0].scopelen == 24
    assert dig(port, "geo.example.com", "+short", "+subnet=10.2.0.0/16").split() == ["127.0.0.41"]
    assert dig(port, "geo.example.com", "+short", "+subnet=10.1.0.0/16").split() == ["127.0.0.31"]
    assert r.payload == 1232


def test_failed_server_leaves_answers(env: tuple[Pyvs, int], servers: dict[str, Listening]) -> None:
    pyvs, port = env
    both = ["127.0.0.21", "127.0.0.22"]
    assert sorted(addresses(query(port, "flap.example.com"))) == both
    servers["flap1"].kill()
    try:
        t0 = time.monotonic()
        # Check interval 100 ms, fall 1: gone within about one interval (slack for a busy machine).
        wait_until(lambda: addresses(query(port, "flap.example.com")) == ["127.0.0.22"], 5, "flap1 to leave")
        assert time.monotonic() - t0 < 3
        # Every worker answers without it (several queries spread over both workers).
        assert all(addresses(query(port, "flap.example.com")) == ["127.0.0.22"] for _ in range(20))
        assert query(port, "flap.example.com").answer[0].ttl == 2  # degraded: short TTL
        servers["flap2"].kill()
        wait_until(lambda: all(s.get("state") == "DOWN" for b in pyvs.status()["backends"] if b["name"] == "flap"
                               for s in b["servers"]), 5, "both flap servers down")
        time.sleep(0.1)
        # Never an empty answer: the last good set stays.
        assert addresses(query(port, "flap.example.com")) == ["127.0.0.22"]
    finally:
        servers["flap1"].revive()
        servers["flap2"].revive()
    wait_until(lambda: sorted(addresses(query(port, "flap.example.com"))) == both, 5, "both back")


def test_malformed_and_other_opcodes(env: tuple[Pyvs, int]) -> None:
    _, port = env
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www", ("127.0.0.1", port))
        data, _ = s.recvfrom(512)
        assert data[:2] == b"\x12\x34" and data[3] & 0x0F == dns.rcode.FORMERR
    q = dns.message.make_query("www.example.com", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOTIMP



def test_reload_swaps_the_zone(tmp_path: Path) -> None:
    """A reload (SIGHUP) starts workers with the new zone on the same UDP and TCP ports;
    every query is answered throughout, by the old zone or the new one."""
    port = free_port()

    def config(text: str) -> dict[str, Any]:
        return {"listeners": [{"name": "dns", "mode": "dns", "bind": [f"127.0.0.1:{port}"],
                               "zones": [{"name": "example.com",
                                          "records": [{"name": "v", "type": "TXT", "value": text}]}]}]}

    def txt(tcp: bool) -> bytes:
        return bytes(query(port, "v.example.com", "TXT", tcp=tcp).answer[0][0].strings[0])

    pyvs = Pyvs(config("one"), tmp_path, workers=2)
    try:
        assert txt(False) == txt(True) == b"one"
        cfg = config("two")
        cfg["admin"] = pyvs.config["admin"]
        cfg["global"] = pyvs.config["global"]
        pyvs.path.write_text(yaml.safe_dump(cfg))
        pyvs.proc.send_signal(signal.SIGHUP)
        seen = set()
        deadline = time.monotonic() + 20
        while not (txt(False) == b"two" and txt(True) == b"two"):
            seen.add(txt(False))
            assert time.monotonic() < deadline, "the new zone never answered"
        assert seen <= {b"one", b"two"}
        pyvs.wait_status(lambda s: s["generation"] == 1 and all(w["ready"] for w in s["workers"]), 20)
    finally:
        pyvs.stop()
