"""User-Agent classification (pyvs.l7.useragent) against real, full UA strings."""

from __future__ import annotations

import re

import pytest

from pyvs.l7 import useragent
from pyvs.l7.useragent import CATEGORIES, RULES, classify

MOBILE = {
    "chrome android phone": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                            "Chrome/124.0.0.0 Mobile Safari/537.36",
    "samsung internet phone": "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 "
                              "(KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "safari iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "chrome iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    "ipod touch": "Mozilla/5.0 (iPod touch; CPU iPhone OS 15_7 like Mac OS X) AppleWebKit/605.1.15 "
                  "(KHTML, like Gecko) Version/15.6 Mobile/15E148 Safari/604.1",
    "firefox android": "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
    "opera android": "Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/120.0.0.0 Mobile Safari/537.36 OPR/79.0.4195.76505",
    "opera mini android": "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16",
    "opera mini j2me": "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) "
                       "Presto/2.5.25 Version/10.54",
    "facebook in-app android": "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) "
                               "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 "
                               "Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/446.0.0.37.107;]",
    "cubot phone (not a bot)": "Mozilla/5.0 (Linux; Android 11; CUBOT KINGKONG 5 Pro) AppleWebKit/537.36 "
                               "(KHTML, like Gecko) Chrome/112.0.0.0 Mobile Safari/537.36",
    "windows phone 8": "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; "
                       "ARM; Touch; NOKIA; Lumia 920)",
    "edge windows 10 mobile": "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) "
                              "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 "
                              "Edge/15.15063",
    "blackberry 10": "Mozilla/5.0 (BB10; Touch) AppleWebKit/537.35+ (KHTML, like Gecko) Version/10.3.3.2205 "
                     "Mobile Safari/537.35+",
    "kaios": "Mozilla/5.0 (Mobile; LYF/F300B/LYF-F300B-001-01-15-130718-i; Android; rv:48.0) Gecko/48.0 "
             "Firefox/48.0 KAIOS/2.5",
    "okhttp (android app)": "okhttp/4.12.0",
    "dalvik (android app)": "Dalvik/2.1.0 (Linux; U; Android 13; SM-S918B Build/TP1A.220624.014)",
}

TABLET = {
    "chrome android tablet": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                             "Chrome/124.0.0.0 Safari/537.36",
    "chrome galaxy tab": "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.6099.144 Safari/537.36",
    "samsung internet tablet": "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X700) AppleWebKit/537.36 "
                               "(KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36",
    "safari ipad (old ua)": "Mozilla/5.0 (iPad; CPU OS 12_5_7 like Mac OS X) AppleWebKit/605.1.15 "
                            "(KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1",
    "firefox android tablet": "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
    "kindle fire silk": "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Silk/122.3.1 like Chrome/122.0.6261.105 Safari/537.36",
    "kindle fire silk (old)": "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) "
                              "AppleWebKit/535.19 (KHTML, like Gecko) Silk/3.68 Safari/535.19 Silk-Accelerated=true",
    "kindle e-reader": "Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ "
                       "(KHTML, like Gecko) Version/5.0 Safari/533.2+ Kindle/3.0+",
    "playbook": "Mozilla/5.0 (PlayBook; U; RIM Tablet OS 2.1.0; en-US) AppleWebKit/536.2+ (KHTML, like Gecko) "
                "Version/7.2.1.0 Safari/536.2+",
}

DESKTOP = {
    "firefox windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "firefox linux": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "firefox ubuntu": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "edge windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
    "chrome macos": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/124.0.0.0 Safari/537.36",
    "safari macos": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                    "Version/17.4 Safari/605.1.15",
    "chrome chromeos": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/124.0.0.0 Safari/537.36",
    "opera windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0",
    "ie10 tablet pc": "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0; Touch; Tablet PC 2.0)",
}

