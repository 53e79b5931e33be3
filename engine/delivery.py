"""Which matched actions actually go out: consent, cooldowns, groups, caps, quiet hours, budget.

`campaigns.py` decides who *matches* a campaign; this module decides, for every
match (an Offer), whether it is sent and when (a Verdict). The rules run in a
fixed order, and the first one that stops an action is its reason:

1. consent (`requires`): every named member field is true;
2. cooldown: no action of the same campaign to the member within `cooldown`;
3. group: one action per member per exclusive `group` and run;
4. frequency caps (`delivery.caps`, `delivery.channels.X.caps`), skipped for
   `transactional` campaigns;
5. budget: per campaign (`budget:`) and per run (`delivery.budget`), highest
   priority first, ties broken by campaign name, then member key.

Steps 1–4 run per member, over the member's offers from the highest priority
down (ties: campaign name), so a higher-priority action takes the group slot or
the cap room first. Quiet hours never drop an action: one due inside them gets a
`send_at` at their end. Cooldowns and caps compare `send_at` instants.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from jinja2 import TemplateSyntaxError, nodes

from .errors import Diagnostic
from .parse import Locator
from .templates import environment

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_TIME_RANGE_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

# The order rules are applied in, and the words the summary uses for them.
RULES = ("consent", "cooldown", "group", "cap", "campaign_budget", "budget")
RULE_WORDS = {"consent": "no consent", "cooldown": "cooldown", "group": "group taken", "cap": "frequency cap",
              "campaign_budget": "campaign budget", "budget": "run budget"}


# -- time of day -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeRange:
    """A local time-of-day range, start included and end excluded; it may wrap midnight."""

    start: int  # minutes after midnight
    end: int  # 1..1440; 1440 is "24:00"

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time_range(text: str) -> TimeRange:
    """`"21:00-09:00"` → a TimeRange; raises ValueError with words for people.

    >>> str(parse_time_range("21:00-9:00"))
    '21:00-09:00'
    """
    match = _TIME_RANGE_RE.match(text)
    if not match:
        raise ValueError(f"expected a time range such as '21:00-09:00', got '{text}'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"'{text}' is not a time of day (00:00 … 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % 1440:
        raise ValueError(f"'{text}' starts where it ends; give two different times")
    return TimeRange(start, end)


def _minute_of_day(local: dt.datetime) -> int:
    return local.hour * 60 + local.minute


def release_time(due: dt.datetime, quiet: TimeRange | None, tz: ZoneInfo) -> dt.datetime:
    """When an action due at `due` may go out: `due` itself, or the end of the quiet hours it falls in.

    >>> tz = ZoneInfo("Asia/Shanghai")
    >>> release_time(dt.datetime(2026, 11, 1, 23, 30, tzinfo=tz), parse_time_range("21:00-09:00"), tz).isoformat()
    '2026-11-02T09:00:00+08:00'
    """
    local = due.astimezone(tz)
    minute = _minute_of_day(local)
    if quiet is None or not quiet.contains(minute):
        return local
    day = local.date()
    if quiet.start > quiet.end and minute >= quiet.start:
        day += dt.timedelta(days=1)  # a range wrapping midnight ends tomorrow
    if quiet.end == 1440:
        day, end = day + dt.timedelta(days=1), 0
    else:
        end = quiet.end
    wall = dt.datetime.combine(day, dt.time(end // 60, end % 60))
    # Round-trip through UTC so a wall time skipped by a DST change lands on a real instant.
    return wall.replace(tzinfo=tz).astimezone(dt.timezone.utc).astimezone(tz)


# -- checked delivery rules ------------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignWindow:
    """When a campaign is live: days (both included), ISO weekdays and local hours, all optional."""

    first_day: dt.date | None = None
    last_day: dt.date | None = None
    weekdays: frozenset[int] | None = None
    hours: TimeRange | None = None

    def contains(self, instant: dt.datetime, tz: ZoneInfo) -> bool:
        local = instant.astimezone(tz)
        day = local.date()
        if self.first_day is not None and day < self.first_day:
            return False
        if self.last_day is not None and day > self.last_day:
            return False
        if self.weekdays is not None and local.isoweekday() not in self.weekdays:
            return False
        return self.hours is None or self.hours.contains(_minute_of_day(local))

    def __str__(self) -> str:
        parts = []
        if self.first_day or self.last_day:
            parts.append(f"{self.first_day or '…'} to {self.last_day or '…'}")
        if self.weekdays is not None:
            names = {v: k for k, v in WEEKDAYS.items()}
            parts.append("on " + ", ".join(names[d] for d in sorted(self.weekdays)))
        if self.hours is not None:
            parts.append(f"at {self.hours}")
        return " ".join(parts) or "always"


@dataclass(frozen=True)
class Cap:
    """At most `max` actions to one member within any span of `per` (on `channel`, or on all)."""

    max: int
    per: dt.timedelta
    channel: str | None = None

    def applies_to(self, channel: str) -> bool:
        return self.channel is None or self.channel == channel

    def __str__(self) -> str:
        what = f"{self.channel} action" if self.channel else "action"
        return f"at most {self.max} {what}{'' if self.max == 1 else 's'} per {format_duration(self.per)}"


@dataclass(frozen=True)
class ChannelPolicy:
    max_length: int | None = None
    placeholder_length: int = 20
    quiet_hours: TimeRange | None = None
    caps: tuple[Cap, ...] = ()


@dataclass(frozen=True)
class CheckedDelivery:
    """The `delivery:` section, checked. An empty one (no section) lets everything through."""

    channels: Mapping[str, ChannelPolicy] = field(default_factory=dict)
    caps: tuple[Cap, ...] = ()
    budget: int | None = None

    def policy(self, channel: str) -> ChannelPolicy:
        return self.channels.get(channel, ChannelPolicy())

    def caps_for(self, channel: str) -> tuple[Cap, ...]:
        return self.policy(channel).caps + tuple(cap for cap in self.caps if cap.applies_to(channel))

    @property
    def lookback(self) -> dt.timedelta:
        """How far back the ledger can matter for caps (cooldowns add their own)."""
        pers = [cap.per for cap in self.caps] + [cap.per for p in self.channels.values() for cap in p.caps]
        return max(pers, default=dt.timedelta(0))


def format_duration(value: dt.timedelta) -> str:
    """`30d`, `12h`, `90m`, `45s`: the largest unit that divides the duration.

    >>> format_duration(dt.timedelta(days=14))
    '14d'
    """
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_day(text: str) -> dt.date:
    """`@2026-11-09` or `2026-11-09` → a date; raises ValueError."""
    return dt.date.fromisoformat(text.strip().removeprefix("@"))


def parse_weekday(value: int | str) -> int:
    if isinstance(value, int):
        if 1 <= value <= 7:
            return value
        raise ValueError(f"weekday {value} is not 1 (Monday) … 7 (Sunday)")
    day = WEEKDAYS.get(value.strip().lower()[:3])
    if day is None:
        raise ValueError(f"'{value}' is not a weekday (mon … sun, or 1 … 7)")
    return day


# -- offers and verdicts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Offer:
    """A campaign matched a member: the facts delivery decides on."""

    campaign: str
    member: str
    channel: str
    priority: int = 0
    group: str | None = None
    cooldown: dt.timedelta | None = None
    transactional: bool = False
    missing_consent: tuple[str, ...] = ()  # `requires` fields that are not true for this member
    budget: int | None = None  # the campaign's per-run budget
    position: int = 0  # the member's place in member-key order, for ties


@dataclass(frozen=True)
class Sent:
    """One ledger entry, as delivery sees it."""

    campaign: str
    member: str
    channel: str
    send_at: dt.datetime
    capped: bool = True  # counted by frequency caps (false for transactional campaigns)


@dataclass(frozen=True)
class Verdict:
    """Whether an offer goes out; if not, the rule that stopped it and why, in words."""

    sent: bool
    send_at: dt.datetime
    rule: str | None = None  # one of RULES when not sent
    reason: str = "sent"


def _priority_order(offer: Offer) -> tuple:
    return (-offer.priority, offer.campaign, offer.position, offer.member)


def decide_delivery(offers: Iterable[Offer], history: Iterable[Sent], delivery: CheckedDelivery | None,
                    as_of: dt.datetime, tz: ZoneInfo) -> dict[tuple[str, str], Verdict]:
    """Apply consent, cooldowns, groups, caps and budgets to this run's offers.

    Args:
        offers: at most one per (campaign, member).
        history: ledger entries of earlier runs (their `as_of` before this one).
        delivery: the rule set's delivery section (None: no caps, quiet hours or budget).
        as_of: this run's instant; an action is due then, unless quiet hours hold it.
        tz: the rule set's timezone (quiet hours are local times).

    Returns:
        (campaign, member) → Verdict, for every offer.

    >>> tz = ZoneInfo("UTC"); now = dt.datetime(2026, 11, 1, 12, tzinfo=tz)
    >>> offers = [Offer("a", "m1", "sms", priority=2, group="g"), Offer("b", "m1", "sms", group="g")]
    >>> {k: v.reason for k, v in decide_delivery(offers, [], None, now, tz).items()}
    {('a', 'm1'): 'sent', ('b', 'm1'): 'group g taken by a'}
    """
    delivery = delivery or CheckedDelivery()
    past: dict[str, list[Sent]] = defaultdict(list)
    for entry in history:
        past[entry.member].append(entry)
    by_member: dict[str, list[Offer]] = defaultdict(list)
    for offer in offers:
        by_member[offer.member].append(offer)
    verdicts: dict[tuple[str, str], Verdict] = {}
    accepted: list[Offer] = []
    release = Release(delivery, as_of, tz)
    for member in sorted(by_member):
        for offer, verdict in decide_member(by_member[member], past[member], delivery, release, tz):
            verdicts[(offer.campaign, member)] = verdict
            if verdict.sent:
                accepted.append(offer)
    apply_budgets(accepted, verdicts, delivery.budget)
    return verdicts


class Release(dict):
    """channel → when this run's actions on it go out: `as_of`, or the end of its quiet hours."""

    def __init__(self, delivery: CheckedDelivery, as_of: dt.datetime, tz: ZoneInfo):
        super().__init__()
        self.delivery, self.as_of, self.tz = delivery, as_of, tz

    def __missing__(self, channel: str) -> dt.datetime:
        send_at = self[channel] = release_time(self.as_of, self.delivery.policy(channel).quiet_hours, self.tz)
        return send_at


