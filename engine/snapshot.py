"""A member snapshot (one file per schema table: CSV, JSONL or Parquet) read into typed rows.

Every value is read by one set of rules (`parse_value` for text, `_from_python` for
JSON and Parquet values), so the same data in any of the three formats gives an
equal `Snapshot`. The fast paths below only decide how often those rules run:
columns are converted whole, and a text column with repeated values (member keys,
categories, amounts) is dictionary-encoded by Arrow so each distinct text is
parsed once.

Problems with a file or its columns are fatal (MR501, MR502). Problems with a
row (MR503 bad value, MR504 duplicate member key, MR505 malformed record) fail
the read by default, or with `on_bad_row="skip"` are set aside as `RejectedRow`s,
so that for every table rows read = rows kept + rows rejected (+ event rows
dropped for an unknown member or a time after `as_of`, SPEC §4).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import itertools
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo

from .errors import Diagnostic, DiagnosticError, Span, did_you_mean
from .model import TableSchema
from .types import Type, parse_type

MEMBER_TABLE = "member"
SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
MAX_ROW_ERRORS = 20
BATCH_ROWS = 65_536
_CSV_BLOCK_BYTES = 8 << 20
_SHOW_CHARS = 40


@dataclass
class RejectedRow:
    """A row set aside under `on_bad_row="skip"`: where it was, why, and its cells as text.

    `column` is None for a malformed record (a CSV line with the wrong number of
    fields, a JSONL line that is not an object); its text is then in `raw["_record"]`.
    """

    table: str
    file: str
    row: int
    column: str | None
    reason: str
    raw: dict[str, str | None]


@dataclass
class SnapshotStats:
    """Row counts per table; `rejected` counts rows of all tables."""

    rows_read: dict[str, int]
    rejected: int
    events_unknown_member: dict[str, int]
    events_after_as_of: dict[str, int]


@dataclass
class Snapshot:
    """Typed rows of one snapshot.

    `members` holds one dict per member (every column of the member table), sorted
    by member key. `events` maps each event table to member key → rows, in the
    order of `members`; each member's rows are sorted by the table's time column,
    ties kept in file order.
    """

    members: list[dict]
    events: dict[str, dict[object, list[dict]]]
    stats: SnapshotStats
    rejects: list[RejectedRow] = field(default_factory=list)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Creating millions of rows would otherwise trigger collections that each walk
    every object made so far; that walking, not the parsing, dominates a load.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Values: text (CSV cells, JSON strings) and Python values (JSON, Parquet) → typed values.

_INT_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DURATION_RE = re.compile(r"(?P<sign>[+-]?)(?P<parts>(?:[0-9]+(?:ms|w|d|h|m|s))+)")
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|w|d|h|m|s)")
_ISO_DURATION_RE = re.compile(
    r"(?P<sign>[+-]?)P(?!$)(?:(?P<w>[0-9]+)W)?(?:(?P<d>[0-9]+)D)?"
    r"(?:T(?=[0-9])(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:\.[0-9]{1,6})?)S)?)?")
_DURATION_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
                   "m": timedelta(minutes=1), "s": timedelta(seconds=1), "ms": timedelta(milliseconds=1)}
_TRUE = frozenset(("true", "1"))
_FALSE = frozenset(("false", "0"))
_KIND_WORDS = {"int": "an integer", "decimal": "a decimal number", "float": "a number", "string": "a string",
               "bool": "true or false", "date": "a date", "timestamp": "a timestamp",
               "duration": "a duration", "list": "a list"}


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _SHOW_CHARS:
        text = text[:_SHOW_CHARS - 1] + "…"
    return f"'{text}'"


def _parse_int(text: str) -> int:
    text = text.strip()
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} is not an integer")
    return int(text)


def _parse_decimal(text: str) -> Decimal:
    text = text.strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} is not a decimal number")
    return Decimal(text)


def _parse_float(text: str) -> float:
    text = text.strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} is not a number")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{_show(text)} is too large for a float")
    return value


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{_show(text)} is not a bool (expected true, false, 1 or 0)")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{_show(text)} is not a date (expected YYYY-MM-DD)") from None


def _timestamp_parser(tz: ZoneInfo) -> Callable[[str], datetime]:
    fromisoformat = datetime.fromisoformat

    def parse(text: str) -> datetime:
        try:
            value = fromisoformat(text)
        except ValueError:
            try:
                value = fromisoformat(text.strip())
            except ValueError:
                raise ValueError(f"{_show(text)} is not a timestamp (expected ISO 8601, "
                                 "e.g. 2026-11-01T09:30:00+08:00)") from None
        # SPEC §4: a timestamp without an offset is wall time in the rule set's timezone.
        try:
            return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)
        except OverflowError:
            raise ValueError(f"{_show(text)} is out of range") from None

    return parse


def _parse_duration(text: str) -> timedelta:
    stripped = text.strip()
    try:
        match = _DURATION_RE.fullmatch(stripped)
        if match:
            total = sum((int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART_RE.findall(match["parts"])),
                        timedelta())
            return -total if match["sign"] == "-" else total
        match = _ISO_DURATION_RE.fullmatch(stripped)
        if match and any(match[g] for g in "wdhms"):
            micros = int(Decimal(match["s"] or 0) * 1_000_000)
            total = timedelta(weeks=int(match["w"] or 0), days=int(match["d"] or 0), hours=int(match["h"] or 0),
                              minutes=int(match["m"] or 0), microseconds=micros)
            return -total if match["sign"] == "-" else total
    except OverflowError:
        raise ValueError(f"{_show(text)} is too long for a duration") from None
    raise ValueError(f"{_show(text)} is not a duration (expected e.g. 30d, 12h, 1d6h, 90m or P1DT6H)")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _load_json(text: str) -> object:
    # Floats are read from their text as Decimal, so 19.90 stays exact (SPEC §4).
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None


def _parse_list(text: str, item: Type, tz: ZoneInfo) -> list:
    try:
        value = _load_json(text)
    except ValueError:
        raise ValueError(f"{_show(text)} is not a JSON array (expected e.g. [\"vip\", \"new\"])") from None
    if not isinstance(value, list):
        raise ValueError(f"{_show(text)} is not a JSON array (expected e.g. [\"vip\", \"new\"])")
    return _list_items(value, item, tz)


def _list_items(values: list, item: Type, tz: ZoneInfo) -> list:
    items = []
    for position, value in enumerate(values, 1):
        if value is None:
            if not item.nullable:
                raise ValueError(f"list item {position} is null (declare the item type as {item.kind}? to allow it)")
            items.append(None)
            continue
        try:
            converted = _from_python(value, item, tz)
        except ValueError as error:
            raise ValueError(f"list item {position}: {error}") from None
        if converted is None and not item.nullable:
            raise ValueError(f"list item {position} is empty")
        items.append(converted)
    return items


def _text_parser(type_: Type, tz: ZoneInfo) -> Callable[[str], object]:
    """Non-empty text → value of the type's kind, or ValueError with the reason."""
    kind = type_.kind
    if kind == "timestamp":
        return _timestamp_parser(tz)
    if kind == "list":
        item = type_.item or Type("string")
        return lambda text: _parse_list(text, item, tz)
    parsers: dict[str, Callable[[str], object]] = {
        "int": _parse_int, "decimal": _parse_decimal, "float": _parse_float, "bool": _parse_bool,
        "date": _parse_date, "duration": _parse_duration, "string": str}
    return parsers[kind]


