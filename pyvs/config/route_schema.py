"""Content routing in the configuration: virtual hosts, routes, their conditions and actions.

Theory of operation
-------------------
These models only *declare* and *validate*; :mod:`pyvs.l7.router` compiles them into the
per-request matcher. Everything a request-time matcher could trip over is checked here
so that ``pyvs check`` reports it with the key's path: regular expressions are compiled
(a value starting with ``~`` is a regex, ``~*`` a case-insensitive one, as in nginx),
CIDRs parsed, header names checked as tokens. The actions and per-route features are
validated by building their filters (:mod:`pyvs.l7.filters`) once, as a backend builds
its scheduler: whatever a worker would refuse (an unknown ``%{variable}``, a framing
header, a bad ``\\1``), ``pyvs check`` refuses first, with the same words.

The helpers :func:`compile_pattern`, :func:`server_name_kind` and :func:`parse_cidrs`
are shared with the router so that the config and the matcher can never disagree on
what a value means.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pyvs.config.accel_schema import Cache, Compress
from pyvs.config.limits_schema import RateLimit
from pyvs.config.schema_base import Model
from pyvs.config.units import Duration, Size

Browser = Literal["mobile", "tablet", "desktop", "bot"]
CheckValue = str | bool

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_LANGUAGE = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8})*")


# ---------------------------------------------------------------- shared helpers


def compile_pattern(value: str, *, tilde_optional: bool = False) -> re.Pattern[bytes] | None:
    """The bytes regex of a ``~re`` / ``~*re`` value, or None for a plain value.

    Patterns are compiled on bytes because requests are matched as bytes (no decode on
    the hot path). With ``tilde_optional`` (user_agent, rewrite regex: fields that are
    always regexes) a value without ``~`` is a regex too. Raises ValueError naming the
    value and the reason.
    """
    flags = re.RegexFlag(0)
    if value.startswith("~*"):
        text, flags = value[2:], re.IGNORECASE
    elif value.startswith("~"):
        text = value[1:]
    elif tilde_optional:
        text = value
    else:
        return None
    try:
        return re.compile(text.encode(), flags)
    except re.error as exc:
        raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    except UnicodeEncodeError:  # pragma: no cover - lone surrogates only
        raise ValueError(f"bad regular expression {value!r}: not encodable as UTF-8") from None


def normalise_name(name: str) -> str:
    """A host name as requests are compared with it: lower case, no trailing dot."""
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def server_name_kind(name: str) -> tuple[Literal["exact", "wildcard", "dotted", "regex"], str]:
    """Classify a (normalised) server name: ``(kind, key)``.

    ``www.example.com`` -> exact; ``*.example.com`` -> wildcard, key ``example.com``
    (subdomains only); ``.example.com`` -> dotted, key ``example.com`` (the name and its
    subdomains); ``~re`` -> regex (key: the value). ``""`` is the exact name of a
    request without Host. Raises ValueError for anything else.
    """
    if name.startswith("~"):
        compile_pattern(name)
        return "regex", name
    if name.startswith("*."):
        kind: Literal["wildcard", "dotted"] = "wildcard"
        key = name[2:]
    elif name.startswith("."):
        kind, key = "dotted", name[1:]
    else:
        if name == "" or _HOSTNAME.fullmatch(name) or _is_ip_literal(name):
            return "exact", name
        raise ValueError(f"{name!r} is not a host name, *.name, .name or ~regex")
    if not _HOSTNAME.fullmatch(key):
        raise ValueError(f"{name!r}: after {name[: len(name) - len(key)]!r} must come a host name")
    return kind, key


def _is_ip_literal(name: str) -> bool:
    text = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return addr.version == 4 or name.startswith("[")


def parse_cidrs(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse CIDRs (a bare address is a /32 or /128, ``all`` both families) with the
    parser the workers use (pyvs.l7.cidr): what check accepts, a worker can build.
    ValueError names the bad entry."""
    from pyvs.l7.cidr import parse_network

    nets = []
    for item in values:
        if not isinstance(item, str):
            raise ValueError(f"expected a CIDR like 10.0.0.0/8, got {item!r}")
        try:
            nets += parse_network(item)
        except ValueError:
            try:
                meant = ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"expected a CIDR like 10.0.0.0/8, got {item!r}") from None
            raise ValueError(f"{item!r} has host bits set: write {str(meant)!r} (or the address alone)") from None
    return nets


