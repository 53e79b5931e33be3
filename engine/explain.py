"""`explain`: why one member got each result, with the values every rule saw.

Built on top of an evaluation (eval.py), never inside it: the whole snapshot is
evaluated once, so population values (averages, quantile cut-offs, ranks) are
those of this run, and then every sub-expression the explanation shows is computed
for the one member with `CompiledRuleSet.expr_function`.

An `Explanation` is data; `render_text` (operators) and `render_json` (tools) print it.
Decisions (docs/SEMANTICS.md has the evaluation rules, this is only the reading of them):

- A condition is shown as its conjuncts (top-level `and`), or its disjuncts when it
  is a single `or`, each with the values it compared.
- The nearest miss of a class list is the case before the chosen one with the fewest
  conjuncts that are not true; among equals the one nearest above the chosen case
  (lists are written best first, so that is the next step up).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from zoneinfo import ZoneInfo

from . import ast
from . import types as t
from .check import CheckedRuleSet, CheckResult, check_rule_set
from .errors import display_width
from .eval import CompiledRuleSet, Evaluation, MemberState, compile_rule_set
from .eval_codegen import is_invariant, population_key
from .eval_runtime import Ranks
from .explain_words import (FLIPPED, Change, NEGATED, count_words, duration_words, needed_change, rows_of, show,
                            show_duration, show_number, singular, truth)
from .results import json_value
from .snapshot import find_table_files, parse_value, read_snapshot

# Names whose values an explanation lists next to a rule (as_of is in the heading).
_SHOWN_REFS = frozenset(("member", "param", "metric", "tier", "next_tier", "tier_gap", "current_tier",
                         "class", "segment"))
# How deep a failing bool metric or segment is opened up to find a number to move.
_MAX_DEPTH = 3


# -- the explanation, as data ----------------------------------------------------------------------

@dataclass
class Part:
    """One conjunct (or disjunct) of a condition and the values it saw."""

    source: str
    outcome: bool | None
    values: str  # "9 >= 8"; "" when the source already says everything
    null: tuple[str, ...] = ()  # why the outcome is unknown: the values that were null


@dataclass
class Condition:
    source: str
    outcome: bool | None
    parts: list[Part]
    joiner: str | None  # "and", "or", or None for a single part


@dataclass
class PopulationUse:
    """A population value a metric used: its text, value, and how many members went into it."""

    source: str
    value: object
    members: int
    member_value: object = None  # rankings: this member's rank, bucket or percent rank


@dataclass
class MetricLine:
    name: str
    source: str
    value: object
    because: list[str]
    population: list[PopulationUse] = field(default_factory=list)


@dataclass
class Level:
    name: str
    min: object
    reached: bool
    more: object  # `by` still missing for this level (None when reached or unknown)


@dataclass
class TierExplanation:
    by: str
    by_value: object
    levels: list[Level]
    earned: str
    held: str | None  # the held tier (tiers.current), when it names a level
    held_raw: object  # the field's value as read, even when it names no level
    current_field: str | None
    downgrade: Condition | None
    kept: bool  # held above earned and not downgraded
    tier: str
    next_tier: str | None
    gap: object
    progress: object
    days: object
    forecast: str | None  # "monetary = 280.00 per 30 days"
    nearest: str | None  # "120 more growth value to silver"
    keep: str | None = None  # a kept tier: "800 more growth value to keep gold"


@dataclass
class Case:
    name: str
    condition: Condition | None  # None: the else case, or a case after the chosen one
    status: str  # "chosen", "failed", "not tried"


@dataclass(frozen=True)
class Need:
    """What one failing conjunct needs: `1 more order in 30 days` (an amount), or in other words."""

    text: str
    amount: bool


@dataclass
class Miss:
    target: str
    needs: list[Need]

    def words(self) -> str:
        """`1 more order in 30 days to best`, or `general needs recency_days to have a value …`."""
        text = " and ".join(need.text for need in self.needs)
        if all(need.amount for need in self.needs):
            return f"{text} to {self.target}"
        return f"{self.target} needs {text}"


@dataclass
class ClassExplanation:
    name: str
    value: str | None
    cases: list[Case]
    nearest: Miss | None


@dataclass
class SegmentExplanation:
    name: str
    value: bool
    condition: Condition


@dataclass
class CampaignExplanation:
    name: str
    sent: bool
    rule: str  # what decided it: sent, condition, consent, cooldown, cap, budget … (campaigns.Reason)
    reason: str
    condition: Condition | None = None  # the `when`, broken down, when it is what failed


@dataclass
class Explanation:
    member_key: str
    member: object
    as_of: dt.datetime
    timezone: str
    metrics: list[MetricLine]
    tier: TierExplanation | None
    classes: list[ClassExplanation]
    segments: list[SegmentExplanation]
    campaigns: list[CampaignExplanation] | None  # None: campaigns are not evaluated here
    fields: dict = field(default_factory=dict)


class UnknownMember(ValueError):
    """The member key is not in the snapshot: exit 2, with a did-you-mean."""


# -- building it -----------------------------------------------------------------------------------

class Probe:
    """Values of any sub-expression for one member of an evaluation; each is computed once.

    >>> probe = Probe(compiled, evaluation, evaluation.state("m2"))  # doctest: +SKIP
    >>> explain_need(probe, rules.classes["rfm"].cases[0].when).text  # doctest: +SKIP
    '1 more order in 30 days'
    """

    def __init__(self, compiled: CompiledRuleSet, evaluation: Evaluation, state: MemberState):
        self.compiled = compiled
        self.evaluation = evaluation
        self.state = state
        self._values: dict[int, object] = {}
        self._keep: list[ast.Expr] = []  # id() keys stay valid while the nodes live

    def value(self, node: ast.Expr) -> object:
        if isinstance(node, ast.Literal):
            return node.value
        key = id(node)
        if key not in self._values:
            self._keep.append(node)
            self._values[key] = self.compiled.expr_function(node)(self.state)
        return self._values[key]

    @property
    def rules(self) -> CheckedRuleSet:
        return self.compiled.rules


def _split(expr: ast.Expr, op: str) -> list[ast.Expr]:
    if isinstance(expr, ast.BinaryOp) and expr.op == op:
        return _split(expr.left, op) + _split(expr.right, op)
    return [expr]


def _is_leaf(node: ast.Expr) -> bool:
    """Nodes an explanation does not open: aggregates (their `where` reads event rows)."""
    return isinstance(node, (ast.EventAggregate, ast.PopulationAggregate, ast.Ranking, ast.Literal,
                             ast.ListLiteral, ast.Attribute))


def _null_causes(probe: Probe, node: ast.Expr) -> list[str]:
    """The innermost values that made `node` null: `recency_days`, `last(orders.placed_at)`."""
    if isinstance(node, ast.Literal) or probe.value(node) is not None:
        return []
    causes: list[str] = []
    if not _is_leaf(node) and not isinstance(node, ast.Name):
        for child in ast.children(node):
            for cause in _null_causes(probe, child):
                if cause not in causes:
                    causes.append(cause)
    return causes or [ast.to_source(node)]


def _shown_leaves(node: ast.Expr) -> list[ast.Expr]:
    """Names and aggregates inside an expression whose values help read it, first seen first."""
    found: list[ast.Expr] = []
    seen: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Name):
            if current.ref in _SHOWN_REFS and current.name not in seen:
                seen.add(current.name)
                found.append(current)
            continue
        if isinstance(current, (ast.EventAggregate, ast.PopulationAggregate, ast.Ranking)):
            text = ast.to_source(current)
            if text not in seen:
                seen.add(text)
                found.append(current)
            continue
        stack.extend(reversed(ast.children(current)))
    return found


def _part(probe: Probe, node: ast.Expr) -> Part:
    outcome = probe.value(node)
    source = ast.to_source(node)
    match node:
        case ast.Compare(op=op, left=left, right=right):
            values = f"{show(probe.value(left))} {op} {show(probe.value(right))}"
        case ast.IsNull(operand=operand) | ast.Unary(op="not", operand=operand):
            values = f"{ast.to_source(operand)} = {show(probe.value(operand))}"
        case ast.Name():
            values = ""
        case _:
            values = ", ".join(f"{ast.to_source(leaf)} = {show(probe.value(leaf))}"
                               for leaf in _shown_leaves(node))
    if values == source:
        values = ""
    null = tuple(_null_causes(probe, node)) if outcome is None else ()
    return Part(source, outcome, values, null)


def explain_condition(probe: Probe, expr: ast.Expr) -> Condition:
    """A condition split into its conjuncts (or the disjuncts of a single `or`) with their values."""
    pieces, joiner = _split(expr, "and"), "and"
    if len(pieces) == 1:
        pieces, joiner = _split(expr, "or"), "or"
    if len(pieces) == 1:
        joiner = None
    return Condition(ast.to_source(expr), probe.value(expr), [_part(probe, piece) for piece in pieces], joiner)


# -- metrics ---------------------------------------------------------------------------------------

def _within_text(probe: Probe, node: ast.EventAggregate) -> str:
    if node.within is None:
        return ""
    window = probe.value(node.within)
    return " within " + (show_duration(window) if isinstance(window, dt.timedelta) else show(window))


def _where_text(node: ast.EventAggregate | ast.PopulationAggregate) -> str:
    return "" if node.where is None else " where " + ast.to_source(node.where)


def _row_count(probe: Probe, node: ast.EventAggregate) -> int:
    """How many rows an event aggregate looked at (rows in its window that match its `where`)."""
    counter = ast.EventAggregate("count", node.table, None, node.within, node.where, type=t.INT)
    return probe.value(counter)  # type: ignore[return-value]


def _event_phrase(probe: Probe, node: ast.EventAggregate, whole: bool) -> str:
    value = probe.value(node)
    table = probe.rules.tables[node.table]
    window = _within_text(probe, node) + _where_text(node)
    if node.func == "count":
        what = rows_of(node.table, value) if node.field is None else \
            f"{count_words(value)} {node.table} with {node.field}"  # type: ignore[arg-type]
        return what + window
    if node.func in ("first", "last"):
        if value is None:
            return f"no {node.table}{window}"
        if node.field == table.time:
            return f"{node.func} {singular(node.table)}{window}{':' if window else ''} {show(value)}"
        return f"{node.field} of the {node.func} {singular(node.table)}{window}: {show(value)}"
    phrase = f"{node.func} of {node.field} over {rows_of(node.table, _row_count(probe, node))}{window}"
    return phrase if whole else f"{phrase} = {show(value)}"


def _population_use(probe: Probe, node: ast.PopulationAggregate | ast.Ranking) -> PopulationUse:
    key = population_key(node)
    value = probe.state.population.get(key)
    if isinstance(node, ast.Ranking):
        ranks = value if isinstance(value, Ranks) else None
        members = ranks.count if ranks is not None else 0
        return PopulationUse(key, None, members, probe.value(node))
    members = probe.evaluation.population_counts.get(key, 0)
    return PopulationUse(key, value, members)


def _population_phrase(probe: Probe, node: ast.PopulationAggregate, use: PopulationUse, whole: bool) -> str:
    head = node.func
    if node.func == "quantile":
        head = f"quantile {show(probe.value(node.fraction))}"  # type: ignore[arg-type]
    phrase = (f"{head} of {ast.to_source(node.value)} over {count_words(use.members)} "
              f"member{'' if use.members == 1 else 's'}{_where_text(node)}")
    return phrase if whole else f"{phrase} = {show(use.value)}"


def _ranking_phrase(probe: Probe, node: ast.Ranking, use: PopulationUse) -> str:
    of = ast.to_source(node.value)
    own = show(probe.value(node.value))
    among = f"{count_words(use.members)} member{'' if use.members == 1 else 's'}"
    if use.member_value is None:
        return f"no {node.func} because {of} is null"
    if node.func == "rank":
        return f"rank {show(use.member_value)} of {among} by {of} ({of} = {own})"
    if node.func == "ntile":
        return f"bucket {show(use.member_value)} of {show(probe.value(node.buckets))} by {of} over {among} " \
               f"({of} = {own})"  # type: ignore[arg-type]
    return f"percent rank {show(use.member_value)} by {of} among {among} ({of} = {own})"


def explain_metric(probe: Probe, name: str, expr: ast.Expr) -> MetricLine:
    because: list[str] = []
    population: list[PopulationUse] = []
    for leaf in _shown_leaves(expr):
        whole = leaf is expr
        if isinstance(leaf, ast.EventAggregate):
            because.append(_event_phrase(probe, leaf, whole))
        elif isinstance(leaf, ast.PopulationAggregate):
            use = _population_use(probe, leaf)
            population.append(use)
            because.append(_population_phrase(probe, leaf, use, whole))
        elif isinstance(leaf, ast.Ranking):
            use = _population_use(probe, leaf)
            population.append(use)
            because.append(_ranking_phrase(probe, leaf, use))
        else:
            because.append(f"{ast.to_source(leaf)} = {show(probe.value(leaf))}")
    return MetricLine(name, ast.to_source(expr), probe.state.values.get(name), because, population)


# -- nearest misses --------------------------------------------------------------------------------

def _definition(probe: Probe, node: ast.Name) -> ast.Expr | None:
    if node.ref == "metric":
        metric = probe.rules.metrics.get(node.name)
        return metric.expr if metric is not None else None
    if node.ref == "segment":
        return probe.rules.segments.get(node.name)
    return None


def _subject_words(probe: Probe, subject: ast.Expr, change: Change) -> str:
    """`1 more order in 30 days`, `243.34 more amount in 30 days`, `7 less recency_days`."""
    amount, direction = change.words(), change.direction
    if not change.exact:
        # A float past a strict bound: no smallest step, only "by more than".
        return f"{ast.to_source(subject)} {'up' if direction == 'more' else 'down'} by {amount}"
    if isinstance(subject, ast.Name):
        definition = _definition(probe, subject) if subject.ref == "metric" else None
        if isinstance(definition, ast.EventAggregate) and definition.func in ("count", "sum"):
            window = ""
            if definition.within is not None:
                length = probe.value(definition.within)
                window = " in " + (duration_words(length) if isinstance(length, dt.timedelta) else show(length))
            where = _where_text(definition)
            if definition.func == "count" and definition.field is None:
                one = singular(definition.table)
                noun = one if change.amount == 1 else (definition.table if one != definition.table
                                                       else definition.table + " rows")
                return f"{amount} {'more' if direction == 'more' else 'fewer'} {noun}{window}{where}"
            if definition.func == "sum":
                return f"{amount} {direction} {definition.field}{window}{where}"
        return f"{amount} {direction} {subject.name}"
    return f"{ast.to_source(subject)} {amount} {'higher' if direction == 'more' else 'lower'}"


def _unwrap_default(subject: ast.Expr) -> ast.Expr:
    """`recency_days ?? 9999` → `recency_days`, so a miss names the metric, not the default."""
    while isinstance(subject, ast.BinaryOp) and subject.op == "??":
        subject = subject.left
    return subject


_OP_WORDS = {"==": "", "!=": "other than ", "<": "below ", "<=": "at most ", ">": "above ", ">=": "at least ",
             "in": "one of ", "not in": "none of "}


def _null_need(causes: Iterable[str]) -> Need:
    return Need(" and ".join(f"{cause} to have a value (it is null)" for cause in dict.fromkeys(causes)), False)


def _compare_need(probe: Probe, op: str, left: ast.Expr, right: ast.Expr) -> Need:
    subject, bound = left, right
    if is_invariant(left) and not is_invariant(right):
        subject, bound = right, left
        op = FLIPPED.get(op, op)
    value, limit = probe.value(subject), probe.value(bound)
    if value is None or limit is None:
        return _null_need(_null_causes(probe, subject) + _null_causes(probe, bound))
    inner = _unwrap_default(subject)
    if inner is not subject and probe.value(inner) is None:
        return _null_need([ast.to_source(inner)])
    change = needed_change(op, value, limit)
    if change is None:
        wanted = _OP_WORDS.get(op, op + " ") + show(limit)
        return Need(f"{ast.to_source(subject)} to be {wanted} (it is {show(value)})", False)
    return Need(_subject_words(probe, inner, change), True)


def explain_need(probe: Probe, expr: ast.Expr, want: bool = True, depth: int = 0) -> Need:
    """What would make `expr` come out `want`: the nearest miss of one conjunct, in words."""
    value = probe.value(expr)
    match expr:
        case ast.Unary(op="not", operand=operand):
            return explain_need(probe, operand, not want, depth)
        case ast.BinaryOp(op="??", left=left) if probe.value(left) is not None:
            return explain_need(probe, left, want, depth)
        case ast.Name() if depth < _MAX_DEPTH and _definition(probe, expr) is not None:
            return explain_need(probe, _definition(probe, expr), want, depth + 1)  # type: ignore[arg-type]
        case ast.BinaryOp(op="and" | "or"):
            # `and` wanted true (or `or` wanted false): every part that is off must move;
            # otherwise any one of them will do.
            every = (expr.op == "and") == want
            needs = [explain_need(probe, part, want, depth) for part in _split(expr, expr.op)
                     if probe.value(part) is not want]
            return Need((" and " if every else " or ").join(need.text for need in needs),
                        all(need.amount for need in needs))
        case ast.Compare(op=op, left=left, right=right):
            return _compare_need(probe, op if want else NEGATED[op], left, right)
        case ast.IsNull(operand=operand, negated=negated):
            if want != negated:
                return Need(f"{ast.to_source(operand)} to be null (it is {show(probe.value(operand))})", False)
            return _null_need([ast.to_source(operand)])
    if value is None:
        return _null_need(_null_causes(probe, expr))
    return Need(f"{ast.to_source(expr)} to be {truth(want)} (it is {truth(value)})", False)


def _failing(condition: Condition) -> int:
    return sum(part.outcome is not True for part in condition.parts) if condition.joiner != "or" \
        else int(condition.outcome is not True)


def explain_class_list(probe: Probe, name: str) -> ClassExplanation:
    class_list = probe.rules.classes[name]
    chosen = probe.state.values.get(name)
    cases: list[Case] = []
    tried: list[tuple[int, Case, ast.Expr]] = []
    reached = False
    for i, case in enumerate(class_list.cases):
        if reached:
            cases.append(Case(case.name, None, "not tried"))
            continue
        if case.name == chosen:
            reached = True
        condition = explain_condition(probe, case.when) if case.when is not None else None
        entry = Case(case.name, condition, "chosen" if case.name == chosen else "failed")
        cases.append(entry)
        if case.name != chosen and condition is not None:
            tried.append((i, entry, case.when))  # type: ignore[arg-type]
    nearest = None
    if tried:
        # Fewest failing parts; among equals the latest, the nearest step up from the chosen case.
        _, entry, when = min(tried, key=lambda item: (_failing(item[1].condition), -item[0]))  # type: ignore
        needs = [explain_need(probe, piece) for piece in _pieces(when, entry.condition)
                 if probe.value(piece) is not True]
        nearest = Miss(entry.name, needs or [explain_need(probe, when)])
    return ClassExplanation(name, chosen, cases, nearest)  # type: ignore[arg-type]


def _pieces(expr: ast.Expr, condition: Condition | None) -> list[ast.Expr]:
    if condition is not None and condition.joiner == "and":
        return _split(expr, "and")
    return [expr]


# -- tiers -----------------------------------------------------------------------------------------

def _words_of(by: ast.Expr) -> str:
    return by.name.replace("_", " ") if isinstance(by, ast.Name) else ast.to_source(by)


def explain_tier(probe: Probe) -> TierExplanation | None:
    tiers = probe.rules.tiers
    if tiers is None:
        return None
    values = probe.state.values
    by_value = probe.value(tiers.by)
    levels = []
    earned = tiers.levels[0].name
    for level in tiers.levels:
        reached = by_value is not None and by_value >= level.min
        if reached:
            earned = level.name
        more = None if reached or by_value is None else level.min - by_value
        levels.append(Level(level.name, level.min, reached, more))
    names = tiers.names()
    held_raw = probe.state.member.get(tiers.current) if tiers.current else None
    held = held_raw if isinstance(held_raw, str) and held_raw in names else None
    downgrade = explain_condition(probe, tiers.downgrade) if tiers.downgrade is not None else None
    tier = values.get("tier")
    kept = held is not None and names.index(held) > names.index(earned) and tier == held
    forecast = None
    if tiers.forecast_earned is not None and tiers.forecast_window is not None:
        forecast = (f"{ast.to_source(tiers.forecast_earned)} = {show(probe.value(tiers.forecast_earned))} "
                    f"per {duration_words(tiers.forecast_window)}")
    next_tier, gap = values.get("next_tier"), values.get("tier_gap")
    nearest = None
    if next_tier is not None and gap is not None:
        nearest = f"{show_number(gap)} more {_words_of(tiers.by)} to {next_tier}"  # type: ignore[arg-type]
    keep = None
    if kept and by_value is not None:
        missing = levels[names.index(held)].more  # type: ignore[arg-type]
        keep = f"{show_number(missing)} more {_words_of(tiers.by)} to keep {held}"  # type: ignore[arg-type]
    return TierExplanation(ast.to_source(tiers.by), by_value, levels, earned, held, held_raw, tiers.current,
                           downgrade, kept, tier, next_tier, gap, values.get("tier_progress"),  # type: ignore
                           values.get("days_to_next_tier"), forecast, nearest, keep)


# -- campaigns -------------------------------------------------------------------------------------

def explain_campaigns(probe: Probe, decision) -> list[CampaignExplanation]:
    """Sent or not, and why, for every campaign: `decision` is campaigns.py's Decision of this run."""
    member = probe.state.member[probe.rules.member.key]
    result = []
    for name, campaign in probe.rules.campaigns.items():
        reason = decision.reason(name, member)
        text = reason.text
        verdict = decision.verdicts.get((name, str(member)))
        if reason.sent and verdict is not None and verdict.send_at > probe.state.as_of:
            text = f"held by quiet hours until {show(verdict.send_at)}"
        condition = None
        if campaign.when is not None and reason.rule in ("sent", "condition"):
            condition = explain_condition(probe, campaign.when)
        result.append(CampaignExplanation(name, reason.sent, reason.rule, text, condition))
    return result


