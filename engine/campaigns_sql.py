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
from .state import LedgerEntry, Previous, PreviousState, instant_text
from .templates import render

ROWS = PREFIX + "campaign_rows"
FLAGS = PREFIX + "campaign_flags"  # per member: place in key order, campaign matches, trigger values
POS = PREFIX + "pos"  # the member's place in key order
RID = PREFIX + "rid"  # the member's row in ROWS
PREVIOUS = PREFIX + "previous"
ORDERS = PREFIX + "orders"
TIER_BY = PREFIX + "tier_by_value"


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _s(text: str) -> str:
    return exp.Literal.string(text).sql("duckdb")


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
    names = [f"{PREFIX}p_member", f"{PREFIX}p_tier"]
    for i, name in enumerate(rules.classes):
        arrays.append(pa.array([s.classes.get(name) for s in states], pa.string()))
        names.append(f"{PREFIX}p_class_{i}")
    for i, name in enumerate(rules.segments):
        arrays.append(pa.array([name in s.segments for s in states], pa.bool_()))
        names.append(f"{PREFIX}p_segment_{i}")
    arrays.append(pa.array([s.orders for s in states], pa.int64()))
    names.append(f"{PREFIX}p_orders")
    return pa.table(arrays, names=names)


# -- each campaign's match as SQL (a filter: never narrower than campaigns._match) --------------------

