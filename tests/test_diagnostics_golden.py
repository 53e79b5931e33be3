"""`memberrules validate` on one bad rule set per diagnostic kind, against golden files.

Each tests/golden/diagnostics/<case>/ holds a tiny rule set (*.yaml) and what validate
prints for it: expected.out (text, exactly as a person sees it), expected.json, and for
a few cases expected.github. Validate runs from inside the case directory on `.`, so
every path in the output is relative and stable. `pytest --update-golden` rewrites the
expected files; CODES below pins what each case is about, so an update that loses the
point of a case still fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberrules.cli import main

CASES_DIR = Path(__file__).parent / "golden" / "diagnostics"

# case → the (code, severity) pairs its rule set must produce, and nothing else.
CODES: dict[str, list[tuple[str, str]]] = {
    "aggregate_of_non_numeric": [("MR306", "error")],
    "alias_bomb": [("MR105", "error")],
    "bad_escape_in_string": [("MR207", "error")],
    "bom_file_validates_clean": [],
    "chained_comparison": [("MR203", "error")],
    "chinese_names": [("MR309", "error"), ("MR301", "error")],
    "class_case_when_and_else": [("MR408", "error")],
    "class_value_typo": [("MR309", "error")],
    "coalesce_on_non_null_warning": [("MR411", "warning")],
    "date_compared_with_int": [("MR302", "error")],
    "deep_expression_nesting": [("MR206", "error")],
    "deep_yaml_nesting": [("MR105", "error")],
    "duplicate_name_across_files": [("MR103", "error")],
    "duplicate_yaml_key": [("MR103", "error")],
    "duration_added_to_string": [("MR302", "error")],
    "else_not_last": [("MR409", "error")],
    "huge_expression": [("MR206", "error")],
    "invalid_date_literal": [("MR207", "error")],
    "metric_cycle": [("MR401", "error")],
    "missing_schema": [("MR107", "error")],
    "not_utf8": [("MR102", "error")],
    "nullable_condition_warning": [("MR413", "warning")],
    "param_given_as_a_map": [("MR108", "error")],
    "requires_not_a_field": [("MR301", "error")],
    "scalar_style_double_quoted": [("MR301", "error")],
    "scalar_style_double_quoted_escapes": [("MR301", "error")],
    "scalar_style_folded": [("MR301", "error")],
    "scalar_style_literal": [("MR301", "error")],
    "scalar_style_plain": [("MR301", "error")],
    "scalar_style_single_quoted": [("MR301", "error")],
    "single_equals": [("MR201", "error")],
    "tabs_in_yaml": [("MR101", "error")],
    "template_syntax_error": [("MR315", "error")],
    "template_syntax_error_block": [("MR315", "error")],
    "template_unknown_variable": [("MR314", "error"), ("MR314", "error")],
    "tier_thresholds_not_increasing": [("MR406", "error")],
    "unclosed_parenthesis": [("MR202", "error")],
    "unknown_function": [("MR303", "error")],
    "unknown_key_in_tiers": [("MR108", "error")],
    "unknown_key_top_level": [("MR108", "error")],
    "unknown_name_member_field": [("MR301", "error")],
    "unknown_name_metric": [("MR301", "error")],
    "unknown_timezone": [("MR311", "error")],
    "unknown_trigger": [("MR414", "error")],
    "unknown_type_in_schema": [("MR310", "error"), ("MR310", "error")],
    "within_without_unit": [("MR307", "error")],
    "wrong_arg_count": [("MR304", "error")],
}

GITHUB_CASES = ("unknown_name_metric", "nullable_condition_warning", "duplicate_name_across_files")

# Where the caret of the one diagnostic of a scalar-style case must stand: (line, col, end_col).
# Each rule set misspells growth_value as growth_valeu after quotes, escapes or folds.
STYLE_SPANS = {
    "scalar_style_plain": (11, 43, 55),
    "scalar_style_single_quoted": (11, 52, 64),
    "scalar_style_double_quoted": (11, 50, 62),
    "scalar_style_folded": (13, 9, 21),
    "scalar_style_literal": (13, 9, 21),
    # `\u00e9` before the name stands for one character of the expression.
    "scalar_style_double_quoted_escapes": (11, 33, 45),
}


def _validate(case: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.chdir(case)
    return CliRunner().invoke(main, ["validate", ".", *args], catch_exceptions=False)


def test_every_case_directory_is_listed():
    found = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())
    assert found == sorted(CODES)
    assert len(CODES) >= 30


@pytest.mark.parametrize("name", sorted(CODES))
def test_validate_text_output_matches_golden(name, monkeypatch, golden):
    case = CASES_DIR / name
    result = _validate(case, monkeypatch)
    expected_exit = 1 if any(severity == "error" for _, severity in CODES[name]) else 0
    assert result.exit_code == expected_exit, result.output
    golden(case / "expected.out", result.output)


@pytest.mark.parametrize("name", sorted(CODES))
def test_validate_json_output_matches_golden(name, monkeypatch, golden):
    case = CASES_DIR / name
    result = _validate(case, monkeypatch, "--format", "json")
    found = [(d["code"], d["severity"]) for d in json.loads(result.stdout)]
    assert sorted(found) == sorted(CODES[name])
    for diagnostic in json.loads(result.stdout):
        assert diagnostic["file"] is None or not Path(diagnostic["file"]).is_absolute()
    golden(case / "expected.json", result.stdout)


@pytest.mark.parametrize("name", GITHUB_CASES)
def test_validate_github_output_matches_golden(name, monkeypatch, golden):
    case = CASES_DIR / name
    result = _validate(case, monkeypatch, "--format", "github")
    assert result.stdout.startswith("::")
    golden(case / "expected.github", result.stdout)


@pytest.mark.parametrize("name", sorted(STYLE_SPANS))
def test_caret_stands_on_the_misspelt_name_in_every_scalar_style(name, monkeypatch):
    result = _validate(CASES_DIR / name, monkeypatch, "--format", "json")
    [diagnostic] = json.loads(result.stdout)
    assert (diagnostic["line"], diagnostic["col"], diagnostic["end_col"]) == STYLE_SPANS[name]
    source = (CASES_DIR / name / "rules.yaml").read_text("utf-8").splitlines()[diagnostic["line"] - 1]
    assert source[diagnostic["col"] - 1:diagnostic["end_col"] - 1] == "growth_valeu"


# Where the caret of a template that does not compile must stand, and what it must stand on.
TEMPLATE_SPANS = {
    "template_syntax_error": ((13, 57, 58), "}"),  # a lone `}` the lexer cannot take
    "template_syntax_error_block": ((17, 47, 53), "endfor"),  # a tag the parser cannot take
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_SPANS))
def test_caret_stands_where_jinja_stops_reading_the_template(name, monkeypatch):
    result = _validate(CASES_DIR / name, monkeypatch, "--format", "json")
    [diagnostic] = json.loads(result.stdout)
    span, text = TEMPLATE_SPANS[name]
    assert (diagnostic["line"], diagnostic["col"], diagnostic["end_col"]) == span
    source = (CASES_DIR / name / "rules.yaml").read_text("utf-8").splitlines()[diagnostic["line"] - 1]
    assert source[diagnostic["col"] - 1:diagnostic["end_col"] - 1] == text


def test_duplicate_across_files_names_both_places(monkeypatch):
    result = _validate(CASES_DIR / "duplicate_name_across_files", monkeypatch, "--format", "json")
    [diagnostic] = json.loads(result.stdout)
    assert diagnostic["file"] == "more_metrics.yaml"
    assert diagnostic["related"] == [{"note": "first defined here", "at": "metrics.yaml:3:3"}]


def test_chinese_names_get_carets_two_columns_per_character(monkeypatch):
    result = _validate(CASES_DIR / "chinese_names", monkeypatch)
    lines = result.output.splitlines()
    source = next(i for i, line in enumerate(lines) if "'重点维护'" in line and "|" in line)
    caret = lines[source + 1]
    # '重点维护' with its quotes is 10 terminal columns; the text before it is CJK-wide too.
    assert caret.count("^") == 10
    prefix = lines[source][:lines[source].index("'重点维护'")]
    from memberrules.engine.errors import display_width

    assert caret.index("^") == display_width(prefix)