def parse_value(text: str | None, type_: Type, tz: ZoneInfo) -> object:
    """One CSV cell (or JSON string) as a value of `type_`.

    Empty text is null for a nullable type, "" for `string`, and an error otherwise.
    Timestamps without an offset are read in `tz`; all are returned in `tz`.

    Args:
        text: the cell; None is treated as empty.
        type_: the schema type, e.g. `parse_type("decimal?")`.
        tz: the rule set's timezone.

    Returns:
        int, Decimal, float, str, bool, date, datetime (aware, in `tz`), timedelta, list or None.

    Raises:
        ValueError: the text is not a value of the type; the message says why.

    >>> parse_value("19.90", parse_type("decimal"), ZoneInfo("UTC"))
    Decimal('19.90')
    >>> parse_value("2026-11-01 09:30", parse_type("timestamp"), ZoneInfo("Asia/Shanghai")).isoformat()
    '2026-11-01T09:30:00+08:00'
    >>> parse_value("", parse_type("date?"), ZoneInfo("UTC")) is None
    True
    """
    if not text:
        return _empty(type_)
    return _text_parser(type_, tz)(text)


def _empty(type_: Type) -> object:
    if type_.nullable:
        return None
    if type_.kind == "string":
        return ""
    raise ValueError(f"missing value (the column is {type_}, not {type_.with_null()})")


def _from_python(value: object, type_: Type, tz: ZoneInfo) -> object:
    """A non-null JSON or Parquet value as a value of `type_`; strings are read as text."""
    kind = type_.kind
    if isinstance(value, str):
        if kind == "string":
            return value
        return parse_value(value, type_, tz)
    expected = _KIND_WORDS.get(kind, kind)
    if isinstance(value, bool):
        if kind == "bool":
            return value
    elif isinstance(value, int):
        if kind == "int":
            return value
        if kind == "decimal":
            return Decimal(value)
        if kind == "float":
            return _finite(float(value), value)
    elif isinstance(value, Decimal):
        if kind == "decimal":
            return value
        if kind == "float":
            return _finite(float(value), value)
        if kind == "int":
            raise ValueError(f"{_show(str(value))} is not an integer")
    elif isinstance(value, float):
        if kind == "float":
            return _finite(value, value)
        if kind == "decimal":
            raise ValueError(f"{value!r} is a binary float; decimals must be exact (write them as text or decimal)")
    elif isinstance(value, datetime):
        if kind == "timestamp":
            return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)
    elif isinstance(value, date):
        if kind == "date":
            return value
    elif isinstance(value, timedelta):
        if kind == "duration":
            return value
    elif isinstance(value, list):
        if kind == "list":
            return _list_items(value, type_.item or Type("string"), tz)
    raise ValueError(f"expected {expected}, got {_describe(value)}")


def _finite(number: float, value: object) -> float:
    # As for text, where "nan" and "inf" are not numbers: null is how data says "no value".
    if not math.isfinite(number):
        raise ValueError(f"{_show(str(value))} is not a finite number")
    return number


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime):
        return f"the timestamp {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    return _show(str(value))


def _raw_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# Columns: whole lists of values converted at once; errors map row index → reason.

Converted = tuple[list, dict[int, str]]


def _convert_each(values: list, convert: Callable[[object], object]) -> Converted:
    try:
        return list(map(convert, values)), {}
    except (ValueError, ArithmeticError, OverflowError):
        pass
    out: list = []
    errors: dict[int, str] = {}
    for index, value in enumerate(values):
        try:
            out.append(convert(value))
        except (ValueError, ArithmeticError, OverflowError) as error:
            out.append(None)
            errors[index] = str(error) or f"{_show(value)} cannot be read"
    return out, errors


