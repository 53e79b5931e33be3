"""The Python engine and the DuckDB engine give the same rows, byte for byte (SPEC §4).

Hypothesis draws well-typed expression trees (one strategy per result type, never
strings), prints them into a rule set, draws a small snapshot around `as_of` (nulls,
decimals, times on the window edges, members without events, ties), and compares the
JSONL lines of both engines.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import tempfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from memberrules.engine import ast
from memberrules.engine.check import check_rule_set
from memberrules.engine.duckdb_engine import Limits, connect, evaluate_duckdb
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.results import jsonl_lines, result_columns
from memberrules.engine.snapshot import read_snapshot

SCHEMA = """\
version: 1
timezone: {timezone}
schema:
  member:
    key: member_id
    fields: {{member_id: string, i: int?, j: int, d: decimal?, s: string?, b: bool?,
             ts: timestamp?, dt: date?, tags: list<string>, cur: string?, held: string?}}
  ev:
    key: member_id
    time: at
    fields: {{member_id: string, at: timestamp, amount: decimal?, n: int?, kind: string?}}
"""

# A few hundred examples by default (about a minute on 2 cores); more with MR_ENGINE_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("MR_ENGINE_EXAMPLES", "250"))
KINDS = ("a", "b", "c")
TAGS = ("vip", "new", "x'y")
AS_OFS = ("2026-11-01T00:00:00", "2028-02-29T12:30:00", "2027-03-01T00:00:00", "2026-01-01T00:00:00")
EDGES = (timedelta(days=-400), timedelta(days=-31), timedelta(days=-30), timedelta(days=-30, seconds=1),
         timedelta(days=-29, hours=-5), timedelta(days=-7), timedelta(days=-1, hours=1), timedelta(seconds=-1),
         timedelta(0), timedelta(seconds=1), timedelta(days=2))


def L(kind, value):  # noqa: N802 - a literal, short because the strategies are full of them
    return ast.Literal(kind, value)


def N(name):  # noqa: N802
    return ast.Name(name)


def binary(op):
    return lambda pair: ast.BinaryOp(op, pair[0], pair[1])


small_int = st.integers(-20, 40).map(lambda v: L("int", v))
money = st.decimals(min_value=-500, max_value=500, places=2, allow_nan=False, allow_infinity=False) \
    .map(lambda v: L("decimal", v))
days = st.integers(1, 60).map(lambda v: L("duration", timedelta(days=v)))
durations = st.one_of(days, st.integers(1, 48).map(lambda v: L("duration", timedelta(hours=v))))
strings = st.text(alphabet="abcxyz '\"\\%_;-é中", max_size=5).map(lambda v: L("string", v))

# -- event aggregates -------------------------------------------------------------------------------

event_bool = st.deferred(lambda: st.one_of(
    st.tuples(st.sampled_from(["<", ">=", "==", "!="]), money).map(lambda x: ast.Compare(x[0], N("amount"), x[1])),
    st.tuples(st.sampled_from(["<", ">", "=="]), small_int).map(lambda x: ast.Compare(x[0], N("n"), x[1])),
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=2).map(
        lambda ks: ast.Compare("in", N("kind"), ast.ListLiteral(tuple(L("string", k) for k in ks)))),
    st.sampled_from(["amount", "kind", "n"]).map(lambda f: ast.IsNull(N(f))),
    st.tuples(event_bool, event_bool).map(binary("and")),
    st.tuples(event_bool, event_bool).map(binary("or")),
))
clauses = st.tuples(st.none() | days, st.none() | event_bool)


def event(func, field):
    return clauses.map(lambda c: ast.EventAggregate(func, "ev", field, c[0], c[1]))


event_int = st.one_of(event("count", None), event("count", "amount"), event("sum", "n"), event("max", "n"))
event_decimal = st.one_of(event("sum", "amount"), event("avg", "amount"), event("avg", "n"), event("min", "amount"))
event_timestamp = st.one_of(event("last", "at"), event("first", "at"))
event_string = st.one_of(event("last", "kind"), event("first", "kind"), event("max", "kind"))

# -- member-level values (no population aggregate) ---------------------------------------------------
# One strategy per result type and depth; depth 0 holds only leaves, so trees stay small.


def call(func, *args):
    return ast.Call(func, tuple(args))


# Divisors are often non-zero literals (a quotient that is never null), and often expressions
# that may be zero (division by zero is null, docs/SEMANTICS.md).
nonzero = st.one_of(st.integers(1, 9).map(lambda v: L("int", v)),
                    st.decimals(min_value=Decimal("0.5"), max_value=40, places=2).map(lambda v: L("decimal", v)))
_MEMO: dict = {}


def memo(build):
    def strategy(depth: int):
        key = (build.__name__, depth)
        if key not in _MEMO:
            _MEMO[key] = build(depth)
        return _MEMO[key]
    return strategy


@memo
def timestamps(depth):
    leaves = st.one_of(st.just(N("ts")), st.just(N("as_of")), event_timestamp)
    if depth == 0:
        return leaves
    return st.one_of(leaves, st.tuples(timestamps(depth - 1), durations).map(binary("-")),
                     st.tuples(timestamps(depth - 1), durations).map(binary("+")))


@memo
def dates(depth):
    leaves = st.one_of(st.just(N("dt")), timestamps(0).map(lambda x: call("date", x)))
    if depth == 0:
        return leaves
    return st.one_of(leaves, st.tuples(dates(depth - 1), days).map(binary("-")),
                     timestamps(depth - 1).map(lambda x: call("date", x)))


def instants(depth):
    return st.one_of(timestamps(depth), dates(depth))


@memo
def texts(depth):
    leaves = st.one_of(strings, st.just(N("s")), st.just(N("cur")), event_string)
    if depth == 0:
        return leaves
    inner = texts(depth - 1)
    return st.one_of(leaves, inner.map(lambda x: call("lower", x)), st.tuples(inner, inner).map(binary("+")),
                     st.tuples(inner, inner).map(binary("??")))


@memo
def integers(depth):
    leaves = st.one_of(small_int, st.just(N("i")), st.just(N("j")), event_int)
    if depth == 0:
        return leaves
    inner = integers(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(instants(depth - 1), instants(depth - 1)).map(lambda x: call("days_between", *x)),
        st.tuples(st.sampled_from(["day_of_month", "day_of_year", "day_of_week", "month", "hour",
                                   "days_until_anniversary"]), instants(depth - 1)).map(lambda x: call(*x)),
        texts(depth - 1).map(lambda x: call("length", x)),
        st.tuples(st.sampled_from(["+", "-", "*"]), inner, inner).map(lambda x: ast.BinaryOp(*x)),
        st.tuples(inner, st.integers(1, 9)).map(lambda x: ast.BinaryOp("%", x[0], L("int", x[1]))),
        st.tuples(inner, inner).map(binary("??")), inner.map(lambda x: call("abs", x)),
        st.tuples(inner, inner).map(lambda x: call("max", *x)),
        decimals_(depth - 1).map(lambda x: call("round", x)),
    )


@memo
def decimals_(depth):
    leaves = st.one_of(money, st.just(N("d")), event_decimal)
    if depth == 0:
        return leaves
    inner, numbers_ = decimals_(depth - 1), st.one_of(decimals_(depth - 1), integers(depth - 1))
    return st.one_of(
        leaves,
        st.tuples(st.sampled_from(["+", "-", "*"]), inner, numbers_).map(lambda x: ast.BinaryOp(*x)),
        st.tuples(numbers_, st.one_of(nonzero, numbers_)).map(binary("/")),
        st.tuples(inner, st.one_of(nonzero, numbers_)).map(binary("%")),
        st.tuples(inner, inner).map(binary("??")), inner.map(lambda x: call("round", x, L("int", 1))),
        st.tuples(inner, integers(depth - 1)).map(lambda x: call("min", *x)),
    )


def numbers(depth):
    return st.one_of(integers(depth), decimals_(depth))


@memo
def booleans(depth):
    leaves = st.one_of(st.just(N("b")), st.tuples(st.sampled_from(["in", "not in"]), st.sampled_from(TAGS)).map(
        lambda x: ast.Compare(x[0], L("string", x[1]), N("tags"))))
    if depth == 0:
        return leaves
    d = depth - 1
    return st.one_of(
        leaves,
        st.tuples(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers(d), numbers(d)).map(
            lambda x: ast.Compare(*x)),
        st.tuples(st.sampled_from(["==", "<", ">="]), instants(d), instants(d)).map(lambda x: ast.Compare(*x)),
        st.tuples(st.sampled_from(["==", "!=", "<"]), texts(d), texts(d)).map(lambda x: ast.Compare(*x)),
        st.tuples(st.sampled_from(["in", "not in"]), texts(d), st.lists(strings, max_size=3)).map(
            lambda x: ast.Compare(x[0], x[1], ast.ListLiteral(tuple(x[2])))),
        st.tuples(st.sampled_from(["contains", "starts_with", "ends_with"]), texts(d), texts(d)).map(
            lambda x: call(*x)),
        st.one_of(numbers(d), texts(d), instants(d)).map(ast.IsNull),
        st.tuples(booleans(d), booleans(d)).map(binary("and")), st.tuples(booleans(d), booleans(d)).map(binary("or")),
        booleans(d).map(lambda x: ast.Unary("not", x)),
    )


DEPTH = 2

# -- population values ------------------------------------------------------------------------------

population_int = st.one_of(
    st.tuples(st.sampled_from(["rank", "ntile"]), numbers(DEPTH - 1), st.integers(1, 5)).map(
        lambda x: ast.Ranking(x[0], x[1], L("int", x[2]) if x[0] == "ntile" else None)),
    st.tuples(st.sampled_from(["count", "sum", "max"]), integers(DEPTH - 1), st.none() | booleans(1)).map(
        lambda x: ast.PopulationAggregate(x[0], x[1], None, x[2])),
)
population_decimal = st.one_of(
    st.tuples(st.sampled_from(["avg", "sum", "min"]), numbers(DEPTH - 1), st.none() | booleans(1)).map(
        lambda x: ast.PopulationAggregate(x[0], x[1], None, x[2]) if x[0] != "sum" or
        not isinstance(x[1], ast.Literal) else ast.PopulationAggregate("avg", x[1], None, x[2])),
    st.tuples(decimals_(DEPTH - 1), st.sampled_from(["0", "0.2", "0.5", "0.8", "1"]), st.none() | booleans(1)).map(
        lambda x: ast.PopulationAggregate("quantile", x[0], L("decimal", Decimal(x[1])), x[2])),
)
population_float = numbers(DEPTH - 1).map(lambda x: ast.Ranking("percent_rank", x))
metric_values = st.one_of(
    integers(DEPTH), decimals_(DEPTH), booleans(DEPTH), texts(DEPTH), timestamps(DEPTH), dates(DEPTH),
    population_int, population_decimal, population_float,
    st.tuples(population_decimal, decimals_(1)).map(binary("-")),
    st.tuples(population_int, integers(1)).map(binary("+")),
)

# -- data -------------------------------------------------------------------------------------------

member_rows = st.lists(st.fixed_dictionaries({
    "i": st.none() | st.integers(-5, 30), "j": st.integers(0, 3),
    "d": st.none() | st.decimals(min_value=-100, max_value=100, places=2),
    "s": st.none() | st.sampled_from(["a", "b", "ab", "x'y", "中"]), "b": st.none() | st.booleans(),
    "ts": st.none() | st.sampled_from(EDGES), "dt": st.none() | st.sampled_from(
        [date(2000, 2, 29), date(1990, 11, 1), date(2026, 10, 31), date(1985, 3, 1), date(2001, 12, 31)]),
    "tags": st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    "cur": st.none() | st.sampled_from(["a", "mid", "B"]),
    "held": st.none() | st.sampled_from(["low", "mid", "high", "gone"]),
    "events": st.lists(st.fixed_dictionaries({
        "at": st.sampled_from(EDGES), "amount": st.none() | st.decimals(min_value=-50, max_value=300, places=2),
        "n": st.none() | st.integers(-3, 9), "kind": st.none() | st.sampled_from(KINDS)}), max_size=4),
}), min_size=1, max_size=7)


def write_snapshot(directory: Path, members: list[dict], as_of: datetime, fmt: str = "csv") -> None:
    if fmt == "jsonl":
        write_jsonl_snapshot(directory, members, as_of)
        return
    with open(directory / "member.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["member_id", "i", "j", "d", "s", "b", "ts", "dt", "tags", "cur", "held"])
        for k, m in enumerate(members):
            writer.writerow([f"M{k:02d}", _cell(m["i"]), m["j"], _cell(m["d"]), _cell(m["s"]),
                             _cell(m["b"]), _cell(None if m["ts"] is None else (as_of + m["ts"]).isoformat()),
                             _cell(m["dt"]), json.dumps(m["tags"]), _cell(m["cur"]), _cell(m["held"])])
    with open(directory / "ev.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["member_id", "at", "amount", "n", "kind"])
        for k, m in enumerate(members):
            for e in m["events"]:
                writer.writerow([f"M{k:02d}", (as_of + e["at"]).isoformat(), _cell(e["amount"]), _cell(e["n"]),
                                 _cell(e["kind"])])
        writer.writerow(["NOBODY", as_of.isoformat(), "1", "1", "a"])  # an unknown member is ignored


def _json(value) -> str:
    """JSON text with decimals as plain numbers (`12.50`), as an export would write them."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value, ensure_ascii=False)


