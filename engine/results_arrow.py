"""Result rows as Arrow batches → JSONL, CSV or Parquet, without a Python object per row.

The DuckDB engine's rows arrive as Arrow record batches. Each column is formatted with
pyarrow.compute into the exact text results.py writes for it (results.py is the
reference: same JSON, same decimal text, same CSV quoting), the columns are joined into
lines, and the lines' bytes are written straight from Arrow's buffer. Where a column's
values cannot be formatted that way exactly (floats need Python's `repr`; dates outside
years 1000–9999; types without a vectorised form), that column alone, in that batch, goes
through results.py's own encoders. Files are written a batch at a time, atomically.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from . import types as t
from .errors import Diagnostic, DiagnosticError
from .results import FORMATS, Column, arrow_type, atomic_path, csv_encoder, decimal_text, json_encoder

# JSON escapes json.dumps(ensure_ascii=False) writes inside strings; everything else is verbatim.
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_CONTROL = r"[\x00-\x1f]"

# Parquet files are written in row groups of this many rows, as pyarrow.parquet.write_table
# does for a whole table, so both writers lay the same rows out the same way.
PARQUET_ROW_GROUP = 1024 * 1024


def _csv_specials() -> str:
    """The characters that make results.py's csv.writer quote a cell (they vary by Python version)."""
    special = []
    for char in ',"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 ':
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(["a" + char + "b", "c"])
        if buffer.getvalue().startswith('"'):
            special.append(char)
    return "".join(special)


_CSV_SPECIALS = _csv_specials()
_CSV_NEEDS_QUOTE = "[" + "".join("\\x%02x" % ord(c) if ord(c) < 0x80 else c for c in _CSV_SPECIALS) + "]"


# -- small vectorised helpers ----------------------------------------------------------------------

def _strings(array: pa.Array) -> pa.Array:
    """Any string-like array as plain utf8 (DuckDB may hand out large or view strings)."""
    return array if array.type == pa.string() else array.cast(pa.string())


def _join(*parts) -> pa.Array:
    """Element-wise concatenation of arrays and str constants (null if any part is null)."""
    return pc.binary_join_element_wise(*parts, "")


def _floor_div(values: pa.Array, divisor: int) -> pa.Array:
    quotient = pc.divide(values, divisor)  # integer division truncates toward zero
    below = pc.less(pc.subtract(values, pc.multiply(quotient, divisor)), 0)
    return pc.if_else(below, pc.subtract(quotient, 1), quotient)


def _pad(values: pa.Array, width: int) -> pa.Array:
    return pc.utf8_lpad(values.cast(pa.string()), width=width, padding="0")


def _python_column(array: pa.Array, type_: t.Type, tz: ZoneInfo) -> list:
    """The Python values results.py receives for this column from the DuckDB engine's rows."""
    from .duckdb_engine import _converter, _decimals

    values = _decimals(array) if pa.types.is_decimal(array.type) else array.to_pylist()
    convert = _converter(type_, tz)
    return values if convert is None else [None if v is None else convert(v) for v in values]


# -- column formatters -----------------------------------------------------------------------------

def json_strings(array: pa.Array) -> pa.Array:
    """Strings as JSON string literals, exactly as json.dumps(ensure_ascii=False); null stays null."""
    array = _strings(array)
    if len(array) and pc.any(pc.match_substring_regex(array, _NEEDS_ESCAPE)).as_py():
        # Backslash first, so the backslashes the other escapes add are not doubled again.
        for char in ("\\", '"'):
            array = pc.replace_substring(array, char, _SHORT_ESCAPES[char])
        if pc.any(pc.match_substring_regex(array, _CONTROL)).as_py():
            for code in range(0x20):
                char = chr(code)
                array = pc.replace_substring(array, char, _SHORT_ESCAPES.get(char, "\\u%04x" % code))
    return _join('"', array, '"')


def decimal_texts(array: pa.Array) -> pa.Array:
    """Arrow decimals as results.decimal_text writes them: `120.5`, `0`, `-0.25`, never an exponent."""
    text = array.cast(pa.string())
    if array.type.scale <= 0:
        return text
    # Arrow writes zero as `0E-18` and values below 1e-6 in scientific notation; the rest plainly.
    zero = pc.starts_with(text, "0E")
    text = pc.if_else(zero, "0", pc.utf8_rtrim(pc.utf8_rtrim(text, "0"), "."))
    scientific = pc.fill_null(pc.match_substring(text, "E"), False)
    if pc.any(scientific).as_py():
        # Only these few go through Decimal (the scientific text is Arrow's, untouched by the trims).
        original = pc.filter(array, scientific).cast(pa.string()).to_pylist()
        fixed = [decimal_text(Decimal(v)) for v in original]
        text = pc.replace_with_mask(text, scientific, pa.array(fixed, pa.string()))
    return text


