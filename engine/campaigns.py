"""Campaigns: who matches each campaign this run, which actions go out, and their messages.

A campaign matches a member when its window (if any) holds at `as_of`, its
transition (`on:`) happened against the member's previous state, and its
condition (`when:`) is true; a campaign may have both `on:` and `when:`. Every
match is an Offer that delivery.py judges (consent, cooldown, group, caps,
budget). The offers that survive become actions, rendered in Jinja2's sandbox.

`decide_actions` is the whole decision for one evaluation; `campaign_run` wraps
it in the state file's transaction for `evaluate --state`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError, meta

from . import ast
from .check import CheckedCampaign, CheckedRuleSet, Trigger
from .actions_arrow import ActionBlock
from .delivery import RULE_WORDS, RULES, Offer, Sent, Verdict, decide_delivery
from .errors import Diagnostic, DiagnosticError
from .eval import CompiledRuleSet, Evaluation, MemberState
from .eval_codegen import is_invariant
from .results import _duration_seconds, atomic_path, decimal_text
from .state import LedgerEntry, Previous, PreviousState, StateStore, idempotency_key
from .templates import environment, render

# How many template failures are reported before giving up on the run.
MAX_TEMPLATE_PROBLEMS = 20


@dataclass(frozen=True)
class Action:
    """One action of this run: a line of actions.jsonl."""

    campaign: str
    member: object  # the member key, as in the result rows
    channel: str
    send_at: dt.datetime
    message: str | None
    coupon: str | None
    points: int | None
    values: Mapping[str, object]  # what triggered it: the values its condition and transition read
    key: str  # idempotency key: campaign, member and as_of
    priority: int = 0

    def to_json(self, tz: ZoneInfo) -> str:
        """The actions.jsonl line: keys in a fixed order, values encoded as in result rows."""
        return dumps({"campaign": self.campaign, "member": self.member, "channel": self.channel,
                      "send_at": self.send_at, "message": self.message, "coupon": self.coupon,
                      "points": self.points, "values": dict(self.values), "key": self.key}, tz)


@dataclass(frozen=True)
class Reason:
    """Why a member did or did not get a campaign this run (for `explain`)."""

    sent: bool
    rule: str  # sent | window | no_previous | transition | condition | points | consent | cooldown | group | cap
    #            | campaign_budget | budget
    text: str


@dataclass
class CampaignSummary:
    """A campaign's audience twice: matching its condition, and actually sent, with what each rule removed."""

    name: str
    channel: str
    matched: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {rule: 0 for rule in RULES})
    sent: int = 0
    held: int = 0  # sent later than as_of because of quiet hours
    too_long: int = 0  # messages over the channel's max_length
    window_closed: bool = False


@dataclass
class Decision:
    """Everything one run decided about campaigns."""

    as_of: dt.datetime
    previous: Previous | None
    actions: list[Action]
    summaries: dict[str, CampaignSummary]
    notes: list[str]
    verdicts: dict[tuple[str, str], Verdict] = field(repr=False)
    matched: dict[tuple[str, str], dict] = field(repr=False)
    _why_not: Callable[[str, object], Reason] = field(repr=False)
    # The DuckDB engine's actions, as Arrow columns per campaign (actions_arrow.py), instead of `actions`.
    blocks: list[ActionBlock] = field(default_factory=list, repr=False)

    def reason(self, campaign: str, member: object) -> Reason:
        """Why `member` did or did not get `campaign`: condition false, no consent, cooldown until
        a date, cap reached, budget exhausted, group taken by another campaign …"""
        verdict = self.verdicts.get((campaign, str(member)))
        if verdict is not None:
            return Reason(verdict.sent, "sent" if verdict.sent else verdict.rule or "", verdict.reason)
        return self._why_not(campaign, member)

    def jsonl(self, tz: ZoneInfo) -> str:
        if self.blocks:
            return "".join(line for block in self.blocks for line in block.lines.to_pylist())
        return "".join(action.to_json(tz) + "\n" for action in self.actions)

    def write_jsonl(self, out, tz: ZoneInfo) -> None:
        """actions.jsonl's bytes, to a file opened in binary mode."""
        if self.blocks:
            for block in self.blocks:
                block.write(out)
        else:
            out.write(self.jsonl(tz).encode("utf-8"))

    def sent_members(self) -> dict[str, list]:
        """campaign → the members sent an action, in member-key order (campaigns without actions left out)."""
        if self.blocks:
            return {block.campaign: block.members.to_pylist() for block in self.blocks if len(block)}
        sent: dict[str, list] = {}
        for action in self.actions:
            sent.setdefault(action.campaign, []).append(action.member)
        return sent

    def ledger_entries(self, rules: CheckedRuleSet) -> list[LedgerEntry]:
        """What the ledger records of this run's actions."""
        if self.blocks:
            return [entry for block in self.blocks for entry in block.ledger_entries(self.as_of)]
        return [LedgerEntry(a.key, a.campaign, str(a.member), a.channel, self.as_of, a.send_at,
                            not rules.campaigns[a.campaign].transactional) for a in self.actions]


