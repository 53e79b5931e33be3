"""Loading rule files: safe scalars, positions, duplicate keys, merging, hostile files."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberrules.engine import load
from memberrules.engine.errors import Span
from memberrules.engine.load import load_rule_set, rule_files


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def load_text(tmp_path: Path, text: str | bytes, name: str = "rules.yaml"):
    write(tmp_path, {name: text})
    return load_rule_set(tmp_path, base=tmp_path)


def codes(loaded) -> list[str]:
    return [d.code for d in loaded.diagnostics]


# -- scalars ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("12", 12),
    ("-3", -3),
    ("19.90", Decimal("19.90")),
    ("true", True),
    ("False", False),
    ("null", None),
    ("~", None),
    ("", None),
    ("on", "on"),
    ("yes", "yes"),
    ("no", "no"),
    ("2026-11-01", "2026-11-01"),
    ("30d", "30d"),
    ("'12'", "12"),
    ('"true"', "true"),
    ("0x1F", "0x1F"),
    ("1e3", "1e3"),
])
def test_scalars_resolve_by_yaml_1_2_core_without_timestamps(tmp_path, text, value):
    loaded = load_text(tmp_path, f"params:\n  x: {text}\n")
    assert loaded.diagnostics == []
    assert loaded.data["params"]["x"] == value
    assert type(loaded.data["params"]["x"]) is type(value)


def test_decimal_values_are_exact(tmp_path):
    assert load_text(tmp_path, "params: {x: 0.1}\n").data["params"]["x"] == Decimal("0.1")


def test_tags_never_build_objects(tmp_path):
    loaded = load_text(tmp_path, "params:\n  x: !!python/object/apply:os.system ['echo hi']\n")
    assert loaded.data["params"]["x"] == ["echo hi"]


# -- keys ---------------------------------------------------------------------------------------

def test_a_duplicate_key_names_both_places(tmp_path):
    loaded = load_text(tmp_path, "segments:\n  vip: a\n  big: b\n  vip: c\n")
    [diagnostic] = loaded.diagnostics
    assert diagnostic.code == "MR103" and diagnostic.message == "duplicate key 'vip'"
    assert diagnostic.span == Span("rules.yaml", 4, 3, 4, 6)
    assert diagnostic.related == (("first defined here", Span("rules.yaml", 2, 3, 2, 6)),)
    assert loaded.data["segments"] == {"vip": "a", "big": "b"}


def test_merge_keys_are_refused(tmp_path):
    loaded = load_text(tmp_path, "params:\n  base: &b {x: 1}\n  other:\n    <<: *b\n    y: 2\n")
    assert codes(loaded) == ["MR104"]
    assert "merge keys" in loaded.diagnostics[0].message


def test_a_key_that_is_a_map_is_refused(tmp_path):
    assert codes(load_text(tmp_path, "params:\n  ? {a: 1}\n  : 2\n")) == ["MR104"]


def test_a_file_that_is_not_a_map_is_refused(tmp_path):
    assert codes(load_text(tmp_path, "- a\n- b\n")) == ["MR104"]


def test_an_empty_file_is_an_empty_rule_file(tmp_path):
    loaded = load_text(tmp_path, "# nothing yet\n")
    assert loaded.diagnostics == [] and loaded.data == {}


# -- YAML errors --------------------------------------------------------------------------------

def test_tabs_get_a_hint(tmp_path):
    [diagnostic] = load_text(tmp_path, "segments:\n\tbig: x > 1\n").diagnostics
    assert diagnostic.code == "MR101"
    assert diagnostic.span.line == 2 and diagnostic.span.col == 1
    assert diagnostic.hint == "YAML indents with spaces, never tabs"


def test_a_colon_in_a_plain_expression_gets_a_quoting_hint(tmp_path):
    [diagnostic] = load_text(tmp_path, "campaigns:\n  x:\n    template: Hi: there: you\n").diagnostics
    assert diagnostic.code == "MR101"
    assert "quoted" in diagnostic.hint


def test_bom_is_skipped(tmp_path):
    loaded = load_text(tmp_path, b"\xef\xbb\xbfparams:\n  x: 1\n")
    assert loaded.diagnostics == [] and loaded.data == {"params": {"x": 1}}


def test_not_utf8_names_line_column_and_byte_and_shows_the_line(tmp_path):
    loaded = load_text(tmp_path, b"params:\n  name: caf\xe9\n")
    [diagnostic] = loaded.diagnostics
    assert diagnostic.code == "MR102" and "0xe9" in diagnostic.message
    assert (diagnostic.span.line, diagnostic.span.col) == (2, 12)
    assert loaded.sources["rules.yaml"].splitlines()[1] == "  name: caf\ufffd"


# -- hostile files ------------------------------------------------------------------------------

def _alias_bomb(levels: int = 9) -> str:
    lines = ["params:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast(tmp_path):
    started = time.perf_counter()
    loaded = load_text(tmp_path, _alias_bomb())
    elapsed = time.perf_counter() - started
    assert codes(loaded) == ["MR105"]
    assert "alias bomb" in loaded.diagnostics[0].message
    assert elapsed < 3.0


def test_small_aliases_are_fine(tmp_path):
    loaded = load_text(tmp_path, "params:\n  a: &x [1, 2]\n  b: *x\n")
    assert loaded.diagnostics == [] and loaded.data["params"]["b"] == [1, 2]


@pytest.mark.parametrize("deep", [
    "[" * 100 + "]" * 100,  # flow, refused before the YAML parser sees it
    "[" * 20000 + "]" * 20000,
    "{a: " * 3000 + "1" + "}" * 3000,
])
def test_deep_flow_nesting_is_refused_fast(tmp_path, deep):
    started = time.perf_counter()
    loaded = load_text(tmp_path, "params:\n  deep: " + deep + "\n")
    assert codes(loaded) == ["MR105"]
    assert loaded.diagnostics[0].span.line == 2
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("levels", [70, 2000])
def test_deep_block_nesting_is_refused(tmp_path, levels):
    # Block sequences nested on one line: ruamel's composer recurses once per level.
    loaded = load_text(tmp_path, "params:\n  deep:\n    " + "- " * levels + "x\n")
    assert codes(loaded) == ["MR105"]
    assert "deeper than 64" in loaded.diagnostics[0].message
    assert loaded.diagnostics[0].span.line == 3


def test_brackets_inside_strings_do_not_count_as_nesting_when_balanced(tmp_path):
    template = "'" + "[x] " * 200 + "'"
    assert load_text(tmp_path, f"params:\n  t: {template}\n").diagnostics == []


def test_files_over_the_size_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "MAX_FILE_BYTES", 100)
    loaded = load_text(tmp_path, "params:\n" + "".join(f"  p{i}: {i}\n" for i in range(50)))
    assert codes(loaded) == ["MR105"]


# -- files and merging --------------------------------------------------------------------------

def test_rule_files_skip_tests_and_hidden_directories(tmp_path):
    write(tmp_path, {"b.yaml": "", "a.yml": "", "program.test.yaml": "", ".git/x.yaml": "",
                     "sub/c.yaml": "", "notes.txt": "", ".hidden/d.yaml": ""})
    assert [p.relative_to(tmp_path).as_posix() for p in rule_files(tmp_path)] == ["a.yml", "b.yaml", "sub/c.yaml"]


def test_a_single_file_is_a_rule_set(tmp_path):
    path = write(tmp_path, {"one.yaml": "params: {x: 1}\n"}) / "one.yaml"
    assert rule_files(path) == [path]
    assert load_rule_set(path).data == {"params": {"x": 1}}


def test_an_empty_directory_is_an_error(tmp_path):
    assert codes(load_rule_set(tmp_path)) == ["MR106"]


def test_named_sections_merge_across_files(tmp_path):
    write(tmp_path, {"a.yaml": "metrics:\n  x: 1\n", "b.yaml": "metrics:\n  y: 2\nparams:\n  p: 3\n"})
    loaded = load_rule_set(tmp_path, base=tmp_path)
    assert loaded.diagnostics == []
    assert loaded.data == {"metrics": {"x": 1, "y": 2}, "params": {"p": 3}}
    assert loaded.files == ["a.yaml", "b.yaml"]
    assert loaded.positions.span(("metrics", "y")) == Span("b.yaml", 2, 6, 2, 7)
    assert loaded.positions.key_span(("metrics", "x")) == Span("a.yaml", 2, 3, 2, 4)


def test_a_name_defined_in_two_files_names_both(tmp_path):
    write(tmp_path, {"a.yaml": "metrics:\n  x: 1\n", "b.yaml": "\nmetrics:\n  x: 2\n"})
    [diagnostic] = load_rule_set(tmp_path, base=tmp_path).diagnostics
    assert diagnostic.code == "MR103"
    assert diagnostic.span == Span("b.yaml", 3, 3, 3, 4)
    assert diagnostic.related == (("first defined here", Span("a.yaml", 2, 3, 2, 4)),)


def test_an_unnamed_section_in_two_files_is_an_error(tmp_path):
    write(tmp_path, {"a.yaml": "timezone: UTC\n", "b.yaml": "timezone: Asia/Shanghai\n"})
    [diagnostic] = load_rule_set(tmp_path, base=tmp_path).diagnostics
    assert diagnostic.code == "MR103" and "two files" in diagnostic.message
    assert diagnostic.related[0][1].file == "a.yaml"


def test_paths_without_base_are_shown_as_given(tmp_path):
    write(tmp_path, {"a.yaml": "metrics:\n  x: 1\n"})
    assert load_rule_set(tmp_path).files == [str(tmp_path / "a.yaml")]


def test_nearest_position_is_used_for_missing_paths(tmp_path):
    loaded = load_text(tmp_path, "tiers:\n  by: growth_value\n")
    assert loaded.positions.span(("tiers", "levels", 0, "min")) == loaded.positions.span(("tiers",))


# -- expression locators ------------------------------------------------------------------------

LOCATED = [
    ("plain", "segments:\n  s: a and growth_valeu\n", (2, 12)),
    ("single", "segments:\n  s: '''x'' in t and growth_valeu'\n", (2, 22)),
    ("double", 'segments:\n  s: "\\"x\\" in t and growth_valeu"\n', (2, 22)),
    ("folded", "segments:\n  s: >\n    a\n    and growth_valeu\n", (4, 9)),
    ("literal", "segments:\n  s: |\n    a\n    and growth_valeu\n", (4, 9)),
    ("folded_kept", "segments:\n  s: >-\n    a and\n      growth_valeu\n", (4, 7)),
    # In a double-quoted scalar each escape stands for one character of the expression.
    ("double_unicode_escape", 'segments:\n  s: "caf\\u00e9 and growth_valeu"\n', (2, 21)),
    ("double_hex_and_tab", 'segments:\n  s: "\\x41\\t\\U0001F600 and growth_valeu"\n', (2, 28)),
    ("double_escaped_line_break", 'segments:\n  s: "a and \\\n    growth_valeu"\n', (3, 5)),
]


@pytest.mark.parametrize("style, text, where", LOCATED, ids=[s for s, _, _ in LOCATED])
def test_locator_maps_expression_offsets_back_into_the_file(tmp_path, style, text, where):
    loaded = load_text(tmp_path, text)
    value = loaded.data["segments"]["s"]
    start = value.index("growth_valeu")
    span = loaded.positions.locator(("segments", "s"))(start, start + len("growth_valeu"))
    assert (span.line, span.col) == where
    assert span.end_col - span.col == len("growth_valeu")
    source_line = loaded.sources["rules.yaml"].splitlines()[span.line - 1]
    assert source_line[span.col - 1:span.end_col - 1] == "growth_valeu"


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
       st.sampled_from([20, 80]), st.sampled_from(['"', "'"]))
@settings(max_examples=400, deadline=None)
def test_every_character_of_a_quoted_scalar_is_found_in_its_source(value, width, style):
    """Whatever PyYAML writes quoted (escapes, folded lines; double quotes where single ones
    cannot hold the value), each character of the value is found in order: at itself, at the
    backslash of its escape, or at a line break folded into a space."""
    import yaml
    from ruamel.yaml import YAML

    text = yaml.dump({"s": value}, default_style=style, allow_unicode=False, width=width)
    node = YAML(typ="rt").compose(text).value[0][1]
    assert node.value == value
    offsets = load._align_scalar(node, text)
    assert offsets is not None and len(offsets) == max(len(value), 1)
    assert offsets == sorted(offsets)
    for char, at in zip(value, offsets):
        assert text[at] == char or text[at] == "\\" or (char == " " and text[at] == "\n"), (char, text[at:at + 8])


# -- the two composers --------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
SAMPLES = sorted(GOLDEN.glob("*/*.yaml")) + [Path(__file__).parent / "fixtures" / "spec_example" / "rules.yaml"]


@pytest.mark.parametrize("path", SAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in SAMPLES])
def test_libyaml_and_ruamel_compose_the_same_values_and_positions(path):
    # load_rule_set composes with libyaml when it is there; fmt and the fallback use ruamel.
    results = []
    for fast in (True, False):
        positions, diagnostics = load.Positions(), []
        loaded = load.load_file(path, "f.yaml", positions, diagnostics, fast=fast)
        spans = {p: positions._span("f.yaml", o.node) for p, o in positions.origins.items()}
        results.append((loaded.data, spans, [(d.code, d.span and (d.span.line, d.span.col)) for d in diagnostics]))
    assert results[0] == results[1]