def _json_line(record: dict) -> str:
    # Null values are left out now and then: a missing key reads as null.
    return "{" + ",".join(f"{json.dumps(k)}:{_json(v)}" for k, v in record.items()
                          if v is not None or len(k) % 2) + "}\n"


def write_jsonl_snapshot(directory: Path, members: list[dict], as_of: datetime) -> None:
    with open(directory / "member.jsonl", "w", encoding="utf-8") as out:
        for k, m in enumerate(members):
            out.write(_json_line({
                "member_id": f"M{k:02d}", "i": m["i"], "j": m["j"], "d": m["d"], "s": m["s"], "b": m["b"],
                "ts": None if m["ts"] is None else (as_of + m["ts"]).isoformat(),
                "dt": None if m["dt"] is None else m["dt"].isoformat(), "tags": m["tags"], "cur": m["cur"],
                "held": m["held"]}))
    with open(directory / "ev.jsonl", "w", encoding="utf-8") as out:
        for k, m in enumerate(members):
            for e in m["events"]:
                out.write(_json_line({"member_id": f"M{k:02d}", "at": (as_of + e["at"]).isoformat(),
                                      "amount": e["amount"], "n": e["n"], "kind": e["kind"]}))
        out.write(_json_line({"member_id": "NOBODY", "at": as_of.isoformat(), "amount": Decimal(1), "n": 1,
                              "kind": "a"}))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rule_set_text(metrics: list[ast.Expr], classes: list[ast.Expr], segment: ast.Expr, tier_by: ast.Expr | None,
                  timezone: str) -> str:
    lines = [SCHEMA.format(timezone=timezone), "metrics:"]
    for k, metric in enumerate(metrics):
        lines.append(f"  m{k}: {{expr: {json.dumps(ast.to_source(metric), ensure_ascii=False)}, output: true}}")
    lines.append("classes:\n  c:")
    for k, case in enumerate(classes):
        lines.append(f"    - {{name: k{k}, when: {json.dumps(ast.to_source(case), ensure_ascii=False)}}}")
    lines.append("    - {name: rest, else: true}")
    lines.append(f"segments:\n  seg: {json.dumps(ast.to_source(segment), ensure_ascii=False)}")
    if tier_by is not None:
        lines.append("tiers:\n  by: " + json.dumps(ast.to_source(tier_by), ensure_ascii=False))
        lines.append("  levels: [{name: low, min: 0}, {name: mid, min: 5}, {name: high, min: 20}]")
        lines.append("  current: held\n  downgrade: {when: \"day_of_month(as_of) == 1\"}")
        lines.append("  forecast: {earned: \"sum(ev.n within 30d)\", window: 30d}")
    return "\n".join(lines) + "\n"