# -- entry points ----------------------------------------------------------------------------------

def explain_member(compiled: CompiledRuleSet, evaluation: Evaluation, member_key: object,
                   decision=None) -> Explanation:
    """Explain one member of an evaluation.

    Args:
        compiled: the compiled rule set the evaluation came from.
        evaluation: `compiled.evaluate(snapshot, as_of)`.
        member_key: the member's key, as typed in the snapshot.
        decision: the campaign decision of this run (`campaigns.decide_actions`); None leaves
            campaigns out.

    Returns:
        The explanation; render it with `render_text` or `render_json`.

    Raises:
        KeyError: no member has that key.
    """
    state = evaluation.state(member_key)
    probe = Probe(compiled, evaluation, state)
    rules = compiled.rules
    metrics = [explain_metric(probe, name, metric.expr) for name, metric in rules.metrics.items()]
    classes = [explain_class_list(probe, name) for name in rules.classes]
    segments = [SegmentExplanation(name, state.values.get(name) is True, explain_condition(probe, expr))
                for name, expr in rules.segments.items()]
    reasons = explain_campaigns(probe, decision) if decision is not None and rules.campaigns else None
    return Explanation(rules.member.key, member_key, evaluation.as_of, rules.timezone, metrics,
                       explain_tier(probe), classes, segments, reasons, dict(state.member))