def _timestamp_texts(array: pa.Array, tz: ZoneInfo) -> pa.Array | None:
    """ISO 8601 in `tz` with its offset, as datetime.isoformat(); None if a year is outside 1000–9999."""
    aware = array.cast(pa.timestamp("us", tz=tz.key))
    utc = aware.cast(pa.int64())
    local = pc.local_timestamp(aware).cast(pa.int64())
    seconds = _floor_div(local, 1_000_000)
    low, high = pc.min_max(seconds).values()
    if low.as_py() is not None and (low.as_py() < -30_610_224_000 or high.as_py() > 253_402_300_799):
        return None  # strftime's years outside 1000–9999 are not isoformat's
    micros = pc.subtract(local, pc.multiply(seconds, 1_000_000))
    clock = pc.strftime(seconds.cast(pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S")
    fraction = pc.if_else(pc.equal(micros, 0), "", _join(".", _pad(micros, 6)))
    offset = pc.divide(pc.subtract(local, utc), 1_000_000)  # zone offsets are whole seconds
    size = pc.abs(offset)
    hours, rest = pc.divide(size, 3600), pc.subtract(size, pc.multiply(pc.divide(size, 60), 60))
    minutes = pc.subtract(pc.divide(size, 60), pc.multiply(hours, 60))
    zone = _join(pc.if_else(pc.less(offset, 0), "-", "+"), _pad(hours, 2), ":", _pad(minutes, 2),
                 pc.if_else(pc.equal(rest, 0), "", _join(":", _pad(rest, 2))))
    return _join(clock, fraction, zone)


def _date_texts(array: pa.Array) -> pa.Array | None:
    days = array.cast(pa.int32())
    low, high = pc.min_max(days).values()
    if low.as_py() is not None and (low.as_py() < -354_285 or high.as_py() > 2_932_896):
        return None  # years outside 1000–9999
    return array.cast(pa.string())


def _duration_seconds(array: pa.Array) -> pa.Array | None:
    """Whole seconds, floored like results.py's days * 86400 + seconds; DuckDB hands out microseconds."""
    if pa.types.is_integer(array.type):
        return _floor_div(array.cast(pa.int64()), 1_000_000)
    if pa.types.is_duration(array.type):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[array.type.unit]
        return _floor_div(array.cast(pa.int64()), per_second)
    return None


def _plain_texts(array: pa.Array, type_: t.Type, tz: ZoneInfo) -> pa.Array | None:
    """The text CSV and JSON share for scalar kinds (strings unquoted); None when not vectorised."""
    kind, arrow = type_.kind, array.type
    if kind == "string" and (pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or
                             pa.types.is_string_view(arrow)):
        return _strings(array)
    if kind in ("int", "decimal") and pa.types.is_integer(arrow):
        return array.cast(pa.string())
    if kind in ("int", "decimal") and pa.types.is_decimal(arrow) and arrow.scale >= 0:
        return decimal_texts(array)
    if kind == "bool" and pa.types.is_boolean(arrow):
        return pc.if_else(array, "true", "false")
    if kind == "timestamp" and pa.types.is_timestamp(arrow):
        return _timestamp_texts(array, tz)
    if kind == "date" and pa.types.is_date32(arrow):
        return _date_texts(array)
    if kind == "duration":
        seconds = _duration_seconds(array)
        return None if seconds is None else seconds.cast(pa.string())
    return None


def json_texts(array: pa.Array, type_: t.Type, tz: ZoneInfo, source: t.Type | None = None) -> pa.Array:
    """Each value as results.json_encoder(type_) writes it, `null` for null: a string array without nulls.

    Args:
        array: one column of a DuckDB result batch.
        type_: the result column's type (results.result_columns).
        tz: the rule set's timezone.
        source: the column's type in the compiled query, if it differs (how DuckDB values become Python ones).
    """
    kind = type_.kind
    text: pa.Array | None = None
    if kind == "string" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
                             or pa.types.is_string_view(array.type)):
        text = json_strings(array)
    elif kind == "list" and (type_.item or t.STRING).kind == "string" and \
            (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)) and \
            (pa.types.is_string(array.type.value_type) or pa.types.is_large_string(array.type.value_type)):
        text = _json_string_lists(array)
    elif kind in ("timestamp", "date"):
        plain = _plain_texts(array, type_, tz)
        text = None if plain is None else _join('"', plain, '"')
    elif kind != "string":
        text = _plain_texts(array, type_, tz)
    if text is None:
        encode = json_encoder(type_, tz)
        return pa.array([encode(v) for v in _python_column(array, source or type_, tz)], pa.string())
    return pc.fill_null(text, "null")