_CONNECTION = None


def duckdb_connection():
    global _CONNECTION
    if _CONNECTION is None:
        _CONNECTION = connect(Limits("1GB", threads=2))
    return _CONNECTION


def assert_engines_equal(text: str, members: list[dict], as_of_text: str, timezone: str, fmt: str = "csv") -> None:
    if currently_in_test_context():
        note(text)
    with tempfile.TemporaryDirectory() as tmp:
        rules_dir, data_dir = Path(tmp) / "rules", Path(tmp) / "data"
        rules_dir.mkdir()
        data_dir.mkdir()
        (rules_dir / "rules.yaml").write_text(text, encoding="utf-8")
        result = check_rule_set(rules_dir)
        assert result.rule_set is not None, [str(d) for d in result.diagnostics if d.is_error]
        rules = result.rule_set
        tz = ZoneInfo(timezone)
        as_of = datetime.fromisoformat(as_of_text).replace(tzinfo=tz)
        write_snapshot(data_dir, members, as_of, fmt)
        snapshot = read_snapshot(data_dir, rules.model.schema_, rules.timezone, as_of)
        expected = compile_rule_set(rules).evaluate(snapshot, as_of).rows
        run = evaluate_duckdb(rules, data_dir, as_of, connection=duckdb_connection())
        assert run.read_by == "duckdb"
        columns = result_columns(rules)
        want = list(jsonl_lines(expected, columns, tz))
        got = list(jsonl_lines(run.rows, columns, tz))
        for w, g in zip(want, got):
            assert w == g, f"python: {w}\nduckdb: {g}"
        assert len(want) == len(got)


