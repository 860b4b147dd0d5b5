"""Certificates: read a PEM certificate (with its chain) and key, and learn its names.

A certificate's names are what SNI selection and the SNI/Host rule compare with:
the DNS names of its subjectAltName, or, only when it has none, the subject's
common name (as browsers did before CN matching was dropped; a CN-only certificate
is still common on internal servers). Names are lower case; a wildcard name
``*.example.com`` covers exactly one label (``a.example.com``, not
``a.b.example.com`` nor ``example.com``), as RFC 6125 6.4.3 has it.

Loading happens while the configuration is validated, so ``pyvs check``, a start
and a reload all refuse a file that cannot be used, naming the key and the reason.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class CertFile:
    """A loaded certificate: its files, names and the PEM text of leaf plus chain."""

    cert: str
    key: str
    chain: str | None
    names: tuple[str, ...]  # lower case; wildcard names keep their "*."
    pem: bytes  # leaf certificate followed by the chain
    not_after: float  # expiry, Unix time (for logs and the status page)
    mtimes: tuple[tuple[str, float], ...]  # (path, mtime) of every file read

    def covers(self, host: str) -> bool:
        """Whether the certificate is valid for ``host`` (lower case, no port)."""
        return any(name_matches(n, host) for n in self.names)


def name_matches(name: str, host: str) -> bool:
    """``name`` (possibly ``*.x.y``) covers ``host``: equal, or the wildcard stands for
    exactly one non-empty label."""
    if name == host:
        return True
    if name.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == name[2:]
    return False


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4 * 1024 * 1024)
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def names_of(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names of the subjectAltName; the common name when there is no SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
        if names or san.get_values_for_type(x509.IPAddress):
            return tuple(names)
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(a.value).lower().rstrip(".") for a in cns)


def read(cert: str, key: str | None = None, chain: str | None = None) -> tuple[CertFile, bytes]:
    """Read and check ``cert`` (PEM, leaf first, chain may follow), ``chain`` and
    ``key`` (default: the key is in the cert file); return the certificate and the
    key's PEM, to be loaded into contexts with :func:`load_into` (the files are read
    once: what is checked is what is served). ValueError with the reason when a file
    is missing, is not PEM, or the key does not belong to the certificate."""
    keyfile = key or cert
    files = [cert, keyfile] + ([chain] if chain else [])
    # Times taken before reading: a file changed while being read is seen as changed.
    mtimes = tuple((p, _mtime(p)) for p in dict.fromkeys(files))
    pem = _read(cert, "certificate")
    if chain is not None:
        extra = _read(chain, "chain")
        pem = pem.rstrip(b"\n") + b"\n" + extra
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{cert}: not a PEM certificate") from None
    leaf = certs[0]
    key_pem = _read(keyfile, "key")
    if b"PRIVATE KEY-----" not in key_pem:
        raise ValueError(f"{keyfile}: no PEM private key in it")
    # The proof that key and certificate belong together: OpenSSL's own check.
    try:
        load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pem, key_pem)
    except ssl.SSLError as exc:
        raise ValueError(f"{keyfile} does not fit {cert} ({exc.reason or exc})") from None
    loaded = CertFile(cert=cert, key=keyfile, chain=chain, names=names_of(leaf), pem=pem,
                      not_after=leaf.not_valid_after_utc.timestamp(), mtimes=mtimes)
    return loaded, key_pem


def load(cert: str, key: str | None, chain: str | None, ctx: ssl.SSLContext) -> CertFile:
    """:func:`read`, then load the certificate into ``ctx``."""
    loaded, key_pem = read(cert, key, chain)
    load_into(ctx, loaded.pem, key_pem)
    return loaded


def load_into(ctx: ssl.SSLContext, pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from bytes: ssl only reads files, so the PEM goes through
    an anonymous memory file (never to disk, where the key would linger)."""
    fds = []
    try:
        for data in (pem, key_pem):
            fd = os.memfd_create("pyvs-tls", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)

