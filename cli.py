"""The `memberrules` command: read options, call the engine, print, exit 0 / 1 / 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from memberrules.engine.check import CheckResult, check_rule_set
from memberrules.engine.errors import render
from memberrules.engine.model import json_schema

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{value}': write --param name=value", param_hint="--param")
        params[name.strip()] = text
    return params


def _duckdb_limit_options(command):
    """--memory-limit and --spill-dir, for the commands that may run the DuckDB engine."""
    command = click.option("--spill-dir", type=click.Path(file_okay=False, path_type=Path),
                           envvar="MEMBERRULES_SPILL_DIR", show_envvar=True,
                           help="DuckDB engine: where what exceeds --memory-limit spills "
                                "[default: <system temp>/memberrules-duckdb]")(command)
    return click.option("--memory-limit", metavar="SIZE", envvar="MEMBERRULES_MEMORY_LIMIT", show_envvar=True,
                        help="DuckDB engine: memory it may use before spilling to disk, e.g. 512MB or 16GB "
                             "[default: 4GB]")(command)


def _duckdb_limits(memory_limit: str | None, spill_dir: Path | None):
    from memberrules.engine.duckdb_engine import DEFAULT_MEMORY_LIMIT, Limits

    try:
        return Limits(memory_limit or DEFAULT_MEMORY_LIMIT, spill_dir)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--memory-limit") from None


def _print_diagnostics(result: CheckResult, fmt: str) -> None:
    if fmt == "json" or result.diagnostics:
        click.echo(render(result.diagnostics, fmt, result.sources), err=fmt == "text")


def _summary_line(result: CheckResult) -> str:
    errors = sum(d.is_error for d in result.diagnostics)
    warnings = len(result.diagnostics) - errors
    files = len(result.files)
    if result.ok:
        rules = result.rule_set
        counts = (f"{len(rules.metrics)} metrics, {len(rules.classes)} class lists, "
                  f"{len(rules.segments)} segments, {len(rules.campaigns)} campaigns")
        return f"ok: {files} file(s), {counts}" + (f", {warnings} warning(s)" if warnings else "")
    return f"failed: {errors} error(s), {warnings} warning(s) in {files} file(s)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memberrules")
def main() -> None:
    """memberrules: the rule book of a loyalty program, as YAML in git."""


@main.command()
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              help="text for people, json for tools, github for Actions annotations")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a param")
@click.option("--strict", is_flag=True, help="treat warnings as errors")
def validate(rules: Path, fmt: str, params: tuple[str, ...], strict: bool) -> None:
    """Parse and type-check the rule set RULES (a directory of *.yaml files)."""
    result = check_rule_set(rules, _parse_params(params))
    _print_diagnostics(result, fmt)
    if fmt == "text":
        click.echo(_summary_line(result), err=True)
    failed = not result.ok or (strict and result.diagnostics)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
def schema() -> None:
    """Print the JSON Schema of rule files (for editors and check-jsonschema)."""
    click.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@main.command("fmt")
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="write nothing; exit 1 if a file would change")
def fmt_command(rules: Path, check: bool) -> None:
    """Rewrite every expression of RULES in canonical form; comments and layout are kept."""
    from memberrules.engine.fmt import format_rule_set

    result = format_rule_set(rules, check=check)
    if result.diagnostics:
        click.echo(render(result.diagnostics, "text", result.sources), err=True)
    for file in result.changed:
        click.echo(f"would reformat {file}" if check else f"reformatted {file}")
    skipped = sum(f.skipped for f in result.files)
    unchanged = len(result.files) - len(result.changed) - skipped
    verb = "would be reformatted" if check else "reformatted"
    summary = f"{len(result.changed)} file(s) {verb}, {unchanged} unchanged"
    click.echo(summary + (f", {skipped} left untouched because of errors" if skipped else ""), err=True)
    failed = not result.ok or (check and result.changed)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
def init_command(directory: Path) -> None:
    """Write a new rule set (schema, rules, a test file, README) into DIRECTORY."""
    from memberrules.engine.init import InitError, init_rule_set

    try:
        written = init_rule_set(directory)
    except InitError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: memberrules validate {directory} && memberrules test {directory}", err=True)
    sys.exit(EXIT_OK)


@main.command("evaluate")
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="snapshot directory: one CSV / JSONL / Parquet file per schema table")
@click.option("--as-of", "as_of", metavar="T", help="evaluation instant: 2026-11-01, 2026-11-01T10:00 (rule-set "
              "timezone) or with an offset; default now")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="results file [default: out/results.FORMAT]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="results format [default: from --out's suffix, else jsonl]")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a param")
@click.option("--on-bad-row", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="skip: set bad rows aside in OUT.rejects.jsonl and go on")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="state file (SQLite, created if missing): last results for transitions, and the action "
                   "ledger for cooldowns, caps and exactly-once actions")
@click.option("--dry-run", is_flag=True, help="decide and summarise, write nothing (no results, actions or state)")
@click.option("--engine", type=click.Choice(["python", "duckdb", "auto"]), default="auto", show_default=True,
              help="python: the reference engine; duckdb: the compiled SQL on DuckDB, for large snapshots "
                   "(campaigns and --state too, same files); auto: duckdb from 20,000 members, else python")
@_duckdb_limit_options
def evaluate_command(rules: Path, data_dir: Path, as_of: str | None, out: Path | None, fmt: str | None,
                     params: tuple[str, ...], on_bad_row: str, state: Path | None, dry_run: bool,
                     engine: str = "auto", memory_limit: str | None = None, spill_dir: Path | None = None) -> None:
    """Evaluate RULES on the snapshot in --data: one result row per member, and a summary."""
    from rich.console import Console

    from memberrules.engine.duckdb_engine import evaluate_rules_with
    from memberrules.engine.errors import DiagnosticError
    from memberrules.engine.evaluate import InputError, default_out, format_for, render_summary
    from memberrules.engine.state import StateError

    fmt = format_for(out, fmt)
    out = out or default_out(fmt)
    # The same call, run by the engine asked for.
    evaluate_rules = evaluate_rules_with(engine, _duckdb_limits(memory_limit, spill_dir))
    try:
        outcome = evaluate_rules(rules, data_dir, as_of=as_of, out=out, fmt=fmt, params=_parse_params(params),
                                 on_bad_row=on_bad_row, progress=_progress_bar(), state=state, dry_run=dry_run)
    except (InputError, StateError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except DiagnosticError as error:
        click.echo(render(error.diagnostics, "text", {}), err=True)
        click.echo(f"failed: nothing written to {out}", err=True)
        sys.exit(EXIT_USAGE)
    if outcome.report is None:
        _print_diagnostics(outcome.check, "text")
        click.echo(_summary_line(outcome.check), err=True)
        errors = [d for d in outcome.check.diagnostics if d.is_error]
        sys.exit(EXIT_USAGE if errors and all(d.code == "MR403" for d in errors) else EXIT_FAILED)
    render_summary(outcome.report, Console(soft_wrap=True))
    sys.exit(EXIT_OK)


def _progress_bar():
    """A rich progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(console=Console(stderr=True), transient=True)

    def start(description: str, total: int):
        progress.start()
        task = progress.add_task(description, total=total)

        def advance(count: int) -> None:
            progress.advance(task, count)
            if progress.tasks[task].finished:
                progress.stop()
        return advance
    return start


