"""delivery.py's rules over a table of offers in DuckDB, for runs with hundreds of thousands of them.

The verdicts are delivery.decide_delivery's, rule for rule; what changes is who computes them:

- consent and cooldown look at one offer and the ledger only: SQL decides them for every offer;
- groups and caps make a member's offers depend on each other, in priority order. An offer
  outside any group, whose channel no cap counts (or that is transactional), neither blocks
  nor is blocked by another, so it is sent once consent and cooldown pass. A member's other
  offers interact only when there are two of them, or the ledger holds capped actions for the
  member; those members, and only those, go through delivery.decide_member one by one;
- budgets rank all the run's accepted offers: when the rule set sets any, delivery.apply_budgets
  decides them.

The result is the table JUDGED: one row per offer with the rule that stopped it (NULL: sent).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pyarrow as pa

from .check import CheckedCampaign
from .delivery import CheckedDelivery, Offer, Release, Sent, Verdict, apply_budgets, decide_member
from .sql import PREFIX
from .sql_statements import statement

JUDGED = PREFIX + "judged"
_CAMPAIGNS = PREFIX + "delivery_campaigns"
_HISTORY = PREFIX + "history"
_RULED = PREFIX + "ruled"
# The statements below name these tables by their short names (sql_statements.statement).
_TABLES = {"judged": JUDGED, "campaigns": _CAMPAIGNS, "history": _HISTORY, "ruled": _RULED}

# Cooldowns compare distances both ways: an earlier action held by quiet hours may go out
# after this one (delivery._member_rules).
_JUDGE = """
    CREATE OR REPLACE TEMP TABLE judged AS
    SELECT o.campaign, o.pos, o.member, c.interacting,
           CASE WHEN NOT o.consent THEN 'consent'
                WHEN c.cooldown_us IS NOT NULL AND o.member IN (
                    SELECT h.member FROM history AS h
                    WHERE h.campaign = c.name AND abs(h.send_us - c.send_us) < c.cooldown_us)
                THEN 'cooldown' END AS rule
    FROM offers AS o JOIN campaigns AS c ON c.idx = o.campaign"""

_INTERACTING = """
    SELECT campaign, pos, member FROM judged
    WHERE rule IS NULL AND interacting AND member IN (
        SELECT member FROM judged WHERE rule IS NULL AND interacting GROUP BY member HAVING count(*) > 1
        UNION ALL SELECT member FROM history WHERE capped)"""

_ACCEPTED = "SELECT campaign, pos, member FROM judged WHERE rule IS NULL"

_SET_RULES = """
    UPDATE judged SET rule = r.rule FROM ruled AS r
    WHERE judged.campaign = r.campaign AND judged.pos = r.pos"""


def interacts(campaign: CheckedCampaign, delivery: CheckedDelivery) -> bool:
    """Whether the campaign's offers can take a group slot or count towards (or meet) a cap."""
    return campaign.group is not None or (not campaign.transactional and bool(delivery.caps_for(campaign.channel)))


def _micros(value: dt.timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _utc(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.timezone.utc)


def judge_offers(con, offers: str, campaigns: Sequence[CheckedCampaign], delivery: CheckedDelivery,
                 history: Sequence[Sent], as_of: dt.datetime, tz: ZoneInfo) -> Release:
    """Create JUDGED from the table named `offers` (campaign: index into `campaigns`, pos: the member's
    place in key order, member: the key as text, consent: every `requires` field is true).

    Returns:
        channel → when its actions go out (quiet hours), for the channels of `campaigns`.
    """
    release = Release(delivery, as_of, tz)
    con.register(_CAMPAIGNS, pa.table({
        "idx": pa.array(range(len(campaigns)), pa.int32()),
        "name": pa.array([c.name for c in campaigns], pa.string()),
        "cooldown_us": pa.array([_micros(c.cooldown) if c.cooldown else None for c in campaigns], pa.int64()),
        "send_us": pa.array([_micros(_utc(release[c.channel]) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
                             for c in campaigns], pa.int64()),
        "interacting": pa.array([interacts(c, delivery) for c in campaigns], pa.bool_())}))
    con.register(_HISTORY, pa.table({
        "campaign": pa.array([e.campaign for e in history], pa.string()),
        "member": pa.array([e.member for e in history], pa.string()),
        "send_us": pa.array([_micros(_utc(e.send_at) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
                             for e in history], pa.int64()),
        "capped": pa.array([e.capped for e in history], pa.bool_())}))
    try:
        con.execute(statement(_JUDGE, offers=offers, **_TABLES)).fetchall()
        _decide_interacting(con, campaigns, delivery, history, release, tz)
        if delivery.budget is not None or any(c.budget is not None for c in campaigns):
            _decide_budgets(con, campaigns, delivery, release)
    finally:
        con.unregister(_CAMPAIGNS)
        con.unregister(_HISTORY)
    return release


def _offer(campaign: CheckedCampaign, member: str, position: int) -> Offer:
    return Offer(campaign.name, member, campaign.channel, campaign.priority, campaign.group, campaign.cooldown,
                 campaign.transactional, (), campaign.budget, position)


def _decide_interacting(con, campaigns: Sequence[CheckedCampaign], delivery: CheckedDelivery,
                        history: Sequence[Sent], release: Release, tz: ZoneInfo) -> None:
    """Groups and caps, member by member, for the members whose offers can interact."""
    rows = con.sql(statement(_INTERACTING, **_TABLES)).fetchall()
    if not rows:
        return
    by_member: dict[str, list[Offer]] = defaultdict(list)
    for index, position, member in rows:
        by_member[member].append(_offer(campaigns[index], member, position))
    past: dict[str, list[Sent]] = defaultdict(list)
    for entry in history:
        if entry.member in by_member:
            past[entry.member].append(entry)
    index_of = {c.name: i for i, c in enumerate(campaigns)}
    stopped = [(index_of[offer.campaign], offer.position, verdict.rule)
               for member in sorted(by_member)
               for offer, verdict in decide_member(by_member[member], past[member], delivery, release, tz)
               if not verdict.sent]
    _set_rules(con, stopped)


def _decide_budgets(con, campaigns: Sequence[CheckedCampaign], delivery: CheckedDelivery, release: Release) -> None:
    accepted = [_offer(campaigns[index], member, position) for index, position, member in
                con.sql(statement(_ACCEPTED, **_TABLES)).fetchall()]
    verdicts = {(o.campaign, o.member): Verdict(True, release[o.channel]) for o in accepted}
    apply_budgets(accepted, verdicts, delivery.budget)
    index_of = {c.name: i for i, c in enumerate(campaigns)}
    _set_rules(con, [(index_of[o.campaign], o.position, verdicts[(o.campaign, o.member)].rule)
                     for o in accepted if not verdicts[(o.campaign, o.member)].sent])


def _set_rules(con, stopped: list[tuple[int, int, str | None]]) -> None:
    if not stopped:
        return
    con.register(_RULED, pa.table({"campaign": pa.array([s[0] for s in stopped], pa.int32()),
                                   "pos": pa.array([s[1] for s in stopped], pa.int64()),
                                   "rule": pa.array([s[2] for s in stopped], pa.string())}))
    try:
        con.execute(statement(_SET_RULES, **_TABLES)).fetchall()
    finally:
        con.unregister(_RULED)
