"""The DuckDB engine: the compiled SQL (sql.py) run on an embedded DuckDB over the snapshot files.

Clean Parquet and CSV files are read by DuckDB itself, in parallel, with explicit column
types and the same parsing rules as the Python reader (`snapshot.py`). Whenever a file
holds anything those rules might read differently (a bad cell, a duplicate member key,
an event without a time, an unusual column type, JSONL), the Python reader reads the
snapshot instead: it gives the exact file:row:col diagnostics, or the typed rows that
are then handed to DuckDB through Arrow. Either way the query is the same, so the rows
equal the Python engine's and are written by the same writers (results.py).

DuckDB runs with a memory limit and a temp directory, so large snapshots spill to disk
instead of failing.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlglot import exp

from . import ast
from . import types as t
from .check import CheckedRuleSet, check_rule_set
from .errors import Diagnostic, DiagnosticError
from .eval import Evaluation, EvaluationStats
from .model import TableSchema
from .snapshot import MEMBER_TABLE, Snapshot, SnapshotStats, find_table_files, paused_gc, read_snapshot
from .sql import CompiledSql, compile_sql, sql_type
from .sql_dialects import rules_for
from .sql_statements import create_view, drop, table_ref

ENGINE = "duckdb"
DEFAULT_MEMORY_LIMIT = "4GB"
# What DuckDB's memory_limit setting takes: a number and a unit (DuckDB's own names for them).
_MEMORY_SIZE_RE = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)

# The Python reader's text rules (snapshot.py), as DuckDB regular expressions over trimmed cells.
_INT_RE = r"^[+-]?[0-9]+$"
# Decimals with at most 18 digits after the point and no exponent fit DECIMAL(38, 18) exactly.
_DECIMAL_RE = r"^[+-]?([0-9]+(\.[0-9]{0,18})?|\.[0-9]{1,18})$"
_FLOAT_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_LOCAL_TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?$"
_ZONED_TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})$"


class FallBack(Exception):
    """The fast path cannot promise the Python reader's reading of this snapshot."""


@dataclass(frozen=True)
class Limits:
    """What DuckDB may use: memory before it spills to disk, where it spills, and threads."""

    memory: str = DEFAULT_MEMORY_LIMIT
    spill_dir: Path | None = None  # default: <system temp>/memberrules-duckdb
    threads: int | None = None  # default: every core

    def __post_init__(self):
        if not _MEMORY_SIZE_RE.match(self.memory):
            raise ValueError(f"memory limit {self.memory!r}: expected a size such as 512MB or 4GB")

    @property
    def spill_directory(self) -> Path:
        return self.spill_dir or Path(tempfile.gettempdir()) / "memberrules-duckdb"


@contextlib.contextmanager
def out_of_memory_reported(limits: Limits):
    """DuckDB running out of memory (or of spill space) as MR592, with what to change."""
    import duckdb

    try:
        yield
    except duckdb.OutOfMemoryException as error:
        reason = str(error).splitlines()[0]
        raise DiagnosticError([Diagnostic(
            "MR592", f"DuckDB ran out of memory (memory limit {limits.memory}, spilling to "
                     f"{limits.spill_directory}): {reason}", None,
            hint="raise --memory-limit, or point --spill-dir at a disk with more free space")]) from None


@dataclass
class DuckDBRun:
    """One evaluation on DuckDB: the result rows, the snapshot counts, and how it was read."""

    rows: list[dict]
    stats: SnapshotStats
    rejects: list = field(default_factory=list)
    read_by: str = "duckdb"  # or "python" when the Python reader read the snapshot
    seconds: dict[str, float] = field(default_factory=dict)


def connect(memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None,
            temp_directory: str | Path | None = None):
    """A DuckDB connection that spills to `temp_directory` above `memory_limit`."""
    return connect_with(Limits(memory_limit, Path(temp_directory) if temp_directory else None, threads))


def connect_with(limits: Limits):
    """A DuckDB connection within `limits`."""
    import duckdb

    return duckdb.connect(config={"memory_limit": limits.memory, "threads": limits.threads or os.cpu_count() or 1,
                                  "temp_directory": str(limits.spill_directory), "preserve_insertion_order": False})


def evaluate_duckdb(rules: CheckedRuleSet, data_dir: Path, as_of: datetime, on_bad_row: str = "fail",
                    connection=None, force_python_reader: bool = False, limits: Limits | None = None) -> DuckDBRun:
    """Evaluate every member of the snapshot in `data_dir` on DuckDB.

    Args:
        rules: the checked rule set (campaigns are not evaluated by this engine).
        data_dir: one file per schema table (CSV, JSONL or Parquet).
        as_of: the evaluation instant; a naive value is read in the rule set's timezone.
        on_bad_row: "fail" or "skip", as for the Python reader.
        connection: a DuckDB connection to reuse (tests); a new one, within `limits`, by default.
        force_python_reader: read with the Python reader even when the files are clean.
        limits: memory, spill directory and threads of a new connection.

    Returns:
        A DuckDBRun whose rows equal the Python engine's Evaluation.rows.

    Raises:
        DiagnosticError: the snapshot could not be read (MR501–MR505, from the Python reader), or
            DuckDB ran out of memory (MR592).
    """
    limits = limits or Limits()
    rows: list[dict] = []
    with out_of_memory_reported(limits):
        stream = DuckDBStream(rules, data_dir, as_of, on_bad_row, connection, force_python_reader, limits)
        began = time.perf_counter()
        for batch in stream:
            rows += batch
    stream.seconds["evaluate"] = time.perf_counter() - began
    return DuckDBRun(rows, stream.stats, stream.rejects, stream.read_by, stream.seconds)


