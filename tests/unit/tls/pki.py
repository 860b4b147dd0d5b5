"""Test certificates from trustme, written as PEM files (shared by the TLS tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class CertPaths:
    cert: str  # leaf + chain
    key: str


class Pki:
    """A CA and the certificates issued by it, as files under ``root``."""

    def __init__(self, root: Path, name: str = "pyvs test CA") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=name)
        self.ca_pem = str(root / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_pem)
        self.n = 0

    def issue(self, *names: str, common_name: str | None = None) -> CertPaths:
        """A server (or client) certificate for ``names``, chain included in the cert file."""
        self.n += 1
        leaf = self.ca.issue_cert(*names, common_name=common_name)
        cert = self.root / f"cert{self.n}.pem"
        key = self.root / f"key{self.n}.pem"
        with cert.open("wb") as f:
            for blob in leaf.cert_chain_pems:
                f.write(blob.bytes())
        leaf.private_key_pem.write_to_path(str(key))
        return CertPaths(str(cert), str(key))