def _text_converter(type_: Type, tz: ZoneInfo, is_key: bool) -> Callable[[object], object]:
    """Cell text (or None) → value, with the empty-cell rules of `parse_value`."""
    parse = _text_parser(type_, tz)
    if is_key:
        def convert_key(text):
            if not text or not text.strip():
                raise ValueError("missing member key")
            return parse(text)
        return convert_key
    if type_.kind == "string":
        return (lambda text: text or None) if type_.nullable else (lambda text: "" if text is None else text)
    if type_.nullable:
        return lambda text: parse(text) if text else None
    missing = f"missing value (the column is {type_}, not {type_.with_null()})"

    def convert(text):
        if text:
            return parse(text)
        raise ValueError(missing)
    return convert


def _python_converter(type_: Type, tz: ZoneInfo, is_key: bool) -> Callable[[object], object]:
    missing = "missing member key" if is_key else f"missing value (the column is {type_}, not {type_.with_null()})"

    def convert(value):
        if value is None:
            if type_.nullable and not is_key:
                return None
            raise ValueError(missing)
        result = _from_python(value, type_, tz)
        if is_key and (result is None or result == ""):
            raise ValueError(missing)
        return result
    return convert


# Fast paths in Arrow for the common shapes of cells; anything else (and every
# error) takes the per-value path, so both give the same values. The patterns
# admit only text that Arrow and Python read alike (no hour 24, no second 60).
_ARROW_NUMBER_RE = {
    "int": r"^[+-]?[0-9]+$",
    "decimal": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
    "float": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
}
_ARROW_WALL_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
_ARROW_INSTANT_RE = _ARROW_WALL_TIME + r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
_ARROW_NAIVE_RE = _ARROW_WALL_TIME + "$"
_NUMBER_TYPES = {"int": int, "decimal": Decimal, "float": float}


def _fast_numbers(array, type_: Type) -> list | None:
    import pyarrow.compute as pc

    if array.null_count or not pc.all(pc.match_substring_regex(array, _ARROW_NUMBER_RE[type_.kind])).as_py():
        return None
    values = list(map(_NUMBER_TYPES[type_.kind], array.to_pylist()))
    if type_.kind == "float" and any(math.isinf(value) for value in values):
        return None
    return values


def _fast_timestamps(array, type_: Type, tz: ZoneInfo) -> list | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if array.null_count:
        return None
    empty = pc.equal(array, "")
    empties = pc.sum(empty).as_py() or 0
    if empties and not type_.nullable:
        return None
    if empties == len(array):
        return [None] * len(array)
    if empties:
        array = pc.if_else(empty, pa.scalar(None, pa.string()), array)
    try:
        if pc.all(pc.match_substring_regex(array, _ARROW_INSTANT_RE)).as_py():
            values, errors = _datetimes(array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), tz, instant=True)
        elif pc.all(pc.match_substring_regex(array, _ARROW_NAIVE_RE)).as_py():
            values, errors = _datetimes(array.cast(pa.timestamp("us")).cast(pa.int64()), tz, instant=False)
        else:
            return None
    except pa.ArrowInvalid:
        return None  # e.g. 2026-02-30: the per-value path says which row and why
    return None if errors else values


_UTC = ZoneInfo("UTC")
_EPOCH = datetime(1970, 1, 1)


def _datetimes(micros, tz: ZoneInfo, instant: bool) -> Converted:
    """Arrow int64 microseconds → aware datetimes in `tz`.

    `instant`: microseconds since the epoch (UTC); otherwise wall time in `tz`.
    Built from integers because Arrow's own zoned datetimes cost microseconds each.
    """
    import pyarrow.compute as pc

    fromtimestamp = datetime.fromtimestamp
    seconds = pc.divide(micros, 1_000_000)
    if pc.all(pc.equal(pc.multiply(seconds, 1_000_000), micros)).as_py() is not False:
        try:
            if instant:
                return [None if s is None else fromtimestamp(s, tz) for s in seconds.to_pylist()], {}
            return [None if s is None else fromtimestamp(s, _UTC).replace(tzinfo=tz)
                    for s in seconds.to_pylist()], {}
        except (ValueError, OverflowError):
            pass  # a year outside 1…9999: found row by row below

    def convert(value: int | None) -> datetime | None:
        if value is None:
            return None
        try:
            if instant:
                whole, micro = divmod(value, 1_000_000)
                return fromtimestamp(whole, tz).replace(microsecond=micro)
            return (_EPOCH + timedelta(microseconds=value)).replace(tzinfo=tz)
        except (ValueError, OverflowError):
            raise ValueError("the timestamp is outside the years 1 to 9999") from None
    return _convert_each(micros.to_pylist(), convert)


