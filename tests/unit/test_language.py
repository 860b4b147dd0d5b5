"""Accept-Language parsing and negotiation (pyvs.l7.language)."""

from __future__ import annotations

import pytest

from pyvs.l7 import language
from pyvs.l7.language import LanguageNegotiator, parse_accept_language

# --- parsing ---------------------------------------------------------------


def test_parse_keeps_client_order_and_lowercases() -> None:
    assert parse_accept_language("zh-CN,zh;q=0.9,EN;q=0.8,*;q=0.1") == [
        ("zh-cn", 1.0), ("zh", 0.9), ("en", 0.8), ("*", 0.1)
    ]


def test_parse_accepts_bytes_and_none() -> None:
    assert parse_accept_language(b"fr-CH, fr;q=0.9") == [("fr-ch", 1.0), ("fr", 0.9)]
    assert parse_accept_language(None) == []
    assert parse_accept_language(b"") == []
    assert parse_accept_language("  ") == []


def test_parse_whitespace_tolerant() -> None:
    assert parse_accept_language("  en-US ;  q = 0.5 ,\tde\t; Q=0.25 ") == [("en-us", 0.5), ("de", 0.25)]


def test_parse_joined_header_lines_and_empty_elements() -> None:
    # Two header lines arrive joined by ", "; empty list elements are legal and skipped.
    assert parse_accept_language("en;q=0.8, , fr, ,") == [("en", 0.8), ("fr", 1.0)]


@pytest.mark.parametrize("value", ["en;q=abc", "en;q=", "en;q", "en;q=0.5x", "en;q=nan", "en;q=inf", "en;q=1e0"])
def test_parse_invalid_q_drops_the_entry(value: str) -> None:
    assert parse_accept_language(value + ", fr") == [("fr", 1.0)]


@pytest.mark.parametrize(("raw", "q"), [("2", 1.0), ("1.5", 1.0), ("-1", 0.0), ("0", 0.0), (".5", 0.5),
                                        ("1.", 1.0), ("0.123", 0.123), ("1.000", 1.0)])
def test_parse_q_is_clamped(raw: str, q: float) -> None:
    assert parse_accept_language(f"en;q={raw}") == [("en", q)]


@pytest.mark.parametrize("garbage", ["en_US", "-en", "en-", "toolongtag", "e n", "en-*", "*-US", "1en", "é",
                                     "en--us", "en-abcdefghi", ";q=0.5", "=", ";;"])
def test_parse_skips_garbage_entries(garbage: str) -> None:
    assert parse_accept_language(f"{garbage}, de") == [("de", 1.0)]


def test_parse_ignores_unknown_parameters_and_stray_semicolons() -> None:
    assert parse_accept_language("en;level=1;q=0.7;, fr;") == [("en", 0.7), ("fr", 1.0)]


def test_parse_first_q_wins() -> None:
    assert parse_accept_language("en;q=0.3;q=0.9") == [("en", 0.3)]


def test_parse_never_raises_on_binary_junk() -> None:
    assert parse_accept_language(bytes(range(256))) == []


# --- offers ----------------------------------------------------------------


def test_offers_are_normalised() -> None:
    neg = LanguageNegotiator(["zh", "zh-*", "EN", " en-US ", "en", "pt-BR-*"])
    assert neg.offers == ("zh", "en", "en-us", "pt-br")


@pytest.mark.parametrize("bad", ["*", "", "en_US", "zh-*-*", "-*"])
def test_invalid_offer_is_a_config_error(bad: str) -> None:
    with pytest.raises(ValueError):
        LanguageNegotiator(["en", bad])


def test_a_bare_string_is_not_a_list_of_offers() -> None:
    with pytest.raises(TypeError):
        LanguageNegotiator("en")


def test_no_offers_never_match() -> None:
    assert LanguageNegotiator([]).best("en, *") is None


# --- the brief's examples --------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr, zh;q=0.8, en;q=0.5", "zh"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("de", None),
        ("zh;q=0, en", "en"),
        ("*", "zh"),
        ("*;q=0.1, en", "en"),
        ("zh-TW;q=0.9, en;q=0.95", "en"),
        (None, None),
        (b"", None),
        ("", None),
        (b"fr, zh;q=0.8, en;q=0.5", "zh"),
    ],
)
def test_examples(header: str | bytes | None, expected: str | None) -> None:
    assert LanguageNegotiator(["zh", "en"]).best(header) == expected


# --- matching and ranking --------------------------------------------------


def test_client_range_matches_more_specific_offer() -> None:
    assert LanguageNegotiator(["zh", "en-us"]).best("en") == "en-us"


def test_prefix_match_needs_a_subtag_boundary() -> None:
    # "en" must not match "eng" (a different language), nor "zh" match "zha".
    assert LanguageNegotiator(["eng", "zha"]).best("en, zh") is None


def test_matching_is_case_insensitive() -> None:
    assert LanguageNegotiator(["EN-us"]).best("En-US") == "en-us"


