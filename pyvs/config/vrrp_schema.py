"""The ``vrrp:`` section: VRRP instances that float virtual IPs between pyvs nodes.

Kept apart from :mod:`pyvs.config.schema` (which imports it; both build on
:mod:`pyvs.config.schema_base`, so there is no import cycle) so that the VRRP rules (interval ranges per
protocol version, one address family per instance, v2-only authentication) sit beside
the fields they constrain. Cross-references to backends and listeners of the same file
are checked by :data:`VrrpInstances`, which sees the already-validated sections through
pydantic's ``ValidationInfo`` (``vrrp`` is declared after them in ``Config``).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrackInterface(Model):
    """An interface whose link state changes the priority (or faults the instance)."""

    name: str = Field(description="Interface name, e.g. eth1.")
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description=(
            "0: the instance goes to FAULT while the link is down; negative: added to the priority "
            "while the link is down; positive: added while it is up."
        ),
    )


class TrackScript(Model):
    """A command run periodically; exit status 0 means healthy (keepalived's track_script)."""

    command: str = Field(description="Command line (split like a shell would, not run through a shell).")
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description="0: FAULT while failing; negative: added while failing; positive: added while succeeding.",
    )
    interval: Duration = Field(2.0, gt=0, description="Time between two runs.")
    timeout: Duration = Field(2.0, gt=0, description="A run that takes longer counts as a failure.")
    rise: int = Field(1, ge=1, le=100, description="Successes in a row before a failing script counts as healthy.")
    fall: int = Field(1, ge=1, le=100, description="Failures in a row before a healthy script counts as failing.")


class TrackBackend(Model):
    """A backend of this file: failing while none of its servers accepts a connection."""

    name: str = Field(description="Backend name (must exist under `backends`).")
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description="0: FAULT while no server is up; negative: added while no server is up; positive: while one is.",
    )


class TrackListener(Model):
    """pyvs's own data path: failing while the listener stops answering HTTP."""

    name: str = Field(description="Listener name (must exist under `listeners`).")
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description="0: FAULT while it does not answer; negative: added while it does not; positive: while it does.",
    )


class TrackConfig(Model):
    """What else decides whether this node should hold the virtual IPs."""

    interfaces: list[TrackInterface] = Field(default_factory=list, description="Tracked interfaces.")
    scripts: list[TrackScript] = Field(default_factory=list, description="Tracked commands.")
    backends: list[TrackBackend] = Field(default_factory=list, description="Tracked backends.")
    listeners: list[TrackListener] = Field(default_factory=list, description="Tracked pyvs listeners.")
    interval: Duration = Field(1.0, gt=0, description="Time between two probes of a backend or listener.")
    timeout: Duration = Field(1.0, gt=0, description="A probe of a backend or listener that takes longer fails.")
    rise: int = Field(2, ge=1, le=100, description="Probe successes in a row before a backend/listener is up.")
    fall: int = Field(2, ge=1, le=100, description="Probe failures in a row before a backend/listener is down.")


