"""The Python engine (engine/eval.py): compilation, stages, the public API, invariants."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberrules.engine import ast
from memberrules.engine.check import check_rule_set
from memberrules.engine.eval import EvaluationError, MemberState, compile_rule_set
from memberrules.engine.eval_runtime import Ranks
from memberrules.engine.parse import parse_expr
from memberrules.engine.snapshot import Snapshot, SnapshotStats

TZ = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2026, 11, 1, 10, 0, tzinfo=TZ)

SCHEMA = """\
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, growth: int, i: int?, held: string?, name: string?, ts: timestamp?}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal}
"""


def compiled(rules: str, params: dict[str, str] | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(SCHEMA + rules, encoding="utf-8")
        checked = check_rule_set(path, params)
    assert checked.rule_set is not None, [d.message for d in checked.diagnostics if d.is_error]
    return compile_rule_set(checked.rule_set)


def member(member_id: str, growth: int = 0, **fields) -> dict:
    row = {"member_id": member_id, "growth": growth, "i": None, "held": None, "name": None, "ts": None}
    row.update(fields)
    return row


def order(member_id: str, when: datetime, amount: str = "10.00") -> dict:
    return {"member_id": member_id, "placed_at": when, "amount": Decimal(amount)}


def snapshot(members: list[dict], orders: list[dict] = ()) -> Snapshot:
    by_member: dict[str, list[dict]] = {}
    for row in sorted(orders, key=lambda r: r["placed_at"]):
        by_member.setdefault(row["member_id"], []).append(row)
    members = sorted(members, key=lambda m: m["member_id"])
    return Snapshot(members, {"orders": by_member}, SnapshotStats({"member": len(members)}, 0, {}, {}))


RFM = """
params: {frequent: 2}
metrics:
  frequency: {expr: "count(orders within 30d)", output: true}
  monetary: {expr: "sum(orders.amount within 30d)", output: true}
  avg_spend: {expr: "avg(monetary over members where frequency > 0)", output: true}
  spend_rank: rank(monetary)
classes:
  rfm:
    - {name: best, when: "frequency >= frequent and monetary >= avg_spend"}
    - {name: other, else: true}
segments:
  top: spend_rank == 1