def _json_string_lists(array: pa.Array) -> pa.Array:
    offsets = array.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    items = pc.fill_null(json_strings(array.values.slice(start, end - start)), "null")
    rebased = pc.subtract(offsets, start).cast(offsets.type)
    lists_type = pa.list_(pa.string()) if offsets.type == pa.int32() else pa.large_list(pa.string())
    lists = (pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray).from_arrays(
        rebased, items, type=lists_type, mask=array.is_null() if array.null_count else None)
    return _join("[", pc.binary_join(lists, ","), "]")


def csv_texts(array: pa.Array, type_: t.Type, tz: ZoneInfo, source: t.Type | None = None) -> pa.Array:
    """Each value as results.csv_encoder(type_) writes the cell, before quoting: "" for null."""
    kind = type_.kind
    if kind in ("list", "float", "duration"):
        text = json_texts(array, type_, tz, source)
        return pc.if_else(array.is_null(), "", text)
    plain = _plain_texts(array, type_, tz) if kind in ("string", "int", "decimal", "bool", "timestamp", "date") \
        else None
    if plain is None:
        encode = csv_encoder(type_, tz)
        return pa.array([encode(v) for v in _python_column(array, source or type_, tz)], pa.string())
    return pc.fill_null(plain, "")


def csv_quote(cells: pa.Array) -> pa.Array:
    """Cells quoted where results.py's csv.writer (QUOTE_MINIMAL, lineterminator "\\n") quotes them."""
    needs = pc.match_substring_regex(cells, _CSV_NEEDS_QUOTE)
    if not pc.any(needs).as_py():
        return cells
    return pc.if_else(needs, _join('"', pc.replace_substring(cells, '"', '""'), '"'), cells)


# -- lines and files -------------------------------------------------------------------------------

def _write_strings(out, lines: pa.Array) -> None:
    """The concatenated bytes of a string array, straight from its data buffer."""
    if not len(lines):
        return
    _, offset_buffer, data = lines.buffers()
    offsets = memoryview(offset_buffer).cast("q" if pa.types.is_large_string(lines.type) else "i")
    out.write(memoryview(data)[offsets[lines.offset]:offsets[lines.offset + len(lines)]])


def jsonl_lines(batch: pa.RecordBatch, columns: list[Column], tz: ZoneInfo,
                sources: dict[str, t.Type] | None = None) -> pa.Array:
    """The batch's rows as JSON lines (with their newlines), as results.jsonl_lines writes them."""
    from .results import _encode_string

    parts: list = []
    for i, column in enumerate(columns):
        parts.append(("{" if i == 0 else ",") + _encode_string(column.name) + ":")
        parts.append(json_texts(batch.column(column.name), column.type, tz, (sources or {}).get(column.name)))
    parts.append("}\n")
    return _join(*parts)


def csv_lines(batch: pa.RecordBatch, columns: list[Column], tz: ZoneInfo,
              sources: dict[str, t.Type] | None = None) -> pa.Array:
    """The batch's rows as CSV lines, as results.py's csv.writer writes them."""
    parts: list = []
    for i, column in enumerate(columns):
        if i:
            parts.append(",")
        parts.append(csv_quote(csv_texts(batch.column(column.name), column.type, tz,
                                         (sources or {}).get(column.name))))
    parts.append("\n")
    return _join(*parts)


