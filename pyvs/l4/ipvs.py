"""The IPVS data plane: LVS virtual services driven over generic netlink (pyroute2).

Theory of operation
-------------------
Where the kernel has IPVS (``CONFIG_IP_VS``, module ``ip_vs``), a ``dataplane: ipvs``
listener becomes one IPVS *service* per bind address (VIP, port, protocol, scheduler)
with one *destination* per server in the pool, forwarding method masquerade (NAT):
the LVS-NAT setup, in which the servers' replies must be routed back through this
host (their default route points at it). pyvs does not add source NAT here, so
``kernel.masquerade`` must be false (``pyvs check`` says so).

The pyvs algorithm maps to an IPVS scheduler (:data:`pyvs.config.l4_schema.IPVS_ALGORITHMS`):
``roundrobin`` -> ``wrr`` (``rr`` when every weight is equal), ``leastconn`` -> ``lc``,
``weighted-leastconn`` -> ``wlc``, ``source`` -> ``sh``, ``maglev`` -> ``mh`` and so on.
IPVS then balances in the kernel, per connection, with its own connection counts.

Health and weights (:meth:`IpvsDataPlane.set_servers`): a server that leaves the pool
is removed as a destination (its established connections stay until they end, as
IPVS keeps their entries), one that joins is added, a new weight is a ``set``.
:meth:`IpvsDataPlane.stop` deletes the services pyvs created and nothing else.

:func:`kernel_problem` is what ``pyvs check`` asks: it resolves the ``IPVS`` generic
netlink family (the kernel autoloads the module if it can) and reports a missing
IPVS as a sentence, not a traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyvs.config.l4_schema import IPVS_ALGORITHMS
from pyvs.l4.nftables import KernelServer, pool

log = logging.getLogger("pyvs.l4.ipvs")

IP_VS_CONN_F_MASQ = 0  # forwarding method: NAT
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class IpvsError(RuntimeError):
    """IPVS refused a change; the message names the service or destination."""


@functools.cache
def kernel_problem() -> str | None:
    """Why IPVS cannot be used here, or None when it can (or when only root can tell)."""
    try:
        from pyroute2 import IPVS  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
    except ImportError:
        return "the ipvs data plane needs the pyroute2 package (pip install pyroute2)"
    try:
        sock = IPVS()
    except NetlinkError as exc:
        return _explain(exc.code)
    except OSError as exc:
        return f"cannot open a netlink socket for IPVS: {exc}"
    try:
        sock.service("dump")
    except NetlinkError as exc:
        if exc.code in (errno.EPERM, errno.EACCES):
            return None  # IPVS exists; reading it needs CAP_NET_ADMIN, which `pyvs run` will have
        return _explain(exc.code)
    finally:
        sock.close()
    return None


def _explain(code: int) -> str:
    if code == errno.ENOENT:
        return ("this kernel has no IPVS (module ip_vs is not loaded and cannot be loaded, or "
                "CONFIG_IP_VS is off); use dataplane: nftables")
    return f"IPVS is not usable: {errno.errorcode.get(code, code)}"


def scheduler_name(balance: str, weights: Sequence[int]) -> str:
    """The IPVS scheduler for a pyvs algorithm (``rr`` for roundrobin with equal weights)."""
    name = IPVS_ALGORITHMS[balance]
    if name == "wrr" and len(set(weights)) <= 1:
        return "rr"
    return name


class IpvsDataPlane:
    """The IPVS services of one listener."""

    def __init__(self, listener: str, backend: str, balance: str, protocol: str,
                 vips: Sequence[tuple[str, int]], servers: Sequence[KernelServer],
                 factory: Callable[[], Any] | None = None) -> None:
        self.listener = listener
        self.backend = backend
        self.protocol = PROTOCOLS[protocol]
        self.vips = list(vips)
        self.servers = list(servers)
        self.sched = scheduler_name(balance, [s.weight for s in servers])
        self.weights: dict[str, int] = {s.name: s.weight for s in servers}
        self._factory = factory
        self._sock: Any = None
        self.installed: dict[str, int] = {}  # server name -> weight given to IPVS

    def signature(self) -> tuple[object, ...]:
        """What the services depend on (a reload keeps a plane whose signature is the same)."""
        return (self.listener, self.backend, self.protocol, tuple(self.vips), tuple(self.servers), self.sched)

    def _ipvs(self) -> Any:
        if self._sock is None:
            if self._factory is not None:
                self._sock = self._factory()
            else:
                from pyroute2 import IPVS

                self._sock = IPVS()
        return self._sock

    def _service(self, vip: tuple[str, int]) -> Any:
        from pyroute2 import IPVSService

        return IPVSService(addr=vip[0], port=vip[1], protocol=self.protocol, sched_name=self.sched)

    def _dest(self, server: KernelServer, weight: int) -> Any:
        from pyroute2 import IPVSDest

        return IPVSDest(addr=server.ip, port=server.port, weight=weight, fwd_method=IP_VS_CONN_F_MASQ)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return fn(*args, **kwargs)
        except NetlinkError as exc:
            raise IpvsError(f"ipvs: {what}: {errno.errorcode.get(exc.code, exc.code)}") from None

    def start(self) -> None:
        ipvs = self._ipvs()
        for vip in self.vips:
            svc = self._service(vip)
            # A service left behind by a crashed pyvs: replace it.
            try:
                ipvs.service("del", service=svc)
            except Exception:
                pass
            self._call(f"add service {vip[0]}:{vip[1]}", ipvs.service, "add", service=svc)
        self.installed = {}
        self._sync(self.weights)
        log.info("ipvs: %d service(s) for listener %s, scheduler %s", len(self.vips), self.listener, self.sched)

    def _sync(self, weights: Mapping[str, int]) -> None:
        ipvs = self._ipvs()
        want = {self.servers[i].name: w for i, w in pool(self.servers, weights)}
        by_name = {s.name: s for s in self.servers}
        for vip in self.vips:
            svc = self._service(vip)
            for name, w in want.items():
                s = by_name[name]
                if name not in self.installed:
                    self._call(f"add {name}", ipvs.dest, "add", service=svc, dest=self._dest(s, w))
                elif self.installed[name] != w:
                    self._call(f"set {name}", ipvs.dest, "set", service=svc, dest=self._dest(s, w))
            for name in sorted(set(self.installed) - set(want)):
                self._call(f"del {name}", ipvs.dest, "del", service=svc, dest=self._dest(by_name[name], 0))
        self.installed = dict(want)

    def set_servers(self, weights: Mapping[str, int]) -> None:
        """Eligible weights by server name (absent or 0: no new connections)."""
        self.weights = {s.name: int(weights.get(s.name, 0)) for s in self.servers}
        if self._sock is not None:
            self._sync(self.weights)

    def statistics(self) -> dict[str, Any]:
        servers = []
        stats: dict[tuple[str, int], dict[str, int]] = {}
        try:
            ipvs = self._ipvs()
            for vip in self.vips:
                for msg in ipvs.dest("dump", service=self._service(vip)):
                    attrs = msg.get("attrs") or []
                    d = dict(attrs[0][1]["attrs"]) if attrs else {}
                    key = (str(d.get("IPVS_DEST_ATTR_ADDR")), int(d.get("IPVS_DEST_ATTR_PORT", 0)))
                    st = dict(d.get("IPVS_DEST_ATTR_STATS", {}).get("attrs", []))
                    agg = stats.setdefault(key, {"conns": 0, "inbytes": 0, "outbytes": 0})
                    for k in agg:
                        agg[k] += int(st.get(f"IPVS_STATS_ATTR_{k.upper()}", 0))
        except Exception as exc:
            log.debug("ipvs statistics: %s", exc)
        for s in self.servers:
            st = stats.get((s.ip, s.port), {})
            servers.append({"name": s.name, "address": f"{s.ip}:{s.port}", "weight": self.weights.get(s.name, 0),
                            "connections": st.get("conns", 0), "bytes_to_server": st.get("inbytes", 0),
                            "bytes_from_server": st.get("outbytes", 0)})
        return {"listener": self.listener, "dataplane": "ipvs", "scheduler": self.sched,
                "backend": self.backend, "servers": servers}

    def stop(self) -> None:
        if self._sock is None:
            return
        for vip in self.vips:
            try:
                self._sock.service("del", service=self._service(vip))
            except Exception as exc:
                log.warning("ipvs: could not remove service %s:%d: %s", vip[0], vip[1], exc)
        self._sock.close()
        self._sock = None
        self.installed = {}