class VrrpInstance(Model):
    """One virtual router: a VRID on an interface and the virtual IPs it floats."""

    name: str = Field(description="Unique instance name (logs, notify, /status).")
    interface: str = Field(description="Interface the adverts are sent and received on, and the VIPs added to.")
    vrid: int = Field(ge=1, le=255, description="Virtual router ID, the same on every node of this router.")
    priority: int = Field(
        100, ge=1, le=255, description="Election priority; higher wins; 255 means the owner of the addresses."
    )
    advert_interval: Duration = Field(
        1.0,
        description="Time between adverts of the master; v3: 10ms-40.95s in 10ms steps; v2: whole seconds 1-255.",
    )
    version: Literal[2, 3] = Field(3, description="VRRP version: 3 (RFC 5798, IPv4 and IPv6) or 2 (RFC 3768, IPv4).")
    preempt: bool = Field(True, description="A higher-priority backup takes over from a lower-priority master.")
    nopreempt: bool = Field(False, description="keepalived's spelling of `preempt: false`.")
    preempt_delay: Duration = Field(
        0.0, ge=0, le=1000, description="After start (or a fault) do not preempt for this long."
    )
    unicast_peers: list[str] = Field(
        default_factory=list, description="Peer addresses to send adverts to; empty means multicast."
    )
    source_address: str | None = Field(
        None, description="Address the adverts are sent from; default: the interface's first (link-local) address."
    )
    virtual_ips: list[str] = Field(
        min_length=1, max_length=255, description="Virtual addresses with prefix, e.g. 10.0.0.100/24; one family."
    )
    auth_pass: str | None = Field(
        None, min_length=1, max_length=8, description="VRRPv2 simple password (interop with keepalived PASS)."
    )
    garp_repeat: int = Field(
        3, ge=1, le=100, description="Gratuitous ARPs / neighbour adverts sent per VIP on becoming master."
    )
    garp_interval: Duration = Field(1.0, gt=0, description="Time between those repeats (the first goes at once).")
    notify: str | None = Field(
        None, description="Command run on each state change, with arguments: instance, old state, new state."
    )
    track: TrackConfig = Field(default_factory=TrackConfig, description="Tracked interfaces, scripts and services.")

    @field_validator("virtual_ips")
    @classmethod
    def _vips(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            try:
                iface = ipaddress.ip_interface(item)
            except ValueError:
                raise ValueError(f"expected an address with prefix like 10.0.0.100/24, got {item!r}") from None
            out.append(str(iface))
        if len({ipaddress.ip_interface(x).version for x in out}) > 1:
            raise ValueError("mixes IPv4 and IPv6; use one instance per address family")
        if len({ipaddress.ip_interface(x).ip for x in out}) != len(out):
            raise ValueError("lists an address twice")
        return out

    @field_validator("unicast_peers")
    @classmethod
    def _peers(cls, v: list[str]) -> list[str]:
        return [str(_ip(p)) for p in v]

    @field_validator("source_address")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        return None if v is None else str(_ip(v))

    @field_validator("auth_pass")
    @classmethod
    def _ascii(cls, v: str | None) -> str | None:
        if v is not None and not v.isascii():
            raise ValueError("must be ASCII (it is sent as 8 bytes)")
        return v

    @model_validator(mode="after")
    def _rules(self) -> VrrpInstance:
        family = self.family
        if self.version == 2:
            if family == 6:
                raise ValueError("VRRP version 2 is IPv4 only; use version 3 for IPv6 virtual_ips")
            secs = self.advert_interval
            if secs != int(secs) or not 1 <= secs <= 255:
                raise ValueError(f"advert_interval must be whole seconds 1s-255s with version 2, got {secs:g}s")
        else:
            cs = round(self.advert_interval * 100)
            if abs(cs - self.advert_interval * 100) > 1e-6 or not 1 <= cs <= 4095:
                raise ValueError(
                    f"advert_interval must be 10ms-40.95s in 10ms steps with version 3, got {self.advert_interval:g}s"
                )
            if self.auth_pass is not None:
                raise ValueError("auth_pass exists only in VRRP version 2 (RFC 5798 removed authentication)")
        for key, addr in [("unicast_peers", p) for p in self.unicast_peers] + [
            ("source_address", self.source_address)
        ]:
            if addr is not None and ipaddress.ip_address(addr).version != family:
                raise ValueError(f"{key}: {addr} is not of the virtual_ips' family (IPv{family})")
        if self.nopreempt and "preempt" in self.model_fields_set and self.preempt:
            raise ValueError("preempt: true and nopreempt: true contradict each other")
        return self

    @property
    def family(self) -> int:
        """4 or 6: the address family of the instance (all its VIPs share it)."""
        return ipaddress.ip_interface(self.virtual_ips[0]).version

    @property
    def preempts(self) -> bool:
        """Whether a higher-priority backup takes over (``preempt`` and not ``nopreempt``)."""
        return self.preempt and not self.nopreempt


def _ip(value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"expected an IP address, got {value!r}") from None


def _check_instances(v: list[VrrpInstance], info: ValidationInfo) -> list[VrrpInstance]:
    """Names unique, one (interface, VRID, family) per router, references resolve."""
    names = [i.name for i in v]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"name {dup[0]!r} is used twice")
    routers: dict[tuple[str, int, int], str] = {}
    for inst in v:
        key = (inst.interface, inst.vrid, inst.family)
        if key in routers:
            raise ValueError(
                f"instances {routers[key]!r} and {inst.name!r} both use vrid {inst.vrid} on {inst.interface}"
            )
        routers[key] = inst.name
    data: dict[str, Any] = info.data or {}  # None when validated outside Config (a TypeAdapter)
    backends = {b.name for b in data["backends"]} if "backends" in data else None
    listeners = {x.name for x in data["listeners"]} if "listeners" in data else None
    for inst in v:
        if backends is not None:
            for b in inst.track.backends:
                if b.name not in backends:
                    raise ValueError(f"instance {inst.name!r} tracks backend {b.name!r}, which does not exist")
        if listeners is not None:
            for lst in inst.track.listeners:
                if lst.name not in listeners:
                    raise ValueError(f"instance {inst.name!r} tracks listener {lst.name!r}, which does not exist")
    return v


VrrpInstances = Annotated[list[VrrpInstance], AfterValidator(_check_instances)]
"""The type of ``Config.vrrp``: a list of instances checked as a whole."""