def parquet_arrays(batch: pa.RecordBatch, columns: list[Column], tz: ZoneInfo,
                   sources: dict[str, t.Type] | None = None) -> list[pa.Array]:
    """The batch's columns in results.arrow_type's types, holding what results.py's Parquet writer holds."""
    from .results import _arrow_value

    arrays = []
    for column in columns:
        array, target = batch.column(column.name), arrow_type(column.type, tz)
        kind = column.type.kind
        try:
            if kind == "duration" and _duration_seconds(array) is not None:
                arrays.append(_duration_seconds(array).cast(pa.duration("s")))
            elif (kind in t.SCALAR_KINDS or kind == "list") and kind not in ("duration", "float") and \
                    not (pa.types.is_decimal(array.type) and array.type.scale > 18):
                arrays.append(array.cast(target))
            else:
                convert = _arrow_value(column.type, tz)
                values = _python_column(array, (sources or {}).get(column.name) or column.type, tz)
                arrays.append(pa.array([convert(v) for v in values], type=target))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ArithmeticError) as error:
            raise DiagnosticError([Diagnostic(
                "MR591", f"column '{column.name}' cannot be written as Parquet {target}: {error}",
                None, hint="decimals in Parquet hold at most 20 digits before the point; use --format jsonl")]) \
                from error
    return arrays


def write_batches(batches: Iterable[pa.RecordBatch], columns: list[Column], path: Path, fmt: str, tz: ZoneInfo,
                  sources: dict[str, t.Type] | None = None,
                  on_batch: Callable[[pa.RecordBatch], None] | None = None) -> int:
    """Write Arrow result batches to `path` atomically, byte for byte as results.write_rows writes the same rows.

    Args:
        batches: record batches holding at least every column, rows in result order.
        columns: the columns, in order (results.result_columns).
        path: the output file; its directory is created if missing.
        fmt: "jsonl", "csv" or "parquet".
        tz: the rule set's timezone.
        sources: column → its type in the compiled query, where a Python fallback must read it so.
        on_batch: called with each batch before it is written (summary counts).

    Returns:
        The number of rows written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    count = 0
    with atomic_path(path) as temp:
        if fmt == "parquet":
            return _write_parquet(batches, columns, temp, tz, sources, on_batch)
        format_lines = jsonl_lines if fmt == "jsonl" else csv_lines
        with open(temp, "wb") as out:
            if fmt == "csv":
                header = io.StringIO()
                csv.writer(header, lineterminator="\n").writerow([column.name for column in columns])
                out.write(header.getvalue().encode("utf-8"))
            for rows, lines in _in_parallel(batches, lambda b: format_lines(b, columns, tz, sources), on_batch):
                _write_strings(out, lines)
                count += rows
    return count


def _in_parallel(batches: Iterable[pa.RecordBatch], work: Callable, on_batch) -> Iterable[tuple[int, object]]:
    """(rows, work(part)) for consecutive parts of each non-empty batch, in order. The parts of one
    batch are worked on at once (pyarrow.compute releases the GIL), but never while the next batch is
    fetched: DuckDB's Arrow stream slows down many times over when Python threads run beside it."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="memberrules-format") as pool:
        for batch in batches:
            if on_batch is not None:
                on_batch(batch)
            if not batch.num_rows:
                continue
            step = -(-batch.num_rows // workers)
            parts = [batch.slice(start, step) for start in range(0, batch.num_rows, step)]
            for part, result in zip(parts, pool.map(work, parts)):
                yield part.num_rows, result


def _write_parquet(batches, columns, temp: Path, tz: ZoneInfo, sources, on_batch) -> int:
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(column.name, arrow_type(column.type, tz)) for column in columns])
    pending: list[pa.RecordBatch] = []
    pending_rows = count = 0
    with pq.ParquetWriter(temp, schema) as writer:
        typed = _in_parallel(batches, lambda b: pa.record_batch(parquet_arrays(b, columns, tz, sources),
                                                                 schema=schema), on_batch)
        for rows, batch in typed:
            pending.append(batch)
            pending_rows += rows
            count += rows
            while pending_rows >= PARQUET_ROW_GROUP:
                table = pa.Table.from_batches(pending, schema)
                writer.write_table(table.slice(0, PARQUET_ROW_GROUP), row_group_size=PARQUET_ROW_GROUP)
                rest = table.slice(PARQUET_ROW_GROUP)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows or not count:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=PARQUET_ROW_GROUP)
    return count


__all__ = ["PARQUET_ROW_GROUP", "csv_lines", "csv_quote", "csv_texts", "decimal_texts", "json_strings",
           "json_texts", "jsonl_lines", "parquet_arrays", "write_batches"]