@dataclass
class ExplainOutcome:
    check: CheckResult
    explanation: Explanation | None = None


def member_key_of(rules: CheckedRuleSet, text: str) -> object:
    """`--member` text as a value of the member key's type (an int key is read as an int)."""
    key_type = rules.member.fields[rules.member.key]
    try:
        return parse_value(text, key_type.with_null(False), ZoneInfo(rules.timezone))
    except ValueError:
        return text


def unknown_member_message(data_dir: Path, rules: CheckedRuleSet, member: str,
                           keys: Iterable[object]) -> str:
    """`member 'M00012' is not in demo-data/member.csv` plus the closest keys."""
    try:
        where = find_table_files(Path(data_dir), rules.model.schema_)["member"]
    except Exception:  # noqa: BLE001 - the message only needs a path to point at
        where = Path(data_dir) / "member.csv"
    message = f"member '{member}' is not in {where}"
    texts = [str(key) for key in keys]
    # The usual slips are case and zero padding (m2 for M2, M42 for M000042).
    same = [text for text in texts if _loose_key(text) == _loose_key(member)]
    guesses = same[:3] or difflib.get_close_matches(member, texts, n=3, cutoff=0.6)
    if not guesses:
        return message
    quoted = [f"'{guess}'" for guess in guesses]
    return message + "; did you mean " + (" or ".join(quoted) if len(quoted) < 3 else
                                          ", ".join(quoted[:-1]) + " or " + quoted[-1]) + "?"


