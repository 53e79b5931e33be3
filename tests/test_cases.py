"""Hand-worked cases (tests/cases/*.yaml) run on every engine.

Each case file holds a `cases:` map. A case is either an expression (`expr:`,
evaluated as an output metric `x` for every member) or a small rule set
(`rules:`, YAML text added to the base schema), with members, event rows, an
`as_of`, and the expected values:

    cases:
      ten_by_three_truncates:
        expr: 10 / 3
        expect: 3.333333333333333333          # every member
      ranks_share_ties:
        expr: rank(i)
        members: [{member_id: a, i: 5}, {member_id: b, i: 5}, {member_id: c, i: 1}]
        expect_by_member: {a: 1, b: 1, c: 3}
      tier_met_exactly:
        rules: |
          tiers: …
        expect_rows: {m1: {tier: gold, next_tier: null}}

The fixture rows are written as JSONL files and read by the real snapshot reader,
so rows after `as_of` are dropped as in a real run. To run the cases on another
engine, add one line to ENGINES: a function (rules, data_dir, as_of) → result rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from memberrules.engine.check import check_rule_set
from memberrules.engine.duckdb_engine import evaluate_duckdb
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.evaluate import parse_as_of
from memberrules.engine.load import Positions, load_file
from memberrules.engine.results import decimal_text, result_columns
from memberrules.engine.snapshot import read_snapshot
from memberrules.engine.testing import _loose_equal, fixture_value, show

CASES_DIR = Path(__file__).parent / "cases"
DEFAULT_AS_OF = "2026-11-01T10:00:00+08:00"

BASE_SCHEMA = """\
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, i: int?, j: int?, d: decimal?, e: decimal?, f: float?, g: float?, s: string?, b: bool?,
             c: bool?, ts: timestamp?, day: date?, growth: int, held: string?, tags: list<string>}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal?, n: int?, category: string?}
"""
MEMBER_DEFAULTS = {"growth": 0, "tags": []}


def _python_rows(rules, data_dir: Path, as_of: datetime) -> list[dict]:
    snapshot = read_snapshot(data_dir, rules.model.schema_, rules.timezone, as_of)
    return compile_rule_set(rules).evaluate(snapshot, as_of).rows


def _duckdb_rows(rules, data_dir: Path, as_of: datetime) -> list[dict]:
    return evaluate_duckdb(rules, data_dir, as_of).rows


ENGINES = {
    "python": _python_rows,
    "duckdb": _duckdb_rows,
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    return ENGINES[request.param]


def _load_cases() -> list:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        problems: list = []
        loaded = load_file(path, path.name, Positions(), problems)
        assert not problems, [str(p.message) for p in problems]
        for name, case in loaded.data["cases"].items():
            cases.append(pytest.param(path.stem, name, case, loaded.data.get("schema", BASE_SCHEMA),
                                      id=f"{path.stem}_{name}"))
    return cases


def _json(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return decimal_text(value)
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_table(path: Path, rows: list[dict]) -> None:
    lines = ["{" + ",".join(f'"{k}":{_json(v)}' for k, v in row.items()) + "}" for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _expected(raw, type_, tz):
    return fixture_value(raw, type_.with_null(), tz)


@pytest.mark.parametrize("file, name, case, schema", _load_cases())
def test_case(file, name, case, schema, engine, tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "schema.yaml").write_text(schema, encoding="utf-8")
    (rules_dir / "rules.yaml").write_text(case.get("rules", ""), encoding="utf-8")
    if "expr" in case:
        metric = "metrics:\n  x:\n    expr: " + _yaml_quote(case["expr"]) + "\n    output: true\n"
        (rules_dir / "x.yaml").write_text(metric, encoding="utf-8")
    params = {k: str(v) for k, v in (case.get("params") or {}).items()}
    checked = check_rule_set(rules_dir, params)
    assert checked.rule_set is not None, [f"{d.span}: {d.message}" for d in checked.diagnostics if d.is_error]
    rules = checked.rule_set
    tz = ZoneInfo(rules.timezone)

    data = tmp_path / "data"
    data.mkdir()
    members = [dict(MEMBER_DEFAULTS, **m) for m in case.get("members", [{"member_id": "m1"}])]
    _write_table(data / "member.jsonl", members)
    for table in rules.event_tables:
        _write_table(data / f"{table}.jsonl", case.get(table, []))
    as_of = parse_as_of(str(case.get("as_of", DEFAULT_AS_OF)), rules.timezone)

    rows = {row[rules.member.key]: row for row in engine(rules, data, as_of)}
    types = {column.name: column.type for column in result_columns(rules)}
    checks: list[tuple[str, str, object]] = []
    if "expect" in case:
        checks += [(member, "x", case["expect"]) for member in rows]
    for member, value in (case.get("expect_by_member") or {}).items():
        checks.append((str(member), "x", value))
    for member, columns in (case.get("expect_rows") or {}).items():
        checks += [(str(member), column, value) for column, value in columns.items()]
    assert checks, "the case expects nothing"
    wrong = []
    for member, column, raw in checks:
        expected = _expected(raw, types[column], tz)
        actual = rows[member][column]
        if column == "segments":
            expected, actual = sorted(expected), sorted(actual)
        if not _loose_equal(expected, actual):
            wrong.append(f"{member}.{column}: expected {show(expected)}, got {show(actual)}")
    assert not wrong, "\n".join(wrong)


def _yaml_quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def test_every_case_file_has_cases():
    files = sorted(CASES_DIR.glob("*.yaml"))
    assert len(files) >= 7
    assert all(case.values[0] for case in _load_cases())