"""


def rfm_snapshot() -> Snapshot:
    day = timedelta(days=1)
    return snapshot([member("a"), member("b"), member("c")],
                    [order("a", AS_OF - day, "100.00"), order("a", AS_OF - 2 * day, "50.00"),
                     order("b", AS_OF - day, "30.00"), order("c", AS_OF - 40 * day, "999.00")])


def test_population_values_are_computed_between_stages():
    rules = compiled(RFM)
    evaluation = rules.evaluate(rfm_snapshot(), AS_OF)
    by_key = {row["member_id"]: row for row in evaluation.rows}
    # avg over the buyers of the window only: (150 + 30) / 2 = 90
    assert by_key["a"]["avg_spend"] == Decimal(90)
    assert [by_key[k]["rfm"] for k in "abc"] == ["best", "other", "other"]
    assert by_key["a"]["segments"] == ["top"]
    assert rules.stage_count == 2


def test_population_values_are_kept_by_their_text_with_member_counts():
    evaluation = compiled(RFM).evaluate(rfm_snapshot(), AS_OF)
    key = "avg(monetary over members where frequency > 0)"
    assert evaluation.population[key] == Decimal(90)
    assert evaluation.population_counts[key] == 2
    ranks = evaluation.population["rank(monetary)"]
    assert isinstance(ranks, Ranks) and ranks.count == 3


def test_rows_follow_the_result_column_order_sorted_by_key():
    evaluation = compiled(RFM).evaluate(rfm_snapshot(), AS_OF)
    assert [row["member_id"] for row in evaluation.rows] == ["a", "b", "c"]
    assert list(evaluation.rows[0]) == ["member_id", "rfm", "segments", "frequency", "monetary", "avg_spend"]


def test_expr_function_computes_any_sub_expression_for_one_member():
    rules = compiled(RFM)
    evaluation = rules.evaluate(rfm_snapshot(), AS_OF)
    condition = rules.rules.classes["rfm"].cases[0].when
    left = condition.left  # frequency >= frequent
    state = evaluation.state("b")
    assert rules.expr_function(condition)(state) is False
    assert rules.expr_function(left)(state) is False
    assert rules.expr_function(left.left)(state) == 1
    assert rules.expr_function(condition.right.right)(state) == Decimal(90)  # avg_spend


def test_expr_function_evaluates_event_aggregates_from_the_state():
    rules = compiled(RFM)
    evaluation = rules.evaluate(rfm_snapshot(), AS_OF)
    aggregate = rules.rules.metrics["monetary"].expr
    assert rules.expr_function(aggregate)(evaluation.state("a")) == Decimal("150.00")
    assert evaluation.state("a").events["orders"][0]["amount"] == Decimal("50.00")


def test_state_and_row_of_an_unknown_member_raise_key_error():
    evaluation = compiled(RFM).evaluate(rfm_snapshot(), AS_OF)
    with pytest.raises(KeyError):
        evaluation.state("zz")
    with pytest.raises(KeyError):
        evaluation.row("zz")
    assert evaluation.row("c")["rfm"] == "other"
    assert isinstance(evaluation.states[0], MemberState) and len(evaluation.states) == 3


def test_params_can_be_overridden_per_evaluation_as_values_or_text():
    rules = compiled(RFM)
    snap = rfm_snapshot()
    assert rules.evaluate(snap, AS_OF).row("a")["rfm"] == "best"
    assert rules.evaluate(snap, AS_OF, {"frequent": 3}).row("a")["rfm"] == "other"
    assert rules.evaluate(snap, AS_OF, {"frequent": "3"}).row("a")["rfm"] == "other"


def test_a_bad_param_override_is_refused():
    rules = compiled(RFM)
    with pytest.raises(ValueError, match="no param 'frequnt'"):
        rules.evaluate(rfm_snapshot(), AS_OF, {"frequnt": 3})
    with pytest.raises(ValueError, match="expected int"):
        rules.evaluate(rfm_snapshot(), AS_OF, {"frequent": "30d"})


def test_rows_after_as_of_are_ignored_even_if_the_snapshot_holds_them():
    rules = compiled(RFM)
    snap = snapshot([member("a")], [order("a", AS_OF - timedelta(days=1)), order("a", AS_OF + timedelta(seconds=1))])
    evaluation = rules.evaluate(snap, AS_OF)
    assert evaluation.row("a")["frequency"] == 1
    assert len(evaluation.state("a").events["orders"]) == 1


def test_a_naive_as_of_is_read_in_the_rule_set_timezone():
    rules = compiled(RFM)
    evaluation = rules.evaluate(rfm_snapshot(), datetime(2026, 11, 1, 10, 0))
    assert evaluation.as_of == AS_OF


def test_evaluating_twice_gives_equal_rows():
    rules = compiled(RFM)
    assert rules.evaluate(rfm_snapshot(), AS_OF).rows == rules.evaluate(rfm_snapshot(), AS_OF).rows


def test_string_literals_never_become_code():
    hostile = "x'); import os; os.system('echo pwned'); ('"
    rules = compiled("metrics:\n  s: {expr: \"name == '" + hostile.replace("'", "\\\\'") + "'\", output: true}\n")
    evaluation = rules.evaluate(snapshot([member("a", name=hostile), member("b", name="x")]), AS_OF)
    assert [row["s"] for row in evaluation.rows] == [True, False]
    assert "import os" not in rules.source.replace(repr(hostile), "")


def test_unicode_names_work_as_keys():
    rules = compiled("metrics:\n  重点突破: {expr: 'growth * 2', output: true}\n")
    assert rules.evaluate(snapshot([member("a", 21)]), AS_OF).rows[0]["重点突破"] == 42


def test_generated_code_sees_only_the_runtime_helpers():
    rules = compiled(RFM)
    assert "__import__" not in rules.source and "open(" not in rules.source


def test_a_value_out_of_range_names_the_member():
    rules = compiled("metrics:\n  later: {expr: 'ts + 30d', output: true}\n")
    far = datetime(9999, 12, 31, 12, 0, tzinfo=TZ)
    with pytest.raises(EvaluationError) as error:
        rules.evaluate(snapshot([member("ok", ts=AS_OF), member("zz", ts=far)]), AS_OF)
    assert error.value.diagnostics[0].code == "MR590"
    assert "'zz'" in error.value.diagnostics[0].message


def test_progress_reports_every_member_of_every_stage():
    seen = []
    compiled(RFM).evaluate(rfm_snapshot(), AS_OF, progress=seen.append)
    assert sum(seen) == 3 * 2


def test_aggregates_sharing_a_table_are_summed_in_one_pass():
    rules = compiled(RFM + "  big: 'count(orders within 30d) > 1'\n")
    assert rules.source.count("for _r") == 1


def test_invariant_parts_are_computed_once_per_evaluation():
    rules = compiled("params: {w: 30d}\nmetrics:\n  n: 'count(orders within w)'\n  recent: 'ts > as_of - w'\n")
    stage = rules.source.split("def stage0")[0]
    assert "ts_add(as_of, -" in stage  # both cut-offs live in the factory, not per member


# -- invariants ----------------------------------------------------------------------------------

CLASSES = """
metrics:
  n: count(orders within 30d)
classes:
  band:
    - {name: high, when: "i > 50"}
    - {name: some_orders, when: "n >= 2"}
    - {name: unknown, when: "i is null and n == 0"}
    - {name: low, when: "i < 10"}
    - {name: rest, else: true}
"""
CLASSES_RULES = compiled(CLASSES)
TIER_RULES = compiled("""
tiers:
  by: growth
  levels:
    - {name: normal, min: 0}
    - {name: silver, min: 1000}
    - {name: gold, min: 5000}
    - {name: platinum, min: 20000}
