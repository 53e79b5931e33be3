"""Diagnostics as data, and their text, JSON and GitHub renderings."""

from __future__ import annotations

import json

import pytest

from memberrules.engine.errors import (
    Diagnostic, DiagnosticError, Span, did_you_mean, display_width, render, render_github, render_text,
    sort_key, to_json,
)

SOURCES = {"rules/segments.yaml": "segments:\n  seed_user: \"frequncy >= 5\"\n"}
TYPO = Diagnostic("MR301", "unknown name 'frequncy'", Span("rules/segments.yaml", 2, 15, 2, 23),
                  hint="did you mean 'frequency'? (metric, rules/metrics.yaml:6:3)")


def test_text_has_location_line_caret_and_hint():
    assert render_text(TYPO, SOURCES) == (
        "rules/segments.yaml:2:15: error: unknown name 'frequncy' [MR301]\n"
        "  |\n"
        "2 |   seed_user: \"frequncy >= 5\"\n"
        "  |               ^^^^^^^^\n"
        "   = hint: did you mean 'frequency'? (metric, rules/metrics.yaml:6:3)")


def test_gutter_widens_with_the_line_number():
    text = "\n" * 99 + "x == 1\n"
    rendered = render_text(Diagnostic("MR301", "m", Span("f", 100, 1, 100, 2)), {"f": text})
    assert rendered.splitlines()[1:] == ["    |", "100 | x == 1", "    | ^"]


def test_caret_counts_wide_characters_twice():
    source = {"f": "  上海会员: 城市 == '上海'\n"}
    span = Span("f", 1, 15, 1, 19)  # '上海' with quotes, after wide characters
    caret = render_text(Diagnostic("MR309", "m", span), source).splitlines()[3]
    assert caret == "  | " + " " * display_width("  上海会员: 城市 == ") + "^" * 6


def test_tabs_in_the_source_line_keep_the_caret_aligned():
    rendered = render_text(Diagnostic("MR101", "m", Span("f", 1, 2, 1, 5)), {"f": "\tbig: 1\n"})
    source_line, caret = rendered.splitlines()[2:4]
    assert source_line == "1 |  big: 1"
    assert caret.index("^") == source_line.index("big")


def test_a_span_over_several_lines_underlines_to_the_end_of_the_first():
    rendered = render_text(Diagnostic("MR413", "m", Span("f", 1, 3, 2, 4), severity="warning"),
                           {"f": "a and\nbbb\n"})
    assert rendered.splitlines()[0] == "f:1:3: warning: m [MR413]"
    assert rendered.splitlines()[3] == "  |   ^^^"


def test_a_diagnostic_without_a_span_is_one_line():
    assert render_text(Diagnostic("MR107", "no schema", hint="add one"), {}) == \
        "error: no schema [MR107]\n   = hint: add one"


def test_a_file_without_text_shows_no_source_line():
    assert render_text(Diagnostic("MR102", "not UTF-8", Span("f", 3, 1, 3, 2)), {}) == "f:3:1: error: not UTF-8 [MR102]"


def test_related_places_become_notes():
    diagnostic = Diagnostic("MR103", "'x' is defined twice", Span("b.yaml", 1, 1, 1, 2),
                            related=(("first defined here", Span("a.yaml", 3, 3, 3, 4)),))
    assert render_text(diagnostic, {}).endswith("   = note: first defined here (a.yaml:3:3)")


def test_json_carries_every_field():
    assert to_json(TYPO) == {
        "code": "MR301", "severity": "error", "message": "unknown name 'frequncy'",
        "file": "rules/segments.yaml", "line": 2, "col": 15, "end_line": 2, "end_col": 23,
        "hint": "did you mean 'frequency'? (metric, rules/metrics.yaml:6:3)", "related": [],
    }


def test_json_rendering_is_a_list_and_keeps_unicode():
    diagnostic = Diagnostic("MR309", "'重点维护' is not one of rfm's values", None)
    parsed = json.loads(render([diagnostic, TYPO], "json", {}))
    assert [d["code"] for d in parsed] == ["MR309", "MR301"]
    assert "重点维护" in render([diagnostic], "json", {})
    assert parsed[0]["file"] is None


def test_github_annotation_escapes_properties_and_newlines():
    diagnostic = Diagnostic("MR301", "50% wrong", Span("dir,x/a:b.yaml", 2, 3, 2, 5), hint="line1\nline2")
    assert render_github(diagnostic) == (
        "::error file=dir%2Cx/a%3Ab.yaml,line=2,col=3,endLine=2,endColumn=5,title=MR301::"
        "MR301: 50%25 wrong%0Ahint: line1%0Aline2")


def test_github_warnings_and_spanless_diagnostics():
    assert render_github(Diagnostic("MR413", "m", severity="warning")) == "::warning::MR413: m"


def test_text_rendering_separates_diagnostics_by_a_blank_line():
    assert render([TYPO, TYPO], "text", SOURCES).count("\n\n") == 1


@pytest.mark.parametrize("word, candidates, expected", [
    ("frequncy", ["frequency", "monetary"], "frequency"),
    ("月消费费", ["月消费", "城市"], "月消费"),
    ("zzz", ["frequency"], None),
    ("x", [], None),
])
def test_did_you_mean(word, candidates, expected):
    assert did_you_mean(word, candidates) == expected


def test_display_width_of_mixed_text():
    assert display_width("ab重点") == 6
    assert display_width("ａ") == 2  # full-width latin


def test_sort_key_orders_by_file_line_col_and_puts_spanless_first():
    late = Diagnostic("MR301", "m", Span("b", 1, 1, 1, 2))
    early = Diagnostic("MR301", "m", Span("a", 9, 9, 9, 10))
    spanless = Diagnostic("MR107", "m")
    assert sorted([late, early, spanless], key=sort_key) == [spanless, early, late]


def test_diagnostic_error_keeps_every_diagnostic():
    error = DiagnosticError([TYPO, TYPO])
    assert error.diagnostics == [TYPO, TYPO]
    assert "frequncy" in str(error)


def test_point_span_is_at_least_one_character_wide():
    assert Span.point("f", 2, 3, width=0) == Span("f", 2, 3, 2, 4)
    assert str(Span.point("f", 2, 3)) == "f:2:3"


def test_only_newlines_end_source_lines():
    # A form feed or U+2028 in an earlier line (a comment, a string) must not shift the line shown.
    text = "# a\u2028b\x0cc\r\nsegments: x\r\n"
    rendered = render_text(Diagnostic("MR301", "m", Span("f", 2, 1, 2, 9)), {"f": text})
    assert rendered.splitlines()[2] == "2 | segments: x"
