"""The nftables data plane: the kernel DNATs a VIP:port to the servers (like LVS-NAT).

Theory of operation
-------------------
For each ``dataplane: nftables`` listener pyvs owns one table, ``ip <kernel.table>``
(default ``pyvs_<listener>``), and never reads or writes any other. The whole table
is written in one ``nft -j -f -`` transaction that first adds, then deletes, then
re-creates it, so a start (also after a crash that left the table behind) replaces
it atomically. Layout, for VIP ``V:P`` and servers ``S0..Sn``::

    chain prerouting  nat hook prerouting  : ip daddr V  tcp dport P  jump dispatch
    chain output      nat hook output      : (same, for clients on this host)
    chain dispatch                         : numgen inc mod W vmap { 0-2 : goto srv0, 3 : goto srv1 }
                                             counter name "no_server"; reject
    chain srv<i>                           : counter name "conn<i>"; dnat to Si
    chain postrouting nat hook postrouting : ct status dnat, ct original V:P -> masquerade
    chain acct        filter postrouting   : bytes to / from each server (ct reply tuple)
    chain acct_in     filter input         : bytes from each server to local clients

The ``dispatch`` rule is the balancing decision, made once per new connection (NAT
chains see only a connection's first packet; conntrack does the rest):

* ``numgen inc`` for round robin and ``numgen random`` for random, over the total
  weight ``W`` (weights divided by their gcd): each server owns ``weight`` of the
  values, interleaved in smooth round-robin order for ``inc``, as ranges for random;
* ``jhash ip saddr`` for source hashing. With ``hash_type: map`` the modulus is ``W``
  (any change of the pool remaps most clients); with ``consistent`` or ``maglev`` it
  is a fixed table of :data:`HASH_SLOTS` slots filled by weighted rendezvous hashing,
  so when a server leaves only its own clients move.

When health or weights change (:meth:`NftDataPlane.set_servers`), only ``dispatch``
is rewritten (flush + add in one transaction): counters survive, and established
connections keep their conntrack NAT binding. :meth:`NftDataPlane.statistics` reads
the named counters back for pyvs's stats. :meth:`NftDataPlane.stop` deletes the table.

Rule building (:func:`dispatch_rules`, :func:`table_ruleset`) is pure and unit-tested;
the only I/O is :class:`NftRunner`, a seam that tests point into a network namespace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pyvs.l4.nftables")

HASH_SLOTS = 1024
FAMILY = "ip"

Json = dict[str, Any]


class NftError(RuntimeError):
    """``nft`` failed; the message carries its stderr."""


def tool_problem() -> str | None:
    """Why this machine cannot run the nftables data plane, or None."""
    if shutil.which("nft") is None:
        return "the nftables data plane needs the nft command (apt-get install nftables)"
    return None


class NftRunner:
    """Runs ``nft``; ``prefix`` (e.g. ``ip netns exec NAME``) lets tests aim it elsewhere."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)

    def run(self, args: Sequence[str], stdin: str | None = None) -> str:
        argv = [*self.prefix, "nft", *args]
        try:
            out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f"cannot run {' '.join(argv)}: {exc}") from None
        if out.returncode != 0:
            raise NftError(f"{' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def apply(self, commands: list[Json]) -> None:
        """One atomic transaction."""
        self.run(["-j", "-f", "-"], json.dumps({"nftables": commands}))


@dataclass(frozen=True, slots=True)
class KernelServer:
    """A server as the kernel sees it: an IPv4 literal, a port and its config weight."""

    name: str
    ip: str
    port: int
    weight: int = 1
    backup: bool = False


@dataclass(frozen=True, slots=True)
class NftPlan:
    """Everything the ruleset of one listener depends on, except the live weights."""

    table: str
    protocol: str  # "tcp" | "udp"
    vips: tuple[tuple[str, int], ...]
    servers: tuple[KernelServer, ...]
    algorithm: str  # "inc" | "random" | "jhash"
    consistent: bool = False
    masquerade: bool = True
    seed: int = 0x5EED

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol must be tcp or udp, not {self.protocol!r}")
        if self.algorithm not in ("inc", "random", "jhash"):
            raise ValueError(f"unknown nftables algorithm {self.algorithm!r}")
        if not self.vips or not self.servers:
            raise ValueError("an nftables plan needs at least one VIP and one server")


def pool(servers: Sequence[KernelServer], weights: Mapping[str, int]) -> list[tuple[int, int]]:
    """(server index, weight) of the servers that take new connections: eligible
    primaries with weight > 0, or when there is none, eligible backups (the
    scheduler's pool rule, :mod:`pyvs.balance.base`)."""
    primaries = [(i, weights[s.name]) for i, s in enumerate(servers)
                 if not s.backup and weights.get(s.name, 0) > 0]
    if primaries:
        return primaries
    return [(i, weights[s.name]) for i, s in enumerate(servers) if s.backup and weights.get(s.name, 0) > 0]


def normalise(members: Sequence[tuple[int, int]], limit: int = HASH_SLOTS) -> list[tuple[int, int]]:
    """Smallest equivalent weights: divided by their gcd, then scaled down (each kept
    at least 1) while the total exceeds ``limit``. Health sends weights scaled for
    slow start (x256); the kernel map needs one entry per unit only up to a point."""
    g = 0
    for _, w in members:
        g = math.gcd(g, w)
    out = [(i, w // g) for i, w in members] if g else list(members)
    total = sum(w for _, w in out)
    if total > limit:
        out = [(i, max(1, w * limit // total)) for i, w in out]
    return out


def smooth_order(members: Sequence[tuple[int, int]]) -> list[int]:
    """One cycle of smooth weighted round robin (nginx's): weights 3:1 give
    a a b a, not a a a b, so ``numgen inc`` interleaves servers as pyvs's
    ``roundrobin`` does."""
    total = sum(w for _, w in members)
    current = [0] * len(members)
    order = []
    for _ in range(total):
        for k, (_, w) in enumerate(members):
            current[k] += w
        best = max(range(len(members)), key=lambda k: current[k])
        current[best] -= total
        order.append(members[best][0])
    return order


def _h64(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def slot_table(members: Sequence[tuple[int, int]], names: Sequence[str], slots: int = HASH_SLOTS) -> list[int]:
    """Weighted rendezvous hashing: for each slot the member with the highest
    ``-weight / ln(u)`` wins (``u`` uniform from a hash of slot and server *name*),
    so removing a member moves only the slots it held."""
    table = []
    for slot in range(slots):
        best, best_score = -1, -math.inf
        for index, weight in members:
            u = (_h64(names[index], slot) + 0.5) / 2**64
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = index, score
        table.append(best)
    return table


def _vmap_elements(owners: Sequence[int]) -> list[Any]:
    """Runs of equal owners -> ``[range, verdict]`` elements (``[n, verdict]`` for one)."""
    elems: list[Any] = []
    start = 0
    for pos in range(1, len(owners) + 1):
        if pos == len(owners) or owners[pos] != owners[start]:
            key: Any = start if pos - 1 == start else {"range": [start, pos - 1]}
            elems.append([key, {"goto": {"target": f"srv{owners[start]}"}}])
            start = pos
    return elems


def dispatch_rules(plan: NftPlan, weights: Mapping[str, int]) -> list[list[Json]]:
    """The expressions of the ``dispatch`` chain for the given eligible weights."""
    members = normalise(pool(plan.servers, weights))
    rules: list[list[Json]] = []
    if members:
        if plan.algorithm == "jhash" and plan.consistent:
            owners = slot_table(members, [s.name for s in plan.servers])
        elif plan.algorithm == "inc":
            owners = smooth_order(members)
        else:
            owners = [index for index, weight in members for _ in range(weight)]
        mod = len(owners)
        if plan.algorithm == "jhash":
            key: Json = {"jhash": {"mod": mod, "seed": plan.seed,
                                   "expr": {"payload": {"protocol": "ip", "field": "saddr"}}}}
        else:
            key = {"numgen": {"mode": plan.algorithm, "mod": mod, "offset": 0}}
        rules.append([{"vmap": {"key": key, "data": {"set": _vmap_elements(owners)}}}])
    reject: Json = {"reject": {"type": "tcp reset"}} if plan.protocol == "tcp" else {"reject": None}
    rules.append([{"counter": "no_server"}, reject])
    return rules


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _ip(field: str) -> Json:
    return {"payload": {"protocol": "ip", "field": field}}


def _ct(key: str, direction: str | None = None) -> Json:
    return {"ct": {"key": key, "dir": direction}} if direction else {"ct": {"key": key}}


class _Batch:
    """Accumulates nft JSON commands for one table."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.commands: list[Json] = []

    def add(self, kind: str, **fields: Any) -> None:
        self.commands.append({"add": {kind: {"family": FAMILY, "table": self.table, **fields}}})

    def rule(self, chain: str, expr: list[Json]) -> None:
        self.add("rule", chain=chain, expr=expr)


def table_ruleset(plan: NftPlan, weights: Mapping[str, int]) -> list[Json]:
    """The transaction that (re)creates the whole table."""
    t = plan.table
    proto = plan.protocol
    ref = {"family": FAMILY, "name": t}
    cmds: list[Json] = [{"add": {"table": ref}}, {"delete": {"table": ref}}, {"add": {"table": ref}}]
    b = _Batch(t)
    b.commands = cmds
    b.add("counter", name="no_server")
    for i in range(len(plan.servers)):
        for name in (f"conn{i}", f"up{i}", f"down{i}"):
            b.add("counter", name=name)
    b.add("chain", name="prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
    b.add("chain", name="output", type="nat", hook="output", prio=-100, policy="accept")
    b.add("chain", name="dispatch")
    for i in range(len(plan.servers)):
        b.add("chain", name=f"srv{i}")  # before the dispatch rule that names them
    b.add("chain", name="postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
    b.add("chain", name="acct", type="filter", hook="postrouting", prio=0, policy="accept")
    b.add("chain", name="acct_in", type="filter", hook="input", prio=0, policy="accept")
    for ip, port in plan.vips:
        vip = [_match(_ip("daddr"), ip), _match({"payload": {"protocol": proto, "field": "dport"}}, port)]
        b.rule("prerouting", [*vip, {"jump": {"target": "dispatch"}}])
        b.rule("output", [*vip, {"jump": {"target": "dispatch"}}])
        if plan.masquerade:
            b.rule("postrouting", [
                _match(_ct("status"), "dnat", "in"),
                _match(_ct("protocol"), proto),
                _match(_ct("ip daddr", "original"), ip),
                _match(_ct("proto-dst", "original"), port),
                _match({"meta": {"key": "oifname"}}, "lo", "!="),
                {"masquerade": None},
            ])
    for expr in dispatch_rules(plan, weights):
        b.rule("dispatch", expr)
    for i, s in enumerate(plan.servers):
        b.rule(f"srv{i}", [
            {"counter": f"conn{i}"},
            _match({"meta": {"key": "l4proto"}}, proto),
            {"dnat": {"addr": s.ip, "port": s.port}},
        ])
        reply = [
            _match(_ct("status"), "dnat", "in"),
            _match(_ct("protocol"), proto),
            _match(_ct("ip saddr", "reply"), s.ip),
            _match(_ct("proto-src", "reply"), s.port),
        ]
        b.rule("acct", [*reply, _match(_ct("direction"), "original"), {"counter": f"up{i}"}])
        b.rule("acct", [*reply, _match(_ct("direction"), "reply"), {"counter": f"down{i}"}])
        # Replies to clients on this host enter through INPUT, not POSTROUTING; loopback
        # traffic passes both, so it is counted in POSTROUTING only.
        b.rule("acct_in", [_match({"meta": {"key": "iifname"}}, "lo", "!="), *reply,
                           _match(_ct("direction"), "reply"), {"counter": f"down{i}"}])
    return b.commands


def dispatch_update(plan: NftPlan, weights: Mapping[str, int]) -> list[Json]:
    """The transaction that replaces only the balancing decision."""
    b = _Batch(plan.table)
    b.commands.append({"flush": {"chain": {"family": FAMILY, "table": plan.table, "name": "dispatch"}}})
    for expr in dispatch_rules(plan, weights):
        b.rule("dispatch", expr)
    return b.commands


class NftDataPlane:
    """One listener's table: program, update, read back, remove."""

    def __init__(self, listener: str, backend: str, plan: NftPlan, runner: NftRunner | None = None) -> None:
        self.listener = listener
        self.backend = backend
        self.plan = plan
        self.runner = runner or NftRunner()
        self.weights: dict[str, int] = {s.name: s.weight for s in plan.servers}
        self.started = False

    def start(self) -> None:
        self.runner.apply(table_ruleset(self.plan, self.weights))
        self.started = True
        log.info("nftables: table ip %s balances %s over %d server(s)", self.plan.table,
                 ", ".join(f"{ip}:{port}/{self.plan.protocol}" for ip, port in self.plan.vips),
                 len(pool(self.plan.servers, self.weights)))

    def replace_table(self) -> None:
        """Replace this listener's table (same name, another plan: a reload) in one
        transaction: the kernel applies the deletion and the new table together."""
        delete = {"delete": {"table": {"family": FAMILY, "name": self.plan.table}}}
        self.runner.apply([delete, *table_ruleset(self.plan, self.weights)])
        self.started = True
        log.info("nftables: table ip %s replaced (reload): %s over %d server(s)", self.plan.table,
                 ", ".join(f"{ip}:{port}/{self.plan.protocol}" for ip, port in self.plan.vips),
                 len(pool(self.plan.servers, self.weights)))

    def set_servers(self, weights: Mapping[str, int]) -> None:
        """New eligible weights (server name -> effective weight; absent or 0 = takes no
        new connection). Rewrites the dispatch rule only if the pool changed."""
        new = {s.name: int(weights.get(s.name, 0)) for s in self.plan.servers}
        if new == self.weights:
            return
        old_rules = dispatch_rules(self.plan, self.weights)
        self.weights = new
        if self.started and dispatch_rules(self.plan, new) != old_rules:
            self.runner.apply(dispatch_update(self.plan, new))

    def counters(self) -> dict[str, tuple[int, int]]:
        out = self.runner.run(["-j", "list", "counters", "table", FAMILY, self.plan.table])
        found: dict[str, tuple[int, int]] = {}
        for item in json.loads(out).get("nftables", []):
            c = item.get("counter")
            if c and c.get("table") == self.plan.table:
                found[c["name"]] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
        return found

    def statistics(self) -> dict[str, Any]:
        c = self.counters()
        servers = []
        for i, s in enumerate(self.plan.servers):
            servers.append({
                "name": s.name,
                "address": f"{s.ip}:{s.port}",
                "weight": self.weights.get(s.name, 0),
                "connections": c.get(f"conn{i}", (0, 0))[0],
                "bytes_to_server": c.get(f"up{i}", (0, 0))[1],
                "bytes_from_server": c.get(f"down{i}", (0, 0))[1],
            })
        return {"listener": self.listener, "dataplane": "nftables", "table": f"{FAMILY} {self.plan.table}",
                "backend": self.backend, "no_server": c.get("no_server", (0, 0))[0], "servers": servers}

    def stop(self) -> None:
        """Delete the table (nothing else). A table already gone is not an error."""
        try:
            self.runner.run(["delete", "table", FAMILY, self.plan.table])
        except NftError as exc:
            if "No such file" not in str(exc):
                raise
        self.started = False
