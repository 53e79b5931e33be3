"""The `evaluate` pipeline: check the rules, read the snapshot, evaluate, write, summarise.

Exit codes follow SPEC §5: rule errors are failures (1), bad input is a usage error (2).
Results (and the rejects file of `--on-bad-row skip`) are written atomically, so a
failed run leaves no output behind.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from .campaigns import summary_table, write_outputs
from .check import CheckResult, check_rule_set
from .eval import ENGINE, Evaluation, compile_rule_set
from .results import FORMATS, rejects_path, result_columns, write_rejects, write_rows
from .snapshot import Snapshot, SnapshotStats, read_snapshot

DEFAULT_OUT_DIR = Path("out")


def default_out(fmt: str) -> Path:
    """Where results go without --out: `out/results.<fmt>` in the current directory."""
    return DEFAULT_OUT_DIR / f"results.{fmt}"


def format_for(out: Path | None, fmt: str | None) -> str:
    """The output format: --format if given, else the suffix of --out, else jsonl."""
    if fmt:
        return fmt
    if out is not None and out.suffix.lstrip(".") in FORMATS:
        return out.suffix.lstrip(".")
    return "jsonl"


def parse_as_of(text: str | None, timezone: str, now: Callable[[], datetime] | None = None) -> datetime:
    """`--as-of`: `2026-11-01` (midnight), `2026-11-01T10:00` (rule-set time) or with an offset.

    >>> parse_as_of("2026-11-01", "Asia/Shanghai").isoformat()
    '2026-11-01T00:00:00+08:00'
    >>> parse_as_of("2026-11-01T10:00:00Z", "Asia/Shanghai").isoformat()
    '2026-11-01T18:00:00+08:00'
    """
    tz = ZoneInfo(timezone)
    if text is None:
        return (now or (lambda: datetime.now(tz)))().astimezone(tz)
    stripped = text.strip()
    try:
        if len(stripped) == 10:
            value = datetime.combine(date.fromisoformat(stripped), clock())
        else:
            value = datetime.fromisoformat(stripped.replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"'{text}' is not a date or timestamp (e.g. 2026-11-01, 2026-11-01T10:00 "
                         "or 2026-11-01T10:00:00+08:00)") from None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


@dataclass
class Summary:
    """Counts for the summary table: (section title, [(label, count)])."""

    sections: list[tuple[str, list[tuple[str, int]]]] = field(default_factory=list)


def summarize(evaluation: Evaluation, rules) -> Summary:
    """Members per tier, per class of each class list, per segment (declaration order)."""
    rows = evaluation.rows
    summary = Summary()
    if rules.tiers is not None:
        counts = Counter(row["tier"] for row in rows)
        summary.sections.append(("tier", [(name, counts.get(name, 0)) for name in rules.tiers.names()]))
    for name, class_list in rules.classes.items():
        counts = Counter(row[name] for row in rows)
        entries = [(case.name, counts.get(case.name, 0)) for case in class_list.cases]
        if not class_list.has_else and counts.get(None):
            entries.append(("(none)", counts[None]))
        summary.sections.append((name, entries))
    segment_counts = Counter(segment for row in rows for segment in row["segments"])
    if rules.segments:
        summary.sections.append(("segments", [(name, segment_counts.get(name, 0)) for name in rules.segments]))
    return summary


@dataclass
class EvaluateReport:
    """What one `evaluate` run did."""

    out: Path
    fmt: str
    as_of: datetime
    rows_written: int
    snapshot: SnapshotStats
    members: int
    rejects_file: Path | None
    summary: Summary
    evaluation: Evaluation
    engine: str = ENGINE
    seconds: dict[str, float] = field(default_factory=dict)
    rejected_by_table: dict[str, int] = field(default_factory=dict)
    campaigns: object | None = None  # campaigns.Decision: this run's actions and their summary
    actions_file: Path | None = None
    dry_run: bool = False

    @property
    def rows_read(self) -> int:
        return sum(self.snapshot.rows_read.values())

    @property
    def rejected(self) -> int:
        return self.snapshot.rejected


@dataclass
class EvaluateOutcome:
    check: CheckResult
    report: EvaluateReport | None = None


class InputError(ValueError):
    """A bad option value noticed once the rule set is known (e.g. --as-of): exit 2."""


def check_with_as_of(rules_dir: Path, params: dict[str, str] | None, as_of: datetime | str | None,
                     checked: CheckResult | None = None) -> tuple[CheckResult, datetime | None]:
    """The checked rule set and the evaluation instant read in its timezone (None if it failed);
    `checked`: the rule set already checked (by `--engine auto`), not checked again.

    Raises:
        InputError: --as-of is not a date or timestamp.
    """
    check = checked or check_rule_set(rules_dir, params)
    if check.rule_set is None or isinstance(as_of, datetime):
        return check, as_of  # type: ignore[return-value]
    try:
        return check, parse_as_of(as_of, check.rule_set.timezone)
    except ValueError as error:
        raise InputError(f"--as-of: {error}") from None


def evaluate_rules(rules_dir: Path, data_dir: Path, *, as_of: datetime | str | None, out: Path, fmt: str = "jsonl",
                   params: dict[str, str] | None = None, on_bad_row: str = "fail",
                   progress: Callable[[str, int], Callable[[int], None]] | None = None,
                   state: Path | None = None, dry_run: bool = False,
                   checked: CheckResult | None = None) -> EvaluateOutcome:
    """Check a rule set, evaluate it on a snapshot directory and write one row per member.

    Args:
        rules_dir: the rule-set directory.
        data_dir: the snapshot: one file per schema table.
        as_of: the evaluation instant, or --as-of text (`parse_as_of`; None: now).
        out: the results file; written atomically.
        fmt: "jsonl", "csv" or "parquet".
        params: --param overrides as text.
        on_bad_row: "fail" (bad rows stop the run) or "skip" (rejects go to `<out>.rejects.jsonl`).
        progress: given a task description and a total, returns a callback advanced by a count.
        state: the state file (`--state`): previous results for transitions, and the action
            ledger for cooldowns, caps and exactly-once delivery (engine/campaigns.py).
        dry_run: decide everything, write nothing (no results, actions or state).
        checked: `check_rule_set(rules_dir, params)`, when the caller has it already.

    Returns:
        The check result, and the report when the rules were valid.

    Raises:
        DiagnosticError: the snapshot could not be read (bad files, columns or rows).
        InputError: --as-of is not a date or timestamp.
    """
    timings: dict[str, float] = {}
    began = time.perf_counter()
    check, as_of = check_with_as_of(rules_dir, params, as_of, checked)
    if check.rule_set is None:
        return EvaluateOutcome(check)
    rules = check.rule_set
    compiled = compile_rule_set(rules)
    columns = result_columns(rules)
    timings["compile"] = time.perf_counter() - began

    began = time.perf_counter()
    snapshot: Snapshot = read_snapshot(data_dir, rules.model.schema_, rules.timezone, as_of, on_bad_row)
    timings["read"] = time.perf_counter() - began

    began = time.perf_counter()
    members = len(snapshot.members)
    advance = progress("evaluating", members * compiled.stage_count) if progress and members else None
    evaluation = compiled.evaluate(snapshot, as_of, progress=advance)
    timings["evaluate"] = time.perf_counter() - began

    began = time.perf_counter()
    # Results and actions.jsonl are renamed into place only after the state file commits.
    decision, written, actions_file = write_outputs(
        rules, compiled, evaluation, results=out, state=state, dry_run=dry_run,
        write_results=lambda path: write_rows(evaluation.rows, columns, path, fmt, compiled.tz))
    rejects_file = None
    if on_bad_row == "skip" and not dry_run:
        # After the results, so that a run failing before them leaves no file at all.
        rejects_file = rejects_path(out)
        write_rejects(snapshot.rejects, rejects_file)
    timings["write"] = time.perf_counter() - began
    report = EvaluateReport(out, fmt, evaluation.as_of, written, snapshot.stats, members, rejects_file,
                            summarize(evaluation, rules), evaluation, seconds=timings,
                            rejected_by_table=dict(Counter(reject.table for reject in snapshot.rejects)),
                            campaigns=decision, actions_file=actions_file, dry_run=dry_run)
    return EvaluateOutcome(check, report)


def render_summary(report: EvaluateReport, console) -> None:
    """The summary table (rich): counts per tier, class and segment, then the input counts."""
    from rich.table import Table

    total = report.members or 1
    table = Table(title=f"memberrules evaluate · as of {report.as_of.isoformat()} · engine {report.engine}",
                  title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("result")
    table.add_column("value")
    table.add_column("members", justify="right")
    table.add_column("share", justify="right")
    for title, entries in report.summary.sections:
        for i, (label, count) in enumerate(entries):
            table.add_row(title if i == 0 else "", label, f"{count:,}", f"{100 * count / total:.1f}%")
        table.add_section()
    console.print(table)

    stats = report.snapshot
    lines = []
    for name, read in stats.rows_read.items():
        extra = [f"{report.members:,} members evaluated"] if name == "member" else []
        if report.rejected_by_table.get(name):
            extra.append(f"{report.rejected_by_table[name]:,} rejected")
        if stats.events_after_as_of.get(name):
            extra.append(f"{stats.events_after_as_of[name]:,} after as_of ignored")
        if stats.events_unknown_member.get(name):
            extra.append(f"{stats.events_unknown_member[name]:,} of unknown members ignored")
        lines.append(f"  {name}: {read:,} rows read" + (f" ({', '.join(extra)})" if extra else ""))
    console.print("input:")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    if report.rejects_file is not None:
        console.print(f"{report.rejected:,} rows rejected → {report.rejects_file}", markup=False, highlight=False)
    if report.campaigns is not None and report.campaigns.summaries:  # type: ignore[attr-defined]
        console.print("campaigns:")
        for line in summary_table(report.campaigns):  # type: ignore[arg-type]
            console.print("  " + line, markup=False, highlight=False)
        if report.actions_file is not None:
            console.print(f"actions → {report.actions_file}", markup=False, highlight=False)
    if report.dry_run:
        console.print("dry run: nothing written", markup=False, highlight=False)
        return
    seconds = report.seconds
    # The DuckDB engine writes a batch as soon as the query hands it over: one step, not two.
    steps = f"evaluate {seconds.get('evaluate', 0):.2f}s, write {seconds['write']:.2f}s" if "write" in seconds \
        else f"evaluate and write {seconds.get('evaluate', 0):.2f}s"
    console.print(f"wrote {report.rows_written:,} rows to {report.out} ({report.fmt}) in "
                  f"{sum(seconds.values()):.2f}s (read {seconds.get('read', 0):.2f}s, {steps})",
                  markup=False, highlight=False)
