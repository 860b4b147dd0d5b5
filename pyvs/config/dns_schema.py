"""Configuration of ``mode: dns`` listeners: zones, records, regions and GSLB sites.

A dns listener answers authoritatively for its zones (docs/dns.md). Two kinds of
records: *static* ones (``type`` + ``value``: SOA, NS, CNAME, TXT, MX, SRV, A, AAAA)
and *balanced* ones, whose A/AAAA answers come from a backend's healthy servers
(``pool``) or from the nearest up GSLB site (``sites``). Cross-references (pools,
sites, regions) are checked by :func:`check_dns` against the whole config so that an
error names the key that is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration

StaticType = Literal["A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "PTR", "CAA"]
Policy = Literal["all", "best", "weighted", "subnet", "failover"]

_LABEL = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")


def check_name(value: str, *, relative: bool) -> str:
    """A domain name: labels of letters, digits, ``-`` and ``_`` (``*`` as the first
    label of a wildcard). ``@`` is the zone apex for relative names."""
    if relative and value == "@":
        return value
    text = value[:-1] if value.endswith(".") else value
    if not text:
        raise ValueError("the name is empty (use @ for the zone apex)")
    if len(text) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")
    labels = text.split(".")
    for i, label in enumerate(labels):
        if not _LABEL.match(label) or (label == "*" and i != 0):
            raise ValueError(f"{value!r}: {label!r} is not a valid label ('*' only as the first label)")
    return value


class SoaConfig(Model):
    """The zone's SOA record; every negative answer carries it in the authority section."""

    mname: str | None = Field(None, description="Primary name server; default ns1.<zone>.")
    rname: str | None = Field(None, description="Responsible mailbox as a name; default hostmaster.<zone>.")
    serial: int = Field(1, ge=0, le=2**32 - 1, description="Zone serial number.")
    refresh: Duration = Field(3600.0, gt=0, description="SOA refresh.")
    retry: Duration = Field(600.0, gt=0, description="SOA retry.")
    expire: Duration = Field(604800.0, gt=0, description="SOA expire.")
    minimum: Duration = Field(
        30.0, ge=0, description="Negative-caching TTL (RFC 2308): how long resolvers remember NXDOMAIN/NODATA."
    )


