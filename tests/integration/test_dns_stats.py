"""DNS responder counters end to end (pyvs/dns/stats.py): a 2-worker pyvs, real ``dig``
over UDP and TCP, raw sockets for what dig will not send (garbage, a response, another
opcode), a stand-in remote pyvs ``/status`` for GSLB polls; /status's ``dns`` object
summed over both workers, the ``pyvs_dns_*`` families of /metrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.message
import dns.opcode
import dns.rcode
import pytest

from pyvs.dns import stats
from tests.integration.harness import Pyvs, free_port
from tests.integration.test_dns import dig
from tests.integration.test_metrics import parse

BIG = [f"192.0.2.{i}" for i in range(1, 41)]  # 40 A records: ~700 bytes, more than 512


class RemoteStatus:
    """A remote pyvs's admin ``/status`` as a GSLB site polls it: backend ``web`` with
    ``up`` servers UP (settable)."""

    def __init__(self) -> None:
        self.up = 1
        remote = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                servers = [{"name": f"s{i}", "state": "UP" if i < remote.up else "DOWN"} for i in range(2)]
                body = json.dumps({"backends": [{"name": "web", "servers": servers}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Env:
    def __init__(self, tmp: Any) -> None:
        self.remote = RemoteStatus()
        self.port = free_port()
        dead = free_port()  # nothing listens there: every poll of site "gone" fails
        cfg: dict[str, Any] = {"listeners": [{
            "name": "ns", "mode": "dns", "bind": [f"127.0.0.1:{self.port}"],
            "dns": {"sites": [
                {"name": "remote", "addresses": ["192.0.2.80"], "backend": "web", "interval": "100ms",
                 "status_url": f"http://127.0.0.1:{self.remote.port}/status"},
                {"name": "gone", "addresses": ["192.0.2.90"], "backend": "web", "interval": "100ms",
                 "timeout": "500ms", "status_url": f"http://127.0.0.1:{dead}/status"},
            ]},
            "zones": [{"name": "example.com", "records": [
                {"name": "www", "type": "A", "value": "192.0.2.1"},
                {"name": "www", "type": "AAAA", "value": "2001:db8::1"},
                {"name": "alias", "type": "CNAME", "value": "www"},
                {"name": "mail", "type": "MX", "value": "10 mx.example.com."},
                {"name": "txt", "type": "TXT", "value": '"v=spf1 -all"'},
                {"name": "_sip._tcp", "type": "SRV", "value": "10 5 5060 sip.example.com."},
                {"name": "big", "type": "A", "value": BIG},
                {"name": "geo", "sites": ["remote", "gone"]},
            ]}],
        }]}
        self.pyvs = Pyvs(cfg, tmp, workers=2)

    def dns(self, pred: Any = lambda d: True, timeout: float = 10) -> dict[str, Any]:
        """/status's dns object once ``pred`` holds on it (counters arrive every 100ms)."""
        st = self.pyvs.wait_status(lambda s: "dns" in s and pred(s["dns"]), timeout=timeout)
        out: dict[str, Any] = st["dns"]
        out["_workers"] = st["workers"]
        return out

    def udp(self, data: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", self.port))

    def udp_exchange(self, data: bytes) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(data, ("127.0.0.1", self.port))
            return s.recv(4096)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.pyvs.admin_port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text

    def close(self) -> None:
        self.pyvs.stop()
        self.remote.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    assert shutil.which("dig"), "dig is missing: run the tests through `make test` (bind9-dnsutils)"
    e = Env(tmp_path_factory.mktemp("dnsstats"))
    try:
        yield e
    finally:
        e.close()


def _status(out: str) -> str:
    m = re.search(r"status: ([A-Z]+)", out)
    assert m, out
    return m.group(1)


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``after - before`` for the counters of a listener view (nested dicts too)."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, dict) and k in ("rcodes", "qtypes"):
            out[k] = {kk: vv - before[k][kk] for kk, vv in v.items() if vv != before[k][kk]}
        elif isinstance(v, int) and not isinstance(v, bool) and k not in ("precomputed", "cached"):
            out[k] = v - before[k]
    return out


def test_queries_answers_and_failures_are_counted_and_summed_over_both_workers(env: Env) -> None:
    before = env.dns()["listeners"]["ns"]
    workers_before = {w["index"]: w.get("dns_queries", 0) for w in env.dns()["_workers"]}
    p = env.port
    # UDP from dig (a new source port each time: the kernel spreads them over the workers)
    udp = [("www.example.com", "A")] * 12 + [
        ("www.example.com", "AAAA"), ("alias.example.com", "CNAME"), ("mail.example.com", "MX"),
        ("txt.example.com", "TXT"), ("_sip._tcp.example.com", "SRV"), ("example.com", "NS"),
        ("example.com", "SOA"), ("www.example.com", "CAA"),
    ]
    for name, qtype in udp:
        assert _status(dig(p, name, qtype)) == "NOERROR"
    assert _status(dig(p, "nope.example.com", "A")) == "NXDOMAIN"
    assert _status(dig(p, "www.example.org", "A")) == "REFUSED"  # outside every zone
    # TCP
    for _ in range(4):
        assert _status(dig(p, "+tcp", "www.example.com", "A")) == "NOERROR"
    assert _status(dig(p, "+tcp", "big.example.com", "A")) == "NOERROR"  # whole over TCP: not truncated
    # Too large for 512 bytes without EDNS: TC set (+ignore: dig keeps it, no retry over TCP)
    out = dig(p, "+noedns", "+ignore", "big.example.com", "A")
    assert " tc" in out.split("flags:")[1].split(";")[0], out
    # Garbage with a header: FORMERR; another opcode: NOTIMP; a response: dropped, no answer
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exa"
    err = env.udp_exchange(garbage)
    assert err[:2] == b"\x12\x34" and err[3] & 0x0F == dns.rcode.FORMERR
    q = dns.message.make_query("www.example.com", "A")
    q.set_opcode(dns.opcode.STATUS)
    assert dns.message.from_wire(env.udp_exchange(q.to_wire())).rcode() == dns.rcode.NOTIMP
    resp = dns.message.make_response(dns.message.make_query("www.example.com", "A"))
    env.udp(resp.to_wire())

    n_udp = len(udp) + 2 + 1 + 3
    n_tcp = 5
    got = env.dns(lambda d: d["listeners"]["ns"]["queries"] >= before["queries"] + n_udp + n_tcp)
    after = got["listeners"]["ns"]
    d = _delta(after, before)
    assert d["queries"] == n_udp + n_tcp
    assert d["udp"] == n_udp and d["tcp"] == n_tcp
    assert d["answers"] == n_udp + n_tcp - 1 and d["dropped"] == 1
    assert d["rcodes"] == {"NOERROR": len(udp) + n_tcp + 1, "NXDOMAIN": 1, "REFUSED": 1, "FORMERR": 1, "NOTIMP": 1}
    assert d["qtypes"] == {"A": 12 + 2 + n_tcp + 1 + 1, "AAAA": 1, "CNAME": 1, "MX": 1, "TXT": 1, "SRV": 1,
                           "NS": 1, "SOA": 1, "other": 1}  # CAA is "other"; FORMERR has no question
    assert d["truncated"] == 1 and d["malformed"] == 1
    assert d["slow"] == 3  # garbage, STATUS, the response: dnspython's parser
    assert after["precomputed"] > 0
    assert got["total"]["queries"] == after["queries"]
    # Summed over both workers: each answered some, and the rows add up to the listener's count
    rows = {w["index"]: w["dns_queries"] for w in got["_workers"]}
    assert len(rows) == 2 and sum(rows.values()) == after["queries"]
    assert all(rows[i] > workers_before.get(i, 0) for i in rows), rows


def _samples(text: str, family: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            key, value = line.rsplit(" ", 1)
            out[key[len(family):]] = float(value)
    return out


def test_metrics_export_the_dns_families(env: Env) -> None:
    assert _status(dig(env.port, "+tcp", "mail.example.com", "MX")) == "NOERROR"
    view = env.dns(lambda d: d["listeners"]["ns"]["tcp"] >= 1)["listeners"]["ns"]
    text = env.metrics()
    _, types = parse(text)  # well formed: HELP and TYPE, counters named _total, no duplicate sample
    assert {n: k for n, k in types.items() if n.startswith("pyvs_dns_")} == {
        **dict.fromkeys(("pyvs_dns_queries_total", "pyvs_dns_answers_total", "pyvs_dns_answers_by_qtype_total",
                         "pyvs_dns_truncated_total", "pyvs_dns_malformed_total", "pyvs_dns_dropped_total",
                         "pyvs_dns_slow_path_total", "pyvs_dns_answer_rebuilds_total", "pyvs_dns_site_polls_total",
                         "pyvs_dns_site_poll_failures_total"), "counter"),
        "pyvs_dns_answers_precomputed": "gauge", "pyvs_dns_site_up": "gauge"}
    q = _samples(text, "pyvs_dns_queries_total")
    assert q['{listener="ns",transport="udp"}'] == view["udp"]
    assert q['{listener="ns",transport="tcp"}'] == view["tcp"]
    a = _samples(text, "pyvs_dns_answers_total")
    assert {k: int(v) for k, v in a.items()} == {f'{{listener="ns",rcode="{r}"}}': n for r, n in view["rcodes"].items()}
    t = _samples(text, "pyvs_dns_answers_by_qtype_total")
    assert t['{listener="ns",qtype="MX"}'] == view["qtypes"]["MX"] >= 1
    assert set(t) == {f'{{listener="ns",qtype="{x}"}}' for x in stats.QTYPES}
    for family, key in (("pyvs_dns_truncated_total", "truncated"), ("pyvs_dns_malformed_total", "malformed"),
                        ("pyvs_dns_dropped_total", "dropped"), ("pyvs_dns_slow_path_total", "slow"),
                        ("pyvs_dns_answer_rebuilds_total", "rebuilds")):
        assert _samples(text, family) == {'{listener="ns"}': view[key]}, family
    assert _samples(text, "pyvs_dns_answers_precomputed")['{listener="ns"}'] == view["precomputed"]
    for family in ("pyvs_dns_site_polls_total", "pyvs_dns_site_poll_failures_total", "pyvs_dns_site_up"):
        assert set(_samples(text, family)) == {'{listener="ns",site="remote"}', '{listener="ns",site="gone"}'}


def test_gslb_polls_failures_and_rebuilds(env: Env) -> None:
    # Each worker polls each site; "gone" refuses every poll and is down after fall (2) of them.
    d = env.dns(lambda d: d["listeners"]["ns"]["sites"]["gone"]["up"] is False
                and d["listeners"]["ns"]["sites"]["remote"]["polls"] >= 4)
    ns = d["listeners"]["ns"]
    gone, remote = ns["sites"]["gone"], ns["sites"]["remote"]
    assert gone["failed"] == gone["polls"] >= 4 and gone["up_workers"] == 0
    assert gone["error"] and gone["servers_up"] is None
    assert remote["up"] is True and remote["up_workers"] == 2 and remote["failed"] == 0
    assert remote["servers_up"] == 1
    # gone going down in both workers rebuilt both answer tables (after the one at start)
    assert ns["rebuilds"] >= 4
    rebuilds = ns["rebuilds"]
    # The remote site's backend loses its server: a good poll that says down; each worker
    # flips the site after two of them and rebuilds its answers once.
    env.remote.up = 0
    try:
        d = env.dns(lambda d: d["listeners"]["ns"]["sites"]["remote"]["up_workers"] == 0)
        ns = d["listeners"]["ns"]
        assert ns["sites"]["remote"]["up"] is False and ns["sites"]["remote"]["servers_up"] == 0
        assert ns["sites"]["remote"]["failed"] == 0  # answered polls are not failures
        ns = env.dns(lambda d: d["listeners"]["ns"]["rebuilds"] >= rebuilds + 2)["listeners"]["ns"]
        text = env.metrics()
        assert _samples(text, "pyvs_dns_site_up") == {'{listener="ns",site="remote"}': 0,
                                                      '{listener="ns",site="gone"}': 0}
        polls = _samples(text, "pyvs_dns_site_poll_failures_total")
        assert polls['{listener="ns",site="remote"}'] == 0 and polls['{listener="ns",site="gone"}'] >= 4
    finally:
        env.remote.up = 1
    env.dns(lambda d: d["listeners"]["ns"]["sites"]["remote"]["up"] is True)


def test_aggregate_counts_retired_reports_but_shows_gauges_of_running_workers() -> None:
    """Pure: how the supervisor sums (no sockets). A retired worker's counters stay in the
    sums (no drop after a reload); its site state and table sizes do not count."""

    class Lc:
        def __init__(self, name: str, mode: str) -> None:
            self.name, self.mode = name, mode

    def rep(queries: int, tcp: int, up: bool, cached: int) -> dict[str, Any]:
        counts = [queries, tcp, 1, 0, 0, 0, 1] + [0] * stats.ANSWER_SLOTS
        counts[len(stats.FIELDS) + stats.answer_slot(0, 1)] = queries
        site = {"polls": 3, "failed": 1, "up": up, "servers_up": 2, "error": ""}
        return {"dns": {"ns": {"counts": counts, "precomputed": 7, "cached": cached, "sites": {"s": site}},
                        "old": {"counts": [5] * 5}}}

    live = [rep(10, 2, True, 3), rep(6, 0, True, 1)]
    retired = rep(100, 50, False, 9)
    out = stats.aggregate([*live, retired], live, [Lc("ns", "dns"), Lc("web", "http")])["dns"]  # type: ignore[list-item]
    ns = out["listeners"]["ns"]
    assert set(out["listeners"]) == {"ns"}  # "old" is no longer configured
    assert (ns["queries"], ns["udp"], ns["tcp"], ns["truncated"], ns["rebuilds"]) == (116, 64, 52, 3, 3)
    assert ns["rcodes"]["NOERROR"] == ns["qtypes"]["A"] == ns["answers"] == 116
    assert ns["precomputed"] == 7 and ns["cached"] == 4
    assert ns["sites"]["s"] == {"up": True, "up_workers": 2, "polls": 9, "failed": 3, "servers_up": 2, "error": None}
    assert out["total"]["queries"] == 116
    assert stats.aggregate([*live], live, [Lc("web", "http")]) == {}  # type: ignore[list-item]
    assert stats.worker_row({"dns": {"ns": live[0]["dns"]["ns"]}}) == {"dns_queries": 10}
    assert stats.worker_row({"dns": None}) == {}
    assert stats.answer_slot(16, 1) == stats.answer_slot(9, 1)  # BADVERS: "other"
    assert stats.answer_slot(3, 65) % stats.WIDTH == stats.QTYPES.index("other")
