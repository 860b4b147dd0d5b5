"""GSLB site state: which sites are up, from local health or a remote pyvs's ``/status``.

Theory of operation
-------------------
A site is *up* when at least ``min_up`` servers of its pool are up. For a site whose
pool is a local backend that is read from the worker's own health picture (the same
checks as everything else, see :func:`pyvs.dns.policy.site_is_up`). A site elsewhere
is polled: every ``interval`` a GET of the remote pyvs's admin ``status_url``; the
servers of ``backend`` in its ``backends`` list whose ``state`` is ``UP`` are counted.
``fall`` failed or insufficient polls in a row mark the site down, one good poll
marks it up again (a remote site comes back as soon as its own checks say so: those
already applied ``rise``). A site is up until the first poll says otherwise, so a
start does not send every client to one site.

:class:`RemoteSites` runs one poll loop per remote site in each worker that serves a
dns listener (workers do not share memory; a poll is one small GET per interval) and
calls ``changed`` when a site's state flips, which makes the responder rebuild its
answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from pyvs.config.dns_schema import GslbSite

log = logging.getLogger("pyvs.dns")


def count_up(status: Any, backend: str) -> int:
    """Servers of ``backend`` in a pyvs ``/status`` document whose state is UP."""
    if not isinstance(status, dict):
        return 0
    for b in status.get("backends") or ():
        if isinstance(b, dict) and b.get("name") == backend:
            return sum(1 for s in b.get("servers") or () if isinstance(s, dict) and s.get("state") == "UP")
    return 0


class SiteState:
    """The poll state of one remote site (sans-I/O: fed poll results)."""

    def __init__(self, site: GslbSite) -> None:
        self.site = site
        self.up = True
        self.failures = 0
        self.polls = 0
        self.failed_polls = 0  # polls that got no usable answer, ever (``failures``: in a row)
        self.last_up_count: int | None = None
        self.last_error = ""

    def feed(self, up_count: int | None, error: str = "") -> bool:
        """One poll: the UP count, or None when the poll failed. True when ``up`` flipped."""
        self.polls += 1
        self.last_up_count = up_count
        self.last_error = error
        if up_count is None:
            self.failed_polls += 1
        good = up_count is not None and up_count >= self.site.min_up
        before = self.up
        if good:
            self.failures = 0
            self.up = True
        else:
            self.failures += 1
            if self.failures >= self.site.fall:
                self.up = False
        return self.up != before


class RemoteSites:
    """Poll loops of the remote sites of one dns listener."""

    def __init__(self, sites: list[GslbSite], changed: Callable[[], None], *, seed: int = 0) -> None:
        self.states = {s.name: SiteState(s) for s in sites if s.status_url is not None}
        self.changed = changed
        self.rng = random.Random(seed)
        self.tasks: list[asyncio.Task[None]] = []
        self.session: Any = None

    def is_up(self, site: GslbSite) -> bool:
        st = self.states.get(site.name)
        return True if st is None else st.up

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for st in self.states.values():
            self.tasks.append(loop.create_task(self._loop(st)))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _loop(self, st: SiteState) -> None:
        import aiohttp

        site = st.site
        assert site.status_url is not None and site.backend is not None
        headers = {}
        if site.token_file is not None:
            from pyvs.config.schema import AdminConfig

            headers["Authorization"] = "Bearer " + AdminConfig.read_token_file(site.token_file).decode()
        if self.session is None:
            self.session = aiohttp.ClientSession()
        while True:
            try:
                async with self.session.get(site.status_url, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=site.timeout)) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    body = await resp.json(content_type=None)
                flipped = st.feed(count_up(body, site.backend))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                flipped = st.feed(None, f"{type(exc).__name__}: {exc}")
            if flipped:
                log.warning("gslb site %s is %s (%s)", site.name, "up" if st.up else "down",
                            st.last_error or f"{st.last_up_count} server(s) up")
                self.changed()
            await asyncio.sleep(site.interval * (1 + self.rng.uniform(-0.1, 0.1)))
