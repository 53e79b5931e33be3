"""Campaigns: triggers, transitions, windows, templates, reasons, and runs with the state file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import textwrap
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberrules.engine import types as t
from memberrules.engine.campaigns import campaign_run, decide_actions, dumps, summary_table
from memberrules.engine.check import check_rule_set
from memberrules.engine.delivery import Sent
from memberrules.engine.errors import DiagnosticError
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.model import json_schema
from memberrules.engine.results import json_encoder
from memberrules.engine.snapshot import Snapshot, SnapshotStats
from memberrules.engine.state import Previous, StateStore, idempotency_key

SH = ZoneInfo("Asia/Shanghai")
AS_OF = dt.datetime(2026, 11, 2, tzinfo=SH)  # a Monday

RULES = """
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string, growth_value: int, tier: string?, opted_in_sms: bool,
             opted_in_push: bool, tags: list<string>, birthday: date?}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal}
params:
  discount: 20
metrics:
  recency_days: days_between(last(orders.placed_at), as_of)
  spend_30d: sum(orders.amount within 30d)
tiers:
  by: growth_value
  levels: [{name: normal, min: 0}, {name: silver, min: 1000}, {name: gold, min: 5000}]
  current: tier
  downgrade: {when: "day_of_year(as_of) == 1"}
classes:
  lifecycle:
    - {name: active, when: "(recency_days ?? 999) <= 30"}
    - {name: dormant, when: "(recency_days ?? 999) <= 180"}
    - {name: potential, else: true}
segments:
  vip: "'vip' in tags"
  big_spender: "spend_30d >= 500"
delivery:
  channels:
    sms: {max_length: 70, quiet_hours: "21:00-09:00"}
campaigns:
  win_back:
    when: "lifecycle == 'dormant' and vip"
    requires: opted_in_sms
    action: {channel: sms, template: "{{ member.name }}，好久不见：{{ discount }}% off ({{ recency_days }} 天)"}
    cooldown: 30d
  congrats:
    on: tier_up
    action: {channel: push, template: "Welcome to {{ tier }}, {{ member.name }} (was {{ previous.tier }})"}
  downgraded:
    on: tier_down
    action: {channel: push, template: "Now {{ tier }}"}
  keep_tier:
    on: tier_at_risk
    action: {channel: push, template: "Earn {{ keep_gap }} more to keep {{ tier }} (you earn {{ earned_tier }})"}
  welcome_vip:
    on: entered vip
    action: {channel: in_app, template: "Welcome to the VIP club"}
  lapsed:
    on: class lifecycle from active to dormant
    action: {channel: push, template: "We miss you"}
  first:
    on: first_order
    action: {channel: points, points: "100", template: "Thanks for your first order"}
  birthday:
    when: "(days_until_anniversary(birthday) ?? 99) == 7"
    action: {channel: coupon, coupon: BDAY, template: "Happy birthday in a week, {{ member.name }}"}
  singles_day:
    when: "true"
    window: {from: "@2026-11-09", to: "@2026-11-11", weekdays: [mon, tue, wed], hours: "00:00-22:00"}
    action: {channel: in_app, template: "Double points today"}
  spender_bonus:
    when: "big_spender"
    action: {channel: points, points: "round(spend_30d / 10)"}
  report:
    when: "vip"
    action: {channel: in_app, template: "{{ tier }}|{{ next_tier }}|{{ gap }}|{{ lifecycle }}|{{ classes.lifecycle }}|{{ segments|join(',') }}|{{ spend_30d }}|{{ as_of.date() }}|{{ campaign }}|{{ member.birthday }}"}
