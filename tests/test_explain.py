"""explain: the values behind every result, conjunct breakdowns and nearest misses.

The fixture tests/fixtures/explain/ (4 members, as_of 2026-11-01T10:00:00+08:00) was
worked out by hand; `within 30d` covers (2026-10-02T10:00, 2026-11-01T10:00]:

    member  orders in 30d (amount)            R    F   M        growth  held
    m1      10-20, 10-22, 10-25, 10-30 (100)  2    4   400.00   5200    gold
    m2      10-20 14:03 (130), 10-27 19:30    5    2   280.00    880    normal
            (150); 11-02 (999) is after as_of
    m3      10-25 20:00 (50); 06-01 is older  7    1    50.00   4200    gold
    m4      none                              null 0   0           0    -

    avg_spend = (400 + 280 + 50) / 3 = 243.333333333333333333 (m4 bought nothing)
    spend_p75 = nearest rank of [50, 280, 400] at ⌈0.75 · 3⌉ = 3 → 400.00
    m_score   = ntile(monetary, 2) = ⌈2c / 4⌉: m1 2, m2 2 (c = 3), m3 1, m4 1
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from memberrules.engine.check import check_rule_set
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.evaluate import parse_as_of
from memberrules.engine.explain import (Probe, UnknownMember, explain_condition, explain_need, explain_rules,
                                        render_json, render_text)
from memberrules.engine.explain_words import needed_change, show
from memberrules.engine.snapshot import read_snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "explain"
GOLDEN = Path(__file__).parent / "golden" / "explain"
AS_OF = "2026-11-01T10:00:00"


def explain(member: str):
    outcome = explain_rules(FIXTURE / "rules", FIXTURE / "data", member, as_of=AS_OF)
    assert outcome.explanation is not None
    return outcome.explanation


@pytest.fixture(scope="module")
def fixture_world():
    return _world(FIXTURE / "rules", FIXTURE / "data", AS_OF)


def _world(rules_dir: Path, data_dir: Path, as_of: str):
    rules = check_rule_set(rules_dir).rule_set
    assert rules is not None
    moment = parse_as_of(as_of, rules.timezone)
    compiled = compile_rule_set(rules)
    snapshot = read_snapshot(data_dir, rules.model.schema_, rules.timezone, moment)
    return rules, compiled, compiled.evaluate(snapshot, moment)


def _probe(world, member: str) -> Probe:
    _, compiled, evaluation = world
    return Probe(compiled, evaluation, evaluation.state(member))


# -- needed_change: the arithmetic of nearest misses -----------------------------------------------

@pytest.mark.parametrize("op, value, bound, amount, direction", [
    (">=", 9, 10, 1, "more"),
    (">", 1, 1, 1, "more"),              # strictly past: one whole step beyond
    (">=", 1, Decimal("2.5"), 2, "more"),  # an int reaches 2.5 only at 3
    ("<=", 22, 15, 7, "less"),
    ("<", 20, 20, 1, "less"),
    ("==", 20, 25, 5, "more"),
    ("==", 25, 20, 5, "less"),
])
def test_needed_change_of_ints_counts_whole_steps(op, value, bound, amount, direction):
    change = needed_change(op, value, bound)
    assert (change.amount, change.direction) == (amount, direction)


def test_needed_change_of_decimals_rounds_up_to_the_cent():
    # 243.333333333333333333 - 200.00 = 43.333…: 43.34 more reaches it, 43.33 does not.
    assert needed_change(">=", Decimal("200.00"), Decimal("243.333333333333333333")).words() == "43.34"
    # Strictly above 100.00 from 60.50: 100.01 - 60.50.
    assert needed_change(">", Decimal("60.50"), Decimal("100.00")).words() == "39.51"
    # A sum over no rows is Decimal 0: still counted in cents.
    assert needed_change(">=", Decimal("0"), Decimal("243.333333333333333333")).words() == "243.34"


def test_needed_change_of_durations_is_in_words():
    change = needed_change("<=", dt.timedelta(days=3, hours=5), dt.timedelta(days=2))
    assert (change.amount, change.direction, change.words()) == (dt.timedelta(days=1, hours=5), "less",
                                                                 "1 day 5 hours")


def test_needed_change_of_a_float_under_a_strict_bound_is_more_than():
    change = needed_change(">", 0.0, 0.5)
    assert (change.amount, change.exact, change.words()) == (0.5, False, "more than 0.5")


@pytest.mark.parametrize("op, value, bound", [
    (">=", None, 3), (">=", 3, None),       # null: nothing to move
    (">=", 5, 3), ("<", 2, 3),              # already holds
    ("!=", 3, 3),                           # no amount makes a value "other than"
    ("==", 2, Decimal("2.5")),              # an int never equals 2.5
    (">=", "a", "b"), (">=", dt.date(2026, 1, 1), dt.date(2026, 2, 1)),  # said in words instead
])
def test_needed_change_is_none_when_no_amount_helps(op, value, bound):
    assert needed_change(op, value, bound) is None


def test_show_cuts_long_decimals_and_marks_the_cut():
    assert show(Decimal("243.333333333333333333")) == "243.33…"
    assert show(Decimal("243.330000000000000000")) == "243.33"
    assert show(Decimal("280.00")) == "280.00"
    assert show(12345) == "12,345" and show(2026) == "2026"
    assert show(dt.timedelta(days=1, hours=6)) == "1d 6h"
    assert show(None) == "null" and show(["vip"]) == "['vip']"


# -- conjunct breakdown -------------------------------------------------------------------------------

def test_condition_is_split_into_conjuncts_with_the_values_each_compared(fixture_world):
    rules = fixture_world[0]
    best = rules.classes["rfm"].cases[0].when
    condition = explain_condition(_probe(fixture_world, "m2"), best)
    assert condition.outcome is False and condition.joiner == "and"
    assert [(p.source, p.values, p.outcome) for p in condition.parts] == [
        ("recency_days <= rfm_recent", "5 <= 15", True),
        ("frequency >= rfm_frequent", "2 >= 3", False),
        ("monetary >= avg_spend", "280.00 >= 243.33…", True),
    ]


def test_unknown_conjunct_names_the_null_value(fixture_world):
    rules = fixture_world[0]
    general = rules.classes["rfm"].cases[3].when
    condition = explain_condition(_probe(fixture_world, "m4"), general)
    assert condition.outcome is None
    first = condition.parts[0]
    assert (first.values, first.outcome, first.null) == ("null > 15", None, ("recency_days",))
    assert [p.outcome for p in condition.parts[1:]] == [True, True]


# -- the explanation of the fixture members ----------------------------------------------------------

def test_metrics_show_population_values_of_this_run():
    metrics = {m.name: m for m in explain("m2").metrics}
    assert metrics["recency_days"].value == 5
    assert metrics["recency_days"].because == ["last order 2026-10-27 19:30"]
    assert metrics["frequency"].because == ["2 orders within 30d"]
    assert metrics["monetary"].value == Decimal("280.00")
    assert metrics["avg_spend"].value == Decimal("243.333333333333333333")
    assert metrics["avg_spend"].because == ["avg of monetary over 3 members where frequency > 0"]
    assert metrics["spend_p75"].value == Decimal("400.00")
    assert metrics["m_score"].value == 2
    assert metrics["m_score"].because == ["bucket 2 of 2 by monetary over 4 members (monetary = 280.00)"]
    assert [(u.members, u.member_value) for u in metrics["m_score"].population] == [(4, 2)]


def test_member_without_orders_has_null_recency_and_says_why():
    metrics = {m.name: m for m in explain("m4").metrics}
    assert metrics["recency_days"].value is None
    assert metrics["recency_days"].because == ["no orders"]


def test_tier_gap_progress_and_forecast():
    tier = explain("m2").tier
    assert (tier.tier, tier.earned, tier.next_tier, tier.gap) == ("normal", "normal", "silver", 120)
    assert tier.progress == Decimal("0.88")
    # ⌈120 / (280.00 / 30 days)⌉ = ⌈12.86⌉
    assert tier.days == 13
    assert tier.nearest == "120 more growth value to silver"
    assert [(level.name, level.reached, level.more) for level in tier.levels] == [
        ("normal", True, None), ("silver", False, 120), ("gold", False, 4120)]


def test_held_tier_above_earned_is_kept_without_a_downgrade():
    tier = explain("m3").tier
    assert (tier.earned, tier.held, tier.tier, tier.kept) == ("silver", "gold", "gold", True)
    assert tier.downgrade.outcome is False
    assert tier.downgrade.parts[0].values == "305 == 1"
    assert tier.keep == "800 more growth value to keep gold"
    assert tier.nearest is None  # gold is the top tier


def test_class_nearest_miss_counts_orders():
    rfm = explain("m2").classes[0]
    assert rfm.value == "breakthrough"
    assert [(c.name, c.status) for c in rfm.cases] == [
        ("best", "failed"), ("breakthrough", "chosen"), ("maintain", "not tried"), ("general", "not tried"),
        ("unclassified", "not tried")]
    assert rfm.nearest.words() == "1 more order in 30 days to best"


def test_nearest_miss_ties_go_to_the_case_just_above_the_chosen_one():
    # m3 is unclassified; best fails 2 conjuncts, breakthrough, maintain and general 1 each.
    rfm = explain("m3").classes[0]
    assert rfm.nearest.target == "general"
    assert rfm.nearest.words() == "9 more recency_days to general"


def test_nearest_miss_through_a_null_says_the_value_is_missing():
    rfm = explain("m4").classes[0]
    assert rfm.nearest.words() == "general needs recency_days to have a value (it is null)"


def test_segments_are_true_false_or_unknown():
    segments = {s.name: s for s in explain("m4").segments}
    assert segments["lapsed"].value is False
    assert segments["lapsed"].condition.outcome is None
    assert segments["lapsed"].condition.parts[0].null == ("recency_days",)
    assert {s.name: s.condition.outcome for s in explain("m1").segments} == {
        "vip": True, "big_spender": True, "lapsed": False}


def test_campaign_reasons_come_from_the_campaign_runtime():
    # m3 matches win_back (unclassified and vip) but has not consented to SMS.
    (win_back,) = explain("m3").campaigns
    assert (win_back.sent, win_back.rule, win_back.reason) == (False, "consent",
                                                               "no consent: opted_in_sms is not true")
    (m2_win_back,) = explain("m2").campaigns
    assert (m2_win_back.rule, m2_win_back.condition.parts[0].values) == ("condition",
                                                                         "'breakthrough' == 'unclassified'")


def test_golden_text_of_one_member(golden):
    text = render_text(explain("m2"))
    assert text.startswith("member m2 ")
    golden(GOLDEN / "m2.txt", text)


def test_json_keeps_decimals_exact():
    text = render_json(explain("m2"))
    assert '"value": 243.333333333333333333' in text
    data = json.loads(text)
    assert data["classes"][0]["nearest_miss"]["text"] == "1 more order in 30 days to best"
    assert data["tier"]["tier_gap"] == 120


def test_unknown_member_names_the_file_and_the_closest_key():
    with pytest.raises(UnknownMember) as raised:
        explain("M2")
    assert str(raised.value) == f"member 'M2' is not in {FIXTURE / 'data' / 'member.csv'}; did you mean 'm2'?"


# -- nearest misses in words, one comparison at a time ---------------------------------------------

MISSES_RULES = """\
version: 1
timezone: UTC
schema:
  member: {key: id, fields: {id: string, points: int, balance: decimal, joined: timestamp}}
  orders: {key: id, time: at, fields: {id: string, at: timestamp, amount: decimal}}
