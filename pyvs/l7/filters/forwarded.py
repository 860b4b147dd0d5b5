"""Forwarding fields: X-Forwarded-For/-Proto/-Host, Forwarded (RFC 7239), Via.

Every request a listener forwards carries them, so this filter is not in a route's
chain: the exchange calls :meth:`ForwardedHeaders.add` while it writes the head on
the general path. The default set (X-Forwarded-For/-Proto/-Host, client not a trusted
proxy) is also inlined in the exchange's short path as one ``join``; this class is
the reference for what that join must produce.

From a trusted proxy (``forwarded.trusted_proxies``) the incoming values are kept
and appended to; from anyone else they were already removed from the head by the
codec (``RequestHead.block`` never holds them), so clients cannot spoof them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvs.config.schema import ForwardedConfig
    from pyvs.http.h1 import RequestHead


class ForwardedHeaders:
    """One listener's forwarding policy, compiled at load."""

    __slots__ = ("forwarded", "scheme", "via", "xff", "xfh", "xfp", "xfp_line")

    def __init__(self, cfg: ForwardedConfig, scheme: bytes) -> None:
        self.xff = cfg.x_forwarded_for
        self.xfp = cfg.x_forwarded_proto
        self.xfh = cfg.x_forwarded_host
        self.forwarded = cfg.forwarded
        self.via = cfg.via
        self.scheme = scheme
        self.xfp_line = b"X-Forwarded-Proto: " + scheme + b"\r\n"

    @property
    def default(self) -> bool:
        """X-Forwarded-For/-Proto/-Host only: the short path's single join applies."""
        return self.xff and self.xfp and self.xfh and not self.forwarded and not self.via

    def add(self, parts: list[bytes], head: RequestHead, client_ip: bytes, trusted: bool) -> None:
        """Append this request's forwarding field lines to ``parts``."""
        if self.xff:
            if trusted and head.xff:
                parts += (b"X-Forwarded-For: ", head.xff, b", ", client_ip, b"\r\n")
            else:
                parts += (b"X-Forwarded-For: ", client_ip, b"\r\n")
        elif trusted and head.xff is not None:
            parts += (b"X-Forwarded-For: ", head.xff, b"\r\n")
        if self.xfp:
            if trusted and head.xf_proto:
                parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
            else:
                parts.append(self.xfp_line)
        elif trusted and head.xf_proto is not None:
            parts += (b"X-Forwarded-Proto: ", head.xf_proto, b"\r\n")
        if self.xfh:
            xfh = head.xf_host if trusted and head.xf_host else head.host
            if xfh:
                parts += (b"X-Forwarded-Host: ", xfh, b"\r\n")
        elif trusted and head.xf_host is not None:
            parts += (b"X-Forwarded-Host: ", head.xf_host, b"\r\n")
        if self.forwarded:
            node = b'"[' + client_ip + b']"' if b":" in client_ip else client_ip
            elem = b"for=" + node + b";proto=" + self.scheme
            if head.host:
                elem += b';host="' + head.host.replace(b'"', b"") + b'"'
            if trusted and head.forwarded:
                elem = head.forwarded + b", " + elem
            parts += (b"Forwarded: ", elem, b"\r\n")
        elif trusted and head.forwarded is not None:
            parts += (b"Forwarded: ", head.forwarded, b"\r\n")
        if self.via:
            parts += (b"Via: ", b"1.0 pyvs" if head.version == b"1.0" else b"1.1 pyvs", b"\r\n")