def test_within_one_entry_exact_beats_specific_beats_order() -> None:
    neg = LanguageNegotiator(["en-gb", "en", "en-us"])
    assert neg.best("en") == "en"
    assert neg.best("en-us") == "en-us"
    assert neg.best("en-au") == "en"
    assert LanguageNegotiator(["zh", "zh-hant"]).best("zh-hant-tw") == "zh-hant"
    assert LanguageNegotiator(["en-gb", "en-us"]).best("en") == "en-gb"
    assert LanguageNegotiator(["zh", "zh-hant-tw"]).best("zh-hant") == "zh-hant-tw"


def test_ties_in_q_go_to_client_order() -> None:
    neg = LanguageNegotiator(["en", "fr"])
    assert neg.best("fr;q=0.5, en;q=0.5") == "fr"
    assert neg.best("en;q=0.5, fr;q=0.5") == "en"


def test_highest_q_wins_regardless_of_position() -> None:
    assert LanguageNegotiator(["en", "fr"]).best("en;q=0.2, fr;q=0.7") == "fr"


def test_star_means_offers_not_otherwise_named() -> None:
    neg = LanguageNegotiator(["en", "zh"])
    assert neg.best("en;q=0.5, *") == "zh"
    assert neg.best("*, en;q=0.5") == "zh"
    assert LanguageNegotiator(["en"]).best("en;q=0.5, *") == "en"
    assert neg.best("*;q=0.3, en;q=0.2") == "zh"


def test_invalid_entries_do_not_spoil_the_rest() -> None:
    assert LanguageNegotiator(["zh", "en"]).best("en_US, zh;q=oops, en;q=0.7") == "en"


# --- refusals (q=0) --------------------------------------------------------


def test_refusal_covers_the_family() -> None:
    neg = LanguageNegotiator(["zh-tw", "en"])
    assert neg.best("zh;q=0, en;q=0.1") == "en"  # zh;q=0 refuses zh-tw too
    assert neg.best("zh;q=0, zh-TW;q=0.5, en;q=0.1") == "zh-tw"  # a more specific positive range rescues
    assert neg.best("zh, zh-TW;q=0, en;q=0.1") == "en"  # zh matches zh-tw, but zh-TW;q=0 refuses it
    assert neg.best("zh, zh-TW;q=0") is None


def test_more_specific_positive_range_rescues() -> None:
    neg = LanguageNegotiator(["en", "en-us", "en-gb"])
    assert neg.best("en;q=0, en-GB") == "en-gb"
    assert neg.best("en;q=0, en-GB;q=0.1, fr") == "en-gb"


def test_refusal_never_reaches_a_broader_offer() -> None:
    assert LanguageNegotiator(["zh"]).best("zh-TW;q=0, zh;q=0.5") == "zh"
    assert LanguageNegotiator(["zh"]).best("zh-TW;q=0, zh-CN") == "zh"


def test_refusing_the_family_refuses_the_family_offer() -> None:
    assert LanguageNegotiator(["zh-*"]).best("zh-CN, zh;q=0") is None


def test_refusal_wins_a_tie_of_the_same_range() -> None:
    assert LanguageNegotiator(["en", "fr"]).best("en, en;q=0, fr;q=0.1") == "fr"


def test_star_refusal_refuses_unnamed_offers() -> None:
    neg = LanguageNegotiator(["zh", "en"])
    assert neg.best("*;q=0, en;q=0.1") == "en"
    assert neg.best("*;q=0") is None
    assert neg.best("*;q=0, de") is None


def test_only_refusals_means_none() -> None:
    assert LanguageNegotiator(["zh", "en"]).best("zh;q=0, en;q=0") is None


# --- cache -----------------------------------------------------------------


def test_cache_is_bounded_and_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(language, "_CACHE_MAX_ENTRIES", 3)
    neg = LanguageNegotiator(["zh", "en"])
    headers = [f"x-{i}, en;q=0.{i + 1}" for i in range(8)]
    for _ in range(2):
        for h in headers:
            assert neg.best(h) == "en"
            assert len(neg._cache) <= 3
    assert neg.best("zh") == "zh"
    assert neg.best("zh") == "zh"


def test_long_values_are_answered_but_not_cached() -> None:
    neg = LanguageNegotiator(["en"])
    long_value = ", ".join(["de-at-x-longer;q=0.1"] * 60) + ", en"
    assert len(long_value) > 512
    assert neg.best(long_value) == "en"
    assert long_value not in neg._cache


def test_bytes_and_str_give_the_same_answer() -> None:
    neg = LanguageNegotiator(["zh", "en"])
    for header in ["zh-CN,zh;q=0.9", "en-US,en;q=0.9", "de"]:
        assert neg.best(header) == neg.best(header.encode())


def test_only_the_first_64_entries_are_read() -> None:
    """A field of thousands of entries costs no more than 64 (browsers send < 10)."""
    neg = LanguageNegotiator(["en", "zh"])
    assert neg.best(", ".join(["de"] * 63 + ["en"])) == "en"
    assert neg.best(", ".join(["de"] * 64 + ["en"])) is None
    assert neg.best("*," * 8000 + "en;q=0.1") == "en"  # every entry a star: the first offer
