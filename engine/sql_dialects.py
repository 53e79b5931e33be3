"""What differs between SQL dialects, as one table of tree builders (docs/SEMANTICS.md).

Every entry builds a sqlglot expression; `sql.py` never asks which dialect it is
compiling for. DuckDB is the reference (tests/test_engines_equal.py proves it equal to
the Python engine); Spark is checked on a local session (tests/test_sql.py, heavy).

Exact decimals: values live in DECIMAL(38, 18). Where a dialect's own decimal
division or remainder is not exact (DuckDB turns DECIMAL / DECIMAL into DOUBLE,
Spark and Trino round at their own scale), the quotient is computed on *unscaled*
integers (the value times 10^18, `Rules.unscaled`) with truncating integer division,
which every dialect has in some exact form (`Rules.int_div`), and scaled back
(`Rules.from_units`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

SCALE = 18
PRECISION = 38
ONE_UNIT = 10 ** SCALE  # one, unscaled

DIALECTS = ("duckdb", "spark", "bigquery", "snowflake", "postgres", "trino")


def dtype(text: str, dialect: str = "duckdb") -> exp.DataType:
    return exp.DataType.build(text, dialect=dialect)


def cast(node: exp.Expression, to: str | exp.DataType) -> exp.Expression:
    to = to if isinstance(to, exp.DataType) else dtype(to)
    if isinstance(node, exp.Cast) and node.to == to:
        return node
    return exp.Cast(this=node, to=to)


def fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def num(value: int) -> exp.Expression:
    """An integer literal; negative numbers as a negation, so every dialect reads them."""
    literal = exp.Literal.number(abs(value))
    return exp.Neg(this=literal) if value < 0 else literal


_COMPOUND = (exp.Binary, exp.Not, exp.Neg, exp.Is, exp.In, exp.Between)


def paren(node: exp.Expression) -> exp.Expression:
    """`node` in parentheses when it is an operator expression (sqlglot prints trees as built)."""
    return exp.Paren(this=node) if isinstance(node, _COMPOUND) else node


def parenthesize(tree: exp.Expression) -> exp.Expression:
    """Parentheses around every operator operand that is itself an operator expression, so
    the printed text means the tree whatever the dialect's precedence."""
    for node in list(tree.walk()):
        if isinstance(node, (exp.Binary, exp.Not, exp.Neg, exp.Is, exp.In)):
            for key in ("this", "expression"):
                child = node.args.get(key)
                if isinstance(child, _COMPOUND):
                    node.set(key, exp.Paren(this=child))
    return tree


# -- entries that differ ------------------------------------------------------------------------

