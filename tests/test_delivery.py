"""Delivery rules: consent, cooldowns, groups, caps, quiet hours, budgets, and template checks."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberrules.engine.delivery import (Cap, CampaignWindow, ChannelPolicy, CheckedDelivery, Offer, Sent,
                                         decide_delivery, parse_time_range, release_time, template_problems)
from memberrules.engine.parse import text_locator

SH = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=SH)
DAY = dt.timedelta(days=1)


def verdicts(offers, history=(), delivery=None, as_of=NOW):
    return decide_delivery(offers, history, delivery, as_of, SH)


# -- time ranges and quiet hours -------------------------------------------------------------------

@pytest.mark.parametrize("text, inside, outside", [
    ("21:00-09:00", ["21:00", "23:59", "00:00", "08:59"], ["09:00", "12:00", "20:59"]),
    ("10:00-22:00", ["10:00", "21:59"], ["09:59", "22:00", "00:00"]),
    ("22:00-24:00", ["22:00", "23:59"], ["00:00", "21:59"]),
])
def test_time_range_includes_start_and_excludes_end(text, inside, outside):
    window = parse_time_range(text)
    minutes = lambda hhmm: int(hhmm[:2]) * 60 + int(hhmm[3:])  # noqa: E731
    assert all(window.contains(minutes(m)) for m in inside)
    assert not any(window.contains(minutes(m)) for m in outside)


@pytest.mark.parametrize("text", ["9-10", "25:00-01:00", "10:00-10:00", "10:61-11:00", "00:00-24:00", "24:30-1:00"])
def test_bad_time_ranges_are_refused(text):
    with pytest.raises(ValueError):
        parse_time_range(text)


@pytest.mark.parametrize("due, expected", [
    ("2026-11-01T23:30", "2026-11-02T09:00"),   # late evening: next morning
    ("2026-11-02T03:00", "2026-11-02T09:00"),   # after midnight: the same morning
    ("2026-11-02T09:00", "2026-11-02T09:00"),   # the end is not quiet
    ("2026-11-02T20:59", "2026-11-02T20:59"),
])
def test_actions_due_in_quiet_hours_wait_for_their_end(due, expected):
    quiet = parse_time_range("21:00-09:00")
    released = release_time(dt.datetime.fromisoformat(due).replace(tzinfo=SH), quiet, SH)
    assert released == dt.datetime.fromisoformat(expected).replace(tzinfo=SH)


def test_quiet_hours_are_read_in_the_rule_set_timezone():
    # 14:00 UTC is 22:00 in Shanghai: quiet there, though mid-afternoon in UTC.
    due = dt.datetime(2026, 11, 1, 14, 0, tzinfo=dt.timezone.utc)
    released = release_time(due, parse_time_range("21:00-09:00"), SH)
    assert released.isoformat() == "2026-11-02T09:00:00+08:00"


def test_quiet_hours_ending_at_midnight_release_next_day():
    due = dt.datetime(2026, 11, 1, 22, 30, tzinfo=SH)
    assert release_time(due, parse_time_range("22:00-24:00"), SH).isoformat() == "2026-11-02T00:00:00+08:00"


# -- campaign windows ------------------------------------------------------------------------------

def test_window_limits_days_weekdays_and_hours():
    window = CampaignWindow(dt.date(2026, 11, 9), dt.date(2026, 11, 11), frozenset({1, 2}),
                            parse_time_range("10:00-22:00"))
    at = lambda text: dt.datetime.fromisoformat(text).replace(tzinfo=SH)  # noqa: E731
    assert window.contains(at("2026-11-09T10:00"), SH)       # Monday, opening minute
    assert window.contains(at("2026-11-10T21:59"), SH)       # Tuesday
    assert not window.contains(at("2026-11-11T12:00"), SH)   # Wednesday: not a listed weekday
    assert not window.contains(at("2026-11-09T22:00"), SH)   # closing time is outside
    assert not window.contains(at("2026-11-16T12:00"), SH)   # a Monday after the last day
    assert not window.contains(at("2026-11-02T12:00"), SH)   # a Monday before the first day


# -- rules -----------------------------------------------------------------------------------------

def test_missing_consent_blocks_the_action():
    result = verdicts([Offer("win_back", "m1", "sms", missing_consent=("opted_in_sms",))])
    verdict = result[("win_back", "m1")]
    assert not verdict.sent and verdict.rule == "consent"
    assert "opted_in_sms" in verdict.reason


def test_cooldown_blocks_until_it_has_passed_and_says_until_when():
    offer = Offer("win_back", "m1", "sms", cooldown=30 * DAY)
    recent = Sent("win_back", "m1", "sms", NOW - 29 * DAY)
    blocked = verdicts([offer], [recent])[("win_back", "m1")]
    assert blocked.rule == "cooldown"
    assert "cooldown until 2026-11-02 12:00" in blocked.reason
    old = Sent("win_back", "m1", "sms", NOW - 30 * DAY)
    assert verdicts([offer], [old])[("win_back", "m1")].sent


def test_cooldown_only_counts_the_same_campaign_and_member():
    offer = Offer("win_back", "m1", "sms", cooldown=30 * DAY)
    history = [Sent("other", "m1", "sms", NOW - DAY), Sent("win_back", "m2", "sms", NOW - DAY)]
    assert verdicts([offer], history)[("win_back", "m1")].sent


def test_group_keeps_the_highest_priority_action_then_the_campaign_name():
    offers = [Offer("b_low", "m1", "push", priority=1, group="daily"),
              Offer("a_high", "m1", "push", priority=5, group="daily"),
              Offer("c_high", "m1", "push", priority=5, group="daily"),
              Offer("other", "m1", "push", priority=0, group="else")]
    result = verdicts(offers)
    assert result[("a_high", "m1")].sent and result[("other", "m1")].sent
    assert result[("c_high", "m1")].reason == "group daily taken by a_high"
    assert result[("b_low", "m1")].rule == "group"


def test_group_slot_goes_to_the_next_campaign_when_the_first_is_in_cooldown():
    offers = [Offer("first", "m1", "push", priority=5, group="g", cooldown=7 * DAY),
              Offer("second", "m1", "push", priority=1, group="g")]
    result = verdicts(offers, [Sent("first", "m1", "push", NOW - DAY)])
    assert result[("first", "m1")].rule == "cooldown"
    assert result[("second", "m1")].sent


def test_channel_cap_counts_the_ledger_and_this_run():
    delivery = CheckedDelivery(channels={"sms": ChannelPolicy(caps=(Cap(2, 7 * DAY, "sms"),))})
    offers = [Offer(name, "m1", "sms", priority=p) for name, p in (("a", 3), ("b", 2), ("c", 1))]
    result = verdicts(offers, [Sent("old", "m1", "sms", NOW - 3 * DAY)], delivery)
    assert [result[(n, "m1")].sent for n in "abc"] == [True, False, False]
    assert result[("b", "m1")].reason == "cap reached: at most 2 sms actions per 7d"


def test_cross_channel_cap_counts_every_channel_but_spares_transactional_campaigns():
    delivery = CheckedDelivery(caps=(Cap(1, DAY),))
    offers = [Offer("promo", "m1", "push", priority=2), Offer("mail", "m1", "email", priority=1),
              Offer("receipt", "m1", "push", transactional=True)]
    result = verdicts(offers, (), delivery)
    assert result[("promo", "m1")].sent and result[("receipt", "m1")].sent
    assert result[("mail", "m1")].rule == "cap"


def test_transactional_history_does_not_count_towards_caps():
    delivery = CheckedDelivery(caps=(Cap(1, DAY),))
    history = [Sent("receipt", "m1", "push", NOW - dt.timedelta(hours=2), capped=False)]
    assert verdicts([Offer("promo", "m1", "push")], history, delivery)[("promo", "m1")].sent


def test_budget_keeps_highest_priority_then_campaign_then_member():
    delivery = CheckedDelivery(budget=3)
    offers = [Offer("b", "m2", "push", priority=1), Offer("a", "m3", "push", priority=1),
              Offer("a", "m1", "push", priority=1), Offer("z", "m9", "push", priority=9)]
    result = verdicts(offers, (), delivery)
    sent = sorted(k for k, v in result.items() if v.sent)
    assert sent == [("a", "m1"), ("a", "m3"), ("z", "m9")]
    assert result[("b", "m2")].reason == "budget exhausted (3 actions per run)"


def test_campaign_budget_limits_one_campaign_only():
    offers = [Offer("gift", f"m{i}", "coupon", budget=2) for i in range(4)] + [Offer("other", "m0", "push")]
    result = verdicts(offers)
    assert sum(v.sent for (c, _), v in result.items() if c == "gift") == 2
    assert result[("gift", "m3")].rule == "campaign_budget"
    assert result[("other", "m0")].sent


def test_quiet_hours_set_send_at_and_caps_compare_send_times():
    delivery = CheckedDelivery(channels={"sms": ChannelPolicy(quiet_hours=parse_time_range("21:00-09:00"),
                                                              caps=(Cap(1, DAY, "sms"),))})
    late = dt.datetime(2026, 11, 1, 23, 0, tzinfo=SH)
    result = verdicts([Offer("a", "m1", "sms")], (), delivery, as_of=late)
    assert result[("a", "m1")].send_at.isoformat() == "2026-11-02T09:00:00+08:00"
    # Yesterday's 09:30 send is 23.5 hours before this one's 09:00 release.
    history = [Sent("b", "m1", "sms", dt.datetime(2026, 11, 1, 9, 30, tzinfo=SH))]
    assert verdicts([Offer("a", "m1", "sms")], history, delivery, as_of=late)[("a", "m1")].rule == "cap"


def test_first_failing_rule_is_the_reason():
    offer = Offer("win_back", "m1", "sms", cooldown=30 * DAY, missing_consent=("opted_in_sms",))
    result = verdicts([offer], [Sent("win_back", "m1", "sms", NOW - DAY)])
    assert result[("win_back", "m1")].rule == "consent"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["m1", "m2"]), st.sampled_from(["sms", "push"]),
                          st.integers(0, 3), st.booleans()), max_size=12, unique_by=lambda o: (o[0], o[1])),
       st.integers(0, 5))
def test_every_offer_gets_one_verdict_and_budget_is_never_exceeded(raw, budget):
    offers = [Offer(c, m, ch, priority=p, group="g" if grouped else None) for c, m, ch, p, grouped in raw]
    result = verdicts(offers, (), CheckedDelivery(caps=(Cap(2, DAY),), budget=budget))
    assert set(result) == {(o.campaign, o.member) for o in offers}
    sent = [k for k, v in result.items() if v.sent]
    assert len(sent) <= budget
    for member in ("m1", "m2"):
        assert sum(1 for c, m in sent if m == member) <= 2
        grouped = [c for c, m in sent if m == member and any(o.group and o.campaign == c and o.member == m
                                                             for o in offers)]
        assert len(grouped) <= 1


# -- template checks -------------------------------------------------------------------------------

def problems(text, channel="sms", policy=ChannelPolicy(max_length=70)):
    return template_problems(text, channel, policy, text_locator(text))


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ member._secret }}",
    "{{ 'x'|center(1000000000) }}",
])
def test_hostile_templates_are_errors_at_validate(template):
    found = problems(template)
    assert found and all(d.code == "MR424" and d.is_error for d in found)


def test_plain_underscores_in_text_are_fine():
    assert problems("{{ member.name|replace('_', ' ') }} hi", policy=ChannelPolicy()) == []


def test_sms_length_counts_characters_so_chinese_is_measured_right():
    text = "亲爱的会员，" * 10  # 60 characters, 180 bytes in UTF-8
    assert problems(text) == []
    warned = problems(text + "{{ member.name }}")  # 60 + one value estimated at 20
    assert [d.code for d in warned] == ["MR423"]
    assert warned[0].severity == "warning" and "80 characters" in warned[0].message


def test_sms_length_uses_the_declared_placeholder_length():
    text = "x" * 60 + "{{ member.name }}"
    assert problems(text, policy=ChannelPolicy(max_length=70, placeholder_length=10)) == []
    assert problems(text, policy=ChannelPolicy(max_length=70, placeholder_length=11))


def test_channels_without_max_length_are_not_measured():
    assert problems("x" * 500, channel="push", policy=ChannelPolicy()) == []
