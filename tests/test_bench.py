"""The benchmarks in bench/ run, at a small size, and print their tables.

Performance goals are met in the benchmarks themselves (`make bench`), never in timed
tests: these only prove the scripts work on a fresh checkout, as CI runs them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.heavy


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_validate_benchmark_prints_rules_per_second_against_the_target():
    out = run_bench("bench_validate.py", "--rules", "200")
    assert "check_rule_set (in process, best of 3)" in out
    assert "memberrules validate (end to end)" in out
    assert "200 rules" in out


def test_python_engine_benchmark_agrees_with_the_hand_written_loop():
    out = run_bench("bench_python.py", "--members", "2000", "--repeat", "1")
    assert "hand-written Python loop" in out
    assert "memberrules python engine, default pack" in out
    assert "results agree: True" in out


def test_scale_benchmark_runs_every_measurement_at_a_small_size(tmp_path):
    out = run_bench("bench_scale.py", "--members", "2000", "--orders", "20000", "--events", "20000",
                    "--python-members", "1000", "--work", str(tmp_path))
    for row in ("evaluate --engine duckdb", "hand-written DuckDB SQL", "Python engine alone, files → rows",
                "evaluate --engine python, default pack", "its SQL without campaigns → DuckDB's JSON writer"):
        assert row in out
    assert "compiled / hand-written (same results)" in out
    assert "end to end on the same 1,000 members" in out
    assert "cpu s" in out and "cores busy; even with every core busy" in out