def _loose_key(text: str) -> str:
    return re.sub(r"\d+", lambda digits: str(int(digits.group())), text.strip().casefold())


def explain_rules(rules_dir: Path, data_dir: Path, member: str, *, as_of: dt.datetime | str | None,
                  params: dict[str, str] | None = None, on_bad_row: str = "fail",
                  state: Path | None = None) -> ExplainOutcome:
    """Check a rule set, evaluate a snapshot and explain one member (the `explain` command).

    Args:
        rules_dir: the rule-set directory.
        data_dir: the snapshot: one file per schema table.
        member: the member key as text (`--member`).
        as_of: the evaluation instant, or `--as-of` text (None: now, in the rule set's timezone).
        params: `--param` overrides as text.
        on_bad_row: "fail" or "skip", as for `evaluate`.
        state: the state file of `evaluate --state`, read only: previous results (transitions)
            and the ledger (cooldowns, caps). None: no transitions, and cooldowns and caps see
            only this run.

    Returns:
        The check result, and the explanation when the rules were valid.

    Raises:
        DiagnosticError: the snapshot could not be read.
        InputError: `--as-of` is not a date or timestamp.
        UnknownMember: no member has that key (the message names the file and the closest keys).
    """
    from .evaluate import InputError, parse_as_of

    check = check_rule_set(rules_dir, params)
    if check.rule_set is None:
        return ExplainOutcome(check)
    rules = check.rule_set
    if not isinstance(as_of, dt.datetime):
        try:
            as_of = parse_as_of(as_of, rules.timezone)
        except ValueError as error:
            raise InputError(f"--as-of: {error}") from None
    compiled = compile_rule_set(rules)
    snapshot = read_snapshot(data_dir, rules.model.schema_, rules.timezone, as_of, on_bad_row)
    key = member_key_of(rules, member)
    keys = [row[rules.member.key] for row in snapshot.members]
    if key not in set(keys):
        raise UnknownMember(unknown_member_message(data_dir, rules, member, keys))
    evaluation = compiled.evaluate(snapshot, as_of)
    decision = None
    if rules.campaigns:
        from .campaigns import campaign_run

        # A dry run: the state file is read, never written.
        with campaign_run(rules, compiled, evaluation, state, dry_run=True) as decided:
            decision = decided
    return ExplainOutcome(check, explain_member(compiled, evaluation, key, decision))


