"""Compiled route conditions: small objects with one ``test(view)`` each.

Theory of operation
-------------------
The router (:mod:`pyvs.l7.router`) evaluates Host, exact path and path prefix inline,
as attributes of a compiled route, because nearly every route table uses only those.
Every other condition of ``match`` becomes one object of this module, built once at
load: ``test(view)`` reads what it needs from the :class:`RequestView` (which finds a
header only when asked) and answers True or False. Nothing here parses configuration
or allocates per request beyond what the view itself caches.

Each condition also describes itself for ``pyvs route`` and :meth:`Router.explain`:
``text`` is the condition as configured (``path_prefix /api/``) and
``observed(view)`` what the request had (``path is /x``), so an explanation reads
``path_prefix /api/ (path is /x)``.

:class:`CidrSet` and :class:`Access` (allow/deny lists) live here too: the ``source``
condition and the access rules share the address matching and its bounded cache.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pyvs.config.route_schema import CheckValue, compile_pattern
from pyvs.l7.cidr import NetworkSet

if TYPE_CHECKING:
    from pyvs.l7.language import LanguageNegotiator
    from pyvs.l7.request import RequestView

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A worker sees many client addresses; clearing when full bounds a flood of new ones.


def parse_ip(raw: bytes) -> IPAddress | None:
    """``b"10.0.0.1"`` / ``b"::ffff:10.0.0.1"`` (as IPv4) / ``b"fe80::1%eth0"``; None if not an IP."""
    if not raw:
        return None
    try:
        text = raw.decode("ascii").strip("[]").split("%", 1)[0]
        addr = ipaddress.ip_address(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket reports IPv4 clients this way
    return addr


def _show(value: bytes | None) -> str:
    if value is None:
        return "absent"
    text = value.decode("latin-1")
    return repr(text if len(text) <= 60 else text[:57] + "...")


CidrSet = NetworkSet  # the matcher of access lists and source conditions (pyvs.l7.cidr)


class Access:
    """allow/deny lists of several levels (vhost, route), all of which must let a client in.

    A level refuses a client that is in its deny list, or that is outside its allow
    list when it has one. :meth:`check` gives 0 (let in) or the refusal's status.
    """

    __slots__ = ("levels",)

    def __init__(self, levels: Iterable[tuple[CidrSet | None, CidrSet | None, int]]) -> None:
        self.levels = tuple(levels)

    @classmethod
    def build(cls, levels: Iterable[tuple[Sequence[str], Sequence[str], int]]) -> Access | None:
        """None when no level has a rule (the common case costs nothing)."""
        compiled = [
            (CidrSet(allow) if allow else None, CidrSet(deny) if deny else None, status)
            for allow, deny, status in levels
            if allow or deny
        ]
        return cls(compiled) if compiled else None

    def check(self, client_ip: bytes) -> int:
        for allow, deny, status in self.levels:
            if deny is not None and client_ip in deny:
                return status
            if allow is not None and client_ip not in allow:
                return 403
        return 0

    def describe(self) -> list[str]:
        out = []
        for allow, deny, status in self.levels:
            if allow is not None:
                out.append(f"allow {allow.text}")
            if deny is not None:
                out.append(f"deny {deny.text}" + (f" ({status})" if status != 403 else ""))
        return out


class Condition:
    """One compiled condition. Subclasses set ``text`` and implement ``test``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def test(self, view: RequestView) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def observed(self, view: RequestView) -> str:
        """What the request had, for explanations."""
        return ""

    def explain(self, view: RequestView) -> str:
        seen = self.observed(view)
        return f"{self.text} ({seen})" if seen else self.text


class HostIs(Condition):
    """``host: www.example.com`` (the router indexes these; this form serves explain)."""

    __slots__ = ("host",)

    def __init__(self, host: str) -> None:
        super().__init__(f"host {host}")
        self.host = host.encode()

    def test(self, view: RequestView) -> bool:
        return view.host == self.host

    def observed(self, view: RequestView) -> str:
        return f"host is {view.host.decode('latin-1') or '(none)'}"


class HostPattern(Condition):
    """``host: *.example.com`` / ``.example.com`` / ``~regex`` on the normalised Host."""

    __slots__ = ("match",)

    def __init__(self, spec: str, kind: str, key: str) -> None:
        super().__init__(f"host {spec}")
        if kind == "regex":
            pattern = compile_pattern(spec)
            assert pattern is not None
            self.match: Callable[[bytes], object] = pattern.search
        else:
            dot_key = b"." + key.encode()
            if kind == "wildcard":
                self.match = lambda h: h.endswith(dot_key)
            else:
                bare = key.encode()
                self.match = lambda h: h == bare or h.endswith(dot_key)

    def test(self, view: RequestView) -> bool:
        return bool(self.match(view.host))

    def observed(self, view: RequestView) -> str:
        return f"host is {view.host.decode('latin-1') or '(none)'}"