def _convert_texts(array, type_: Type, tz: ZoneInfo, is_key: bool) -> Converted:
    """An Arrow string array (CSV cells) → values; each distinct text is parsed once."""
    import pyarrow.compute as pc

    convert = _text_converter(type_, tz, is_key)
    if type_.kind == "timestamp" and not is_key and len(array) >= 64:
        values = _fast_timestamps(array, type_, tz)
        if values is not None:
            return values, {}
    if len(array) < 64:
        return _convert_each(array.to_pylist(), convert)
    encoded = pc.dictionary_encode(array)
    distinct = encoded.dictionary
    if len(distinct) * 3 > len(array) * 2:
        return _convert_each(array.to_pylist(), convert)
    indices = encoded.indices.to_pylist()
    fast = _fast_numbers(distinct, type_) if type_.kind in _NUMBER_TYPES and not encoded.null_count else None
    if fast is not None:
        return list(map(fast.__getitem__, indices)), {}
    distinct_texts = distinct.to_pylist()
    if encoded.null_count:
        # Parquet string columns may hold nulls; they take the last slot, read as empty.
        indices = [len(distinct_texts) if i is None else i for i in indices]
        distinct_texts.append(None)
    distinct_values, distinct_errors = _convert_each(distinct_texts, convert)
    values = list(map(distinct_values.__getitem__, indices))
    errors = {}
    if distinct_errors:
        errors = {row: distinct_errors[i] for row, i in enumerate(indices) if i in distinct_errors}
    return values, errors


def _arrow_compatible(arrow_type, type_: Type) -> bool:
    """Whether a Parquet column of `arrow_type` can hold values of `type_` without loss."""
    import pyarrow.types as pat

    if pat.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type) or pat.is_null(arrow_type):
        return True
    kind = type_.kind
    if kind == "list":
        return ((pat.is_list(arrow_type) or pat.is_large_list(arrow_type) or pat.is_fixed_size_list(arrow_type))
                and _arrow_compatible(arrow_type.value_type, type_.item or Type("string")))
    checks = {
        "int": pat.is_integer,
        "decimal": lambda t: pat.is_decimal(t) or pat.is_integer(t),
        "float": lambda t: pat.is_floating(t) or pat.is_integer(t) or pat.is_decimal(t),
        "string": lambda t: False,
        "bool": pat.is_boolean,
        "date": pat.is_date,
        "timestamp": pat.is_timestamp,
        "duration": pat.is_duration,
    }
    return checks[kind](arrow_type)


def _arrow_native(arrow_type, type_: Type) -> bool:
    """Whether Arrow's own Python values are already the values of `type_`."""
    import pyarrow.types as pat

    return {
        "int": pat.is_integer, "decimal": pat.is_decimal, "float": pat.is_floating, "bool": pat.is_boolean,
        "date": pat.is_date, "duration": pat.is_duration,
    }.get(type_.kind, lambda t: False)(arrow_type)


def _arrow_pylist(array) -> list:
    """Python values of an Arrow array; repeated values are converted once and shared."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(array) >= 64 and not pa.types.is_nested(array.type):
        try:
            encoded = pc.dictionary_encode(array)
        except pa.ArrowNotImplementedError:
            return array.to_pylist()
        if len(encoded.dictionary) * 3 <= len(array) * 2:
            distinct = encoded.dictionary.to_pylist()
            return [None if i is None else distinct[i] for i in encoded.indices.to_pylist()]
    return array.to_pylist()


def _convert_arrow(array, type_: Type, tz: ZoneInfo, is_key: bool) -> Converted:
    """A Parquet column → values, by the same rules as text and JSON values."""
    import pyarrow as pa
    import pyarrow.types as pat

    if pat.is_dictionary(array.type):
        array = array.dictionary_decode()
    arrow_type = array.type
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type):
        return _convert_texts(array.cast(pa.string()), type_, tz, is_key)
    native = _arrow_native(arrow_type, type_)
    if pat.is_timestamp(arrow_type) and type_.kind == "timestamp":
        micros = array.cast(pa.timestamp("us", tz=arrow_type.tz), safe=False).cast(pa.int64())
        values, errors = _datetimes(micros, tz, instant=arrow_type.tz is not None)
        native = True
    elif pat.is_duration(arrow_type):
        values, errors = _arrow_pylist(array.cast(pa.duration("us"), safe=False)), {}
    else:
        values, errors = _arrow_pylist(array), {}
        if native and pat.is_floating(arrow_type):
            import pyarrow.compute as pc

            # NaN and infinities are refused as in text; the per-value path says where.
            native = not pc.any(pc.or_(pc.is_nan(array), pc.is_inf(array))).as_py()
    if not native:
        return _convert_each(values, _python_converter(type_, tz, is_key))
    if array.null_count and (is_key or not type_.nullable):
        missing = "missing member key" if is_key else f"missing value (the column is {type_}, not {type_.with_null()})"
        errors = {**{row: missing for row, value in enumerate(values) if value is None and row not in errors},
                  **errors}
    return values, errors


# Tables: which columns a file must have, and how its records become batches of values.

@dataclass
class _Table:
    name: str
    columns: dict[str, Type]        # key first, then the schema's fields in order
    key: str
    time: str | None


def _tables(schema: dict[str, TableSchema]) -> list[_Table]:
    """The member table first, then the event tables in schema order."""
    if MEMBER_TABLE not in schema:
        raise ValueError("the schema needs a 'member' table")
    member = schema[MEMBER_TABLE]
    key_type = parse_type(member.fields.get(member.key, "string")).with_null(False)
    tables = []
    for name in [MEMBER_TABLE] + [n for n in schema if n != MEMBER_TABLE]:
        spec = schema[name]
        # An event table's key column need not be declared; it holds member keys.
        key = parse_type(spec.fields[spec.key]).with_null(False) if spec.key in spec.fields else key_type
        columns = {spec.key: key}
        columns.update((column, parse_type(text)) for column, text in spec.fields.items() if column != spec.key)
        time = spec.time if name != MEMBER_TABLE else None
        if time is not None and time not in columns:
            columns[time] = Type("timestamp")
        tables.append(_Table(name, columns, spec.key, time))
    return tables


def find_table_files(data_dir: Path, schema: dict[str, TableSchema]) -> dict[str, Path]:
    """The one file of each schema table in `data_dir`: `<table>.csv|.jsonl|.ndjson|.parquet`.

    Args:
        data_dir: the snapshot directory.
        schema: the rule set's schema tables.

    Returns:
        table name → path, in schema order.

    Raises:
        DiagnosticError: MR501 for every table with no file or with more than one.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        reason = "does not exist" if not data_dir.exists() else "is not a directory"
        raise DiagnosticError([Diagnostic("MR501", f"the snapshot directory {data_dir} {reason}")])
    present = sorted(p.name for p in data_dir.iterdir() if p.is_file())
    found: dict[str, Path] = {}
    problems = []
    for table in schema:
        names = [table + suffix for suffix in SUFFIXES if table + suffix in present]
        if len(names) == 1:
            found[table] = data_dir / names[0]
        elif names:
            problems.append(Diagnostic(
                "MR501", f"table '{table}' has {len(names)} files: {', '.join(names)}",
                Span.point(str(data_dir / names[1]), 1, 1), hint="keep one file per table"))
        else:
            expected = ", ".join(table + suffix for suffix in SUFFIXES)
            stems = {name.rsplit(".", 1)[0]: name for name in present
                     if name.endswith(SUFFIXES) and name.rsplit(".", 1)[0] not in schema}
            close = did_you_mean(table, stems)
            hint = f"is '{stems[close]}' meant to be {table}{Path(stems[close]).suffix}?" if close else None
            problems.append(Diagnostic(
                "MR501", f"no file for table '{table}' in {data_dir}; expected one of {expected}", hint=hint))
    if problems:
        raise DiagnosticError(problems)
    return found