# -- text ------------------------------------------------------------------------------------------

# A line is a list of (text, style) pieces; plain text drops the styles, a terminal shows them.
Line = list[tuple[str, str | None]]
_TRUTH_STYLES = {"true": "green", "false": "red", "unknown": "yellow"}


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - display_width(text), 0)


def _outcome(value: bool | None) -> tuple[str, str | None]:
    word = truth(value)
    return word, _TRUTH_STYLES[word]


def _part_line(indent: str, part: Part) -> Line:
    line: Line = [(indent + part.source + ": ", None)]
    if part.values:
        line.append((part.values + " → ", None))
    word = truth(part.outcome)
    line.append((word if part.outcome is not None else "unknown because " +
                 " and ".join(f"{cause} is null" for cause in part.null), _TRUTH_STYLES[word]))
    return line


def _condition_lines(indent: str, condition: Condition) -> list[Line]:
    return [_part_line(indent, part) for part in condition.parts]


def _metric_lines(explanation: Explanation) -> list[Line]:
    lines: list[Line] = [[("Metrics", "bold")]]
    if not explanation.metrics:
        return lines + [[("  (none)", None)]]
    name_width = max(display_width(m.name) for m in explanation.metrics)
    value_width = min(max(display_width(show(m.value)) for m in explanation.metrics), 16)
    for metric in explanation.metrics:
        because = "; ".join(metric.because)
        head = f"  {_pad(metric.name, name_width)} = {_pad(show(metric.value), value_width)}"
        lines.append([(head.rstrip() if not because else head, None)]
                     + ([("  " + because, "dim")] if because else []))
    return lines


