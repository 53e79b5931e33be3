"""Result rows → JSONL, CSV or Parquet, byte for byte as docs/SEMANTICS.md "Result rows" says.

Writing is separate from evaluating: any engine that yields rows as dicts of Python
values (None, bool, int, Decimal, float, str, date, datetime, timedelta, list) in the
column order of `result_columns` can use these writers. Every file is written to a
temporary file in the target directory and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from . import types as t
from .check import CheckedRuleSet
from .errors import Diagnostic, DiagnosticError
from .eval import TIER_COLUMNS, result_column_names

FORMATS = ("jsonl", "csv", "parquet")
_encode_string = json.encoder.encode_basestring  # the C encoder, with ensure_ascii=False semantics


@dataclass(frozen=True)
class Column:
    name: str
    type: t.Type


def result_columns(rules: CheckedRuleSet) -> list[Column]:
    """The typed columns of a result row, in order."""
    names = result_column_names(rules)
    types: dict[str, t.Type] = {rules.member.key: rules.member.fields[rules.member.key]}
    if rules.tiers is not None:
        by = rules.tiers.by.type or t.INT
        types.update({"tier": t.STRING, "next_tier": t.STRING.with_null(),
                      "tier_gap": by.with_null(), "tier_progress": t.DECIMAL.with_null(),
                      "days_to_next_tier": t.INT.with_null()})
    for name, class_list in rules.classes.items():
        types[name] = t.STRING.with_null(not class_list.has_else)
    types["segments"] = t.list_of(t.STRING)
    for name, metric in rules.metrics.items():
        if metric.output:
            metric_type = metric.type if metric.type.kind not in ("null", "error") else t.STRING.with_null()
            types[name] = metric_type
    return [Column(name, types[name]) for name in names]


def decimal_text(value: Decimal | int) -> str:
    """Plain notation, trailing zeros removed: `120.5`, `0`, never `1.2E+2`.

    >>> [decimal_text(Decimal(s)) for s in ("120.50", "1.2E+2", "0.000", "-0.10")]
    ['120.5', '120', '0', '-0.1']
    """
    if type(value) is int:
        return str(value)
    if not value:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _float_text(value: float) -> str:
    return repr(value) if math.isfinite(value) else "null"


def _duration_seconds(value: timedelta) -> int:
    return value.days * 86400 + value.seconds


# -- JSON values -----------------------------------------------------------------------------------

def json_encoder(type_: t.Type, tz: ZoneInfo) -> Callable[[object], str]:
    """A function writing one value of `type_` as JSON text (null for None)."""
    kind = type_.kind

    def timestamp(value: datetime) -> str:
        return '"' + (value if value.tzinfo is tz else value.astimezone(tz)).isoformat() + '"'

    def dynamic(value: object) -> str:
        return json_value(value, tz)

    encoders: dict[str, Callable[[object], str]] = {
        "string": _encode_string, "int": str, "decimal": decimal_text, "float": _float_text,  # type: ignore[dict-item]
        "bool": lambda v: "true" if v else "false", "timestamp": timestamp,  # type: ignore[dict-item]
        "date": lambda v: '"' + v.isoformat() + '"',  # type: ignore[attr-defined]
        "duration": lambda v: str(_duration_seconds(v)),  # type: ignore[arg-type]
    }
    if kind == "list":
        item = json_encoder(type_.item or t.STRING, tz)
        encode = lambda v: "[" + ",".join(item(x) for x in v) + "]"  # noqa: E731
    else:
        encode = encoders.get(kind, dynamic)

    def encode_or_null(value: object) -> str:
        return "null" if value is None else encode(value)

    return encode_or_null


def json_value(value: object, tz: ZoneInfo) -> str:
    """JSON text of a value whose type the column does not fix."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return decimal_text(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, datetime):
        return '"' + value.astimezone(tz).isoformat() + '"'
    if isinstance(value, date):
        return '"' + value.isoformat() + '"'
    if isinstance(value, timedelta):
        return str(_duration_seconds(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_value(x, tz) for x in value) + "]"
    return _encode_string(str(value))


def jsonl_lines(rows: Iterable[dict], columns: list[Column], tz: ZoneInfo) -> Iterator[str]:
    """Each row as one JSON object, keys in column order, no spaces, UTF-8 unescaped."""
    return map(_line_encoder(columns, tz), rows)


# The most common kinds, written inline in the generated line function; `{}` is the value.
_INLINE_JSON = {"string": "encode_string({})", "int": "str({})", "decimal": "decimal_text({})",
                "bool": "('true' if {} else 'false')"}


def _line_encoder(columns: list[Column], tz: ZoneInfo) -> Callable[[dict], str]:
    """One generated function writing a whole row as a JSON line: a single f-string, with the
    column names and encoders passed in as constants (never printed into the code)."""
    namespace: dict[str, object] = {"__builtins__": {}, "str": str, "encode_string": _encode_string,
                                    "decimal_text": decimal_text}
    parts = []
    for i, column in enumerate(columns):
        namespace[f"K{i}"] = column.name
        namespace[f"P{i}"] = ("{" if i == 0 else ",") + _encode_string(column.name) + ":"
        inline = _INLINE_JSON.get(column.type.kind)
        if inline is None:
            namespace[f"E{i}"] = json_encoder(column.type, tz)
            value = f"E{i}(row[K{i}])"
        else:
            value = f"('null' if (v := row[K{i}]) is None else {inline.format('v')})"
        parts.append(f"{{P{i}}}{{{value}}}")
    source = "def line(row):\n    return f\"" + "".join(parts) + "}}\\n\"\n"
    exec(compile(source, "<memberrules jsonl>", "exec"), namespace)  # our generated code only
    return namespace["line"]  # type: ignore[return-value]


# -- CSV cells -------------------------------------------------------------------------------------

def csv_encoder(type_: t.Type, tz: ZoneInfo) -> Callable[[object], str]:
    """A function writing one value as a CSV cell: null is empty, lists are JSON arrays."""
    kind = type_.kind
    if kind in ("list", "float", "duration"):
        encode_json = json_encoder(type_, tz)
        return lambda v: "" if v is None else encode_json(v)
    if kind == "string":
        return lambda v: "" if v is None else v  # type: ignore[return-value]
    if kind == "int":
        return lambda v: "" if v is None else str(v)
    if kind == "decimal":
        return lambda v: "" if v is None else decimal_text(v)  # type: ignore[arg-type]
    if kind == "bool":
        return lambda v: "" if v is None else ("true" if v else "false")
    if kind == "timestamp":
        return lambda v: "" if v is None else v.astimezone(tz).isoformat()  # type: ignore[attr-defined]
    if kind == "date":
        return lambda v: "" if v is None else v.isoformat()  # type: ignore[attr-defined]

    def dynamic(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return json_value(value, tz)
    return dynamic


# -- atomic files ----------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`, moved onto it when the block succeeds, removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temp)
        # mkstemp makes the file private; results get the permissions of any new file.
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_rows(rows: Iterable[dict], columns: list[Column], path: Path, fmt: str, tz: ZoneInfo) -> int:
    """Write result rows to `path` atomically; returns the number of rows written.

    Args:
        rows: dicts holding at least every column.
        columns: the columns, in order (`result_columns`).
        path: the output file; its directory is created if missing.
        fmt: "jsonl", "csv" or "parquet".
        tz: the rule set's timezone (timestamps are written with its offset).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    with atomic_path(path) as temp:
        if fmt == "jsonl":
            return _write_jsonl(rows, columns, temp, tz)
        if fmt == "csv":
            return _write_csv(rows, columns, temp, tz)
        return _write_parquet(rows, columns, temp, tz)


def _write_jsonl(rows, columns, temp: Path, tz: ZoneInfo) -> int:
    count = 0
    with open(temp, "w", encoding="utf-8", newline="\n") as out:
        lines = []
        for line in jsonl_lines(rows, columns, tz):
            lines.append(line)
            if len(lines) >= 4096:
                out.write("".join(lines))
                count += len(lines)
                lines.clear()
        out.write("".join(lines))
        count += len(lines)
    return count


_INLINE_CSV = {"string": "{}", "int": "str({})", "decimal": "decimal_text({})", "bool": "('true' if {} else 'false')"}


def _cells_encoder(columns: list[Column], tz: ZoneInfo) -> Callable[[dict], list]:
    """One generated function turning a row into its CSV cells (see `_line_encoder`)."""
    namespace: dict[str, object] = {"__builtins__": {}, "str": str, "decimal_text": decimal_text}
    cells = []
    for i, column in enumerate(columns):
        namespace[f"K{i}"] = column.name
        inline = _INLINE_CSV.get(column.type.kind)
        if inline is None:
            namespace[f"E{i}"] = csv_encoder(column.type, tz)
            cells.append(f"E{i}(row[K{i}])")
        else:
            cells.append(f"('' if (v := row[K{i}]) is None else {inline.format('v')})")
    source = "def cells(row):\n    return [" + ", ".join(cells) + "]\n"
    exec(compile(source, "<memberrules csv>", "exec"), namespace)  # our generated code only
    return namespace["cells"]  # type: ignore[return-value]


def _write_csv(rows, columns, temp: Path, tz: ZoneInfo) -> int:
    cells = _cells_encoder(columns, tz)
    count = 0

    def counted(row: dict) -> list:
        nonlocal count
        count += 1
        return cells(row)

    with open(temp, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([column.name for column in columns])
        writer.writerows(map(counted, rows))
    return count


_DECIMAL_QUANTUM = Decimal(1).scaleb(-18)


def arrow_type(type_: t.Type, tz: ZoneInfo):
    """The Parquet (Arrow) type of a column."""
    import pyarrow as pa

    kind = type_.kind
    if kind == "list":
        return pa.list_(arrow_type(type_.item or t.STRING, tz))
    return {"string": pa.string(), "int": pa.int64(), "decimal": pa.decimal128(38, 18), "float": pa.float64(),
            "bool": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz=tz.key),
            "duration": pa.duration("s")}.get(kind, pa.string())


_QUANTIZE_CONTEXT = Context(prec=60, rounding=ROUND_DOWN)


def _arrow_value(type_: t.Type, tz: ZoneInfo) -> Callable[[object], object]:
    kind = type_.kind
    if kind == "decimal":
        # Wide enough for 38 digits: the default 28-digit context fails on 1e10 at 18 places.
        return lambda v: None if v is None else Decimal(v).quantize(_DECIMAL_QUANTUM, context=_QUANTIZE_CONTEXT)
    if kind == "duration":
        return lambda v: None if v is None else timedelta(seconds=_duration_seconds(v))  # type: ignore[arg-type]
    if kind in t.SCALAR_KINDS or kind == "list":
        return lambda v: v
    return lambda v: None if v is None else json_value(v, tz).strip('"')


def _write_parquet(rows, columns, temp: Path, tz: ZoneInfo) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = rows if isinstance(rows, list) else list(rows)
    arrays = []
    for column in columns:
        convert = _arrow_value(column.type, tz)
        try:
            values = [convert(row[column.name]) for row in rows]
            arrays.append(pa.array(values, type=arrow_type(column.type, tz)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, ArithmeticError) as error:
            raise DiagnosticError([Diagnostic(
                "MR591", f"column '{column.name}' cannot be written as Parquet {arrow_type(column.type, tz)}: {error}",
                None, hint="decimals in Parquet hold at most 20 digits before the point; use --format jsonl")]) \
                from error
    table = pa.table(arrays, names=[column.name for column in columns])
    pq.write_table(table, temp)
    return len(rows)


def write_rejects(rejects: Iterable, path: Path) -> int:
    """Rows set aside by `--on-bad-row skip`, one JSON object per line, atomically."""
    count = 0
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="\n") as out:
        for reject in rejects:
            record = {"table": reject.table, "file": reject.file, "row": reject.row, "column": reject.column,
                      "reason": reject.reason, "raw": reject.raw}
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def rejects_path(out: Path) -> Path:
    """Where the rejects of a run writing `out` go: `<out>.rejects.jsonl`."""
    return out.with_name(out.name + ".rejects.jsonl")


__all__ = ["Column", "FORMATS", "TIER_COLUMNS", "arrow_type", "atomic_path", "csv_encoder", "decimal_text",
           "json_encoder", "jsonl_lines", "rejects_path", "result_columns", "write_rejects", "write_rows"]
