"""Configuration of layer-4 listeners (``mode: tcp`` / ``mode: udp``).

The small keys (``dataplane``, ``send_proxy``, ``accept_proxy``, ``maxconn``) sit on the
listener itself; the groups below hang under it as ``queue``, ``tcp``, ``udp`` and
``kernel``. :func:`check_l4` holds the rules that need more than one field or more than
one section (a listener and its backend), called from ``Config._check_references`` so
that its errors carry their path like the other cross-reference errors.

Whether the kernel can do what a ``dataplane`` asks is checked here too, so that
``pyvs check`` says "this kernel has no IPVS" instead of ``pyvs run`` failing later.
The probes are cheap (a netlink family lookup, a ``PATH`` search) and cached.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from pyvs.config.schema_base import Model, parse_address
from pyvs.config.units import Duration

if TYPE_CHECKING:
    from pyvs.config.schema import Config

DataPlane = Literal["userspace", "nftables", "ipvs"]
ProxyVersion = Literal["v1", "v2"]

# Balance algorithms each kernel data plane can express, and what they become there.
NFT_ALGORITHMS = {
    "roundrobin": "numgen inc",
    "static-rr": "numgen inc",
    "random": "numgen random",
    "weighted-random": "numgen random",
    "source": "jhash ip saddr",
}
IPVS_ALGORITHMS = {
    "roundrobin": "wrr",
    "static-rr": "rr",
    "leastconn": "lc",
    "weighted-leastconn": "wlc",
    "source": "sh",
    "maglev": "mh",
    "sed": "sed",
    "nq": "nq",
}


class QueueConfig(Model):
    """Client connections waiting for a free slot (listener or server ``maxconn``)."""

    size: int = Field(
        1024, ge=0, description="Most connections waiting per worker; beyond it new ones are closed. 0 = no queue."
    )
    timeout: Duration = Field(5.0, gt=0, description="Longest wait in the queue before the connection is closed.")


class TcpConfig(Model):
    """Timeouts of a user-space TCP listener."""

    idle_timeout: Duration = Field(
        300.0, gt=0, description="Close a connection when no byte moved either way for this long."
    )


class UdpConfig(Model):
    """Per-flow sessions of a user-space UDP listener."""

    session_timeout: Duration = Field(
        30.0, gt=0, description="Forget a flow (client address and port) idle this long."
    )
    max_sessions: int = Field(
        16384, ge=1, description="Most flows per worker; when full the least recently active one is evicted."
    )


class KernelConfig(Model):
    """How a kernel data plane (nftables, IPVS) is set up."""

    table: str | None = Field(
        None, description="nftables table name; default pyvs_ plus the listener name."
    )
    masquerade: bool = Field(
        True, description="Rewrite the client source to the balancer's address so replies come back through it."
    )
    seed: int = Field(
        0x5EED, ge=0, le=0xFFFFFFFF, description="jhash seed for source hashing in nftables (same seed, same mapping)."
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None and not _nft_name(v):
            raise ValueError(f"expected letters, digits and _ (at most 64, starting with a letter), got {v!r}")
        return v


def _nft_name(name: str) -> bool:
    return 0 < len(name) <= 64 and name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)


def default_table(listener_name: str) -> str:
    """``pyvs_`` + the listener name with anything nft would reject turned into ``_``."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in listener_name)
    return ("pyvs_" + safe)[:64]


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def check_l4(cfg: Config) -> list[str]:
    """Rules that join a listener to its backend or to the machine: one ``"path: reason"``
    per problem (listeners whose backend does not exist are left to the reference check)."""
    errors: list[str] = []
    backends = {b.name: (k, b) for k, b in enumerate(cfg.backends)}
    for i, lst in enumerate(cfg.listeners):
        if lst.mode == "http" or lst.dataplane == "userspace" or lst.backend not in backends:
            continue
        where = f"listeners[{i}]"
        k, backend = backends[lst.backend]
        for addr in lst.bind:
            host, port = parse_address(addr)
            if not _is_ipv4(host) or host == "0.0.0.0" or port == 0:
                errors.append(f"{where}.bind: the {lst.dataplane} data plane needs the virtual IPv4 address "
                              f"itself and a fixed port, got {addr}")
        for j, s in enumerate(backend.servers):
            host, _ = parse_address(s.address)
            if not _is_ipv4(host):
                errors.append(f"backends[{k}].servers[{j}].address: the {lst.dataplane} data plane of "
                              f"listener {lst.name!r} needs an IPv4 address, got {s.address}")
        table = NFT_ALGORITHMS if lst.dataplane == "nftables" else IPVS_ALGORITHMS
        if backend.balance not in table:
            errors.append(f"{where}.dataplane: {lst.dataplane} cannot run balance {backend.balance!r} of "
                          f"backend {backend.name!r}; it can run: {', '.join(sorted(table))}")
        if lst.dataplane == "ipvs" and lst.kernel.masquerade:
            errors.append(f"{where}.kernel.masquerade: the ipvs data plane is LVS-NAT: set it to false and "
                          f"route the servers' replies through this host (docs/layer4.md)")
        if lst.dataplane == "ipvs":
            from pyvs.l4.ipvs import kernel_problem

            problem = kernel_problem()
        else:
            from pyvs.l4.nftables import tool_problem

            problem = tool_problem()
        if problem:
            errors.append(f"{where}.dataplane: {problem}")
    return errors
