"""Accept-Language negotiation for routes that serve one language each.

Theory of operation
-------------------
Routes name the languages they offer (``zh``, ``en-US``, ...). For each request,
:meth:`LanguageNegotiator.best` turns the client's Accept-Language field
(RFC 9110 section 12.5.4) into the one offer it ranks highest, or ``None`` when
nothing offered is acceptable and the route table should fall back to its default.

Parsing (:func:`parse_accept_language`) is forgiving because the field comes from
every browser, proxy and script on the Internet: a malformed entry is dropped and the
rest of the field still counts, so one bad entry cannot turn a French reader into the
default language. Ranges follow RFC 4647's basic language-range grammar
(``*`` or ``alpha{1,8}`` then ``-alphanum{1,8}`` subtags); ``en_US`` and friends are
not ranges and are skipped. A ``q`` that is not a number drops its entry (we cannot
tell what the client meant); a number outside 0..1 is clamped, because its intent
("most" or "never") is clear.

Matching
--------
A client range C and an offer O *match* when C is ``*``, when they are equal, or when
one is a prefix of the other followed by ``-``. Both directions count:

* ``zh-CN`` (client) matches ``zh`` (offer): a reader of Chinese as written in China
  reads the generic Chinese page better than a page in another language, the way
  RFC 4647 "lookup" falls back by truncating the range.
* ``en`` (client) matches ``en-US`` (offer): this is RFC 4647 "basic filtering";
  someone who reads English reads US English.

An offer written ``zh-*`` is stored as ``zh``: an offer already matches every longer
tag, so the wildcard adds nothing.

Refusals (q=0)
--------------
A range *covers* an offer when it is ``*``, equal to the offer, or a prefix of it
followed by ``-`` (basic filtering: the range names the offer or a family that holds
it). For each offer, the most specific client range that covers it (most subtags;
``*`` has none) decides whether the client refuses it; at equal specificity a q=0
entry wins, because a refusal is the safer reading of a contradictory field. So:

* ``zh;q=0, en`` refuses ``zh`` and also ``zh-TW``;
* ``en;q=0, en-GB`` refuses ``en`` and ``en-US`` but not ``en-GB`` (a more
  specific positive range covers it);
* ``zh-TW;q=0, zh`` does *not* refuse the offer ``zh``: a refusal never reaches an
  offer broader than itself. An offer ``zh`` (or ``zh-*``) stands for the whole
  family, so ``zh-CN, zh;q=0`` refuses it.

Choosing
--------
Among the positive entries, the highest q wins, ties going to the entry the client
listed first. An entry picks, among the offers it matches and that are not refused,
the one equal to it, else the most specific, else the first configured. ``*`` stands
for the offers the field does not otherwise name (RFC 9110: "every tag not matched by
any other range"), so ``en;q=0.5, *`` prefers any other offer to ``en``; among those
it picks the first configured.

Results are cached per negotiator: browsers send a handful of distinct field values,
and this runs on every request that reaches a language condition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["LanguageNegotiator", "parse_accept_language"]

# RFC 4647 basic language range, matched after lower-casing.
_RANGE = re.compile(r"\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*")
# Loose on purpose ("1.", ".5", "0.8000", "2"): out-of-range values are clamped later.
_QVALUE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

# Browsers send a few distinct values, so a small cache holds them all; clearing
# when full keeps a flood of unique values from growing it.
_CACHE_MAX_ENTRIES = 1024
# Entries of one Accept-Language field that are read (the rest is ignored).
_MAX_ENTRIES = 64
# Real fields are well under this; longer ones are computed but not remembered, so
# the cache's memory stays bounded by entries x this length.
_CACHE_MAX_KEY_LEN = 512


def parse_accept_language(value: bytes | str | None) -> list[tuple[str, float]]:
    """The (lower-cased range, q) entries of an Accept-Language value, in the client's order.

    Never raises: see the module docstring for what is skipped and why. Entries with
    q=0 are kept, since they carry refusals.
    """
    if value is None:
        return []
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    entries: list[tuple[str, float]] = []
    for element in text.split(","):
        rng, *params = element.split(";")
        rng = rng.strip().lower()
        if not _RANGE.fullmatch(rng):
            continue
        q = _weight(params)
        if q is not None:
            entries.append((rng, q))
    return entries


def _weight(params: list[str]) -> float | None:
    """The q of an entry's parameters: 1.0 when absent, None when unreadable."""
    for param in params:
        name, eq, raw = param.partition("=")
        if name.strip().lower() != "q":
            continue  # empty (a stray ";") or unknown: Accept-Language defines only q
        raw = raw.strip()
        if not eq or not _QVALUE.fullmatch(raw):
            return None
        return min(1.0, max(0.0, float(raw)))
    return 1.0


