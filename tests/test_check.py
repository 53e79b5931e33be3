"""The checker: typing per operator, names and what they refer to, null warnings,
dependency order, param overrides, tiers.current."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from memberrules.engine import ast
from memberrules.engine.check import check_rule_set, parse_trigger

SCHEMA = """\
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string, nick: string?, registered_at: timestamp, birthday: date?,
             growth_value: int, balance: decimal, score: float, opted_in_sms: bool, tags: list<string>,
             tier: string?}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal, category: string, qty: int}
"""

# Without tiers.current a member field named `tier` would clash with the built-in `tier`.
PLAIN_SCHEMA = SCHEMA.replace(",\n             tier: string?}", "}")

BASE = SCHEMA + """\
params:
  rfm_recent: 15d
  rfm_frequent: 8
  rate: 0.5
  label: gold
  start: "@2026-01-01"
  strict: true
metrics:
  recency_days: days_between(last(orders.placed_at), as_of)
  frequency: count(orders within 30d)
tiers:
  by: growth_value
  levels:
    - {name: normal, min: 0}
    - {name: silver, min: 1000}
    - {name: gold, min: 5000}
  current: tier
classes:
  lifecycle:
    - {name: active, when: "(recency_days ?? 9999) <= 30"}
    - {name: dormant, when: "(recency_days ?? 9999) <= 180"}
    - {name: churned, else: true}
  rfm:
    - {name: best, when: "frequency >= rfm_frequent"}
segments:
  vip: "'vip' in tags"
