"""The values and functions generated evaluation code calls (docs/SEMANTICS.md).

Every helper is total: it returns a value or null (None) for any input of the types
the checker allows, so a member's evaluation never stops half way. Helpers that need
the rule set's timezone are built by `runtime_namespace(tz)`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, getcontext, localcontext
from fractions import Fraction
from zoneinfo import ZoneInfo

UTC = timezone.utc

# Decimal arithmetic runs in this context (evaluate() enters it): 100 significant digits
# keep sums and products of money exact; only division truncates, explicitly, at 18 places.
DECIMAL_CONTEXT = Context(prec=100, rounding=ROUND_DOWN, Emax=999_999, Emin=-999_999)
DIVISION_PLACES = 18
_QUANTUM = Decimal(1).scaleb(-DIVISION_PLACES)
_ZERO = Decimal(0)


def decimal_context():
    """The context manager every evaluation runs in. Code that calls `expr_function`s for
    many members can enter it once around the loop; each call then skips entering it."""
    return localcontext(DECIMAL_CONTEXT)


def in_decimal_context() -> bool:
    """Whether decimal arithmetic already runs with the evaluation's precision and rounding."""
    context = getcontext()
    return (context.prec == DECIMAL_CONTEXT.prec and context.rounding == DECIMAL_CONTEXT.rounding
            and context.Emax == DECIMAL_CONTEXT.Emax and context.Emin == DECIMAL_CONTEXT.Emin)


def truncate(value: Decimal, places: int = DIVISION_PLACES) -> Decimal:
    """`value` truncated toward zero at `places` digits after the point."""
    return value.quantize(_QUANTUM if places == DIVISION_PLACES else Decimal(1).scaleb(-places),
                          rounding=ROUND_DOWN)


def divide(a, b):
    """`a / b`: decimal truncated at 18 places, float when either side is a float, null on 0."""
    if a is None or b is None or not b:
        return None
    if type(a) is float or type(b) is float:
        return float(a) / float(b)
    return truncate(Decimal(a) / Decimal(b))


def modulo(a, b):
    """`a % b` with the sign of `a`, as SQL does; null when `b` is 0."""
    if a is None or b is None or not b:
        return None
    if type(a) is int and type(b) is int:
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    # Decimal's % already takes the sign of the dividend.
    return Decimal(a) % Decimal(b)


def average(total, count: int, as_float: bool):
    """`avg`: the exact sum over the count, truncated like division; null for no values."""
    if not count:
        return None
    if as_float:
        return float(total) / count
    return truncate(Decimal(total) / count)


