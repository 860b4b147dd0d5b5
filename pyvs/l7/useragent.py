"""A small User-Agent classifier: ``mobile``, ``tablet``, ``desktop`` or ``bot``.

Theory of operation
-------------------
Content routing needs a coarse answer (send phones to the mobile site, crawlers to
the prerender pool), not a device database. :data:`RULES` is an ordered table of
(category, pattern, why); the first pattern found anywhere in the lower-cased header
(its first KiB) decides, and a header no rule matches is ``desktop``. Keeping the
reasons in the table means a misclassified UA is fixed by reading one row, and the
docs can be drawn from it.

Order matters and is the whole design:

1. **bot** first, because crawlers imitate browsers: Googlebot's smartphone crawler
   sends a full ``Android ... Mobile Safari`` UA with ``Googlebot`` appended.
2. **mobile** rules for phone clients with no ``Mobile`` token, which would otherwise
   look like tablets: Android *apps* (``Dalvik``, ``okhttp``; see the choices below)
   and Opera Mini, whose Android UA says ``Android`` but not ``Mobile``.
3. **tablet** before mobile, because tablet UAs often contain mobile words
   (``iPad ... Mobile/15E148``, Kindle's ``Silk`` on Android).
4. **mobile**.
5. anything else: **desktop**.

Choices
-------
* A missing or blank User-Agent is ``bot``: every browser sends one, so its absence
  almost always means a script or a scanner.
* Command-line and library HTTP clients (curl, Wget, python-requests, urllib, Go's
  net/http, Java, Apache HttpClient, libwww-perl, ...) are ``bot``: no human is
  reading a page they fetch, and health checkers and scrapers use them.
* ``HeadlessChrome`` and PhantomJS are ``bot``: they drive prerenderers, test suites
  and scrapers. Chrome's newer headless mode (``--headless=new``) sends the normal
  Chrome UA and is indistinguishable from a desktop here.
* ``okhttp`` and ``Dalvik`` are ``mobile``: they are the default UAs of HTTP calls
  made by Android apps, i.e. people on (mostly) phones; calling them bots would send
  real users' app traffic to wherever bots are routed. Server-side Java using OkHttp
  is classified mobile too, an accepted error.
* iPadOS 13 and later send the desktop Safari UA (``Macintosh; Intel Mac OS X``) by
  default, so those iPads are ``desktop``; only client hints or JavaScript can tell.
  Older iPads and iPad apps that still say ``iPad`` are ``tablet``.
* Android TVs, consoles and cars are not categories; they land wherever their tokens
  lead (usually ``tablet`` or ``desktop``).

Results are cached by the raw header value: a site sees a few thousand distinct UAs,
and the rules would otherwise run on every request.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

__all__ = ["CATEGORIES", "RULES", "Category", "Rule", "classify"]

Category = Literal["mobile", "tablet", "desktop", "bot"]

CATEGORIES: Final = ("mobile", "tablet", "desktop", "bot")

# Patterns are written in lower case and run on the lower-cased header: about twice as
# fast as re.IGNORECASE, which matters for the uncached first sight of each UA.
_FLAGS = re.ASCII


class Rule(NamedTuple):
    """One row of :data:`RULES`: the category given when ``pattern`` is found in the
    lower-cased header, and why."""

    category: Category
    pattern: re.Pattern[str]
    why: str


def _rule(category: Category, pattern: str, why: str) -> Rule:
    return Rule(category, re.compile(pattern, _FLAGS), why)


RULES: Final[tuple[Rule, ...]] = (
    # --- bots: first, because crawlers carry browser tokens too ---
    _rule("bot", r"googlebot|adsbot-google|mediapartners-google|google-inspectiontool|apis-google|feedfetcher-google",
          "Google's crawlers; the smartphone Googlebot also says 'Android ... Mobile'"),
    _rule("bot", r"bingbot|bingpreview|msnbot|adidxbot", "Microsoft Bing's crawlers and preview fetcher"),
    _rule("bot", r"baiduspider", "Baidu's crawler"),
    _rule("bot", r"yandex\w*bot|yandeximages", "Yandex's crawlers (the Yandex browser says 'YaBrowser', not this)"),
    _rule("bot", r"duckduckbot|duckduckgo-favicons-bot", "DuckDuckGo's crawler"),
    _rule("bot", r"slurp", "Yahoo's crawler, 'Yahoo! Slurp'"),
    _rule("bot", r"facebookexternalhit|facebookcatalog|meta-externalagent",
          "Meta's link-preview and catalog fetchers (the in-app browser says FBAN/FBAV instead)"),
    _rule("bot", r"twitterbot", "X/Twitter's card fetcher ('Twitter for iPhone' is the app, not this)"),
    _rule("bot", r"(?<!cu)bot|crawl|spider",
          "the generic crawler words; 'cubot' is excluded because Cubot is an Android phone maker"),
    _rule("bot", r"\+https?://",
          "crawlers advertise a contact page as '+http://...'; browsers never put a URL in their UA"),
    _rule("bot", r"\bcurl/|\bwget/|python-requests/|python-urllib/|python-httpx/|aiohttp/|go-http-client/"
                 r"|\bjava/|apache-httpclient/|libwww-perl/|\bscrapy/|node-fetch/|\baxios/|postmanruntime/|httpie/",
          "command-line and library HTTP clients: scripts, health checks and scrapers, not people"),
    _rule("bot", r"headlesschrome|phantomjs|chrome-lighthouse",
          "headless browsers drive prerenderers, tests and scrapers"),
    # --- phone clients without a 'Mobile' token: before tablets, which they would otherwise look like ---
    _rule("mobile", r"^dalvik/|\bokhttp/",
          "default UAs of Android apps' HTTP calls; no 'Mobile' token, but mostly phones"),
    _rule("mobile", r"opera mini", "Opera Mini is a phone browser; on Android it says 'Android' but not 'Mobile'"),
    # --- tablets: before mobile, because tablet UAs contain mobile words ---
    _rule("tablet", r"ipad", "iPads before iPadOS 13 and iPad apps (later Safari says 'Macintosh': desktop)"),
    _rule("tablet", r"kindle|\bsilk/", "Amazon Kindle and Fire tablets (Silk is the Fire browser, on Android)"),
    _rule("tablet", r"playbook", "BlackBerry PlayBook"),
    _rule("tablet", r"tablet(?! pc)",
          "explicit tablet token (Firefox on Android tablets); 'Tablet PC' is old IE on touch laptops"),
    _rule("tablet", r"^(?!.*mobi).*android",
          "Android browsers omit 'Mobile' on tablets by Google's convention ('Mobile' may come before 'Android')"),
    # --- mobile ---
    _rule("mobile", r"iphone|ipod", "Apple handhelds"),
    _rule("mobile", r"android", "the Android UAs the tablet rule left all say 'Mobile': phones"),
    _rule("mobile", r"windows phone|iemobile", "Windows Phone, whose older UAs lack 'Mobile'"),
    _rule("mobile", r"blackberry|\bbb10\b", "BlackBerry handsets"),
    _rule("mobile", r"mobi",
          "the general 'Mobile'/'Mobi' token other phone browsers send (Firefox OS, KaiOS, 'Opera Mobi')"),
)

# A site sees a few thousand distinct UAs; clearing when full bounds a flood of unique ones.
_CACHE_MAX_ENTRIES = 4096
# Real UAs are a few hundred characters; longer ones are classified but not remembered,
# which bounds the cache's memory at entries x this length.
_CACHE_MAX_KEY_LEN = 1024
# Only this much of a header is examined: every real UA's tokens fit, and it caps what a
# hostile multi-kilobyte value costs on each (uncached) request.
_EXAMINED_LEN = 1024
_cache: dict[bytes | str, Category] = {}


def classify(user_agent: bytes | str | None) -> Category:
    """The category of a User-Agent value; ``bot`` when it is missing or blank."""
    if user_agent is None:
        return "bot"
    try:
        return _cache[user_agent]
    except KeyError:
        pass
    head = user_agent[:_EXAMINED_LEN]
    result = _classify((head.decode("latin-1") if isinstance(head, bytes) else head).lower())
    if len(user_agent) <= _CACHE_MAX_KEY_LEN:
        if len(_cache) >= _CACHE_MAX_ENTRIES:
            _cache.clear()
        _cache[user_agent] = result
    return result


def _classify(text: str) -> Category:
    """The first matching rule's category for a lower-cased header."""
    if not text.strip():
        return "bot"
    for rule in RULES:
        if rule.pattern.search(text):
            return rule.category
    return "desktop"
