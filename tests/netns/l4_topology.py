"""A client, a balancer and two servers, each in its own network namespace.

Topology (every namespace is created here and deleted by :meth:`L4Lab.close`; the
host's own network is never touched)::

    ns ...-c (client)          ns ...-lb (balancer, ip_forward on)          ns ...-s1 / ...-s2
    c0 10.78.1.2/24  <-veth->  l0 10.78.1.1/24 (the VIP)
       (+ 10.78.1.3-.9)        br0 10.78.2.1/24  <-veth-> eth0 10.78.2.11/24 / 10.78.2.12/24

The servers have no route back to the client network: replies reach the client only
through the balancer's masquerade, which is what the nftables data plane sets up.
Names start with ``pyvsl4-<pid>`` so that parallel runs and the VRRP lab (``pyvs-...``)
never collide. Each server runs :data:`NAME_SERVER`: on every TCP connection and every
UDP datagram it answers its own name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VIP = "10.78.1.1"
CLIENT_IPS = [f"10.78.1.{i}" for i in range(2, 10)]
SERVER_IPS = {"s1": "10.78.2.11", "s2": "10.78.2.12"}
PORT = 8080

NAME_SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 8080))
    while True:
        _, peer = u.recvfrom(2048)
        u.sendto(name, peer)
threading.Thread(target=udp, daemon=True).start()
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 8080))
t.listen(128)
print("ready", flush=True)
while True:
    c, _ = t.accept()
    c.sendall(name)
    c.close()
"""

CLIENT = r"""
import json, socket, sys
vip, port, proto, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sources = sys.argv[5].split(",") if len(sys.argv) > 5 else [""]
out = []
for i in range(count):
    src = sources[i % len(sources)]
    try:
        if proto == "tcp":
            s = socket.create_connection((vip, port), timeout=3, source_address=(src, 0) if src else None)
            data = b""
            while chunk := s.recv(100):
                data += chunk
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            if src:
                s.bind((src, 0))
            s.sendto(b"?", (vip, port))
            data = s.recv(100)
        s.close()
        out.append([src, data.decode()])
    except OSError as e:
        out.append([src, "error: " + type(e).__name__])
print(json.dumps(out))
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    """Poll ``predicate`` (there is no event to wait on across namespaces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class L4Lab:
    """Creates the namespaces on construction; :meth:`close` removes everything."""

    def __init__(self) -> None:
        base = f"pyvsl4-{os.getpid()}"
        self.client, self.lb = f"{base}-c", f"{base}-lb"
        self.servers = {name: f"{base}-{name}" for name in SERVER_IPS}
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.namespaces = [self.client, self.lb, *self.servers.values()]
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", name, *args, check=check)

    def _build(self) -> None:
        for name in self.namespaces:
            sh("ip", "netns", "add", name)
            self.ns(name, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "l0", "netns", self.lb)
        for ip in CLIENT_IPS:
            self.ns(self.client, "ip", "addr", "add", f"{ip}/24", "dev", "c0")
        self.ns(self.client, "ip", "link", "set", "c0", "up")
        self.ns(self.lb, "ip", "addr", "add", f"{VIP}/24", "dev", "l0")
        self.ns(self.lb, "ip", "link", "set", "l0", "up")
        self.ns(self.lb, "ip", "link", "add", "br0", "type", "bridge")
        self.ns(self.lb, "ip", "addr", "add", "10.78.2.1/24", "dev", "br0")
        self.ns(self.lb, "ip", "link", "set", "br0", "up")
        self.ns(self.lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for name, ns in self.servers.items():
            port = f"p{name}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.lb)
            self.ns(self.lb, "ip", "link", "set", port, "master", "br0", "up")
            self.ns(ns, "ip", "addr", "add", f"{SERVER_IPS[name]}/24", "dev", "eth0")
            self.ns(ns, "ip", "link", "set", "eth0", "up")
            self.start_server(name)

    def start_server(self, name: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.servers[name], sys.executable, "-c", NAME_SERVER, name],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.procs[name] = proc

    def stop_server(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def clients(self, count: int, proto: str = "tcp", port: int = 80, sources: list[str] | None = None,
                ) -> list[tuple[str, str]]:
        """``count`` exchanges from the client namespace: (source, answer or error)."""
        args = [VIP, str(port), proto, str(count)] + ([",".join(sources)] if sources else [])
        out = self.ns(self.client, sys.executable, "-c", CLIENT, *args)
        return [(src, ans) for src, ans in json.loads(out.stdout)]

    def tables(self) -> list[str]:
        out = json.loads(self.ns(self.lb, "nft", "-j", "list", "tables").stdout)
        return [f"{t['table']['family']} {t['table']['name']}" for t in out["nftables"] if "table" in t]

    def pyvs(self, config: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
        """``pyvs run`` inside the balancer namespace (admin off: nothing to reach it from here)."""
        config.setdefault("global", {"workers": 1})
        config.setdefault("admin", {"listen": None})
        path = tmp / "pyvs-l4-netns.yaml"
        path.write_text(json.dumps(config))
        log = (tmp / "pyvs-l4-netns.log").open("wb")
        proc = subprocess.Popen(["ip", "netns", "exec", self.lb, sys.executable, "-m", "pyvs.cli", "run",
                                 "-c", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs[f"pyvs-{proc.pid}"] = proc
        return proc

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()
        for name in self.namespaces:
            # Processes still inside (none expected) would keep the namespace's devices alive.
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
