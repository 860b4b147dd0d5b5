"""Accept-Encoding negotiation (RFC 9110 12.5.3): which coding a client gets.

The client's q-values rank the codings; among codings of equal q the server's own
order of preference decides (``algorithms`` in the config). ``q=0`` refuses a
coding; ``*`` stands for every coding the field does not name; ``x-gzip`` is gzip
(RFC 9110 8.4.1.3). A field that cannot be parsed is read as far as it goes: a
malformed member is skipped, never an error (the response then simply goes
uncompressed when nothing acceptable remains).

Browsers send the same few values over and over, so the answer is remembered per
(field value) in a small bounded dict per filter: a hit costs one lookup.
"""

from __future__ import annotations

_ALIASES = {"x-gzip": "gzip"}
_MEMO_MAX = 256


def parse_accept_encoding(value: bytes) -> dict[str, float]:
    """``{coding: q}`` of an Accept-Encoding value (lower-cased codings)."""
    out: dict[str, float] = {}
    for member in value.split(b","):
        parts = member.split(b";")
        coding = parts[0].strip().lower().decode("latin-1")
        if not coding:
            continue
        q = 1.0
        for param in parts[1:]:
            name, _, raw = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:
            continue  # a malformed weight: skip the member
        coding = _ALIASES.get(coding, coding)
        out[coding] = max(q, out[coding]) if coding in out else q  # named twice: the better weight
    return out


def choose(offered: tuple[str, ...], value: bytes | None) -> str | None:
    """The coding from ``offered`` (server's preference order) the client ranks
    highest, or None (no Accept-Encoding, or nothing acceptable)."""
    if not value:
        return None  # RFC 9110: no field means any coding, but clients that decode send one
    prefs = parse_accept_encoding(value)
    star = prefs.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = prefs.get(coding, star if star is not None else 0.0)
        if q > best_q:  # strictly greater: an equal q keeps the earlier (preferred) coding
            best, best_q = coding, q
    return best


class Negotiator:
    """:func:`choose` for one filter's offer, remembered per field value."""

    __slots__ = ("memo", "offered")

    def __init__(self, offered: tuple[str, ...]) -> None:
        self.offered = offered
        self.memo: dict[bytes | None, str | None] = {}

    def __call__(self, value: bytes | None) -> str | None:
        memo = self.memo
        try:
            return memo[value]
        except KeyError:
            pass
        got = choose(self.offered, value)
        if len(memo) >= _MEMO_MAX:
            memo.clear()  # a client inventing values cannot grow it
        memo[value] = got
        return got