def round_half_away(x, digits: int = 0):
    """`round(x, n)`: half away from zero, keeping the kind of `x`."""
    if x is None:
        return None
    if type(x) is float:
        if not math.isfinite(x):
            return x
        # The float's exact binary value is rounded, as SQL engines round a DOUBLE: 2.675 is
        # 2.67499999999999982… and rounds to 2.67.
        return float(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    rounded = Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if type(x) is int:
        return int(rounded)
    return rounded


def round_to_int(x):
    """`round(x)`: half away from zero, to an int (null for a float that is not finite)."""
    if x is None:
        return None
    if type(x) is int:
        return x
    if type(x) is float and not math.isfinite(x):
        return None
    return int(round_half_away(x, 0))


def absolute(x):
    return None if x is None else abs(x)


def least(*values):
    """`min(a, b, …)` of values: null when any is null."""
    if None in values:
        return None
    return min(values)


def greatest(*values):
    if None in values:
        return None
    return max(values)


def contained(x, values):
    """`x in list` in three-valued logic: null when x is null, or not found in a list holding null."""
    if x is None or values is None:
        return None
    if x in values:
        return True
    return None if None in values else False


def not_contained(x, values):
    found = contained(x, values)
    return None if found is None else not found


def length(x):
    return None if x is None else len(x)


def lower(x):
    return None if x is None else x.lower()


def upper(x):
    return None if x is None else x.upper()


def contains(text, part):
    return None if text is None or part is None else part in text


def starts_with(text, prefix):
    return None if text is None or prefix is None else text.startswith(prefix)


def ends_with(text, suffix):
    return None if text is None or suffix is None else text.endswith(suffix)


def whole_days(d: timedelta | None):
    """`days(d)`: whole days of a duration, truncated toward zero."""
    if d is None:
        return None
    seconds = d.days * 86400 + d.seconds
    return seconds // 86400 if seconds >= 0 else -((-seconds) // 86400)


def anniversary(d: date, year: int) -> date:
    """The month/day of `d` in `year`; 29 February falls on 28 February in other years."""
    if d.month == 2 and d.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return d.replace(year=year)


@dataclass(frozen=True)
class Ranks:
    """The sorted non-null values of a ranked expression over all members.

    rank, ntile and percent_rank of a member depend only on its own value, so they
    are looked up here by bisection (docs/SEMANTICS.md, "Population aggregates and ranks").
    """

    values: tuple

    @property
    def count(self) -> int:
        return len(self.values)

    def rank(self, x):
        """1 + the number of members with a strictly larger value."""
        if x is None:
            return None
        return 1 + len(self.values) - bisect.bisect_right(self.values, x)

    def ntile(self, x, buckets: int):
        """⌈n·c / N⌉ with c the number of members whose value ≤ x."""
        if x is None or not self.values:
            return None
        c = bisect.bisect_right(self.values, x)
        return -((-buckets * c) // len(self.values))

    def percent_rank(self, x):
        """(r − 1)/(N − 1) with r = 1 + the number of members with a strictly smaller value."""
        if x is None or not self.values:
            return None
        n = len(self.values)
        if n == 1:
            return 0.0
        return bisect.bisect_left(self.values, x) / (n - 1)

    def __str__(self) -> str:
        return f"ranks over {len(self.values):,} members"


def population_value(func: str, pairs: list, kind: str, fraction=None):
    """An aggregate over members: `pairs` holds (x, where) of every member.

    Returns the aggregate and the number of non-null x that went into it.
    """
    values = [x for x, keep in pairs if keep is True and x is not None]
    n = len(values)
    if func == "count":
        return n, n
    if func == "sum":
        start = 0.0 if kind == "float" else (_ZERO if kind == "decimal" else 0)
        return sum(values, start), n
    if func == "avg":
        return average(sum(values, 0.0 if kind == "float" else 0), n, kind == "float"), n
    if not values:
        return None, 0
    if func == "min":
        return min(values), n
    if func == "max":
        return max(values), n
    if func == "quantile":
        values.sort()
        q = Decimal(fraction)
        position = max(1, math.ceil(q * n))  # nearest rank; v1 for q = 0
        return values[position - 1], n
    raise ValueError(f"unknown population aggregate {func}")


def ranks_of(values: list) -> Ranks:
    return Ranks(tuple(sorted(v for v in values if v is not None)))


class TierRule:
    """The tier columns of one member from the `by` value (docs/SEMANTICS.md "Tiers")."""

    def __init__(self, names: tuple[str, ...], mins: tuple, forecast_days: Fraction | None):
        self.names = names
        self.mins = mins
        self.index = {name: i for i, name in enumerate(names)}
        self.forecast_days = forecast_days
        self._integral = all(type(low) is int for low in mins)
        self._shares: dict[int, Decimal] = {}

    def earned(self, by) -> int:
        if by is None:
            return 0
        return max(bisect.bisect_right(self.mins, by) - 1, 0)

    def held(self, current) -> int | None:
        return self.index.get(current) if isinstance(current, str) else None

    def result(self, by, current, downgrade, earned_growth) -> tuple:
        """(tier, next_tier, tier_gap, tier_progress, days_to_next_tier) of a member whose `by`
        value is `by` and who held the tier named `current` before this run."""
        names, mins = self.names, self.mins
        i = 0 if by is None else bisect.bisect_right(mins, by) - 1
        if i < 0:
            i = 0
        held = self.index.get(current) if current is not None else None
        if held is not None and held > i and downgrade is not True:
            i = held
        if i + 1 >= len(names):
            return names[i], None, None, None, None
        if by is None:
            return names[i], names[i + 1], None, None, None
        low, high = mins[i], mins[i + 1]
        gap = high - by
        if gap < 0:
            gap = 0
        days = None
        window = self.forecast_days
        if window is not None and earned_growth is not None and earned_growth > 0:
            # ⌈gap / (earned / window days)⌉ = ⌈gap · days / earned⌉, in exact integers.
            gap_n, gap_d = _ratio(gap)
            earned_n, earned_d = _ratio(earned_growth)
            days = -(-(gap_n * window.numerator * earned_d) // (gap_d * window.denominator * earned_n))
        return names[i], names[i + 1], gap, self._progress(by, low, high), days

    def _progress(self, by, low, high) -> Decimal:
        """(by − low) / (high − low) clamped to [0, 1], truncated at 4 places."""
        if by <= low:
            ten_thousandths = 0
        elif by >= high:
            ten_thousandths = 10000
        elif type(by) is int and self._integral:
            ten_thousandths = (by - low) * 10000 // (high - low)
        else:
            ten_thousandths = math.floor((Fraction(by) - Fraction(low)) * 10000 / (Fraction(high) - Fraction(low)))
        share = self._shares.get(ten_thousandths)
        if share is None:
            share = self._shares[ten_thousandths] = Decimal(ten_thousandths).scaleb(-4)
        return share


def _ratio(x) -> tuple[int, int]:
    """A number as an exact fraction (numerator, denominator)."""
    if type(x) is int:
        return x, 1
    return x.as_integer_ratio()


def runtime_namespace(tz: ZoneInfo) -> dict[str, object]:
    """The globals of generated code: helpers, plus those that read dates in `tz`."""

    def local_date(x):
        """`date(x)`: the calendar day of a timestamp in the rule set's timezone."""
        if x is None:
            return None
        if type(x) is datetime:
            return x.astimezone(tz).date() if x.tzinfo is not tz else x.date()
        return x

    def to_timestamp(x):
        """A date stands for midnight of that day in the rule set's timezone."""
        if x is None or type(x) is datetime:
            return x
        return datetime.combine(x, time(), tz)

    def day_start(d, days: int = 0):
        """Midnight starting the day `days` after date `d`, in the rule set's timezone."""
        return datetime.combine(d + timedelta(days=days), time(), tz)

    def localize(x: datetime) -> datetime:
        return x.replace(tzinfo=tz) if x.tzinfo is None else x.astimezone(tz)

    def ts_add(ts, d):
        """Timestamp plus duration, absolute (as in UTC), read back in the rule set's zone."""
        if ts is None or d is None:
            return None
        return (ts.astimezone(UTC) + d).astimezone(tz)

    def ts_sub(a, b):
        """Timestamp minus timestamp: the absolute duration between them."""
        if a is None or b is None:
            return None
        return a.astimezone(UTC) - b.astimezone(UTC)

    def date_add(d, delta):
        """A date moves by the duration's whole days."""
        if d is None or delta is None:
            return None
        return d + timedelta(days=whole_days(delta))

    def date_sub(a, b):
        if a is None or b is None:
            return None
        return timedelta(days=(a - b).days)

    def date_diff(a, b):
        """Days from calendar day `a` to calendar day `b`."""
        if a is None or b is None:
            return None
        return (b - a).days

    def days_between(a, b):
        if a is None or b is None:
            return None
        return (local_date(b) - local_date(a)).days

    def day_of_month(x):
        return None if x is None else local_date(x).day

    def day_of_year(x):
        return None if x is None else local_date(x).timetuple().tm_yday

    def day_of_week(x):
        return None if x is None else local_date(x).isoweekday()

    def month(x):
        return None if x is None else local_date(x).month

    def year(x):
        return None if x is None else local_date(x).year

    def hour(x):
        if x is None:
            return None
        return x.astimezone(tz).hour if type(x) is datetime else 0

    def days_until_anniversary(x, today: date):
        if x is None:
            return None
        d = local_date(x)
        upcoming = anniversary(d, today.year)
        if upcoming < today:
            upcoming = anniversary(d, today.year + 1)
        return (upcoming - today).days

    namespace: dict[str, object] = {
        "__builtins__": {},
        "Decimal": Decimal, "float": float, "len": len,
        "divide": divide, "modulo": modulo, "average": average, "truncate": truncate,
        "round_half_away": round_half_away, "round_to_int": round_to_int, "absolute": absolute,
        "least": least, "greatest": greatest,
        "contained": contained, "not_contained": not_contained, "length": length, "lower": lower,
        "upper": upper, "contains": contains, "starts_with": starts_with, "ends_with": ends_with,
        "whole_days": whole_days, "local_date": local_date, "to_timestamp": to_timestamp,
        "localize": localize, "day_start": day_start, "ts_add": ts_add, "ts_sub": ts_sub,
        "date_add": date_add, "date_sub": date_sub, "date_diff": date_diff, "days_between": days_between,
        "day_of_month": day_of_month, "day_of_year": day_of_year, "day_of_week": day_of_week,
        "month": month, "year": year, "hour": hour, "days_until_anniversary": days_until_anniversary,
    }
    return namespace
