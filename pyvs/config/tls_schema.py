"""Configuration of TLS: a listener's ``tls`` section and a server's ``tls``.

The files are read while the configuration is validated: a missing or broken
certificate, key or CA is an error of ``pyvs check`` (and refuses a start or a
reload) that names the key, e.g. ``listeners[0].tls.certificates[1]: cannot read
the key /etc/pyvs/b.key: No such file or directory``. The contexts built then are
kept on the model (a private attribute), so the supervisor holds them before it
forks the workers, with the session-ticket keys every worker shares
(pyvs/tls/tickets.py).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from pyvs.config.schema_base import Model
from pyvs.config.units import Duration

if TYPE_CHECKING:  # pyvs.tls (and cryptography) load only for a config that has TLS
    from pyvs.tls.certs import CertFile
    from pyvs.tls.server import TlsServer

_ALPN = ("http/1.1", "h2")


class TlsCertificate(Model):
    """One certificate of a TLS listener."""

    cert: str = Field(description="PEM file: the certificate, optionally followed by its chain.")
    key: str | None = Field(None, description="PEM private key (default: in the cert file).")
    chain: str | None = Field(None, description="PEM file of intermediate certificates (if not in cert).")
    default: bool = Field(
        False,
        description="Served to clients without SNI or with a name no certificate has "
        "(a listener with one certificate: that one).",
    )
    _read: object = PrivateAttr(None)  # (CertFile, key PEM), read once at validation

    @model_validator(mode="after")
    def _load(self) -> TlsCertificate:
        from pyvs.tls.certs import read

        self._read = read(self.cert, self.key, self.chain)
        return self

    def files(self) -> tuple[CertFile, bytes]:
        """The certificate and key as read at validation."""
        return self._read  # type: ignore[return-value]


class Hsts(Model):
    """Strict-Transport-Security on every response of a TLS listener."""

    max_age: Duration = Field(31536000.0, ge=0, description="How long browsers remember to use https only.")
    include_subdomains: bool = Field(False, description="Add includeSubDomains.")
    preload: bool = Field(False, description="Add preload (for the browsers' preload lists).")


class TlsListener(Model):
    """TLS termination on an http listener (docs/tls.md)."""

    certificates: list[TlsCertificate] = Field(
        min_length=1, description="Certificates, chosen by SNI from each one's DNS names (exact, then *.wildcard)."
    )
    profile: Literal["intermediate", "modern"] = Field(
        "intermediate", description="intermediate: TLS 1.2 (AEAD, forward secret) and 1.3; modern: TLS 1.3 only."
    )
    alpn: list[str] = Field(
        default_factory=lambda: ["http/1.1"],
        description="Protocols offered by ALPN, in order: h2 and/or http/1.1 (h2: HTTP/2, docs/http2.md).",
    )
    session_tickets: bool = Field(
        True, description="Resumption by session tickets; the keys are the same in all workers."
    )
    ticket_rotation: Duration = Field(
        3600.0, ge=0, description="Session-ticket keys change this often; a ticket resumes for one to two "
        "periods (0: OpenSSL's own keys, renewed at each reload only)."
    )
    ticket_key_file: str | None = Field(
        None, description="File of at least 48 random bytes the ticket keys derive from: nodes sharing it "
        "resume each other's tickets, across reloads (absent: a random secret per start and reload)."
    )
    client_ca: str | None = Field(None, description="PEM CA file: ask clients for a certificate signed by it (mTLS).")
    client_verify: Literal["required", "optional"] = Field(
        "required", description="With client_ca: refuse clients without a valid certificate, or only ask."
    )
    client_subject_header: str = Field(
        "X-SSL-Client-DN",
        description="With client_ca: the header carrying the verified client subject to the server "
        "(what the client sent under that name is removed).",
    )
    hsts: Hsts | None = Field(None, description="Strict-Transport-Security on responses (none: not sent).")
    check_host: bool = Field(
        True, description="421 for a request whose Host the certificate chosen by SNI does not cover."
    )
    handshake_timeout: Duration = Field(10.0, gt=0, description="Time allowed for a TLS handshake.")
    watch_interval: Duration = Field(
        5.0, ge=0, description="How often the certificate files are checked for changes (0: only on reload)."
    )
    _server: object = PrivateAttr(None)

    @field_validator("alpn")
    @classmethod
    def _alpn(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in _ALPN:
                raise ValueError(f"unknown protocol {p!r}; known: {', '.join(_ALPN)}")
        if len(set(v)) != len(v):
            raise ValueError("a protocol is named twice")
        return v

    @field_validator("ticket_rotation")
    @classmethod
    def _rotation(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError("expected 0 (off) or at least 1s")
        return v

    @field_validator("client_subject_header")
    @classmethod
    def _header(cls, v: str) -> str:
        from pyvs.l7.filters.headers import check_managed, check_name

        check_managed(v, check_name(v))
        return v

    @model_validator(mode="after")
    def _load(self) -> TlsListener:
        from pyvs.tls.server import CertSpec, TlsServer

        defaults = [i for i, c in enumerate(self.certificates) if c.default]
        if len(defaults) > 1:
            raise ValueError(f"certificates[{defaults[1]}].default: only one certificate can be the default")
        specs = [CertSpec(*c.files(), default=c.default) for c in self.certificates]
        key = None
        if self.ticket_key_file is not None:
            if not self.session_tickets or not self.ticket_rotation:
                raise ValueError("ticket_key_file: needs session_tickets and a ticket_rotation above 0")
            from pyvs.tls.tickets import secret_of_file

            try:
                key = secret_of_file(self.ticket_key_file)
            except ValueError as exc:
                raise ValueError(f"ticket_key_file: {exc}") from None
        self._server = TlsServer(specs, profile=self.profile, alpn=self.alpn, client_ca=self.client_ca,
                                 client_verify=self.client_verify, tickets=self.session_tickets,
                                 ticket_rotation=self.ticket_rotation, ticket_key=key)
        return self

    @property
    def server(self) -> TlsServer:
        """The loaded certificates and contexts (built at validation)."""
        assert self._server is not None
        return self._server  # type: ignore[return-value]


class ServerTls(Model):
    """TLS from pyvs to one server (and its http health checks)."""

    verify: bool = Field(True, description="Check the server's certificate (chain to ca, name sni or host).")
    ca: str | None = Field(None, description="PEM CA file to verify against (default: the system's trust store).")
    sni: str | None = Field(None, description="Name sent as SNI and verified (default: the server's host).")
    cert: str | None = Field(None, description="PEM client certificate for servers that ask for one.")
    key: str | None = Field(None, description="PEM key of cert (default: in the cert file).")
    _context: object = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> ServerTls:
        from pyvs.tls.client import client_context

        if self.key is not None and self.cert is None:
            raise ValueError("key: needs cert")
        self._context = client_context(self.verify, self.ca, self.cert, self.key)
        return self

    @property
    def context(self) -> ssl.SSLContext:
        assert isinstance(self._context, ssl.SSLContext)
        return self._context
