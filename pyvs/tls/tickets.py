"""Session-ticket keys that rotate every ``tls.ticket_rotation``, the same in all workers.

Theory of operation
-------------------
Python's ssl module cannot set OpenSSL's ticket key callback, so the C helper
:mod:`pyvs.tls._tickets` installs one on the ``SSL_CTX`` of each of a listener's
contexts (how it finds that pointer, and why it is safe, is in its header). The
keys of a time epoch (``floor(unix time / ticket_rotation)``) are derived from a
secret -- 32 random bytes drawn each time a listener's TLS settings are loaded, in
the supervisor before any worker is forked -- and a label of the listener's security
settings. Every worker therefore computes the same keys without any message or
shared memory. A reload (a changed certificate or client CA causes one) draws a new
secret, as OpenSSL's own keys were renewed: what a reload revokes stops resuming, and
the keys of before it are gone once its old workers exit. With ``tls.ticket_key_file``
the secret comes from that file instead: several pyvs nodes with the same file (and
synchronised clocks) resume each other's tickets -- a VRRP backup taking over, or
nodes behind one DNS name -- and so does pyvs after a reload or a restart; whoever
reads the file can decrypt every ticket made from it (as with nginx's and HAProxy's
key files).

The current epoch's key encrypts new tickets; a ticket of the previous epoch still
resumes and is replaced by a new one (nginx's and HAProxy's behaviour with several
keys); older tickets, or tickets of another listener or pyvs instance, fall back to a
full handshake. A ticket therefore resumes for between one and two rotation periods.

The label holds what must not be shared between listeners: the profile, the client CA
and its mode, and the certificates' names. A session of a listener without client
certificates can thus never resume on an mTLS listener (CPython gives every context
the same session id context, so OpenSSL alone would not stop it).

Because finding the ``SSL_CTX`` relies on CPython's object layout, :func:`available`
checks the interpreter and the OpenSSL build, then proves the mechanism once per
process with a real handshake and a resumption over memory BIOs. When anything does
not hold -- or the helper was not built (no OpenSSL headers where pyvs was
installed) -- pyvs logs one warning and keeps OpenSSL's own keys: shared by all
workers (the contexts are built before the fork), renewed at each reload only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import ssl
import sys
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("pyvs.tls")

try:
    from pyvs.tls import _tickets
except ImportError:  # built without the OpenSSL headers: OpenSSL's own keys
    _tickets = None  # type: ignore[assignment]

# CPython versions whose PySSLContext starts with the SSL_CTX pointer (Modules/_ssl.c).
_LAYOUT_KNOWN = ((3, 8), (3, 13))

# TLS 1.3 tickets per new connection (OpenSSL's default): a client may resume two
# connections in parallel with them.
TICKETS = 2

_verdict: str | None = None  # "" = usable, else why not (checked once per process)


def label(profile: str, client_ca: str | None, client_verify: str, names: Iterable[str]) -> bytes:
    """What separates the keys of two listeners (see the module docstring): the client
    CA by its contents, so that nodes sharing a key file agree and a replaced CA file
    never resumes the sessions of the certificates it no longer trusts."""
    ca = ""
    if client_ca:
        try:
            with open(client_ca, "rb") as f:
                ca = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            ca = client_ca  # (loading it fails elsewhere, with the reason)
    return repr((profile, ca, client_verify if client_ca else "", sorted(set(names)))).encode()


def _why_not() -> str:
    """Empty when the C helper may be used, else the reason it may not."""
    if _tickets is None:
        return "pyvs.tls._tickets is not built (install libssl-dev and reinstall pyvs)"
    if platform.python_implementation() != "CPython":
        return f"{platform.python_implementation()} is not CPython"
    if not _LAYOUT_KNOWN[0] <= sys.version_info[:2] <= _LAYOUT_KNOWN[1]:
        return f"CPython {sys.version_info[0]}.{sys.version_info[1]} is not a version whose ssl layout is known"
    if _tickets.openssl_version() != ssl.OPENSSL_VERSION_NUMBER:
        return (f"the helper's OpenSSL ({_tickets.openssl_version():#x}) is not the one of Python's ssl "
                f"({ssl.OPENSSL_VERSION_NUMBER:#x})")
    try:
        _self_test()
    except Exception as exc:  # anything: fall back, never fail a start for this
        return f"the self-test failed: {exc}"
    return ""


def available() -> bool:
    """Whether rotating keys can be installed (decided and logged once per process)."""
    global _verdict
    if _verdict is None:
        _verdict = _why_not()
        if _verdict:
            log.warning("TLS session tickets: timed key rotation is off (%s); OpenSSL's own keys are used, "
                        "shared by all workers and renewed at each reload", _verdict)
    return not _verdict


def helper_state() -> tuple[bool | None, str | None]:
    """For /status: whether the C helper is in use in this process (None: never asked,
    no listener has session tickets), and why not when it is not."""
    if _verdict is None:
        return None, None
    return not _verdict, _verdict or None


def secret_of_file(path: str) -> bytes:
    """The secret of a ``ticket_key_file``: at least 32 bytes of it (``openssl rand 80``,
    like nginx's ``ssl_session_ticket_key`` files), hashed. ValueError with the reason."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) < 48 or (data.isascii() and data.rstrip(b"\r\n").decode().isprintable()):
        # (48 or 80 raw bytes, as nginx's ssl_session_ticket_key files: not a passphrase)
        raise ValueError(f"{path}: needs at least 48 bytes of random data (e.g. openssl rand 80 > {path})")
    return hashlib.sha256(b"pyvs ticket key file\0" + data).digest()


def install(contexts: Iterable[ssl.SSLContext], lbl: bytes, period: float, key: bytes) -> bool:
    """Install the rotating keys on every context of one listener (``key``: the secret:
    a ticket_key_file's, else drawn for this load of the listener); False (OpenSSL's
    own keys stay) when :func:`available` says no or a context refuses. Every context
    is checked before any gets the keys: a listener never mixes the two."""
    if not available():
        return False
    assert _tickets is not None
    contexts = list(contexts)
    try:
        for ctx in contexts:
            _tickets.check(ctx, int(ctx.options), int(ctx.verify_mode))
        for ctx in contexts:
            _tickets.install(ctx, key, lbl, max(1, round(period)), int(ctx.options), int(ctx.verify_mode))
    except (RuntimeError, TypeError, ValueError) as exc:
        log.warning("TLS session tickets: timed key rotation not installed (%s)", exc)
        return False
    return True


def defer(contexts: Iterable[ssl.SSLContext]) -> int:
    """TLS 1.3 tickets sent with the first response instead of right after the handshake
    (one write less per connection; :func:`queue`): the number to queue per connection,
    0 when not available (OpenSSL then sends its two at the end of the handshake)."""
    if not available():
        return 0
    for ctx in contexts:
        ctx.num_tickets = 0
    return TICKETS


def queue(sslobj: ssl.SSLObject, n: int) -> bool:
    """Queue ``n`` tickets on a TLS 1.3 server connection: they leave in front of its
    next write. False for TLS 1.2 (its ticket is part of the handshake)."""
    assert _tickets is not None
    return _tickets.new_tickets(sslobj._sslobj, n)  # type: ignore[attr-defined]


def statistics() -> dict[str, int]:
    """Tickets of this process: issued, resumed with the current key, resumed with the
    previous key (and renewed), and presented but unknown (too old, or foreign)."""
    if _tickets is None:
        return {}
    enc, cur, renewed, unknown = _tickets.stats()
    return {"issued": enc, "resumed": cur, "renewed": renewed, "unknown": unknown}


def set_clock(t: float) -> None:
    """Tests: the time (seconds) the key epochs follow in this process; 0: the real clock."""
    if _tickets is not None:
        _tickets.set_clock(float(t))


# ------------------------------------------------------------------ self-test

def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, session: Any = None,
               name: str = "pyvs.invalid", queued: int = 0) -> ssl.SSLObject:
    """A complete handshake over memory BIOs, ``queued`` tickets queued by
    :func:`queue`, and one byte from the server (the TLS 1.3 tickets are read with it);
    the client's SSLObject."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=name, session=session)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c_done = s_done = False
    for _ in range(10):
        if not c_done:
            try:
                c.do_handshake()
                c_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not s_done:
            try:
                s.do_handshake()
                s_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if c_done and s_done:
            break
    if queued:
        queue(s, queued)
    s.write(b"x")
    c_in.write(s_out.read())
    assert c.read(1) == b"x"  # the client has read the tickets that came before
    return c


def _probe_context() -> ssl.SSLContext:
    """A throwaway server context with a fresh self-signed P-256 certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from pyvs.tls.certs import load_into

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyvs.invalid")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_into(ctx, cert.public_bytes(serialization.Encoding.PEM),
              key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    return ctx


def _self_test() -> None:
    """Issue a ticket with the helper's keys (TLS 1.3: queued, sent with data) and resume
    with it, TLS 1.2 and 1.3; the helper's counters must show that its callback did both."""
    assert _tickets is not None
    server = _probe_context()
    _tickets.install(server, os.urandom(32), b"self-test", 3600, int(server.options), int(server.verify_mode))
    server.num_tickets = 0  # the tickets of TLS 1.3 come from queue() (defer)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.maximum_version = version
        before = _tickets.stats()
        first = _handshake(server, client, queued=TICKETS)
        if first.session is None or not first.session.has_ticket:
            raise RuntimeError(f"no ticket issued ({version.name})")
        again = _handshake(server, client, first.session)
        after = _tickets.stats()
        if not again.session_reused:
            raise RuntimeError(f"the ticket did not resume ({version.name})")
        if after[0] <= before[0] or after[1] <= before[1]:
            raise RuntimeError(f"the ticket callback was not used ({version.name})")
