"""A TLS listener's contexts, and the choice of certificate by SNI.

Theory of operation
-------------------
Every certificate of a listener gets its own :class:`ssl.SSLContext`, all configured
alike (profile, ALPN, client verification). The listening socket is given the
*front* context: the default certificate's (the first one when there is no
default). OpenSSL calls :meth:`TlsServer.on_sni` for every ClientHello, with the
name the client asked for or None; it picks a certificate -- exact name, then the
one-label wildcard, then the default -- and switches the connection to that
certificate's context. With no match and no default the handshake is refused with
an ``unrecognized_name`` alert, before any certificate is shown.

Session resumption. With ``ticket_rotation`` (the default) every context of the
listener gets the ticket keys of :mod:`pyvs.tls.tickets`: derived per time epoch from
a secret the supervisor draws before forking, so every worker has the same keys, they
rotate on the clock, and a reload keeps them. Without it (or where the helper cannot
be used) OpenSSL's own keys apply: it encrypts tickets with the keys of the context
the connection *started* on (the front context), created in the supervisor before the
fork, hence shared by the workers too, and new at each reload.

The facts of a connection (version, cipher, SNI, the certificate chosen, the client
certificate's subject) are read from its ``SSLObject`` when first asked for
(:mod:`pyvs.tls.conn`): the SNI callback leaves the name and the certificate's index
on that object.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyvs.tls import certs, profiles
from pyvs.tls.certs import CertFile

REFUSE = ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME


@dataclass(frozen=True, slots=True)
class CertSpec:
    """One certificate as read while the configuration was validated (pyvs.tls.certs.read)."""

    loaded: CertFile
    key_pem: bytes
    default: bool = False


def server_context(profile: profiles.Profile, alpn: Sequence[str], client_ca: str | None,
                   client_verify: str, tickets: bool) -> ssl.SSLContext:
    """A server context with everything but the certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    profiles.apply(ctx, profile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ValueError(f"cannot load the client CA {client_ca}: {why}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_verify == "required" else ssl.CERT_OPTIONAL
    return ctx


class TlsServer:
    """A listener's certificates and contexts (see the module docstring)."""

    __slots__ = ("certs", "contexts", "default", "exact", "front", "keys_since", "mtimes", "queued_tickets", "rotation",
                 "wild")

    def __init__(self, specs: Sequence[CertSpec], *, profile: profiles.Profile = "intermediate",
                 alpn: Sequence[str] = ("http/1.1",), client_ca: str | None = None,
                 client_verify: str = "required", tickets: bool = True, ticket_rotation: float = 0.0,
                 ticket_key: bytes | None = None) -> None:
        """One context per certificate; ValueError (``client_ca: ...``) when the
        client CA cannot be loaded."""
        contexts: list[ssl.SSLContext] = []
        for spec in specs:
            try:
                ctx = server_context(profile, alpn, client_ca, client_verify, tickets)
            except ValueError as exc:
                raise ValueError(f"client_ca: {exc}") from None
            certs.load_into(ctx, spec.loaded.pem, spec.key_pem)
            contexts.append(ctx)
        self.certs = tuple(s.loaded for s in specs)
        self.contexts = tuple(contexts)
        defaults = [i for i, s in enumerate(specs) if s.default]
        self.default: int | None = defaults[0] if defaults else (0 if len(specs) == 1 else None)
        self.exact: dict[str, int] = {}
        self.wild: dict[str, int] = {}
        for i, c in enumerate(self.certs):
            for name in c.names:
                if name.startswith("*."):
                    self.wild.setdefault(name[2:], i)
                else:
                    self.exact.setdefault(name, i)
        self.front = self.contexts[self.default if self.default is not None else 0]
        self.front.sni_callback = self.on_sni
        self.mtimes = tuple(m for c in self.certs for m in c.mtimes)
        # Ticket keys rotated on a clock, the same in every worker (pyvs/tls/tickets.py);
        # 0: OpenSSL's own keys (shared through the fork, renewed at each reload).
        self.rotation = 0.0
        self.keys_since = 0.0  # when the rotating keys were installed (key rotations since: pyvs/tls/stats.py)
        # TLS 1.3 tickets queued per connection, sent with its first response (0: sent by
        # OpenSSL at the end of the handshake, one write more per connection).
        self.queued_tickets = 0
        if tickets:
            from pyvs.tls import tickets as keys

            usable = True
            if ticket_rotation > 0:
                lbl = keys.label(profile, client_ca, client_verify, self.names())
                # A new secret per load of the settings (a reload renews the keys), or the key file's.
                usable = keys.install(self.contexts, lbl, ticket_rotation,
                                      ticket_key if ticket_key is not None else os.urandom(32))
                self.rotation = float(ticket_rotation) if usable else 0.0
                self.keys_since = time.time() if usable else 0.0
            if usable:  # (a context the helper refused keeps all of OpenSSL's behaviour)
                self.queued_tickets = keys.defer(self.contexts)

    def select(self, name: str | None) -> int | None:
        """The certificate for SNI ``name``: exact, wildcard, default (None: refuse)."""
        if name:
            name = name.lower().rstrip(".")
            i = self.exact.get(name)
            if i is not None:
                return i
            _, dot, rest = name.partition(".")
            if dot:
                i = self.wild.get(rest)
                if i is not None:
                    return i
        return self.default

    def on_sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> int | None:
        """OpenSSL's servername callback (every ClientHello, ``name`` None without SNI)."""
        i = self.select(name)
        if i is None:
            return REFUSE
        # Read back by pyvs.tls.conn.TlsFacts; SSLObject takes attributes.
        sslobj.pyvs_sni = name  # type: ignore[union-attr]
        sslobj.pyvs_cert = i  # type: ignore[union-attr]
        chosen = self.contexts[i]
        if chosen is not ctx:
            sslobj.context = chosen
        return None

    def names(self) -> list[str]:
        return [n for c in self.certs for n in c.names]

    def statistics(self) -> dict[str, Any]:
        """What /status shows of the listener's TLS: each certificate's file, names,
        expiry, and which one is the default."""
        return {"session_ticket_rotation": self.rotation or None, "certificates": [
            {"cert": c.cert, "names": list(c.names), "default": i == self.default,
             "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.not_after)),
             "expires_in_days": round((c.not_after - time.time()) / 86400, 1)}
            for i, c in enumerate(self.certs)
        ]}