@settings(max_examples=EXAMPLES, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(metrics=st.lists(metric_values, min_size=1, max_size=3), classes=st.lists(booleans(DEPTH), min_size=1, max_size=2),
       segment=booleans(DEPTH), tier_by=st.none() | integers(1), members=member_rows, as_of=st.sampled_from(AS_OFS),
       timezone=st.sampled_from(["Asia/Shanghai", "America/New_York"]), fmt=st.sampled_from(["csv", "jsonl"]))
@example(metrics=[ast.BinaryOp("/", L("decimal", Decimal("1")), L("int", 3))], classes=[N("b")], segment=N("b"),
         tier_by=None, members=[{"i": None, "j": 0, "d": None, "s": None, "b": None, "ts": None, "dt": None,
                                 "tags": [], "cur": None, "held": None, "events": []}],
         as_of=AS_OFS[0], timezone="Asia/Shanghai", fmt="csv")
def test_python_and_duckdb_engines_give_the_same_rows(metrics, classes, segment, tier_by, members, as_of, timezone,
                                                      fmt):
    assert_engines_equal(rule_set_text(metrics, classes, segment, tier_by, timezone), members, as_of, timezone, fmt)


def test_default_rule_pack_gives_the_same_rows_on_demo_data(tmp_path):
    from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot

    rules = check_rule_set(Path(__file__).parent.parent / "rules").rule_set
    for fmt in ("csv", "parquet"):
        data = tmp_path / fmt
        write_demo_snapshot(data, members=1500, fmt=fmt)
        snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, DEFAULT_AS_OF)
        expected = compile_rule_set(rules).evaluate(snapshot, DEFAULT_AS_OF).rows
        run = evaluate_duckdb(rules, data, DEFAULT_AS_OF, connection=duckdb_connection())
        assert run.read_by == "duckdb"
        tz = ZoneInfo(rules.timezone)
        columns = result_columns(rules)
        assert list(jsonl_lines(run.rows, columns, tz)) == list(jsonl_lines(expected, columns, tz))


