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


if __name__ == "__main__":
    main()
