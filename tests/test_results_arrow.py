"""results_arrow.py writes the DuckDB engine's Arrow batches byte for byte as results.py writes its rows."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberrules.engine import types as t
from memberrules.engine.check import check_rule_set
from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot
from memberrules.engine.duckdb_engine import DuckDBStream, evaluate_rules_duckdb, iter_compiled
from memberrules.engine.results import Column, csv_encoder, json_encoder, result_columns, write_rows
from memberrules.engine.results_arrow import csv_quote, csv_texts, json_texts, write_batches
from memberrules.engine.sql import compile_sql

ROOT = Path(__file__).parent.parent
SPEC_EXAMPLE = ROOT / "tests" / "fixtures" / "spec_example"
TZ = ZoneInfo("Asia/Shanghai")


def _both_paths(rules_dir: Path, data: Path, tmp_path: Path, fmt: str) -> tuple[bytes, bytes]:
    """The same DuckDB evaluation written by results.write_rows (Python rows) and by write_batches (Arrow)."""
    rules = check_rule_set(rules_dir).rule_set
    columns = result_columns(rules)
    stream = DuckDBStream(rules, data, DEFAULT_AS_OF)
    types: dict = {}
    arrow_out = tmp_path / f"arrow.{fmt}"
    batches = list(stream.arrow_batches(batch_rows=700, types=types))  # several batches, one partial
    write_batches(iter(batches), columns, arrow_out, fmt, ZoneInfo(rules.timezone), types)

    stream = DuckDBStream(rules, data, DEFAULT_AS_OF)
    compiled = compile_sql(rules, "duckdb", as_of=stream.as_of, tables=stream.views.names)
    rows = [row for batch in iter_compiled(stream.con, compiled, stream.tz, batch_rows=700) for row in batch]
    stream.close()
    rows_out = tmp_path / f"rows.{fmt}"
    write_rows(rows, columns, rows_out, fmt, ZoneInfo(rules.timezone))
    return rows_out.read_bytes(), arrow_out.read_bytes()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo")
    write_demo_snapshot(data, members=2000, fmt="parquet")
    return data


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_default_pack_on_demo_data_is_written_byte_for_byte_as_results_py_writes_it(demo_data, tmp_path, fmt):
    reference, arrow = _both_paths(ROOT / "rules", demo_data, tmp_path, fmt)
    assert reference.count(b"\n") > 1000 or fmt == "parquet"
    assert arrow == reference


@pytest.fixture(scope="module")
def spec_data(demo_data, tmp_path_factory):
    """The demo snapshot cut down to the SPEC example's schema (the demo has a few more columns)."""
    import pyarrow.parquet as pq

    rules = check_rule_set(SPEC_EXAMPLE).rule_set
    data = tmp_path_factory.mktemp("spec")
    for name, table in rules.model.schema_.items():
        pq.write_table(pq.read_table(demo_data / f"{name}.parquet", columns=list(table.fields)),
                       data / f"{name}.parquet")
    return data


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_spec_example_is_written_byte_for_byte_as_results_py_writes_it(spec_data, tmp_path, fmt):
    reference, arrow = _both_paths(SPEC_EXAMPLE, spec_data, tmp_path, fmt)
    assert reference.count(b"\n") > 1000 or fmt == "parquet"
    assert arrow == reference


def test_evaluate_on_duckdb_writes_the_same_file_and_summary_as_before(demo_data, tmp_path):
    outcome = evaluate_rules_duckdb(ROOT / "rules", demo_data, as_of=DEFAULT_AS_OF, out=tmp_path / "r.jsonl")
    report = outcome.report
    reference, _ = _both_paths(ROOT / "rules", demo_data, tmp_path, "jsonl")
    assert (tmp_path / "r.jsonl").read_bytes() == reference
    assert report.rows_written == report.members == 2000
    tiers = dict(report.summary.sections[0][1])
    assert sum(tiers.values()) == 2000 and len(tiers) > 1


def test_a_failed_write_leaves_no_file(tmp_path):
    columns = [Column("member_id", t.STRING)]

    def failing():
        yield pa.record_batch([pa.array(["a"])], names=["member_id"])
        raise RuntimeError("query failed")

    with pytest.raises(RuntimeError):
        write_batches(failing(), columns, tmp_path / "r.jsonl", "jsonl", TZ)
    assert list(tmp_path.iterdir()) == []


# -- the column formatters against results.py's encoders -------------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | \
    st.sampled_from(["", "a,b", 'say "hi"', "line\nbreak", "\r", "back\\slash", "\x00\x1f\x7f", "会员 等级", "\u2028"])
decimals = st.decimals(min_value=Decimal("-1e19"), max_value=Decimal("1e19"), places=18,
                       allow_nan=False, allow_infinity=False) | \
    st.sampled_from([Decimal("0"), Decimal("-0.25"), Decimal("120.5"), Decimal("1E-18"), Decimal("-1E-9"),
                     Decimal("100"), Decimal("1E+19")])
small_decimals = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=18,
                             allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.sampled_from([timezone.utc, TZ, ZoneInfo("America/St_Johns")]))
dates = st.dates()  # years 1–9999: the ones outside 1000–9999 take the Python fallback
floats = st.floats(allow_nan=True, allow_infinity=True)
micros = st.integers(min_value=-10**15, max_value=10**15)