def _duckdb_int_div(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    # HUGEINT // HUGEINT truncates toward zero, exactly (https://duckdb.org/docs/sql/functions/numeric).
    return exp.IntDiv(this=paren(a), expression=paren(b))


def _postgres_int_div(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    # div(numeric, numeric): the integer quotient, truncated toward zero, arbitrary precision.
    return fn("DIV", a, b)


def _bigquery_int_div(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    # DIV on BIGNUMERIC truncates toward zero.
    return fn("DIV", a, b)


def _exact_multiple_div(a: exp.Expression, b: exp.Expression, *, scale_type: str) -> exp.Expression:
    """Truncating division for dialects whose decimal division rounds (Spark keeps 6 digits,
    Snowflake 6 to 12, Trino max(scale)): a − a % b is an exact multiple of b (`%` is exact
    and takes a's sign), so its quotient is a whole number however the dialect rounds."""
    multiple = exp.Sub(this=paren(a), expression=paren(exp.Mod(this=paren(a.copy()), expression=paren(b))))
    return cast(exp.Div(this=paren(multiple), expression=paren(b.copy())), scale_type)


def _trunc(x: exp.Expression) -> exp.Expression:
    return fn("TRUNC", x)


def _trunc_floor_ceil(x: exp.Expression) -> exp.Expression:
    # Spark's TRUNC truncates dates; toward zero for a number is FLOOR above 0 and CEIL below.
    return exp.Case(ifs=[exp.If(this=exp.GTE(this=x, expression=num(0)), true=exp.Floor(this=x.copy()))],
                    default=exp.Ceil(this=x.copy()))


def _unscaled_split(value: exp.Expression, big: str, trunc) -> exp.Expression:
    # DuckDB keeps the scale of DECIMAL(38, 18) × 10^18 and overflows above 100: whole and
    # fraction parts are scaled apart.
    whole = trunc(value)
    fraction = exp.Mul(this=paren(exp.Sub(this=value.copy(), expression=whole.copy())),
                       expression=cast(num(ONE_UNIT), big))
    return exp.Add(this=exp.Mul(this=cast(whole, big), expression=cast(num(ONE_UNIT), big)),
                   expression=cast(fraction, big))


def _unscaled_product(value: exp.Expression, big: str, trunc) -> exp.Expression:
    # Spark, Snowflake and Trino give the product a scale that still holds a whole number.
    return cast(exp.Mul(this=paren(value), expression=cast(num(ONE_UNIT), big)), big)


def _from_units_product(units: exp.Expression, decimal: exp.DataType) -> exp.Expression:
    # An integer times 10^-18 as DECIMAL(38, 18): the unscaled product is the integer itself.
    tiny = cast(exp.Literal.string("0." + "0" * (SCALE - 1) + "1"), decimal)
    return cast(exp.Mul(this=cast(paren(units), "DECIMAL(38, 0)"), expression=tiny), decimal)


def _from_units_text(units: exp.Expression, decimal: exp.DataType) -> exp.Expression:
    # Spark gives DECIMAL(38, 0) × DECIMAL(38, 18) a scale of 6 (precision loss); the digits
    # are placed around the point as text instead, which is exact.
    # Zeros in front (LPAD would cut a longer text): at least one digit before the point.
    digits = exp.Concat(expressions=[exp.Literal.string("0" * SCALE),
                                     cast(exp.Abs(this=cast(paren(units), "DECIMAL(38, 0)")), "VARCHAR")])
    length = exp.Length(this=digits.copy())
    whole = exp.Substring(this=digits.copy(), start=num(1), length=exp.Sub(this=length, expression=num(SCALE)))
    fraction = exp.Substring(this=digits.copy(), start=exp.Sub(this=length.copy(), expression=num(SCALE - 1)),
                             length=num(SCALE))
    sign = exp.Case(ifs=[exp.If(this=exp.LT(this=paren(units.copy()), expression=num(0)),
                                true=exp.Literal.string("-"))], default=exp.Literal.string(""))
    return cast(exp.Concat(expressions=[sign, whole, exp.Literal.string("."), fraction]), decimal)


def _filter_nulls(array: exp.Expression) -> exp.Expression:
    x = exp.to_identifier("x")
    return exp.ArrayFilter(this=array,
                           expression=exp.Lambda(this=exp.Not(this=exp.Is(this=exp.column(x), expression=exp.Null())),
                                                 expressions=[x]))


def _contains_duckdb(text: exp.Expression, part: exp.Expression) -> exp.Expression:
    return fn("contains", text, part)


def _contains_strpos(text: exp.Expression, part: exp.Expression) -> exp.Expression:
    return exp.GT(this=exp.StrPosition(this=text, substr=part), expression=num(0))


def _ends_with_duckdb(text: exp.Expression, suffix: exp.Expression) -> exp.Expression:
    return fn("ends_with", text, suffix)


def _ends_with_right(text: exp.Expression, suffix: exp.Expression) -> exp.Expression:
    return exp.EQ(this=exp.Right(this=text, expression=exp.Length(this=suffix.copy())), expression=suffix)


def _epoch_us_duckdb(ts: exp.Expression) -> exp.Expression:
    return fn("epoch_us", ts)


def _epoch_us_generic(ts: exp.Expression) -> exp.Expression:
    return exp.Mul(this=cast(exp.TimeToUnix(this=ts), "BIGINT"), expression=num(1_000_000))


def _add_us_duckdb(ts: exp.Expression, micros: exp.Expression) -> exp.Expression:
    return exp.Add(this=ts, expression=fn("to_microseconds", micros))


def _add_us_generic(ts: exp.Expression, micros: exp.Expression) -> exp.Expression:
    return exp.TimestampAdd(this=ts, expression=micros, unit=exp.var("MICROSECOND"))


def _date_add_days(d: exp.Expression, days: exp.Expression) -> exp.Expression:
    # DuckDB's date + INTERVAL is a TIMESTAMP; the cast keeps a date a date.
    return cast(exp.DateAdd(this=d, expression=days, unit=exp.var("DAY")), "DATE")


def _date_diff_days(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.DateDiff(this=b, expression=a, unit=exp.var("DAY"))


def _make_date(y: exp.Expression, m: exp.Expression, d: exp.Expression) -> exp.Expression:
    return exp.DateFromParts(year=y, month=m, day=d)


def _make_date_postgres(y, m, d):
    return fn("MAKE_DATE", y, m, d)


def _iso_dow(d: exp.Expression) -> exp.Expression:
    return exp.DayOfWeekIso(this=d)


def _iso_dow_extract(d: exp.Expression) -> exp.Expression:
    return exp.Extract(this=exp.var("ISODOW"), expression=d)


def _day_of_year_extract(d: exp.Expression) -> exp.Expression:
    return exp.Extract(this=exp.var("DOY"), expression=d)


def _day_of_year(d: exp.Expression) -> exp.Expression:
    return exp.DayOfYear(this=d)


def _float_sum_duckdb(x: exp.Expression) -> exp.Expression:
    # fsum: compensated summation, as Python's sum of floats (3.12+) is; plain SUM depends on order.
    return fn("fsum", x)


def _float_sum(x: exp.Expression) -> exp.Expression:
    return exp.Sum(this=x)


def _arg_max(value: exp.Expression, by: list[exp.Expression]) -> exp.Expression:
    return exp.ArgMax(this=value, expression=exp.Tuple(expressions=by))


def _arg_min(value: exp.Expression, by: list[exp.Expression]) -> exp.Expression:
    return exp.ArgMin(this=value, expression=exp.Tuple(expressions=by))


def _arg_max_struct(value: exp.Expression, by: list[exp.Expression]) -> exp.Expression:
    return exp.ArgMax(this=value, expression=exp.Struct(expressions=by))


def _arg_min_struct(value: exp.Expression, by: list[exp.Expression]) -> exp.Expression:
    return exp.ArgMin(this=value, expression=exp.Struct(expressions=by))


def _set_time_zone_duckdb(tz: str) -> exp.Expression:
    return exp.Set(expressions=[exp.SetItem(this=exp.EQ(this=exp.column("TimeZone"),
                                                         expression=exp.Literal.string(tz)))])


def _set_time_zone_plain(tz: str) -> exp.Expression:
    return exp.Command(this="SET", expression=" TIME ZONE " + exp.Literal.string(tz).sql())


def _set_time_zone_snowflake(tz: str) -> exp.Expression:
    return exp.Command(this="ALTER", expression=" SESSION SET TIMEZONE = " + exp.Literal.string(tz).sql())


def _set_time_zone_bigquery(tz: str) -> exp.Expression:
    return exp.Command(this="SET", expression=" @@time_zone = " + exp.Literal.string(tz).sql("bigquery"))


@dataclass(frozen=True)
class Rules:
    """One dialect's entries. `int_type` holds unscaled decimals (value × 10^18) exactly."""

    name: str
    int_type: str
    int_div: Callable[[exp.Expression, exp.Expression], exp.Expression]
    decimal_type: str = f"DECIMAL({PRECISION}, {SCALE})"
    type_dialect: str = "duckdb"  # the dialect `decimal_type` is written in
    filter_nulls: Callable[[exp.Expression], exp.Expression] = _filter_nulls
    trunc: Callable[[exp.Expression], exp.Expression] = _trunc
    unscaled: Callable = _unscaled_split
    from_units: Callable = _from_units_product
    contains: Callable[[exp.Expression, exp.Expression], exp.Expression] = _contains_strpos
    ends_with: Callable[[exp.Expression, exp.Expression], exp.Expression] = _ends_with_right
    epoch_us: Callable[[exp.Expression], exp.Expression] = _epoch_us_generic
    add_us: Callable[[exp.Expression, exp.Expression], exp.Expression] = _add_us_generic
    date_add_days: Callable[[exp.Expression, exp.Expression], exp.Expression] = _date_add_days
    date_diff_days: Callable[[exp.Expression, exp.Expression], exp.Expression] = _date_diff_days
    make_date: Callable = _make_date
    iso_dow: Callable[[exp.Expression], exp.Expression] = _iso_dow
    day_of_year: Callable[[exp.Expression], exp.Expression] = _day_of_year
    float_sum: Callable[[exp.Expression], exp.Expression] = _float_sum
    arg_max: Callable = _arg_max
    arg_min: Callable = _arg_min
    set_time_zone: Callable[[str], exp.Expression] = _set_time_zone_plain
    notes: tuple[str, ...] = field(default=())


RULES: dict[str, Rules] = {
    "duckdb": Rules(
        "duckdb", "HUGEINT", _duckdb_int_div, contains=_contains_duckdb, ends_with=_ends_with_duckdb,
        epoch_us=_epoch_us_duckdb, add_us=_add_us_duckdb, float_sum=_float_sum_duckdb,
        set_time_zone=_set_time_zone_duckdb,
        notes=("exact: proven equal to the Python engine by tests/test_engines_equal.py",)),
    "spark": Rules(
        "spark", "DECIMAL(38, 0)",
        lambda a, b: _exact_multiple_div(a, b, scale_type="DECIMAL(38, 0)"), unscaled=_unscaled_product,
        arg_max=_arg_max_struct, arg_min=_arg_min_struct, trunc=_trunc_floor_ceil, from_units=_from_units_text,
        notes=("run with spark.sql.ansi.enabled=false so that a failed cast is null",)),
    "bigquery": Rules(
        "bigquery", "BIGNUMERIC", _bigquery_int_div, decimal_type="BIGNUMERIC", type_dialect="bigquery",
        make_date=_make_date, set_time_zone=_set_time_zone_bigquery,
        notes=("BIGNUMERIC holds 38 digits after the point; results are truncated to 18",)),
    "snowflake": Rules(
        "snowflake", "NUMBER(38, 0)",
        lambda a, b: _exact_multiple_div(a, b, scale_type="NUMBER(38, 0)"), unscaled=_unscaled_product,
        set_time_zone=_set_time_zone_snowflake),
    "postgres": Rules(
        # Not bare NUMERIC: type strings are read as DuckDB's, where NUMERIC means DECIMAL(18, 3)
        # (numeric field overflow on a real server). 1000 digits is Postgres's own maximum.
        "postgres", "DECIMAL(1000, 0)", _postgres_int_div, make_date=_make_date_postgres, iso_dow=_iso_dow_extract,
        day_of_year=_day_of_year_extract),
    "trino": Rules(
        "trino", "DECIMAL(38, 0)",
        lambda a, b: _exact_multiple_div(a, b, scale_type="DECIMAL(38, 0)"), unscaled=_unscaled_product,
        make_date=lambda y, m, d: fn("date", fn("format", exp.Literal.string("%04d-%02d-%02d"), y, m, d))),
}


def rules_for(dialect: str) -> Rules:
    try:
        return RULES[dialect]
    except KeyError:
        raise ValueError(f"unknown SQL dialect '{dialect}'; one of {', '.join(DIALECTS)}") from None