@pytest.mark.parametrize("value", ["it's", 'say "hi"', "back\\slash", "-- not a comment", "a; DROP TABLE member",
                                   "中文 ✓", "\\'; --", "$$", "%_"])
def test_string_literals_come_back_unchanged(value):
    text = rule_set_text([L("string", value), ast.Compare("==", N("s"), L("string", value))], [N("b")], N("b"),
                         None, "UTC")
    members = [{"i": None, "j": 0, "d": None, "s": value, "b": None, "ts": None, "dt": None, "tags": [],
                "cur": None, "held": None, "events": []}]
    assert_engines_equal(text, members, AS_OFS[0], "UTC")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
       fmt=st.sampled_from(["csv", "jsonl"]))
def test_any_string_literal_keeps_its_meaning_in_sql(value, fmt):
    text = rule_set_text([L("string", value), ast.Compare("==", N("s"), L("string", value))], [N("b")], N("b"),
                         None, "UTC")
    members = [{"i": None, "j": 0, "d": None, "s": value or None, "b": None, "ts": None, "dt": None, "tags": [],
                "cur": None, "held": None, "events": []}]
    assert_engines_equal(text, members, AS_OFS[0], "UTC", fmt)


# -- the DuckDB runner: reading like the Python reader -----------------------------------------------

def _demo(tmp_path, fmt: str, members: int = 300):
    from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot

    rules = check_rule_set(Path(__file__).parent.parent / "rules").rule_set
    data = tmp_path / fmt
    write_demo_snapshot(data, members=members, fmt=fmt)
    return rules, data, DEFAULT_AS_OF


def test_duckdb_counts_rows_like_the_python_reader(tmp_path):
    rules, data, as_of = _demo(tmp_path, "csv")
    with open(data / "orders.csv", "a", encoding="utf-8") as handle:
        handle.write("NOBODY,O999999999,2026-10-01T10:00:00+08:00,10.00,home\n")
    expected = read_snapshot(data, rules.model.schema_, rules.timezone, as_of).stats
    run = evaluate_duckdb(rules, data, as_of, connection=duckdb_connection())
    assert run.read_by == "duckdb"
    assert run.stats == expected
    assert expected.events_unknown_member["orders"] == 1 and expected.events_after_as_of["orders"] > 0


