"""Global balancing across two sites in network namespaces.

Two sites, each a node running pyvs with its own servers (a tiny HTTP server checked by
pyvs) and a dns listener that knows both sites: its own through local health checks,
the other through that pyvs's admin ``/status``. Two clients, one in each site's region.
When site a's servers die, both DNS servers send a's clients to b; when they come back,
a's clients come home.

    ns a 10.77.0.1   ns b 10.77.0.2   ns ca 10.77.0.11   ns cb 10.77.0.12
        |                |                |                  |
    ----+------ bridge (ns sw) ----------+------------------+------
"""

from __future__ import annotations

import subprocess

import pytest

from tests.netns.conftest import Lab, Node, wait_for

pytestmark = pytest.mark.netns

TOKEN = "gslb-test-token"


def site_config(me: str, other: str, lab: Lab) -> str:
    nodes = lab.nodes
    token = lab.tmp / "token"
    token.write_text(TOKEN)
    return f"""
global: {{workers: 2}}
admin: {{listen: "{nodes[me].ip}:9090", token_file: "{token}"}}
listeners:
  - name: dns
    mode: dns
    bind: ["{nodes[me].ip}:53"]
    dns:
      regions: {{"{nodes['ca'].ip}/32": a, "{nodes['cb'].ip}/32": b}}
      sites:
        - {{name: {me}, region: {me}, pool: web, addresses: ["{nodes[me].ip}"]}}
        - {{name: {other}, region: {other}, status_url: "http://{nodes[other].ip}:9090/status", backend: web,
            token_file: "{token}", addresses: ["{nodes[other].ip}"], interval: 200ms, timeout: 500ms, fall: 1}}
    zones:
      - name: example.com
        ttl: 10s
        records:
          - {{name: www, sites: [a, b]}}
backends:
  - name: web
    health: {{type: http, path: /, interval: 200ms, timeout: 500ms, rise: 1, fall: 1}}
    servers:
      - {{name: s1, address: "{nodes[me].ip}:8000"}}
"""


def resolve(client: Node, server: Node) -> list[str]:
    out = client.exec("dig", f"@{server.ip}", "www.example.com", "A", "+short", "+time=1", "+tries=1")
    return out.stdout.split() if out.returncode == 0 else []


def fetch(client: Node, ip: str) -> str:
    out = client.exec("curl", "-s", "--max-time", "2", f"http://{ip}:8000/")
    return out.stdout


def test_clients_go_to_the_other_site_when_theirs_fails(lab: Lab) -> None:
    a, b = lab.node("a", 1), lab.node("b", 2)
    ca, cb = lab.node("ca", 11), lab.node("cb", 12)
    http_a = a.serve_http(8000)
    b.serve_http(8000)
    a.pyvs(site_config("a", "b", lab), command="run")
    b.pyvs(site_config("b", "a", lab), command="run")
    try:
        for dns_server in (a, b):
            wait_for(lambda s=dns_server: resolve(ca, s) == [a.ip], 40, f"{dns_server.name} answering ca")
            wait_for(lambda s=dns_server: resolve(cb, s) == [b.ip], 5, f"{dns_server.name} answering cb")
        assert fetch(ca, resolve(ca, a)[0]) == "a"

        http_a.kill()  # site a's only server dies: a's checks see it, b's poll of a's /status too
        for dns_server in (a, b):
            took = wait_for(lambda s=dns_server: resolve(ca, s) == [b.ip], 10, f"{dns_server.name} failing ca over")
            assert took < 5
        assert resolve(cb, a) == [b.ip]
        assert fetch(ca, resolve(ca, a)[0]) == "b"

        a.serve_http(8000)  # back: a's clients come home
        for dns_server in (a, b):
            wait_for(lambda s=dns_server: resolve(ca, s) == [a.ip], 10, f"{dns_server.name} sending ca home")
    except (AssertionError, subprocess.SubprocessError):
        print(lab.logs())
        raise
