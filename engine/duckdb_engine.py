"""The DuckDB engine: the compiled SQL (sql.py) run on an embedded DuckDB over the snapshot files.

The files become typed views (duckdb_views.py): read by DuckDB itself when they are clean,
else by the Python reader, which gives the exact file:row:col diagnostics or the typed rows
handed to DuckDB through Arrow. Either way the query is the same, so the rows equal the
Python engine's and are written by the same writers (results.py, results_arrow.py).

DuckDB runs with a memory limit and a temp directory, so large snapshots spill to disk
instead of failing.
"""

from __future__ import annotations

import contextlib
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

from . import ast
from . import types as t
from .check import CheckedRuleSet, check_rule_set
from .duckdb_views import FallBack, SnapshotViews
from .errors import Diagnostic, DiagnosticError
from .eval import Evaluation, EvaluationStats
from .model import TableSchema
from .snapshot import MEMBER_TABLE, SnapshotStats, find_table_files, paused_gc, read_snapshot
from .sql import CompiledSql, compile_sql
from .sql_dialects import rules_for

ENGINE = "duckdb"
DEFAULT_MEMORY_LIMIT = "4GB"
# What DuckDB's memory_limit setting takes: a number and a unit (DuckDB's own names for them).
_MEMORY_SIZE_RE = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


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


def connect(limits: Limits | None = None):
    """A DuckDB connection within `limits` (default: 4GB, spilling to the system's temp directory,
    every core)."""
    import duckdb

    limits = limits or Limits()
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
        self.con = connection or connect(limits)
        self.seconds: dict[str, float] = {}
        self.read_by = "duckdb"
        self.rejects: list = []
        self.views = SnapshotViews(self.con, rules, self.as_of)
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
