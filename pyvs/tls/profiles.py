"""TLS profiles: which protocol versions and TLS 1.2 cipher suites a listener offers.

The two profiles follow the Mozilla server-side TLS recommendations by name:

* ``intermediate`` (the default): TLS 1.2 and 1.3; for TLS 1.2 only ECDHE/DHE key
  exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), so every suite has
  forward secrecy. Fits every client of the last decade.
* ``modern``: TLS 1.3 only (its suites are all AEAD and need no choosing).

TLS 1.0 and 1.1 are never offered: a client that only speaks them fails the
handshake with a ``protocol_version`` alert (tests/integration/test_tls.py).
The TLS 1.3 suites are OpenSSL's defaults in both profiles. Compression and
renegotiation are off (CRIME, client-initiated renegotiation DoS).
"""

from __future__ import annotations

import ssl
from typing import Final, Literal

Profile = Literal["intermediate", "modern"]

# OpenSSL names of the TLS 1.2 suites, in the server's order of preference (ECDSA
# first so that a dual-certificate setup prefers the cheaper signature).
INTERMEDIATE_TLS12: Final = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
))

PROFILES: Final = ("intermediate", "modern")


def apply(ctx: ssl.SSLContext, profile: Profile) -> None:
    """Set versions, suites and options of ``profile`` on a server context."""
    if profile == "modern":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(INTERMEDIATE_TLS12)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    # Both profiles leave the choice of suite to the client (its hardware may lack
    # AES acceleration), as Mozilla recommends for suites that are all strong.
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