metrics:
  orders_7d: count(orders within 7d)
  spend_7d: sum(orders.amount within 7d)
  idle: as_of - last(orders.at)
  ratio: balance / 3
  pr: percent_rank(points)
  big: spend_7d > 100.00
segments:
  more_orders: orders_7d >= 3
  one_more: orders_7d > 1
  big_spend: spend_7d > 100.00
  enough_points: points >= 25
  few_points: points < 20
  exact_points: points == 25
  ratio_ok: ratio >= 5
  recent: idle <= 2d
  recent_or_default: (idle ?? 999d) <= 2d
  joined_2026: joined >= @2026-01-01
  top_pr: pr > 0.5
  either: points >= 25 or spend_7d > 100.00
  not_many: not (points >= 10)
  is_big: big
"""
# as_of 2026-03-10T12:00Z. a: one order 2026-03-07T07:00 of 60.50, so orders_7d 1, spend_7d 60.50,
# idle 3d 5h; points 20; ratio 10.00 / 3 = 3.333…; pr 0.0 (lowest of 2). b: no orders, idle null.
MISSES_DATA = {
    "member.csv": "id,points,balance,joined\na,20,10.00,2025-05-01T00:00:00\nb,30,0.50,2026-02-01T00:00:00\n",
    "orders.csv": "id,at,amount\na,2026-03-07T07:00:00,60.50\n",
}


@pytest.fixture(scope="module")
def misses_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("misses")
    (root / "rules").mkdir()
    (root / "rules" / "rules.yaml").write_text(MISSES_RULES, encoding="utf-8")
    (root / "data").mkdir()
    for name, text in MISSES_DATA.items():
        (root / "data" / name).write_text(text, encoding="utf-8")
    return _world(root / "rules", root / "data", "2026-03-10T12:00:00")


@pytest.mark.parametrize("segment, member, words", [
    ("more_orders", "a", "2 more orders in 7 days"),
    ("one_more", "a", "1 more order in 7 days"),
    ("big_spend", "a", "39.51 more amount in 7 days"),
    ("enough_points", "a", "5 more points"),
    ("few_points", "a", "1 less points"),
    ("exact_points", "a", "5 more points"),
    ("ratio_ok", "a", "1.666667 more ratio"),
    ("recent", "a", "1 day 5 hours less idle"),
    ("recent", "b", "idle to have a value (it is null)"),
    ("recent_or_default", "a", "1 day 5 hours less idle"),
    ("recent_or_default", "b", "idle to have a value (it is null)"),
    ("joined_2026", "a", "joined to be at least 2026-01-01 (it is 2025-05-01 00:00)"),
    ("top_pr", "a", "pr up by more than 0.5"),
    ("either", "a", "5 more points or 39.51 more amount in 7 days"),
    ("not_many", "a", "11 less points"),
    ("is_big", "a", "39.51 more amount in 7 days"),
])
def test_nearest_miss_words(misses_world, segment, member, words):
    rules = misses_world[0]
    assert explain_need(_probe(misses_world, member), rules.segments[segment]).text == words


def test_an_or_condition_is_split_into_disjuncts(misses_world):
    rules = misses_world[0]
    condition = explain_condition(_probe(misses_world, "a"), rules.segments["either"])
    assert condition.joiner == "or"
    assert [(p.values, p.outcome) for p in condition.parts] == [("20 >= 25", False), ("60.50 > 100.00", False)]