@main.command("compile")
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--dialect", type=click.Choice(["duckdb", "spark", "bigquery", "snowflake", "postgres", "trino"]),
              default="duckdb", show_default=True)
@click.option("--as-of", "as_of", metavar="T", help="fix the evaluation instant (as for evaluate); default: the "
              "time the query runs")
@click.option("--table", "tables", multiple=True, metavar="TABLE=RELATION",
              help="read a schema table from this relation, e.g. --table member=crm.members")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a param")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the SQL here [default: stdout]")
def compile_command(rules: Path, dialect: str, as_of: str | None, tables: tuple[str, ...], params: tuple[str, ...],
                    out: Path | None) -> None:
    """The SQL that RULES become, for DuckDB, Spark, BigQuery, Snowflake, Postgres or Trino."""
    from memberrules.engine.evaluate import parse_as_of
    from memberrules.engine.sql import compile_sql

    relations = _parse_params(tables)
    result = check_rule_set(rules, _parse_params(params))
    if result.rule_set is None:
        _print_diagnostics(result, "text")
        click.echo(_summary_line(result), err=True)
        sys.exit(EXIT_FAILED)
    unknown = sorted(set(relations) - set(result.rule_set.tables))
    if unknown:
        raise click.BadParameter(f"no schema table {', '.join(unknown)}", param_hint="--table")
    try:
        instant = parse_as_of(as_of, result.rule_set.timezone) if as_of else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--as-of") from None
    script = compile_sql(result.rule_set, dialect, as_of=instant, tables=relations).sql()
    if out is None:
        click.echo(script, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(script, encoding="utf-8")
    if result.rule_set.campaigns:
        click.echo(f"note: {len(result.rule_set.campaigns)} campaign(s) are not compiled; they run on "
                   "`evaluate --engine python`", err=True)
    sys.exit(EXIT_OK)


@main.command("demo")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--members", default=10_000, show_default=True, type=click.IntRange(min=0), help="number of members")
@click.option("--seed", default=7, show_default=True, type=int, help="random seed (same seed, same files)")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
def demo_command(directory: Path, members: int, seed: int, fmt: str) -> None:
    """Write a demo snapshot (member, orders, events, benefits) into DIRECTORY."""
    from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot

    paths = write_demo_snapshot(directory, members=members, seed=seed, fmt=fmt)
    for path in paths.values():
        click.echo(f"wrote {path}")
    click.echo(f"shaped around as_of {DEFAULT_AS_OF.isoformat()}: memberrules evaluate rules --data {directory} "
               f"--as-of {DEFAULT_AS_OF.isoformat()}", err=True)
    sys.exit(EXIT_OK)


@main.command("test")
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="also write JUnit XML here")
@click.option("--coverage", is_flag=True, help="list tier levels, class cases, segments and campaigns no test reached")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a param in every test")
def test_command(rules: Path, junit: Path | None, coverage: bool, params: tuple[str, ...]) -> None:
    """Run the rule set's own tests (*.test.yaml in RULES); exit 1 on any failure."""
    from memberrules.engine.testing import render_report, run_tests, summary_line, write_junit

    report = run_tests(rules, _parse_params(params))
    if report.check.rule_set is None:
        _print_diagnostics(report.check, "text")
        click.echo(_summary_line(report.check), err=True)
        sys.exit(EXIT_FAILED)
    if report.problems:
        click.echo(render(report.problems, "text", report.sources), err=True)
    text = render_report(report, coverage)
    if text:
        click.echo(text)
    if junit is not None:
        write_junit(report, junit)
    click.echo(summary_line(report), err=True)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@main.command("explain")
