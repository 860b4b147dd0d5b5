"""Answer policies: which addresses a balanced name answers, given health and region.

Theory of operation
-------------------
A balanced record names a pool (a backend) or GSLB sites. :func:`address_sets` turns
the current health picture (:class:`HealthView`) into a :class:`Choice`: one or more
*variants* (address lists; the responder picks one per query), how to pick among them
(rotate, weighted random, fixed) and whether the pool is *degraded* (some server down:
the answer gets the short TTL). It runs when health, weights or site state change --
never per query -- and is pure: no sockets, no clock, no randomness.

Policies of pool records (per address family, so A and AAAA are balanced apart):

* ``all`` -- every eligible server; one variant per rotation, picked round-robin, so
  resolvers that take the first address spread the load.
* ``best`` -- the ``count`` (default 1) eligible servers of highest weight.
* ``weighted`` -- one variant per eligible server (that server first, then ``count-1``
  others by weight), chosen at random in proportion to the weights.
* ``subnet`` -- ``all`` over the servers of the client's region (``regions``), all
  eligible servers for a client of no region or a region whose servers are all down.
* ``failover`` -- the first ``count`` eligible servers in config order, backups last.

Backup servers answer only when no non-backup server is eligible. When nothing is
eligible the record's ``all_down`` applies: the last non-empty set (``last_good``,
kept by :class:`LastGood`; at start every configured server counts as good, as the
workers do before the first health message) or the ``fallback`` pool's eligible
servers. An empty answer because everything failed is never given.

A sites record orders the sites for a region (the region's own sites first, then
the others in the record's order) and answers the first site that is up: its
``addresses``, else its pool's eligible servers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from pyvs.config.dns_schema import DnsRecord, GslbSite


@dataclass(frozen=True)
class ServerView:
    """What DNS needs of one server: its IP and whether it may take traffic."""

    name: str
    ip: str
    family: int  # 4 or 6
    weight: int
    eligible: bool
    backup: bool


class HealthView(Protocol):
    """The health picture the policies read (the worker's backends and site poller)."""

    def servers(self, pool: str) -> list[ServerView]: ...

    def site_up(self, site: GslbSite) -> bool: ...


@dataclass(frozen=True)
class Choice:
    """The answer of one (record, family, region): variants and how to pick one."""

    variants: tuple[tuple[str, ...], ...]
    mode: str  # "rotate" | "weighted" | "fixed"
    weights: tuple[int, ...] = ()
    degraded: bool = False


def server_view(name: str, host: str, weight: int, eligible: bool, backup: bool) -> ServerView | None:
    """A :class:`ServerView`, or None for a server given by host name (DNS answers IPs)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ServerView(name, str(ip), ip.version, weight, eligible, backup)


class LastGood:
    """The last non-empty address set of each (record, family, region)."""

    def __init__(self) -> None:
        self.sets: dict[tuple[int, int, int], tuple[str, ...]] = {}

    def remember(self, key: tuple[int, int, int], addrs: tuple[str, ...]) -> None:
        if addrs:
            self.sets[key] = addrs

    def get(self, key: tuple[int, int, int]) -> tuple[str, ...]:
        return self.sets.get(key, ())


def _rotations(addrs: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(addrs[i:] + addrs[:i] for i in range(len(addrs))) or ((),)


def _usable(servers: list[ServerView]) -> tuple[list[ServerView], bool]:
    """Eligible servers (backups only when no primary is), and whether any primary is down."""
    primary = [s for s in servers if not s.backup]
    up = [s for s in primary if s.eligible and s.weight > 0]
    degraded = len(up) < len(primary)
    if not up:
        up = [s for s in servers if s.backup and s.eligible and s.weight > 0]
    return up, degraded


def pool_choice(rec: DnsRecord, servers: list[ServerView], region: str | None) -> tuple[Choice, list[ServerView]]:
    """The choice of a pool record for one family (``servers`` already filtered to it)
    and client region, and the servers it stands on (empty: nothing eligible)."""
    up, degraded = _usable(servers)
    if rec.policy == "subnet" and region is not None and region in rec.regions:
        names = set(rec.regions[region])
        mine = [s for s in up if s.name in names]
        if mine:
            up = mine
    if not up:
        return Choice(((),), "fixed", degraded=True), []
    ips = tuple(s.ip for s in up)
    if rec.policy in ("all", "subnet"):
        return Choice(_rotations(ips), "rotate", degraded=degraded), up
    count = rec.count or 1
    if rec.policy == "best":
        ranked = sorted(range(len(up)), key=lambda i: (-up[i].weight, i))[:count]
        best = tuple(up[i].ip for i in ranked)
        return Choice(_rotations(best), "rotate", degraded=degraded), up
    if rec.policy == "failover":
        return Choice((ips[:count],), "fixed", degraded=degraded), up
    # weighted: one variant per server, that server first
    by_weight = sorted(range(len(up)), key=lambda i: (-up[i].weight, i))
    variants = []
    for i in range(len(up)):
        rest = [up[j].ip for j in by_weight if j != i][: count - 1]
        variants.append((up[i].ip, *rest))
    return Choice(tuple(variants), "weighted", tuple(s.weight for s in up), degraded), up


def fixed(addrs: tuple[str, ...], degraded: bool) -> Choice:
    return Choice(_rotations(addrs), "rotate", degraded=degraded)


def site_order(sites: list[GslbSite], region: str | None) -> list[GslbSite]:
    """The sites in the order a client of ``region`` tries them: its region's first."""
    own = [s for s in sites if region is not None and s.region == region]
    return own + [s for s in sites if s not in own]


def site_addresses(site: GslbSite, view: HealthView, family: int) -> tuple[str, ...]:
    """What an up site answers for ``family``: its addresses, else its pool's eligible servers."""
    if site.addresses:
        return tuple(a for a in site.addresses if ipaddress.ip_address(a).version == family)
    if site.pool is None:
        return ()
    up, _ = _usable([s for s in view.servers(site.pool) if s.family == family])
    return tuple(s.ip for s in up)


def sites_choice(sites: list[GslbSite], view: HealthView, family: int, region: str | None) -> tuple[Choice, bool]:
    """The answer of a sites record: the first up site for ``region`` with addresses of
    ``family``. Degraded when that is not the region's first choice. The bool says
    whether any site answered (False: the caller applies last_good)."""
    order = site_order(sites, region)
    for rank, site in enumerate(order):
        if not view.site_up(site):
            continue
        addrs = site_addresses(site, view, family)
        if addrs:
            return fixed(addrs, rank > 0), True
    return Choice(((),), "fixed", degraded=True), False


def site_is_up(site: GslbSite, view: HealthView) -> bool:
    """A local site is up when at least ``min_up`` of its pool's servers are eligible;
    a static site (addresses only) always is. Remote sites are the poller's business."""
    if site.pool is None:
        return True
    return sum(1 for s in view.servers(site.pool) if s.eligible and s.weight > 0) >= site.min_up