def decide_member(offers: Iterable[Offer], past: Sequence[Sent], delivery: CheckedDelivery, release: Release,
                  tz: ZoneInfo) -> Iterator[tuple[Offer, Verdict]]:
    """Rules 1–4 for one member's offers, from the highest priority down: an action sent takes
    its group and counts towards the caps of the offers after it."""
    taken: dict[str, str] = {}
    sent_now: list[Sent] = []
    for offer in sorted(offers, key=_priority_order):
        send_at = release[offer.channel]
        verdict = _member_rules(offer, send_at, past, sent_now, taken, delivery, tz)
        if verdict.sent:
            if offer.group is not None:
                taken[offer.group] = offer.campaign
            sent_now.append(Sent(offer.campaign, offer.member, offer.channel, send_at, not offer.transactional))
        yield offer, verdict


def _member_rules(offer: Offer, send_at: dt.datetime, past: Sequence[Sent], sent_now: Sequence[Sent],
                  taken: Mapping[str, str], delivery: CheckedDelivery, tz: ZoneInfo) -> Verdict:
    if offer.missing_consent:
        return Verdict(False, send_at, "consent", "no consent: " + ", ".join(offer.missing_consent) + " is not true")
    if offer.cooldown is not None:
        # Distance both ways: an earlier action held by quiet hours may go out after this one.
        blocking = [e.send_at for e in past if e.campaign == offer.campaign and abs(e.send_at - send_at) < offer.cooldown]
        if blocking:
            until = max(blocking) + offer.cooldown
            return Verdict(False, send_at, "cooldown", f"cooldown until {_local(until, tz)} "
                                                       f"(last sent {_local(max(blocking), tz)})")
    if offer.group is not None and offer.group in taken:
        return Verdict(False, send_at, "group", f"group {offer.group} taken by {taken[offer.group]}")
    if not offer.transactional:
        for cap in delivery.caps_for(offer.channel):
            # Counting both ways keeps every window of length `per` at or below `max`, whichever
            # order the actions were decided in.
            near = sum(1 for e in (*past, *sent_now)
                       if e.capped and cap.applies_to(e.channel) and abs(e.send_at - send_at) < cap.per)
            if near >= cap.max:
                return Verdict(False, send_at, "cap", f"cap reached: {cap}")
    return Verdict(True, send_at)


