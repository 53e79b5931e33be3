"""Campaigns on the DuckDB engine: conditions in SQL, the state file read as a table.

Every campaign's `when` and `points`, the values its `when` reads (event aggregates,
rankings, calls), the tier's `by` value and `count(orders)` become extra columns of the
compiled query (sql.py: same compiler, same three-valued logic); member fields and the
metrics not in the output are carried along. The previous run's results (state.py) go to
DuckDB as a table and are joined on the member key, so each campaign's transition is a
SQL condition too. Members matching no campaign stay in DuckDB: only the candidates come
back to Python, where campaigns.py decides exactly as for the Python engine (the same
`_match`, delivery rules, templates and ledger transaction) reading the SQL columns. The
SQL match is a filter that never drops a member the Python check would keep; the
decision itself is made once, in campaigns.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlglot import exp

from . import ast
from . import types as t
from .campaigns import Decision, actions_path, decide_actions, state_run
from .check import CheckedRuleSet, Trigger
from .eval import MemberState
from .eval_codegen import is_invariant
from .results import atomic_path, result_columns
from .results_arrow import write_batches
from .snapshot import paused_gc
from .sql import PREFIX, compile_sql
from .state import LedgerEntry, Previous, PreviousState

ROWS = PREFIX + "campaign_rows"
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


@dataclass
class _Candidates:
    """Stands in for Evaluation in campaigns.py: the members that may match a campaign, in key order."""

    as_of: dt.datetime
    states: list[MemberState]
    key: str
    # campaign → positions in `states` whose SQL match is true (a superset of what _match keeps)
    matches: dict[str, list[int]] = field(default_factory=dict)

    def candidates(self, campaign: str) -> list[int]:
        return self.matches.get(campaign, [])

    def state(self, member: object) -> MemberState:
        for state in self.states:
            if str(state.member[self.key]) == str(member):
                return state
        raise KeyError(member)


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

    def earned_index(self) -> str:
        tiers = self.rules.tiers
        by = f"q.{_q(TIER_BY)}"
        float_by = tiers.by.type is not None and tiers.by.type.kind == "float"
        cases = []
        for i, level in reversed(list(enumerate(tiers.levels))):
            low = f"CAST({level.min!r} AS DOUBLE)" if float_by else \
                f"CAST({_s(format(Decimal(level.min), 'f'))} AS DECIMAL(38, 18))"
            cases.append(f"WHEN {by} >= {low} THEN {i}")
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
        # One map for every candidate: campaigns.py only reads it.
        self.params = {name: p.value for name, p in self.rules.params.items()}

    def decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        # Hundreds of thousands of candidates, offers and actions: without the pause, cyclic
        # collections walk every one of them again and again.
        with paused_gc():
            return self._decide(previous, history)

    def _decide(self, previous: Previous | None, history: list[LedgerEntry]) -> Decision:
        from .duckdb_engine import iter_query

        rules, con = self.rules, self.con
        con.register(PREVIOUS, _previous_table(rules, previous))
        match = _Match(rules, self.plan, previous)
        matches = [f"{match.campaign(c)} AS {_q(f'{PREFIX}match_{i}')}" for i, c in enumerate(rules.campaigns.values())]
        key = rules.member.key
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_q(ROWS)} AS SELECT q.*{''.join(', ' + m for m in matches)} "
                    f"FROM ({self.query}) AS q LEFT JOIN {_q(PREVIOUS)} AS p "
                    f"ON CAST(q.{_q(key)} AS VARCHAR) = p.{_q(PREFIX + 'p_member')}").fetchall()
        con.unregister(PREVIOUS)
        open_ = [i for i, c in enumerate(rules.campaigns.values())
                 if c.window is None or c.window.contains(self.as_of, self.tz)]
        where = " OR ".join(_q(f"{PREFIX}match_{i}") for i in open_) or "FALSE"
        names = ", ".join(_q(name) for name, _ in self.columns)
        states = []
        for batch in iter_query(con, f"SELECT {names} FROM {_q(ROWS)} WHERE {where} ORDER BY {_q(key)}",
                                self.columns, self.tz):
            states += [self.state(row) for row in batch]
        candidates = _Candidates(self.as_of, states, key, self.matches(open_, where))
        return decide_actions(rules, _SqlValues(self.plan), candidates, previous, history)  # type: ignore[arg-type]

    def matches(self, open_: list[int], where: str) -> dict[str, list[int]]:
        """Campaign → the candidates' positions (in key order) its SQL match keeps; a NULL
        match stays a candidate, for campaigns.py to decide."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = list(self.rules.campaigns)
        flags = ", ".join(_q(f"{PREFIX}match_{i}") for i in open_)
        if not flags:
            return {}
        table = self.con.sql(f"SELECT {flags} FROM {_q(ROWS)} WHERE {where} "
                             f"ORDER BY {_q(self.rules.member.key)}").to_arrow_table()
        return {names[i]: pc.indices_nonzero(pc.fill_null(table.column(f"{PREFIX}match_{i}"), pa.scalar(True)))
                .to_pylist() for i in open_}

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

    def batches(self, on_batch: Callable[[object], None] | None, keep: bool = True) -> Iterator[object]:
        """Every result row in key order as Arrow record batches (plus `count(orders)`), keeping
        what the state file records; only the columns it records become Python values."""
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

        for batch in self.con.sql(query).to_arrow_reader(100_000):
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


