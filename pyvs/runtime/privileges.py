"""Dropping root in the workers (``global.user`` / ``global.group``), as nginx and
HAProxy do: the supervisor keeps root for what needs it (VRRP's raw sockets and
addresses, the kernel data planes, binding new ports on a reload); a worker switches
to the unprivileged user once its listeners are open, before it serves anything.

What a worker opens after that (an access log reopened on SIGUSR1) is opened as the
user: the directory must let it. The kernel clears the parent-death signal when a
process changes its credentials, so it is set again right after the switch (a worker
must never outlive its supervisor).
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Who the workers become."""

    user: str
    uid: int
    gid: int


def resolve(user: str | None, group: str | None) -> Identity | None:
    """The identity named by the config, or None when no ``user`` is set. Raises
    ValueError naming what does not exist."""
    if not user:
        if group:
            raise ValueError("global.group needs global.user")
        return None
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"global.user: no such user {user!r}") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"global.group: no such group {group!r}") from None
    return Identity(pw.pw_name, pw.pw_uid, gid)


def check_can_switch(ident: Identity | None) -> str | None:
    """Why the switch cannot happen in this process (not root, and not that user
    already), or None."""
    if ident is None or os.geteuid() == 0 or os.geteuid() == ident.uid:
        return None
    return f"global.user: pyvs runs as uid {os.geteuid()}, not root: it cannot switch to {ident.user!r}"


def drop(ident: Identity | None) -> None:
    """Become ``ident`` for good (real, effective and saved ids; groups). No-op
    without an identity or when already that user."""
    if ident is None or (os.geteuid() == ident.uid and os.getegid() == ident.gid):
        return
    os.setgroups([ident.gid])
    os.setresgid(ident.gid, ident.gid, ident.gid)
    os.setresuid(ident.uid, ident.uid, ident.uid)