# -- values ------------------------------------------------------------------------------------------

def dumps(value: object, tz: ZoneInfo) -> str:
    """JSON text of a value, encoded as result rows are (docs/SEMANTICS.md): exact decimals in plain
    notation, timestamps with the zone's offset, dates as YYYY-MM-DD, durations as seconds.

    >>> dumps({"a": Decimal("120.50"), "b": [dt.date(2026, 1, 2)], "c": None}, ZoneInfo("UTC"))
    '{"a":120.5,"b":["2026-01-02"],"c":null}'
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _json_string(value)  # what json.dumps(value, ensure_ascii=False) returns
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return decimal_text(value) if value.is_finite() else "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, dt.datetime):
        return json.dumps(value.astimezone(tz).isoformat())
    if isinstance(value, dt.date):
        return json.dumps(value.isoformat())
    if isinstance(value, dt.timedelta):
        return str(_duration_seconds(value))  # floored whole seconds, as result rows
    if isinstance(value, Mapping):
        return "{" + ",".join(_json_string(str(k)) + ":" + dumps(v, tz)
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return "[" + ",".join(dumps(v, tz) for v in items) + "]"
    return _json_string(str(value))


_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


# -- one member against one campaign ---------------------------------------------------------------

@dataclass
class _Context:
    """What every campaign check needs for one run."""

    rules: CheckedRuleSet
    compiled: CompiledRuleSet
    evaluation: Evaluation
    previous: Previous | None
    tz: ZoneInfo
    whens: dict[str, Callable[[MemberState], object]]
    points: dict[str, Callable[[MemberState], object]]
    order_count: Callable[[MemberState], object] | None
    tier_by: Callable[[MemberState], object] | None
    # campaign → what its condition reads, as (name, value of a state): walked once per run, not per member
    reads: dict[str, list[tuple[str, Callable[[MemberState], object]]]] = field(default_factory=dict)

    def previous_of(self, member: object) -> PreviousState | None:
        if self.previous is None:
            return None
        found = self.previous.members.get(str(member))
        if found is None and self.previous.missing_are_new:
            return PreviousState()  # a member new since the last run: no tier, class or segment before
        return found

    def previous_tier(self, state: MemberState, key: object) -> str | None:
        """The tier held before this run: from the previous run's results when the member is in
        them, else from the member field `tiers.current` (the tier the snapshot says they hold)."""
        tiers = self.rules.tiers
        if tiers is None:
            return None
        previous = self.previous_of(key)
        if previous is not None and previous.tier in tiers.names():
            return previous.tier
        held = state.member.get(tiers.current) if tiers.current else None
        return held if held in tiers.names() else None

    def orders(self, state: MemberState) -> int | None:
        return self.order_count(state) if self.order_count is not None else None  # type: ignore[return-value]

    def tier_standing(self, state: MemberState) -> tuple[str | None, object]:
        """The tier the member's `by` value earns, and how much more they need to keep their tier."""
        tiers = self.rules.tiers
        if tiers is None or self.tier_by is None:
            return None, None
        by = self.tier_by(state)
        levels = tiers.levels
        earned = levels[0]
        for level in levels:
            if by is not None and by >= level.min:
                earned = level
        held = next((level for level in levels if level.name == state.values.get("tier")), None)
        if held is None or by is None:
            return earned.name, None
        return earned.name, max(held.min - by, 0)


