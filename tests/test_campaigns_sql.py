"""Campaigns on the DuckDB engine: the same results, actions and state file as the Python engine."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conftest import state_file_rows
from memberrules.engine.check import check_rule_set
from memberrules.engine.demo import write_demo_snapshot
from memberrules.engine.duckdb_engine import choose_engine, evaluate_rules_with

RULES = Path(__file__).resolve().parents[1] / "rules"
DAYS = ["2026-11-09", "2026-11-10", "2026-11-11"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    write_demo_snapshot(data, members=2_000)
    return data


def _run(engine: str, data: Path, day: str, out: Path, state: Path, dry_run: bool = False):
    outcome = evaluate_rules_with(engine)(RULES, data, as_of=day, out=out / day / "results.jsonl", state=state,
                                          dry_run=dry_run)
    assert outcome.report is not None, outcome.check.diagnostics
    return outcome.report


def test_consecutive_days_with_a_state_file_give_the_python_engines_files(snapshot, tmp_path):
    for day in DAYS:
        for engine in ("python", "duckdb"):
            report = _run(engine, snapshot, day, tmp_path / engine, tmp_path / f"{engine}.db")
            assert report.actions_file is not None
        for name in ("results.jsonl", "actions.jsonl"):
            python = (tmp_path / "python" / day / name).read_bytes()
            assert (tmp_path / "duckdb" / day / name).read_bytes() == python, (day, name)
    first = (tmp_path / "duckdb" / DAYS[0] / "actions.jsonl").read_text().splitlines()
    assert len(first) > 100
    python_state, duckdb_state = state_file_rows(tmp_path / "python.db"), state_file_rows(tmp_path / "duckdb.db")
    assert duckdb_state == python_state
    assert len(duckdb_state["runs"]) == 3 and duckdb_state["ledger"]


def test_tier_up_against_the_previous_run_fires_on_both_engines(snapshot, tmp_path):
    rules = check_rule_set(RULES).rule_set
    lowest = rules.tiers.names()[0]
    for engine in ("python", "duckdb"):
        _run(engine, snapshot, DAYS[0], tmp_path / engine, tmp_path / f"{engine}.db")
        # Everyone held the lowest tier after the previous run: every higher tier now is a move up.
        with sqlite3.connect(tmp_path / f"{engine}.db") as db:
            db.execute("UPDATE member_state SET tier = ?", (lowest,))
        _run(engine, snapshot, DAYS[1], tmp_path / engine, tmp_path / f"{engine}.db")
    actions = (tmp_path / "duckdb" / DAYS[1] / "actions.jsonl").read_text()
    assert actions == (tmp_path / "python" / DAYS[1] / "actions.jsonl").read_text()
    congrats = [line for line in actions.splitlines() if line.startswith('{"campaign":"congrats"')]
    assert len(congrats) > 50
    assert f'"previous_tier":"{lowest}"' in congrats[0]
    assert state_file_rows(tmp_path / "duckdb.db") == state_file_rows(tmp_path / "python.db")


def test_a_dry_run_decides_the_same_actions_and_writes_nothing(snapshot, tmp_path):
    decisions = {}
    for engine in ("python", "duckdb"):
        state = tmp_path / f"{engine}.db"
        _run(engine, snapshot, DAYS[0], tmp_path / engine, state)
        before = state.read_bytes()
        report = _run(engine, snapshot, DAYS[1], tmp_path / engine, state, dry_run=True)
        assert state.read_bytes() == before
        assert not (tmp_path / engine / DAYS[1]).exists()
        assert report.actions_file is None
        decisions[engine] = report.campaigns
    tz = decisions["python"].as_of.tzinfo
    assert decisions["duckdb"].jsonl(tz) == decisions["python"].jsonl(tz)
    assert decisions["duckdb"].jsonl(tz)
    assert [vars(s) for s in decisions["duckdb"].summaries.values()] == \
        [vars(s) for s in decisions["python"].summaries.values()]


def test_auto_picks_duckdb_for_large_snapshots_with_campaigns_and_state(snapshot, monkeypatch, tmp_path):
    import memberrules.engine.duckdb_engine as duckdb_engine

    rules = check_rule_set(RULES).rule_set
    assert rules.campaigns
    monkeypatch.setattr(duckdb_engine, "AUTO_MIN_MEMBERS", 1_000)
    assert choose_engine("auto", rules, snapshot, tmp_path / "state.db") == "duckdb"
    monkeypatch.setattr(duckdb_engine, "AUTO_MIN_MEMBERS", 10_000)
    assert choose_engine("auto", rules, snapshot, tmp_path / "state.db") == "python"


TRANSITIONS = """\
campaigns:
  welcome_to_vip:
    on: entered high_value
    action: {channel: in_app, template: "welcome {{ member.name }}"}
  left_the_nudge:
    on: left benefit_expiring
    action: {channel: in_app, template: "gap {{ gap }}"}
  went_silent:
    on: class lifecycle from active to silent
    action: {channel: in_app, template: "{{ recency_days }} days"}
  first_purchase:
    on: first_order
    action: {channel: in_app, template: "{{ orders_total }} order(s), {{ monetary }} spent"}
