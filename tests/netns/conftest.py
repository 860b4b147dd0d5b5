"""A small lab of network namespaces for VRRP tests: a switch, nodes and a client.

Topology (everything lives in namespaces this fixture creates; the host's own
network is never touched)::

        ns <lab>-a          ns <lab>-b           ns <lab>-c ...
        eth0 10.77.0.1      eth0 10.77.0.2       eth0 10.77.0.3
          |                   |                    |
    ------+------- ns <lab>-sw: bridge br0 (or br1) --------

Each node may sit on ``br0`` or on ``br1``; the two bridges are joined by the veth
pair ``isl0``/``isl1`` (an inter-switch link) whose cut partitions the network while
every node keeps its own link up -- the split brain case. Addresses are 10.77.0.N/24
and fd77::N/64; DAD is off in every namespace so link-local addresses exist at once.

Every namespace name starts with a prefix unique to this pytest process and lab,
and the fixture deletes them all (killing what it started) even when a test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_LABS = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> float:
    """Poll ``predicate`` until true; return the seconds it took. Fails the test at the deadline."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.2f}s waiting for {what}")
        time.sleep(step)


def holds(predicate: Callable[[], bool], duration: float, what: str, step: float = 0.02) -> None:
    """Assert ``predicate`` stays true for ``duration`` seconds (a stable outcome, not a blip)."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        assert predicate(), f"{what} stopped holding"
        time.sleep(step)


_NAME_SERVER = """
import http.server, socket, sys
name, port = sys.argv[1].encode(), int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
Server(("::", port), Handler).serve_forever()
"""


@dataclass
class Proc:
    """A process started inside a namespace, with its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (pyvs run forks workers)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 5.0) -> int:
        self.kill(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            return self.popen.wait(5)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Node:
    lab: Lab
    name: str
    ns: str
    index: int
    procs: list[Proc] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return f"10.77.0.{self.index}"

    @property
    def ip6(self) -> str:
        return f"fd77::{self.index}"

    def run(self, *argv: str, name: str) -> Proc:
        log = self.lab.tmp / f"{self.name}-{name}.log"
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        proc = Proc(popen, log)
        self.procs.append(proc)
        self.lab.procs.append(proc)
        return proc

    def config(self, text: str, name: str = "pyvs") -> Path:
        path = self.lab.tmp / f"{self.name}-{name}.yaml"
        path.write_text(text)
        return path

    def pyvs(self, text: str, *, command: str = "vrrp", name: str = "pyvs") -> Proc:
        """Start ``pyvs vrrp -c`` (or ``pyvs run -c``) with ``text`` as the config file."""
        path = self.config(text, name)
        return self.run(sys.executable, "-m", "pyvs.cli", command, "-c", str(path), name=name)

    def keepalived(self, conf: str, *, name: str = "keepalived") -> Proc:
        """Debian's keepalived, VRRP only, in the foreground, logging to the console."""
        path = self.config(conf, name)
        run = self.lab.tmp / f"{self.name}-{name}"
        return self.run(
            "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "--use-file", str(path), "--pid", f"{run}.pid", "--vrrp_pid", f"{run}-vrrp.pid",
            "--checkers_pid", f"{run}-checkers.pid", name=name,
        )

    def addresses(self) -> set[str]:
        out = sh("ip", "-n", self.ns, "-o", "addr", "show", "dev", "eth0").stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}

    def has(self, vip: str) -> bool:
        return vip in self.addresses()

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=False)

    def serve_http(self, port: int = 8000) -> Proc:
        """A tiny HTTP server on every address (IPv4 and IPv6) answering this node's name."""
        return self.run(sys.executable, "-c", _NAME_SERVER, self.name, str(port), name=f"http{port}")

    def link(self, up: bool) -> None:
        """Cut or restore this node's switch port (the node's own eth0 loses carrier)."""
        sh("ip", "-n", self.lab.sw, "link", "set", f"p{self.name}", "up" if up else "down")


class Lab:
    """Namespaces, a switch and nodes; ``close()`` removes all of it."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"pvtest{os.getpid() % 100000}x{next(_LABS)}"
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.nodes: dict[str, Node] = {}
        self.sw = self._netns("sw")
        for br in ("br0", "br1"):
            sh("ip", "-n", self.sw, "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            sh("ip", "-n", self.sw, "link", "set", br, "up")
        sh("ip", "-n", self.sw, "link", "add", "isl0", "type", "veth", "peer", "name", "isl1")
        sh("ip", "-n", self.sw, "link", "set", "isl0", "master", "br0", "up")
        sh("ip", "-n", self.sw, "link", "set", "isl1", "master", "br1", "up")

    def _netns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        for key in ("all", "default"):
            sh("ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
        return name

    def node(self, name: str, index: int, bridge: str = "br0") -> Node:
        ns = self._netns(name)
        port = f"p{name}"
        sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.sw, "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"10.77.0.{index}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"fd77::{index}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        node = Node(self, name, ns, index)
        self.nodes[name] = node
        return node

    def cut_isl(self, cut: bool) -> None:
        """Cut (or restore) the link between the two bridges."""
        sh("ip", "-n", self.sw, "link", "set", "isl0", "down" if cut else "up")

    def holders(self, vip: str) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.has(vip))

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.text()[-3000:]}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.kill(signal.SIGKILL)
        for p in self.procs:
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root (ip netns, raw sockets)")
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(lab.logs())
        lab.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


def vrrp_yaml(
    *,
    name: str = "VI_1",
    vrid: int = 51,
    priority: int = 100,
    interval: str = "100ms",
    version: int = 3,
    vips: tuple[str, ...] = ("10.77.0.100/24",),
    extra: str = "",
    notify: str | None = None,
) -> str:
    """One ``vrrp:`` instance on eth0 as YAML (``extra`` adds keys, already indented by 4)."""
    lines = [
        f"  - name: {name}",
        "    interface: eth0",
        f"    vrid: {vrid}",
        f"    priority: {priority}",
        f"    advert_interval: {interval}",
        f"    version: {version}",
        f"    virtual_ips: [{', '.join(vips)}]",
        "    garp_interval: 100ms",
    ]
    if notify:
        lines.append(f"    notify: {json.dumps(notify)}")  # JSON strings are YAML strings
    return "\n".join(lines) + ("\n" + extra.rstrip() if extra else "") + "\n"


def config(*instances: str, log_level: str = "info") -> str:
    return f"global: {{log_level: {log_level}}}\nadmin: {{listen: null}}\nvrrp:\n" + "".join(instances)