def _transition(ctx: _Context, trigger: Trigger, state: MemberState, key: object) -> tuple[bool, dict, str]:
    """Whether the trigger fired for this member, the values it saw, and (if not) why, in words."""
    values = state.values
    if trigger.kind == "tier_at_risk":
        earned, keep_gap = ctx.tier_standing(state)
        tier = values.get("tier")
        names = ctx.rules.tiers.names() if ctx.rules.tiers else ()
        at_risk = tier in names and earned in names and names.index(tier) > names.index(earned)
        seen = {"tier": tier, "earned_tier": earned, "keep_gap": keep_gap}
        return at_risk, seen, "" if at_risk else f"keeps {tier} at the next review (earns {earned})"
    if trigger.kind in ("tier_up", "tier_down"):
        names = ctx.rules.tiers.names() if ctx.rules.tiers else ()
        before, now = ctx.previous_tier(state, key), values.get("tier")
        seen = {"tier": now, "previous_tier": before}
        if before is None or now not in names:
            return False, seen, "no previous tier (no previous state, and no tier in tiers.current)"
        moved = names.index(now) - names.index(before)
        fired = moved > 0 if trigger.kind == "tier_up" else moved < 0
        return fired, seen, "" if fired else f"tier {before} → {now}"
    previous = ctx.previous_of(key)
    if previous is None:
        if ctx.previous is None:
            return False, {}, "no previous state: transitions are computed from the second run on"
        return False, {}, "not in the previous state"
    if trigger.kind in ("entered", "left"):
        segment = trigger.subject or ""
        before, now = segment in previous.segments, bool(values.get(segment))
        fired = (now and not before) if trigger.kind == "entered" else (before and not now)
        seen = {"segment": segment, "was_in": before, "is_in": now}
        return fired, seen, f"{'in' if now else 'not in'} {segment} now, {'in' if before else 'not in'} before"
    if trigger.kind == "class_change":
        name = trigger.subject or ""
        before, now = previous.classes.get(name), values.get(name)
        fired = before != now and (trigger.from_value is None or before == trigger.from_value) \
            and (trigger.to_value is None or now == trigger.to_value)
        seen = {name: now, f"previous_{name}": before}
        return fired, seen, "" if fired else f"{name} {before} → {now}"
    if trigger.kind == "first_order":
        now_orders = ctx.orders(state)
        seen = {"orders": now_orders, "previous_orders": previous.orders}
        if previous.orders is None:
            return False, seen, "the previous state has no order count"
        fired = previous.orders == 0 and (now_orders or 0) > 0
        return fired, seen, "" if fired else f"orders {previous.orders} → {now_orders}"
    return False, {}, f"unknown trigger {trigger.kind}"


def _when_values(ctx: _Context, campaign: CheckedCampaign, state: MemberState) -> dict:
    """The values a campaign's condition read, by name (aggregates by their text)."""
    if campaign.when is None:
        return {}
    reads = ctx.reads.get(campaign.name)
    if reads is None:
        reads = ctx.reads[campaign.name] = _condition_reads(ctx, campaign.when)
    return {name: read(state) for name, read in reads}


