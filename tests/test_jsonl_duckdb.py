"""DuckDB reads JSONL snapshots itself, by the Python reader's rules, or leaves them to it.

Any line DuckDB's fast path cannot read exactly as engine/snapshot.py does (a fraction with
more than 18 digits, a number where text is expected, a repeated key, "" for a number …)
sends the whole snapshot to the Python reader. So for every file, the rows are the Python
engine's, and the bad rows its errors; clean exports are read by DuckDB.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from memberrules.engine.check import check_rule_set
from memberrules.engine.duckdb_engine import Limits, connect, evaluate_duckdb
from memberrules.engine.errors import DiagnosticError
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.results import jsonl_lines, result_columns
from memberrules.engine.snapshot import read_snapshot

RULES = """\
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, i: int?, d: decimal?, f: float?, b: bool?, dt: date?, ts: timestamp?,
             tags: list<string>, s: string?}
metrics:
  out_i: {expr: "i", output: true}
  out_d: {expr: "d", output: true}
  out_f: {expr: "f", output: true}
  out_b: {expr: "b", output: true}
  out_dt: {expr: "dt", output: true}
  out_ts: {expr: "ts", output: true}
  out_tags: {expr: "length(tags)", output: true}
  out_s: {expr: "s", output: true}
"""
AS_OF = datetime(2026, 11, 1, 10, tzinfo=ZoneInfo("Asia/Shanghai"))
COLUMNS = ("i", "d", "f", "b", "dt", "ts", "tags", "s")

# JSON texts of values, right and wrong for each column.
TEXTS = st.sampled_from([
    "null", "true", "false", "0", "-7", "12", "9007199254740993", "123456789012345678901234567890",
    "1.5", "19.90", "-0.25", "0.123456789012345678", "0.1234567890123456789", "1e2", "-0.0", "3.0",
    '""', '" "', '"12"', '" 12 "', '"1.50"', '"true"', '"1"', '"x"', '"2026-11-01"', '"2026-02-30"',
    '"2026-11-01T10:00:00+08:00"', '"2026-11-01 09:30"', '"2026-11-01T10:00:00Z"',
    '["vip"]', '["a", "b"]', "[]", "[1]", '["x", null]', '{"a": 1}', '"\\u00e9\\"q\\\\"',
])


def _line(key: str, values: dict[str, str], repeat: str | None) -> str:
    fields = [f'"member_id": "{key}"'] + [f'"{name}": {text}' for name, text in values.items()]
    if repeat is not None:
        fields.append(f'"{repeat}": null')
    return "{" + ", ".join(fields) + "}\n"


def _evaluate(data: Path):
    rules_dir = data.parent / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "rules.yaml").write_text(RULES, encoding="utf-8")
    rules = check_rule_set(rules_dir).rule_set
    assert rules is not None
    return rules


def _outcomes(data: Path, con):
    """(rows as JSONL or the errors, DuckDB run or its errors, which reader DuckDB used)."""
    rules = _evaluate(data)
    tz = ZoneInfo(rules.timezone)
    columns = result_columns(rules)
    try:
        snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, AS_OF)
        expected = list(jsonl_lines(compile_rule_set(rules).evaluate(snapshot, AS_OF).rows, columns, tz))
    except DiagnosticError as error:
        expected = [str(d) for d in error.diagnostics]
    try:
        run = evaluate_duckdb(rules, data, AS_OF, connection=con)
        return expected, list(jsonl_lines(run.rows, columns, tz)), run.read_by
    except DiagnosticError as error:
        if error.diagnostics[0].code == "MR506":  # a decimal only the Python engine holds exactly
            return expected, expected, "python"
        return expected, [str(d) for d in error.diagnostics], "python"


@pytest.fixture(scope="module")
def con():
    connection = connect(Limits("1GB", threads=2))
    yield connection
    connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(st.dictionaries(st.sampled_from(COLUMNS), TEXTS),
                                st.none() | st.sampled_from(COLUMNS)), min_size=1, max_size=6))
def test_any_jsonl_file_gives_the_python_readers_rows_or_errors(con, lines):
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        text = "".join(_line(f"M{k}", values, repeat if repeat in values else None)
                       for k, (values, repeat) in enumerate(lines))
        (data / "member.jsonl").write_text(text, encoding="utf-8")
        note(text)
        expected, got, read_by = _outcomes(data, con)
        assert got == expected, read_by


VALID = {
    "i": ["null", "0", "-7", "12", '"12"', '" 12 "'],
    "d": ["null", "0", "1.5", "19.90", "-0.25", "0.123456789012345678", '"1.50"', "12"],
    "f": ["null", "0", "1.5", "1e2", "-0.0", "3.0", '"2.5"'],
    "b": ["null", "true", "false", '"true"', '"0"'],
    "dt": ["null", '"2026-11-01"', '"2000-02-29"'],
    "ts": ["null", '"2026-11-01T10:00:00+08:00"', '"2026-11-01 09:30"', '"2026-11-01T10:00:00Z"'],
    "tags": ["[]", '["vip"]', '["a", "b"]'],
    "s": ["null", '""', '"x"', '"\\u00e9\\"q\\\\"'],
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.fixed_dictionaries({name: st.sampled_from(texts) for name, texts in VALID.items()}),
                      min_size=1, max_size=5))
def test_well_formed_jsonl_is_read_by_duckdb_with_the_same_rows(con, lines):
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        text = "".join(_line(f"M{k}", values, None) for k, values in enumerate(lines))
        (data / "member.jsonl").write_text(text, encoding="utf-8")
        note(text)
        expected, got, read_by = _outcomes(data, con)
        assert got == expected
        if expected[0].startswith("{"):  # rows, not errors
            assert read_by == "duckdb"


def test_a_clean_export_is_read_by_duckdb(tmp_path, con):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"member_id": "M1", "i": 3, "d": 19.90, "f": 0.5, "b": True, "dt": "2000-02-29",
             "ts": "2026-11-01T09:00:00+08:00", "tags": ["vip", "é\"q"], "s": "x'y"},
            {"member_id": "M2", "tags": []},
            {"member_id": "M3", "i": None, "d": "-0.25", "f": 3, "b": "false", "dt": None, "ts": "2026-10-31 23:00",
             "tags": ["new"], "s": ""}]
    (data / "member.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "\n",
                                       encoding="utf-8")
    expected, got, read_by = _outcomes(data, con)
    assert read_by == "duckdb"
    assert got == expected and len(got) == 3


def test_a_decimal_beyond_decimal_38_18_is_an_error_not_rounded(tmp_path, con):
    data = tmp_path / "data"
    data.mkdir()
    (data / "member.jsonl").write_text('{"member_id": "M1", "tags": [], "d": 0.1234567890123456789}\n',
                                       encoding="utf-8")
    with pytest.raises(DiagnosticError) as error:
        evaluate_duckdb(_evaluate(data), data, AS_OF, connection=con)
    assert error.value.diagnostics[0].code == "MR506"
    assert "0.1234567890123456789" in str(error.value.diagnostics[0])


@pytest.mark.parametrize("line", [
    '{"member_id": "M1", "tags": [], "d": "1.5", "d": 2}',
    '{"member_id": "M1", "tags": [], "i": 3.0}',  # not an integer
    '{"member_id": "M1", "tags": [], "i": ""}',
    '{"member_id": "M1", "tags": [], "s": 1}',
    '{"member_id": "M1", "tags": [], "s": "a", "s": "b"}',  # the Python reader takes the last
    '{"member_id": "M1", "tags": [], "extra": 1}',
    '{"member_id": "", "tags": []}',
    '["M1"]',
])
def test_lines_duckdb_cannot_read_exactly_go_to_the_python_reader(tmp_path, con, line):
    data = tmp_path / "data"
    data.mkdir()
    (data / "member.jsonl").write_text('{"member_id": "M0", "tags": []}\n' + line + "\n", encoding="utf-8")
    expected, got, read_by = _outcomes(data, con)
    assert read_by == "python"
    assert got == expected
