"""The compiled router of an HTTP listener: which vhost, then which route.

Theory of operation
-------------------
:meth:`Router.compile` turns a listener's ``vhosts`` and ``routes`` into lookup tables
once, at load; :meth:`Router.select` runs for every request and must cost well under a
microsecond for the usual Host + path tables (the whole per-request budget is ~16 µs,
see PERFORMANCE.md). It never touches sockets or the clock.

1. **Site.** The vhosts eligible for the local address the connection arrived on (a
   vhost with ``addresses`` is only seen on those). Without any ``addresses`` there is
   one site for every connection; otherwise one per local address, built on first use.
2. **Vhost**, in nginx's order: exact server name (one dict lookup), the longest
   matching wildcard (``*.example.com``, ``.example.com``), the first matching regex
   in config order, the default vhost (one whose ``addresses`` name the local address
   before one for any address), the listener's own ``routes``/``backend`` (the
   fallback), nothing (``no_vhost_status``). On the hot path this is one dict lookup
   on the Host value exactly as sent (port, case and all): what a value decides (the
   route list, narrowed by host) is worked out on first sight and remembered in a
   bounded cache, so normalising and wildcard/regex matching run once per distinct
   Host, not once per request.
3. **Route**: the first route of the chosen list whose conditions all hold. Routes are
   indexed by exact ``match.host`` (host -> its routes and the host-less ones, in
   config order) and, in long lists, by exact ``path`` and by the first path segment
   of ``path_prefix``, so a table of many host+path routes is one or two dict lookups
   and a few comparisons. Exact host, path (exact or regex) and path prefix are
   attributes compared inline; the other conditions are objects of
   :mod:`pyvs.l7.conditions`, cheap ones first.

:meth:`Router.explain` answers the same question slowly, condition by condition, for
``pyvs route`` and tests; the tests check that both always agree.

Language routes: all ``language`` ranges of one route list are the offers of one
Accept-Language negotiation (pyvs.l7.language), computed once per request; a language
route matches when the winning offer is one of its ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pyvs.config.route_schema import Route, RouteMatch, server_name_kind
from pyvs.l7 import conditions as c
from pyvs.l7.conditions import Access, parse_ip
from pyvs.l7.request import normalise_host

if TYPE_CHECKING:
    from pyvs.config.schema import Listener
    from pyvs.l7.request import RequestView

__all__ = ["Explanation", "RouteSpec", "Router", "Tried"]

Why = Literal["exact", "wildcard", "regex", "default", "fallback", "none"]

# Hosts no exact server name matches (wildcards, regexes, typos, scanners): remembered,
# and forgotten all at once when full so that a flood of random Hosts stays bounded.
_HOST_CACHE_MAX = 1024
# Local addresses seen (a machine has few; the bound is for safety only).
_SITE_CACHE_MAX = 256
# Lists at least this long get a path index; shorter ones are faster scanned.
_PATH_INDEX_MIN = 8


@dataclass(frozen=True, slots=True, eq=False)
class RouteSpec:
    """One route of a listener, as the rest of the proxy sees it.

    ``index`` is the position in :attr:`Router.routes` (a worker keeps its per-route
    runtime objects in a tuple in the same order). ``access`` holds the vhost's and the
    route's allow/deny lists (None: no rule); the listener's own are
    :attr:`Router.access`, to be checked before routing.
    """

    index: int
    name: str
    vhost: str | None
    listener: str
    config: Route
    backend: str | None
    action: str  # backend | redirect | respond | deny
    access: Access | None
    where: str  # path below the listener in the config: "vhosts[0].routes[1]"
    conditions: tuple[c.Condition, ...] = field(repr=False)

    @property
    def unconditional(self) -> bool:
        return not self.conditions


@dataclass(frozen=True, slots=True)
class Tried:
    """A route tried before the winner, with the first of its conditions that failed."""

    route: RouteSpec
    failed: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """How a request was routed (see :meth:`Router.explain`)."""

    host: str
    vhost: str | None
    why: Why
    server_name: str | None  # the server name that chose the vhost (exact/wildcard/regex)
    tried: tuple[Tried, ...]
    route: RouteSpec | None
    matched: tuple[str, ...]  # the winner's conditions (empty: it has none)
    status: int | None  # the answer when no route matched (421/404 or 503)


class _Compiled:
    """A route on the hot path: inline host/path/prefix, then condition objects."""

    __slots__ = ("conds", "host", "path", "path_re", "prefix", "segment", "spec")

    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec
        self.host: bytes | None = None
        self.path: bytes | None = None
        self.path_re: re.Pattern[bytes] | None = None
        self.prefix: bytes | None = None
        # The first path segment every path this route can match starts with, or None.
        self.segment: bytes | None = None
        conds = list(spec.conditions)
        for cond in spec.conditions:
            if isinstance(cond, c.HostIs):
                self.host = cond.host
                conds.remove(cond)
            elif type(cond) is c.PathIs:
                self.path = cond.path
                conds.remove(cond)
            elif type(cond) is c.PathRegex:
                self.path_re = cond.pattern
                conds.remove(cond)
            elif type(cond) is c.PathPrefix:
                self.prefix = cond.path
                conds.remove(cond)
                self.segment = _segment(cond.path, complete_only=True)
        self.conds = tuple(conds)


def _segment(path: bytes, *, complete_only: bool = False) -> bytes | None:
    """``/api/v1`` -> ``api``. With ``complete_only``, None unless a ``/`` ends the
    segment (the prefix ``/ap`` also matches ``/apiary``: no single segment)."""
    end = path.find(b"/", 1)
    if end < 0:
        return None if complete_only else path[1:]
    return path[1:end]


def _conditions(m: RouteMatch | None, negotiation: c.Negotiation | None) -> tuple[c.Condition, ...]:
    """The conditions of a match, in evaluation order: the inline ones, then cheap to costly."""
    if m is None:
        return ()
    out: list[c.Condition] = []
    if m.host is not None:
        kind, key = server_name_kind(m.host)
        out.append(c.HostIs(m.host) if kind == "exact" else c.HostPattern(m.host, kind, key))
    if m.path is not None:
        out.append(c.PathRegex(m.path) if m.path.startswith("~") else c.PathIs(m.path))
    if m.path_prefix is not None:
        out.append(c.PathPrefix(m.path_prefix))
    if m.methods:
        out.append(c.Methods(m.methods))
    out.extend(c.Header(k, v) for k, v in m.headers.items())
    out.extend(c.QueryParam(k, v) for k, v in m.query.items())
    out.extend(c.Cookie(k, v) for k, v in m.cookies.items())
    if m.source:
        out.append(c.Source(m.source))
    if m.tls is not None:
        out.append(c.OverTls(m.tls))
    if m.tls_version:
        out.append(c.TlsFact("tls_version", m.tls_version))
    if m.tls_cipher is not None:
        out.append(c.TlsFact("tls_cipher", m.tls_cipher))
    if m.sni is not None:
        out.append(c.TlsFact("sni", m.sni))
    if m.user_agent is not None:
        out.append(c.UserAgent(m.user_agent))
    if m.browser:
        out.append(c.BrowserKind(m.browser))
    if m.language:
        assert negotiation is not None
        out.append(c.Language(m.language, negotiation))
    return tuple(out)


class _PathIndex:
    """Candidates of a long route list narrowed by the path (never dropping a route
    that could match: the routes' own checks still run on what it returns)."""

    __slots__ = ("by_path", "by_segment", "rest")

    def __init__(self, routes: tuple[_Compiled, ...]) -> None:
        paths = {r.path for r in routes if r.path is not None}
        self.by_path = {
            p: tuple(
                r for r in routes if (r.path is None or r.path == p) and (r.prefix is None or p.startswith(r.prefix))
            )
            for p in paths
        }
        # Not an exact path of any route: only routes without an exact path remain.
        open_routes = [r for r in routes if r.path is None]
        segments = {r.segment for r in open_routes if r.segment is not None}
        self.by_segment = {
            s: tuple(r for r in open_routes if r.segment is None or r.segment == s) for s in segments
        }
        self.rest = tuple(r for r in open_routes if r.segment is None)

    def lookup(self, path: bytes) -> tuple[_Compiled, ...]:
        hit = self.by_path.get(path)
        if hit is not None:
            return hit
        if self.by_segment:
            return self.by_segment.get(_segment(path) or b"", self.rest)
        return self.rest


# What the Host decides, remembered per raw Host value: the candidate routes, or a path
# index that narrows them (long lists), and whether any of them reads the path.
_Hit = tuple[tuple[_Compiled, ...], _PathIndex | None, bool]
_NO_LIST: _Hit = ((), None, False)  # no vhost and no fallback: compared by identity


def _hit(routes: tuple[_Compiled, ...]) -> _Hit:
    if len(routes) >= _PATH_INDEX_MIN:
        return routes, _PathIndex(routes), True
    return routes, None, any(r.path is not None or r.prefix is not None or r.path_re is not None for r in routes)


class _RouteList:
    """The routes of one vhost (or the listener's fallback), indexed by exact host."""

    __slots__ = ("by_host", "label", "rest", "routes")

    def __init__(self, label: str | None, routes: tuple[_Compiled, ...]) -> None:
        self.label = label
        self.routes = routes
        hosts = {r.host for r in routes if r.host is not None}
        # host -> the routes that can match it: its own and the host-less ones, in order.
        self.by_host: dict[bytes, _Hit] = {
            h: _hit(tuple(r for r in routes if r.host is None or r.host == h)) for h in hosts
        }
        self.rest: _Hit = _hit(tuple(r for r in routes if r.host is None))

    def hit(self, host: bytes) -> _Hit:
        """The candidates for a normalised host."""
        return self.by_host.get(host, self.rest)


class _Site:
    """The vhosts one local address sees, with nginx's selection order."""

    __slots__ = ("default", "dotted", "exact", "fallback", "hits", "names", "only", "regexes", "wild")

    def __init__(self, vhosts: list[tuple[_RouteList, list[str], bool, bool]], fallback: _RouteList | None) -> None:
        """``vhosts``: (route list, server names, is default, has addresses), config order."""
        self.exact: dict[bytes, _RouteList] = {}
        self.wild: dict[bytes, tuple[_RouteList, str]] = {}  # key of *.key and .key
        self.dotted: dict[bytes, tuple[_RouteList, str]] = {}  # key of .key (the name itself)
        self.regexes: list[tuple[c.HostPattern, _RouteList, str]] = []
        self.names: dict[bytes, str] = {}
        self.default: _RouteList | None = None
        self.fallback = fallback
        # Raw Host value (as the client sent it, port and all) -> what it decides.
        self.hits: dict[bytes | None, _Hit] = {}
        specific_default = False
        for rl, names, is_default, has_addresses in vhosts:
            for name in names:
                kind, key = server_name_kind(name)
                bkey = key.encode()
                if kind == "exact":
                    self.exact.setdefault(bkey, rl)
                    self.names.setdefault(bkey, name)
                elif kind == "regex":
                    self.regexes.append((c.HostPattern(name, kind, key), rl, name))
                else:
                    self.wild.setdefault(bkey, (rl, name))
                    if kind == "dotted":
                        self.dotted.setdefault(bkey, (rl, name))
            if is_default and (self.default is None or (has_addresses and not specific_default)):
                self.default = rl
                specific_default = has_addresses
        # When the Host decides nothing (no vhost, no host-indexed route): the one answer.
        self.only: _Hit | None = None
        if not vhosts:
            if fallback is None:
                self.only = _NO_LIST
            elif not fallback.by_host:
                self.only = fallback.rest

    def learn(self, raw: bytes | None) -> _Hit:
        """Resolve a Host value not seen lately, and remember it (bounded)."""
        host = normalise_host(raw)
        rl = self.resolve_slowly(host)[0]
        hit = _NO_LIST if rl is None else rl.hit(host)
        if raw is None or len(raw) <= 255:  # a host name is at most 253 bytes: never cache junk
            if len(self.hits) >= _HOST_CACHE_MAX:
                self.hits.clear()
            self.hits[raw] = hit
        return hit

    def resolve_slowly(self, host: bytes) -> tuple[_RouteList | None, Why, str | None]:
        rl = self.exact.get(host)
        if rl is not None:
            return rl, "exact", self.names[host]
        # Wildcards, longest first: the name itself (".example.com"), then each parent.
        hit = self.dotted.get(host)
        i = host.find(b".")
        while hit is None and i >= 0:
            hit = self.wild.get(host[i + 1 :])
            i = host.find(b".", i + 1)
        if hit is not None:
            return hit[0], "wildcard", hit[1]
        for pattern, rl, name in self.regexes:
            if pattern.match(host):
                return rl, "regex", name
        if self.default is not None:
            return self.default, "default", None
        if self.fallback is not None:
            return self.fallback, "fallback", None
        return None, "none", None


class Router:
    """A listener's routing, compiled (see the module docstring)."""

    __slots__ = (
        "_fallback", "_site", "_sites", "_vhosts", "access", "fixed", "listener", "no_vhost_status", "routes",
        "trivial",
    )

    def __init__(self) -> None:
        self.listener = ""
        self.routes: tuple[RouteSpec, ...] = ()
        self.access: Access | None = None
        self.no_vhost_status = 421
        # The route every request takes when routing decides nothing (trivial).
        self.fixed: RouteSpec | None = None
        self.trivial = False
        self._fallback: _RouteList | None = None  # the listener's own routes and backend
        # (route list, server names, default, addresses) per vhost, for building sites.
        self._vhosts: list[tuple[_RouteList, list[str], bool, frozenset[str]]] = []
        self._site: _Site | None = None
        self._sites: dict[bytes, _Site] = {}

    @classmethod
    def compile(cls, listener: Listener) -> Router:
        """Build the router of an http listener (validated config: never raises on it)."""
        self = cls()
        self.listener = listener.name
        self.no_vhost_status = listener.no_vhost_status
        self.access = Access.build([(listener.allow, listener.deny, 403)])
        specs: list[RouteSpec] = []

        def route_list(label: str | None, routes: list[tuple[str, Route]], acl: tuple[list[str], list[str]],
                       name_of: str) -> _RouteList:
            offers = [rng for _, r in routes if r.match is not None for rng in r.match.language]
            negotiation = c.Negotiation(offers) if offers else None
            compiled = []
            for j, (where, r) in enumerate(routes):
                deny = r.deny.source if r.deny is not None else []
                status = r.deny.status if r.deny is not None else 403
                spec = RouteSpec(
                    index=len(specs),
                    name=r.name or f"{name_of}/{j}",
                    vhost=label,
                    listener=listener.name,
                    config=r,
                    backend=r.backend,
                    action=r.action,
                    access=Access.build([(acl[0], acl[1], 403), (r.allow, deny, status)]),
                    where=where,
                    conditions=_conditions(r.match, negotiation),
                )
                specs.append(spec)
                compiled.append(_Compiled(spec))
            return _RouteList(label, tuple(compiled))

        for i, vh in enumerate(listener.vhosts):
            label = vh.name or f"vhosts[{i}]"  # the schema fills name in; this is for hand-built models
            routes = [(f"vhosts[{i}].routes[{j}]", r) for j, r in enumerate(vh.routes)]
            rl = route_list(label, routes, (vh.allow, vh.deny), label)
            self._vhosts.append((rl, vh.server_names, vh.default, frozenset(vh.addresses)))
        fallback = [(f"routes[{j}]", r) for j, r in enumerate(listener.routes)]
        if listener.backend is not None:
            # The listener's backend is the last fallback route, of its own.
            fallback.append(("backend", Route(backend=listener.backend, name=f"{listener.name}/backend")))
        if fallback:
            self._fallback = route_list(None, fallback, ([], []), listener.name)
        self.routes = tuple(specs)
        if not any(addrs for _, _, _, addrs in self._vhosts):
            self._site = self._build_site(None)
        if not self._vhosts and self._fallback is not None and self._fallback.routes[0].spec.unconditional:
            self.fixed = self._fallback.routes[0].spec
            self.trivial = True
        return self

    def _build_site(self, local: str | None) -> _Site:
        eligible = [
            (rl, names, default, bool(addrs))
            for rl, names, default, addrs in self._vhosts
            if not addrs or (local is not None and local in addrs)
        ]
        # A default for this very address is preferred to one for any address.
        return _Site(eligible, self._fallback)

    def _site_for(self, local_ip: bytes) -> _Site:
        site = self._sites.get(local_ip)
        if site is None:
            addr = parse_ip(local_ip)
            site = self._build_site(str(addr) if addr is not None else None)
            if len(self._sites) >= _SITE_CACHE_MAX:
                self._sites.clear()
            self._sites[local_ip] = site
        return site

    # ------------------------------------------------------------ per request

    def select(self, view: RequestView) -> RouteSpec | int:
        """The route for this request, or the status to answer when there is none:
        ``no_vhost_status`` when no vhost takes it and there is no fallback, 503 when
        the chosen route list has no matching route."""
        site = self._site
        if site is None:
            site = self._site_for(view.local_ip)
        head = view.head
        assert head is not None
        hit = site.only
        if hit is None:
            hit = site.hits.get(head.host) or site.learn(head.host)
        if hit is _NO_LIST:
            return self.no_vhost_status
        cands, index, needs_path = hit
        path = b""
        if needs_path:
            target = head.target
            if target[0] == 47:  # "/": origin form, the path is what precedes "?"
                q = target.find(b"?")
                path = target if q < 0 else target[:q]
            else:
                path = view.path
            if index is not None:
                cands = index.lookup(path)
        for r in cands:
            p = r.path
            if p is not None and p != path:
                continue
            p = r.prefix
            if p is not None and not path.startswith(p):
                continue
            pattern = r.path_re
            if pattern is not None and pattern.search(path) is None:
                continue
            if r.conds:
                for cond in r.conds:
                    if not cond.test(view):
                        break
                else:
                    return r.spec
                continue
            return r.spec
        return 503

    def explain(self, view: RequestView) -> Explanation:
        """Like :meth:`select`, condition by condition, saying why (slow; for tools)."""
        site = self._site if self._site is not None else self._site_for(view.local_ip)
        host = view.host
        rl, why, server_name = site.resolve_slowly(host)
        host_text = host.decode("latin-1")
        if rl is None:
            return Explanation(host_text, None, why, None, (), None, (), self.no_vhost_status)
        tried: list[Tried] = []
        for r in rl.routes:
            spec = r.spec
            failed = next((cond for cond in spec.conditions if not cond.test(view)), None)
            if failed is None:
                matched = tuple(cond.text for cond in spec.conditions)
                return Explanation(host_text, rl.label, why, server_name, tuple(tried), spec, matched, None)
            tried.append(Tried(spec, failed.explain(view)))
        return Explanation(host_text, rl.label, why, server_name, tuple(tried), None, (), 503)
