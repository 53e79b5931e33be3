"""The DuckDB engine's memory limit: beyond it, data spills to --spill-dir and the files are the same;
when even spilling cannot help, MR592 says what to change and nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberrules.cli import main
from memberrules.engine import duckdb_engine
from memberrules.engine.demo import write_demo_snapshot
from memberrules.engine.duckdb_engine import Limits, connect, evaluate_rules_with
from memberrules.engine.errors import DiagnosticError

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
AS_OF = "2026-11-01T00:00:00+08:00"


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    """150,000 members: the default pack's query over them needs well over 160MB."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gen_scale import generate

    data = tmp_path_factory.mktemp("large")
    generate(data, members=150_000, orders=1_500_000, events=1_500_000, threads=2)
    return data


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("small") / "data"
    write_demo_snapshot(data, members=500)
    return data


def _evaluate(data: Path, out: Path, limits: Limits):
    outcome = evaluate_rules_with("duckdb", limits)(RULES, data, as_of=AS_OF, out=out / "results.jsonl")
    assert outcome.report is not None, outcome.check.diagnostics
    return outcome.report


def test_a_run_beyond_the_memory_limit_spills_and_writes_the_same_files(large, tmp_path, monkeypatch):
    _evaluate(large, tmp_path / "roomy", Limits(threads=2))
    spill = tmp_path / "spill"
    _evaluate(large, tmp_path / "tight", Limits("160MB", spill, threads=2))
    for name in ("results.jsonl", "actions.jsonl"):
        assert (tmp_path / "tight" / name).read_bytes() == (tmp_path / "roomy" / name).read_bytes(), name

    # The same limit with spilling forbidden fails: the run above did spill (DuckDB removes
    # its spill files when done, so they cannot be looked at afterwards).
    def no_spilling(limits: Limits):
        connection = connect(limits)
        connection.execute("SET max_temp_directory_size = '0B'").fetchall()
        return connection

    monkeypatch.setattr(duckdb_engine, "connect", no_spilling)
    with pytest.raises(DiagnosticError) as error:
        _evaluate(large, tmp_path / "no_spill", Limits("160MB", spill, threads=2))
    assert error.value.diagnostics[0].code == "MR592"
    assert not (tmp_path / "no_spill").exists() or not any((tmp_path / "no_spill").iterdir())


def test_limits_reach_the_connection(tmp_path):
    connection = connect(Limits("300MB", tmp_path / "spill", threads=1))
    settings = dict(connection.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory', 'threads')"
    ).fetchall())
    connection.close()
    assert settings["temp_directory"] == str(tmp_path / "spill")
    assert settings["threads"] == "1"
    assert settings["memory_limit"].startswith("286.1")  # DuckDB prints 300MB as 286.1 MiB


@pytest.mark.parametrize("size", ["4", "lots", "4 GBs", "-1GB", ""])
def test_a_memory_limit_that_is_not_a_size_is_refused(size):
    with pytest.raises(ValueError, match="expected a size such as 512MB or 4GB"):
        Limits(size)


def test_the_cli_reports_running_out_of_memory_with_what_to_change(small, tmp_path):
    out = tmp_path / "out" / "results.jsonl"
    result = CliRunner().invoke(main, ["evaluate", str(RULES), "--data", str(small), "--as-of", AS_OF,
                                       "--out", str(out), "--engine", "duckdb", "--memory-limit", "16MB",
                                       "--spill-dir", str(tmp_path / "spill")])
    assert result.exit_code == 2, result.output
    assert "DuckDB ran out of memory (memory limit 16MB, spilling to " in result.stderr
    assert "[MR592]" in result.stderr and "hint: raise --memory-limit" in result.stderr
    assert f"failed: nothing written to {out}" in result.stderr
    assert not out.exists() and not (out.parent / "actions.jsonl").exists()


def test_the_memory_limit_comes_from_the_environment_too_and_reaches_diff(small):
    result = CliRunner().invoke(main, ["diff", str(RULES), str(RULES), "--data", str(small), "--as-of", AS_OF,
                                       "--engine", "duckdb"], env={"MEMBERRULES_MEMORY_LIMIT": "16MB"})
    assert result.exit_code == 2, result.output
    assert "DuckDB ran out of memory (memory limit 16MB" in result.stderr


def test_an_unreadable_memory_limit_is_a_usage_error(small):
    result = CliRunner().invoke(main, ["evaluate", str(RULES), "--data", str(small), "--memory-limit", "4"])
    assert result.exit_code == 2
    assert "Invalid value for --memory-limit: memory limit '4': expected a size such as 512MB or 4GB" in result.output