"""


def member(key, growth=0, tier="normal", sms=True, push=True, tags=(), birthday=None, name=None):
    return dict(member_id=key, name=name or key.upper(), growth_value=growth, tier=tier, opted_in_sms=sms,
                opted_in_push=push, tags=list(tags), birthday=birthday)


def order(key, days_ago, amount="10"):
    return dict(member_id=key, placed_at=AS_OF - dt.timedelta(days=days_ago), amount=Decimal(amount))


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(RULES, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def rules(rule_dir):
    result = check_rule_set(rule_dir)
    assert result.ok, [d.message for d in result.diagnostics]
    return result.rule_set


@pytest.fixture(scope="module")
def compiled(rules):
    return compile_rule_set(rules)


def evaluate(compiled, members, orders=(), as_of=AS_OF):
    by_member: dict = {}
    for row in sorted(orders, key=lambda r: r["placed_at"]):
        by_member.setdefault(row["member_id"], []).append(row)
    members = sorted(members, key=lambda m: m["member_id"])
    return compiled.evaluate(Snapshot(members, {"orders": by_member}, SnapshotStats({}, 0, {}, {})), as_of)


def decide(rules, compiled, members, orders=(), previous=None, history=(), as_of=AS_OF):
    return decide_actions(rules, compiled, evaluate(compiled, members, orders, as_of), previous, history)


def sent(decision, campaign=None):
    return [(a.campaign, a.member) for a in decision.actions if campaign is None or a.campaign == campaign]


# -- transitions -----------------------------------------------------------------------------------

def test_first_run_without_state_computes_no_transitions_and_says_so(rules, compiled):
    decision = decide(rules, compiled, [member("m1", growth=1200, tier=None, tags=["vip"])])
    assert sent(decision, "congrats") == [] and sent(decision, "welcome_vip") == []
    assert any("transitions (on: …) are not computed on a first run" in note for note in decision.notes)
    for campaign in ("congrats", "welcome_vip"):
        reason = decision.reason(campaign, "m1")
        assert (reason.sent, reason.rule) == (False, "no_previous")


def test_without_state_tier_moves_compare_with_the_held_tier_field(rules, compiled):
    members = [member("m1", growth=1200, tier="normal"), member("m2", growth=1200, tier="silver")]
    decision = decide(rules, compiled, members)
    assert sent(decision, "congrats") == [("congrats", "m1")]
    assert decision.actions[0].message == "Welcome to silver, M1 (was normal)"
    assert any("compare with tiers.current" in note for note in decision.notes)


def test_tier_up_and_tier_down_compare_with_the_previous_tier(rules, compiled):
    previous = {"m1": {"tier": "normal"}, "m2": {"tier": "gold"}, "m3": {"tier": "silver"}}
    members = [member("m1", growth=1200), member("m2", growth=1200, tier=None), member("m3", growth=1500)]
    decision = decide(rules, compiled, members, previous=previous)
    assert sent(decision, "congrats") == [("congrats", "m1")]
    assert sent(decision, "downgraded") == [("downgraded", "m2")]
    message = next(a.message for a in decision.actions if a.campaign == "congrats")
    assert message == "Welcome to silver, M1 (was normal)"
    assert decision.reason("congrats", "m3").text == "tier_up did not happen: tier silver → silver"


def test_members_missing_from_a_test_files_previous_have_no_transitions(rules, compiled):
    decision = decide(rules, compiled, [member("m1", tags=["vip"])], previous={"m2": {"tier": "normal"}})
    assert sent(decision, "welcome_vip") == []
    assert decision.reason("welcome_vip", "m1").text.endswith("not in the previous state")


def test_members_new_since_the_last_run_enter_segments_and_move_from_their_held_tier(rules, compiled):
    previous = Previous(AS_OF - dt.timedelta(days=1), {})  # from the state file: both joined since
    members = [member("m1", growth=6000, tags=["vip"]), member("m2", growth=6000, tier=None)]
    decision = decide(rules, compiled, members, previous=previous)
    assert sent(decision, "welcome_vip") == [("welcome_vip", "m1")]
    assert sent(decision, "congrats") == [("congrats", "m1")]
    assert "no previous tier" in decision.reason("congrats", "m2").text


def test_the_previous_runs_tier_wins_over_the_held_tier_field(rules, compiled):
    # The snapshot's tier field lags (still normal), but the last run already made m1 silver.
    decision = decide(rules, compiled, [member("m1", growth=1200, tier="normal")], previous={"m1": {"tier": "silver"}})
    assert sent(decision, "congrats") == []


@pytest.mark.parametrize("bad, words", [
    ({"segments": "vip"}, "segments is a list"),
    ({"classes": ["silent"]}, "classes maps"),
    ({"tier": 3}, "tier is a tier name"),
    ({"tiers": "gold"}, "unknown key(s) tiers"),
    ("silver", "expected a map"),
])
def test_a_malformed_previous_state_is_a_diagnostic(rules, compiled, bad, words):
    with pytest.raises(DiagnosticError) as failure:
        decide(rules, compiled, [member("m1")], previous={"m1": bad})
    assert failure.value.diagnostics[0].message.startswith("previous.m1: ") and words in \
        failure.value.diagnostics[0].message


def test_test_files_expect_actions_against_a_previous_state(rule_dir, tmp_path):
    (tmp_path / "rules.yaml").write_text((rule_dir / "rules.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "campaigns.test.yaml").write_text(textwrap.dedent("""
        tests:
          - name: an upgrade and a new vip are greeted
            as_of: 2026-11-02T10:00:00+08:00
            previous:
              m1: {tier: normal, segments: [], classes: {lifecycle: active}}
              m2: {tier: silver, segments: [vip]}
            members:
              - {member_id: m1, name: A, growth_value: 1200, tier: silver, opted_in_sms: false, opted_in_push: true, tags: [vip], birthday: null}
              - {member_id: m2, name: B, growth_value: 1200, tier: silver, opted_in_sms: false, opted_in_push: true, tags: [vip], birthday: null}
            orders: []
            expect:
              - member: m1
                actions: [{campaign: congrats, channel: push}, {campaign: welcome_vip}, {campaign: report}]
              - member: m2
                actions: [{campaign: report}]
        """), encoding="utf-8")
    from click.testing import CliRunner

    from memberrules.cli import main

    result = CliRunner().invoke(main, ["test", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 passed" in result.output


def test_entered_segment_fires_only_on_the_move_in(rules, compiled):
    previous = {"m1": {"segments": []}, "m2": {"segments": ["vip"]}}
    members = [member("m1", tags=["vip"]), member("m2", tags=["vip"])]
    assert sent(decide(rules, compiled, members, previous=previous), "welcome_vip") == [("welcome_vip", "m1")]


def test_class_change_needs_both_ends(rules, compiled):
    previous = {"m1": {"classes": {"lifecycle": "active"}}, "m2": {"classes": {"lifecycle": "potential"}}}
    members = [member("m1"), member("m2")]
    orders = [order("m1", 40), order("m2", 40)]  # both dormant now
    decision = decide(rules, compiled, members, orders, previous=previous)
    assert sent(decision, "lapsed") == [("lapsed", "m1")]
    assert decision.actions[[a.campaign for a in decision.actions].index("lapsed")].values == \
        {"lifecycle": "dormant", "previous_lifecycle": "active"}


def test_first_order_compares_order_counts(rules, compiled):
    previous = {"m1": {"orders": 0}, "m2": {"orders": 1}, "m3": {}}
    orders = [order("m1", 0), order("m2", 0), order("m2", 5), order("m3", 0)]
    decision = decide(rules, compiled, [member("m1"), member("m2"), member("m3")], orders, previous=previous)
    assert sent(decision, "first") == [("first", "m1")]
    assert decision.actions[0].points == 100
    assert "no order count" in decision.reason("first", "m3").text


def test_tier_at_risk_tells_how_much_more_keeps_the_tier(rules, compiled):
    decision = decide(rules, compiled, [member("m1", growth=4200, tier="gold"), member("m2", growth=5200, tier="gold")])
    assert sent(decision, "keep_tier") == [("keep_tier", "m1")]
    action = next(a for a in decision.actions if a.campaign == "keep_tier")
    assert action.message == "Earn 800 more to keep gold (you earn silver)"
    assert action.values == {"tier": "gold", "earned_tier": "silver", "keep_gap": 800}


# -- conditions, windows, consent, points ------------------------------------------------------------

def test_calendar_condition_birthday_in_seven_days(rules, compiled):
    members = [member("m1", birthday=dt.date(1990, 11, 9)), member("m2", birthday=dt.date(1990, 11, 10))]
    decision = decide(rules, compiled, members)
    assert sent(decision, "birthday") == [("birthday", "m1")]
    assert decision.actions[0].coupon == "BDAY"


@pytest.mark.parametrize("as_of, live", [
    (dt.datetime(2026, 11, 9, 10, tzinfo=SH), True),     # Monday inside the dates
    (dt.datetime(2026, 11, 11, 21, 59, tzinfo=SH), True),
    (dt.datetime(2026, 11, 11, 22, 0, tzinfo=SH), False),  # after hours
    (dt.datetime(2026, 11, 8, 12, tzinfo=SH), False),      # the day before
    (dt.datetime(2026, 11, 12, 12, tzinfo=SH), False),     # Thursday, and past the last day
])
def test_promotion_window_limits_dates_weekdays_and_hours(rules, compiled, as_of, live):
    decision = decide(rules, compiled, [member("m1")], as_of=as_of)
    assert bool(sent(decision, "singles_day")) == live
    if not live:
        reason = decision.reason("singles_day", "m1")
        assert reason.rule == "window" and "2026-11-09 to 2026-11-11" in reason.text
        assert decision.summaries["singles_day"].window_closed


def test_no_sms_without_consent(rules, compiled):
    members = [member("m1", sms=False, tags=["vip"]), member("m2", sms=True, tags=["vip"])]
    decision = decide(rules, compiled, members, [order("m1", 100), order("m2", 100)])
    assert sent(decision, "win_back") == [("win_back", "m2")]
    assert decision.reason("win_back", "m1").text == "no consent: opted_in_sms is not true"
    summary = decision.summaries["win_back"]
    assert (summary.matched, summary.removed["consent"], summary.sent) == (2, 1, 1)


def test_cooldown_reason_names_the_day_it_ends(rules, compiled):
    history = [Sent("win_back", "m1", "sms", AS_OF - dt.timedelta(days=10))]
    decision = decide(rules, compiled, [member("m1", tags=["vip"])], [order("m1", 100)], history=history)
    assert decision.reason("win_back", "m1").text.startswith("cooldown until 2026-11-22 00:00 (last sent 2026-10-23 00:00)")


def test_points_campaigns_need_points_to_grant(rules, compiled):
    decision = decide(rules, compiled, [member("m1"), member("m2")], [order("m1", 1, "600"), order("m2", 1, "4")])
    assert [(a.member, a.points) for a in decision.actions if a.campaign == "spender_bonus"] == [("m1", 60)]


def test_condition_reason_quotes_the_condition(rules, compiled):
    decision = decide(rules, compiled, [member("m1")])
    assert decision.reason("win_back", "m1").text == "condition false: lifecycle == 'dormant' and vip"


# -- messages and output ---------------------------------------------------------------------------

def test_templates_see_member_metrics_tier_classes_segments_params_and_as_of(rules, compiled):
    decision = decide(rules, compiled, [member("m1", growth=1200, tags=["vip"])], [order("m1", 3, "600.50")])
    report = next(a for a in decision.actions if a.campaign == "report")
    assert report.message == "silver|gold|3800|active|active|vip,big_spender|600.5|2026-11-02|report|"  # as results print it


def test_chinese_messages_render_in_the_sandbox(rules, compiled):
    decision = decide(rules, compiled, [member("m1", tags=["vip"], name="王芳")], [order("m1", 100)])
    action = next(a for a in decision.actions if a.campaign == "win_back")
    assert action.message == "王芳，好久不见：20% off (100 天)"
    assert action.send_at.isoformat() == "2026-11-02T09:00:00+08:00"  # midnight is inside quiet hours


@pytest.mark.parametrize("template", ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                      "{{ member.__class__ }}", "{{ 'x' * 100000000 }}"])
def test_hostile_template_is_a_sandbox_error_never_code(rules, compiled, template):
    # The checker refuses these; an unchecked template must still fail in the sandbox.
    campaigns = dict(rules.campaigns)
    campaigns["report"] = dataclasses.replace(campaigns["report"], template=template)
    hostile = dataclasses.replace(rules, campaigns=campaigns)
    with pytest.raises(DiagnosticError) as failure:
        decide(hostile, compiled, [member("m1", tags=["vip"])])
    assert failure.value.diagnostics[0].code == "MR425"
    assert "SecurityError" in failure.value.diagnostics[0].message


def test_actions_are_sorted_by_campaign_then_member_and_encoded_like_results(rules, compiled):
    members = [member("m2", tags=["vip"]), member("m1", tags=["vip"]), member("m3", growth=900)]
    decision = decide(rules, compiled, members, [order("m1", 3, "600.50")])
    assert sent(decision) == sorted(sent(decision))
    lines = decision.jsonl(SH).splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["campaign", "member", "channel", "send_at", "message", "coupon", "points", "values", "key"]
    bonus = next(json.loads(line) for line in lines if '"spender_bonus"' in line)
    assert bonus["values"] == {"big_spender": True, "points": 60}
    assert '"send_at":"2026-11-02T00:00:00+08:00"' in lines[0]
    assert decision.jsonl(SH) == decide(rules, compiled, list(reversed(members)),
                                        [order("m1", 3, "600.50")]).jsonl(SH)


def test_idempotency_key_is_campaign_member_and_as_of(rules, compiled):
    decision = decide(rules, compiled, [member("m1", tags=["vip"])])
    action = next(a for a in decision.actions if a.campaign == "report")
    assert action.key == idempotency_key("report", "m1", AS_OF)


def test_summary_reports_matched_removed_and_sent(rules, compiled):
    members = [member("m1", sms=False, tags=["vip"]), member("m2", tags=["vip"])]
    decision = decide(rules, compiled, members, [order("m1", 100), order("m2", 100)])
    table = "\n".join(summary_table(decision))
    assert "no consent" in table
    line = next(line for line in summary_table(decision) if line.startswith("win_back"))
    assert line.split()[2:] == ["2", "-1", "1", "(1", "held)"]


# -- runs with the state file ------------------------------------------------------------------------

def run(rules, compiled, state, members, orders=(), as_of=AS_OF, dry_run=False):
    with campaign_run(rules, compiled, evaluate(compiled, members, orders, as_of), state, dry_run) as decision:
        pass
    return decision


def test_a_run_records_results_and_actions_and_the_next_run_sees_them(tmp_path, rules, compiled):
    state = tmp_path / "state.db"
    first = run(rules, compiled, state, [member("m1", growth=900)])
    assert sent(first, "congrats") == []
    second = run(rules, compiled, state, [member("m1", growth=1200)], as_of=AS_OF + dt.timedelta(days=1))
    assert sent(second, "congrats") == [("congrats", "m1")]
    third = run(rules, compiled, state, [member("m1", growth=1300, tier="silver")], as_of=AS_OF + dt.timedelta(days=2))
    assert sent(third, "congrats") == []
    store = StateStore.open(state)
    assert [e.campaign for e in store.ledger()].count("congrats") == 1


def test_rerunning_an_as_of_gives_the_same_actions_and_records_them_once(tmp_path, rules, compiled):
    state = tmp_path / "state.db"
    run(rules, compiled, state, [member("m1", growth=900)])
    later = AS_OF + dt.timedelta(days=1)
    once = run(rules, compiled, state, [member("m1", growth=1200, tags=["vip"])], as_of=later)
    again = run(rules, compiled, state, [member("m1", growth=1200, tags=["vip"])], as_of=later)
    assert once.jsonl(SH) == again.jsonl(SH) and sent(once, "congrats")
    assert any("already in the ledger" in note for note in again.notes)
    keys = [e.key for e in StateStore.open(state).ledger()]
    assert len(keys) == len(set(keys)) == len(once.actions)


def test_dry_run_leaves_the_state_file_unchanged(tmp_path, rules, compiled):
    state = tmp_path / "state.db"
    run(rules, compiled, state, [member("m1", tags=["vip"])], dry_run=True)
    assert not state.exists()  # a dry run never creates the state file
    run(rules, compiled, state, [member("m1", growth=900)])
    dry = run(rules, compiled, state, [member("m1", growth=1200)], as_of=AS_OF + dt.timedelta(days=1), dry_run=True)
    assert sent(dry, "congrats") == [("congrats", "m1")]  # it reads the previous results
    store = StateStore.open(state)
    assert len(store.runs()) == 1 and not any(e.campaign == "congrats" for e in store.ledger())


def test_an_error_inside_the_run_commits_nothing(tmp_path, rules, compiled):
    state = tmp_path / "state.db"
    with pytest.raises(OSError):
        with campaign_run(rules, compiled, evaluate(compiled, [member("m1", tags=["vip"])]), state):
            raise OSError("disk full")
    assert StateStore.open(state).ledger() == []


def test_cooldown_holds_across_runs_through_the_ledger(tmp_path, rules, compiled):
    state = tmp_path / "state.db"
    vip = [member("m1", tags=["vip"])]
    days = [run(rules, compiled, state, vip, [order("m1", 100 - n)], as_of=AS_OF + dt.timedelta(days=n))
            for n in (0, 10, 29, 30)]
    assert [bool(sent(d, "win_back")) for d in days] == [True, False, False, True]


# -- the checker -------------------------------------------------------------------------------------

def check_text(tmp_path, text):
    (tmp_path / "r.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return check_rule_set(tmp_path)


BASE = """
version: 1
schema:
  member:
    key: id
    fields: {id: string, name: string, ok: bool, points: int, level: string?}