def _tier_lines(tier: TierExplanation) -> list[Line]:
    lines: list[Line] = [[("Tier: ", "bold"), (tier.tier, "bold")]]
    lines.append([(f"  by {tier.by} = {show(tier.by_value)}", None)])
    width = max(display_width(level.name) for level in tier.levels)
    min_width = max(display_width(show(level.min)) for level in tier.levels)
    for level in tier.levels:
        head = f"    {_pad(level.name, width)}  min {_pad(show(level.min), min_width)}  "
        if level.reached:
            lines.append([(head, None), ("reached", "green")])
        else:
            more = f" ({show(level.more)} more)" if level.more is not None else ""
            lines.append([(head, None), ("not reached", "red"), (more, None)])
    lines.append([(f"  earned {tier.earned}", None)])
    if tier.current_field is not None:
        held = tier.held if tier.held is not None else (
            "none" if tier.held_raw is None else f"{show(tier.held_raw)}, not a tier: ignored")
        lines.append([(f"  held before ({tier.current_field}): {held}", None)])
        if tier.downgrade is not None:
            if len(tier.downgrade.parts) == 1:
                lines.append(_part_line("  downgrade when ", tier.downgrade.parts[0]))
            else:
                lines.append([(f"  downgrade when {tier.downgrade.source} → ", None),
                              _outcome(tier.downgrade.outcome)])
                lines.extend(_condition_lines("    ", tier.downgrade))
        if tier.kept:
            lines.append([(f"  kept {tier.held}: above the earned {tier.earned}, and no downgrade applies", None)])
            if tier.keep is not None:
                lines.append([("  to keep it when a downgrade applies: ", None), (tier.keep, "cyan")])
        elif tier.held is not None and tier.tier != tier.held:
            moved = "up" if tier.tier == tier.earned and tier.held != tier.earned else "down"
            lines.append([(f"  moved {moved} from {tier.held} to {tier.tier}", None)])
    if tier.next_tier is None:
        lines.append([("  top tier: no next tier", None)])
        return lines
    facts = [f"gap {show(tier.gap)}"]
    if tier.progress is not None:
        facts.append(f"progress {tier.progress * 100:.2f}%")  # type: ignore[operator]
    if tier.forecast is not None:
        facts.append(f"about {show(tier.days)} days at {tier.forecast}" if tier.days is not None
                     else f"no forecast: {tier.forecast}")
    lines.append([(f"  next tier {tier.next_tier}: " + ", ".join(facts), None)])
    if tier.nearest is not None:
        lines.append([("  nearest miss: ", None), (tier.nearest, "cyan")])
    return lines


