"""delivery_sql.judge_offers gives delivery.decide_delivery's verdicts, rule for rule.

Hypothesis draws campaigns (channels, groups, priorities with ties, cooldowns, transactional,
budgets), a delivery section (channel and global caps, quiet hours, a run budget), offers with
and without consent, and a ledger of earlier actions around `as_of`; both deciders must stop
the same offers with the same rule.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memberrules.engine.check import CheckedCampaign
from memberrules.engine.delivery import Cap, ChannelPolicy, CheckedDelivery, Offer, Sent, decide_delivery, \
    parse_time_range
from memberrules.engine.delivery_sql import JUDGED, interacts, judge_offers
from memberrules.engine.duckdb_engine import Limits, connect

TZ = ZoneInfo("Asia/Shanghai")
AS_OF = dt.datetime(2026, 11, 9, 22, 30, tzinfo=TZ)  # inside 21:00-09:00 quiet hours
CHANNELS = ("sms", "push", "email")
DAYS = st.sampled_from([dt.timedelta(hours=12), dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(days=7)])

# Minutes from AS_OF that lie exactly a cooldown or cap span away from this run's send times
# (AS_OF itself, or 09:00 the next morning after quiet hours): `<` against `<=` shows there.
_RELEASE = 10 * 60 + 30
BOUNDARIES = st.sampled_from([start - span for start in (0, _RELEASE) for span in (12 * 60, 24 * 60, 72 * 60, 168 * 60)]
                             + [start + span for start in (0, _RELEASE) for span in (12 * 60, 24 * 60)])

campaign_specs = st.lists(st.fixed_dictionaries({
    "channel": st.sampled_from(CHANNELS), "priority": st.sampled_from([0, 10, 20]),
    "group": st.none() | st.sampled_from(["g1", "g2"]), "cooldown": st.none() | DAYS,
    "transactional": st.booleans(), "budget": st.none() | st.integers(1, 3)}), min_size=1, max_size=5)
caps = st.lists(st.tuples(st.integers(1, 3), DAYS), max_size=2)
deliveries = st.fixed_dictionaries({
    "channels": st.dictionaries(st.sampled_from(CHANNELS), st.tuples(st.booleans(), caps), max_size=3),
    "caps": caps, "budget": st.none() | st.integers(0, 6)})


def _campaigns(specs: list[dict]) -> list[CheckedCampaign]:
    return [CheckedCampaign(f"c{i}", None, None, (), s["channel"], None, None, None, s["cooldown"], s["priority"],
                            s["group"], None, s["budget"], s["transactional"]) for i, s in enumerate(specs)]


def _delivery(spec: dict) -> CheckedDelivery:
    quiet = parse_time_range("21:00-09:00")
    channels = {name: ChannelPolicy(None, 20, quiet if has_quiet else None,
                                    tuple(Cap(m, per, name) for m, per in channel_caps))
                for name, (has_quiet, channel_caps) in spec["channels"].items()}
    return CheckedDelivery(channels, tuple(Cap(m, per, None) for m, per in spec["caps"]), spec["budget"])


@pytest.fixture(scope="module")
def con():
    connection = connect(Limits("1GB", threads=2))
    yield connection
    connection.close()


def _judged(con, campaigns, delivery, offers, history) -> dict[tuple[str, str], str | None]:
    index = {c.name: i for i, c in enumerate(campaigns)}
    con.register("offers_arrow", pa.table({
        "campaign": pa.array([index[o.campaign] for o in offers], pa.int32()),
        "pos": pa.array([o.position for o in offers], pa.int64()),
        "member": pa.array([o.member for o in offers], pa.string()),
        "consent": pa.array([not o.missing_consent for o in offers], pa.bool_())}))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE test_offers AS SELECT * FROM offers_arrow").fetchall()
    finally:
        con.unregister("offers_arrow")
    judge_offers(con, "test_offers", campaigns, delivery, history, AS_OF, TZ)
    return {(campaigns[c].name, m): rule for c, m, rule in con.execute(f"SELECT campaign, member, rule FROM {JUDGED}")
            .fetchall()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=campaign_specs, delivery_spec=deliveries,
       matches=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans()), max_size=20),
       past=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(-200 * 60, 30 * 60) | BOUNDARIES,
                               st.booleans()), max_size=8))
@example(specs=[{"channel": "push", "priority": 0, "group": None, "cooldown": dt.timedelta(hours=12),
                  "transactional": False, "budget": None}], delivery_spec={"channels": {}, "caps": [], "budget": None},
         matches=[(0, 0, True)], past=[(0, 0, -12 * 60, True)])  # exactly one cooldown ago: sent again
@example(specs=[{"channel": "sms", "priority": 0, "group": None, "cooldown": None, "transactional": False,
                  "budget": None}], delivery_spec={"channels": {"sms": (False, [(1, dt.timedelta(days=1))])},
                                                   "caps": [], "budget": None},
         matches=[(0, 0, True)], past=[(0, 0, -24 * 60, True)])  # exactly one cap span ago: room again
def test_sql_verdicts_are_the_python_verdicts(con, specs, delivery_spec, matches, past):
    campaigns = _campaigns(specs)
    delivery = _delivery(delivery_spec)
    offers, seen = [], set()
    for c, m, consent in matches:
        if c < len(campaigns) and (c, m) not in seen:
            seen.add((c, m))
            campaign = campaigns[c]
            offers.append(Offer(campaign.name, f"M{m}", campaign.channel, campaign.priority, campaign.group,
                                campaign.cooldown, campaign.transactional, () if consent else ("opted_in",),
                                campaign.budget, m))
    history = [Sent(campaigns[c].name, f"M{m}", campaigns[c].channel, AS_OF + dt.timedelta(minutes=minutes), capped)
               for c, m, minutes, capped in past if c < len(campaigns)]
    expected = {key: verdict.rule for key, verdict in decide_delivery(offers, history, delivery, AS_OF, TZ).items()}
    assert _judged(con, campaigns, delivery, offers, history) == expected


def test_offers_outside_groups_and_caps_are_independent():
    delivery = CheckedDelivery({"sms": ChannelPolicy(caps=(Cap(1, dt.timedelta(days=1), "sms"),))})
    plain, grouped, capped, transactional = _campaigns([
        {"channel": "push", "priority": 0, "group": None, "cooldown": None, "transactional": False, "budget": None},
        {"channel": "push", "priority": 0, "group": "g", "cooldown": None, "transactional": False, "budget": None},
        {"channel": "sms", "priority": 0, "group": None, "cooldown": None, "transactional": False, "budget": None},
        {"channel": "sms", "priority": 0, "group": None, "cooldown": None, "transactional": True, "budget": None}])
    assert [interacts(c, delivery) for c in (plain, grouped, capped, transactional)] == [False, True, True, False]
    with_global_cap = CheckedDelivery(caps=(Cap(2, dt.timedelta(days=7)),))
    assert interacts(plain, with_global_cap)
