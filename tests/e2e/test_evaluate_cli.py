"""`memberrules evaluate`, `test` and `demo` end to end: exit codes, atomic output, determinism."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberrules.cli import main
from memberrules.engine.demo import write_demo_snapshot

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
AS_OF = "2026-11-01T00:00:00+08:00"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    write_demo_snapshot(data, members=300, seed=11)
    return data


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def evaluate(rules: Path, data: Path, out: Path, *extra: str):
    return run("evaluate", str(rules), "--data", str(data), "--as-of", AS_OF, "--out", str(out), *extra)


def test_evaluate_writes_one_row_per_member_and_a_summary(demo_data, tmp_path):
    out = tmp_path / "results.jsonl"
    result = evaluate(RULES, demo_data, out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 300 and [r["member_id"] for r in rows] == sorted(r["member_id"] for r in rows)
    assert list(rows[0])[:3] == ["member_id", "tier", "next_tier"]
    assert "engine python" in result.output
    assert "300 members evaluated" in result.output
    assert "rfm" in result.output and "lifecycle" in result.output and "vip" in result.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_two_runs_are_byte_identical(demo_data, tmp_path, fmt):
    first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    assert evaluate(RULES, demo_data, first, "--format", fmt).exit_code == 0
    assert evaluate(RULES, demo_data, second, "--format", fmt).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


def test_the_format_follows_the_out_suffix(demo_data, tmp_path):
    out = tmp_path / "results.csv"
    assert evaluate(RULES, demo_data, out).exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("member_id,tier,next_tier,")


def test_the_default_output_is_out_results_jsonl(demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("evaluate", str(RULES), "--data", str(demo_data), "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "results.jsonl").exists()


def test_rule_errors_exit_1_and_write_nothing(demo_data, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    metrics = rules / "metrics.yaml"
    metrics.write_text(metrics.read_text(encoding="utf-8").replace("count(orders within rfm_window)",
                                                                    "count(orders within 30)"), encoding="utf-8")
    out = tmp_path / "out" / "results.jsonl"
    result = evaluate(rules, demo_data, out)
    assert result.exit_code == 1
    assert "MR307" in result.output
    assert not out.parent.exists() or not any(out.parent.iterdir())


def _corrupt(data: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad-data"
    shutil.copytree(data, bad)
    lines = (bad / "member.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[3].split(",")
    cells[4] = "lots"  # growth_value of the third member
    lines[3] = ",".join(cells)
    (bad / "member.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad


def test_bad_input_exits_2_with_file_row_col_and_writes_nothing(demo_data, tmp_path):
    bad = _corrupt(demo_data, tmp_path)
    out = tmp_path / "out" / "results.jsonl"
    out.parent.mkdir()
    result = evaluate(RULES, bad, out)
    assert result.exit_code == 2
    assert "member.csv:4:" in result.output and "MR503" in result.output
    assert list(out.parent.iterdir()) == []


def test_a_failed_run_keeps_the_previous_results(demo_data, tmp_path):
    out = tmp_path / "results.jsonl"
    assert evaluate(RULES, demo_data, out).exit_code == 0
    before = out.read_bytes()
    assert evaluate(RULES, _corrupt(demo_data, tmp_path), out).exit_code == 2
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_skip_sets_bad_rows_aside_and_counts_them(demo_data, tmp_path):
    out = tmp_path / "results.jsonl"
    result = evaluate(RULES, _corrupt(demo_data, tmp_path), out, "--on-bad-row", "skip")
    assert result.exit_code == 0, result.output
    rows = out.read_text(encoding="utf-8").splitlines()
    rejects = [json.loads(line) for line in (tmp_path / "results.jsonl.rejects.jsonl").read_text().splitlines()]
    assert len(rows) == 299 and len(rejects) == 1
    assert rejects[0]["table"] == "member" and rejects[0]["column"] == "growth_value"
    # read = evaluated + rejected
    assert "member: 300 rows read (299 members evaluated, 1 rejected)" in result.output
    assert "1 rows rejected" in result.output


def test_a_bad_as_of_is_a_usage_error(demo_data, tmp_path):
    result = run("evaluate", str(RULES), "--data", str(demo_data), "--as-of", "yesterday",
                 "--out", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 2 and "--as-of" in result.output


def test_an_unknown_param_is_a_usage_error(demo_data, tmp_path):
    result = evaluate(RULES, demo_data, tmp_path / "r.jsonl", "--param", "rfm_frequnt=9")
    assert result.exit_code == 2 and "MR403" in result.output


def test_a_param_changes_the_results(demo_data, tmp_path):
    base, strict = tmp_path / "base.jsonl", tmp_path / "strict.jsonl"
    assert evaluate(RULES, demo_data, base).exit_code == 0
    assert evaluate(RULES, demo_data, strict, "--param", "active_days=1").exit_code == 0
    active = [sum(json.loads(line)["lifecycle"] == "active" for line in path.read_text().splitlines())
              for path in (base, strict)]
    assert active[0] > active[1]


def test_demo_writes_every_table(tmp_path):
    result = run("demo", str(tmp_path / "d"), "--members", "20", "--seed", "3")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["benefits.csv", "events.csv", "member.csv",
                                                                   "orders.csv"]


TEST_RULES = """\
version: 1
schema:
  member:
    key: member_id
    fields: {member_id: string, growth: int}
tiers:
  by: growth
  levels:
    - {name: normal, min: 0}
    - {name: gold, min: 100}
"""
TESTS = """\
tests:
  - name: gold at 100
    as_of: 2026-11-01
    members: [{member_id: m1, growth: 100}]
    expect:
      - {member: m1, tier: gold}
"""


def test_the_test_command_exits_0_or_1_and_writes_junit(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(TEST_RULES)
    (rules / "tier.test.yaml").write_text(TESTS)
    junit = tmp_path / "junit.xml"
    result = run("test", str(rules), "--junit", str(junit), "--coverage")
    assert result.exit_code == 0, result.output
    assert "ok   gold at 100" in result.output and junit.exists()
    (rules / "tier.test.yaml").write_text(TESTS.replace("tier: gold", "tier: normal"))
    result = run("test", str(rules))
    assert result.exit_code == 1
    assert "member m1, as_of 2026-11-01, tier: expected normal, got gold" in result.output


def test_evaluate_through_the_installed_command(demo_data, tmp_path):
    out = tmp_path / "results.jsonl"
    command = [str(Path(sys.executable).parent / "memberrules"), "evaluate", str(RULES), "--data", str(demo_data),
               "--as-of", AS_OF, "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "engine python" in finished.stdout
    assert len(out.read_text(encoding="utf-8").splitlines()) == 300