"""


def check_text(tmp_path: Path, text: str, params: dict[str, str] | None = None):
    (tmp_path / "rules.yaml").write_text(text, encoding="utf-8")
    return check_rule_set(tmp_path, params, base=tmp_path)


def probe_metric(tmp_path: Path, expr: str):
    """The type of `expr` as a metric, or the codes of what the checker said about it."""
    text = BASE.replace("metrics:\n", "metrics:\n  probe: " + _quoted(expr) + "\n", 1)
    result = check_text(tmp_path, text)
    codes = [d.code for d in result.diagnostics]
    if result.ok:
        return str(result.rule_set.metrics["probe"].type), codes
    return None, codes


def _quoted(expr: str) -> str:
    return "'" + expr.replace("'", "''") + "'"


def test_the_base_rule_set_is_clean(tmp_path):
    result = check_text(tmp_path, BASE)
    assert result.ok and result.diagnostics == []


# (expression, the type of its value or the diagnostic code it gets)
TYPING = [
    # arithmetic
    ("1 + 2", "int"), ("1 + 2.5", "decimal"), ("growth_value / 2", "decimal"), ("score * 2", "float"),
    ("score / 2", "float"), ("balance * growth_value", "decimal"), ("growth_value % 3", "int"),
    ("score % 2", "MR302"), ("name + 'x'", "string"), ("name + 30d", "MR302"), ("name - 'x'", "MR302"),
    ("as_of - 30d", "timestamp"), ("registered_at - as_of", "duration"), ("date(as_of) + 1d", "date"),
    ("30d + 2w", "duration"), ("3 * 1d", "duration"), ("as_of + 1", "MR302"), ("birthday + 1d", "date?"),
    ("recency_days + 1", "int?"), ("null + 1", "int?"),
    # unary
    ("-growth_value", "int"), ("-30d", "duration"), ("-name", "MR302"), ("not opted_in_sms", "bool"),
    ("not growth_value", "MR302"),
    # comparisons
    ("growth_value > 1", "bool"), ("balance >= 1", "bool"), ("birthday > @2026-01-01", "bool?"),
    ("registered_at > @2026-01-01", "bool"), ("date(registered_at) < 20200101", "MR302"),
    ("name < 3", "MR302"), ("opted_in_sms < true", "MR302"), ("opted_in_sms == true", "bool"),
    ("growth_value == null", "MR302"), ("rfm_recent > 10d", "bool"), ("rfm_recent > 10", "MR302"),
    # membership
    ("'vip' in tags", "bool"), ("1 in tags", "MR302"), ("name in 'abc'", "MR302"),
    ("growth_value in [1, 2, 3]", "bool"), ("growth_value not in [1, 2.5]", "bool"),
    ("name in ['a', null]", "bool?"), ("growth_value in [1, 'a']", "MR302"),
    # lists
    ("[1, 2.5]", "list<decimal>"), ("['a', null]", "list<string?>"), ("['a', 'b']", "list<string>"),
    # logic
    ("opted_in_sms and vip", "bool"), ("growth_value and opted_in_sms", "MR302"),
    ("opted_in_sms or birthday is null", "bool"), ("recency_days > 3", "bool?"),
    # nulls
    ("nick ?? 'x'", "string"), ("recency_days ?? 0", "int"), ("nick ?? null", "string?"),
    ("nick ?? 1", "MR302"), ("nick is null", "bool"),
    # event aggregates
    ("count(orders)", "int"), ("count(orders within 30d)", "int"), ("count(orders within rfm_recent)", "int"),
    ("count(orders within 30)", "MR307"), ("sum(orders.amount)", "decimal"), ("sum(orders.qty)", "int"),
    ("avg(orders.qty)", "decimal?"), ("sum(orders.category)", "MR306"), ("min(orders.category)", "string?"),
    ("last(orders.placed_at)", "timestamp?"), ("sum(orders)", "MR306"), ("count(order)", "MR305"),
    ("sum(orders.amunt)", "MR301"), ("orders.amount", "MR306"), ("orders", "MR305"),
    ("count(orders where category == 'food' and qty > 1)", "int"),
    ("count(orders where count(orders) > 1)", "MR308"), ("count(orders where category)", "MR302"),
    ("member.name", "MR306"), ("customers.x", "MR301"),
    # population aggregates and ranks
    ("avg(growth_value over members)", "decimal?"), ("sum(growth_value over members where opted_in_sms)", "int"),
    ("count(growth_value over members)", "int"), ("avg(name over members)", "MR306"),
    ("quantile(growth_value, 0.8 over members)", "int?"), ("quantile(growth_value, 2 over members)", "MR304"),
    ("rank(growth_value)", "int"), ("percent_rank(growth_value)", "float"), ("ntile(growth_value, 5)", "int"),
    ("ntile(growth_value, 0)", "MR304"), ("rank(tags)", "MR306"), ("rank(recency_days)", "int?"),
    ("avg(avg(growth_value over members) over members)", "MR308"),
    # functions
    ("days_between(registered_at, as_of)", "int"), ("days_between(birthday, as_of)", "int?"),
    ("days_between(registered_at)", "MR304"), ("days_between(name, as_of)", "MR304"),
    ("day_of_year(as_of)", "int"), ("date(as_of)", "date"), ("coalesce(birthday, @2000-01-01)", "date"),
    ("coalesce(nick, 1)", "MR304"), ("max(growth_value, 2.5)", "decimal"), ("round(balance, 2)", "decimal"),
    ("round(balance, growth_value)", "MR304"), ("lower(name)", "string"), ("contains(name, 'a')", "bool"),
    ("starts_with(name, 1)", "MR304"), ("abs(-3)", "int"), ("nosuch(1)", "MR303"),
    ("length(tags)", "int"), ("days_until_anniversary(birthday)", "int?"),
    # names
    ("growth_valeu", "MR301"), ("rfm_recent", "duration"), ("rfm_frequent", "int"), ("rate", "decimal"),
    ("label", "string"), ("start", "date"), ("strict", "bool"), ("as_of", "timestamp"),
    ("tier", "string"), ("next_tier", "string?"), ("tier_gap", "int?"), ("current_tier", "string?"),
    ("lifecycle", "string"), ("rfm", "string?"), ("vip", "bool"), ("frequency", "int"), ("recency_days", "int?"),
    ("lifecycle == 'dormnt'", "MR309"), ("tier == 'platinum'", "MR309"), ("tier in ['gold', 'platnum']", "MR309"),
    ("lifecycle == 'dormant'", "bool"),
]


@pytest.mark.parametrize("expr, expected", TYPING, ids=[e for e, _ in TYPING])
def test_typing_rules(tmp_path, expr, expected):
    type_, codes = probe_metric(tmp_path, expr)
    if expected.startswith("MR"):
        assert type_ is None
        assert codes == [expected]
    else:
        assert codes == []
        assert type_ == expected


def test_one_typo_gives_one_diagnostic(tmp_path):
    _, codes = probe_metric(tmp_path, "(growth_valeu + 1) * 2 > 3 and growth_valeu - 1 < 2")
    assert codes == ["MR301", "MR301"]


@pytest.mark.parametrize("expr, code", [("growth_value ?? 0", "MR411"), ("growth_value is null", "MR412")])
def test_null_handling_of_a_never_null_value_is_a_warning(tmp_path, expr, code):
    type_, codes = probe_metric(tmp_path, expr)
    assert type_ is not None and codes == [code]


# -- null warnings on conditions ----------------------------------------------------------------

def probe_condition(tmp_path: Path, condition: str):
    text = BASE.replace("segments:\n", "segments:\n  probe: " + _quoted(condition) + "\n", 1)
    return check_text(tmp_path, text).diagnostics


@pytest.mark.parametrize("condition", [
    "recency_days is not null and recency_days > 3",
    "recency_days is null or recency_days > 3",
    "not (recency_days is null) and recency_days > 3",
    "(recency_days ?? 999) > 3",
    "birthday is not null and rfm is not null and days_until_anniversary(birthday) < 7 and rfm == 'best'",
    "opted_in_sms and (recency_days is not null and recency_days < 30)",
    "lifecycle in ['active', 'dormant']",
])
def test_handled_nulls_give_no_warning(tmp_path, condition):
    assert probe_condition(tmp_path, condition) == []


@pytest.mark.parametrize("condition, culprit", [
    ("recency_days > 3", "'recency_days'"),
    ("rfm == 'best'", "'rfm'"),
    ("recency_days is not null or recency_days > 3", "'recency_days'"),
    ("days_until_anniversary(birthday) < 7", "'birthday'"),
])
def test_unhandled_nulls_in_a_condition_warn(tmp_path, condition, culprit):
    [diagnostic] = probe_condition(tmp_path, condition)
    assert diagnostic.code == "MR413" and diagnostic.severity == "warning"
    assert culprit in diagnostic.message


def test_a_condition_must_be_a_bool(tmp_path):
    assert [d.code for d in probe_condition(tmp_path, "growth_value")] == ["MR313"]


# -- names and refs -----------------------------------------------------------------------------

def test_names_carry_what_they_refer_to(tmp_path):
    text = BASE.replace("metrics:\n", "metrics:\n  probe: 'count(orders where qty > rfm_frequent) + frequency "
                                      "+ (recency_days ?? 0) + day_of_year(as_of) + growth_value'\n", 1)
    text = text.replace("segments:\n", "segments:\n  probe_s: \"vip and lifecycle == 'active' and tier == 'gold' "
                                       "and current_tier == 'gold'\"\n", 1)
    result = check_text(tmp_path, text)
    assert result.ok, result.diagnostics
    refs = {node.name: node.ref for expr in (result.rule_set.metrics["probe"].expr, result.rule_set.segments["probe_s"])
            for node in ast.walk(expr) if isinstance(node, ast.Name)}
    assert refs == {"qty": "event", "rfm_frequent": "param", "frequency": "metric", "recency_days": "metric",
                    "as_of": "as_of", "growth_value": "member", "vip": "segment", "lifecycle": "class",
                    "tier": "tier", "current_tier": "current_tier"}
    assert all(node.type is not None for node in ast.walk(result.rule_set.metrics["probe"].expr))


def test_the_field_named_by_tiers_current_is_read_as_current_tier(tmp_path):
    result = check_text(tmp_path, BASE)
    assert result.rule_set.tiers.current == "tier"
    type_, codes = probe_metric(tmp_path, "current_tier ?? 'none'")
    assert (type_, codes) == ("string", [])


def test_without_tiers_current_there_is_no_current_tier(tmp_path):
    text = BASE.replace("  current: tier\n", "").replace("             tier: string?}", "             held: string?}")
    text = text.replace("metrics:\n", "metrics:\n  probe: \"current_tier ?? 'x'\"\n", 1)
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["MR301"]


@pytest.mark.parametrize("current, code", [("tierr", "MR301"), ("growth_value", "MR404")])
def test_tiers_current_must_be_a_string_member_field(tmp_path, current, code):
    result = check_text(tmp_path, BASE.replace("  current: tier\n", f"  current: {current}\n"))
    assert code in [d.code for d in result.diagnostics]


@pytest.mark.parametrize("section, name, code", [
    ("metrics", "growth_value", "MR402"),
    ("metrics", "as_of", "MR402"),
    ("segments", "frequency", "MR402"),
    ("metrics", "next_tier", "MR402"),
])
def test_names_are_unique_across_kinds(tmp_path, section, name, code):
    entry = f"  {name}: 'growth_value > 1'\n"
    result = check_text(tmp_path, BASE.replace(f"{section}:\n", f"{section}:\n" + entry, 1))
    assert code in [d.code for d in result.diagnostics]


def test_tier_thresholds_must_increase(tmp_path):
    result = check_text(tmp_path, BASE.replace("{name: gold, min: 5000}", "{name: gold, min: 1000}"))
    [diagnostic] = result.diagnostics
    assert diagnostic.code == "MR406" and "gold (min 1000) is not above silver (min 1000)" in diagnostic.message


def test_else_must_be_last(tmp_path):
    result = check_text(tmp_path, BASE.replace(
        "    - {name: churned, else: true}\n", "    - {name: churned, else: true}\n    - {name: x, when: vip}\n"))
    assert [d.code for d in result.diagnostics] == ["MR409"]


@pytest.mark.parametrize("text, expected", [
    ("tier_up", ("tier_up", None, None, None)),
    ("entered vip", ("entered", "vip", None, None)),
    ("class lifecycle from active to dormant", ("class_change", "lifecycle", "active", "dormant")),
    ("lifecycle to churned", ("class_change", "lifecycle", None, "churned")),
    ("tier_upgrade", None),
    ("lifecycle", None),
])
def test_triggers(text, expected):
    trigger = parse_trigger(text)
    if expected is None:
        assert trigger is None
    else:
        assert (trigger.kind, trigger.subject, trigger.from_value, trigger.to_value) == expected


# -- order --------------------------------------------------------------------------------------

ORDERED = PLAIN_SCHEMA + """\
metrics:
  a: b + 1
  b: c * 2
  c: growth_value
  d: 1