_CASE_MARKS = {"chosen": ("✓", "bold green"), "failed": ("✗", "red")}


def _class_lines(item: ClassExplanation) -> list[Line]:
    value = item.value if item.value is not None else "null (no case matched)"
    lines: list[Line] = [[(f"  {item.name} = ", None), (value, "bold")]]
    not_tried = [case.name for case in item.cases if case.status == "not tried"]
    for case in item.cases:
        if case.status == "not tried":
            continue
        mark, style = _CASE_MARKS[case.status]
        if case.condition is None:
            lines.append([(f"    {mark} ", style), (f"{case.name}: else", None)])
            continue
        head: Line = [(f"    {mark} ", style), (f"{case.name}: ", "bold" if case.status == "chosen" else None)]
        if len(case.condition.parts) == 1:
            part = case.condition.parts[0]
            lines.append(head + _part_line("", part))
            continue
        lines.append(head + [(case.condition.source + " → ", None), _outcome(case.condition.outcome)])
        lines.extend(_condition_lines("        ", case.condition))
    if not_tried:
        lines.append([("    · not tried: " + ", ".join(not_tried), "dim")])
    if item.nearest is not None:
        lines.append([("    nearest miss: ", None), (item.nearest.words(), "cyan")])
    return lines


def _segment_lines(segments: list[SegmentExplanation]) -> list[Line]:
    lines: list[Line] = [[("Segments", "bold")]]
    width = max(display_width(s.name) for s in segments)
    for segment in segments:
        condition = segment.condition
        word, style = _outcome(condition.outcome)
        head: Line = [(f"  {_pad(segment.name, width)}  ", None), (word, style), (" " * (9 - len(word)), None)]
        if len(condition.parts) == 1:
            lines.append(head + _part_line("", condition.parts[0]))
            continue
        lines.append(head + [(condition.source, None)])
        lines.extend(_condition_lines("  " + " " * width + "            ", condition))
    return lines