def _file_error(path: Path, message: str, line: int = 1, col: int = 1, hint: str | None = None) -> DiagnosticError:
    return DiagnosticError([Diagnostic("MR501", message, Span.point(str(path), line, col), hint=hint)])


def _unexpected_column(table: _Table, path: Path, name: str, line: int, col: int,
                       candidates: list[str]) -> Diagnostic:
    close = did_you_mean(name, candidates)
    return Diagnostic("MR502", f"unexpected column '{name}' in table '{table.name}'", Span.point(str(path), line, col),
                      hint=f"did you mean '{close}'?" if close
                      else "declare it in the schema, or drop it from the file")


def _missing_column(table: _Table, path: Path, name: str, extra: list[str]) -> Diagnostic:
    close = did_you_mean(name, extra)
    return Diagnostic("MR502", f"column '{name}' ({table.columns[name]}) is missing from table '{table.name}'",
                      Span.point(str(path), 1, 1),
                      hint=f"the file has '{close}'" if close else f"the columns are: {', '.join(table.columns)}")


def _column_problems(table: _Table, path: Path, header: list[str]) -> list[Diagnostic]:
    """MR502 for repeated, unexpected and missing columns of a file with a header."""
    problems = []
    seen: set[str] = set()
    for position, name in enumerate(header, 1):
        if name in seen:
            problems.append(Diagnostic("MR502", f"column '{name}' appears twice in table '{table.name}'",
                                       Span.point(str(path), 1, position)))
        seen.add(name)
    missing = [name for name in table.columns if name not in seen]
    extra = [name for name in header if name not in table.columns]
    problems += [_unexpected_column(table, path, name, 1, header.index(name) + 1, missing) for name in extra]
    problems += [_missing_column(table, path, name, extra) for name in missing]
    return problems


@dataclass
class _Batch:
    """Converted columns of consecutive rows, and how to locate and show each row."""

    values: dict[str, list]
    errors: dict[int, list[tuple[str, str]]]        # row → [(column, reason)] in file column order
    size: int
    line: Callable[[int], int]
    raw: Callable[[int], dict[str, str | None]]
    column_index: dict[str, int]                    # 1-based position of each column


@dataclass
class _Malformed:
    """A record that is not a row at all: counted as read, reported as MR505."""

    line: int
    reason: str
    text: str


def _merge_errors(batch_errors: dict[int, list[tuple[str, str]]], column: str, errors: dict[int, str]) -> None:
    for row, reason in errors.items():
        batch_errors.setdefault(row, []).append((column, reason))


class _CsvLines:
    """Line numbers of CSV records, found by a second pass only when a row is reported.

    Arrow gives row positions but not lines: quoted cells may span lines and blank
    lines are skipped. The csv module splits records as Arrow does and counts lines.
    """

    def __init__(self, path: Path, columns: int):
        self.path, self.columns = path, columns
        self._good: list[int] | None = None
        self.malformed: list[_Malformed] = []

    def good(self) -> list[int]:
        """The first line of every well-formed data record, in file order."""
        if self._good is None:
            good: list[int] = []
            with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as stream:
                reader = csv.reader(stream)
                end = 0
                header_done = False
                for record in reader:
                    start, end = end + 1, reader.line_num
                    if not record:
                        continue
                    if not header_done:
                        header_done = True
                    elif len(record) == self.columns:
                        good.append(start)
                    else:
                        self.malformed.append(_Malformed(
                            start, f"the record has {len(record)} fields; the header has {self.columns}",
                            ",".join(record)))
            self._good = good
        return self._good