class DuckDBStream:
    """The snapshot read (on construction), then the result rows a batch at a time (on iteration).

    Iterate once; the connection (when this stream opened it) closes after the last batch.
    """

    def __init__(self, rules: CheckedRuleSet, data_dir: Path, as_of: datetime, on_bad_row: str = "fail",
                 connection=None, force_python_reader: bool = False, limits: Limits | None = None):
        self.rules = rules
        self.tz = ZoneInfo(rules.timezone)
        self.as_of = as_of.replace(tzinfo=self.tz) if as_of.tzinfo is None else as_of.astimezone(self.tz)
        self.own = connection is None
        self.con = connection or connect_with(limits or Limits())
        self.seconds: dict[str, float] = {}
        self.read_by = "duckdb"
        self.rejects: list = []
        self.views = _Views(self.con, rules, self.as_of)
        try:
            self.con.execute(rules_for("duckdb").set_time_zone(rules.timezone).sql("duckdb")).fetchall()
            began = time.perf_counter()
            try:
                if force_python_reader:
                    raise FallBack("asked for")
                self.stats = self.views.from_files(Path(data_dir))
            except FallBack:
                self.views.awaiting = {}  # the Python reader counts every table itself
                snapshot = read_snapshot(Path(data_dir), rules.model.schema_, rules.timezone, self.as_of, on_bad_row)
                self.stats, self.rejects = snapshot.stats, snapshot.rejects
                self.views.from_snapshot(snapshot)
                self.read_by = "python"
            self.seconds["read"] = time.perf_counter() - began
        except BaseException:
            self.close()
            raise

    def compile(self) -> CompiledSql:
        """The rule set compiled over this snapshot's views, with each event table's rows per
        member beside the results (`row_count_columns`, read back by `count_known`)."""
        return compile_sql(self.rules, "duckdb", as_of=self.as_of, tables=self.views.names,
                           extra=row_count_columns(self.rules))

    def count_known(self, sums: dict[str, int]) -> None:
        """Complete the counts of event rows of unknown members from the query's sums of each
        member's rows (table → rows of known members up to as_of)."""
        for table, rows in self.views.awaiting.items():
            self.stats.events_unknown_member[table] = rows - sums.get(table, 0)
        self.views.awaiting = {}

    def __iter__(self):
        try:
            compiled = self.compile()
            columns = [(name, type_) for name, type_ in compiled.columns if not name.startswith(ROWS_PREFIX)]
            sums = _RowCountSums(self.rules)
            yield from iter_query(self.con, compiled.query_sql(), columns, self.tz, on_batch=sums.add)
            self.count_known(sums.totals)
        finally:
            self.close()

    def arrow_batches(self, batch_rows: int = 100_000, types: dict | None = None):
        """The result rows as DuckDB's Arrow record batches, untouched (results_arrow.py writes them);
        `types`, if given, receives the query's column types before the first batch."""
        try:
            compiled = self.compile()
            if types is not None:
                types.update(compiled.columns)
            sums = _RowCountSums(self.rules)
            for batch in self.con.sql(compiled.query_sql()).to_arrow_reader(batch_rows):
                sums.add(batch)
                yield batch
            self.count_known(sums.totals)
        finally:
            self.close()

    def close(self) -> None:
        if self.own:
            self.con.close()
        else:
            self.views.drop()


# Extra query columns: each event table's rows per member (`count(<table>)`).
ROWS_PREFIX = "_mr_rows_"


def row_count_columns(rules: CheckedRuleSet) -> dict[str, ast.Expr]:
    """Query columns counting each member's rows of every event table: their sums are the rows of
    known members, which validate's totals turn into the rows of unknown members without a join."""
    return {ROWS_PREFIX + table: count for table, count in rules.row_counts.items()}


class _RowCountSums:
    """The sums of the `row_count_columns` over the result batches."""

    def __init__(self, rules: CheckedRuleSet):
        self.columns = {ROWS_PREFIX + table: table for table in rules.row_counts}
        self.totals: dict[str, int] = dict.fromkeys(rules.row_counts, 0)

    def add(self, batch) -> None:
        import pyarrow.compute as pc

        for column, table in self.columns.items():
            self.totals[table] += pc.sum(batch.column(column)).as_py() or 0


def run_compiled(con, compiled: CompiledSql, tz: ZoneInfo) -> list[dict]:
    """Run the query and return its rows as the Python engine's values (Decimal, timedelta, …)."""
    rows: list[dict] = []
    for batch in iter_compiled(con, compiled, tz):
        rows += batch
    return rows


def iter_compiled(con, compiled: CompiledSql, tz: ZoneInfo, batch_rows: int = 100_000):
    """The result rows a batch at a time, so a writer can stream them with bounded memory."""
    yield from iter_query(con, compiled.query_sql(), compiled.columns, tz, batch_rows)


def iter_query(con, sql: str, columns: list[tuple[str, t.Type]], tz: ZoneInfo, batch_rows: int = 100_000,
               on_batch: Callable[[object], None] | None = None):
    """Rows of any query over these typed columns, a batch at a time, as the Python engine's values
    (`on_batch` sees each Arrow record batch first)."""
    reader = con.sql(sql).to_arrow_reader(batch_rows)
    names = [name for name, _ in columns]
    converters = [_converter(type_, tz) for _, type_ in columns]
    for batch in reader:
        if on_batch is not None:
            on_batch(batch)
        with paused_gc():
            cells = []
            for (name, type_), convert in zip(columns, converters):
                array = batch.column(name)
                values = _decimals(array) if type_.kind == "decimal" else array.to_pylist()
                cells.append(values if convert is None else [None if v is None else convert(v) for v in values])
            yield [dict(zip(names, row)) for row in zip(*cells)] if cells else []