def _input_section(output: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index("input:")
    section = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        section.append(line)
    return section


@pytest.mark.parametrize("campaigns", [True, False])
def test_the_summary_counts_rows_of_unknown_members_and_after_as_of_as_the_python_engine(tmp_path, campaigns):
    """The DuckDB engine counts rows of unknown members from the query's per-member counts (no
    join): the same numbers as the Python reader, with and without campaigns."""
    import shutil

    from click.testing import CliRunner

    from memberrules.cli import main

    rules_dir = tmp_path / "rules"
    shutil.copytree(Path(__file__).parent.parent / "rules", rules_dir)
    if not campaigns:
        (rules_dir / "campaigns.yaml").unlink()
        (rules_dir / "delivery.yaml").unlink()
        (rules_dir / "program.test.yaml").unlink()
    _, data, as_of = _demo(tmp_path, "csv", members=120)
    with open(data / "orders.csv", "a", encoding="utf-8") as handle:
        handle.write("NOBODY,O999999991,2026-10-01T10:00:00+08:00,10.00,home\n")
        handle.write("NOBODY,O999999992,2026-12-01T10:00:00+08:00,10.00,home\n")  # after as_of: counted so
        handle.write("GHOST,O999999993,2026-09-01T10:00:00+08:00,1.00,home\n")
    with open(data / "events.csv", "a", encoding="utf-8") as handle:
        handle.write("NOBODY,2026-10-01T10:00:00+08:00,login\n")
    sections = {}
    for engine in ("python", "duckdb"):
        result = CliRunner().invoke(main, ["evaluate", str(rules_dir), "--data", str(data), "--as-of",
                                           as_of.isoformat(), "--out", str(tmp_path / engine / "results.jsonl"),
                                           "--engine", engine])
        assert result.exit_code == 0, result.output
        assert f"engine {engine}" in result.output and "read by the python reader" not in result.output
        sections[engine] = _input_section(result.output)
    assert sections["duckdb"] == sections["python"]
    assert any("orders:" in line and "2 of unknown members ignored" in line for line in sections["python"])
    assert any("events:" in line and "1 of unknown members ignored" in line for line in sections["python"])


def _set_member_cell(data: Path, line: int, column: str, value: str) -> None:
    """Write `value` into one cell of the demo member.csv (line 1 is the header)."""
    lines = (data / "member.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[line - 1].split(",")
    cells[lines[0].split(",").index(column)] = value
    lines[line - 1] = ",".join(cells)
    (data / "member.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _both_readers_refuse(rules, data: Path, as_of) -> list:
    """The DuckDB engine's diagnostics, after checking they are the Python reader's."""
    from memberrules.engine.errors import DiagnosticError

    with pytest.raises(DiagnosticError) as python_error:
        read_snapshot(data, rules.model.schema_, rules.timezone, as_of)
    with pytest.raises(DiagnosticError) as duckdb_error:
        evaluate_duckdb(rules, data, as_of, connection=duckdb_connection())
    assert [str(d) for d in duckdb_error.value.diagnostics] == [str(d) for d in python_error.value.diagnostics]
    return duckdb_error.value.diagnostics


def test_bad_row_gives_the_python_readers_file_row_and_column(tmp_path):
    rules, data, as_of = _demo(tmp_path, "csv", members=50)
    _set_member_cell(data, 4, "growth_value", "12x")
    span = _both_readers_refuse(rules, data, as_of)[0].span
    assert (span.file.endswith("member.csv"), span.line) == (True, 4)


@pytest.mark.parametrize("cell", ["not a date", "2026-02-30", "1.5"])
def test_a_bad_value_in_a_nullable_column_is_reported_not_read_as_null(tmp_path, cell):
    """birthday is `date?`: a cell that is not a date is a bad row for both readers (the fast
    path once read it as null: NOT (a OR b) lost its parentheses)."""
    rules, data, as_of = _demo(tmp_path, "csv", members=20)
    _set_member_cell(data, 3, "birthday", cell)
    assert _both_readers_refuse(rules, data, as_of)[0].code == "MR503"


def test_skipped_bad_rows_give_the_same_rows_and_rejects(tmp_path):
    rules, data, as_of = _demo(tmp_path, "csv", members=80)
    with open(data / "events.csv", "a", encoding="utf-8") as handle:
        handle.write("M000001,not a time,login\n")
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, as_of, on_bad_row="skip")
    expected = compile_rule_set(rules).evaluate(snapshot, as_of).rows
    run = evaluate_duckdb(rules, data, as_of, on_bad_row="skip", connection=duckdb_connection())
    assert run.read_by == "python"
    assert run.rows == expected
    assert [(r.table, r.row, r.column) for r in run.rejects] == [(r.table, r.row, r.column) for r in snapshot.rejects]


def test_jsonl_snapshot_gives_the_same_rows(tmp_path):
    rules, data, as_of = _demo(tmp_path, "csv", members=60)
    for table in ("member", "orders", "events", "benefits"):
        with open(data / f"{table}.csv", encoding="utf-8", newline="") as handle:
            records = list(csv.DictReader(handle))
        with open(data / f"{table}.jsonl", "w", encoding="utf-8") as out:
            for record in records:
                if "tags" in record:
                    record["tags"] = json.loads(record["tags"])
                out.write(json.dumps({k: (v if v != "" else None) for k, v in record.items()}) + "\n")
        (data / f"{table}.csv").unlink()
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, as_of)
    expected = compile_rule_set(rules).evaluate(snapshot, as_of).rows
    run = evaluate_duckdb(rules, data, as_of, connection=duckdb_connection())
    assert run.read_by == "duckdb"
    assert run.rows == expected and len(expected) == 60
    assert run.stats == snapshot.stats


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_cli_duckdb_engine_writes_the_same_bytes(tmp_path, fmt):
    from click.testing import CliRunner

    from memberrules.cli import main

    rules, data, as_of = _demo(tmp_path, "parquet", members=200)
    outputs = {}
    for engine in ("python", "duckdb"):
        out = tmp_path / engine / f"results.{fmt}"
        result = CliRunner().invoke(main, ["evaluate", str(Path(__file__).parent.parent / "rules"), "--data",
                                           str(data), "--as-of", as_of.isoformat(), "--out", str(out),
                                           "--engine", engine])
        assert result.exit_code == 0, result.output
        outputs[engine] = out.read_bytes()
        if engine == "duckdb":
            assert "engine duckdb" in result.output
            assert "evaluate and write" in result.output  # one interleaved step, never "write 0.00s"
        else:
            assert re.search(r"evaluate \d+\.\d\ds, write \d+\.\d\ds\)", result.output)
    assert outputs["python"] == outputs["duckdb"]


def test_auto_engine_takes_duckdb_only_for_large_snapshots(tmp_path):
    from memberrules.engine.duckdb_engine import AUTO_MIN_MEMBERS, choose_engine

    rules, data, _ = _demo(tmp_path, "csv", members=30)
    assert choose_engine("auto", rules, data, None) == "python"
    lines = (data / "member.csv").read_text(encoding="utf-8").splitlines()
    (data / "member.csv").write_text("\n".join(lines + lines[1:2] * AUTO_MIN_MEMBERS) + "\n", encoding="utf-8")
    assert choose_engine("auto", rules, data, None) == "duckdb"  # campaigns run on DuckDB too
    assert choose_engine("auto", rules, data, tmp_path / "state.db") == "duckdb"
    without = dataclasses.replace(rules, campaigns={})
    assert choose_engine("auto", without, data, None) == "duckdb"
    assert choose_engine("duckdb", rules, data, None) == "duckdb"


PINNED_MEMBERS = [
    {"i": 3, "j": 0, "d": Decimal("1.50"), "s": "a", "b": True, "ts": EDGES[3], "dt": date(2000, 2, 29),
     "tags": ["vip"], "cur": "mid", "held": "high",
     "events": [{"at": EDGES[4], "amount": Decimal("2.5"), "n": 2, "kind": "a"},
                {"at": EDGES[8], "amount": None, "n": None, "kind": None},
                {"at": EDGES[2], "amount": Decimal("-7.25"), "n": 5, "kind": "b"}]},
    {"i": None, "j": 0, "d": None, "s": None, "b": None, "ts": None, "dt": None, "tags": [], "cur": None,
     "held": None, "events": []},
    {"i": 3, "j": 2, "d": Decimal("1.50"), "s": "b", "b": False, "ts": EDGES[9], "dt": date(1990, 11, 1),
     "tags": ["new", "x'y"], "cur": "B", "held": "low",
     "events": [{"at": EDGES[8], "amount": Decimal("300"), "n": 9, "kind": "c"}]},
]


@pytest.mark.parametrize("metrics", [
    # event aggregates whose `where` reads member fields and metrics join after the step they need
    ["count(ev where amount > d)", "sum(ev.amount within 30d where n > i)"],
    ["d ?? 1", "count(ev where amount > m0) + rank(m0)", "last(ev.kind where kind != s)"],
    # ties in ranks, ntile and percent_rank; quantile ends
    ["rank(i)", "ntile(i ?? 0, 4)", "percent_rank(d)", "quantile(d, 0 over members)", "quantile(j, 1 over members)"],
    # the 29 February birthday, dates and durations
    ["days_until_anniversary(dt)", "dt + 1d", "as_of - ts", "days(as_of - ts)", "date(as_of) - dt"],
    # exact decimals
    ["avg(ev.amount)", "avg(d over members where b)", "sum(ev.amount) / 7", "d * d * d", "-7.5 % (d ?? 2)"],
])
def test_pinned_cases_give_the_same_rows(metrics):
    from memberrules.engine.parse import parse_expr

    exprs = [parse_expr(text).expr for text in metrics]
    text = rule_set_text(exprs, [N("b")], N("b"), parse_expr("j * 10 + (i ?? 0)").expr, "Asia/Shanghai")
    assert_engines_equal(text, PINNED_MEMBERS, AS_OFS[1], "Asia/Shanghai")


def test_quotes_in_table_and_column_names_do_not_change_the_sql(tmp_path):
    rules_dir, data = tmp_path / "rules", tmp_path / "data"
    rules_dir.mkdir()
    data.mkdir()
    (rules_dir / "rules.yaml").write_text(
        "version: 1\nschema:\n  member:\n    key: id\n    fields: {id: string, 'we\"ird': string?}\n"
        "  \"it's\":\n    key: id\n    time: at\n    fields: {id: string, at: timestamp, 'a\"; --': int?}\n"
        "metrics:\n  n: {expr: \"count(it's)\", output: true}\n", encoding="utf-8")
    result = check_rule_set(rules_dir)
    if result.rule_set is None:  # the grammar may not read such a table name: then use it only in the schema
        (rules_dir / "rules.yaml").write_text((rules_dir / "rules.yaml").read_text(encoding="utf-8")
                                              .replace("count(it's)", "1"), encoding="utf-8")
        result = check_rule_set(rules_dir)
    rules = result.rule_set
    assert rules is not None, [str(d) for d in result.diagnostics]
    (data / "member.csv").write_text('id,"we""ird"\nm1,x\nm2,\n', encoding="utf-8")
    (data / "it's.csv").write_text('id,at,"a""; --"\nm1,2026-10-01T00:00:00Z,1\nm1,2026-10-02T00:00:00Z,\n',
                                   encoding="utf-8")
    as_of = datetime(2026, 11, 1, tzinfo=ZoneInfo("UTC"))
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, as_of)
    expected = compile_rule_set(rules).evaluate(snapshot, as_of).rows
    run = evaluate_duckdb(rules, data, as_of, connection=duckdb_connection())
    assert run.read_by == "duckdb" and run.rows == expected


