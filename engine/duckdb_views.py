"""The snapshot files as typed DuckDB views, read by the Python reader's rules.

One view per schema table, named `_mr_<table>`. Clean Parquet and CSV files are read by
DuckDB itself, in parallel, with explicit column types and the same parsing rules as the
Python reader (`snapshot.py`); one scan per table counts the rows and checks them. Whenever
a file holds anything those rules might read differently (a bad cell, a duplicate member
key, an event without a time, an unusual column type), `FallBack` is raised and the Python
reader's typed rows are handed to DuckDB through Arrow instead (`SnapshotViews.from_snapshot`).
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlglot import exp

from . import types as t
from .check import CheckedRuleSet
from .errors import Diagnostic, DiagnosticError
from .model import TableSchema
from .snapshot import MEMBER_TABLE, Snapshot, SnapshotStats, find_table_files
from .sql import sql_type
from .sql_dialects import rules_for
from .sql_statements import col, create_view, drop, table_ref

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


class SnapshotViews:
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

        def is_null(node: exp.Expression) -> exp.Expression:
            return exp.Is(this=node, expression=exp.Null())

        # A column whose Parquet statistics count no null needs no scan: the view's casts never
        # make one (a value they cannot cast fails the query instead).
        known_complete = self.complete.get(table, set())
        checks = [count_where(is_null(col(name, "e"))) for name, type_ in columns.items()
                  if name not in known_complete and (not type_.nullable or name in (key, time_column))]
        checks += [count_where(exp.Anonymous(this="list_contains", expressions=[col(name, "e"), exp.Null()]))
                   for name, type_ in columns.items() if type_.kind == "list"]
        if self.has_bad.get(table):
            checks.append(count_where(col("_mr_bad", "e")))
        view = table_ref(self.names[table], "e")
        if table == MEMBER_TABLE:
            duplicates = exp.Sub(this=exp.Count(this=exp.Star()),
                                 expression=exp.Count(this=exp.Distinct(expressions=[col(key, "e")])))
            return exp.select(count_where(None), *checks, duplicates).from_(view).sql("duckdb")
        later: exp.Expression = exp.false()
        if time_column is not None:
            # `$1`, not `?`: the joined query reads the instant twice, from one parameter.
            limit: exp.Expression = exp.Cast(this=exp.Placeholder(this="1"), to=exp.DataType.build("TIMESTAMPTZ"))
            if columns[time_column].kind == "date":
                limit = exp.Cast(this=limit, to=exp.DataType.build("DATE"))
            later = exp.GT(this=col(time_column, "e"), expression=limit)
        if not joined:
            return exp.select(count_where(None), count_where(later), exp.Literal.number(0), *checks
                              ).from_(view).sql("duckdb")
        member_key = self.tables[MEMBER_TABLE][0]
        members = exp.select(exp.alias_(col(member_key), "_mr_key", quoted=True)).from_(
            table_ref(self.names[MEMBER_TABLE]))
        unknown = exp.and_(is_null(col("_mr_key", "m")), exp.Not(this=exp.Coalesce(
            this=later.copy(), expressions=[exp.false()])))
        select = exp.select(count_where(None), count_where(later), count_where(unknown), *checks)
        select = select.from_(view).join(exp.alias_(exp.Subquery(this=members), "m", table=True),
                                         on=exp.EQ(this=col(key, "e"), expression=col("_mr_key", "m")),
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