def _specificity(rng: str) -> int:
    """Subtag count, with ``*`` below every real range."""
    return 0 if rng == "*" else rng.count("-") + 1


def _covers(rng: str, tag: str) -> bool:
    """True when ``rng`` names ``tag`` or a family holding it (RFC 4647 basic filtering)."""
    return rng == "*" or rng == tag or (tag.startswith(rng) and tag[len(rng)] == "-")


def _matches(client: str, offer: str) -> bool:
    """True when a client range and an offer match in either direction (see module docstring)."""
    return _covers(client, offer) or _covers(offer, client)


class LanguageNegotiator:
    """Picks, for each Accept-Language value, the configured offer the client ranks highest.

    Built once per route table at configuration load; :meth:`best` is pure apart
    from its bounded cache.
    """

    __slots__ = ("_cache", "_rank", "offers")

    def __init__(self, offers: Sequence[str]) -> None:
        """Normalise ``offers`` (lower case, ``-*`` dropped, duplicates dropped in order).

        Raises ValueError for an offer that is not a language range, or for ``*``: a
        route for "any language" is the route with no language condition.
        """
        if isinstance(offers, str):
            raise TypeError("offers must be a sequence of language ranges, not one string")
        seen: dict[str, None] = {}
        for raw in offers:
            offer = raw.strip().lower()
            if offer.endswith("-*"):
                offer = offer[:-2]
            if offer == "*" or not _RANGE.fullmatch(offer):
                raise ValueError(f"not a language range an offer can name: {raw!r}")
            seen.setdefault(offer, None)
        self.offers: tuple[str, ...] = tuple(seen)
        self._rank = {offer: i for i, offer in enumerate(self.offers)}
        self._cache: dict[bytes | str, str | None] = {}

    def __repr__(self) -> str:
        return f"LanguageNegotiator({list(self.offers)!r})"

    def best(self, accept_language: bytes | str | None) -> str | None:
        """The offer the client ranks highest, or None when the field is absent or
        accepts none of the offers."""
        if not accept_language:
            return None
        try:
            return self._cache[accept_language]
        except KeyError:
            pass
        # Browsers send a handful of entries; a client sending thousands must not
        # make every request of its own cost milliseconds.
        result = self._negotiate(parse_accept_language(accept_language)[:_MAX_ENTRIES])
        if len(accept_language) <= _CACHE_MAX_KEY_LEN:
            if len(self._cache) >= _CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[accept_language] = result
        return result

    def _negotiate(self, entries: list[tuple[str, float]]) -> str | None:
        if not entries or not self.offers:
            return None
        available = [offer for offer in self.offers if not self._refused(offer, entries)]
        if not available:
            return None
        ranked = sorted(range(len(entries)), key=lambda i: (-entries[i][1], i))
        star: list[str] | None = None
        for i in ranked:
            rng, q = entries[i]
            if q <= 0.0:
                break  # sorted by q: only refusals remain
            if rng == "*":
                if star is None:  # the offers no named range speaks of (computed once)
                    named = [r for r, _ in entries if r != "*"]
                    star = [offer for offer in available if not any(_matches(r, offer) for r in named)]
                if star:
                    return star[0]
                continue
            candidates = [offer for offer in available if _matches(rng, offer)]
            if candidates:
                return min(candidates, key=lambda o: (o != rng, -_specificity(o), self._rank[o]))
        return None

    @staticmethod
    def _refused(offer: str, entries: list[tuple[str, float]]) -> bool:
        """True when the most specific range covering ``offer`` has q=0 (refusal wins ties)."""
        best_spec = -1
        refused = False
        for rng, q in entries:
            if not _covers(rng, offer):
                continue
            spec = _specificity(rng)
            if spec > best_spec:
                best_spec, refused = spec, q <= 0.0
            elif spec == best_spec and q <= 0.0:
                refused = True
        return refused