CASES = {
    "string": (t.STRING, text, pa.string(), lambda v: v),
    "int": (t.INT, st.integers(min_value=-2**63, max_value=2**63 - 1), pa.int64(), lambda v: v),
    "decimal": (t.DECIMAL, decimals, pa.decimal128(38, 18), lambda v: v),
    "bool": (t.BOOL, st.booleans(), pa.bool_(), lambda v: v),
    "float": (t.FLOAT, floats, pa.float64(), lambda v: v),
    "timestamp": (t.TIMESTAMP, timestamps, pa.timestamp("us", tz="Asia/Shanghai"), lambda v: v.astimezone(TZ)),
    "date": (t.DATE, dates, pa.date32(), lambda v: v),
    "duration": (t.DURATION, micros, pa.int64(), lambda v: timedelta(microseconds=v)),
    "segments": (t.list_of(t.STRING), st.lists(text, max_size=4), pa.list_(pa.string()), lambda v: v),
}


def _column(kind: str, values: list):
    type_, _, arrow, to_python = CASES[kind]
    array = pa.array(values, arrow)
    if kind == "timestamp":
        # As the DuckDB engine reads them: instants from Arrow (a wall time in a DST gap is normalised).
        values = array.to_pylist()
    return type_, array, [None if v is None else to_python(v) for v in values]


@pytest.mark.parametrize("kind", list(CASES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_each_column_formats_as_results_py_encodes_it(kind, data):
    values = data.draw(st.lists(st.none() | CASES[kind][1], max_size=20))
    type_, array, python = _column(kind, values)
    assert json_texts(array, type_, TZ).to_pylist() == [json_encoder(type_, TZ)(v) for v in python]
    cells = [csv_encoder(type_, TZ)(v) for v in python]
    assert csv_texts(array, type_, TZ).to_pylist() == cells
    # Quoting alone, row by row, as csv.writer does it (a second cell, so an empty cell is not quoted).
    quoted = csv_quote(pa.array(cells, pa.string())).to_pylist()
    for cell, written in zip(cells, quoted):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([cell, "x"])
        assert buffer.getvalue() == written + ",x\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whole_rows_of_every_kind_write_the_same_bytes_in_every_format(tmp_path, data):
    size = data.draw(st.integers(min_value=0, max_value=12))
    kinds = [k for k in CASES if k != "duration"]  # Parquet holds durations too, checked below by value
    arrays, rows, columns = [], [{} for _ in range(size)], []
    for kind in kinds:
        # results.py's Parquet writer quantizes in a 28-digit context: its decimals stay below 1e9.
        values = data.draw(st.lists(st.none() | (small_decimals if kind == "decimal" else CASES[kind][1]),
                                    min_size=size, max_size=size))
        if kind == "string":
            values = [v if v is not None else "k" for v in values]  # the key is never null
        type_, array, python = _column(kind, values)
        name = "ключ" if kind == "string" else f"c_{kind}"
        columns.append(Column(name, type_))
        arrays.append(array)
        for row, value in zip(rows, python):
            row[name] = value
    batch = pa.record_batch(arrays, names=[c.name for c in columns])
    for fmt in ("jsonl", "csv", "parquet"):
        reference, arrow = tmp_path / f"rows.{fmt}", tmp_path / f"arrow.{fmt}"
        write_rows(rows, columns, reference, fmt, TZ)
        half = size // 2
        assert write_batches(iter([batch.slice(0, half), batch.slice(half)]), columns, arrow, fmt, TZ) == size
        assert arrow.read_bytes() == reference.read_bytes(), fmt


def test_durations_reach_parquet_as_whole_seconds(tmp_path):
    import pyarrow.parquet as pq

    columns = [Column("member_id", t.STRING), Column("wait", t.DURATION.with_null())]
    micros = [-1_500_000, 90_000_000, None]
    batch = pa.record_batch([pa.array(["a", "b", "c"]), pa.array(micros, pa.int64())], names=["member_id", "wait"])
    rows = [{"member_id": k, "wait": None if m is None else timedelta(microseconds=m)}
            for k, m in zip("abc", micros)]
    write_rows(rows, columns, tmp_path / "rows.parquet", "parquet", TZ)
    write_batches([batch], columns, tmp_path / "arrow.parquet", "parquet", TZ)
    assert (tmp_path / "arrow.parquet").read_bytes() == (tmp_path / "rows.parquet").read_bytes()
    assert pq.read_table(tmp_path / "arrow.parquet").column("wait").to_pylist() == \
        [timedelta(seconds=-2), timedelta(seconds=90), None]


def test_tiny_decimals_and_zero_are_written_without_an_exponent():
    array = pa.array([Decimal("1E-18"), Decimal("0"), Decimal("-0.0000001"), Decimal("120.50")], pa.decimal128(38, 18))
    assert json_texts(array, t.DECIMAL, TZ).to_pylist() == ["0.000000000000000001", "0", "-0.0000001", "120.5"]


def test_dates_before_year_1000_match_isoformat():
    array = pa.array([date(99, 1, 1), date(2026, 11, 1)], pa.date32())
    assert json_texts(array, t.DATE, TZ).to_pylist() == ['"0099-01-01"', '"2026-11-01"']
