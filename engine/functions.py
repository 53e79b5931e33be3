"""The scalar functions of the language (SPEC §3): how each is typed.

Each backend implements them separately (eval.py, sql.py); this table is what
the checker and the docs know about them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import types as t


class FunctionError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Function:
    name: str
    usage: str
    summary: str
    typer: Callable[[Sequence[t.Type], Sequence], t.Type]

    def result(self, arg_types: Sequence[t.Type], args: Sequence) -> t.Type:
        return self.typer(arg_types, args)


def _arity(types: Sequence[t.Type], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(types) <= high:
        wanted = str(low) if low == high else f"{low} to {high}" if high < 99 else f"at least {low}"
        raise FunctionError(f"takes {wanted} argument(s), got {len(types)}")


def _nullable(types: Sequence[t.Type]) -> bool:
    return any(ty.nullable for ty in types)


def _need(ty: t.Type, kinds: tuple[str, ...], what: str) -> None:
    if ty.kind not in kinds + ("null",):
        raise FunctionError(f"needs {what}, got {ty}")


_TIME = ("date", "timestamp")


def _days_between(types, args):
    _arity(types, 2)
    for ty in types:
        _need(ty, _TIME, "a date or timestamp")
    return t.INT.with_null(_nullable(types))


def _date_part(types, args):
    _arity(types, 1)
    _need(types[0], _TIME, "a date or timestamp")
    return t.INT.with_null(_nullable(types))


def _date(types, args):
    _arity(types, 1)
    _need(types[0], _TIME, "a timestamp")
    return t.DATE.with_null(_nullable(types))


def _common_type(types) -> t.Type:
    """The one kind all arguments share (ints widen to decimals, as in arithmetic)."""
    result = types[0]
    for ty in types[1:]:
        combined = t.unify(result, ty)
        if combined is None:
            raise FunctionError(f"needs arguments of one kind, got {result} and {ty}")
        result = combined
    return result


def _coalesce(types, args):
    _arity(types, 2, 99)
    return _common_type(types).with_null(all(ty.nullable for ty in types))


def _nullif(types, args):
    _arity(types, 2)
    if not t.comparable(types[0], types[1]):
        raise FunctionError(f"compares its arguments, but {types[0]} and {types[1]} do not compare")
    return types[0].with_null()


def _least_greatest(types, args):
    _arity(types, 2, 99)
    for ty in types:
        _need(ty, t.ORDERED_KINDS, "values that can be ordered")
    return _common_type(types).with_null(_nullable(types))


def _round(types, args):
    _arity(types, 1, 2)
    _need(types[0], t.NUMERIC_KINDS, "a number")
    if len(types) == 2:
        from . import ast  # the digits must be a literal so every backend rounds alike

        digits = args[1]
        if not (isinstance(digits, ast.Literal) and digits.kind == "int" and digits.value <= 18):
            raise FunctionError("the number of digits must be a whole number from 0 to 18, such as 2")
        return types[0].with_null(_nullable(types)) if types[0].kind != "null" else t.NULL
    # round(x) is a whole number: the way to turn spend into points.
    return t.INT.with_null(_nullable(types))


def _abs(types, args):
    _arity(types, 1)
    _need(types[0], t.NUMERIC_KINDS + ("duration",), "a number")
    return types[0]


def _string_to_string(types, args):
    _arity(types, 1)
    _need(types[0], ("string",), "a string")
    return t.STRING.with_null(_nullable(types))


def _string_test(types, args):
    _arity(types, 2)
    for ty in types:
        _need(ty, ("string",), "strings")
    return t.BOOL.with_null(_nullable(types))


def _length(types, args):
    _arity(types, 1)
    _need(types[0], ("string", "list"), "a string or a list")
    return t.INT.with_null(_nullable(types))


def _days(types, args):
    _arity(types, 1)
    _need(types[0], ("duration",), "a duration")
    return t.INT.with_null(_nullable(types))


FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("days_between", "days_between(a, b)",
             "calendar days from a to b in the rule set's timezone (b later: positive)", _days_between),
    Function("day_of_month", "day_of_month(d)", "1–31", _date_part),
    Function("day_of_year", "day_of_year(d)", "1–366", _date_part),
    Function("day_of_week", "day_of_week(d)", "1 (Monday) – 7 (Sunday)", _date_part),
    Function("month", "month(d)", "1–12", _date_part),
    Function("year", "year(d)", "the year", _date_part),
    Function("hour", "hour(ts)", "0–23, in the rule set's timezone", _date_part),
    Function("days_until_anniversary", "days_until_anniversary(d)",
             "days from as_of to the next anniversary of d (0 on the day; 29 Feb is 28 Feb in other years)",
             _date_part),
    Function("date", "date(ts)", "the calendar date of a timestamp in the rule set's timezone", _date),
    Function("days", "days(duration)", "whole days of a duration", _days),
    Function("coalesce", "coalesce(a, b, …)", "the first argument that is not null", _coalesce),
    Function("nullif", "nullif(a, b)", "null when a equals b, else a (e.g. leave zeros out of a ranking)",
             _nullif),
    Function("min", "min(a, b, …)", "the smallest of several values (null if any is null)", _least_greatest),
    Function("max", "max(a, b, …)", "the largest of several values (null if any is null)", _least_greatest),
    Function("round", "round(x) or round(x, 2)",
             "half away from zero; round(x) is an int, round(x, n) keeps x's type", _round),
    Function("abs", "abs(x)", "absolute value", _abs),
    Function("lower", "lower(s)", "lower case", _string_to_string),
    Function("upper", "upper(s)", "upper case", _string_to_string),
    Function("contains", "contains(text, part)", "whether text contains part", _string_test),
    Function("starts_with", "starts_with(text, prefix)", "whether text starts with prefix", _string_test),
    Function("ends_with", "ends_with(text, suffix)", "whether text ends with suffix", _string_test),
    Function("length", "length(s)", "characters of a string, or items of a list", _length),
)}
