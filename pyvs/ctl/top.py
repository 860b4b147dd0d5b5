"""``pyvs ctl top``: the status and server tables, redrawn in place (rich ``Live``).

The admin endpoint computes the rates (over its last seconds of samples), so ``top``
only polls ``/api/summary``; a failed poll shows the reason in place and keeps trying,
as ``top`` would while the machine is busy, instead of exiting.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from pyvs.ctl import render
from pyvs.ctl.client import Client, CtlError


def frame(client: Client) -> Any:
    try:
        doc = client.call("GET", "/api/summary")
    except CtlError as exc:
        return Text(f"pyvs ctl top: {exc} (retrying)", style="bold red")
    return Group(render.status_view(doc), render.servers_table(doc["backends"]),
                 Text(time.strftime("%H:%M:%S  (Ctrl-C to quit)"), style="dim"))


def run_top(client: Client, console: Console, interval: float, count: int) -> None:
    n = 0
    try:
        with Live(frame(client), console=console, auto_refresh=False, screen=console.is_terminal) as live:
            while True:
                n += 1
                if count and n >= count:
                    break
                time.sleep(interval)
                live.update(frame(client), refresh=True)
    except KeyboardInterrupt:
        pass