class DnsRecord(Model):
    """One name of a zone: a static record, or A/AAAA answers balanced over a pool or sites."""

    name: str = Field(description="Name relative to the zone (`www`, `a.b`), `@` for the apex, `*.app` wildcards.")
    type: StaticType | None = Field(None, description="Static record type; absent for pool/sites records.")
    value: str | list[str] | None = Field(
        None, description="Static record data in zone-file form, e.g. `10 mx.example.com.`; a list for several."
    )
    pool: str | None = Field(None, description="Backend whose healthy servers' IPs are the A/AAAA answers.")
    sites: list[str] | None = Field(
        None, description="GSLB: names of `dns.sites`; the client's nearest up site answers (its addresses)."
    )
    policy: Policy = Field(
        "all",
        description=(
            "Pool records: all (every healthy server, rotated), best (the `count` highest weights), weighted "
            "(weighted random), subnet (servers of the client's region, see `regions`), failover (first healthy "
            "in order, backups last)."
        ),
    )
    count: int = Field(
        0, ge=0, le=64, description="Addresses per answer (best, weighted, failover); 0 = the policy's default (1)."
    )
    regions: dict[str, list[str]] = Field(
        default_factory=dict, description="policy subnet: region name -> server names of the pool serving it."
    )
    ttl: Duration | None = Field(None, ge=0, description="TTL of this name; default the zone's ttl.")
    degraded_ttl: Duration | None = Field(
        None, ge=0, description="TTL while the pool (or site) is degraded; default the zone's degraded_ttl."
    )
    all_down: Literal["last_good", "fallback"] = Field(
        "last_good",
        description="When no server is healthy: answer the last healthy set (last_good), or the `fallback` pool.",
    )
    fallback: str | None = Field(None, description="Backend answered when every server of `pool` is down.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v.endswith("."):
            raise ValueError("record names are relative to the zone: write 'www', not 'www.example.com.'")
        return check_name(v, relative=True)

    @model_validator(mode="after")
    def _kind(self) -> DnsRecord:
        kinds = [k for k, v in (("type", self.type), ("pool", self.pool), ("sites", self.sites)) if v is not None]
        if len(kinds) != 1:
            raise ValueError("a record has exactly one of type (static), pool or sites")
        if self.type is not None:
            if self.value is None or self.value == []:
                raise ValueError(f"a {self.type} record needs a value")
            if self.type == "CNAME" and isinstance(self.value, list) and len(self.value) > 1:
                raise ValueError("a CNAME record has one value")
            if self.policy != "all" or self.count or self.regions or self.fallback:
                raise ValueError("policy, count, regions and fallback are for pool records")
            from pyvs.dns.zone import parse_rdata  # dnspython checks the data now, at `pyvs check`

            for item in self.values():
                try:
                    parse_rdata(self.type, item)
                except ValueError as exc:
                    raise ValueError(f"value {item!r}: {exc}") from None
            return self
        if self.value is not None:
            raise ValueError("value is for static records (with type)")
        if self.sites is not None:
            if not self.sites:
                raise ValueError("sites must name at least one site")
            if self.policy != "all" or self.count or self.regions or self.fallback:
                raise ValueError("a sites record chooses by region; policy, count, regions and fallback are for pools")
            return self
        if self.policy == "subnet" and not self.regions:
            raise ValueError("policy subnet needs regions: {region: [server, ...]}")
        if self.regions and self.policy != "subnet":
            raise ValueError("regions is for policy subnet")
        if self.all_down == "fallback" and self.fallback is None:
            raise ValueError("all_down: fallback needs a fallback backend")
        return self

    def values(self) -> list[str]:
        """The static data as a list."""
        if self.value is None:
            return []
        return [self.value] if isinstance(self.value, str) else list(self.value)


class DnsZone(Model):
    """A zone pyvs answers for authoritatively."""

    name: str = Field(description="Zone apex, e.g. example.com.")
    ttl: Duration = Field(30.0, ge=0, description="Default TTL of the zone's records.")
    degraded_ttl: Duration = Field(
        5.0, ge=0, description="TTL of balanced answers while their pool or site is degraded (some servers down)."
    )
    soa: SoaConfig = Field(default_factory=SoaConfig, description="The SOA record.")
    ns: list[str] = Field(
        default_factory=list, description="Apex NS names (absolute); default the SOA's mname."
    )
    records: list[DnsRecord] = Field(default_factory=list, description="The zone's names.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_name(v, relative=False)
        if "*" in v:
            raise ValueError("a zone name has no wildcard")
        return v.rstrip(".").lower() + "."

    @field_validator("ns")
    @classmethod
    def _ns(cls, v: list[str]) -> list[str]:
        for n in v:
            if not n.endswith("."):
                raise ValueError(f"NS names are absolute (end with a dot): {n!r}")
            check_name(n, relative=False)
        return v

    @model_validator(mode="after")
    def _records(self) -> DnsZone:
        seen: dict[tuple[str, str], int] = {}
        for i, r in enumerate(self.records):
            kind = r.type or "A/AAAA"
            key = (r.name.lower(), kind)
            if key in seen and kind in ("A/AAAA", "CNAME"):
                raise ValueError(f"records[{i}]: {r.name!r} {kind} is also records[{seen[key]}]")
            seen.setdefault(key, i)
        for i, r in enumerate(self.records):
            if r.type == "CNAME" and any(n == r.name.lower() and k != "CNAME" for n, k in seen):
                raise ValueError(f"records[{i}]: {r.name!r} has a CNAME and other records (RFC 1034 3.6.2)")
            if r.name == "@" and r.type == "CNAME":
                raise ValueError(f"records[{i}]: the zone apex cannot be a CNAME")
            if r.type == "NS" and r.name != "@":
                raise ValueError(f"records[{i}]: NS below the apex would delegate {r.name!r}; "
                                 "delegations are not supported")
        return self


class GslbSite(Model):
    """A site (data centre) of global balancing: where it is, what it answers, how its health is known."""

    name: str = Field(description="Unique site name.")
    region: str | None = Field(None, description="Region (of `dns.regions`) whose clients this site serves first.")
    addresses: list[str] = Field(
        default_factory=list, description="IPs answered for the site (its VIPs); default the pool's healthy servers."
    )
    pool: str | None = Field(None, description="Local backend whose health decides (and without addresses, answers).")
    status_url: str | None = Field(
        None, description="Remote pyvs admin `/status` URL, polled to learn the health of `backend` there."
    )
    backend: str | None = Field(None, description="Backend name at the remote pyvs (with status_url).")
    token_file: str | None = Field(None, description="Bearer token file for the remote admin API.")
    interval: Duration = Field(2.0, gt=0, description="How often status_url is polled.")
    timeout: Duration = Field(1.0, gt=0, description="A poll not answered in this time counts as down.")
    fall: int = Field(2, ge=1, description="Failed polls in a row before a remote site counts as down.")
    min_up: int = Field(1, ge=1, description="Servers that must be up for the site to be up.")

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"expected an IP address, got {a!r}") from None
        return v

    @model_validator(mode="after")
    def _source(self) -> GslbSite:
        if self.pool is not None and self.status_url is not None:
            raise ValueError("a site's health comes from pool (local checks) or status_url (remote), not both")
        if self.status_url is not None:
            if not self.status_url.startswith(("http://", "https://")):
                raise ValueError("status_url must be an http:// or https:// URL")
            if self.backend is None:
                raise ValueError("status_url needs backend: the backend's name at the remote pyvs")
            if not self.addresses:
                raise ValueError("a remote site needs addresses (its VIPs)")
        elif self.backend is not None:
            raise ValueError("backend is the remote backend's name; it goes with status_url")
        if self.pool is None and self.status_url is None and not self.addresses:
            raise ValueError("a site needs a pool, or addresses (a static site, always up)")
        return self


class DnsOptions(Model):
    """Listener-wide DNS settings: client regions, GSLB sites, limits."""

    regions: dict[str, str] = Field(
        default_factory=dict,
        description="Client CIDR -> region name; EDNS Client Subnet first, else the resolver's address.",
    )
    sites: list[GslbSite] = Field(default_factory=list, description="GSLB sites that `sites` records choose among.")
    udp_payload: int = Field(
        1232, ge=512, le=4096, description="Largest UDP answer with EDNS(0) (also what pyvs advertises)."
    )
    tcp_idle: Duration = Field(10.0, gt=0, description="A DNS-over-TCP connection idle this long is closed.")
    cache_size: int = Field(
        10000, ge=0, description="Answers computed for names not precomputed (wildcards, NXDOMAIN) kept per worker."
    )

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: dict[str, str]) -> dict[str, str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"expected a CIDR like 10.0.0.0/8, got {cidr!r}") from None
        return v

    @field_validator("sites")
    @classmethod
    def _unique(cls, v: list[GslbSite]) -> list[GslbSite]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site name {dup[0]!r} is used twice")
        return v