class _Match:
    def __init__(self, rules: CheckedRuleSet, plan: CampaignColumns, previous: Previous | None):
        self.rules = rules
        self.plan = plan
        self.previous = previous
        # previous_of(): None on a first run; a member missing from the state file is new (no state before).
        if previous is None:
            self.known = "FALSE"
        elif previous.missing_are_new:
            self.known = "TRUE"
        else:
            self.known = f"(p.{_q(PREFIX + 'p_member')} IS NOT NULL)"

    def tier_index(self, value: str) -> str:
        names = self.rules.tiers.names() if self.rules.tiers else ()
        cases = " ".join(f"WHEN {_s(name)} THEN {i}" for i, name in enumerate(names))
        return f"(CASE {value} {cases} END)" if names else "NULL"

    def campaign(self, campaign) -> str:
        parts = []
        if campaign.trigger is not None:
            parts.append(self.trigger(campaign.trigger))
        if campaign.when is not None:
            parts.append(f"COALESCE(q.{_q(self.plan.by_node[campaign.when])}, FALSE)")
        if campaign.points is not None:
            parts.append(f"COALESCE(q.{_q(self.plan.by_node[campaign.points])} > 0, FALSE)")
        return "(" + " AND ".join(parts or ["TRUE"]) + ")"

    def trigger(self, trigger: Trigger) -> str:
        rules, p, known = self.rules, "p.", self.known
        if trigger.kind in ("tier_up", "tier_down", "tier_at_risk"):
            if rules.tiers is None:
                return "FALSE"
            now = self.tier_index('q."tier"')
            if trigger.kind == "tier_at_risk":
                return f"COALESCE({now} > {self.earned_index()}, FALSE)"
            before_tier = f"{p}{_q(PREFIX + 'p_tier')}"
            before = self.tier_index(before_tier)
            current = rules.tiers.current
            if current is not None:
                held = self.tier_index(f"q.{_q(self.plan.member_fields[current])}")
                before = f"COALESCE({before}, {held})"
            return f"COALESCE({now} {'>' if trigger.kind == 'tier_up' else '<'} {before}, FALSE)"
        if trigger.kind in ("entered", "left"):
            names = list(rules.segments)
            if trigger.subject not in names:
                return "FALSE"
            before = f"({known} AND COALESCE({p}{_q(f'{PREFIX}p_segment_{names.index(trigger.subject)}')}, FALSE))"
            now = f"COALESCE(list_contains(q.\"segments\", {_s(trigger.subject)}), FALSE)"
            fired = f"({now} AND NOT {before})" if trigger.kind == "entered" else f"({before} AND NOT {now})"
            return f"({known} AND {fired})"
        if trigger.kind == "class_change":
            names = list(rules.classes)
            if trigger.subject not in names:
                return "FALSE"
            before = f"{p}{_q(f'{PREFIX}p_class_{names.index(trigger.subject)}')}"
            now = f"q.{_q(trigger.subject)}"
            parts = [known, f"({before} IS DISTINCT FROM {now})"]
            if trigger.from_value is not None:
                parts.append(f"COALESCE({before} = {_s(trigger.from_value)}, FALSE)")
            if trigger.to_value is not None:
                parts.append(f"COALESCE({now} = {_s(trigger.to_value)}, FALSE)")
            return "(" + " AND ".join(parts) + ")"
        if trigger.kind == "first_order":
            if rules.order_count is None:
                return "FALSE"
            return (f"({known} AND COALESCE({p}{_q(PREFIX + 'p_orders')} = 0, FALSE) "
                    f"AND COALESCE(q.{_q(ORDERS)}, 0) > 0)")
        return "FALSE"

    def trigger_values(self, trigger: Trigger) -> list[ValueColumn]:
        """campaigns._transition's values for a member whose trigger fired, as SQL."""
        rules, p = self.rules, "p."
        if trigger.kind in ("tier_up", "tier_down", "tier_at_risk"):
            if rules.tiers is None:
                return []
            names = ", ".join(_s(name) for name in rules.tiers.names())
            tier = ValueColumn("tier", 'q."tier"', t.STRING)
            if trigger.kind == "tier_at_risk":
                earned = " ".join(f"WHEN {i} THEN {_s(level.name)}" for i, level in enumerate(rules.tiers.levels))
                by_type = rules.tiers.by.type or t.DECIMAL
                by = f"q.{_q(TIER_BY)}"
                gaps = " ".join(f"WHEN {_s(level.name)} THEN {self.tier_min(level.min)} - {by}"
                                for level in rules.tiers.levels)
                gap = f"(CASE q.\"tier\" {gaps} END)"
                # Python's max(gap, 0) is the int 0 for a negative gap.
                return [tier, ValueColumn("earned_tier", f"(CASE {self.earned_index()} {earned} END)", t.STRING),
                        ValueColumn("keep_gap", f"(CASE WHEN {gap} < 0 THEN 0 ELSE {gap} END)", by_type,
                                    zero_when=f"({gap} < 0)" if by_type.kind == "float" else None)]
            before = f"{p}{_q(PREFIX + 'p_tier')}"
            previous = f"WHEN {before} IN ({names}) THEN {before}"
            if rules.tiers.current is not None:
                held = f"q.{_q(self.plan.member_fields[rules.tiers.current])}"
                previous += f" WHEN {held} IN ({names}) THEN {held}"
            return [tier, ValueColumn("previous_tier", f"(CASE {previous} END)", t.STRING)]
        if trigger.kind in ("entered", "left"):
            names = list(rules.segments)
            if trigger.subject not in names:
                return []
            before = f"COALESCE({p}{_q(f'{PREFIX}p_segment_{names.index(trigger.subject)}')}, FALSE)"
            now = f"COALESCE(list_contains(q.\"segments\", {_s(trigger.subject)}), FALSE)"
            return [ValueColumn("segment", _s(trigger.subject), t.STRING), ValueColumn("was_in", before, t.BOOL),
                    ValueColumn("is_in", now, t.BOOL)]
        if trigger.kind == "class_change":
            names = list(rules.classes)
            if trigger.subject not in names:
                return []
            before = f"{p}{_q(f'{PREFIX}p_class_{names.index(trigger.subject)}')}"
            return [ValueColumn(trigger.subject, f"q.{_q(trigger.subject)}", t.STRING),
                    ValueColumn(f"previous_{trigger.subject}", before, t.STRING)]
        if trigger.kind == "first_order" and rules.order_count is not None:
            return [ValueColumn("orders", f"q.{_q(ORDERS)}", rules.order_count.type or t.INT),
                    ValueColumn("previous_orders", f"{p}{_q(PREFIX + 'p_orders')}", t.INT)]
        return []

    def tier_min(self, value) -> str:
        tiers = self.rules.tiers
        if tiers.by.type is not None and tiers.by.type.kind == "float":
            return f"CAST({value!r} AS DOUBLE)"
        if tiers.by.type is not None and tiers.by.type.kind == "int" and isinstance(value, int):
            return f"CAST({value} AS BIGINT)"
        return f"CAST({_s(format(Decimal(value), 'f'))} AS DECIMAL(38, 18))"

    def earned_index(self) -> str:
        tiers = self.rules.tiers
        by = f"q.{_q(TIER_BY)}"
        cases = [f"WHEN {by} >= {self.tier_min(level.min)} THEN {i}" for i, level in reversed(list(enumerate(tiers.levels)))]
        return f"(CASE {' '.join(cases)} ELSE 0 END)"


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class _Run:
    con: object
    rules: CheckedRuleSet
    as_of: dt.datetime
    tz: ZoneInfo
    query: str
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
            self.con.execute(f"CREATE OR REPLACE TABLE {_q(ROWS)} AS {self.query}").fetchall()
            self.materialized = True

    def decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        with paused_gc():
            return self._decide(previous, history)

    def _decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        rules, con, tz = self.rules, self.con, self.tz
        campaigns = list(rules.campaigns.values())
        match = _Match(rules, self.plan, previous)
        seen = {i: match.trigger_values(c.trigger) for i, c in enumerate(campaigns) if c.trigger is not None}
        extra = [f"{match.campaign(c)} AS {_q(f'{PREFIX}match_{i}')}" for i, c in enumerate(campaigns)]
        extra += [f"{value.sql} AS {_q(f'{PREFIX}seen_{i}_{j}')}" for i, values in seen.items()
                  for j, value in enumerate(values)]
        extra += [f"{value.zero_when} AS {_q(f'{PREFIX}zero_{i}_{j}')}" for i, values in seen.items()
                  for j, value in enumerate(values) if value.zero_when is not None]
        extra += [f"{self.consent(c)} AS {_q(f'{PREFIX}consent_{i}')}" for i, c in enumerate(campaigns)]
        key = _q(rules.member.key)
        # The narrow FLAGS table holds what the decision adds to the stored rows.
        self.materialize()
        con.register(PREVIOUS, _previous_table(rules, previous))
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_q(FLAGS)} AS SELECT q.rowid AS {_q(RID)}, "
                        f"row_number() OVER (ORDER BY q.{key}) - 1 AS {_q(POS)}, "
                        f"CAST(q.{key} AS VARCHAR) AS {_q(PREFIX + 'key_text')}{''.join(', ' + e for e in extra)} "
                        f"FROM {_q(ROWS)} AS q LEFT JOIN {_q(PREVIOUS)} AS p "
                        f"ON CAST(q.{key} AS VARCHAR) = p.{_q(PREFIX + 'p_member')}").fetchall()
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
        for index, rule, count in con.execute(f"SELECT campaign, coalesce(rule, ''), count(*) FROM {JUDGED} "
                                              "GROUP BY ALL").fetchall():
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
        selects = [f"SELECT CAST({i} AS INTEGER) AS campaign, {_q(POS)} AS pos, {_q(PREFIX + 'key_text')} AS member, "
                   f"{_q(f'{PREFIX}consent_{i}')} AS consent FROM {_q(FLAGS)} WHERE {_q(f'{PREFIX}match_{i}')}"
                   for i in open_]
        offers = _q(PREFIX + "offers")
        empty = "SELECT CAST(NULL AS INTEGER) AS campaign, CAST(NULL AS BIGINT) AS pos, " \
                "CAST(NULL AS VARCHAR) AS member, CAST(NULL AS BOOLEAN) AS consent WHERE FALSE"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {offers} AS {' UNION ALL '.join(selects) or empty}").fetchall()
        try:
            return judge_offers(self.con, offers, campaigns, self.rules.delivery, list(_sent(history)),
                                self.as_of, self.tz)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {offers}").fetchall()

    def consent(self, campaign: CheckedCampaign) -> str:
        """SQL: every field the campaign `requires` is true."""
        return " AND ".join(f"COALESCE(q.{_q(self.member_column(f))} = TRUE, FALSE)"
                            for f in campaign.requires) or "TRUE"

    def member_column(self, name: str) -> str:
        return self.rules.member.key if name == self.rules.member.key else self.plan.member_fields[name]

    # -- one campaign's actions ---------------------------------------------------------------------

    def value_columns(self, campaign: CheckedCampaign, trigger_values: list[ValueColumn], index: int
                      ) -> list[ValueColumn]:
        """What the Python engine puts in the action's `values`, as its dict fills them: the
        trigger's values, then the values the condition read, then the points; a name set
        again keeps its first place and takes the later value."""
        columns: dict[str, ValueColumn] = {}
        for j, value in enumerate(trigger_values):
            zero = _q(f"{PREFIX}zero_{index}_{j}") if value.zero_when is not None else None
            columns[value.name] = ValueColumn(value.name, _q(f"{PREFIX}seen_{index}_{j}"), value.type, zero)
        if campaign.when is not None:
            for name, sql, type_ in self.condition_reads(campaign.when):
                columns[name] = ValueColumn(name, sql, type_)
        if campaign.points is not None:
            columns["points"] = ValueColumn("points", _q(self.plan.by_node[campaign.points]),
                                            campaign.points.type or t.INT)
        return list(columns.values())

    def condition_reads(self, when: ast.Expr) -> Iterator[tuple[str, str, t.Type]]:
        """campaigns._condition_reads as SQL over the campaign rows: (name, column, type)."""
        rules, plan = self.rules, self.plan
        current = rules.tiers.current if rules.tiers else None
        for node in ast.walk(when):
            if isinstance(node, ast.Name) and node.ref not in ("param", "as_of", "event", None):
                name, type_ = node.name, node.type or t.STRING
                if node.ref == "member":
                    yield name, _q(self.member_column(name)), type_
                elif node.ref == "current_tier":
                    yield name, (_q(self.member_column(current)) if current else "NULL"), type_
                elif node.ref == "segment" or name in rules.segments:
                    yield name, f"COALESCE(list_contains({_q('segments')}, {_s(name)}), FALSE)", t.BOOL
                elif name in plan.metrics:
                    yield name, _q(plan.metrics[name]), type_
                elif name in self.types:
                    yield name, _q(name), self.types[name]
                else:
                    yield name, "NULL", type_
            elif isinstance(node, (ast.EventAggregate, ast.Ranking, ast.Call)) and not is_invariant(node):
                yield ast.to_source(node), _q(plan.by_node[node]), node.type or t.STRING

    def _block(self, index: int, campaign: CheckedCampaign, trigger_values: list[ValueColumn],
               send_at: dt.datetime, previous: Previous | None) -> ActionBlock:
        rules, tz = self.rules, self.tz
        key = rules.member.key
        values = self.value_columns(campaign, trigger_values, index)
        parts = simple_parts(campaign.template) if campaign.template is not None else None
        printed_columns = self.printed_columns(parts, campaign) if parts is not None else None
        select = [f"f.{_q(POS)} AS pos", f"r.{_q(key)} AS member",
                  f"sha256(concat({_s(campaign.name)}, chr(31), CAST(r.{_q(key)} AS VARCHAR), chr(31), "
                  f"{_s(instant_text(self.as_of))})) AS digest"]
        select += [f"{value.sql} AS {_q(f'v{j}')}" for j, value in enumerate(values)]
        select += [f"{value.zero_when} AS {_q(f'z{j}')}" for j, value in enumerate(values) if value.zero_when]
        select += [f"{sql} AS {_q(f'm{j}')}" for j, (sql, type_) in enumerate(printed_columns or [])
                   if type_ is not None]  # a constant is printed text already, not SQL
        table = self.con.sql(f"SELECT {', '.join(select)} FROM {JUDGED} AS j "
                             f"JOIN {_q(FLAGS)} AS f ON f.{_q(POS)} = j.pos JOIN {_q(ROWS)} AS r ON r.rowid = f.{_q(RID)} "
                             f"WHERE j.campaign = {index} AND j.rule IS NULL ORDER BY j.pos").to_arrow_table()
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

    def printed_columns(self, parts, campaign: CheckedCampaign) -> list[tuple[str, t.Type]] | None:
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

    def template_column(self, part: Value, campaign: CheckedCampaign) -> tuple[str, t.Type | None] | None:
        """campaigns._template_context's value for a printed name, as (SQL, type); a constant
        as (its text rendered by Jinja2, None); None where only the Python context will do."""
        rules, plan = self.rules, self.plan
        name = part.name
        if name == "member":
            if part.attr is None or part.attr not in rules.member.fields:
                return None
            return _q(self.member_column(part.attr)), rules.member.fields[part.attr]
        if part.attr is not None:
            return None
        columns = {"tier": "tier", "next_tier": "next_tier", "tier_gap": "tier_gap", "gap": "tier_gap"}
        if name in columns:
            column = columns[name]
            return (_q(column), self.types[column]) if column in self.types else None
        if name == "current_tier":
            current = rules.tiers.current if rules.tiers else None
            return (_q(self.member_column(current)), rules.member.fields[current]) if current else ("NULL", t.STRING)
        if name in ("campaign", "as_of"):
            return render("{{ value }}", {"value": campaign.name if name == "campaign" else self.as_of}), None
        if name in ("earned_tier", "keep_gap", "classes", "segments", "previous"):
            return None
        if name in rules.segments:
            return f"COALESCE(list_contains({_q('segments')}, {_s(name)}), FALSE)", t.BOOL
        if name in rules.classes or name in rules.metrics:
            column = plan.metrics.get(name, name)
            return (_q(column), self.types[column]) if column in self.types else None
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
                    text = printed(table.column(f"m{j}").combine_chunks(), type_)
                    if text is None:
                        return self.rendered(campaign, table, previous)
                    pieces.append(text)
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
        con.register(PREFIX + "wanted", pa.table({"pos": pa.array(positions, pa.int64())}))
        try:
            rows = [row for batch in iter_query(
                con, f"SELECT {', '.join('r.' + _q(name) for name, _ in self.columns)} FROM {_q(ROWS)} AS r "
                     f"JOIN {_q(FLAGS)} AS f ON r.rowid = f.{_q(RID)} "
                     f"WHERE f.{_q(POS)} IN (SELECT pos FROM {PREFIX}wanted) ORDER BY f.{_q(POS)}",
                self.columns, self.tz) for row in batch]
        finally:
            con.unregister(PREFIX + "wanted")
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
        sums = self.con.execute(f"SELECT {', '.join(f'sum({_q(ROWS_PREFIX + table)})' for table in tables)} "
                                f"FROM {_q(ROWS)}").fetchall()[0]
        return {table: int(total or 0) for table, total in zip(tables, sums)}

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
        names = ", ".join(_q(name) for name, _ in wanted)
        query = f"SELECT {names} FROM {_q(ROWS)} ORDER BY {_q(rules.member.key)}"
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
    for table in (ROWS, FLAGS, JUDGED):
        con.execute(f"DROP TABLE IF EXISTS {_q(table)}").fetchall()


def _unordered(compiled) -> str:
    """The query without its ORDER BY: the rows are stored, and sorted when they are read."""
    query = compiled.query.copy()
    query.set("order", None)
    return query.sql(dialect=compiled.dialect)


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
        names = ", ".join(_q(name) for name, _ in columns)
        rows = [row for batch in iter_query(con, f"SELECT {names} FROM {_q(ROWS)} ORDER BY {_q(rules.member.key)}",
                                            columns, run.tz) for row in batch]
        return rows, decision
    finally:
        _drop_tables(con)