class PathIs(Condition):
    """``path: /healthz`` (inline in the router; this form serves explain)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        super().__init__(f"path {path}")
        self.path = path.encode()

    def test(self, view: RequestView) -> bool:
        return view.path == self.path

    def observed(self, view: RequestView) -> str:
        return f"path is {view.path.decode('latin-1')}"


class PathPrefix(PathIs):
    """``path_prefix: /api/``."""

    __slots__ = ()

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.text = f"path_prefix {prefix}"

    def test(self, view: RequestView) -> bool:
        return view.path.startswith(self.path)


class PathRegex(Condition):
    """``path: ~regex``: searched in the raw path."""

    __slots__ = ("pattern",)

    def __init__(self, spec: str) -> None:
        super().__init__(f"path {spec}")
        pattern = compile_pattern(spec)
        assert pattern is not None
        self.pattern = pattern

    def test(self, view: RequestView) -> bool:
        return self.pattern.search(view.path) is not None

    def observed(self, view: RequestView) -> str:
        return f"path is {view.path.decode('latin-1')}"


class Methods(Condition):
    """``methods: [GET, HEAD]``."""

    __slots__ = ("methods",)

    def __init__(self, methods: Sequence[str]) -> None:
        super().__init__("methods " + ", ".join(methods))
        self.methods = frozenset(m.encode() for m in methods)

    def test(self, view: RequestView) -> bool:
        assert view.head is not None
        return view.head.method in self.methods

    def observed(self, view: RequestView) -> str:
        assert view.head is not None
        return f"method is {view.head.method.decode('latin-1')}"


def _value_test(expected: CheckValue) -> Callable[[bytes | None], bool]:
    """The test of one headers/query/cookies entry: equals, ~regex, present, absent."""
    if expected is True:
        return lambda v: v is not None
    if expected is False:
        return lambda v: v is None
    assert isinstance(expected, str)
    pattern = compile_pattern(expected)
    if pattern is not None:
        search = pattern.search
        return lambda v: v is not None and search(v) is not None
    want = expected.strip().encode()
    return lambda v: v == want


def _value_text(expected: CheckValue) -> str:
    if expected is True:
        return "present"
    if expected is False:
        return "absent"
    return repr(expected)


class Header(Condition):
    """``headers: {Name: value | ~re | true | false}`` (one entry; all values joined by ``, ``)."""

    __slots__ = ("check", "name")

    def __init__(self, name: str, expected: CheckValue) -> None:
        super().__init__(f"header {name} {_value_text(expected)}")
        self.name = name.lower().encode()
        self.check = _value_test(expected)

    def test(self, view: RequestView) -> bool:
        return self.check(view.header(self.name))

    def observed(self, view: RequestView) -> str:
        return f"{self.name.decode()} is {_show(view.header(self.name))}"


class TlsFact(Condition):
    """``tls_version``, ``tls_cipher``, ``sni``: a fact of the client's TLS connection
    (pyvs.tls.conn.TlsFacts, on the view of a TLS connection only; absent otherwise)."""

    __slots__ = ("check", "fact")

    def __init__(self, fact: str, expected: CheckValue | list[str]) -> None:
        if isinstance(expected, list):
            super().__init__(f"{fact} {' '.join(expected)}")
            wanted = {e.encode() for e in expected}
            self.check: Callable[[bytes | None], bool] = lambda v: v in wanted
        else:
            super().__init__(f"{fact} {_value_text(expected)}")
            self.check = _value_test(expected)
        self.fact = fact

    def value(self, view: RequestView) -> bytes | None:
        tls = getattr(view, "tls", None)
        if tls is None:
            return None
        if self.fact == "sni":
            return tls.sni or None
        return tls.version if self.fact == "tls_version" else tls.cipher  # type: ignore[no-any-return]

    def test(self, view: RequestView) -> bool:
        return self.check(self.value(view))

    def observed(self, view: RequestView) -> str:
        return f"{self.fact} is {_show(self.value(view))}"


class OverTls(Condition):
    """``tls: true`` / ``tls: false``: whether the request came over TLS."""

    __slots__ = ("want",)

    def __init__(self, want: bool) -> None:
        super().__init__(f"tls {'true' if want else 'false'}")
        self.want = want

    def test(self, view: RequestView) -> bool:
        return (getattr(view, "tls", None) is not None) == self.want

    def observed(self, view: RequestView) -> str:
        return "over TLS" if getattr(view, "tls", None) is not None else "over plain TCP"


class QueryParam(Condition):
    """``query: {name: value | ~re | true | false}`` on the raw (not decoded) first value."""

    __slots__ = ("check", "name")

    def __init__(self, name: str, expected: CheckValue) -> None:
        super().__init__(f"query {name} {_value_text(expected)}")
        self.name = name.encode()
        self.check = _value_test(expected)

    def test(self, view: RequestView) -> bool:
        return self.check(view.query_param(self.name))

    def observed(self, view: RequestView) -> str:
        return f"{self.name.decode()} is {_show(view.query_param(self.name))}"


class Cookie(Condition):
    """``cookies: {name: value | ~re | true | false}``."""

    __slots__ = ("check", "name")

    def __init__(self, name: str, expected: CheckValue) -> None:
        super().__init__(f"cookie {name} {_value_text(expected)}")
        self.name = name.encode()
        self.check = _value_test(expected)

    def test(self, view: RequestView) -> bool:
        return self.check(view.cookie(self.name))

    def observed(self, view: RequestView) -> str:
        return f"{self.name.decode()} is {_show(view.cookie(self.name))}"


class Source(Condition):
    """``source: [CIDR, ...]`` on the client address (after PROXY / trusted proxies)."""

    __slots__ = ("nets",)

    def __init__(self, cidrs: Sequence[str]) -> None:
        super().__init__("source " + ", ".join(cidrs))
        self.nets = CidrSet(cidrs)

    def test(self, view: RequestView) -> bool:
        return view.client_ip in self.nets

    def observed(self, view: RequestView) -> str:
        return f"client is {view.client_ip.decode('latin-1') or '(unknown)'}"


class UserAgent(Condition):
    """``user_agent: regex``: searched in User-Agent; a request without one fails."""

    __slots__ = ("pattern",)

    def __init__(self, spec: str) -> None:
        super().__init__(f"user_agent {spec}")
        pattern = compile_pattern(spec, tilde_optional=True)
        assert pattern is not None
        self.pattern = pattern

    def test(self, view: RequestView) -> bool:
        ua = view.header(b"user-agent")
        return ua is not None and self.pattern.search(ua) is not None

    def observed(self, view: RequestView) -> str:
        return f"user-agent is {_show(view.header(b'user-agent'))}"


class BrowserKind(Condition):
    """``browser: mobile`` (or a list): the User-Agent's class from pyvs.l7.useragent."""

    __slots__ = ("classify", "kinds")

    def __init__(self, kinds: Sequence[str]) -> None:
        super().__init__("browser " + ", ".join(kinds))
        from pyvs.l7.useragent import classify

        self.classify: Callable[[bytes | None], str] = classify
        self.kinds = frozenset(kinds)

    def test(self, view: RequestView) -> bool:
        return self.classify(view.header(b"user-agent")) in self.kinds

    def observed(self, view: RequestView) -> str:
        return f"client is {self.classify(view.header(b'user-agent'))}"


