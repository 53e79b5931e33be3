"""The SQL backend: golden scripts per dialect, valid SQL for each, exact decimals, Spark.

Golden files change only on purpose: `UPDATE_GOLDEN=1 pytest tests/test_sql.py`.
"""

from __future__ import annotations

import ast as python_ast
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlglot

from memberrules.engine import sql_dialects
from memberrules.engine.check import check_rule_set
from memberrules.engine.duckdb_engine import Limits, connect, evaluate_duckdb
from memberrules.engine.sql import compile_sql
from memberrules.engine.sql_dialects import DIALECTS

ROOT = Path(__file__).parent.parent
GOLDEN = ROOT / "tests" / "golden" / "sql"
CASES = {"spec_example": ROOT / "tests" / "fixtures" / "spec_example", "default_pack": ROOT / "rules"}
AS_OF = datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def checked(case: str):
    result = check_rule_set(CASES[case])
    assert result.rule_set is not None, [str(d) for d in result.diagnostics if d.is_error]
    return result.rule_set


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_sql_matches_golden_file(case, dialect):
    script = compile_sql(checked(case), dialect, as_of=AS_OF).sql()
    path = GOLDEN / f"{case}.{dialect}.sql"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="utf-8")
    assert script == path.read_text(encoding="utf-8"), f"{path} differs; UPDATE_GOLDEN=1 if the change is meant"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_compiled_sql_parses_back_in_its_dialect(dialect):
    compiled = compile_sql(checked("default_pack"), dialect, as_of=AS_OF)
    statements = [s for s in sqlglot.parse(compiled.sql(), read=dialect) if s is not None]
    assert len(statements) == 2
    assert isinstance(statements[-1], sqlglot.exp.Select)


def test_compile_reads_tables_from_the_names_given():
    sql = compile_sql(checked("spec_example"), "spark", as_of=AS_OF,
                      tables={"member": "crm.members", "orders": "shop.orders"}).sql()
    assert "crm.members" in sql and "shop.orders" in sql and 'FROM `events`' in sql


def test_compile_without_as_of_reads_the_clock_when_run():
    sql = compile_sql(checked("spec_example"), "duckdb").sql()
    assert "CURRENT_TIMESTAMP" in sql and "2026-11-01" not in sql


def test_campaigns_are_left_out_of_the_sql():
    rules = checked("default_pack")
    sql = compile_sql(rules, "duckdb", as_of=AS_OF).sql()
    assert rules.campaigns and not any(f'"{name}"' in sql for name in rules.campaigns)


def test_result_columns_follow_semantics_order():
    rules = checked("default_pack")
    names = [name for name, _ in compile_sql(rules, "duckdb", as_of=AS_OF).columns]
    assert names[:6] == ["member_id", "tier", "next_tier", "tier_gap", "tier_progress", "days_to_next_tier"]
    assert names[6:6 + len(rules.classes)] == list(rules.classes)
    assert names[6 + len(rules.classes)] == "segments"


def test_dialect_differences_live_in_the_table_not_in_branches():
    for module in ("sql.py", "sql_dialects.py"):
        tree = python_ast.parse((ROOT / "engine" / module).read_text(encoding="utf-8"))
        for node in python_ast.walk(tree):
            if isinstance(node, python_ast.Compare):
                names = [n.id for n in python_ast.walk(node) if isinstance(n, python_ast.Name)]
                attrs = [n.attr for n in python_ast.walk(node) if isinstance(n, python_ast.Attribute)]
                assert "dialect" not in names and "name" not in attrs, f"{module}:{node.lineno} branches on a dialect"


def test_unknown_dialect_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="one of duckdb, spark"):
        compile_sql(checked("spec_example"), "mysql")


@pytest.mark.parametrize("expr, expected", [
    ("1 / 3", "0.333333333333333333"),
    ("-1 / 3", "-0.333333333333333333"),
    ("2.00 / 3", "0.666666666666666666"),
    ("123456789.13 / 0.07", "1763668416.142857142857142857"),
    ("1 / 0.000000001", "1000000000"),
    ("-7.5 % 2", "-1.5"),
    ("7.25 % -2.5", "2.25"),
    ("1.5 / 0", None),
    ("12345.67 * 9876.54", "121932503.5818"),
    ("-0.123456789 * 0.987654321", "-0.121932631112635269"),
    ("round(2.5)", "3"),
    ("round(-2.45, 1)", "-2.5"),
])
def test_decimal_arithmetic_is_exact_on_duckdb(tmp_path, expr, expected):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(
        "version: 1\nschema:\n  member:\n    key: id\n    fields: {id: string}\n"
        f"metrics:\n  x: {{expr: \"{expr}\", output: true}}\n", encoding="utf-8")
    rules = check_rule_set(rules_dir).rule_set
    data = tmp_path / "data"
    data.mkdir()
    (data / "member.csv").write_text("id\nm1\n", encoding="utf-8")
    run = evaluate_duckdb(rules, data, AS_OF)
    value = run.rows[0]["x"]
    assert (None if value is None else Decimal(value).normalize()) == \
        (None if expected is None else Decimal(expected).normalize())