@pytest.mark.parametrize("statistics", [True, False])
def test_a_null_key_or_time_in_parquet_is_refused_with_or_without_statistics(tmp_path, statistics):
    """Null checks are skipped only for columns whose Parquet statistics count no null: a file
    with a null key (statistics say so) or without statistics is scanned, and refused as the
    Python reader refuses it; a clean file is read by DuckDB."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rules, data, as_of = _demo(tmp_path, "csv", members=40)
    orders = pacsv.read_csv(data / "orders.csv", convert_options=pacsv.ConvertOptions(
        column_types={"amount": pa.decimal128(12, 2), "placed_at": pa.timestamp("us", tz="UTC")}))
    (data / "orders.csv").unlink()
    pq.write_table(orders, data / "orders.parquet", write_statistics=statistics)
    clean = evaluate_duckdb(rules, data, as_of, connection=duckdb_connection())
    assert clean.read_by == "duckdb"
    for column in ("member_id", "placed_at"):
        cells = orders.column(column).to_pylist()
        cells[1] = None
        broken = orders.set_column(orders.schema.get_field_index(column), column,
                                   pa.array(cells, orders.schema.field(column).type))
        pq.write_table(broken, data / "orders.parquet", write_statistics=statistics)
        diagnostics = _both_readers_refuse(rules, data, as_of)
        assert (diagnostics[0].code, diagnostics[0].span.line) == ("MR503", 2), column  # Parquet rows count from 1