"""


def test_segment_class_and_first_order_transitions_give_the_same_actions(snapshot, tmp_path):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("*.test.yaml"))
    (rules / "transitions.yaml").write_text(TRANSITIONS, encoding="utf-8")
    days = ["2026-10-20", "2026-11-20"]  # a month apart: members fall silent, buy for the first time
    for engine in ("python", "duckdb"):
        for day in days:
            outcome = evaluate_rules_with(engine)(rules, snapshot, as_of=day,
                                                  out=tmp_path / engine / day / "results.jsonl",
                                                  state=tmp_path / f"{engine}.db")
            assert outcome.report is not None, outcome.check.diagnostics
    python = (tmp_path / "python" / days[1] / "actions.jsonl").read_text()
    assert (tmp_path / "duckdb" / days[1] / "actions.jsonl").read_text() == python
    for campaign in ("welcome_to_vip", "left_the_nudge", "went_silent", "first_purchase"):
        assert f'{{"campaign":"{campaign}"' in python, campaign
    assert state_file_rows(tmp_path / "duckdb.db") == state_file_rows(tmp_path / "python.db")


TEMPLATES = """\
campaigns:
  printed_from_columns:
    when: vip or monetary > 0
    action:
      channel: in_app
      template: "{{ member.name }} ({{ member.city }}, born {{ member.birthday }}) {{ tier }}/{{ next_tier }}/{{ gap }}:
        {{ monetary }} {{ avg_spend }} {{ vip }} {{ rfm }} {{ rfm_recent_days }} {{ campaign }} {{ as_of }}"
  rendered_one_by_one:
    when: lifecycle == 'silent' or high_value
    action:
      channel: in_app
      template: "{% if vip %}VIP {% endif %}{{ monetary | round(1) }} {{ classes.rfm }} {{ segments | length }}
        {{ previous.tier }} {{ member.registered_at }} {{ earned_tier }} {{ keep_gap }}"
  at_risk:
    on: tier_at_risk
    action: {channel: in_app, template: "{{ earned_tier }} {{ keep_gap }}"}
"""


def test_every_kind_of_template_gives_the_python_engines_messages(snapshot, tmp_path):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("*.test.yaml", "campaigns.yaml"))
    (rules / "campaigns.yaml").write_text(TEMPLATES, encoding="utf-8")
    day = "2026-12-31"  # the day before the yearly review: some members are at risk
    for engine in ("python", "duckdb"):
        outcome = evaluate_rules_with(engine)(rules, snapshot, as_of=day, out=tmp_path / engine / "results.jsonl")
        assert outcome.report is not None, outcome.check.diagnostics
    python = (tmp_path / "python" / "actions.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "duckdb" / "actions.jsonl").read_text(encoding="utf-8") == python
    for campaign in ("printed_from_columns", "rendered_one_by_one", "at_risk"):
        assert f'{{"campaign":"{campaign}"' in python, campaign


def test_a_failed_decision_leaves_no_files_while_the_results_writer_runs(snapshot, tmp_path, monkeypatch):
    """results.jsonl is written beside the decisions (another thread, another connection): a
    decision that fails waits for that writer, then leaves no results, actions or state behind."""
    from memberrules.engine import campaigns_sql
    from memberrules.engine.errors import Diagnostic, DiagnosticError

    def failing_block(*args, **kwargs):
        raise DiagnosticError([Diagnostic("MR425", "campaign x: the template failed")])

    def slow_writer(*args, **kwargs):  # still writing when the decision fails
        time.sleep(0.5)
        return write_batches(*args, **kwargs)

    write_batches = campaigns_sql.write_batches
    monkeypatch.setattr(campaigns_sql._Run, "_block", failing_block)
    monkeypatch.setattr(campaigns_sql, "write_batches", slow_writer)
    out, state = tmp_path / "out", tmp_path / "state.sqlite"
    with pytest.raises(DiagnosticError):
        evaluate_rules_with("duckdb")(RULES, snapshot, as_of=DAYS[0], out=out / "results.jsonl", state=state)
    assert not [t for t in threading.enumerate() if t.name.startswith("memberrules-results")]  # waited for
    assert not out.exists() or list(out.iterdir()) == []
    assert not state.exists() or state_file_rows(state) == {"ledger": [], "member_state": [], "runs": []}


CLASHING_NAMES = """\
metrics:
  rule: {expr: "count(orders within 30d)", output: true}
  campaign: {expr: "frequency + 1", output: true}
  pos: spend_90d
campaigns:
  names_like_the_engines_own:
    when: rule > 0 and campaign > 1 and pos > 0
    action: {channel: in_app, template: "{{ rule }} {{ campaign }} {{ pos }}"}
"""


def test_metrics_named_like_the_offer_tables_columns_read_their_own_values(snapshot, tmp_path):
    """The offer tables have columns `campaign`, `pos` and `rule`: a campaign reading metrics of
    those names gets the metrics (every column the SQL reads is qualified by its table)."""
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("*.test.yaml", "campaigns.yaml"))
    (rules / "campaigns.yaml").write_text(CLASHING_NAMES, encoding="utf-8")
    for engine in ("python", "duckdb"):
        outcome = evaluate_rules_with(engine)(rules, snapshot, as_of=DAYS[0], out=tmp_path / engine / "results.jsonl")
        assert outcome.report is not None, outcome.check.diagnostics
    python = (tmp_path / "python" / "actions.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "duckdb" / "actions.jsonl").read_text(encoding="utf-8") == python
    assert python.count('"campaign":"names_like_the_engines_own"') > 20
