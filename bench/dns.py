#!/usr/bin/env python3
"""DNS load test: pyvs's authoritative responder against NSD serving the same static zone.

Run it with ``make bench-dns`` (or ``.venv/bin/python bench/dns.py --help``). Each server
in turn (interleaved, ``--repeat`` rounds) is started on a free loopback port with one
worker / one server process, warmed up, loaded by ``dnsperf`` (from Debian; without it,
a dnspython-built query set blasted over UDP by this script) for ``--seconds``, and its
process tree's CPU time (utime+stime from /proc, as bench/run.py does) is sampled
around the measured load. The figure is **answered queries per CPU-second of the
server**, medians of the rounds, and pyvs's ratio to NSD measured in the same run.

The zone is the same for both: a few A names, an MX, a TXT; the query mix asks for
them, plus a NODATA (AAAA of an A-only name) and an NXDOMAIN, as a resolver population
would. pyvs serves the names as static records so both servers do the same work; the
``--pool`` switch makes pyvs's ``www`` a balanced pool record (precomputed the same way:
the per-query cost must not change).

All traffic goes to 127.0.0.1; every process started is stopped and the temporary
directory removed, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(_BENCH))
from run import CpuSample, free_ports  # noqa: E402  (bench/run.py: CPU accounting of a process tree)

# This file is named dns.py: with its directory on sys.path, ``import dns`` would find it
# instead of dnspython.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
NSD = "/usr/sbin/nsd"

ZONE_FILE = """$ORIGIN example.com.
$TTL 30
@     IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 604800 30
@     IN NS  ns1.example.com.
ns1   IN A   127.0.0.1
www   IN A   192.0.2.1
www   IN A   192.0.2.2
api   IN A   192.0.2.3
mail  IN MX  10 mx.example.com.
mx    IN A   192.0.2.25
txt   IN TXT "v=spf1 -all"
"""

PYVS_ZONE = {
    "name": "example.com", "ttl": "30s", "ns": ["ns1.example.com."],
    "records": [
        {"name": "ns1", "type": "A", "value": "127.0.0.1"},
        {"name": "www", "type": "A", "value": ["192.0.2.1", "192.0.2.2"]},
        {"name": "api", "type": "A", "value": "192.0.2.3"},
        {"name": "mail", "type": "MX", "value": "10 mx.example.com."},
        {"name": "mx", "type": "A", "value": "192.0.2.25"},
        {"name": "txt", "type": "TXT", "value": '"v=spf1 -all"'},
    ],
}

QUERIES = [("www.example.com", "A")] * 6 + [("api.example.com", "A")] * 2 + [
    ("mail.example.com", "MX"), ("txt.example.com", "TXT"), ("www.example.com", "AAAA"),
    ("nope.example.com", "A"),
]


def log(msg: str) -> None:
    print(f"[bench-dns] {msg}", file=sys.stderr, flush=True)


def nsd_start(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    (tmp / "example.com.zone").write_text(ZONE_FILE)
    conf = tmp / "nsd.conf"
    conf.write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    server-count: 1
    username: ""
    zonesdir: "{tmp}"
    database: ""
    pidfile: "{tmp}/nsd.pid"
    xfrdfile: "{tmp}/xfrd.state"
    zonelistfile: "{tmp}/zone.list"
    logfile: "{tmp}/nsd.log"
    verbosity: 0
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: example.com
    zonefile: example.com.zone
""")
    return subprocess.Popen([NSD, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def pyvs_start(tmp: Path, port: int, pool: bool) -> subprocess.Popen[bytes]:
    zone = json.loads(json.dumps(PYVS_ZONE))
    backends = []
    if pool:
        zone["records"][1] = {"name": "www", "pool": "web"}
        backends = [{"name": "web", "servers": [{"name": "w1", "address": "192.0.2.1:80"},
                                                {"name": "w2", "address": "192.0.2.2:80"}]}]
    cfg = {"global": {"workers": 1, "log_level": "warning"}, "admin": {"listen": None},
           "listeners": [{"name": "dns", "mode": "dns", "bind": [f"127.0.0.1:{port}"], "zones": [zone]}],
           "backends": backends}
    path = tmp / "pyvs.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return subprocess.Popen([PYTHON, "-m", "pyvs.cli", "run", "-c", str(path)], cwd=REPO,
                            stdout=(tmp / "pyvs.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def wire_queries() -> list[bytes]:
    import dns.message

    return [dns.message.make_query(n, t).to_wire() for n, t in QUERIES]


def wait_answering(proc: subprocess.Popen[bytes], port: int, timeout: float = 20) -> None:
    probe = wire_queries()[0]
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            s.sendto(probe, ("127.0.0.1", port))
            try:
                if s.recv(4096)[:2] == probe[:2]:
                    return
            except OSError:
                pass
    raise RuntimeError("server did not answer in time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


def dnsperf_load(port: int, seconds: float, datafile: Path) -> int:
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-l", str(seconds),
                          "-c", "4", "-q", "100", "-T", "1"], capture_output=True, text=True, check=True)
    m = re.search(r"Queries completed:\s+(\d+)", out.stdout)
    if m is None:
        raise RuntimeError(f"cannot read dnsperf output:\n{out.stdout}")
    return int(m.group(1))


def python_load(port: int, seconds: float) -> int:
    """Without dnsperf: keep 64 queries in flight over one UDP socket, count answers."""
    queries = wire_queries()
    done = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(1)
        for i in range(64):
            s.send(queries[i % len(queries)])
        end = time.monotonic() + seconds
        i = 64
        while time.monotonic() < end:
            try:
                s.recv(4096)
            except TimeoutError:
                for _ in range(64):  # lost datagrams: refill the window
                    s.send(queries[i % len(queries)])
                    i += 1
                continue
            done += 1
            s.send(queries[i % len(queries)])
            i += 1
    return done


def measure(name: str, tmp: Path, seconds: float, pool: bool, datafile: Path | None) -> float:
    port = free_ports(1)[0]
    proc = nsd_start(tmp, port) if name == "nsd" else pyvs_start(tmp, port, pool)
    try:
        wait_answering(proc, port)
        load = (lambda s: dnsperf_load(port, s, datafile)) if datafile else (lambda s: python_load(port, s))
        load(1)  # warm-up
        before = CpuSample.take(proc.pid)
        answered = load(seconds)
        cpu = before.seconds_until(CpuSample.take(proc.pid))
    finally:
        stop(proc)
    rate = answered / cpu if cpu > 0 else 0.0
    log(f"{name}: {answered} answers, {cpu:.2f} CPU-s, {rate:,.0f} answers per CPU-second")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="measured load per round (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument("--pool", action="store_true", help="pyvs answers www from a balanced pool record")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    if not Path(NSD).exists():
        log("nsd is missing: make bench-dns installs it (APT_BENCH)")
        return 2
    rates: dict[str, list[float]] = {"nsd": [], "pyvs": []}
    with tempfile.TemporaryDirectory(prefix="pyvs-bench-dns-") as d:
        tmp = Path(d)
        datafile: Path | None = None
        if shutil.which("dnsperf"):
            datafile = tmp / "queries.txt"
            datafile.write_text("".join(f"{n} {t}\n" for n, t in QUERIES))
        else:
            log("dnsperf is missing: using the built-in dnspython-driven UDP load")
        for _ in range(args.repeat):
            for name in rates:
                rates[name].append(measure(name, tmp, args.seconds, args.pool, datafile))
    med = {n: statistics.median(v) for n, v in rates.items()}
    ratio = med["pyvs"] / med["nsd"] if med["nsd"] else 0.0
    result = {"load": "dnsperf" if datafile else "python", "seconds": args.seconds, "repeat": args.repeat,
              "pool": args.pool, "answers_per_cpu_second": med, "rounds": rates, "pyvs_vs_nsd": round(ratio, 3)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'server':<8} {'answers per CPU-second (median of ' + str(args.repeat) + ')':>42}")
        for n, v in med.items():
            print(f"{n:<8} {v:>42,.0f}")
        print(f"pyvs/nsd {ratio:>42.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
