"""Kernel data planes of one pyvs instance, owned by the supervisor.

The workers never see traffic of a ``dataplane: nftables`` or ``dataplane: ipvs``
listener: the kernel forwards it. What such a listener needs is programming, once
per pyvs instance (not once per worker), at start, whenever a server's eligibility
or weight changes, and removal at exit. :class:`KernelDataPlanes` does that for
every kernel listener of a config:

* :meth:`KernelDataPlanes.start` -- write each listener's table / services;
* :meth:`KernelDataPlanes.set_servers` -- health checks and runtime actions call it
  with a backend's eligible servers and their effective weights; every kernel
  listener on that backend rewrites its balancing decision.
  :meth:`KernelDataPlanes.on_server_message` takes the health manager's
  ``{"type": "server", ...}`` message (the one broadcast to workers) instead;
* :meth:`KernelDataPlanes.statistics` -- the kernel's counters, for ``/status``;
* :meth:`KernelDataPlanes.stop` -- remove what :meth:`start` created, and only that.

:func:`weights_from_targets` turns a scheduler's targets into the mapping
``set_servers`` takes, for callers that keep health state in schedulers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from pyvs.balance.base import Target
from pyvs.balance.slowstart import WEIGHT_SCALE
from pyvs.config.l4_schema import NFT_ALGORITHMS, default_table
from pyvs.config.schema import Backend, Config, Listener, parse_address
from pyvs.l4.ipvs import IpvsDataPlane
from pyvs.l4.nftables import KernelServer, NftDataPlane, NftError, NftPlan, NftRunner

log = logging.getLogger("pyvs.l4.kernel")


class KernelDataPlaneError(RuntimeError):
    """A kernel data plane could not be set up; the message says which and why."""


class DataPlane(Protocol):
    listener: str
    backend: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def set_servers(self, weights: Mapping[str, int]) -> None: ...

    def statistics(self) -> dict[str, Any]: ...


def kernel_servers(backend: Backend) -> tuple[KernelServer, ...]:
    out = []
    for s in backend.servers:
        host, port = parse_address(s.address)
        out.append(KernelServer(s.name, host, port, s.weight, s.backup))
    return tuple(out)


def nft_plan(lst: Listener, backend: Backend) -> NftPlan:
    """The nftables plan of a listener (validated config: IPv4 literals, known algorithm)."""
    algorithm = NFT_ALGORITHMS[backend.balance]
    mode = "jhash" if algorithm.startswith("jhash") else algorithm.split()[1]
    return NftPlan(
        table=lst.kernel.table or default_table(lst.name),
        protocol=lst.mode,
        vips=tuple(parse_address(a) for a in lst.bind),
        servers=kernel_servers(backend),
        algorithm=mode,
        consistent=backend.hash_type != "map",
        masquerade=lst.kernel.masquerade,
        seed=lst.kernel.seed,
    )


def weights_from_targets(targets: Iterable[Target]) -> dict[str, int]:
    """Eligible servers and their effective weights, from a scheduler's targets."""
    return {t.name: t.weight for t in targets if t.eligible}