def _decimals(array) -> list:
    """decimal128(38, 18) → Decimal, through Arrow's text with the trailing zeros cut: several
    times faster than Arrow's own conversion, and the same values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.replace_substring_regex(array.cast(pa.string()), r"\.?0+$", "")
    text = pc.if_else(pc.equal(text, ""), "0", text)  # "0.000…" lost every digit
    return [None if v is None else Decimal(v) for v in text.to_pylist()]


def _converter(type_: t.Type, tz: ZoneInfo) -> Callable | None:
    kind = type_.kind
    if kind == "duration":
        return lambda micros: timedelta(microseconds=micros)
    if kind == "timestamp":
        return lambda value: value.astimezone(tz)
    if kind == "list" and type_.item is not None and type_.item.kind in ("duration", "timestamp"):
        item = _converter(type_.item, tz)
        return lambda values: [None if v is None else item(v) for v in values]
    return None


# -- reading ------------------------------------------------------------------------------------


def _columns(schema: dict[str, TableSchema]) -> dict[str, tuple[str, str | None, dict[str, t.Type]]]:
    """table → (key, time column, column types), the key first, as snapshot.py reads them."""
    member = schema[MEMBER_TABLE]
    key_type = t.parse_type(member.fields.get(member.key, "string")).with_null(False)
    tables = {}
    for name in [MEMBER_TABLE] + [n for n in schema if n != MEMBER_TABLE]:
        spec = schema[name]
        key = t.parse_type(spec.fields[spec.key]).with_null(False) if spec.key in spec.fields else key_type
        columns = {spec.key: key}
        columns.update((c, t.parse_type(text)) for c, text in spec.fields.items() if c != spec.key)
        time_column = spec.time if name != MEMBER_TABLE else None
        if time_column is not None and time_column not in columns:
            columns[time_column] = t.TIMESTAMP
        tables[name] = (spec.key, time_column, columns)
    return tables


class _Views:
    """One typed view per schema table, named `_mr_<table>`, over the files or the Python reader's rows."""

    def __init__(self, con, rules: CheckedRuleSet, as_of: datetime):
        self.con = con
        self.rules = rules
        self.as_of = as_of
        self.tables = _columns(rules.model.schema_)
        self.names = {name: f"_mr_{name}" for name in self.tables}
        self.registered: list[str] = []
        self.r = rules_for("duckdb")
        self.complete: dict[str, set[str]] = {}  # Parquet columns whose statistics show no null
        self.has_bad: dict[str, bool] = {}  # CSV views carry a `_mr_bad` column
        self.awaiting: dict[str, int] = {}  # event table → rows up to as_of, until the query counts them

    def drop(self) -> None:
        for name in self.names.values():
            self.con.execute(drop("VIEW", name).sql("duckdb")).fetchall()
        for name in self.registered:
            self.con.unregister(name)

    def from_files(self, data_dir: Path) -> SnapshotStats:
        files = find_table_files(data_dir, self.rules.model.schema_)
        for table, path in files.items():
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                select = self.parquet_select(table, path)
            elif suffix == ".csv":
                select = self.csv_select(table, path)
            else:
                select = self.jsonl_select(table, path)
            self.con.execute(create_view(self.names[table], select).sql("duckdb")).fetchall()
        return self.validate()

    # Parquet: typed columns; anything but the plain Arrow types of each kind falls back.

    def parquet_select(self, table: str, path: Path) -> exp.Select:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        key, time_column, columns = self.tables[table]
        self.complete[table] = _columns_without_nulls(parquet)
        if set(schema.names) != set(columns) or len(schema.names) != len(columns):
            raise FallBack("columns differ")
        cells = []
        for name, type_ in columns.items():
            column = exp.column(name, quoted=True)
            cells.append(exp.alias_(self.parquet_cell(column, schema.field(name).type, type_), name, quoted=True))
        source = exp.Anonymous(this="read_parquet", expressions=[exp.Literal.string(str(path))])
        return exp.select(*cells).from_(source)

    def parquet_cell(self, column: exp.Expression, arrow_type, type_: t.Type) -> exp.Expression:
        import pyarrow as pa

        kind = type_.kind
        typed = sql_type(type_, self.r)
        if kind == "int" and pa.types.is_integer(arrow_type) and not pa.types.is_uint64(arrow_type):
            return exp.Cast(this=column, to=typed)
        if kind == "decimal" and pa.types.is_decimal(arrow_type) and arrow_type.scale <= 18 and \
                arrow_type.precision - arrow_type.scale <= 20:
            # Kept narrow (sums of decimal(12, 2) run on 64-bit integers); the SQL casts results.
            return column
        if kind == "decimal" and pa.types.is_integer(arrow_type):
            return exp.Cast(this=column, to=typed)
        if kind == "float" and pa.types.is_floating(arrow_type):
            return exp.Cast(this=column, to=typed)
        if kind == "string" and (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
            return column
        if kind == "bool" and pa.types.is_boolean(arrow_type):
            return column
        if kind == "date" and pa.types.is_date32(arrow_type):
            return column
        if kind == "timestamp" and pa.types.is_timestamp(arrow_type):
            if arrow_type.tz is not None:
                return exp.Cast(this=column, to=typed)
            return exp.Anonymous(this="timezone", expressions=[exp.Literal.string(self.rules.timezone), column])
        if kind == "list" and (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and \
                type_.item is not None and type_.item.kind == "string" and \
                (pa.types.is_string(arrow_type.value_type) or pa.types.is_large_string(arrow_type.value_type)):
            return column
        raise FallBack(f"{arrow_type} for {type_}")

    # CSV: every cell as text, checked against the Python reader's rules, then cast.

    def csv_select(self, table: str, path: Path) -> exp.Select:
        key, time_column, columns = self.tables[table]
        with open(path, encoding="utf-8", newline="") as handle:
            try:
                header = next(csv.reader(handle), None)
            except (UnicodeDecodeError, csv.Error):
                raise FallBack("unreadable header") from None
        if header is None or sorted(header) != sorted(columns) or len(set(header)) != len(header):
            raise FallBack("columns differ")
        types = exp.Struct(expressions=[exp.PropertyEQ(this=exp.to_identifier(name, quoted=True),
                                                       expression=exp.Literal.string("VARCHAR"))
                                        for name in header])
        source = exp.Anonymous(this="read_csv", expressions=[
            exp.Literal.string(str(path)),
            exp.PropertyEQ(this=exp.to_identifier("header"), expression=exp.true()),
            exp.PropertyEQ(this=exp.to_identifier("delim"), expression=exp.Literal.string(",")),
            exp.PropertyEQ(this=exp.to_identifier("quote"), expression=exp.Literal.string('"')),
            exp.PropertyEQ(this=exp.to_identifier("escape"), expression=exp.Literal.string('"')),
            exp.PropertyEQ(this=exp.to_identifier("columns"), expression=types),
            exp.PropertyEQ(this=exp.to_identifier("strict_mode"), expression=exp.true()),
            exp.PropertyEQ(this=exp.to_identifier("allow_quoted_nulls"), expression=exp.false()),
        ])
        cells, checks = [], []
        for name, type_ in columns.items():
            value, ok = self.csv_cell(exp.column(name, quoted=True), type_)
            cells.append(exp.alias_(value, name, quoted=True))
            checks.append(ok)
        # A row the fast path cannot read like the Python reader marks the whole view as unusable.
        bad = exp.alias_(exp.Not(this=exp.Paren(this=exp.and_(*checks))), "_mr_bad", quoted=True)
        self.has_bad[table] = True
        return exp.select(*cells, bad).from_(source)

    def csv_cell(self, column: exp.Expression, type_: t.Type) -> tuple[exp.Expression, exp.Expression]:
        kind = type_.kind
        text = exp.Anonymous(this="trim", expressions=[column.copy()])
        empty = exp.or_(exp.Is(this=column.copy(), expression=exp.Null()),
                        exp.EQ(this=column.copy(), expression=exp.Literal.string("")))
        typed = sql_type(type_, self.r)

        def matches(pattern: str) -> exp.Expression:
            return exp.Anonymous(this="regexp_full_match", expressions=[text.copy(), exp.Literal.string(pattern)])

        if kind == "string":
            value = column.copy() if not type_.nullable else \
                exp.Nullif(this=column.copy(), expression=exp.Literal.string(""))
            if not type_.nullable:
                value = exp.Coalesce(this=value, expressions=[exp.Literal.string("")])
            return value, exp.true()
        if kind == "int":
            value, ok = exp.TryCast(this=text.copy(), to=typed), matches(_INT_RE)
            ok = exp.and_(ok, exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        elif kind == "decimal":
            value, ok = exp.TryCast(this=text.copy(), to=typed), matches(_DECIMAL_RE)
            ok = exp.and_(ok, exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        elif kind == "float":
            value, ok = exp.TryCast(this=text.copy(), to=typed), matches(_FLOAT_RE)
            ok = exp.and_(ok, exp.Anonymous(this="isfinite", expressions=[value.copy()]))
        elif kind == "bool":
            word = exp.Lower(this=text.copy())
            value = exp.In(this=word, expressions=[exp.Literal.string("true"), exp.Literal.string("1")])
            ok = exp.In(this=word.copy(), expressions=[exp.Literal.string(w) for w in ("true", "1", "false", "0")])
        elif kind == "date":
            value, ok = exp.TryCast(this=text.copy(), to=typed), matches(_DATE_RE)
            ok = exp.and_(ok, exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        elif kind == "timestamp":
            local = exp.Anonymous(this="timezone", expressions=[
                exp.Literal.string(self.rules.timezone), exp.TryCast(this=text.copy(), to=exp.DataType.build("TIMESTAMP"))])
            zoned = exp.TryCast(this=text.copy(), to=typed)
            value = exp.Case(ifs=[exp.If(this=matches(_ZONED_TS_RE), true=zoned)], default=local)
            ok = exp.and_(exp.or_(matches(_ZONED_TS_RE), matches(_LOCAL_TS_RE)),
                          exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        elif kind == "list" and type_.item is not None and type_.item.kind == "string" and not type_.item.nullable:
            elements = exp.Anonymous(this="json_extract", expressions=[column.copy(), exp.Literal.string("$[*]")])
            x = exp.to_identifier("x")
            all_strings = exp.Anonymous(this="list_bool_and", expressions=[exp.Anonymous(
                this="list_transform", expressions=[elements, exp.Lambda(
                    this=exp.EQ(this=exp.Anonymous(this="json_type", expressions=[exp.column(x)]),
                                expression=exp.Literal.string("VARCHAR")), expressions=[x])])])
            valid = exp.and_(exp.Anonymous(this="json_valid", expressions=[column.copy()]),
                             exp.EQ(this=exp.Anonymous(this="json_type", expressions=[column.copy()]),
                                    expression=exp.Literal.string("ARRAY")))
            ok = exp.and_(valid, exp.Coalesce(this=all_strings, expressions=[exp.true()]))
            value = exp.Case(ifs=[exp.If(this=valid.copy(), true=exp.Cast(this=exp.Anonymous(
                this="json_extract_string", expressions=[column.copy(), exp.Literal.string("$[*]")]), to=typed))])
        else:
            raise FallBack(f"{type_} columns are read by the Python reader")
        # Empty: null when the type allows it, a bad row otherwise.
        value = exp.Case(ifs=[exp.If(this=empty, true=exp.Null())], default=value)
        # exp.Not does not parenthesise its operand: NOT (a OR b) must be written so.
        filled = exp.and_(exp.Not(this=exp.Paren(this=empty.copy())), exp.Coalesce(this=ok, expressions=[exp.false()]))
        ok = exp.or_(exp.and_(empty.copy(), exp.true() if type_.nullable else exp.false()), filled)
        return exp.Cast(this=value, to=typed), ok

    # JSONL: each line's object, every value checked against the Python reader's rules; text
    # values are read as CSV cells are, numbers from their JSON type (decimals from their text).

    def jsonl_select(self, table: str, path: Path) -> exp.Select:
        _, _, columns = self.tables[table]
        line = exp.column("json", quoted=True)
        source = exp.Anonymous(this="read_json_objects", expressions=[
            exp.Literal.string(str(path)),
            exp.PropertyEQ(this=exp.to_identifier("format"), expression=exp.Literal.string("newline_delimited"))])
        keys = exp.Anonymous(this="json_keys", expressions=[line.copy()])
        names = exp.Array(expressions=[exp.Literal.string(name) for name in columns])
        # An object holding only the schema's columns, each once (the Python reader takes the
        # last of a repeated key, DuckDB the first; it reports an unknown one).
        shape = exp.and_(
            exp.EQ(this=exp.Anonymous(this="json_type", expressions=[line.copy()]), expression=exp.Literal.string("OBJECT")),
            exp.Anonymous(this="list_has_all", expressions=[names, keys]),
            exp.EQ(this=exp.Anonymous(this="len", expressions=[keys.copy()]),
                   expression=exp.Anonymous(this="len", expressions=[exp.Anonymous(this="list_distinct",
                                                                                   expressions=[keys.copy()])])))
        cells, checks = [], [shape]
        for name, type_ in columns.items():
            value, ok = self.jsonl_cell(line, name, type_, is_key=name == self.tables[table][0])
            cells.append(exp.alias_(value, name, quoted=True))
            checks.append(ok)
        bad = exp.alias_(exp.Not(this=exp.Paren(this=exp.and_(*checks))), "_mr_bad", quoted=True)
        self.has_bad[table] = True
        return exp.select(*cells, bad).from_(source)

    def jsonl_cell(self, line: exp.Expression, name: str, type_: t.Type, is_key: bool
                   ) -> tuple[exp.Expression, exp.Expression]:
        kind = type_.kind
        typed = sql_type(type_, self.r)
        path = exp.Literal.string('$."' + name + '"')
        value_json = exp.Anonymous(this="json_extract", expressions=[line.copy(), path])
        json_type = exp.Anonymous(this="json_type", expressions=[value_json.copy()])
        text = exp.Anonymous(this="json_extract_string", expressions=[value_json.copy(), exp.Literal.string("$")])

        def of_type(*names: str) -> exp.Expression:
            return exp.In(this=json_type.copy(), expressions=[exp.Literal.string(n) for n in names])

        def not_null(node: exp.Expression) -> exp.Expression:
            return exp.Not(this=exp.Is(this=node.copy(), expression=exp.Null()))

        absent = exp.or_(exp.Is(this=value_json.copy(), expression=exp.Null()), of_type("NULL"))
        cases: list[tuple[exp.Expression, exp.Expression, exp.Expression]] = []  # (when, value, ok)
        if kind == "string":
            ok = exp.NEQ(this=text.copy(), expression=exp.Literal.string("")) if is_key else exp.true()
            cases.append((of_type("VARCHAR"), text.copy(), ok))
        else:
            if kind in ("int", "float", "decimal"):
                number = exp.TryCast(this=value_json.copy(), to=typed)
                ok = not_null(number)
                if kind == "float":
                    ok = exp.and_(ok, exp.Anonymous(this="isfinite", expressions=[number.copy()]))
                cases.append((of_type("BIGINT", "UBIGINT") if kind != "float" else of_type("BIGINT", "UBIGINT", "DOUBLE"),
                              number if kind != "decimal" else exp.TryCast(this=exp.Cast(
                                  this=value_json.copy(), to=exp.DataType.build("VARCHAR")), to=typed), ok))
                if kind == "decimal":
                    # DuckDB reads a JSON fraction as a double: the value comes from the number's
                    # own text in the line, which must agree with that double.
                    raw = exp.Anonymous(this="regexp_extract", expressions=[
                        exp.Cast(this=line.copy(), to=exp.DataType.build("VARCHAR")),
                        exp.Literal.string('"' + re.escape(name) + r'"\s*:\s*(-?[0-9][0-9.eE+-]*)'),
                        exp.Literal.number(1)])
                    exact = exp.TryCast(this=raw.copy(), to=typed)
                    agrees = exp.EQ(this=exp.TryCast(this=raw.copy(), to=exp.DataType.build("DOUBLE")),
                                    expression=exp.TryCast(this=value_json.copy(), to=exp.DataType.build("DOUBLE")))
                    ok = exp.and_(exp.Anonymous(this="regexp_full_match",
                                                expressions=[raw.copy(), exp.Literal.string(_DECIMAL_RE)]),
                                  not_null(exact), agrees)
                    cases.append((of_type("DOUBLE"), exact, ok))
            elif kind == "bool":
                cases.append((of_type("BOOLEAN"), exp.TryCast(this=value_json.copy(), to=typed), exp.true()))
            if kind == "list":
                value, ok = self.csv_cell(exp.Cast(this=value_json.copy(), to=exp.DataType.build("VARCHAR")), type_)
                cases.append((of_type("ARRAY"), value, ok))
            else:
                # Text is read as a CSV cell is (parse_value), except that "" is never null.
                value, ok = self.csv_cell(text.copy(), type_)
                cases.append((of_type("VARCHAR"),
                              value, exp.and_(exp.NEQ(this=text.copy(), expression=exp.Literal.string("")), ok)))
        value = exp.Case(ifs=[exp.If(this=absent.copy(), true=exp.Null())] +
                         [exp.If(this=when, true=exp.Cast(this=v, to=typed)) for when, v, _ in cases])
        ok = exp.Case(ifs=[exp.If(this=absent.copy(), true=exp.true() if type_.nullable and not is_key else exp.false())]
                      + [exp.If(this=when.copy(), true=exp.Coalesce(this=o, expressions=[exp.false()]))
                         for when, _, o in cases], default=exp.false())
        return value, ok

    def validate(self) -> SnapshotStats:
        """Counts rows, and falls back on anything the Python reader would reject or drop as bad.

        One scan per table: the checks, the rows, and for event tables the rows after `as_of`.
        Rows of unknown members need the member keys: for a table with a row count in the query
        (`row_count_columns`) they are the rows up to `as_of` less those the query finds for
        members — `awaiting` holds the former until `DuckDBStream.count_known`; any other
        event table is joined with the members here."""
        rows_read, unknown, after = {}, {}, {}
        self.awaiting = {}
        try:
            for table, (key, time_column, columns) in self.tables.items():
                joined = table != MEMBER_TABLE and table not in self.rules.row_counts
                counts = self.con.execute(self.check_query(table, key, time_column, columns, joined),
                                          [self.as_of.isoformat()] if time_column else []).fetchall()[0]
                head = 1 if table == MEMBER_TABLE else 3
                if any(counts[head:]):
                    raise FallBack(f"{table}: a row the Python reader reports")
                rows_read[table] = counts[0]
                if table == MEMBER_TABLE:
                    continue
                after[table] = counts[1]
                if joined:
                    unknown[table] = counts[2]
                else:
                    self.awaiting[table] = counts[0] - counts[1]
        except FallBack:
            raise
        except Exception as error:  # duckdb.Error: a file DuckDB cannot parse is the Python reader's to report
            raise FallBack(str(error)) from None
        return SnapshotStats(rows_read, 0, unknown, after)

    def check_query(self, table: str, key: str, time_column: str | None, columns: dict[str, t.Type],
                    joined: bool = False) -> str:
        """count(*), then for an event table the rows after `as_of` and those up to it of unknown
        members (`joined`; else 0), then the counts of rows the Python reader would report (all zero
        for a clean file); the `as_of` instant is the query's parameter."""
        def count_where(condition: exp.Expression | None) -> exp.Expression:
            star = exp.Count(this=exp.Star())
            return star if condition is None else exp.Filter(this=star, expression=exp.Where(this=condition))

        def column(name: str, alias: str = "e") -> exp.Expression:
            return exp.column(name, table=alias, quoted=True)

        def is_null(node: exp.Expression) -> exp.Expression:
            return exp.Is(this=node, expression=exp.Null())

        # A column whose Parquet statistics count no null needs no scan: the view's casts never
        # make one (a value they cannot cast fails the query instead).
        known_complete = self.complete.get(table, set())
        checks = [count_where(is_null(column(name))) for name, type_ in columns.items()
                  if name not in known_complete and (not type_.nullable or name in (key, time_column))]
        checks += [count_where(exp.Anonymous(this="list_contains", expressions=[column(name), exp.Null()]))
                   for name, type_ in columns.items() if type_.kind == "list"]
        if self.has_bad.get(table):
            checks.append(count_where(column("_mr_bad")))
        view = table_ref(self.names[table], "e")
        if table == MEMBER_TABLE:
            duplicates = exp.Sub(this=exp.Count(this=exp.Star()),
                                 expression=exp.Count(this=exp.Distinct(expressions=[column(key)])))
            return exp.select(count_where(None), *checks, duplicates).from_(view).sql("duckdb")
        later: exp.Expression = exp.false()
        if time_column is not None:
            # `$1`, not `?`: the joined query reads the instant twice, from one parameter.
            limit: exp.Expression = exp.Cast(this=exp.Placeholder(this="1"), to=exp.DataType.build("TIMESTAMPTZ"))
            if columns[time_column].kind == "date":
                limit = exp.Cast(this=limit, to=exp.DataType.build("DATE"))
            later = exp.GT(this=column(time_column), expression=limit)
        if not joined:
            return exp.select(count_where(None), count_where(later), exp.Literal.number(0), *checks
                              ).from_(view).sql("duckdb")
        member_key = self.tables[MEMBER_TABLE][0]
        members = exp.select(exp.alias_(exp.column(member_key, quoted=True), "_mr_key", quoted=True)).from_(
            table_ref(self.names[MEMBER_TABLE]))
        unknown = exp.and_(is_null(column("_mr_key", "m")), exp.Not(this=exp.Coalesce(
            this=later.copy(), expressions=[exp.false()])))
        select = exp.select(count_where(None), count_where(later), count_where(unknown), *checks)
        select = select.from_(view).join(exp.alias_(exp.Subquery(this=members), "m", table=True),
                                         on=exp.EQ(this=column(key), expression=column("_mr_key", "m")),
                                         join_type="LEFT")
        return select.sql("duckdb")

    def from_snapshot(self, snapshot: Snapshot) -> None:
        """Hand the Python reader's typed rows to DuckDB through Arrow."""
        import pyarrow as pa

        from .results import arrow_type

        tz = ZoneInfo(self.rules.timezone)
        for table, (key, time_column, columns) in self.tables.items():
            if table == MEMBER_TABLE:
                rows = snapshot.members
            else:
                rows = [row for group in snapshot.events.get(table, {}).values() for row in group]
            arrays = []
            for name, type_ in columns.items():
                values = [row.get(name) for row in rows]
                if type_.kind == "duration":
                    values = [None if v is None else _micros(v) for v in values]
                    arrays.append(pa.array(values, pa.int64()))
                elif type_.kind == "decimal":
                    arrays.append(_decimal_array(values, table, name))
                else:
                    arrays.append(pa.array(values, arrow_type(type_, tz)))
            arrow = pa.table(arrays, names=list(columns))
            registered = f"_mr_arrow_{table}"
            self.con.register(registered, arrow)
            self.registered.append(registered)
            casts = exp.select(*(exp.alias_(exp.Cast(this=exp.column(name, quoted=True), to=sql_type(type_, self.r)),
                                            name, quoted=True) for name, type_ in columns.items()))
            select = casts.from_(table_ref(registered))
            self.con.execute(create_view(self.names[table], select).sql("duckdb")).fetchall()


def _decimal_array(values: list, table: str, column: str):
    """Decimals for DuckDB's DECIMAL(38, 18); a value it cannot hold exactly is an error (MR506),
    never rounded: the engines must give the same answers."""
    import pyarrow as pa

    try:
        return pa.array(values, pa.decimal128(38, 18))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        found = next((v for v in values if v is not None and (abs(v) >= 10 ** 20 or v != round(v, 18))), None)
        raise DiagnosticError([Diagnostic(
            "MR506", f"table '{table}', column '{column}': the decimal {found} has more than 18 digits after the "
                     "point or 20 before it, which the DuckDB engine cannot hold exactly (DECIMAL(38, 18))",
            hint="round the export to 18 decimal places, or evaluate with --engine python")]) from None


def _columns_without_nulls(parquet) -> set[str]:
    """Top-level columns whose statistics, in every row group, count no null."""
    metadata = parquet.metadata
    names = parquet.schema_arrow.names
    complete = set(names)
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            name = chunk.path_in_schema.split(".")[0]
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count:
                complete.discard(name)
    return complete & set(names)


def _micros(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


# -- the evaluate pipeline on DuckDB --------------------------------------------------------------

def evaluate_rules_duckdb(rules_dir: Path, data_dir: Path, *, as_of, out: Path, fmt: str = "jsonl",
                          params: dict[str, str] | None = None, on_bad_row: str = "fail", dry_run: bool = False,
                          state: Path | None = None, checked=None, limits: Limits | None = None):
    """`evaluate_rules` (evaluate.py) with the DuckDB engine: same checks, writers and report.

    Campaigns are decided in SQL and Arrow with the Python engine's rules and files
    (campaigns_sql.py); the state file (`state`) is read and written in one transaction.
    DuckDB works within `limits`; running out of memory is MR592, and writes nothing."""
    limits = limits or Limits()
    with out_of_memory_reported(limits):
        return _evaluate_rules_duckdb(rules_dir, data_dir, as_of=as_of, out=out, fmt=fmt, params=params,
                                      on_bad_row=on_bad_row, dry_run=dry_run, state=state, checked=checked,
                                      limits=limits)


def _evaluate_rules_duckdb(rules_dir: Path, data_dir: Path, *, as_of, out: Path, fmt: str, params, on_bad_row: str,
                           dry_run: bool, state: Path | None, checked, limits: Limits):
    from .evaluate import EvaluateOutcome, EvaluateReport, check_with_as_of
    from .results import rejects_path, result_columns, write_rejects
    from .results_arrow import write_batches

    timings: dict[str, float] = {}
    began = time.perf_counter()
    check, as_of = check_with_as_of(rules_dir, params, as_of, checked)
    if check.rule_set is None:
        return EvaluateOutcome(check)
    rules = check.rule_set
    columns = result_columns(rules)
    timings["compile"] = time.perf_counter() - began
    stream = DuckDBStream(rules, data_dir, as_of, on_bad_row, limits=limits)
    timings.update(stream.seconds)
    tz = ZoneInfo(rules.timezone)
    counts = _Counts(rules)
    began = time.perf_counter()
    if rules.campaigns or state is not None:
        return _evaluate_campaigns(check, stream, counts, timings, out=out, fmt=fmt, state=state,
                                   on_bad_row=on_bad_row, dry_run=dry_run)
    # The rows stay Arrow batches from the query to the file: no Python value per cell.
    sources: dict = {}
    batches = stream.arrow_batches(types=sources)
    rejects_file, written = None, 0
    if dry_run:
        for batch in batches:
            counts.add_arrow(batch)
    else:
        written = write_batches(batches, columns, out, fmt, tz, sources, on_batch=counts.add_arrow)
        if on_bad_row == "skip":
            rejects_file = rejects_path(out)
            write_rejects(stream.rejects, rejects_file)
    # Evaluation and writing run interleaved, a batch at a time; both are counted as evaluate.
    timings["evaluate"] = time.perf_counter() - began
    as_of = as_of.replace(tzinfo=tz) if as_of.tzinfo is None else as_of.astimezone(tz)
    evaluation = Evaluation([], {}, {}, EvaluationStats(counts.members, timings["evaluate"], [], 0.0, engine=ENGINE),
                            as_of, {name: p.value for name, p in rules.params.items()}, [], [], [],
                            rules.member.key)
    engine = ENGINE + (f" (read by the {stream.read_by} reader)" if stream.read_by != "duckdb" else "")
    report = EvaluateReport(out, fmt, as_of, written, stream.stats, counts.members, rejects_file,
                            counts.summary(), evaluation, engine=engine, seconds=timings,
                            rejected_by_table=dict(Counter(reject.table for reject in stream.rejects)),
                            dry_run=dry_run)
    return EvaluateOutcome(check, report)


def _evaluate_campaigns(check, stream: DuckDBStream, counts: _Counts, timings: dict[str, float], *,
                        out: Path, fmt: str, state: Path | None, on_bad_row: str, dry_run: bool):
    """The rest of `evaluate_rules_duckdb` for a rule set with campaigns, or with a state file."""
    from .campaigns_sql import write_outputs_duckdb
    from .evaluate import EvaluateOutcome, EvaluateReport
    from .results import rejects_path, write_rejects

    rules = check.rule_set
    began = time.perf_counter()
    try:
        decision, written, actions_file = write_outputs_duckdb(
            rules, stream.con, stream.as_of, stream.views.names, results=out, fmt=fmt, state=state,
            dry_run=dry_run, on_batch=counts.add_arrow, on_row_counts=stream.count_known)
    finally:
        stream.close()
    rejects_file = None
    if on_bad_row == "skip" and not dry_run:
        rejects_file = rejects_path(out)
        write_rejects(stream.rejects, rejects_file)
    timings["evaluate"] = time.perf_counter() - began
    evaluation = Evaluation([], {}, {}, EvaluationStats(counts.members, timings["evaluate"], [], 0.0, engine=ENGINE),
                            stream.as_of, {name: p.value for name, p in rules.params.items()}, [], [], [],
                            rules.member.key)
    engine = ENGINE + (f" (read by the {stream.read_by} reader)" if stream.read_by != "duckdb" else "")
    report = EvaluateReport(out, fmt, stream.as_of, written, stream.stats, counts.members, rejects_file,
                            counts.summary(), evaluation, engine=engine, seconds=timings,
                            rejected_by_table=dict(Counter(reject.table for reject in stream.rejects)),
                            campaigns=decision, actions_file=actions_file, dry_run=dry_run)
    return EvaluateOutcome(check, report)


class _Counts:
    """The summary's counts (evaluate.summarize), gathered while rows stream past."""

    def __init__(self, rules: CheckedRuleSet):
        self.rules = rules
        self.members = 0
        self.tiers: Counter = Counter()
        self.classes: dict[str, Counter] = {name: Counter() for name in rules.classes}
        self.segments: Counter = Counter()

    def add(self, batch: list[dict]) -> list[dict]:
        self.members += len(batch)
        if self.rules.tiers is not None:
            self.tiers.update(row["tier"] for row in batch)
        for name, counter in self.classes.items():
            counter.update(row[name] for row in batch)
        self.segments.update(segment for row in batch for segment in row["segments"])
        return batch

    def add_arrow(self, batch) -> None:
        """`add` for an Arrow record batch, counted by pyarrow.compute."""
        import pyarrow.compute as pc

        def tally(counter: Counter, array) -> None:
            for entry in pc.value_counts(array).to_pylist():
                counter[entry["values"]] += entry["counts"]

        self.members += batch.num_rows
        if self.rules.tiers is not None:
            tally(self.tiers, batch.column("tier"))
        for name, counter in self.classes.items():
            tally(counter, batch.column(name))
        tally(self.segments, pc.list_flatten(batch.column("segments")))

    def summary(self):
        from .evaluate import Summary

        rules, summary = self.rules, Summary()
        if rules.tiers is not None:
            summary.sections.append(("tier", [(name, self.tiers.get(name, 0)) for name in rules.tiers.names()]))
        for name, class_list in rules.classes.items():
            counts = self.classes[name]
            entries = [(case.name, counts.get(case.name, 0)) for case in class_list.cases]
            if not class_list.has_else and counts.get(None):
                entries.append(("(none)", counts[None]))
            summary.sections.append((name, entries))
        if rules.segments:
            summary.sections.append(("segments", [(name, self.segments.get(name, 0)) for name in rules.segments]))
        return summary


# Below this many members the Python engine finishes first: DuckDB's start-up and the
# conversion of its rows cost more than they save (bench/bench_scale.py measures both).
AUTO_MIN_MEMBERS = 20_000


def count_members(data_dir: Path, schema: dict[str, TableSchema]) -> int:
    """Rows of the member file, cheaply: Parquet metadata, or line count for CSV and JSONL."""
    path = find_table_files(Path(data_dir), schema)[MEMBER_TABLE]
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
    return lines - (1 if path.suffix.lower() == ".csv" else 0)


def choose_engine(engine: str, rules: CheckedRuleSet, data_dir: Path, state: Path | None) -> str:
    """`--engine auto`: DuckDB from AUTO_MIN_MEMBERS members on, campaigns and --state included."""
    if engine != "auto":
        return engine
    try:
        members = count_members(data_dir, rules.model.schema_)
    except Exception:  # a missing or unreadable file: the Python reader says what is wrong
        return "python"
    return "duckdb" if members >= AUTO_MIN_MEMBERS else "python"


class EngineChoiceError(ValueError):
    """An option the chosen engine cannot honour (e.g. --state with --engine duckdb): exit 2."""


def evaluate_rules_with(engine: str, limits: Limits | None = None) -> Callable:
    """`evaluate_rules` (evaluate.py) run by `engine`: python, duckdb or auto; DuckDB within `limits`."""
    from .evaluate import evaluate_rules

    def run(rules_dir: Path, data_dir: Path, *, as_of, out: Path, fmt: str = "jsonl", params=None,
            on_bad_row: str = "fail", progress=None, state: Path | None = None, dry_run: bool = False):
        chosen, check = engine, None
        if engine == "auto":
            check = check_rule_set(rules_dir, params)
            chosen = "python" if check.rule_set is None else choose_engine("auto", check.rule_set, data_dir, state)
        if chosen == "python":
            return evaluate_rules(rules_dir, data_dir, as_of=as_of, out=out, fmt=fmt, params=params,
                                  on_bad_row=on_bad_row, progress=progress, state=state, dry_run=dry_run,
                                  checked=check)
        return evaluate_rules_duckdb(rules_dir, data_dir, as_of=as_of, out=out, fmt=fmt, params=params,
                                     on_bad_row=on_bad_row, dry_run=dry_run, state=state, checked=check,
                                     limits=limits)

    return run