@click.argument("rules", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="snapshot directory: one CSV / JSONL / Parquet file per schema table")
@click.option("--member", "member", required=True, metavar="ID", help="the member's key")
@click.option("--as-of", "as_of", metavar="T", help="evaluation instant (as for evaluate); default now")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a param")
@click.option("--state", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="state file of evaluate --state, read only: previous results (transitions) and the "
                   "action ledger (cooldowns, caps)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              help="text for people, json for tools")
def explain_command(rules: Path, data_dir: Path, member: str, as_of: str | None, params: tuple[str, ...],
                    state: Path | None, fmt: str) -> None:
    """Why member ID got each result: every rule with the values it saw, and the nearest misses."""
    from memberrules.engine.errors import DiagnosticError
    from memberrules.engine.evaluate import InputError
    from memberrules.engine.explain import UnknownMember, explain_rules, render_json, render_rich, render_text
    from memberrules.engine.state import StateError

    try:
        outcome = explain_rules(rules, data_dir, member, as_of=as_of, params=_parse_params(params), state=state)
    except (InputError, UnknownMember, StateError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except DiagnosticError as error:
        click.echo(render(error.diagnostics, "text", {}), err=True)
        sys.exit(EXIT_USAGE)
    if outcome.explanation is None:
        _print_diagnostics(outcome.check, "text")
        click.echo(_summary_line(outcome.check), err=True)
        errors = [d for d in outcome.check.diagnostics if d.is_error]
        sys.exit(EXIT_USAGE if errors and all(d.code == "MR403" for d in errors) else EXIT_FAILED)
    if fmt == "json":
        click.echo(render_json(outcome.explanation), nl=False)
    elif sys.stdout.isatty():
        from rich.console import Console

        console = Console(soft_wrap=True, highlight=False)
        for line in render_rich(outcome.explanation):
            console.print(line)
    else:
        click.echo(render_text(outcome.explanation), nl=False)
    sys.exit(EXIT_OK)


@main.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="snapshot directory both rule sets are evaluated on")
@click.option("--as-of", "as_of", metavar="T", help="evaluation instant (as for evaluate); default now")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              help="markdown reads well as a pull-request comment")
@click.option("--fail-on", "fail_on", metavar="N|P%",
              help="exit 1 when more than N members (or P% of them) change tier or class")
@click.option("--engine", type=click.Choice(["python", "duckdb", "auto"]), default="auto", show_default=True,
              help="python: the reference engine; duckdb: for large snapshots (the same diff); "
                   "auto: duckdb from 20,000 members, else python")
@_duckdb_limit_options
def diff_command(old: str, new: str, data_dir: Path, as_of: str | None, fmt: str, fail_on: str | None,
                 engine: str, memory_limit: str | None = None, spill_dir: Path | None = None) -> None:
    """What changing the rules from OLD to NEW does to the members of a snapshot.

    OLD and NEW are rule-set directories or git revisions such as main:rules or HEAD~1:rules
    (read with git, never checked out).
    """
    from memberrules.engine.diff import diff_rule_sets, parse_threshold, render as render_diff
    from memberrules.engine.errors import DiagnosticError
    from memberrules.engine.gitsource import GitSourceError

    try:
        threshold = parse_threshold(fail_on) if fail_on is not None else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--fail-on") from None
    try:
        outcome = diff_rule_sets(old, new, data_dir, as_of, engine=engine,
                                 limits=_duckdb_limits(memory_limit, spill_dir))
    except (GitSourceError, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except DiagnosticError as error:
        click.echo(render(error.diagnostics, "text", {}), err=True)
        sys.exit(EXIT_USAGE)
    if outcome.diff is None:
        click.echo(render(outcome.diagnostics, "text", outcome.sources), err=True)
        click.echo(f"failed: {len(outcome.diagnostics)} error(s); fix them before comparing", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(render_diff(outcome.diff, fmt), nl=fmt != "markdown")
    if threshold is not None and threshold.exceeded(outcome.diff):
        click.echo(f"failed: {outcome.diff.members_changed} of {outcome.diff.members} members change tier or "
                   f"class, more than --fail-on {fail_on}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