BOT = {
    "googlebot desktop": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "googlebot desktop (evergreen)": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
                                     "+http://www.google.com/bot.html) Chrome/124.0.6367.118 Safari/537.36",
    "googlebot smartphone": "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
                            "(KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 "
                            "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "bingbot (evergreen)": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
                           "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "baiduspider": "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "yandexbot": "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "duckduckbot": "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "yahoo slurp": "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    "facebookexternalhit": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "twitterbot": "Twitterbot/1.0",
    "ahrefsbot": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl": "curl/8.4.0",
    "wget": "Wget/1.21.4",
    "python-requests": "python-requests/2.31.0",
    "python-urllib": "Python-urllib/3.11",
    "go-http-client": "Go-http-client/1.1",
    "java": "Java/17.0.2",
    "headless chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "HeadlessChrome/120.0.6099.109 Safari/537.36",
}

CASES = [(ua, "mobile") for ua in MOBILE.values()] + [(ua, "tablet") for ua in TABLET.values()] + [
    (ua, "desktop") for ua in DESKTOP.values()] + [(ua, "bot") for ua in BOT.values()]
IDS = [*MOBILE, *TABLET, *DESKTOP, *BOT]


@pytest.mark.parametrize(("ua", "expected"), CASES, ids=IDS)
def test_real_user_agents(ua: str, expected: str) -> None:
    assert classify(ua) == expected


@pytest.mark.parametrize(("ua", "expected"), CASES, ids=IDS)
def test_bytes_give_the_same_answer(ua: str, expected: str) -> None:
    assert classify(ua.encode("latin-1")) == expected


def test_ipados_13_desktop_ua_is_desktop() -> None:
    # iPadOS 13+ Safari requests desktop sites with exactly the macOS Safari UA.
    assert classify(DESKTOP["safari macos"]) == "desktop"


@pytest.mark.parametrize("ua", [None, "", b"", "   ", b"\t"])
def test_missing_or_blank_ua_is_a_bot(ua: str | bytes | None) -> None:
    assert classify(ua) == "bot"


def test_unknown_ua_is_desktop() -> None:
    assert classify("SomeBrowser/1.0") == "desktop"
    assert classify("-") == "desktop"


def test_never_raises_on_binary_junk() -> None:
    assert classify(bytes(range(256))) in CATEGORIES


def test_categories() -> None:
    assert CATEGORIES == ("mobile", "tablet", "desktop", "bot")


def test_rule_table_is_well_formed() -> None:
    assert RULES, "empty rule table"
    for rule in RULES:
        assert rule.category in CATEGORIES
        assert rule.category != "desktop", "desktop is the fallback, not a rule"
        assert isinstance(rule.pattern, re.Pattern)
        assert rule.why.strip()
        category, pattern, why = rule  # the rows are plain (category, regex, why) tuples
        assert (category, pattern, why) == (rule.category, rule.pattern, rule.why)
    # The ordering the design depends on: every bot rule comes before any other.
    first_other = next(i for i, r in enumerate(RULES) if r.category != "bot")
    assert all(r.category != "bot" for r in RULES[first_other:])


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(useragent, "_CACHE_MAX_ENTRIES", 4)
    monkeypatch.setattr(useragent, "_cache", {})
    for round_ in range(2):
        for i in range(10):
            assert classify(f"SomeBrowser/{i}.{round_}") == "desktop"
            assert len(useragent._cache) <= 4
    assert classify(BOT["curl"]) == "bot"
    assert useragent._cache[BOT["curl"]] == "bot"


def test_long_values_are_answered_but_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(useragent, "_cache", {})
    long_ua = MOBILE["safari iphone"] + " x" * 1000
    assert classify(long_ua) == "mobile"
    assert long_ua not in useragent._cache


def test_matching_ignores_case() -> None:
    assert classify("CURL/8.4.0") == "bot"
    assert classify("mozilla/5.0 (ipad; cpu os 12_5_7 like mac os x)") == "tablet"


def test_only_the_first_kib_is_examined() -> None:
    padding = "Mozilla/5.0 (X11; Linux x86_64) " + "a" * 2000
    assert classify(padding + " Googlebot/2.1") == "desktop"
    assert classify("Googlebot/2.1 " + padding) == "bot"