class KernelDataPlanes:
    """Every kernel data plane of a config; see the module docstring."""

    def __init__(self, cfg: Config, *, nft: NftRunner | None = None,
                 ipvs_factory: Callable[[], Any] | None = None) -> None:
        backends = {b.name: b for b in cfg.backends}
        self.planes: list[DataPlane] = []
        for lst in cfg.listeners:
            if lst.mode == "http" or lst.dataplane == "userspace":
                continue
            backend = backends[lst.backend or ""]
            if lst.dataplane == "nftables":
                self.planes.append(NftDataPlane(lst.name, backend.name, nft_plan(lst, backend), nft))
            else:
                self.planes.append(IpvsDataPlane(
                    lst.name, backend.name, backend.balance, lst.mode,
                    [parse_address(a) for a in lst.bind], kernel_servers(backend), ipvs_factory,
                ))
        self.started: list[DataPlane] = []
        self._nft = nft
        self._ipvs_factory = ipvs_factory
        # For on_server_message: config weights, and the last (eligible, weight) health sent.
        self._config_weights = {b.name: {s.name: s.weight for s in b.servers} for b in cfg.backends}
        self._state: dict[str, dict[str, tuple[bool, int]]] = {}

    def start(self) -> None:
        """Program every plane; on a failure, undo the ones already programmed."""
        for plane in self.planes:
            try:
                plane.start()
            except Exception as exc:
                self.stop()
                raise KernelDataPlaneError(f"listener {plane.listener!r}: {exc}") from None
            self.started.append(plane)
        if self.planes:
            _warn_if_not_forwarding()

    def set_servers(self, backend: str, weights: Mapping[str, int]) -> None:
        """``weights``: eligible server name -> effective weight (others take nothing new)."""
        for plane in self.planes:
            if plane.backend == backend:
                try:
                    plane.set_servers(weights)
                except Exception as exc:
                    log.error("listener %s: cannot update the kernel data plane: %s", plane.listener, exc)

    def on_server_message(self, msg: Mapping[str, Any]) -> None:
        """Apply a health manager message ``{"type": "server", "backend", "server",
        "eligible", "weight"}`` (the one broadcast to workers) to the kernel."""
        if msg.get("type") != "server":
            return
        backend = str(msg["backend"])
        if not any(p.backend == backend for p in self.planes):
            return
        state = self._state.setdefault(backend, {})
        state[str(msg["server"])] = (bool(msg["eligible"]), int(msg["weight"]))
        self.set_servers(backend, self._weights(backend))

    def _weights(self, backend: str) -> dict[str, int]:
        """Eligible weights of ``backend``: config weights overridden by what health said
        (health sends weights scaled by ``WEIGHT_SCALE``; only proportions matter here)."""
        state = self._state.get(backend, {})
        weights: dict[str, int] = {}
        for name, weight in self._config_weights[backend].items():
            eligible, w = state.get(name, (True, weight * WEIGHT_SCALE))
            if eligible:
                weights[name] = w
        return weights

    def statistics(self) -> list[dict[str, Any]]:
        out = []
        for plane in self.started:
            try:
                out.append(plane.statistics())
            except (NftError, OSError, ValueError) as exc:
                out.append({"listener": plane.listener, "error": str(exc)})
        return out

    def replace(self, cfg: Config) -> list[str]:
        """Make the kernel serve ``cfg`` (a reload): planes whose listener is unchanged
        stay as they are; an nftables table that changed is replaced in one nft
        transaction (delete and re-create in one batch: a packet sees the old table or
        the new one, never neither); IPVS services that changed are replaced service by
        service; removed listeners are removed and new ones programmed. Returns one
        note per listener changed. Raises KernelDataPlaneError naming the listener
        when the kernel refuses (what was applied before stays)."""
        new = KernelDataPlanes(cfg, nft=self._nft, ipvs_factory=self._ipvs_factory)
        old = {p.listener: p for p in self.started}
        notes: list[str] = []
        kept: list[DataPlane] = []
        for plane in new.planes:
            before = old.pop(plane.listener, None)
            try:
                if before is not None and _same(before, plane):
                    kept.append(before)
                    continue
                if isinstance(before, NftDataPlane) and isinstance(plane, NftDataPlane) \
                        and before.plan.table == plane.plan.table:
                    plane.weights = {k: v for k, v in before.weights.items() if k in plane.weights} | {
                        k: v for k, v in plane.weights.items() if k not in before.weights}
                    plane.replace_table()
                    notes.append(f"listener {plane.listener!r}: nftables table {plane.plan.table} replaced")
                else:
                    if before is not None:
                        before.stop()
                    plane.start()
                    notes.append(f"listener {plane.listener!r}: kernel data plane "
                                 f"{'replaced' if before is not None else 'added'}")
            except Exception as exc:
                self.started = kept + list(old.values())  # what is programmed now
                raise KernelDataPlaneError(f"listener {plane.listener!r}: {exc}") from None
            kept.append(plane)
        for gone in old.values():
            try:
                gone.stop()
                notes.append(f"listener {gone.listener!r}: kernel data plane removed")
            except Exception as exc:
                log.error("listener %s: could not remove its kernel data plane: %s", gone.listener, exc)
        self.planes = kept
        self.started = list(kept)
        self._config_weights = new._config_weights
        self._state = {b: st for b, st in self._state.items() if b in self._config_weights}
        if kept:
            _warn_if_not_forwarding()
        return notes

    def stop(self) -> None:
        """Remove every table / service this instance created (and nothing else)."""
        while self.started:
            plane = self.started.pop()
            try:
                plane.stop()
            except Exception as exc:
                log.error("listener %s: could not remove its kernel data plane: %s", plane.listener, exc)


def _same(a: DataPlane, b: DataPlane) -> bool:
    """Do two planes program the kernel the same way (a reload may keep ``a``)?"""
    if isinstance(a, NftDataPlane) and isinstance(b, NftDataPlane):
        return a.plan == b.plan and a.backend == b.backend
    if isinstance(a, IpvsDataPlane) and isinstance(b, IpvsDataPlane):
        return a.signature() == b.signature()
    return False


def _warn_if_not_forwarding() -> None:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            forwarding = f.read().strip() == "1"
    except OSError:
        return
    if not forwarding:
        log.warning("net.ipv4.ip_forward is 0: the kernel data plane reaches servers on other hosts only "
                    "when forwarding is on (sysctl -w net.ipv4.ip_forward=1)")


def start_kernel_dataplanes(cfg: Config) -> KernelDataPlanes:
    """The supervisor's entry point: program the kernel or exit with a clear message."""
    planes = KernelDataPlanes(cfg)
    try:
        planes.start()
    except KernelDataPlaneError as exc:
        raise SystemExit(f"pyvs: kernel data plane: {exc}") from None
    return planes