def test_the_same_aggregate_written_twice_is_computed_once(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(
        "version: 1\nparams:\n  window: 30d\n"
        "schema:\n  member:\n    key: id\n    fields: {id: string}\n"
        "  orders:\n    key: id\n    time: at\n    fields: {id: string, at: timestamp}\n"
        "metrics:\n  a: {expr: \"count(orders within 30d)\", output: true}\n"
        "  b: {expr: \"count(orders within window)\", output: true}\n"
        "  c: {expr: \"count(orders within 31d)\", output: true}\n", encoding="utf-8")
    rules = check_rule_set(rules_dir).rule_set
    cte = compile_sql(rules, "duckdb", as_of=AS_OF).query.find(sqlglot.exp.CTE)
    assert cte.alias == "orders_per_member" and len(list(cte.find_all(sqlglot.exp.Count))) == 2
    data = tmp_path / "data"
    data.mkdir()
    (data / "member.csv").write_text("id\nm1\nm2\n", encoding="utf-8")
    (data / "orders.csv").write_text("id,at\nm1,2026-10-15T00:00:00Z\nm1,2026-10-01T12:00:00Z\n", encoding="utf-8")
    rows = evaluate_duckdb(rules, data, AS_OF).rows
    assert [(r["a"], r["b"], r["c"]) for r in rows] == [(1, 1, 2), (0, 0, 0)]


def test_decimal_sql_type_is_38_18():
    assert (sql_dialects.PRECISION, sql_dialects.SCALE) == (38, 18)
    con = connect(Limits("512MB", threads=1))
    rules = checked("spec_example")
    compiled = compile_sql(rules, "duckdb", as_of=AS_OF)
    assert "DECIMAL(38, 18)" in compiled.sql()
    con.close()


@pytest.mark.heavy
def test_spark_sql_gives_the_python_engines_rows(tmp_path, request):
    if os.environ.get("MEMBERRULES_SPARK") != "1" and "heavy" not in (request.config.getoption("-m") or ""):
        pytest.skip("starts a local Spark session (~40 s); run with -m heavy or MEMBERRULES_SPARK=1")
    pyspark = pytest.importorskip("pyspark", reason="pyspark is the optional extra memberrules[spark]")
    from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot
    from memberrules.engine.eval import compile_rule_set
    from memberrules.engine.results import jsonl_lines, result_columns
    from memberrules.engine.snapshot import read_snapshot

    from pyspark.sql import SparkSession

    rules = checked("default_pack")
    data = tmp_path / "data"
    write_demo_snapshot(data, members=300, fmt="parquet")
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, DEFAULT_AS_OF)
    expected = compile_rule_set(rules).evaluate(snapshot, DEFAULT_AS_OF).rows
    compiled = compile_sql(rules, "spark", as_of=DEFAULT_AS_OF)
    spark = (SparkSession.builder.master("local[2]").appName("memberrules-test")
             .config("spark.sql.session.timeZone", rules.timezone)
             .config("spark.sql.ansi.enabled", "false")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "2g").getOrCreate())
    try:
        for table in rules.tables:
            spark.read.parquet(str(data / f"{table}.parquet")).createOrReplaceTempView(table)
        rows = [row.asDict(recursive=True) for row in spark.sql(compiled.query_sql()).collect()]
    finally:
        spark.stop()
    tz = ZoneInfo(rules.timezone)
    for row in rows:
        for name, type_ in compiled.columns:
            if type_.kind == "timestamp" and row[name] is not None:
                row[name] = row[name].replace(tzinfo=tz) if row[name].tzinfo is None else row[name].astimezone(tz)
    columns = result_columns(rules)
    assert pyspark is not None
    assert list(jsonl_lines(rows, columns, tz)) == list(jsonl_lines(expected, columns, tz))


def test_compile_command_prints_the_script_for_a_dialect(tmp_path):
    from click.testing import CliRunner

    from memberrules.cli import main

    result = CliRunner().invoke(main, ["compile", str(CASES["default_pack"]), "--dialect", "trino", "--as-of",
                                       "2026-11-01", "--table", "member=crm.members"])
    assert result.exit_code == 0, result.output
    expected = compile_sql(checked("default_pack"), "trino", as_of=AS_OF, tables={"member": "crm.members"}).sql()
    assert result.stdout == expected
    assert "campaign(s) are not compiled" in result.stderr


def test_compile_command_fails_on_rule_errors_and_unknown_tables(tmp_path):
    from click.testing import CliRunner

    from memberrules.cli import main

    (tmp_path / "rules.yaml").write_text("version: 1\nschema:\n  member:\n    key: id\n    fields: {id: string}\n"
                                         "metrics:\n  x: frequncy + 1\n", encoding="utf-8")
    assert CliRunner().invoke(main, ["compile", str(tmp_path)]).exit_code == 1
    result = CliRunner().invoke(main, ["compile", str(CASES["spec_example"]), "--table", "ordres=x"])
    assert result.exit_code == 2 and "ordres" in result.output
