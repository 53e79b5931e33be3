"""Campaigns on the DuckDB engine: decided in SQL and Arrow, the state file read as a table.

Every campaign's `when` and `points`, the values its `when` reads (event aggregates,
rankings, calls), the tier's `by` value and `count(orders)` become extra columns of the
compiled query (sql.py: same compiler, same three-valued logic); member fields and the
metrics not in the output are carried along. The previous run's results (state.py) go to
DuckDB as a table joined on the member key, so each campaign's transition, and the values
it saw, are SQL too. The steps, each over whole columns:

1. match: per member and campaign, campaigns._match's answer (the FLAGS table);
2. deliver: consent, cooldowns, groups, caps and budgets (delivery_sql.py, delivery.py's rules);
3. write: per campaign, the sent members' messages (messages.py prints simple templates from
   Arrow columns; others render one by one in Jinja2's sandbox from the Python engine's
   context), values and idempotency keys become actions.jsonl lines (actions_arrow.py).

The files are the Python engine's, byte for byte (tests/test_campaigns_sql.py,
tests/test_campaigns_equal.py); the same state_run transaction records the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import TemplateError
from sqlglot import exp

from . import ast
from . import types as t
from .actions_arrow import ActionBlock, ValueColumn, action_lines, value_texts
from .campaigns import (MAX_TEMPLATE_PROBLEMS, CampaignSummary, Decision, Reason, _canonical, _sent, actions_path,
                        first_run_notes, state_run)
from .check import CheckedCampaign, CheckedRuleSet, Trigger
from .delivery_sql import JUDGED, judge_offers
from .errors import Diagnostic, DiagnosticError
from .eval import MemberState
from .eval_codegen import is_invariant
from .messages import PRINTABLE, Value, join_parts, printed, simple_parts
from .results import atomic_path, result_columns
from .results_arrow import write_batches
from .snapshot import paused_gc
from .sql import PREFIX, compile_sql
from .sql_dialects import cast, fn, num
from .sql_statements import all_of, col, create_table, drop, duckdb, list_has, named, or_false, table_ref, text
from .state import LedgerEntry, Previous, PreviousState, instant_text
from .templates import render

ROWS = PREFIX + "campaign_rows"
FLAGS = PREFIX + "campaign_flags"  # per member: place in key order, campaign matches, trigger values
POS = PREFIX + "pos"  # the member's place in key order
RID = PREFIX + "rid"  # the member's row in ROWS
PREVIOUS = PREFIX + "previous"
ORDERS = PREFIX + "orders"
TIER_BY = PREFIX + "tier_by_value"
KEY_TEXT = PREFIX + "key_text"  # the member key as text, as the state file and the offers hold it
OFFERS = PREFIX + "offers"
WANTED = PREFIX + "wanted"
# The previous run's columns (_previous_table); per class list and segment: `p_class_<i>`, `p_segment_<i>`.
P_MEMBER = PREFIX + "p_member"
P_TIER = PREFIX + "p_tier"
P_ORDERS = PREFIX + "p_orders"


@dataclass
class CampaignColumns:
    """The extra columns campaigns need, and which expression each one holds."""

    extra: dict[str, ast.Expr] = field(default_factory=dict)  # column → expression
    carry: list[tuple[str, str, t.Type]] = field(default_factory=list)  # (column, step column, type)
    by_node: dict[ast.Expr, str] = field(default_factory=dict)  # expression → its column
    member_fields: dict[str, str] = field(default_factory=dict)  # member field → column
    metrics: dict[str, str] = field(default_factory=dict)  # metric not in the output → column

    def add(self, node: ast.Expr, column: str | None = None) -> str:
        found = self.by_node.get(node)
        if found is not None:
            return found
        column = column or f"{PREFIX}value_{len(self.by_node) + 1}"
        self.extra[column] = node
        self.by_node[node] = column
        return column


def campaign_columns(rules: CheckedRuleSet) -> CampaignColumns:
    """The columns a campaign run reads beyond the result rows."""
    plan = CampaignColumns()
    key = rules.member.key
    current = rules.tiers.current if rules.tiers else None
    for i, (name, type_) in enumerate(rules.member.fields.items()):
        if name != key:
            column = f"{PREFIX}member_{i}"
            plan.member_fields[name] = column
            plan.carry.append((column, "current_tier" if name == current else name, type_))
    for i, (name, metric) in enumerate(rules.metrics.items()):
        if not metric.output:
            column = f"{PREFIX}metric_{i}"
            plan.metrics[name] = column
            plan.carry.append((column, name, metric.type))
    if rules.order_count is not None:
        plan.add(rules.order_count, ORDERS)
    if rules.tiers is not None:
        plan.add(rules.tiers.by, TIER_BY)
    for campaign in rules.campaigns.values():
        if campaign.when is not None:
            plan.add(campaign.when)
            for node in ast.walk(campaign.when):
                if isinstance(node, (ast.EventAggregate, ast.Ranking, ast.Call)) and not is_invariant(node):
                    plan.add(node)
        if campaign.points is not None:
            plan.add(campaign.points)
    return plan


class _SqlValues:
    """Stands in for CompiledRuleSet in campaigns.py: an expression's value is its SQL column."""

    def __init__(self, plan: CampaignColumns):
        self.plan = plan

    def expr_function(self, expr: ast.Expr) -> Callable[[MemberState], object]:
        column = self.plan.by_node[expr]
        return lambda state: state.values[column]