""")
WINDOW_RULES = compiled("""
metrics:
  f30: {expr: "count(orders within 30d)", output: true}
  m90: {expr: "sum(orders.amount within 90d)", output: true}
  avg90: {expr: "avg(m90 over members where m90 > 0)", output: true}
  r: {expr: "rank(m90)", output: true}
classes:
  recent:
    - {name: yes, when: "f30 > 0"}
    - {name: no, else: true}
""")

members_st = st.lists(st.tuples(st.one_of(st.none(), st.integers(-100, 100)), st.integers(0, 4)),
                      min_size=1, max_size=12)


def _oracle_band(i, n):
    if i is not None and i > 50:
        return "high"
    if n >= 2:
        return "some_orders"
    if i is None and n == 0:
        return "unknown"
    if i is not None and i < 10:
        return "low"
    return "rest"


@settings(max_examples=60, deadline=None)
@given(members_st)
def test_every_member_gets_exactly_one_class_the_first_that_holds(draw):
    members, orders = [], []
    for k, (i, n) in enumerate(draw):
        members.append(member(f"m{k:02d}", i=i))
        orders += [order(f"m{k:02d}", AS_OF - timedelta(days=j + 1)) for j in range(n)]
    evaluation = CLASSES_RULES.evaluate(snapshot(members, orders), AS_OF)
    for (i, n), row in zip(draw, evaluation.rows):
        assert row["band"] == _oracle_band(i, n)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-10, 30000), min_size=2, max_size=20, unique=True))
def test_the_tier_never_falls_as_the_by_value_grows(growths):
    members = [member(f"m{k:02d}", g) for k, g in enumerate(growths)]
    rows = TIER_RULES.evaluate(snapshot(members), AS_OF).rows
    order_of = {name: i for i, name in enumerate(("normal", "silver", "gold", "platinum"))}
    levels = sorted((row_growth, order_of[row["tier"]]) for row_growth, row in zip(growths, rows))
    assert all(a[1] <= b[1] for a, b in zip(levels, levels[1:]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 200), max_size=4), min_size=1, max_size=6),
       st.integers(0, 5), st.integers(91, 2000), st.booleans())
def test_an_event_outside_every_window_changes_nothing(days_ago, who, extra_days, future):
    members = [member(f"m{k}") for k in range(len(days_ago))]
    orders = [order(f"m{k}", AS_OF - timedelta(days=d, hours=1), f"{d}.50")
              for k, ds in enumerate(days_ago) for d in ds]
    before = WINDOW_RULES.evaluate(snapshot(members, orders), AS_OF).rows
    when = AS_OF + timedelta(hours=extra_days) if future else AS_OF - timedelta(days=extra_days)
    extra = order(f"m{who % len(days_ago)}", when, "1000.00")
    after = WINDOW_RULES.evaluate(snapshot(members, orders + [extra]), AS_OF).rows
    assert after == before


def test_parse_of_a_checked_expression_matches_the_metric_text():
    rules = compiled(RFM)
    expr = rules.rules.metrics["avg_spend"].expr
    assert ast.to_source(expr) == ast.to_source(parse_expr("avg(monetary over members where frequency > 0)").expr)
    assert "avg(monetary over members where frequency > 0)" in rules.population_nodes


def test_generated_code_python_refuses_becomes_a_diagnostic(monkeypatch):
    import memberrules.engine.eval as eval_module
    from memberrules.engine.errors import DiagnosticError

    def refuse(*args):
        raise SyntaxError("too many nested parentheses")

    monkeypatch.setattr(eval_module, "compile", refuse, raising=False)
    with pytest.raises(DiagnosticError) as error:
        compiled(RFM)
    assert error.value.diagnostics[0].code == "MR206"


def test_long_condition_chains_compile():
    chain = " and ".join(["i > 1"] * 99)
    rules = compiled(f"metrics:\n  x: {{expr: '{chain}', output: true}}\n")
    assert rules.evaluate(snapshot([member("a", i=2), member("b")]), AS_OF).rows[0]["x"] is True


def test_expr_values_matches_expr_function_for_every_state():
    rules = compiled(RFM)
    evaluation = rules.evaluate(rfm_snapshot(), AS_OF)
    expr = rules.rules.metrics["monetary"].expr
    one_by_one = [rules.expr_function(expr)(state) for state in evaluation.states]
    assert rules.expr_values(expr, evaluation.states) == one_by_one == [Decimal("150.00"), Decimal("30.00"), 0]


def test_expr_function_follows_a_new_evaluation():
    rules = compiled(RFM)
    function = rules.expr_function(rules.rules.metrics["avg_spend"].expr)
    first = rules.evaluate(rfm_snapshot(), AS_OF)
    assert function(first.state("a")) == Decimal(90)
    later = rules.evaluate(rfm_snapshot(), AS_OF + timedelta(days=1, hours=12))
    # a day and a half later the order of 2 days ago is still inside, b's of 1 day ago too
    assert function(later.state("a")) == later.row("a")["avg_spend"]
    assert function(first.state("a")) == Decimal(90)
