"""TLS counters: handshakes, resumptions, versions, ALPN, failures by reason, tickets.

Theory of operation
-------------------
Each worker keeps one :class:`TlsStats` per TLS listener, on the listener's
:class:`~pyvs.tls.conn.TlsEndpoint` (``endpoint.stats``). The counting sites are
the two places where a handshake ends, and nothing else:

* a completed handshake is counted in
  :meth:`pyvs.tls.conn.TlsConnection.connection_made`, which uvloop calls once the
  handshake is done: a few integer increments, the version read from the bytes the
  connection's facts already hold, ``session_reused`` (a C getter that answers a
  bool), and the protocol ALPN chose only on a listener offering a choice;
* a failed one in :meth:`pyvs.tls.transport.ServerSSL.connection_lost`, when the
  connection ends before its application protocol ever heard of it. The reason is
  read from the OpenSSL error (the one kept for the alert of correction 1 in
  :mod:`pyvs.tls.transport`, else the one the connection ended with): see
  :func:`reason_of`. A handshake that ran out of ``handshake_timeout`` ends with
  uvloop's ``ConnectionAbortedError``; a client that went away, with an EOF or a reset.

Nothing is counted per request, no object is made per connection. Workers ship
:func:`report` with their other counters; the supervisor sums them with
:func:`aggregate` into ``/status``'s ``tls`` object, which
:mod:`pyvs.admin.metrics` exports as the ``pyvs_tls_*`` families.

Failures are only counted where pyvs runs its own TLS protocol
(:func:`pyvs.tls.transport.usable`); with uvloop's own TLS (an untested uvloop
version) only completed handshakes are.
"""

from __future__ import annotations

import math
import os
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvs.config.schema import Listener
    from pyvs.l7.listener import ListenerRuntime
    from pyvs.tls.server import TlsServer

# Why a handshake failed: a small fixed set, in the order of the TlsStats.failed slots.
REASONS = (
    "version",  # the client offered only versions the profile refuses (TLS 1.0/1.1, 1.2 on modern)
    "cipher",  # no cipher suite, group or signature algorithm in common
    "sni",  # no certificate for the name asked, and no default one (unrecognized_name)
    "client_cert",  # mTLS: no client certificate, or one that did not verify
    "peer_alert",  # the client gave up with an alert (e.g. it does not trust our certificate)
    "not_tls",  # plain HTTP, or other bytes that are not TLS
    "timeout",  # the handshake took longer than tls.handshake_timeout
    "aborted",  # the client closed or reset the connection during the handshake
    "other",
)
VERSION, CIPHER, SNI, CLIENT_CERT, PEER_ALERT, NOT_TLS, TIMEOUT, ABORTED, OTHER = range(len(REASONS))

# OpenSSL reason codes (ssl.SSLError.reason) by failure reason.
_BY_OPENSSL = {
    **dict.fromkeys(("UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW", "WRONG_SSL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                     "UNKNOWN_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "INAPPROPRIATE_FALLBACK"), VERSION),
    **dict.fromkeys(("NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE_KEY_SHARE", "NO_SHARED_GROUPS",
                     "NO_SUITABLE_SIGNATURE_ALGORITHM", "NO_SHARED_SIGNATURE_ALGORITHMS",
                     "TLSV1_ALERT_INSUFFICIENT_SECURITY", "SSLV3_ALERT_HANDSHAKE_FAILURE"), CIPHER),
    # The only callback of a server context that can fail a handshake is the SNI one
    # (pyvs.tls.server.TlsServer.on_sni answers unrecognized_name).
    **dict.fromkeys(("CALLBACK_FAILED", "TLSV1_UNRECOGNIZED_NAME"), SNI),
    **dict.fromkeys(("CERTIFICATE_VERIFY_FAILED", "PEER_DID_NOT_RETURN_A_CERTIFICATE",
                     "TLSV13_ALERT_CERTIFICATE_REQUIRED"), CLIENT_CERT),
    **dict.fromkeys(("HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG",
                     "RECORD_LENGTH_MISMATCH", "UNEXPECTED_RECORD", "RECORD_LAYER_FAILURE"), NOT_TLS),
}


def reason_of(exc: BaseException | None) -> int:
    """The slot of :data:`REASONS` for the exception a handshake ended with (the
    SSLError kept for its alert when there was one)."""
    if isinstance(exc, ssl.SSLError):
        if isinstance(exc, ssl.SSLCertVerificationError):
            return CLIENT_CERT
        code = exc.reason or ""
        slot = _BY_OPENSSL.get(code)
        if slot is not None:
            return slot
        if code.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            return PEER_ALERT  # (the alerts we send ourselves are named above)
        if isinstance(exc, ssl.SSLEOFError):
            return ABORTED
        return OTHER
    if isinstance(exc, ConnectionAbortedError):  # uvloop's handshake timeout
        return TIMEOUT
    if exc is None or isinstance(exc, (ConnectionError, OSError)):
        return ABORTED
    return OTHER


