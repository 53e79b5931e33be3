"""Values and nearest misses in words, for `explain` (text for operators).

Pure functions: no evaluation happens here. `show` prints a value the way an
operator reads it; `needed_change` works out how far a value is from passing a
comparison, in the value's own unit (1 for an int, a cent for a 2-place decimal,
a second for a duration).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext

from .ast import quote_string

# Decimals with more places than this (averages, divisions: 18 places) are shown cut here.
SHOWN_PLACES = 2
# Below this, ints are printed bare: years, days and scores read better without commas.
_GROUPING_FROM = 10_000
_MAX_STEP_PLACES = 6

NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "==", "in": "not in", "not in": "in"}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def truth(value: object) -> str:
    """A condition's outcome in three-valued logic."""
    if value is None:
        return "unknown"
    return "true" if value else "false"


def count_words(n: int) -> str:
    """A count of members or rows: `5,120`."""
    return f"{n:,}"


def show_number(value: int | Decimal | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= _GROUPING_FROM else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return text if text not in ("-0", "") else "0"
    places = -value.as_tuple().exponent if isinstance(value.as_tuple().exponent, int) else 0
    shown = value
    cut = False
    if places > SHOWN_PLACES:
        shown = value.quantize(Decimal(1).scaleb(-SHOWN_PLACES), rounding=ROUND_DOWN)
        cut = shown != value
    grouping = "," if abs(shown) >= _GROUPING_FROM else ""
    text = f"{shown:{grouping}f}"
    # The cut is marked, so "243.33… < 243.33…" never looks like a contradiction.
    return text + "…" if cut else text


def show_duration(value: dt.timedelta) -> str:
    """`30d`, `1d 6h`, `90m`: the units of the rule language, largest first."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + " ".join(parts)


def duration_words(value: dt.timedelta) -> str:
    """`30 days`, `1 day 6 hours`, `12 hours`: a window or a needed wait, in words."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            n = seconds // size
            parts.append(f"{n:,} {unit}" + ("" if n == 1 else "s"))
            seconds %= size
    return sign + (" ".join(parts) if parts else "0 seconds")


def show_timestamp(value: dt.datetime) -> str:
    """`2026-10-20 14:03` (seconds only when there are some), in the value's own zone."""
    text = value.strftime("%Y-%m-%d %H:%M")
    if value.second or value.microsecond:
        text += value.strftime(":%S")
    return text


def show(value: object) -> str:
    """A value as an operator reads it: numbers plain, strings quoted as in rules."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return show_number(value)
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, dt.datetime):
        return show_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return show_duration(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(item) for item in value) + "]"
    return str(value)


def singular(table: str) -> str:
    """`orders` → `order`, `activities` → `activity`: the noun for one event row."""
    if table.endswith("ies") and len(table) > 3:
        return table[:-3] + "y"
    if table.endswith("s") and not table.endswith("ss"):
        return table[:-1]
    return table


def rows_of(table: str, n: int) -> str:
    """`1 order`, `9 orders`, `0 orders`."""
    one = singular(table)
    many = table if one != table else table + " rows"
    return f"{count_words(n)} {one if n == 1 else many}"


@dataclass(frozen=True)
class Change:
    """How far a value is from passing a comparison: `amount` (positive) `more` or `less`.

    `exact` is False for floats under a strict comparison: the value needs to move by
    more than `amount`, not by exactly it.
    """

    amount: int | Decimal | float | dt.timedelta
    direction: str  # "more" | "less"
    exact: bool = True

    def words(self) -> str:
        """`120`, `0.01`, `more than 0.5`, `3 days`."""
        amount = self.amount
        if isinstance(amount, dt.timedelta):
            text = duration_words(amount)
        elif isinstance(amount, Decimal):
            text = f"{amount:,f}" if abs(amount) >= _GROUPING_FROM else f"{amount:f}"
        else:
            text = show_number(amount)
        return text if self.exact else "more than " + text


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _step(value: object) -> object:
    """The smallest change of the value's kind that explain talks about."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return 1
    if isinstance(value, Decimal):
        return Decimal(1).scaleb(-min(max(_places(value), SHOWN_PLACES), _MAX_STEP_PLACES))
    if isinstance(value, dt.timedelta):
        return dt.timedelta(seconds=1)
    return None  # float: continuous


def _round_to(amount: object, step: object, up: bool) -> object:
    """`amount` rounded to a whole number of steps, up or down."""
    if isinstance(step, dt.timedelta):
        seconds = amount.total_seconds()  # type: ignore[union-attr]
        return dt.timedelta(seconds=math.ceil(seconds) if up else math.floor(seconds))
    rounding = ROUND_CEILING if up else ROUND_FLOOR
    exact = amount if isinstance(amount, Decimal) else Decimal(repr(amount) if isinstance(amount, float) else amount)
    with localcontext() as context:
        context.prec = 60
        if isinstance(step, int):
            return int(exact.to_integral_value(rounding=rounding))
        return exact.quantize(step, rounding=rounding)  # type: ignore[arg-type]


def _holds(op: str, value: object, bound: object) -> bool:
    return {"<": value < bound, "<=": value <= bound, ">": value > bound,  # type: ignore[operator]
            ">=": value >= bound, "==": value == bound, "!=": value != bound}[op]  # type: ignore[operator]


def _comparable(value: object, bound: object) -> bool:
    numbers = (int, Decimal, float)
    if isinstance(value, bool) or isinstance(bound, bool):
        return False
    if isinstance(value, numbers) and isinstance(bound, numbers):
        return True
    return isinstance(value, dt.timedelta) and isinstance(bound, dt.timedelta)


def needed_change(op: str, value: object, bound: object) -> Change | None:
    """How much `value` must move for `value op bound` to hold.

    None when it already holds, when either side is null, for `!=`, and for values
    that are not numbers or durations (dates, strings: say what is needed instead).

    >>> needed_change(">=", 9, 10)
    Change(amount=1, direction='more', exact=True)
    >>> needed_change(">", Decimal("200.00"), Decimal("243.333333333333333333")).words()
    '43.34'
    >>> needed_change("<=", 22, 15).words()
    '7'
    """
    if op not in FLIPPED or op == "!=" or value is None or bound is None:
        return None
    if not _comparable(value, bound):
        return None
    if _holds(op, value, bound):
        return None
    step = _step(value)
    if isinstance(value, float) or isinstance(bound, float):
        value, bound = float(value), float(bound)  # type: ignore[arg-type]
    with localcontext() as context:
        context.prec = 60
        raw = bound - value if op in (">", ">=", "==") else value - bound  # type: ignore[operator]
    direction = "more" if op in (">", ">=") else "less"
    if op == "==":
        direction = "less" if raw < raw * 0 else "more"
        raw = abs(raw)  # type: ignore[arg-type]
    if step is None:  # float: the distance itself, "more than" it under a strict comparison
        return Change(float(raw), direction, exact=op in ("<=", ">=", "=="))  # type: ignore[arg-type]
    if op == "==":
        # An int cannot reach `== 2.5`: no whole number of steps gets there.
        if _round_to(raw, step, up=True) != raw:
            return None
        return Change(raw, direction)  # type: ignore[arg-type]
    if op in (">=", "<="):
        amount = _round_to(raw, step, up=True)
    else:
        # Strictly past the bound: the next step beyond it.
        amount = _round_to(raw, step, up=False) + step  # type: ignore[operator]
    return Change(amount, direction)  # type: ignore[arg-type]