"""


@pytest.mark.parametrize("extra, code, words", [
    ("""
campaigns:
  c: {when: "true", window: {from: "@2026-13-01"}, action: {channel: push}}
""", "MR420", "is not a date"),
    ("""
campaigns:
  c: {when: "true", window: {weekdays: [funday]}, action: {channel: push}}
""", "MR420", "is not a weekday"),
    ("""
campaigns:
  c: {when: "true", window: {hours: "10-22"}, action: {channel: push}}
""", "MR420", "time range"),
    ("""
delivery:
  channels: {sms: {quiet_hours: "21:00-21:00"}}
""", "MR420", "starts where it ends"),
    ("""
campaigns:
  c: {on: first_order, action: {channel: push}}
""", "MR414", "'orders'"),
    ("""
tiers: {by: points, levels: [{name: a, min: 0}, {name: b, min: 10}], current: level}
campaigns:
  c: {on: tier_at_risk, action: {channel: push}}
""", "MR414", "tiers.downgrade"),
    ("""
campaigns:
  c: {when: "true", action: {channel: sms, template: "{{ ''.__class__ }}"}}
""", "MR424", "Python internal"),
])
def test_checker_reports_campaign_and_delivery_mistakes(tmp_path, extra, code, words):
    result = check_text(tmp_path, BASE + extra)
    assert not result.ok
    assert any(d.code == code and words in d.message for d in result.diagnostics), \
        [(d.code, d.message) for d in result.diagnostics]


def test_checker_warns_when_an_sms_can_exceed_its_limit(tmp_path):
    result = check_text(tmp_path, BASE + """