def apply_budgets(accepted: list[Offer], verdicts: dict[tuple[str, str], Verdict], budget: int | None) -> None:
    used: dict[str, int] = defaultdict(int)
    total = 0
    for offer in sorted(accepted, key=_priority_order):
        key = (offer.campaign, offer.member)
        send_at = verdicts[key].send_at
        if offer.budget is not None and used[offer.campaign] >= offer.budget:
            verdicts[key] = Verdict(False, send_at, "campaign_budget",
                                    f"campaign budget exhausted ({offer.budget} per run)")
            continue
        if budget is not None and total >= budget:
            verdicts[key] = Verdict(False, send_at, "budget", f"budget exhausted ({budget} actions per run)")
            continue
        used[offer.campaign] += 1
        total += 1


def _local(instant: dt.datetime, tz: ZoneInfo) -> str:
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M")


# -- template checks -------------------------------------------------------------------------------

# Numbers above this in a template are refused: they only serve to blow up memory
# (`'x'|center(10**9)`); a message never needs them.
MAX_TEMPLATE_NUMBER = 100_000


def template_problems(text: str, channel: str, policy: ChannelPolicy, locate: Locator) -> list[Diagnostic]:
    """What `validate` says about a template beyond its names: reaching into Python
    internals (an error, MR424), huge numbers (an error, MR424), and a message that can
    exceed its channel's `max_length` (a warning, MR423).

    The length estimate is the literal text plus `placeholder_length` characters for
    each `{{ … }}`; text in every `{% if %}` branch counts, so it is an upper bound for
    templates without loops. Characters are counted, not bytes: 会员 is 2.
    """
    try:
        tree = environment().parse(text)
    except TemplateSyntaxError:
        return []  # check_template reports it
    problems: list[Diagnostic] = []
    for node in tree.find_all((nodes.Getattr, nodes.Const)):
        word = None
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            word = node.attr
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and node.value.startswith("__"):
            # `''|attr('__class__')`: the name arrives as a string; a single `_` is ordinary text.
            word = node.value
        if word is not None:
            at = max(text.find(word), 0)
            problems.append(Diagnostic(
                "MR424", f"the template reaches for '{word}', a Python internal", locate(at, at + len(word)),
                hint="templates may only read values: member.<field>, metrics, tier, params, as_of"))
        elif isinstance(node, nodes.Const) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool) and abs(node.value) > MAX_TEMPLATE_NUMBER:
            word = str(node.value)
            at = max(text.find(word), 0)
            problems.append(Diagnostic("MR424", f"the template uses the number {node.value}, above "
                                                f"{MAX_TEMPLATE_NUMBER}", locate(at, at + len(word)),
                                       hint="put large numbers in params or metrics"))
    if policy.max_length is not None and not problems:
        literal = sum(len(n.data) for n in tree.find_all(nodes.TemplateData))
        placeholders = sum(1 for output in tree.find_all(nodes.Output)
                           for child in output.nodes if not isinstance(child, nodes.TemplateData))
        estimate = literal + placeholders * policy.placeholder_length
        if estimate > policy.max_length:
            problems.append(Diagnostic(
                "MR423", f"this {channel} message can be {estimate} characters long, over the "
                         f"{channel} limit of {policy.max_length}", locate(0, len(text)), severity="warning",
                hint=f"{literal} characters of text + {placeholders} value(s) × {policy.placeholder_length}; "
                     f"shorten the text, or set delivery.channels.{channel}.placeholder_length"))
    return problems