def _cidrs(v: list[str]) -> list[str]:
    parse_cidrs(v)
    return v


def _checks(v: dict[str, CheckValue], what: str, *, names_are_tokens: bool) -> dict[str, CheckValue]:
    for name, value in v.items():
        if names_are_tokens and not _TOKEN.fullmatch(name):
            raise ValueError(f"{what} {name!r}: not a valid field name")
        if not name:
            raise ValueError(f"{what} names must not be empty")
        if isinstance(value, str):
            try:
                compile_pattern(value)
            except ValueError as exc:
                raise ValueError(f"{what} {name!r}: {exc}") from None
    return v


def _numbers_as_text(v: Any) -> Any:
    """YAML reads ``beta: 1`` as an int, which pydantic would take for ``true``
    (present); the user meant the text ``1``."""
    if isinstance(v, dict):
        return {k: (str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x) for k, x in v.items()}
    return v


def _builds(build: Callable[[], object]) -> None:
    """Build a filter once so that what it refuses is a config error, not a worker crash.

    The filter's own message is kept, without its leading ``"redirect: "`` style tag:
    the key path in front of it already says that.
    """
    try:
        build()
    except ValueError as exc:
        msg = str(exc)
        for tag in ("redirect: ", "respond: ", "deny: ", "path rewrite: ", "request_headers: ", "response_headers: "):
            msg = msg.removeprefix(tag)
        raise ValueError(msg) from None


# ---------------------------------------------------------------- conditions