delivery:
  channels: {sms: {max_length: 20}}
campaigns:
  c: {when: "true", requires: ok, action: {channel: sms, template: "亲爱的会员 {{ member.name }}"}}
""")
    assert result.ok
    [warning] = [d for d in result.diagnostics if d.code == "MR423"]
    assert warning.severity == "warning" and "26 characters" in warning.message
    line = (tmp_path / "r.yaml").read_text(encoding="utf-8").splitlines()[warning.span.line - 1]
    assert line[warning.span.col - 1:].startswith("亲爱的会员")


def test_checked_delivery_section(tmp_path):
    result = check_text(tmp_path, BASE + """
delivery:
  channels:
    sms: {quiet_hours: "21:00-09:00", caps: [{max: 1, per: 1d}]}
  caps: [{max: 3, per: 7d}]
  budget: 1000
campaigns:
  c: {when: "true", budget: 5, transactional: true, action: {channel: push}}
""")
    delivery = result.rule_set.delivery
    assert str(delivery.policy("sms").quiet_hours) == "21:00-09:00"
    assert [str(cap) for cap in delivery.caps_for("sms")] == ["at most 1 sms action per 1d", "at most 3 actions per 7d"]
    assert delivery.budget == 1000
    campaign = result.rule_set.campaigns["c"]
    assert (campaign.budget, campaign.transactional) == (5, True)


def test_json_schema_describes_delivery_and_windows():
    schema = json_schema()
    assert "delivery" in schema["properties"]
    assert {"from", "to", "weekdays", "hours"} <= set(schema["$defs"]["CampaignWindow"]["properties"])
    assert {"max_length", "quiet_hours", "caps"} <= set(schema["$defs"]["ChannelRules"]["properties"])


def test_a_template_may_use_loop_inside_a_for_loop_and_not_outside():
    from memberrules.engine.templates import check_template

    def locate(start, end):
        return None

    inside = check_template("{% for s in segments %}{{ loop.index }}. {{ s }} {% endfor %}", ["segments"], {}, locate)
    outside = check_template("{{ loop.index }}", ["segments"], {}, locate)
    assert inside == []
    assert [d.code for d in outside] == ["MR314"]


@given(st.timedeltas(min_value=dt.timedelta(days=-10**6), max_value=dt.timedelta(days=10**6)))
def test_a_duration_in_action_values_is_written_as_in_result_rows(value):
    """Floored whole seconds in both files (actions.jsonl once truncated -1.5 s to -1)."""
    tz = ZoneInfo("Asia/Shanghai")
    assert dumps(value, tz) == json_encoder(t.DURATION, tz)(value)
    assert dumps(dt.timedelta(seconds=-1.5), tz) == "-2"
