"""Write starting corpora for the atheris targets into fuzz/corpus/<target>/ (idempotent).

    python fuzz/seed_corpus.py
"""

from __future__ import annotations

import hashlib
import re

import _common

from pyvs.config.loader import default_text
from pyvs.l4 import proxyproto
from tests.unit.fuzz import test_fuzz_h1

CORPUS = _common.ROOT / "fuzz" / "corpus"


def write(target: str, items: list[bytes]) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for item in items:
        (d / hashlib.sha1(item).hexdigest()).write_bytes(item)
    print(f"{target}: {len(items)} seeds in {d}")


def main() -> None:
    write("head", list(test_fuzz_h1.SEEDS))
    chunked = [b"5\r\nhello\r\n0\r\n\r\n", b"A;x=1\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n", b"0\r\n\r\n"]
    write("chunked", [b"\x00" + c for c in chunked])  # first byte: the number of cuts
    write("proxy", [
        proxyproto.build("v1", ("1.2.3.4", 5), ("5.6.7.8", 80)),
        proxyproto.build("v1", ("2001:db8::1", 5), ("::1", 443)),
        proxyproto.build("v1", None, None),
        proxyproto.build("v2", ("1.2.3.4", 5), ("5.6.7.8", 80)),
        proxyproto.build("v2", ("2001:db8::1", 5), ("::1", 443), "udp"),
        proxyproto.build("v2", None, None),
    ])
    from ipaddress import IPv4Address, IPv6Address

    from pyvs.ha import packet

    src4, src6 = IPv4Address("192.0.2.1"), IPv6Address("fe80::1")
    write("vrrp", [
        packet.encode(packet.Advert(2, 51, 100, 100, (IPv4Address("10.0.0.1"),)), src4, packet.GROUP_V4),
        packet.encode(packet.Advert(3, 51, 100, 100, (IPv4Address("10.0.0.1"),)), src4, packet.GROUP_V4),
        packet.encode(packet.Advert(3, 7, 255, 100, (IPv6Address("2001:db8::1"),)), src6, packet.GROUP_V6),
    ])
    texts = [default_text()]
    for doc in [*sorted((_common.ROOT / "docs").glob("*.md")), _common.ROOT / "README.md"]:
        texts += re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    write("config", [t.encode() for t in texts])


if __name__ == "__main__":
    main()