class Negotiation:
    """The Accept-Language negotiation of one route list, done once per request.

    Every language route of a list reads the same winner; the first one asked
    computes it and remembers the head it was computed for (a new request brings a
    new head object, so identity is the reset).
    """

    __slots__ = ("head", "negotiator", "winner")

    def __init__(self, offers: Sequence[str]) -> None:
        from pyvs.l7.language import LanguageNegotiator

        self.negotiator: LanguageNegotiator = LanguageNegotiator(offers)
        self.head: object = None
        self.winner: str | None = None

    def best(self, view: RequestView) -> str | None:
        head = view.head
        if self.head is not head:
            self.winner = self.negotiator.best(view.header(b"accept-language"))
            self.head = head
        return self.winner


class Language(Condition):
    """``language: [zh, zh-*]``: the list's negotiation picked one of these ranges."""

    __slots__ = ("negotiation", "ranges")

    def __init__(self, ranges: Sequence[str], negotiation: Negotiation) -> None:
        super().__init__("language " + ", ".join(ranges))
        self.ranges = frozenset(ranges)
        self.negotiation = negotiation

    def test(self, view: RequestView) -> bool:
        return self.negotiation.best(view) in self.ranges

    def observed(self, view: RequestView) -> str:
        winner = self.negotiation.best(view)
        if winner is None:
            return f"no offered language is acceptable to {_show(view.header(b'accept-language'))}"
        return f"the client prefers {winner}"