class TlsStats:
    """One TLS listener's counters in one worker (plain integers; see the module
    docstring for where each is bumped). TLS 1.2 handshakes are the completed ones
    that are not TLS 1.3 (the profiles allow no other version); ALPN is counted only
    on a listener that offers more than one protocol (``count_alpn``)."""

    __slots__ = ("alpn_h2", "alpn_http11", "count_alpn", "failed", "handshakes", "resumed", "tls13")

    def __init__(self, count_alpn: bool = False) -> None:
        self.handshakes = 0
        self.resumed = 0
        self.tls13 = 0
        self.alpn_h2 = 0
        self.alpn_http11 = 0
        self.count_alpn = count_alpn
        self.failed = [0] * len(REASONS)
        _mark_tickets()

    def failure(self, exc: BaseException | None) -> None:
        """A handshake that did not complete (the failure path only)."""
        self.failed[reason_of(exc)] += 1

    def snapshot(self) -> list[int]:
        """The counters in the order of :data:`FIELDS` (the worker's report)."""
        return [self.handshakes, self.resumed, self.tls13, self.alpn_h2, self.alpn_http11, *self.failed]


FIELDS = ("handshakes", "resumed", "tls13", "alpn_h2", "alpn_http11", *(f"failed_{r}" for r in REASONS))


# The C helper's ticket counters when this process built its first TLS listener: a
# worker inherits the supervisor's (its self-test's handshakes) through the fork.
_tickets_base: tuple[int, dict[str, int]] = (0, {})


def _mark_tickets() -> None:
    global _tickets_base
    if _tickets_base[0] != os.getpid():
        from pyvs.tls import tickets

        _tickets_base = (os.getpid(), tickets.statistics())


def report(listeners: Iterable[ListenerRuntime]) -> dict[str, Any] | None:
    """This worker's TLS counters: per listener (:data:`FIELDS` order) and the
    session-ticket counters of the process since it built its listeners; None without
    a TLS listener."""
    out = {lst.cfg.name: lst.tls.stats.snapshot() for lst in listeners if lst.tls is not None}
    if not out:
        return None
    from pyvs.tls import tickets

    base = _tickets_base[1] if _tickets_base[0] == os.getpid() else {}
    return {"listeners": out, "tickets": {k: v - base.get(k, 0) for k, v in tickets.statistics().items()}}


def _view(v: list[int]) -> dict[str, Any]:
    """One listener's (or the total's) summed counters, as /status shows them."""
    c = dict(zip(FIELDS, v, strict=False))
    done = c["handshakes"]
    failures = {r: c[f"failed_{r}"] for r in REASONS}
    return {
        "handshakes": done,
        "failed": sum(failures.values()),
        "resumed": c["resumed"],
        "resumed_pct": round(100 * c["resumed"] / done, 1) if done else None,
        "failures": failures,
        "versions": {"TLSv1.2": done - c["tls13"], "TLSv1.3": c["tls13"]},
        "alpn": {"h2": c["alpn_h2"], "http/1.1": c["alpn_http11"]},
    }


def ticket_mode(server: TlsServer) -> str:
    """How a listener's session tickets are keyed: ``rotating`` (pyvs's keys, the C
    helper), ``openssl`` (OpenSSL's own keys) or ``off``."""
    ctx = server.front
    if ctx.options & ssl.OP_NO_TICKET:
        return "off"
    return "rotating" if server.rotation else "openssl"


def rotations(server: TlsServer, now: float | None = None) -> int:
    """Ticket key changes since this listener's keys were installed (the start or the
    last reload): the epochs that began since then. The same in every worker."""
    period = server.rotation
    since = server.keys_since
    if not period or not since:
        return 0
    t = time.time() if now is None else now
    return max(0, math.floor(t / period) - math.floor(since / period))


def aggregate(reports: list[dict[str, Any]], listeners: Iterable[Listener]) -> dict[str, Any]:
    """The workers' :func:`report` summed for ``/status``: ``{"tls": {...}}`` with
    ``listeners`` (by name, the TLS listeners configured now), ``total`` and the
    session-ticket state; ``{}`` without a TLS listener (no ``tls`` key then)."""
    tls_listeners = [lc for lc in listeners if lc.tls is not None]
    if not tls_listeners:
        return {}
    sums = {lc.name: [0] * len(FIELDS) for lc in tls_listeners}
    tickets: dict[str, int] = {}
    for rep in reports:
        tls = rep.get("tls")
        if not tls:
            continue
        for name, v in (tls.get("listeners") or {}).items():
            into = sums.get(name)
            if into is not None:  # (a retired worker's listener that is gone: not shown)
                for i, x in enumerate(v[: len(FIELDS)]):
                    into[i] += int(x)
        for k, x in (tls.get("tickets") or {}).items():
            tickets[k] = tickets.get(k, 0) + int(x)
    total = [0] * len(FIELDS)
    out_listeners: dict[str, Any] = {}
    for lc in tls_listeners:
        assert lc.tls is not None
        v = sums[lc.name]
        for i, x in enumerate(v):
            total[i] += x
        server = lc.tls.server
        view = _view(v)
        if len(lc.tls.alpn) < 2:
            view["alpn"] = None  # a single protocol offered: not counted (TlsStats)
        out_listeners[lc.name] = {
            **view,
            "session_tickets": ticket_mode(server),
            "ticket_rotation": server.rotation or None,
            "ticket_key_rotations": rotations(server),
        }
    from pyvs.tls import tickets as keys
    from pyvs.tls import transport

    total_view = _view(total)
    counted = not transport.WHY_NOT  # uvloop's own TLS (the fallback) tells pyvs of no failure
    if not counted:
        for view in [*out_listeners.values(), total_view]:
            view["failed"] = view["failures"] = None  # unknown, not zero
    helper = keys.helper_state()
    return {"tls": {
        "failures_counted": counted,
        "listeners": out_listeners,
        "total": total_view,
        "ticket_helper": helper[0],
        "ticket_helper_reason": helper[1],
        "tickets": tickets,
    }}