def _condition_reads(ctx: _Context, when: ast.Expr) -> list[tuple[str, Callable[[MemberState], object]]]:
    """(name, how to read its value) for each value a condition reads, in the order it reads them;
    a name read twice keeps its first place (as a dict filled in that order would)."""
    reads: list[tuple[str, Callable[[MemberState], object]]] = []
    current = ctx.rules.tiers.current if ctx.rules.tiers else None
    for node in ast.walk(when):
        if isinstance(node, ast.Name) and node.ref not in ("param", "as_of", "event", None):
            name = node.name
            if node.ref == "member":
                reads.append((name, lambda state, name=name: state.member.get(name)))
            elif node.ref == "current_tier":
                reads.append((name, lambda state: state.member.get(current) if current else None))
            else:
                reads.append((name, lambda state, name=name: state.values.get(name)))
        elif isinstance(node, (ast.EventAggregate, ast.Ranking, ast.Call)) and not is_invariant(node):
            reads.append((ast.to_source(node), ctx.compiled.expr_function(node)))
    return reads


def _canonical(value: object) -> object:
    """Decimals as the result files write them (`20.5`, not `20.50`): a template prints the
    same text whichever engine computed the value (the SQL engine's scale is not the data's)."""
    if isinstance(value, Decimal):
        return Decimal(decimal_text(value))
    if isinstance(value, dict):
        return {name: _canonical(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _template_context(ctx: _Context, campaign: CheckedCampaign, state: MemberState, key: object) -> dict:
    """What a template sees: params, then metrics, classes and segments by name, then the fixed
    names below (a later kind wins a clash). Only the names the template reads are computed."""
    rules = ctx.rules
    values = state.values

    def previous() -> dict:
        before = ctx.previous_of(key)
        # Always a map, so `{{ previous.tier }}` prints nothing (rather than failing) when unknown.
        return {"tier": ctx.previous_tier(state, key),
                "classes": {name: (before.classes.get(name) if before else None) for name in rules.classes},
                "segments": sorted(before.segments) if before else []}

    fixed: dict[str, Callable[[], object]] = {
        "member": lambda: dict(state.member),
        "tier": lambda: values.get("tier"), "next_tier": lambda: values.get("next_tier"),
        "tier_gap": lambda: values.get("tier_gap"), "gap": lambda: values.get("tier_gap"),
        "earned_tier": lambda: ctx.tier_standing(state)[0], "keep_gap": lambda: ctx.tier_standing(state)[1],
        "current_tier": lambda: (state.member.get(rules.tiers.current)
                                 if rules.tiers and rules.tiers.current else None),
        "classes": lambda: {name: values.get(name) for name in rules.classes},
        "segments": lambda: [name for name in rules.segments if values.get(name)],
        "previous": previous,
        "as_of": lambda: state.as_of, "campaign": lambda: campaign.name,
    }
    names = _template_names(campaign.template) if campaign.template is not None else None
    if names is None:
        names = frozenset(state.params) | set(rules.metrics) | set(rules.classes) | set(rules.segments) | set(fixed)
    context: dict[str, object] = {}
    for name in names:
        if name in fixed:
            value = fixed[name]()
        elif name in rules.segments:
            value = bool(values.get(name))
        elif name in rules.classes or name in rules.metrics:
            value = values.get(name)
        elif name in state.params:
            value = state.params[name]
        else:
            continue  # not a name templates see: StrictUndefined reports it
        context[name] = _canonical(value)
    return context


@functools.lru_cache(maxsize=1024)
def _template_names(text: str) -> frozenset[str] | None:
    """The top-level names a template reads (None: all of them, when it does not parse here).
    A template sees nothing else, so leaving the rest out of its context (and not canonicalising
    every metric for every message) renders the same text."""
    try:
        return frozenset(meta.find_undeclared_variables(environment().parse(text)))
    except TemplateSyntaxError:
        return None


# -- the decision ------------------------------------------------------------------------------------

def _as_previous(previous) -> Previous | None:
    if previous is None or isinstance(previous, Previous):
        return previous
    members = {}
    for key, value in previous.items():
        try:
            members[str(key)] = value if isinstance(value, PreviousState) else PreviousState.from_mapping(value)
        except ValueError as problem:
            raise DiagnosticError([Diagnostic("MR150", f"previous.{key}: {problem}")]) from None
    return Previous(None, members, missing_are_new=False)


def decide_actions(rules: CheckedRuleSet, compiled: CompiledRuleSet, evaluation: Evaluation,
                   previous: Previous | Mapping[str, PreviousState | Mapping] | None = None,
                   history: Iterable[Sent | LedgerEntry] = ()) -> Decision:
    """Decide this run's actions: match every campaign, apply the delivery rules, render messages.

    Args:
        rules: the checked rule set.
        compiled: `compile_rule_set(rules)`, which produced `evaluation`.
        evaluation: this run's evaluation (its `as_of` is the run's).
        previous: the members' state after the previous run (transitions compare against it). A
            `Previous` from the state file, where a member missing from it is new since that
            run; or a plain mapping as in a test file (`{m1: {tier: silver, segments: [vip]}}`),
            where a member missing from it has no previous state. None: a first run; only
            tier_up/tier_down fire, against the held tier in `tiers.current`.
        history: ledger entries of earlier runs, for cooldowns and caps.

    Returns:
        A Decision: the actions (sorted by campaign, then member key), a summary per campaign,
        and `reason(campaign, member)` for any pair.

    Raises:
        DiagnosticError: a template failed to render (MR425), e.g. a sandbox violation.
    """
    tz = ZoneInfo(rules.timezone)
    as_of = evaluation.as_of
    previous = _as_previous(previous)
    ctx = _Context(
        rules, compiled, evaluation, previous, tz,
        whens={c.name: compiled.expr_function(c.when) for c in rules.campaigns.values() if c.when is not None},
        points={c.name: compiled.expr_function(c.points) for c in rules.campaigns.values() if c.points is not None},
        order_count=compiled.expr_function(rules.order_count) if rules.order_count is not None else None,
        tier_by=compiled.expr_function(rules.tiers.by) if rules.tiers is not None else None)
    states = evaluation.states
    key_field = rules.member.key
    summaries = {name: CampaignSummary(name, c.channel) for name, c in rules.campaigns.items()}
    notes = first_run_notes(rules, previous)
    offers: list[Offer] = []
    matched: dict[tuple[str, str], dict] = {}
    position: dict[str, int] = {}
    for name, campaign in rules.campaigns.items():
        if campaign.window is not None and not campaign.window.contains(as_of, tz):
            summaries[name].window_closed = True
            continue
        # The DuckDB engine's candidates know which members SQL already found possible for each
        # campaign: _match still decides, on those only (the same offers, in the same order).
        positions = evaluation.candidates(name) if hasattr(evaluation, "candidates") else range(len(states))
        for i in positions:
            state = states[i]
            key = state.member[key_field]
            seen = _match(ctx, campaign, state, key)
            if seen is None:
                continue
            member = str(key)
            position[member] = i
            matched[(name, member)] = seen
            summaries[name].matched += 1
            missing = tuple(f for f in campaign.requires if state.member.get(f) is not True)
            offers.append(Offer(name, member, campaign.channel, campaign.priority, campaign.group, campaign.cooldown,
                                campaign.transactional, missing, campaign.budget, i))
    verdicts = decide_delivery(offers, _sent(history), rules.delivery, as_of, tz)
    actions, problems = [], []
    for (name, member), verdict in verdicts.items():
        summary = summaries[name]
        if not verdict.sent:
            summary.removed[verdict.rule or ""] = summary.removed.get(verdict.rule or "", 0) + 1
            continue
        campaign = rules.campaigns[name]
        state = states[position[member]]
        key = state.member[key_field]
        message = None
        if campaign.template is not None:
            try:
                message = render(campaign.template, _template_context(ctx, campaign, state, key))
            except (TemplateError, ArithmeticError, TypeError, ValueError) as problem:
                problems.append(Diagnostic("MR425", f"campaign {name}: the template failed for member {key}: "
                                                    f"{type(problem).__name__}: {problem}"))
                if len(problems) >= MAX_TEMPLATE_PROBLEMS:
                    break
                continue
        points = matched[(name, member)].get("points") if campaign.points is not None else None
        summary.sent += 1
        summary.held += verdict.send_at > as_of
        limit = rules.delivery.policy(campaign.channel).max_length
        summary.too_long += bool(limit is not None and message is not None and len(message) > limit)
        actions.append(Action(name, key, campaign.channel, verdict.send_at, message, campaign.coupon, points,  # type: ignore[arg-type]
                              matched[(name, member)], idempotency_key(name, member, as_of), campaign.priority))
    if problems:
        raise DiagnosticError(problems)
    order = {name: i for i, name in enumerate(sorted(rules.campaigns))}
    actions.sort(key=lambda a: (order[a.campaign], position[str(a.member)]))

    def why_not(campaign_name: str, member: object) -> Reason:
        return _why_not(ctx, summaries, campaign_name, member)

    return Decision(as_of, previous, actions, summaries, notes, verdicts, matched, why_not)


def first_run_notes(rules: CheckedRuleSet, previous: Previous | None) -> list[str]:
    """What a run without previous state leaves out, for the summary."""
    notes: list[str] = []
    kinds = {c.trigger.kind for c in rules.campaigns.values() if c.trigger is not None}
    if previous is None and kinds - {"tier_at_risk", "tier_up", "tier_down"}:
        notes.append("no previous state: segment, class and first_order transitions (on: …) are not computed "
                     "on a first run")
    if previous is None and kinds & {"tier_up", "tier_down"}:
        notes.append("no previous state: tier_up and tier_down compare with tiers.current (the tier the snapshot says "
                     "members hold)"
                     if rules.tiers is not None and rules.tiers.current else
                     "no previous state: tier_up and tier_down are not computed on a first run")
    return notes


def _match(ctx: _Context, campaign: CheckedCampaign, state: MemberState, key: object) -> dict | None:
    """The values that triggered the campaign for this member, or None when it does not match."""
    seen: dict[str, object] = {}
    if campaign.trigger is not None:
        fired, trigger_values, _ = _transition(ctx, campaign.trigger, state, key)
        if not fired:
            return None
        seen.update(trigger_values)
    if campaign.when is not None:
        if ctx.whens[campaign.name](state) is not True:
            return None
        seen.update(_when_values(ctx, campaign, state))
    if campaign.points is not None:
        points = ctx.points[campaign.name](state)
        if points is None or points <= 0:  # type: ignore[operator]
            return None
        seen["points"] = points
    return seen


def _why_not(ctx: _Context, summaries: dict[str, CampaignSummary], name: str, member: object) -> Reason:
    campaign = ctx.rules.campaigns[name]
    if summaries[name].window_closed:
        return Reason(False, "window", f"outside the campaign window ({campaign.window})")
    try:
        state = ctx.evaluation.state(member)
    except KeyError:
        return Reason(False, "condition", f"no member {member}")
    if campaign.trigger is not None:
        fired, _, why = _transition(ctx, campaign.trigger, state, member)
        if not fired:
            rule = "no_previous" if why.startswith("no previous") else "transition"
            return Reason(False, rule, f"{_trigger_text(campaign.trigger)} did not happen: {why}")
    if campaign.when is not None and ctx.whens[name](state) is not True:
        value = ctx.whens[name](state)
        return Reason(False, "condition", f"condition {'unknown (null)' if value is None else 'false'}: "
                                          f"{ast.to_source(campaign.when)}")
    if campaign.points is not None:
        return Reason(False, "points", f"no points to grant ({ctx.points[name](state)})")
    return Reason(False, "condition", "not matched")


def _trigger_text(trigger: Trigger) -> str:
    if trigger.kind == "class_change":
        parts = [trigger.subject or ""]
        if trigger.from_value:
            parts.append(f"from {trigger.from_value}")
        if trigger.to_value:
            parts.append(f"to {trigger.to_value}")
        return "class " + " ".join(parts)
    return f"{trigger.kind} {trigger.subject}" if trigger.subject else trigger.kind


def _sent(history: Iterable[Sent | LedgerEntry]) -> Iterator[Sent]:
    for entry in history:
        if isinstance(entry, LedgerEntry):
            yield Sent(entry.campaign, entry.member, entry.channel, entry.send_at, entry.capped)
        else:
            yield entry


def member_states(rules: CheckedRuleSet, compiled: CompiledRuleSet,
                  evaluation: Evaluation) -> Iterator[tuple[str, PreviousState]]:
    """What the state file keeps of each member after this run."""
    count = compiled.expr_function(rules.order_count) if rules.order_count is not None else None
    key_field = rules.member.key
    for state in evaluation.states:
        values = state.values
        yield str(state.member[key_field]), PreviousState(
            values.get("tier") if rules.tiers is not None else None,
            {name: values.get(name) for name in rules.classes},
            frozenset(name for name in rules.segments if values.get(name)),
            count(state) if count is not None else None)  # type: ignore[arg-type]


# -- a run with the state file -------------------------------------------------------------------------

def lookback(rules: CheckedRuleSet) -> dt.timedelta:
    """How far back (and ahead, for actions held by quiet hours) the ledger matters for this rule set."""
    cooldowns = [c.cooldown for c in rules.campaigns.values() if c.cooldown is not None]
    # Quiet hours hold an action for less than a day, so a day on top covers held actions.
    return max([rules.delivery.lookback, *cooldowns], default=dt.timedelta(0)) + dt.timedelta(days=1)


@contextlib.contextmanager
def campaign_run(rules: CheckedRuleSet, compiled: CompiledRuleSet, evaluation: Evaluation,
                 state: Path | None, dry_run: bool = False) -> Iterator[Decision]:
    """Decide this run's actions inside the state file's transaction.

    The caller writes its outputs (results, actions.jsonl) to temporary files inside the
    `with` block; leaving the block without an error records the run's results and actions
    and commits, and only then should the caller rename the outputs into place. An error
    inside the block, or `dry_run`, leaves the state file as it was (a dry run only reads
    it, without taking the write lock, and never creates it).

    >>> with campaign_run(rules, compiled, evaluation, Path("state.db")) as decision:  # doctest: +SKIP
    ...     write_temporary_outputs(decision)
    >>> rename_outputs_into_place()  # doctest: +SKIP
    """
    with state_run(rules, evaluation.as_of, state,
                   lambda previous, history: decide_actions(rules, compiled, evaluation, previous, history),
                   lambda: member_states(rules, compiled, evaluation), lambda: len(evaluation.states),
                   dry_run=dry_run) as decision:
        yield decision


@contextlib.contextmanager
def state_run(rules: CheckedRuleSet, as_of: dt.datetime, state: Path | None,
              decide: Callable[[Previous | None, list[LedgerEntry]], Decision],
              results: Callable[[], Iterable[tuple[str, PreviousState]]], members: Callable[[], int],
              dry_run: bool = False) -> Iterator[Decision]:
    """`campaign_run` for any engine: `decide(previous, history)` decides the actions; `results()`
    and `members()`, called after the block, give what the state file keeps of this run."""
    if state is None or (dry_run and not Path(state).exists()):
        yield decide(None, [])
        return
    store = StateStore.open(state)
    try:
        store.begin(read_only=dry_run)
        previous = store.previous(as_of)
        decision = decide(previous, store.history(as_of, lookback(rules)))
        if previous is None and store.runs():
            decision.notes.append(f"the state file has no kept results before {as_of.isoformat()}: "
                                  "transitions are not computed for this as_of")
        yield decision
        if dry_run:
            return
        store.record_results(as_of, results())
        entries = decision.ledger_entries(rules)
        new = store.record_actions(entries)
        if new < len(entries):
            decision.notes.append(f"{len(entries) - new} action(s) were already in the ledger from an earlier "
                                  "run of this as_of (same idempotency keys): not recorded twice")
        store.record_run(as_of, members(), len(entries))
        store.commit()
    finally:
        store.close()


def read_state(state: Path, rules: CheckedRuleSet, as_of: dt.datetime) -> tuple[Previous | None, list[LedgerEntry]]:
    """The previous results and the ledger history a run at `as_of` would see, read only
    (for `explain --state` and `test`): pass them to `decide_actions`."""
    store = StateStore.open(state)
    try:
        return store.previous(as_of), store.history(as_of, lookback(rules))
    finally:
        store.close()


def campaign_reasons(decision: Decision, member: object) -> dict[str, Reason]:
    """Why `member` did or did not get each campaign of this run, in declaration order."""
    return {name: decision.reason(name, member) for name in decision.summaries}


def actions_path(results: Path) -> Path:
    """Where actions go: `actions.jsonl` beside the results file."""
    return Path(results).parent / "actions.jsonl"


def write_outputs(rules: CheckedRuleSet, compiled: CompiledRuleSet, evaluation: Evaluation, *, results: Path,
                  write_results: Callable[[Path], int], state: Path | None = None,
                  dry_run: bool = False) -> tuple[Decision, int, Path | None]:
    """Decide the run's actions and write results and actions.jsonl, in step with the state file.

    Both files are written to temporary names first; the state file commits; only then are
    they renamed into place. A run killed before the commit leaves neither outputs nor state
    behind, and its rerun decides (and records) the same actions once. `dry_run` decides
    and writes nothing.

    Args:
        results: the results file.
        write_results: writes the result rows to the path it is given; returns the row count.
        state: the state file (`--state`), created when missing; None: no transitions, and
            cooldowns and caps see only this run.

    Returns:
        The decision, the number of result rows written, and the actions file (None when the
        rule set has no campaigns, or on a dry run).
    """
    if dry_run:
        with campaign_run(rules, compiled, evaluation, state, dry_run=True) as decision:
            pass
        return decision, 0, None
    actions_file = actions_path(results) if rules.campaigns else None
    tz = ZoneInfo(rules.timezone)
    with contextlib.ExitStack() as outputs:
        # Entered first, left last: the renames happen after campaign_run has committed.
        results_temp = outputs.enter_context(atomic_path(results))
        actions_temp = outputs.enter_context(atomic_path(actions_file)) if actions_file else None
        decision = outputs.enter_context(campaign_run(rules, compiled, evaluation, state))
        written = write_results(results_temp)
        if actions_temp is not None:
            with open(actions_temp, "wb") as out:
                decision.write_jsonl(out, tz)
    return decision, written, actions_file


# -- the summary ---------------------------------------------------------------------------------------

def summary_table(decision: Decision) -> list[str]:
    """Lines of the campaign summary: each campaign's audience matched and sent, and what each rule removed."""
    rules = [rule for rule in RULES if any(s.removed.get(rule) for s in decision.summaries.values())]
    head = ["campaign", "channel", "matched", *(RULE_WORDS[r] for r in rules), "sent"]
    rows = []
    for summary in decision.summaries.values():
        sent = str(summary.sent)
        if summary.held:
            sent += f" ({summary.held} held)"
        if summary.too_long:
            sent += f" ({summary.too_long} too long)"
        matched = "window closed" if summary.window_closed else str(summary.matched)
        rows.append([summary.name, summary.channel, matched,
                     *(f"-{summary.removed[r]}" if summary.removed[r] else "0" for r in rules), sent])
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [head, *rows]]
    total = sum(s.sent for s in decision.summaries.values())
    previous = decision.previous.as_of if decision.previous is not None else None
    lines.append(f"{total} action(s)" + (f"; previous run {previous.astimezone(decision.as_of.tzinfo).isoformat()}"
                                         if previous is not None else ""))
    return lines + [f"note: {note}" for note in decision.notes]