def write_outputs_duckdb(rules: CheckedRuleSet, con, as_of: dt.datetime, tables: dict[str, str], *, results: Path,
                         fmt: str, state: Path | None = None, dry_run: bool = False,
                         on_batch: Callable[[object], None] | None = None
                         ) -> tuple[Decision, int, Path | None]:
    """campaigns.write_outputs on DuckDB: evaluate with the campaign columns, decide, write, record.

    Args:
        con: a DuckDB connection whose views `tables` (schema table → view) hold the snapshot,
            with the session time zone set to the rule set's.
        as_of: the evaluation instant, in the rule set's timezone.
        results: the results file; actions.jsonl goes beside it.
        state: the state file, as for the Python engine (docs/STATE.md).
        on_batch: sees every Arrow record batch of result rows (the summary's counts).

    Returns:
        The decision, the number of result rows written, and the actions file (None without
        campaigns, or on a dry run) — the same files, byte for byte, as the Python engine's.
    """
    tz = ZoneInfo(rules.timezone)
    plan = campaign_columns(rules)
    compiled = compile_sql(rules, "duckdb", as_of=as_of, tables=tables, extra=plan.extra, carry=plan.carry)
    run = _Run(con, rules, as_of, tz, compiled.query_sql(), compiled.columns, plan)
    columns = result_columns(rules)
    try:
        if dry_run:
            with state_run(rules, as_of, state, run.decide, lambda: run.kept, lambda: len(run.kept),
                           dry_run=True) as decision:
                for _ in run.batches(on_batch):
                    pass
            return decision, 0, None
        actions_file = actions_path(results) if rules.campaigns else None
        with contextlib.ExitStack() as outputs:
            # Entered first, left last: the renames happen after the state file has committed.
            results_temp = outputs.enter_context(atomic_path(results))
            actions_temp = outputs.enter_context(atomic_path(actions_file)) if actions_file else None
            decision = outputs.enter_context(state_run(rules, as_of, state, run.decide, lambda: run.kept,
                                                       lambda: len(run.kept)))
            # The rows stay Arrow batches from the query to the file, as without campaigns.
            written = write_batches(run.batches(None, keep=state is not None), columns, results_temp, fmt, tz,
                                    dict(run.columns), on_batch=on_batch)
            if actions_temp is not None:
                with open(actions_temp, "w", encoding="utf-8", newline="\n") as out, paused_gc():
                    out.write(decision.jsonl(tz))
        return decision, written, actions_file
    finally:
        with contextlib.suppress(Exception):
            con.execute(f"DROP TABLE IF EXISTS {_q(ROWS)}").fetchall()