# -- the previous run as a table --------------------------------------------------------------------

def _previous_table(rules: CheckedRuleSet, previous: Previous | None):
    """One row per member of the previous run: tier, one column per class list and segment, orders."""
    import pyarrow as pa

    members = previous.members if previous is not None else {}
    keys = list(members)
    states = [members[k] for k in keys]
    arrays = [pa.array(keys, pa.string()), pa.array([s.tier for s in states], pa.string())]
    names = [P_MEMBER, P_TIER]
    for i, name in enumerate(rules.classes):
        arrays.append(pa.array([s.classes.get(name) for s in states], pa.string()))
        names.append(f"{PREFIX}p_class_{i}")
    for i, name in enumerate(rules.segments):
        arrays.append(pa.array([name in s.segments for s in states], pa.bool_()))
        names.append(f"{PREFIX}p_segment_{i}")
    arrays.append(pa.array([s.orders for s in states], pa.int64()))
    names.append(P_ORDERS)
    return pa.table(arrays, names=names)


# -- each campaign's match as SQL (a filter: never narrower than campaigns._match) --------------------

class _Match:
    """Each campaign's match, its trigger's values and consent, as trees over the stored rows
    (alias `q`) LEFT JOINed to the previous run (alias `p`)."""

    def __init__(self, rules: CheckedRuleSet, plan: CampaignColumns, previous: Previous | None):
        self.rules = rules
        self.plan = plan
        self.previous = previous

    def known(self) -> exp.Expression:
        """Whether the member had a state before: previous_of() is None on a first run; a
        member missing from the state file is new (no state before)."""
        if self.previous is None:
            return exp.false()
        if self.previous.missing_are_new:
            return exp.true()
        return exp.Not(this=exp.Is(this=col(P_MEMBER, "p"), expression=exp.Null()))

    def tier_index(self, value: exp.Expression) -> exp.Expression:
        names = self.rules.tiers.names() if self.rules.tiers else ()
        if not names:
            return exp.Null()
        return exp.Case(this=value, ifs=[exp.If(this=text(name), true=num(i)) for i, name in enumerate(names)])

    def campaign(self, campaign) -> exp.Expression:
        parts = []
        if campaign.trigger is not None:
            parts.append(self.trigger(campaign.trigger))
        if campaign.when is not None:
            parts.append(or_false(col(self.plan.by_node[campaign.when], "q")))
        if campaign.points is not None:
            parts.append(or_false(exp.GT(this=col(self.plan.by_node[campaign.points], "q"), expression=num(0))))
        return all_of(parts)

    def trigger(self, trigger: Trigger) -> exp.Expression:
        rules = self.rules
        if trigger.kind in ("tier_up", "tier_down", "tier_at_risk"):
            if rules.tiers is None:
                return exp.false()
            now = self.tier_index(col("tier", "q"))
            if trigger.kind == "tier_at_risk":
                return or_false(exp.GT(this=now, expression=self.earned_index()))
            before = self.tier_index(col(P_TIER, "p"))
            current = rules.tiers.current
            if current is not None:
                held = self.tier_index(col(self.plan.member_fields[current], "q"))
                before = exp.Coalesce(this=before, expressions=[held])
            compare = exp.GT if trigger.kind == "tier_up" else exp.LT
            return or_false(compare(this=now, expression=before))
        if trigger.kind in ("entered", "left"):
            names = list(rules.segments)
            if trigger.subject not in names:
                return exp.false()
            was_in = exp.and_(self.known(), or_false(col(f"{PREFIX}p_segment_{names.index(trigger.subject)}", "p")))
            is_in = list_has(col("segments", "q"), text(trigger.subject))
            fired = exp.and_(is_in, exp.not_(was_in)) if trigger.kind == "entered" else \
                exp.and_(was_in, exp.not_(is_in))
            return exp.and_(self.known(), fired)
        if trigger.kind == "class_change":
            names = list(rules.classes)
            if trigger.subject not in names:
                return exp.false()

            def before() -> exp.Expression:
                return col(f"{PREFIX}p_class_{names.index(trigger.subject)}", "p")

            parts = [self.known(), exp.NullSafeNEQ(this=before(), expression=col(trigger.subject, "q"))]
            if trigger.from_value is not None:
                parts.append(or_false(exp.EQ(this=before(), expression=text(trigger.from_value))))
            if trigger.to_value is not None:
                parts.append(or_false(exp.EQ(this=col(trigger.subject, "q"), expression=text(trigger.to_value))))
            return all_of(parts)
        if trigger.kind == "first_order":
            if rules.order_count is None:
                return exp.false()
            orders_now = exp.Coalesce(this=col(ORDERS, "q"), expressions=[num(0)])
            return all_of([self.known(), or_false(exp.EQ(this=col(P_ORDERS, "p"), expression=num(0))),
                           exp.GT(this=orders_now, expression=num(0))])
        return exp.false()

    def trigger_values(self, trigger: Trigger) -> list[ValueColumn]:
        """campaigns._transition's values for a member whose trigger fired, as SQL."""
        rules = self.rules
        if trigger.kind in ("tier_up", "tier_down", "tier_at_risk"):
            if rules.tiers is None:
                return []
            tier = ValueColumn("tier", col("tier", "q"), t.STRING)
            if trigger.kind == "tier_at_risk":
                levels = rules.tiers.levels
                by_type = rules.tiers.by.type or t.DECIMAL
                earned = exp.Case(this=self.earned_index(),
                                  ifs=[exp.If(this=num(i), true=text(level.name)) for i, level in enumerate(levels)])

                def gap() -> exp.Expression:
                    return exp.Case(this=col("tier", "q"), ifs=[
                        exp.If(this=text(level.name),
                               true=exp.Sub(this=self.tier_min(level.min), expression=col(TIER_BY, "q")))
                        for level in levels])

                # Python's max(gap, 0) is the int 0 for a negative gap.
                keep_gap = exp.Case(ifs=[exp.If(this=exp.LT(this=gap(), expression=num(0)), true=num(0))],
                                    default=gap())
                zero_when = exp.LT(this=gap(), expression=num(0)) if by_type.kind == "float" else None
                return [tier, ValueColumn("earned_tier", earned, t.STRING),
                        ValueColumn("keep_gap", keep_gap, by_type, zero_when=zero_when)]
            names = rules.tiers.names()
            known_tier = [col(P_TIER, "p")]
            if rules.tiers.current is not None:
                known_tier.append(col(self.plan.member_fields[rules.tiers.current], "q"))
            previous = exp.Case(ifs=[exp.If(this=exp.In(this=tier_of, expressions=[text(n) for n in names]),
                                            true=tier_of.copy()) for tier_of in known_tier])
            return [tier, ValueColumn("previous_tier", previous, t.STRING)]
        if trigger.kind in ("entered", "left"):
            names = list(rules.segments)
            if trigger.subject not in names:
                return []
            was_in = or_false(col(f"{PREFIX}p_segment_{names.index(trigger.subject)}", "p"))
            is_in = list_has(col("segments", "q"), text(trigger.subject))
            return [ValueColumn("segment", text(trigger.subject), t.STRING), ValueColumn("was_in", was_in, t.BOOL),
                    ValueColumn("is_in", is_in, t.BOOL)]
        if trigger.kind == "class_change":
            names = list(rules.classes)
            if trigger.subject not in names:
                return []
            before = col(f"{PREFIX}p_class_{names.index(trigger.subject)}", "p")
            return [ValueColumn(trigger.subject, col(trigger.subject, "q"), t.STRING),
                    ValueColumn(f"previous_{trigger.subject}", before, t.STRING)]
        if trigger.kind == "first_order" and rules.order_count is not None:
            return [ValueColumn("orders", col(ORDERS, "q"), rules.order_count.type or t.INT),
                    ValueColumn("previous_orders", col(P_ORDERS, "p"), t.INT)]
        return []

    def tier_min(self, value) -> exp.Expression:
        """A level's `min` in the type of the tier's `by` value."""
        by = self.rules.tiers.by.type
        if by is not None and by.kind == "float":
            return cast(exp.Literal.string(repr(float(value))), "DOUBLE")
        if by is not None and by.kind == "int" and isinstance(value, int):
            return cast(num(value), "BIGINT")
        return cast(text(format(Decimal(value), "f")), "DECIMAL(38, 18)")

    def earned_index(self) -> exp.Expression:
        """The index of the highest level whose `min` the member's `by` value reaches."""
        levels = list(enumerate(self.rules.tiers.levels))
        return exp.Case(ifs=[exp.If(this=exp.GTE(this=col(TIER_BY, "q"), expression=self.tier_min(level.min)),
                                    true=num(i)) for i, level in reversed(levels)], default=num(0))


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class _Run:
    con: object
    rules: CheckedRuleSet
    as_of: dt.datetime
    tz: ZoneInfo
    query: exp.Expression  # the compiled query with the campaign columns, unordered
    columns: list[tuple[str, t.Type]]
    plan: CampaignColumns
    kept: list[tuple[str, PreviousState]] = field(default_factory=list)

    def __post_init__(self):
        # One map for every member: campaigns.py only reads it.
        self.params = {name: p.value for name, p in self.rules.params.items()}
        self.types = dict(self.columns)
        self.too_long: dict[str, int] = {}  # campaign → messages over the channel's max_length
        self.materialized = False

    def materialize(self) -> None:
        """Store the wide rows once, unsorted, in table ROWS: a table of the database, not a TEMP
        one, so another connection (the results writer's cursor) reads it while decisions run.
        Sorting them for a row number costs seconds; they are sorted once, when written."""
        if not self.materialized:
            # The compiled query prints as compiled; the statement adds only its name.
            self.con.execute(create_table(ROWS, self.query).sql("duckdb")).fetchall()
            self.materialized = True

    def decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        with paused_gc():
            return self._decide(previous, history)

    def _decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        rules, con, tz = self.rules, self.con, self.tz
        campaigns = list(rules.campaigns.values())
        match = _Match(rules, self.plan, previous)
        seen = {i: match.trigger_values(c.trigger) for i, c in enumerate(campaigns) if c.trigger is not None}
        extra = [named(match.campaign(c), f"{PREFIX}match_{i}") for i, c in enumerate(campaigns)]
        extra += [named(value.sql, f"{PREFIX}seen_{i}_{j}") for i, values in seen.items()
                  for j, value in enumerate(values)]
        extra += [named(value.zero_when, f"{PREFIX}zero_{i}_{j}") for i, values in seen.items()
                  for j, value in enumerate(values) if value.zero_when is not None]
        extra += [named(self.consent(c), f"{PREFIX}consent_{i}") for i, c in enumerate(campaigns)]
        key = rules.member.key
        in_key_order = exp.Window(this=exp.RowNumber(), order=exp.Order(expressions=[exp.Ordered(this=col(key, "q"))]))
        # The narrow FLAGS table holds what the decision adds to the stored rows.
        flags = exp.select(named(exp.column("rowid", "q"), RID),
                           named(exp.Sub(this=in_key_order, expression=num(1)), POS),
                           named(cast(col(key, "q"), "VARCHAR"), KEY_TEXT), *extra) \
            .from_(table_ref(ROWS, "q")) \
            .join(table_ref(PREVIOUS, "p"), join_type="LEFT",
                  on=exp.EQ(this=cast(col(key, "q"), "VARCHAR"), expression=col(P_MEMBER, "p")))
        self.materialize()
        con.register(PREVIOUS, _previous_table(rules, previous))
        try:
            con.execute(duckdb(create_table(FLAGS, flags, temporary=True))).fetchall()
        finally:
            con.unregister(PREVIOUS)
        summaries = {c.name: CampaignSummary(c.name, c.channel) for c in campaigns}
        open_ = []
        for i, campaign in enumerate(campaigns):
            if campaign.window is not None and not campaign.window.contains(self.as_of, tz):
                summaries[campaign.name].window_closed = True
            else:
                open_.append(i)
        release = self._judge(open_, campaigns, history)
        verdicts = exp.select("campaign", "rule", exp.Count(this=exp.Star())).from_(table_ref(JUDGED)) \
            .group_by("campaign", "rule")
        for index, rule, count in con.execute(duckdb(verdicts)).fetchall():
            summary = summaries[campaigns[index].name]
            summary.matched += count
            if rule:
                summary.removed[rule] += count
        blocks = []
        for i in sorted(open_, key=lambda i: campaigns[i].name):
            block = self._block(i, campaigns[i], seen.get(i, []), release[campaigns[i].channel], previous)
            summary = summaries[campaigns[i].name]
            summary.sent = len(block)
            summary.held = len(block) if block.send_at > self.as_of else 0
            summary.too_long = self.too_long.get(campaigns[i].name, 0)
            blocks.append(block)
        why = "per-member reasons come from the Python engine: memberrules explain"
        return Decision(self.as_of, previous, [], summaries, first_run_notes(rules, previous), {}, {},
                        lambda campaign, member: Reason(False, "", why), blocks=blocks)

    def _judge(self, open_: list[int], campaigns: list, history: list[LedgerEntry]):
        """The delivery rules over every open campaign's matches (delivery_sql.py)."""
        def offers_of(i: int) -> exp.Select:
            return exp.select(named(cast(num(i), "INTEGER"), "campaign"), named(col(POS), "pos"),
                              named(col(KEY_TEXT), "member"), named(col(f"{PREFIX}consent_{i}"), "consent")
                              ).from_(table_ref(FLAGS)).where(col(f"{PREFIX}match_{i}"))

        no_offers = exp.select(*(named(cast(exp.Null(), type_), name) for name, type_ in (
            ("campaign", "INTEGER"), ("pos", "BIGINT"), ("member", "VARCHAR"), ("consent", "BOOLEAN")))
        ).where(exp.false())
        query = functools.reduce(lambda a, b: exp.union(a, b, distinct=False), map(offers_of, open_)) \
            if open_ else no_offers
        self.con.execute(duckdb(create_table(OFFERS, query, temporary=True))).fetchall()
        try:
            return judge_offers(self.con, OFFERS, campaigns, self.rules.delivery, list(_sent(history)),
                                self.as_of, self.tz)
        finally:
            self.con.execute(duckdb(drop("TABLE", OFFERS))).fetchall()

    def consent(self, campaign: CheckedCampaign) -> exp.Expression:
        """Every field the campaign `requires` is true."""
        return all_of(or_false(exp.EQ(this=col(self.member_column(name), "q"), expression=exp.true()))
                      for name in campaign.requires)

    def member_column(self, name: str) -> str:
        return self.rules.member.key if name == self.rules.member.key else self.plan.member_fields[name]

    # -- one campaign's actions ---------------------------------------------------------------------

    def value_columns(self, campaign: CheckedCampaign, trigger_values: list[ValueColumn], index: int
                      ) -> list[ValueColumn]:
        """What the Python engine puts in the action's `values`, as its dict fills them: the
        trigger's values, then the values the condition read, then the points; a name set
        again keeps its first place and takes the later value.

        Trees over the stored rows (alias `r`) and the FLAGS table (alias `f`), which holds
        the trigger's values."""
        columns: dict[str, ValueColumn] = {}
        for j, value in enumerate(trigger_values):
            zero = col(f"{PREFIX}zero_{index}_{j}", "f") if value.zero_when is not None else None
            columns[value.name] = ValueColumn(value.name, col(f"{PREFIX}seen_{index}_{j}", "f"), value.type, zero)
        if campaign.when is not None:
            for name, sql, type_ in self.condition_reads(campaign.when):
                columns[name] = ValueColumn(name, sql, type_)
        if campaign.points is not None:
            columns["points"] = ValueColumn("points", col(self.plan.by_node[campaign.points], "r"),
                                            campaign.points.type or t.INT)
        return list(columns.values())

    def condition_reads(self, when: ast.Expr) -> Iterator[tuple[str, exp.Expression, t.Type]]:
        """campaigns._condition_reads as SQL over the stored rows (alias `r`): (name, column, type)."""
        rules, plan = self.rules, self.plan
        current = rules.tiers.current if rules.tiers else None
        for node in ast.walk(when):
            if isinstance(node, ast.Name) and node.ref not in ("param", "as_of", "event", None):
                name, type_ = node.name, node.type or t.STRING
                if node.ref == "member":
                    yield name, col(self.member_column(name), "r"), type_
                elif node.ref == "current_tier":
                    yield name, (col(self.member_column(current), "r") if current else exp.Null()), type_
                elif node.ref == "segment" or name in rules.segments:
                    yield name, list_has(col("segments", "r"), text(name)), t.BOOL
                elif name in plan.metrics:
                    yield name, col(plan.metrics[name], "r"), type_
                elif name in self.types:
                    yield name, col(name, "r"), self.types[name]
                else:
                    yield name, exp.Null(), type_
            elif isinstance(node, (ast.EventAggregate, ast.Ranking, ast.Call)) and not is_invariant(node):
                yield ast.to_source(node), col(plan.by_node[node], "r"), node.type or t.STRING

    def _block(self, index: int, campaign: CheckedCampaign, trigger_values: list[ValueColumn],
               send_at: dt.datetime, previous: Previous | None) -> ActionBlock:
        rules, tz = self.rules, self.tz
        key = rules.member.key
        values = self.value_columns(campaign, trigger_values, index)
        parts = simple_parts(campaign.template) if campaign.template is not None else None
        printed_columns = self.printed_columns(parts, campaign) if parts is not None else None
        unit = fn("chr", num(31))  # the separator state.action_key hashes between the parts
        digest = fn("sha256", fn("concat", text(campaign.name), unit, cast(col(key, "r"), "VARCHAR"), unit.copy(),
                                 text(instant_text(self.as_of))))
        select = [named(col(POS, "f"), "pos"), named(col(key, "r"), "member"), named(digest, "digest")]
        select += [named(value.sql, f"v{j}") for j, value in enumerate(values)]
        select += [named(value.zero_when, f"z{j}") for j, value in enumerate(values) if value.zero_when is not None]
        select += [named(sql, f"m{j}") for j, (sql, type_) in enumerate(printed_columns or [])
                   if type_ is not None]  # a constant is printed text already, not SQL
        sent = exp.select(*select).from_(table_ref(JUDGED, "j")) \
            .join(table_ref(FLAGS, "f"), on=exp.EQ(this=col(POS, "f"), expression=col("pos", "j"))) \
            .join(table_ref(ROWS, "r"), on=exp.EQ(this=exp.column("rowid", "r"), expression=col(RID, "f"))) \
            .where(exp.and_(exp.EQ(this=col("campaign", "j"), expression=num(index)),
                            exp.Is(this=col("rule", "j"), expression=exp.Null()))) \
            .order_by(col("pos", "j"))
        table = self.con.sql(duckdb(sent)).to_arrow_table()
        n = table.num_rows
        members = table.column("member").combine_chunks() if n else pa.array([], table.schema.field("member").type)
        digests = table.column("digest").combine_chunks().cast(pa.string())
        keys = pc.binary_join_element_wise(campaign.name + ":", pc.utf8_slice_codeunits(digests, 0, 32), "") \
            if n else pa.array([], pa.string())
        messages = None
        if campaign.template is not None:
            messages = self.messages(campaign, parts, printed_columns, table, previous)
        points = None
        if campaign.points is not None:
            j = next(j for j, v in enumerate(values) if v.name == "points")
            points = (table.column(f"v{j}").combine_chunks(), values[j].type)
        texts = [(value.name, value_texts(table.column(f"v{j}").combine_chunks(), value,
                                          table.column(f"z{j}").combine_chunks() if value.zero_when else None, tz))
                 for j, value in enumerate(values)]
        member_type = rules.member.fields[key]
        lines = action_lines(campaign.name, campaign.channel, send_at, campaign.coupon, tz, members=members,
                             member_type=member_type, keys=keys, messages=messages, points=points, values=texts)
        limit = rules.delivery.policy(campaign.channel).max_length
        block = ActionBlock(campaign.name, campaign.channel, send_at, not campaign.transactional, members, keys, lines)
        if limit is not None and messages is not None and n:
            self.too_long[campaign.name] = pc.sum(pc.greater(pc.utf8_length(messages), limit)).as_py() or 0
        return block

    # -- messages ------------------------------------------------------------------------------------

    def printed_columns(self, parts, campaign: CheckedCampaign
                        ) -> list[tuple[exp.Expression | str, t.Type | None]] | None:
        """The SQL and type of each value a simple template prints, or None when one of them is
        not a column Arrow prints as Python does (the template renders member by member)."""
        columns = []
        for part in parts:
            if isinstance(part, str):
                continue
            column = self.template_column(part, campaign)
            if column is None:
                return None
            if column[1] is not None and column[1].kind not in PRINTABLE:
                return None
            columns.append(column)
        return columns

    def template_column(self, part: Value, campaign: CheckedCampaign
                        ) -> tuple[exp.Expression | str, t.Type | None] | None:
        """campaigns._template_context's value for a printed name, as (SQL over the stored rows,
        alias `r`, type); a constant as (its text rendered by Jinja2, None); None where only the
        Python context will do."""
        rules, plan = self.rules, self.plan
        name = part.name
        if name == "member":
            if part.attr is None or part.attr not in rules.member.fields:
                return None
            return col(self.member_column(part.attr), "r"), rules.member.fields[part.attr]
        if part.attr is not None:
            return None
        columns = {"tier": "tier", "next_tier": "next_tier", "tier_gap": "tier_gap", "gap": "tier_gap"}
        if name in columns:
            column = columns[name]
            return (col(column, "r"), self.types[column]) if column in self.types else None
        if name == "current_tier":
            current = rules.tiers.current if rules.tiers else None
            if current is None:
                return exp.Null(), t.STRING
            return col(self.member_column(current), "r"), rules.member.fields[current]
        if name in ("campaign", "as_of"):
            return render("{{ value }}", {"value": campaign.name if name == "campaign" else self.as_of}), None
        if name in ("earned_tier", "keep_gap", "classes", "segments", "previous"):
            return None
        if name in rules.segments:
            return list_has(col("segments", "r"), text(name)), t.BOOL
        if name in rules.classes or name in rules.metrics:
            column = plan.metrics.get(name, name)
            return (col(column, "r"), self.types[column]) if column in self.types else None
        if name in self.params:
            return render("{{ value }}", {"value": _canonical(self.params[name])}), None
        return None

    def messages(self, campaign: CheckedCampaign, parts, printed_columns, table, previous: Previous | None):
        n = table.num_rows
        if printed_columns is not None:
            pieces: list = []
            j = 0
            for part in parts:
                if isinstance(part, str):
                    pieces.append(part)
                    continue
                sql, type_ = printed_columns[j]
                if type_ is None:
                    pieces.append(sql)  # a constant, already printed
                else:
                    texts = printed(table.column(f"m{j}").combine_chunks(), type_)
                    if texts is None:
                        return self.rendered(campaign, table, previous)
                    pieces.append(texts)
                j += 1
            return join_parts(pieces, n)
        return self.rendered(campaign, table, previous)

    def rendered(self, campaign: CheckedCampaign, table, previous: Previous | None) -> pa.Array:
        """Messages rendered member by member in Jinja2's sandbox, from the Python engine's context."""
        from .campaigns import _Context, _template_context
        from .duckdb_engine import iter_query

        rules = self.rules
        positions = table.column("pos").to_pylist()
        if not positions:
            return pa.array([], pa.string())
        con = self.con
        wanted = exp.select(*(col(name, "r") for name, _ in self.columns)).from_(table_ref(ROWS, "r")) \
            .join(table_ref(FLAGS, "f"), on=exp.EQ(this=exp.column("rowid", "r"), expression=col(RID, "f"))) \
            .where(col(POS, "f").isin(query=exp.select(col("pos")).from_(table_ref(WANTED)))) \
            .order_by(col(POS, "f"))
        con.register(WANTED, pa.table({"pos": pa.array(positions, pa.int64())}))
        try:
            rows = [row for batch in iter_query(con, duckdb(wanted), self.columns, self.tz) for row in batch]
        finally:
            con.unregister(WANTED)
        values = _SqlValues(self.plan)
        ctx = _Context(rules, values, None, previous, self.tz, {}, {},  # type: ignore[arg-type]
                       order_count=values.expr_function(rules.order_count) if rules.order_count is not None else None,
                       tier_by=values.expr_function(rules.tiers.by) if rules.tiers is not None else None)
        messages, problems = [], []
        for row in rows:
            state = self.state(row)
            key = state.member[rules.member.key]
            try:
                messages.append(render(campaign.template, _template_context(ctx, campaign, state, key)))
            except (TemplateError, ArithmeticError, TypeError, ValueError) as problem:
                problems.append(Diagnostic("MR425", f"campaign {campaign.name}: the template failed for member "
                                                    f"{key}: {type(problem).__name__}: {problem}"))
                if len(problems) >= MAX_TEMPLATE_PROBLEMS:
                    break
        if problems:
            raise DiagnosticError(problems)
        return pa.array(messages, pa.string())

    def row_counts(self) -> dict[str, int]:
        """Each event table's rows of known members up to as_of (duckdb_engine.row_count_columns),
        summed over the stored rows."""
        from .duckdb_engine import ROWS_PREFIX

        tables = list(self.rules.row_counts)
        if not tables:
            return {}
        sums = self.con.execute(duckdb(exp.select(*(exp.Sum(this=col(ROWS_PREFIX + name)) for name in tables))
                                       .from_(table_ref(ROWS)))).fetchall()[0]
        return {name: int(total or 0) for name, total in zip(tables, sums)}

    def state(self, row: dict) -> MemberState:
        rules, plan = self.rules, self.plan
        key = rules.member.key
        member = {name: row[key] if name == key else row[plan.member_fields[name]] for name in rules.member.fields}
        member.setdefault(key, row[key])
        values = dict(row)
        values.update((name, row[column]) for name, column in plan.metrics.items())
        segments = set(row["segments"])
        values.update((name, name in segments) for name in rules.segments)
        return MemberState(member, {}, values, self.as_of, {}, self.params)

    def batches(self, on_batch: Callable[[object], None] | None, keep: bool = True, con=None) -> Iterator[object]:
        """Every result row in key order as Arrow record batches (plus `count(orders)`), keeping
        what the state file records; only the columns it records become Python values. `con`:
        the connection to read with (a cursor of this run's, from another thread)."""
        from .duckdb_engine import _converter, _decimals

        rules = self.rules
        result = [c for c in self.columns[:len(result_columns(rules))]]
        wanted = result + ([(ORDERS, self.plan.extra[ORDERS].type or t.INT)] if rules.order_count is not None else [])
        query = duckdb(_in_key_order(rules, wanted))
        types = dict(wanted)
        key = rules.member.key

        def values(batch, name: str) -> list:
            type_ = types[name]
            cells = _decimals(batch.column(name)) if type_.kind == "decimal" else batch.column(name).to_pylist()
            convert = _converter(type_, self.tz)
            return cells if convert is None else [None if v is None else convert(v) for v in cells]

        for batch in (con or self.con).sql(query).to_arrow_reader(100_000):
            if on_batch is not None:
                on_batch(batch)
            if not keep:  # no state file records them
                yield batch
                continue
            n = batch.num_rows
            keys = values(batch, key)
            tiers = values(batch, "tier") if rules.tiers is not None else [None] * n
            classes = [(name, values(batch, name)) for name in rules.classes]
            segments = values(batch, "segments")
            orders = values(batch, ORDERS) if rules.order_count is not None else [None] * n
            for i in range(n):
                self.kept.append((str(keys[i]), PreviousState(
                    tiers[i], {name: cells[i] for name, cells in classes}, frozenset(segments[i]), orders[i])))
            yield batch