def check_dns(zones: list[DnsZone], options: DnsOptions, backends: dict[str, list[str]]) -> list[str]:
    """Cross-references of one dns listener, as ``path: reason`` below the listener:
    pools and fallbacks name backends, sites name sites, subnet regions name servers."""
    errors: list[str] = []
    sites = {s.name for s in options.sites}
    regions = set(options.regions.values())
    for j, s in enumerate(options.sites):
        if s.pool is not None and s.pool not in backends:
            errors.append(f"dns.sites[{j}].pool: no backend named {s.pool!r}")
        if s.region is not None and s.region not in regions:
            errors.append(f"dns.sites[{j}].region: {s.region!r} is not a region of dns.regions")
    apexes = [z.name for z in zones]
    for n in sorted({n for n in apexes if apexes.count(n) > 1}):
        errors.append(f"zones: zone {n!r} is listed twice")
    for i, z in enumerate(zones):
        for k, r in enumerate(z.records):
            where = f"zones[{i}].records[{k}]"
            for key, name in (("pool", r.pool), ("fallback", r.fallback)):
                if name is not None and name not in backends:
                    errors.append(f"{where}.{key}: no backend named {name!r}")
            for name in r.sites or ():
                if name not in sites:
                    errors.append(f"{where}.sites: no site named {name!r} in dns.sites")
            for region, servers in r.regions.items():
                if region not in regions:
                    errors.append(f"{where}.regions: {region!r} is not a region of dns.regions")
                for sv in servers:
                    if r.pool in backends and sv not in backends[r.pool]:
                        errors.append(f"{where}.regions.{region}: backend {r.pool!r} has no server {sv!r}")
    return errors
