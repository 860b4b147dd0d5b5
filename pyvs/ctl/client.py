"""The admin API client of ``pyvs ctl``: one request, and what its failure means.

Exit codes are part of the interface (scripts test them): 0 done, 1 the running pyvs
refused the action (unknown server, invalid weight, reload refused...), 2 usage (a
wrong command line, or a server name that is ambiguous), 3 the admin endpoint cannot be
used (not reachable, not answering, or refusing our credentials).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CtlError(Exception):
    """A failure with its exit code; ``str()`` is the one line printed."""

    def __init__(self, code: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or []


@dataclass(frozen=True)
class Client:
    """Where the admin API is and how to authenticate to it."""

    base: str
    token: str | None = None
    timeout: float = 60.0

    @classmethod
    def create(cls, admin: str | None, token_file: str | None, config: str | None, timeout: float) -> Client:
        """``--admin`` / ``--token-file`` win; else ``PYVS_ADMIN`` / ``PYVS_TOKEN_FILE``; else the
        ``admin`` section of ``-c FILE`` (or of the embedded default)."""
        admin = admin or os.environ.get("PYVS_ADMIN")
        token_file = token_file or os.environ.get("PYVS_TOKEN_FILE")
        if admin is None or (token_file is None and config is not None):
            from pyvs.config.loader import ConfigError, load_default, load_file

            try:
                cfg = load_file(config) if config else load_default()
            except ConfigError as err:
                raise CtlError(USAGE, f"{err.source}: not a valid config ({'; '.join(err.problems[:3])})") from None
            if admin is None:
                if not cfg.admin.listen:
                    raise CtlError(USAGE, "the config has no admin.listen; give --admin URL")
                admin = cfg.admin.listen
            token_file = token_file or cfg.admin.token_file
        token = None
        if token_file:
            try:
                with open(token_file) as f:
                    token = f.read().strip()
            except OSError as exc:
                raise CtlError(USAGE, f"cannot read the token file {token_file}: {exc.strerror}") from None
        if "://" not in admin:
            admin = f"http://{admin}"
        return cls(admin.rstrip("/"), token, timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer; CtlError for anything but a 2xx."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the admin port is never proxied
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            if exc.code == 401:
                raise CtlError(UNREACHABLE, f"{self.base}: 401 Unauthorized (give --token-file with the "
                                            "content of admin.token_file)") from None
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {"error": raw.decode(errors="replace").strip()[:200]}
            errors = [str(e) for e in answer.get("errors") or []]
            reason = answer.get("error") or ("refused, nothing was changed:" if errors else f"HTTP {exc.code}")
            raise CtlError(REFUSED, reason, errors) from None
        except (OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise CtlError(UNREACHABLE, f"cannot reach pyvs at {self.base}: {why}") from None