def _campaign_lines(campaigns: list[CampaignExplanation]) -> list[Line]:
    lines: list[Line] = [[("Campaigns", "bold")]]
    width = max(display_width(c.name) for c in campaigns)
    for campaign in campaigns:
        word, style = ("sent", "green") if campaign.sent else ("not sent", "red")
        lines.append([(f"  {_pad(campaign.name, width)}  ", None), (word, style),
                      (f": {campaign.reason}" if campaign.reason not in ("", word) else "", None)])
        if campaign.condition is not None:
            lines.extend(_condition_lines("  " + " " * width + "    ", campaign.condition))
    return lines


def explanation_lines(explanation: Explanation) -> list[Line]:
    """The text form as styled lines (`render_text` joins them; a terminal colours them)."""
    as_of = explanation.as_of.isoformat()
    lines: list[Line] = [[(f"member {explanation.member} ({explanation.member_key}), as of {as_of} "
                           f"({explanation.timezone})", "bold")], []]
    lines += _metric_lines(explanation)
    if explanation.tier is not None:
        lines += [[]] + _tier_lines(explanation.tier)
    if explanation.classes:
        lines += [[], [("Classes", "bold")]]
        for item in explanation.classes:
            lines += _class_lines(item)
    if explanation.segments:
        lines += [[]] + _segment_lines(explanation.segments)
    if explanation.campaigns:
        lines += [[]] + _campaign_lines(explanation.campaigns)
    return lines


def render_text(explanation: Explanation) -> str:
    """Plain text for operators (what is printed when the output is not a terminal)."""
    return "\n".join("".join(text for text, _ in line).rstrip() for line in explanation_lines(explanation)) + "\n"


def render_rich(explanation: Explanation) -> Iterable:
    """The same lines as rich Text objects, coloured for a terminal."""
    from rich.text import Text

    for line in explanation_lines(explanation):
        text = Text()
        for piece, style in line:
            text.append(piece, style=style)
        yield text


# -- json ------------------------------------------------------------------------------------------

def _condition_json(condition: Condition | None) -> dict | None:
    if condition is None:
        return None
    return {"when": condition.source, "outcome": condition.outcome, "joiner": condition.joiner,
            "parts": [{"when": p.source, "outcome": p.outcome, "values": p.values or None,
                       "null": list(p.null)} for p in condition.parts]}


def explanation_dict(explanation: Explanation) -> dict:
    """The explanation as plain data (values stay Python values; `render_json` encodes them)."""
    tier = explanation.tier
    return {
        "member": explanation.member,
        "as_of": explanation.as_of,
        "fields": explanation.fields,
        "metrics": [{"name": m.name, "expr": m.source, "value": m.value, "because": m.because,
                     "population": [{"expr": u.source, "value": u.value, "members": u.members,
                                     "member_value": u.member_value} for u in m.population]}
                    for m in explanation.metrics],
        "tier": None if tier is None else {
            "by": tier.by, "by_value": tier.by_value,
            "levels": [{"name": lv.name, "min": lv.min, "reached": lv.reached, "more": lv.more}
                       for lv in tier.levels],
            "earned": tier.earned, "held": tier.held, "held_raw": tier.held_raw,
            "downgrade": _condition_json(tier.downgrade), "kept": tier.kept, "tier": tier.tier,
            "next_tier": tier.next_tier, "tier_gap": tier.gap, "tier_progress": tier.progress,
            "days_to_next_tier": tier.days, "forecast": tier.forecast, "nearest_miss": tier.nearest,
            "to_keep": tier.keep},
        "classes": [{"name": c.name, "value": c.value,
                     "cases": [{"name": case.name, "status": case.status,
                                "condition": _condition_json(case.condition)} for case in c.cases],
                     "nearest_miss": None if c.nearest is None else
                     {"to": c.nearest.target, "needs": [need.text for need in c.nearest.needs],
                      "text": c.nearest.words()}}
                    for c in explanation.classes],
        "segments": [{"name": s.name, "value": s.value, "condition": _condition_json(s.condition)}
                     for s in explanation.segments],
        "campaigns": None if explanation.campaigns is None else
        [{"name": c.name, "sent": c.sent, "rule": c.rule, "reason": c.reason,
          "condition": _condition_json(c.condition)} for c in explanation.campaigns],
    }


def _json_text(value: object, tz, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{encode_basestring(str(k))}: {_json_text(v, tz, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return "[\n" + ",\n".join(inner + _json_text(item, tz, inner) for item in value) + "\n" + indent + "]"
    return json_value(value, tz)


def render_json(explanation: Explanation) -> str:
    """JSON for tools: values encoded as in result rows (decimals exact, timestamps with offset)."""
    return _json_text(explanation_dict(explanation), ZoneInfo(explanation.timezone), "") + "\n"


__all__ = ["Explanation", "ExplainOutcome", "Probe", "UnknownMember", "explain_member", "explain_rules", "render_text",
           "render_json", "render_rich", "explanation_dict", "explain_condition", "explain_need",
           "member_key_of", "unknown_member_message"]