class RouteMatch(Model):
    """Conditions of a route; all given conditions must hold (see docs/routing.md)."""

    host: str | None = Field(
        None,
        description="Host (port stripped, case-insensitive): a name, *.name, .name or ~regex.",
    )
    path_prefix: str | None = Field(None, description="The raw request path starts with this.")
    path: str | None = Field(None, description="The raw request path equals this, or ~regex is found in it.")
    methods: list[str] = Field(default_factory=list, description="Request methods (any case); empty = any.")
    headers: dict[str, CheckValue] = Field(
        default_factory=dict,
        description="Field name -> value (equals), ~regex (found in it), true (present) or false (absent).",
    )
    query: dict[str, CheckValue] = Field(
        default_factory=dict, description="Query parameter -> raw value, ~regex, true (present) or false (absent)."
    )
    cookies: dict[str, CheckValue] = Field(
        default_factory=dict, description="Cookie name -> value, ~regex, true (present) or false (absent)."
    )
    source: list[str] = Field(default_factory=list, description="Client address in one of these CIDRs.")
    language: list[str] = Field(
        default_factory=list,
        description="Language ranges this route serves; Accept-Language negotiation picks among the routes' ranges.",
    )
    browser: list[Browser] = Field(
        default_factory=list, description="Client kind from the User-Agent: mobile, tablet, desktop, bot (or a list)."
    )
    user_agent: str | None = Field(None, description="Regex searched in the User-Agent (with or without ~).")
    # TLS facts of the client connection (docs/tls.md); false on a plain listener.
    tls: bool | None = Field(None, description="true: the request came over TLS; false: over plain TCP.")
    tls_version: list[str] = Field(
        default_factory=list, description="TLS versions, e.g. [TLSv1.3] (1.2 and 1.3 accepted as short forms)."
    )
    tls_cipher: CheckValue | None = Field(None, description="The cipher suite's OpenSSL name, or ~regex.")
    sni: CheckValue | None = Field(
        None, description="The name the client sent in SNI (lower case), ~regex, true (sent) or false (not sent)."
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v if v.startswith("~") else normalise_name(v)
        server_name_kind(v)
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and compile_pattern(v) is None and not v.startswith("/") and v != "*":
            raise ValueError(f"expected a path starting with / or a ~regex, got {v!r}")
        return v

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"expected a path starting with /, got {v!r}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out = []
        for m in v:
            if not _TOKEN.fullmatch(m):
                raise ValueError(f"{m!r} is not a method name")
            out.append(m.upper())
        return out

    _numbers = field_validator("headers", "query", "cookies", mode="before")(
        lambda cls, v: _numbers_as_text(v)
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, CheckValue]) -> dict[str, CheckValue]:
        return _checks(v, "header", names_are_tokens=True)

    @field_validator("query")
    @classmethod
    def _query(cls, v: dict[str, CheckValue]) -> dict[str, CheckValue]:
        return _checks(v, "parameter", names_are_tokens=False)

    @field_validator("cookies")
    @classmethod
    def _cookies(cls, v: dict[str, CheckValue]) -> dict[str, CheckValue]:
        return _checks(v, "cookie", names_are_tokens=True)

    _source = field_validator("source")(lambda cls, v: _cidrs(v))

    @field_validator("tls_version")
    @classmethod
    def _tls_version(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            norm = {"1.2": "TLSv1.2", "1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3"}.get(item.lower())
            if norm is None:
                raise ValueError(f"expected TLSv1.2 or TLSv1.3 (pyvs serves no other), got {item!r}")
            out.append(norm)
        return out

    @field_validator("tls_cipher", "sni")
    @classmethod
    def _tls_pattern(cls, v: CheckValue | None) -> CheckValue | None:
        if isinstance(v, str):
            compile_pattern(v)  # a bad ~regex is reported here
        return v

    @field_validator("language")
    @classmethod
    def _language(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            rng = item.strip().lower()
            rng = rng[:-2] if rng.endswith("-*") else rng
            if not _LANGUAGE.fullmatch(rng):
                raise ValueError(f"{item!r} is not a language range like zh, zh-* or en-US")
            if rng not in out:
                out.append(rng)
        return out

    @field_validator("browser", mode="before")
    @classmethod
    def _one_browser(cls, v: Any) -> Any:
        """``browser: mobile`` is short for ``browser: [mobile]``."""
        return [v] if isinstance(v, str) else v

    @field_validator("user_agent")
    @classmethod
    def _user_agent(cls, v: str | None) -> str | None:
        if v is not None:
            compile_pattern(v, tilde_optional=True)
        return v

    def is_empty(self) -> bool:
        """True when no condition is given: the route matches every request."""
        return not (
            self.host is not None or self.path is not None or self.path_prefix is not None or self.methods
            or self.headers or self.query or self.cookies or self.source or self.language
            or self.browser or self.user_agent is not None
            or self.tls is not None or self.tls_version or self.tls_cipher is not None or self.sni is not None
        )


# ---------------------------------------------------------------- actions


class Redirect(Model):
    """Answer with a redirect instead of proxying."""

    to: str = Field(description="Target URL; $scheme, $host, $path and $query ($query with its ?) are filled in.")
    status: Literal[301, 302, 303, 307, 308] = Field(302, description="Redirect status code.")

    @model_validator(mode="after")
    def _builds(self) -> Redirect:
        from pyvs.l7.filters import actions

        _builds(lambda: actions.Redirect(self.to, self.status))
        return self


class Respond(Model):
    """Answer with a fixed response instead of proxying (maintenance page, health stub)."""

    status: int = Field(ge=200, le=599, description="Status code of the answer.")
    body: str = Field("", description="Body of the answer.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra response header fields.")
    content_type: str = Field("text/plain; charset=utf-8", description="Content-Type of the body.")

    @model_validator(mode="after")
    def _builds(self) -> Respond:
        from pyvs.l7.filters import actions

        _builds(lambda: actions.Respond(self.status, self.body, self.headers, self.content_type))
        return self


class Deny(Model):
    """Refuse requests: every matching one (an action), or those from ``source`` (a rule)."""

    status: int = Field(403, ge=400, le=599, description="Status code of the refusal.")
    body: str | None = Field(None, description="Body of the refusal; null = the standard error page.")
    source: list[str] = Field(
        default_factory=list,
        description="Refuse only clients in these CIDRs (an access rule; the route then needs an action).",
    )

    @model_validator(mode="before")
    @classmethod
    def _list_form(cls, data: Any) -> Any:
        """``deny: [CIDR, ...]`` is short for ``deny: {source: [...]}``."""
        return {"source": data} if isinstance(data, list) else data

    _source = field_validator("source")(lambda cls, v: _cidrs(v))

    @model_validator(mode="after")
    def _builds(self) -> Deny:
        from pyvs.l7.filters import actions

        _builds(lambda: actions.Deny(self.status, self.body))
        return self

    @property
    def is_action(self) -> bool:
        """Without ``source`` a deny refuses every request of its route: it is the action."""
        return not self.source


# ---------------------------------------------------------------- per-route features


class HeaderEdits(Model):
    """Header fields to set, add or remove; values may use %{variables}."""

    set: dict[str, str] = Field(default_factory=dict, description="Replace these fields (or add them if absent).")
    add: dict[str, str] = Field(default_factory=dict, description="Append these fields, keeping existing ones.")
    remove: list[str] = Field(default_factory=list, description="Remove these fields (any case).")

    # Checked by Route, which knows the side: a request may not set X-Forwarded-For,
    # a response may use %{server}.


class Rewrite(Model):
    """Change the path sent to the server: strip_prefix, then regex/replace, then add_prefix."""

    strip_prefix: str | None = Field(None, description="Remove this prefix from the path when present.")
    add_prefix: str | None = Field(None, description="Put this in front of the path.")
    regex: str | None = Field(None, description="Regex (with or without ~) replaced in the path by replace.")
    replace: str | None = Field(None, description="Replacement for regex; \\1 or \\g<name> insert groups.")

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        """Stored as the bare Python pattern the rewrite filter takes: ``~re`` -> ``re``,
        ``~*re`` -> ``(?i)re``."""
        if v is None:
            return None
        compile_pattern(v, tilde_optional=True)
        if v.startswith("~*"):
            return "(?i)" + v[2:]
        return v[1:] if v.startswith("~") else v

    @model_validator(mode="after")
    def _builds(self) -> Rewrite:
        from pyvs.l7.filters.rewrite import PathRewrite

        _builds(lambda: PathRewrite(self.strip_prefix, self.add_prefix, self.regex, self.replace))
        return self


class RouteTimeouts(Model):
    """Per-route overrides of the backend's timeouts (absent: the backend's)."""

    connect: Duration | None = Field(None, gt=0, description="TCP connect to a server.")
    server: Duration | None = Field(None, gt=0, description="Waiting for the server's response head and each read.")
    total: Duration | None = Field(None, gt=0, description="Whole exchange, request to end of response.")


_ACTIONS = ("backend", "redirect", "respond", "deny")


class Route(Model):
    """A routing rule: conditions, one action, and per-route features. First match wins."""

    name: str | None = Field(None, description="Name in logs, stats and pyvs route (default: generated).")
    match: RouteMatch | None = Field(None, description="Conditions; absent means match everything.")
    backend: str | None = Field(None, description="Action: send the request to this backend.")
    redirect: Redirect | None = Field(None, description="Action: answer with a redirect.")
    respond: Respond | None = Field(None, description="Action: answer with a fixed response.")
    deny: Deny | None = Field(
        None, description="Action: refuse (a mapping); or, as a CIDR list or with source, refuse those clients."
    )
    request_headers: HeaderEdits | None = Field(None, description="Edit the request fields sent to the server.")
    response_headers: HeaderEdits | None = Field(None, description="Edit the response fields sent to the client.")
    rewrite: Rewrite | None = Field(None, description="Rewrite the path sent to the server.")
    timeouts: RouteTimeouts | None = Field(None, description="Override the backend's timeouts for this route.")
    retries: int | None = Field(None, ge=0, le=10, description="Override the backend's retries for this route.")
    rate_limit: RateLimit | None = Field(
        None, description="Requests per key on this route, every worker together (docs/limits.md)."
    )
    allow: list[str] = Field(default_factory=list, description="Only clients in these CIDRs (others get 403).")
    compress: Compress | None = Field(
        None, description="Compress responses (docs/acceleration.md); replaces the listener's."
    )
    cache: Cache | None = Field(None, description="Cache responses in memory (docs/acceleration.md#cache).")
    buffer_response: Size | None = Field(
        None, gt=0, description="Read a response up to this size at once: its server is free while the client drains."
    )
    buffer_request: Size | None = Field(
        None, gt=0, description="Collect a request body up to this size before a server is asked."
    )

    _allow = field_validator("allow")(lambda cls, v: _cidrs(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() for c in v)):
            raise ValueError(f"expected a name without spaces, got {v!r}")
        return v

    @field_validator("request_headers")
    @classmethod
    def _request_headers(cls, v: HeaderEdits | None) -> HeaderEdits | None:
        if v is not None:
            from pyvs.l7.filters.headers import RequestHeaders

            _builds(lambda: RequestHeaders(v.set, v.add, v.remove))
        return v

    @field_validator("response_headers")
    @classmethod
    def _response_headers(cls, v: HeaderEdits | None) -> HeaderEdits | None:
        if v is not None:
            from pyvs.l7.filters.headers import ResponseHeaders

            _builds(lambda: ResponseHeaders(v.set, v.add, v.remove))
        return v

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        given = [a for a in _ACTIONS if self._has(a)]
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            hint = ""
            if not given and self.deny is not None:
                hint = "; a deny with source (or a CIDR list) is an access rule, not an action"
            raise ValueError(f"give exactly one of backend, redirect, respond, deny (got {got}{hint})")
        if self.backend is None:
            for key in ("request_headers", "response_headers", "rewrite", "timeouts", "retries", "compress", "cache",
                        "buffer_response", "buffer_request"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only for a route with a backend (this one has {given[0]})")
        return self

    def _has(self, action: str) -> bool:
        if action == "deny":
            return self.deny is not None and self.deny.is_action
        return getattr(self, action) is not None

    @property
    def action(self) -> str:
        """Which action this route takes: backend, redirect, respond or deny."""
        return next(a for a in _ACTIONS if self._has(a))


# ---------------------------------------------------------------- virtual hosts


class VHost(Model):
    """A set of host names with its own routes (nginx's server block)."""

    name: str | None = Field(None, description="Name in logs and stats; default: the first server name.")
    server_names: list[str] = Field(
        default_factory=list,
        description="Host names: exact, *.example.com, .example.com (name and subdomains) or ~regex.",
    )
    default: bool = Field(False, description="Serve requests whose Host no vhost names.")
    addresses: list[str] = Field(
        default_factory=list, description="Local IPs this vhost answers on; empty = any address."
    )
    routes: list[Route] = Field(min_length=1, description="Ordered routing rules of this vhost.")
    allow: list[str] = Field(default_factory=list, description="Only clients in these CIDRs (others get 403).")
    deny: list[str] = Field(default_factory=list, description="Refuse clients in these CIDRs (403).")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        """Fill ``name`` so that logs, stats and route names always have one: the first
        server name, else ``default`` (two unnamed defaults then clash and must be named)."""
        if isinstance(data, dict) and data.get("name") is None:
            names = data.get("server_names")
            if isinstance(names, list) and names and isinstance(names[0], str):
                first = names[0]
                return {**data, "name": first if first.startswith("~") else normalise_name(first)}
            if data.get("default") is True:
                return {**data, "name": "default"}
        return data

    @field_validator("server_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        out = []
        for raw in v:
            name = raw if raw.startswith("~") else normalise_name(raw)
            server_name_kind(name)
            out.append(name)
        return out

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            try:
                out.append(str(ipaddress.ip_address(item.strip("[]"))))
            except ValueError:
                raise ValueError(f"expected a local IP address, got {item!r}") from None
        return out

    _acl = field_validator("allow", "deny")(lambda cls, v: _cidrs(v))

    @model_validator(mode="after")
    def _reachable(self) -> VHost:
        if not self.server_names and not self.default:
            raise ValueError("a vhost needs server_names or default: true (otherwise no request reaches it)")
        return self


def check_vhosts(vhosts: list[VHost]) -> list[str]:
    """Cross-vhost rules of one listener: one default per address set, no name twice
    where addresses overlap, unique vhost names. Messages start with the vhost's path."""
    errors: list[str] = []
    defaults: dict[frozenset[str], int] = {}
    names: dict[tuple[str, str], list[tuple[int, frozenset[str]]]] = {}
    labels: dict[str, int] = {}
    for i, vh in enumerate(vhosts):
        addrs = frozenset(vh.addresses)
        if vh.default:
            if addrs in defaults:
                where = ", ".join(sorted(addrs)) if addrs else "any"
                errors.append(
                    f"vhosts[{i}].default: vhosts[{defaults[addrs]}] is already the default for addresses {where}"
                )
            else:
                defaults[addrs] = i
        for name in vh.server_names:
            kind, key = server_name_kind(name)
            group = "wild" if kind in ("wildcard", "dotted") else kind
            for j, other in names.get((group, key), []):
                if j != i and (not addrs or not other or addrs & other):
                    errors.append(
                        f"vhosts[{i}].server_names: {name!r} is also a name of vhosts[{j}] (their addresses overlap)"
                    )
                    break
            names.setdefault((group, key), []).append((i, addrs))
        if vh.name is not None:
            if vh.name in labels:
                errors.append(f"vhosts[{i}].name: {vh.name!r} is also the name of vhosts[{labels[vh.name]}]")
            else:
                labels[vh.name] = i
    return errors