class _Source:
    """One table file, its columns checked; `batches()` reads its records."""

    def __init__(self, table: _Table, path: Path):
        self.table, self.path = table, path
        suffix = path.suffix.lower()
        self.format = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}[suffix]
        self.header: list[str] | None = None
        if self.format == "csv":
            self.header = self._csv_header()
            if self.header is not None:
                self._raise(_column_problems(table, path, self.header))
        elif self.format == "parquet":
            self._parquet_schema()

    def _raise(self, problems: list[Diagnostic]) -> None:
        if problems:
            raise DiagnosticError(problems)

    def batches(self, tz: ZoneInfo) -> Iterator[_Batch | _Malformed]:
        if self.format == "csv":
            return self._csv_batches(tz) if self.header is not None else iter(())
        if self.format == "jsonl":
            return self._jsonl_batches(tz)
        return self._parquet_batches(tz)

    # CSV

    def _csv_header(self) -> list[str] | None:
        """The header row, or None for a file with no records at all."""
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as stream:
                for record in csv.reader(stream):
                    if record:
                        return record
        except UnicodeDecodeError:
            raise self._encoding_error() from None
        except csv.Error as error:
            raise _file_error(self.path, f"cannot read the CSV header: {error}") from None
        except OSError as error:
            raise _file_error(self.path, f"cannot read the file: {error.strerror or error}") from None
        return None

    def _encoding_error(self) -> DiagnosticError:
        raw = self.path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = raw.count(b"\n", 0, bad.start) + 1
            col = len(raw[raw.rfind(b"\n", 0, bad.start) + 1:bad.start].decode("utf-8", "replace")) + 1
            return _file_error(self.path, f"the file is not UTF-8 (byte 0x{raw[bad.start]:02x})", line, col,
                               hint="save it as UTF-8")
        return _file_error(self.path, "the file is not UTF-8", hint="save it as UTF-8")

    def _csv_batches(self, tz: ZoneInfo) -> Iterator[_Batch | _Malformed]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        table, header = self.table, self.header
        assert header is not None
        lines = _CsvLines(self.path, len(header))
        invalid = 0

        def on_invalid(_row) -> str:
            nonlocal invalid
            invalid += 1
            return "skip"

        column_index = {name: position for position, name in enumerate(header, 1)}
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            offset = 0
            for record_batch in reader:
                values: dict[str, list] = {}
                errors: dict[int, list[tuple[str, str]]] = {}
                for name in header:
                    values[name], column_errors = _convert_texts(
                        record_batch.column(name), table.columns[name], tz, name == table.key)
                    _merge_errors(errors, name, column_errors)

                def line(row: int, offset: int = offset) -> int:
                    return lines.good()[offset + row]

                def raw(row: int, record_batch=record_batch) -> dict[str, str | None]:
                    return {name: record_batch.column(name)[row].as_py() for name in header}

                yield _Batch(values, errors, record_batch.num_rows, line, raw, column_index)
                offset += record_batch.num_rows
        except pa.ArrowInvalid as error:
            if "UTF8" in str(error):
                raise self._encoding_error() from None
            raise _file_error(self.path, f"cannot read the CSV file: {error}") from None
        if invalid:
            lines.good()
            yield from lines.malformed

    # JSONL

    def _jsonl_batches(self, tz: ZoneInfo) -> Iterator[_Batch | _Malformed]:
        table = self.table
        names = list(table.columns)
        allowed = frozenset(names)
        column_index = {name: position for position, name in enumerate(names, 1)}
        converters = {name: _python_converter(type_, tz, name == table.key) for name, type_ in table.columns.items()}
        seen: set[str] = set()
        objects: list[dict] = []
        lines: list[int] = []
        rows = 0

        def batch(objects: list[dict], lines: list[int]) -> _Batch:
            values: dict[str, list] = {}
            errors: dict[int, list[tuple[str, str]]] = {}
            for name in names:
                values[name], column_errors = _convert_each([o.get(name) for o in objects], converters[name])
                _merge_errors(errors, name, column_errors)
            return _Batch(values, errors, len(objects), lines.__getitem__,
                          lambda row: {k: _raw_text(v) for k, v in objects[row].items()}, column_index)

        try:
            with open(self.path, encoding="utf-8-sig") as stream:
                for number, text in enumerate(stream, 1):
                    if not text.strip():
                        continue
                    try:
                        value = _load_json(text)
                    except json.JSONDecodeError as error:
                        yield _Malformed(number, f"the line is not JSON: {error.msg} at column {error.colno}",
                                         text.rstrip("\r\n"))
                        continue
                    except ValueError as error:
                        yield _Malformed(number, f"the line is not JSON: {error}", text.rstrip("\r\n"))
                        continue
                    if not isinstance(value, dict):
                        yield _Malformed(number, f"the line holds {_describe(value)}, not a JSON object",
                                         text.rstrip("\r\n"))
                        continue
                    if not allowed.issuperset(value):
                        # Column problems are file problems (fatal), as for a CSV header.
                        missing = [n for n in names if n not in value]
                        raise DiagnosticError([
                            _unexpected_column(table, self.path, key, number, position, missing)
                            for position, key in enumerate(value, 1) if key not in allowed])
                    seen.update(value)
                    objects.append(value)
                    lines.append(number)
                    rows += 1
                    if len(objects) >= BATCH_ROWS:
                        yield batch(objects, lines)
                        objects, lines = [], []
        except UnicodeDecodeError:
            raise self._encoding_error() from None
        except OSError as error:
            raise _file_error(self.path, f"cannot read the file: {error.strerror or error}") from None
        if objects:
            yield batch(objects, lines)
        # A nullable column may be left out of every line (all null); a required one may not.
        absent = [name for name, type_ in table.columns.items()
                  if name not in seen and (not type_.nullable or name == table.key)]
        if rows and absent:
            raise DiagnosticError([_missing_column(table, self.path, name, []) for name in absent])

    # Parquet

    def _parquet_schema(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._parquet = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as error:
            raise _file_error(self.path, f"cannot read the Parquet file: {error}") from None
        schema = self._parquet.schema_arrow
        self.header = list(schema.names)
        problems = _column_problems(self.table, self.path, self.header)
        for position, name in enumerate(self.header, 1):
            type_ = self.table.columns.get(name)
            if type_ is not None and self.header.count(name) == 1:
                arrow_type = schema.field(name).type
                if not _arrow_compatible(arrow_type, type_):
                    hint = ("write money as decimal128 or as text, never as a binary float"
                            if type_.kind == "decimal" and pa.types.is_floating(arrow_type) else None)
                    problems.append(Diagnostic(
                        "MR502", f"column '{name}' is {arrow_type} in the Parquet file, "
                                 f"which cannot hold {type_} values",
                        Span.point(str(self.path), 1, position), hint=hint))
        self._raise(problems)

    def _parquet_batches(self, tz: ZoneInfo) -> Iterator[_Batch]:
        import pyarrow as pa

        table, header = self.table, self.header
        assert header is not None
        column_index = {name: position for position, name in enumerate(header, 1)}
        offset = 0
        try:
            for record_batch in self._parquet.iter_batches(batch_size=BATCH_ROWS):
                values: dict[str, list] = {}
                errors: dict[int, list[tuple[str, str]]] = {}
                for name in header:
                    values[name], column_errors = _convert_arrow(
                        record_batch.column(name), table.columns[name], tz, name == table.key)
                    _merge_errors(errors, name, column_errors)

                def raw(row: int, record_batch=record_batch) -> dict[str, str | None]:
                    return {name: _raw_text(record_batch.column(name)[row].as_py()) for name in header}

                yield _Batch(values, errors, record_batch.num_rows, lambda row, offset=offset: offset + row + 1,
                             raw, column_index)
                offset += record_batch.num_rows
        except (pa.ArrowException, OSError) as error:
            raise _file_error(self.path, f"cannot read the Parquet file: {error}") from None


# Rows: batches → row dicts, bad rows reported or set aside.

class _TooManyErrors(Exception):
    """The fail-mode limit of row diagnostics is reached; reading stops."""


class _Problems:
    def __init__(self, skip: bool):
        self.skip = skip
        self.diagnostics: list[Diagnostic] = []
        self.rejects: list[RejectedRow] = []

    def row(self, table: _Table, path: Path, line: int, problems: list[tuple[str, str, str, int]],
            raw: Callable[[], dict[str, str | None]], related: tuple = ()) -> None:
        """One bad row; `problems` are (code, column, reason, column position), leftmost first."""
        if self.skip:
            _, column, reason, _ = problems[0]
            self.rejects.append(RejectedRow(table.name, str(path), line, column, reason, raw()))
            return
        for code, column, reason, col in problems:
            message = f"bad value in {table.name}.{column}: {reason}" if code == "MR503" else reason
            self.diagnostics.append(Diagnostic(code, message, Span(str(path), line, col, line, col + 1),
                                               related=related))
            if len(self.diagnostics) >= MAX_ROW_ERRORS:
                raise _TooManyErrors

    def malformed(self, table: _Table, path: Path, record: _Malformed) -> None:
        if self.skip:
            self.rejects.append(RejectedRow(table.name, str(path), record.line, None, record.reason,
                                            {"_record": record.text}))
            return
        self.diagnostics.append(Diagnostic("MR505", f"malformed record in table '{table.name}': {record.reason}",
                                           Span.point(str(path), record.line, 1)))
        if len(self.diagnostics) >= MAX_ROW_ERRORS:
            raise _TooManyErrors

    def in_file_order(self, files: list[str]) -> None:
        """Problems sorted by table (member first), then line and column."""
        order = {file: position for position, file in enumerate(files)}
        self.diagnostics.sort(key=lambda d: (order.get(d.span.file, len(order)), d.span.line, d.span.col)
                              if d.span else (len(order), 0, 0))
        self.rejects.sort(key=lambda r: (order.get(r.file, len(order)), r.row))

    def error(self) -> DiagnosticError:
        diagnostics = list(self.diagnostics)
        last = diagnostics[-1]
        more = "reading stopped here; " if len(diagnostics) >= MAX_ROW_ERRORS else ""
        diagnostics[-1] = Diagnostic(last.code, last.message, last.span, last.severity,
                                     hint=f"{more}fix the rows, or run with --on-bad-row skip to set bad rows aside",
                                     related=last.related)
        return DiagnosticError(diagnostics)


def _batch_rows(source: _Source, batch: _Batch, problems: _Problems) -> list[dict | None]:
    """Row dicts of a batch, None for each bad row (reported)."""
    names = list(source.table.columns)
    rows: list[dict | None] = list(map(dict, map(zip, itertools.repeat(names),
                                                  zip(*(batch.values[name] for name in names)))))
    for index, cells in sorted(batch.errors.items()):
        rows[index] = None
        cells = sorted(cells, key=lambda cell: batch.column_index[cell[0]])
        problems.row(source.table, source.path, batch.line(index),
                     [("MR503", column, reason, batch.column_index[column]) for column, reason in cells],
                     lambda: batch.raw(index))
    return rows


def _read_members(source: _Source, tz: ZoneInfo, problems: _Problems) -> tuple[list[dict], int]:
    key = source.table.key
    members: list[dict] = []
    first_seen: dict[object, tuple[_Batch, int]] = {}
    read = 0
    for batch in source.batches(tz):
        if isinstance(batch, _Malformed):
            read += 1
            problems.malformed(source.table, source.path, batch)
            continue
        read += batch.size
        rows = _batch_rows(source, batch, problems)
        for index, (member_key, row) in enumerate(zip(batch.values[key], rows)):
            if row is None:
                continue
            first = first_seen.setdefault(member_key, (batch, index))
            if first[1] != index or first[0] is not batch:
                col = batch.column_index[key]
                first_line = first[0].line(first[1])
                problems.row(source.table, source.path, batch.line(index),
                             [("MR504", key, f"duplicate member key {_show(str(member_key))} "
                                             f"(first at line {first_line})", col)],
                             lambda: batch.raw(index),
                             related=(("first row with this key", Span.point(str(source.path), first_line, col)),))
                continue
            members.append(row)
    members.sort(key=itemgetter(key))
    return members, read


@dataclass
class _EventCounts:
    read: int = 0
    unknown_member: int = 0
    after_as_of: int = 0


def _read_events(source: _Source, tz: ZoneInfo, as_of: datetime, member_keys: dict,
                 problems: _Problems) -> tuple[dict[object, list[dict]], _EventCounts]:
    table = source.table
    counts = _EventCounts()
    groups: dict[object, list[dict]] = defaultdict(list)
    time_kind = table.columns[table.time].kind if table.time else None
    limit = as_of if time_kind == "timestamp" else as_of.date() if time_kind == "date" else None
    for batch in source.batches(tz):
        if isinstance(batch, _Malformed):
            counts.read += 1
            problems.malformed(table, source.path, batch)
            continue
        counts.read += batch.size
        if table.time and table.columns[table.time].nullable:
            # An event without a time cannot be placed in any window: a bad row even if `T?`.
            times = batch.values[table.time]
            for index, value in enumerate(times):
                if value is None and not any(c == table.time for c, _ in batch.errors.get(index, ())):
                    batch.errors.setdefault(index, []).append((table.time, "missing time (event rows need one)"))
        rows = _batch_rows(source, batch, problems)
        keys = batch.values[table.key]
        times = batch.values[table.time] if table.time else itertools.repeat(None)
        unknown = after = 0
        for member_key, time, row in zip(keys, times, rows):
            if row is None:
                continue
            # After as_of first: such a row is dropped whoever it belongs to (SEMANTICS.md).
            if limit is not None and time > limit:
                after += 1
            elif member_key not in member_keys:
                unknown += 1
            else:
                groups[member_key].append(row)
        counts.unknown_member += unknown
        counts.after_as_of += after
    if table.time:
        by_time = itemgetter(table.time)
        for group in groups.values():
            if len(group) > 1:
                group.sort(key=by_time)
    return {member_key: groups[member_key] for member_key in member_keys if member_key in groups}, counts


def read_snapshot(data_dir: Path, schema: dict[str, TableSchema], timezone: str, as_of: datetime,
                  on_bad_row: str = "fail") -> Snapshot:
    """Read the snapshot in `data_dir`: one file per schema table, CSV, JSONL or Parquet.

    Args:
        data_dir: directory with `member.csv` (or .jsonl/.ndjson/.parquet) and one file per event table.
        schema: the rule set's schema (table name → TableSchema), already checked.
        timezone: the rule set's timezone; naive timestamps are read in it and all are returned in it.
        as_of: the evaluation instant; event rows after it are dropped and counted (SPEC §4).
        on_bad_row: "fail" raises on bad rows; "skip" sets them aside in `Snapshot.rejects`.

    Returns:
        The typed snapshot. Afterwards its objects are frozen out of the garbage
        collector's generations (gc.freeze), so later collections skip them.

    Raises:
        DiagnosticError: MR501 (files), MR502 (columns) always; with "fail", up to
            20 row problems: MR503 bad value, MR504 duplicate member key, MR505 malformed record.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', not {on_bad_row!r}")
    tz = ZoneInfo(timezone)
    as_of = as_of.replace(tzinfo=tz) if as_of.tzinfo is None else as_of.astimezone(tz)
    tables = _tables(schema)
    files = find_table_files(Path(data_dir), schema)
    sources: list[_Source] = []
    file_problems: list[Diagnostic] = []
    for table in tables:
        try:
            sources.append(_Source(table, files[table.name]))
        except DiagnosticError as error:
            file_problems += error.diagnostics
    if file_problems:
        raise DiagnosticError(file_problems)

    problems = _Problems(skip=on_bad_row == "skip")
    rows_read: dict[str, int] = {}
    events: dict[str, dict[object, list[dict]]] = {}
    unknown: dict[str, int] = {}
    after: dict[str, int] = {}
    with paused_gc():
        try:
            members, rows_read[MEMBER_TABLE] = _read_members(sources[0], tz, problems)
            member_keys = dict.fromkeys(row[sources[0].table.key] for row in members)
            for source in sources[1:]:
                name = source.table.name
                events[name], counts = _read_events(source, tz, as_of, member_keys, problems)
                rows_read[name], unknown[name], after[name] = counts.read, counts.unknown_member, counts.after_as_of
        except _TooManyErrors:
            pass
        problems.in_file_order([str(source.path) for source in sources])
        if problems.diagnostics:
            raise problems.error()
        gc.freeze()
    stats = SnapshotStats(rows_read, len(problems.rejects), unknown, after)
    return Snapshot(members, events, stats, problems.rejects)