def _campaign_run(rules: CheckedRuleSet, con, as_of: dt.datetime, tables: dict[str, str]) -> _Run:
    """The compiled query with the campaign columns, ready to decide."""
    from .duckdb_engine import row_count_columns

    plan = campaign_columns(rules)
    compiled = compile_sql(rules, "duckdb", as_of=as_of, tables=tables,
                           extra={**plan.extra, **row_count_columns(rules)}, carry=plan.carry)
    return _Run(con, rules, as_of, ZoneInfo(rules.timezone), _unordered(compiled), compiled.columns, plan)


def _drop_tables(con) -> None:
    for name in (ROWS, FLAGS, JUDGED):
        con.execute(duckdb(drop("TABLE", name))).fetchall()


def _unordered(compiled) -> exp.Expression:
    """The query without its ORDER BY: the rows are stored, and sorted when they are read."""
    query = compiled.query.copy()
    query.set("order", None)
    return query


def _in_key_order(rules: CheckedRuleSet, columns: list[tuple[str, t.Type]]) -> exp.Select:
    """The stored rows' `columns`, in member-key order."""
    return exp.select(*(col(name) for name, _ in columns)).from_(table_ref(ROWS)).order_by(col(rules.member.key))


def write_outputs_duckdb(rules: CheckedRuleSet, con, as_of: dt.datetime, tables: dict[str, str], *, results: Path,
                         fmt: str, state: Path | None = None, dry_run: bool = False,
                         on_batch: Callable[[object], None] | None = None,
                         on_row_counts: Callable[[dict[str, int]], None] | None = None
                         ) -> tuple[Decision, int, Path | None]:
    """campaigns.write_outputs on DuckDB: evaluate with the campaign columns, decide, write, record.

    Args:
        con: a DuckDB connection whose views `tables` (schema table → view) hold the snapshot,
            with the session time zone set to the rule set's.
        as_of: the evaluation instant, in the rule set's timezone.
        results: the results file; actions.jsonl goes beside it.
        state: the state file, as for the Python engine (docs/STATE.md).
        on_batch: sees every Arrow record batch of result rows (the summary's counts).
        on_row_counts: receives each event table's rows of known members (`_Run.row_counts`).

    Returns:
        The decision, the number of result rows written, and the actions file (None without
        campaigns, or on a dry run) — the same files, byte for byte, as the Python engine's.
    """
    run = _campaign_run(rules, con, as_of, tables)
    tz = run.tz
    columns = result_columns(rules)
    try:
        if dry_run:
            with state_run(rules, as_of, state, run.decide, lambda: run.kept, lambda: len(run.kept),
                           dry_run=True) as decision:
                if on_row_counts is not None:
                    on_row_counts(run.row_counts())
                for _ in run.batches(on_batch):
                    pass
            return decision, 0, None
        actions_file = actions_path(results) if rules.campaigns else None
        with contextlib.ExitStack() as outputs:
            # Entered first, left last: the renames happen after the state file has committed.
            results_temp = outputs.enter_context(atomic_path(results))
            actions_temp = outputs.enter_context(atomic_path(actions_file)) if actions_file else None
            run.materialize()
            # The results file needs only the stored rows: it is written (Arrow batches from the
            # query to the file, as without campaigns) while the campaigns are decided, on the
            # cores the decisions leave idle. Left before the cursor and the temp files: a failed
            # run waits for the writer before either goes.
            cursor = outputs.enter_context(contextlib.closing(con.cursor()))
            writer = outputs.enter_context(ThreadPoolExecutor(1, thread_name_prefix="memberrules-results"))
            written_results = writer.submit(write_batches, run.batches(None, state is not None, cursor), columns,
                                            results_temp, fmt, tz, dict(run.columns), on_batch=on_batch)
            decision = outputs.enter_context(state_run(rules, as_of, state, run.decide, lambda: run.kept,
                                                       lambda: len(run.kept)))
            if on_row_counts is not None:
                on_row_counts(run.row_counts())
            if actions_temp is not None:
                with open(actions_temp, "wb") as out:
                    decision.write_jsonl(out, tz)
            # Before the state file commits: it records the rows the writer kept.
            written = written_results.result()
        return decision, written, actions_file
    finally:
        with contextlib.suppress(Exception):
            _drop_tables(con)


def decide_first_run(rules: CheckedRuleSet, con, as_of: dt.datetime, tables: dict[str, str]
                     ) -> tuple[list[dict], Decision]:
    """The result rows (as the Python engine's values) and the campaign decision of a first run
    (no previous state, an empty ledger), on DuckDB: what `diff --engine duckdb` compares."""
    from .duckdb_engine import iter_query

    run = _campaign_run(rules, con, as_of, tables)
    try:
        decision = run.decide(None, [])
        columns = run.columns[:len(result_columns(rules))]
        rows = [row for batch in iter_query(con, duckdb(_in_key_order(rules, columns)),
                                            columns, run.tz) for row in batch]
        return rows, decision
    finally:
        _drop_tables(con)