tiers:
  by: a
  levels:
    - {name: normal, min: 0}
    - {name: gold, min: 10}
classes:
  band:
    - {name: top, when: "tier == 'gold' and late_seg"}
    - {name: rest, else: true}
segments:
  late_seg: d > 0
  early_seg: band == 'top'
"""


def test_order_lists_dependencies_first_and_keeps_declaration_order_otherwise(tmp_path):
    result = check_text(tmp_path, ORDERED)
    assert result.ok, result.diagnostics
    assert result.rule_set.order == [
        ("metric", "c"), ("metric", "b"), ("metric", "a"), ("metric", "d"), ("tier", "tier"),
        ("segment", "late_seg"), ("class", "band"), ("segment", "early_seg")]


def test_order_contains_every_item_once(tmp_path):
    order = check_text(tmp_path, ORDERED).rule_set.order
    assert len(order) == len(set(order)) == 8


def test_a_metric_cycle_is_reported_once_with_its_path(tmp_path):
    text = PLAIN_SCHEMA + "metrics:\n  x: y + 1\n  y: z + 1\n  z: x + 1\n  w: x\n"
    result = check_text(tmp_path, text)
    assert [d.code for d in result.diagnostics] == ["MR401"]
    assert result.diagnostics[0].message == "a cycle: x → y → z → x"


def test_a_cycle_through_a_class_and_a_segment_is_found(tmp_path):
    text = PLAIN_SCHEMA + ("classes:\n  band:\n    - {name: top, when: s}\n    - {name: rest, else: true}\n"
                     "segments:\n  s: band == 'top'\n")
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["MR401"]


# -- params -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, value", [
    ("rfm_frequent", "10", 10),
    ("rfm_frequent", "-2", -2),
    ("rfm_recent", "30d", dt.timedelta(days=30)),
    ("rate", "1", Decimal(1)),
    ("rate", "0.75", Decimal("0.75")),
    ("label", "platinum", "platinum"),
    ("start", "@2026-06-01", dt.date(2026, 6, 1)),
    ("strict", "false", False),
    ("strict", "TRUE", True),
])
def test_param_overrides_keep_the_declared_type(tmp_path, name, text, value):
    result = check_text(tmp_path, BASE, {name: text})
    assert result.ok, result.diagnostics
    param = result.rule_set.params[name]
    assert param.value == value and type(param.value) is type(value)


@pytest.mark.parametrize("name, text", [("rfm_frequent", "ten"), ("rfm_recent", "30"), ("rate", "'x'"),
                                         ("strict", "1"), ("rfm_frequent", "1.5")])
def test_a_param_override_of_the_wrong_type_is_an_error(tmp_path, name, text):
    result = check_text(tmp_path, BASE, {name: text})
    assert not result.ok
    [diagnostic] = result.diagnostics
    assert diagnostic.code == "MR403" and f"--param {name}=" in diagnostic.message
    assert "expected" in diagnostic.message


def test_overriding_an_unknown_param_suggests_one(tmp_path):
    result = check_text(tmp_path, BASE, {"rfm_frequnt": "3"})
    [diagnostic] = result.diagnostics
    assert diagnostic.code == "MR403" and diagnostic.hint == "did you mean 'rfm_frequent'?"


def test_spec_example_checks_clean_of_errors():
    result = check_rule_set(Path(__file__).parent / "fixtures" / "spec_example")
    assert result.ok
    assert {d.code for d in result.diagnostics} <= {"MR413"}
    assert result.rule_set.order.index(("metric", "monetary")) < result.rule_set.order.index(("metric", "avg_spend"))


def test_expressions_that_yaml_reads_as_numbers_or_bools_are_taken_as_written(tmp_path):
    text = PLAIN_SCHEMA + """\
metrics:
  bonus: 10
  ratio: 1.50
segments:
  everyone: true
classes:
  band:
    - {name: all, when: true}
campaigns:
  points_gift:
    when: everyone
    action: {channel: points, points: 100}
"""
    result = check_text(tmp_path, text)
    assert result.ok, result.diagnostics
    assert result.rule_set.metrics["bonus"].expr == ast.Literal("int", 10)
    assert result.rule_set.metrics["ratio"].expr == ast.Literal("decimal", Decimal("1.50"))
    assert result.rule_set.segments["everyone"] == ast.Literal("bool", True)
    assert result.rule_set.campaigns["points_gift"].points == ast.Literal("int", 100)


def test_a_number_where_a_name_is_wanted_is_still_an_error(tmp_path):
    result = check_text(tmp_path, PLAIN_SCHEMA.replace("key: member_id\n    fields", "key: 12\n    fields", 1))
    assert [d.code for d in result.diagnostics] == ["MR312"]
