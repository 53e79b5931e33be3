"""SQL backend: a CheckedRuleSet → one SQL query, built as sqlglot trees, printed per dialect.

The query is one readable script of CTEs (docs/SEMANTICS.md is what it computes):

1. `<table>_per_member`: one GROUP BY member key per event table, one FILTERed aggregate
   per event aggregate of the rule set (`within d` is `time > as_of - d`, rows after
   `as_of` never count).
2. `members`: the member table LEFT JOINed to them (count and sum of nothing are 0).
3. `stepN_…`: the metrics, tier, classes and segments, each in the first step after
   everything it reads. Population aggregates are scalar subqueries over the step
   before; ranks are window functions.
4. The result rows, in the column order of docs/SEMANTICS.md, sorted by member key.

Decimals are DECIMAL(38, 18); quotients and remainders of decimals are computed on
unscaled integers so they are exact and truncated like the Python engine's
(`sql_dialects.py`). Durations are BIGINT microseconds. Timestamps are TIMESTAMPTZ and
dates are read in the session time zone, which the script sets to the rule set's.
Campaigns add columns on request (`extra`, `carry`): their conditions, points and the values
they read; campaigns_sql.py joins the state file's previous results to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from sqlglot import exp

from . import ast
from . import types as t
from .check import CheckedRuleSet
from .sql_dialects import ONE_UNIT, SCALE, Rules, cast, num, paren, parenthesize, rules_for

US_PER_DAY = 86_400_000_000
PREFIX = "_mr_"  # internal columns; never a name from the rule set's output

_ITEM_REFS = {"metric": "metric", "tier": "tier", "next_tier": "tier", "tier_gap": "tier", "class": "class",
              "segment": "segment"}
_COMPARE = {"==": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}


@dataclass
class CompiledSql:
    """The compiled rule set: session set-up, the query, and the result columns with their types."""

    dialect: str
    setup: list[exp.Expression]
    query: exp.Select
    columns: list[tuple[str, t.Type]]

    def sql(self, pretty: bool = True) -> str:
        """The whole script: set-up statements, then the query, each ending in `;`."""
        parts = [node.sql(dialect=self.dialect, pretty=pretty) for node in self.setup]
        parts.append(self.query.sql(dialect=self.dialect, pretty=pretty))
        return ";\n\n".join(parts) + ";\n"

    def query_sql(self, pretty: bool = False) -> str:
        return self.query.sql(dialect=self.dialect, pretty=pretty)


def compile_sql(rules: CheckedRuleSet, dialect: str = "duckdb", as_of: dt.datetime | None = None,
                tables: Mapping[str, str] | None = None, extra: Mapping[str, ast.Expr] | None = None,
                carry: Sequence[tuple[str, str, t.Type]] = ()) -> CompiledSql:
    """Compile a checked rule set into SQL for one dialect.

    Args:
        rules: the checked rule set (campaigns are left out).
        dialect: duckdb, spark, bigquery, snowflake, postgres or trino.
        as_of: the evaluation instant; None reads CURRENT_TIMESTAMP when the query runs.
        tables: schema table name → relation name in the warehouse (e.g. "crm.members");
            tables not named read from a relation with the table's own name.
        extra: more columns after the result columns (campaign conditions, points, the values
            they read): column name → any typed expression of the rule set, of its own type.
        carry: more columns passed through from the last step: (column name, the step's
            column, type); member fields (`tiers.current` is the step's `current_tier`) and
            metrics not marked `output`.

    Returns:
        A CompiledSql; `.sql()` is the script.

    >>> from pathlib import Path
    >>> from .check import check_rule_set
    >>> rules = check_rule_set(Path("tests/fixtures/spec_example")).rule_set  # doctest: +SKIP
    >>> "WITH" in compile_sql(rules, "spark").sql()  # doctest: +SKIP
    True
    """
    return _Compiler(rules, rules_for(dialect), as_of, dict(tables or {}), dict(extra or {}), list(carry)).compile()


def sql_type(type_: t.Type, rules: Rules) -> exp.DataType:
    kind = type_.kind
    if kind == "list":
        item = sql_type(type_.item or t.STRING, rules)
        return exp.DataType(this=exp.DataType.Type.ARRAY, expressions=[item], nested=True)
    if kind == "decimal":
        return exp.DataType.build(rules.decimal_type, dialect=rules.type_dialect)
    text = {"bool": "BOOLEAN", "int": "BIGINT", "float": "DOUBLE", "string": "VARCHAR", "date": "DATE",
            "timestamp": "TIMESTAMPTZ", "duration": "BIGINT", "null": "VARCHAR", "error": "VARCHAR"}[kind]
    return exp.DataType.build(text, dialect="duckdb")


@dataclass
class _EventAggregate:
    node: ast.EventAggregate
    column: str
    level: int  # -1: reads event fields only; k: also reads member-level names of step k


@dataclass
class _Scope:
    """How names are written: unqualified (a step), or `e.` / `m.` inside an event aggregate."""

    event_table: str | None = None
    member_alias: str | None = None
    source: str = "members"  # the relation population aggregates read


@dataclass
class _Step:
    name: str
    source: str
    columns: list[exp.Expression] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


class _Compiler:
    def __init__(self, rules: CheckedRuleSet, dialect: Rules, as_of: dt.datetime | None, tables: dict[str, str],
                 extra: dict[str, ast.Expr] | None = None, carry: list[tuple[str, str, t.Type]] | None = None):
        self.rules = rules
        self.extra = extra or {}
        self.carry = carry or []
        self.r = dialect
        self.tz = ZoneInfo(rules.timezone)
        self.as_of_value = None if as_of is None else \
            (as_of.replace(tzinfo=self.tz) if as_of.tzinfo is None else as_of.astimezone(self.tz))
        self.tables = tables
        self.scope = _Scope()
        self.event_aggregates: dict[ast.EventAggregate, _EventAggregate] = {}
        self.same_as: dict[str, str] = {}  # aggregate column → the identical one its CTE computes
        self.levels: dict[tuple[str, str], int] = {}
        self.ctes: list[exp.CTE] = []

    # -- entry -----------------------------------------------------------------------------

    def compile(self) -> CompiledSql:
        self.assign_levels()
        self.collect_event_aggregates()
        source = self.members_cte()
        by_level: dict[int, list[tuple[str, str]]] = {}
        for item in self.rules.order:
            by_level.setdefault(self.levels[item], []).append(item)
        tier_helper = self.levels[("tier", "tier")] - 1 if self.rules.tiers is not None else None
        top = max(self.levels.values(), default=0)
        for level in range(1, top + 1):
            source = self.join_late_aggregates(level - 1, source)
            step = _Step("", source)
            self.scope = _Scope(source=source)
            if level == tier_helper:
                step.columns += self.tier_helper_columns()
                step.kinds.append("tier_index")
            for kind, name in by_level.get(level, ()):
                step.columns += self.item_columns(kind, name)
                step.kinds.append(kind)
            if not step.columns:
                continue
            kinds = list(dict.fromkeys(step.kinds))
            step.name = f"step{level}_" + "_".join({"metric": "metrics", "class": "classes",
                                                    "segment": "segments"}.get(k, k) for k in kinds)
            select = self.step_select(step)
            self.ctes.append(exp.CTE(this=select, alias=exp.TableAlias(this=exp.to_identifier(step.name))))
            source = step.name
        if self.extra:
            # Aggregates whose `where` reads the last step's values (only extra columns have them).
            source = self.join_late_aggregates(top, source)
        query, columns = self.final_select(source)
        query.set("with_", exp.With(expressions=self.ctes))
        parenthesize(query)
        setup = [self.r.set_time_zone(self.rules.timezone)]
        return CompiledSql(self.r.name, setup, query, columns)

    def step_select(self, step: _Step) -> exp.Select:
        """`SELECT *, <the step's columns> FROM <the step before>`; window functions (rankings)
        are computed in a narrow select of the member key and the windows alone, joined back on
        the key: a window sorts every column of its input, and the step before is wide."""
        windows: dict[str, tuple[str, exp.Window]] = {}
        for column in step.columns:
            for window in list(column.find_all(exp.Window)):
                if window.find_ancestor(exp.Subquery) is not None:
                    continue  # a population aggregate's own narrow select
                text = window.sql()
                if text not in windows:
                    windows[text] = (f"{PREFIX}w{len(windows) + 1}", window.copy())
                window.replace(exp.column(windows[text][0], table=PREFIX + "w", quoted=True))
        if not windows:
            return exp.select(exp.Star(), *step.columns).from_(exp.to_table(step.source))
        key = self.rules.member.key
        narrow = exp.select(exp.alias_(exp.column(key, quoted=True), PREFIX + "w_key", quoted=True),
                            *(exp.alias_(window, name, quoted=True) for name, window in windows.values()))
        narrow = narrow.from_(exp.to_table(step.source))
        on = exp.EQ(this=exp.column(PREFIX + "w_key", table=PREFIX + "w", quoted=True),
                    expression=exp.column(key, table="s", quoted=True))
        return exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("s")), *step.columns).from_(
            exp.alias_(exp.to_table(step.source), "s", table=True)).join(
            exp.alias_(exp.Subquery(this=narrow), PREFIX + "w", table=True), on=on)

    # -- levels --------------------------------------------------------------------------------

    def item_exprs(self, kind: str, name: str) -> list[ast.Expr]:
        rules = self.rules
        if kind == "metric":
            return [rules.metrics[name].expr]
        if kind == "class":
            return [case.when for case in rules.classes[name].cases if case.when is not None]
        if kind == "segment":
            return [rules.segments[name]]
        tiers = rules.tiers
        return [e for e in (tiers.by, tiers.downgrade, tiers.forecast_earned) if e is not None]

    def dependencies(self, exprs: list[ast.Expr]) -> set[tuple[str, str]]:
        deps = set()
        for expr in exprs:
            for node in ast.walk(expr):
                if isinstance(node, ast.Name) and node.ref in _ITEM_REFS:
                    kind = _ITEM_REFS[node.ref]
                    deps.add((kind, "tier" if kind == "tier" else node.name))
        return deps

    def assign_levels(self) -> None:
        for item in self.rules.order:
            deps = self.dependencies(self.item_exprs(*item))
            level = 1 + max((self.levels[d] for d in deps if d in self.levels), default=0)
            # The tier takes two steps: its index first, then the columns read from it.
            self.levels[item] = level + 1 if item[0] == "tier" else level

    def level_of(self, expr: ast.Expr) -> int:
        """The step whose columns `expr` reads: 0 for members, -1 for none (event fields only)."""
        level = -1
        for node in ast.walk(expr):
            if isinstance(node, ast.Name):
                if node.ref in _ITEM_REFS:
                    kind = _ITEM_REFS[node.ref]
                    level = max(level, self.levels[(kind, "tier" if kind == "tier" else node.name)])
                elif node.ref in ("member", "current_tier"):
                    level = max(level, 0)
        return level

    # -- event aggregates ----------------------------------------------------------------------

    def all_exprs(self) -> list[ast.Expr]:
        exprs: list[ast.Expr] = []
        for item in self.rules.order:
            exprs += self.item_exprs(*item)
        return exprs + list(self.extra.values())

    def collect_event_aggregates(self) -> None:
        taken = {self.rules.member.key} | set(self.rules.member.fields)
        for expr in self.all_exprs():
            for node in ast.walk(expr):
                if isinstance(node, ast.EventAggregate) and node not in self.event_aggregates:
                    clauses = [c for c in (node.within, node.where) if c is not None]
                    level = max((self.level_of(c) for c in clauses), default=-1)
                    column = f"{PREFIX}{node.table}_{node.func}_{len(self.event_aggregates) + 1}"
                    while column in taken:
                        column += "_"
                    taken.add(column)
                    self.event_aggregates[node] = _EventAggregate(node, column, level)

    def relation(self, table: str) -> exp.Table:
        return exp.to_table(self.tables.get(table, table), dialect=self.r.name) if table in self.tables \
            else exp.Table(this=exp.to_identifier(table, quoted=True))

    def as_of(self) -> exp.Expression:
        if self.as_of_value is None:
            return exp.CurrentTimestamp()
        return cast(exp.Literal.string(self.as_of_value.isoformat()), "TIMESTAMPTZ")

    def event_time(self, table: str) -> tuple[exp.Expression, t.Type]:
        spec = self.rules.tables[table]
        return exp.column(spec.time, table="e", quoted=True), spec.fields.get(spec.time, t.TIMESTAMP)

    def aggregate_cte(self, table: str, aggregates: list[_EventAggregate], member_source: str | None,
                      name: str) -> exp.CTE:
        spec = self.rules.tables[table]
        key = exp.column(spec.key, table="e", quoted=True)
        time, time_type = self.event_time(table)
        limit = self.as_of() if time_type.kind != "date" else cast(self.as_of(), "DATE")
        self.scope = _Scope(event_table=table, member_alias="m" if member_source else None)
        columns = [exp.alias_(key, PREFIX + "key", quoted=True)]
        computed: dict[exp.Expression, str] = {}  # aggregate SQL → the column computing it
        for aggregate in aggregates:
            value = self.event_aggregate_sql(aggregate.node)
            if value in computed:  # the same aggregate written twice (`30d` and a 30-day param): once
                self.same_as[aggregate.column] = computed[value]
                continue
            computed[value] = aggregate.column
            columns.append(exp.alias_(value, aggregate.column, quoted=True))
        select = exp.select(*columns).from_(exp.alias_(self.relation(table), "e", table=True))
        if member_source is not None:
            member_key = exp.column(self.rules.member.key, table="m", quoted=True)
            select = select.join(exp.alias_(exp.to_table(member_source), "m", table=True),
                                 on=exp.EQ(this=key.copy(), expression=member_key), join_type="INNER")
        select = select.where(exp.LTE(this=time, expression=limit)).group_by(key.copy())
        self.scope = _Scope()
        return exp.CTE(this=select, alias=exp.TableAlias(this=exp.to_identifier(name)))

    def joined(self, source: str, by_table: dict[str, list[_EventAggregate]], names: dict[str, str],
               name: str, member_fields: bool) -> exp.CTE:
        key = self.rules.member.key
        if member_fields:
            columns: list[exp.Expression] = []
            current = self.rules.tiers.current if self.rules.tiers else None
            for column in [key] + [f for f in self.rules.member.fields if f != key]:
                alias = "current_tier" if column == current else column
                columns.append(exp.alias_(exp.column(column, table="m", quoted=True), alias, quoted=True))
        else:
            columns = [exp.Column(this=exp.Star(), table=exp.to_identifier("m"))]
        select = exp.select(*columns)
        select = select.from_(exp.alias_(exp.to_table(source) if not member_fields else self.relation(source),
                                         "m", table=True))
        for table, aggregates in by_table.items():
            alias = names[table]
            for aggregate in aggregates:
                value = exp.column(self.same_as.get(aggregate.column, aggregate.column), table=alias, quoted=True)
                if aggregate.node.func in ("count", "sum"):
                    value = exp.Coalesce(this=value, expressions=[self.zero(aggregate.node.type)])
                select = select.select(exp.alias_(value, aggregate.column, quoted=True))
            on = exp.EQ(this=exp.column(PREFIX + "key", table=alias, quoted=True),
                        expression=exp.column(key, table="m", quoted=True))
            select = select.join(exp.alias_(exp.to_table(alias), alias, table=True), on=on, join_type="LEFT")
        return exp.CTE(this=select, alias=exp.TableAlias(this=exp.to_identifier(name)))

    def zero(self, type_: t.Type | None) -> exp.Expression:
        kind = type_.kind if type_ else "int"
        if kind == "decimal":
            return cast(num(0), sql_type(t.DECIMAL, self.r))
        if kind == "float":
            return cast(num(0), "DOUBLE")
        return cast(num(0), "BIGINT")

    def group_by_table(self, level: int) -> dict[str, list[_EventAggregate]]:
        grouped: dict[str, list[_EventAggregate]] = {}
        for aggregate in self.event_aggregates.values():
            if aggregate.level == level:
                grouped.setdefault(aggregate.node.table, []).append(aggregate)
        return grouped

    def members_cte(self) -> str:
        grouped = self.group_by_table(-1)
        names = {}
        for table, aggregates in grouped.items():
            names[table] = f"{table}_per_member"
            self.ctes.append(self.aggregate_cte(table, aggregates, None, names[table]))
        self.ctes.append(self.joined("member", grouped, names, "members", member_fields=True))
        return "members"

    def join_late_aggregates(self, level: int, source: str) -> str:
        """Event aggregates whose `where` reads member values of step `level` join after it."""
        grouped = self.group_by_table(level)
        if not grouped or level < 0:
            return source
        names = {}
        for table, aggregates in grouped.items():
            names[table] = f"{table}_per_member_{source}"
            self.ctes.append(self.aggregate_cte(table, aggregates, source, names[table]))
        name = f"{source}_with_" + "_".join(grouped)
        self.ctes.append(self.joined(source, grouped, names, name, member_fields=False))
        return name

    def event_aggregate_sql(self, node: ast.EventAggregate) -> exp.Expression:
        conditions = []
        time, time_type = self.event_time(node.table)
        if node.within is not None:
            start = self.r.add_us(self.as_of(), exp.Neg(this=paren(self.sql(node.within))))
            conditions.append(exp.GT(this=self.as_timestamp(time, time_type), expression=start))
        if node.where is not None:
            conditions.append(paren(self.sql(node.where)))
        value = None
        if node.field is not None:
            value = exp.column(node.field, table="e", quoted=True)
            field_type = self.rules.tables[node.table].fields[node.field]
        func = node.func
        if func in ("first", "last"):
            conditions.append(exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        condition = exp.and_(*conditions) if conditions else None

        def filtered(aggregate: exp.Expression) -> exp.Expression:
            return exp.Filter(this=aggregate, expression=exp.Where(this=condition.copy())) if condition else aggregate

        if func == "count":
            return cast(filtered(exp.Count(this=exp.Star() if value is None else value)), "BIGINT")
        if func == "sum":
            return self.sum_sql(filtered, value, field_type)
        if func == "avg":
            total = self.sum_sql(filtered, value, field_type)
            count = filtered(exp.Count(this=value.copy()))
            if field_type.kind == "float":
                return exp.Div(this=total, expression=exp.Nullif(this=count, expression=num(0)))
            return self.divide(total, field_type.kind, count, "int")
        keep = sql_type(field_type, self.r) if field_type.kind in ("decimal", "int", "float") else None
        if func in ("min", "max") or node.field == self.rules.tables[node.table].time:
            # The first or last time is the smallest or largest one: no tie to break.
            smallest = func in ("min", "first")
            result = filtered((exp.Min if smallest else exp.Max)(this=value))
        else:
            pick = self.r.arg_min if func == "first" else self.r.arg_max
            result = filtered(pick(value, [time.copy(), value.copy()]))
        # Snapshot columns may be narrower than DECIMAL(38, 18) (e.g. Parquet's decimal(12, 2)).
        return cast(result, keep) if keep is not None else result

    def sum_sql(self, filtered, value: exp.Expression, field_type: t.Type) -> exp.Expression:
        if field_type.kind == "float":
            return filtered(self.r.float_sum(value.copy()))
        return cast(filtered(exp.Sum(this=value.copy())), sql_type(field_type.with_null(False), self.r))

    # -- items -----------------------------------------------------------------------------------

    def item_columns(self, kind: str, name: str) -> list[exp.Expression]:
        if kind == "metric":
            metric = self.rules.metrics[name]
            return [exp.alias_(self.typed_sql(metric.expr, metric.type), name, quoted=True)]
        if kind == "class":
            return [exp.alias_(self.class_sql(name), name, quoted=True)]
        if kind == "segment":
            when = self.rules.segments[name]
            return [exp.alias_(exp.Coalesce(this=paren(self.sql(when)), expressions=[exp.false()]), name, quoted=True)]
        return self.tier_columns()

    def class_sql(self, name: str) -> exp.Expression:
        ifs, default = [], exp.Null()
        for case in self.rules.classes[name].cases:
            if case.when is None:
                default = exp.Literal.string(case.name)
            else:
                ifs.append(exp.If(this=self.sql(case.when), true=exp.Literal.string(case.name)))
        if not ifs:
            return default if not isinstance(default, exp.Null) else cast(exp.Null(), "VARCHAR")
        return exp.Case(ifs=ifs, default=default if not isinstance(default, exp.Null) else None)

    # -- tiers -----------------------------------------------------------------------------------

    def tier_by_type(self) -> t.Type:
        tiers = self.rules.tiers
        decimal = tiers.by.type.kind == "decimal" or any(isinstance(l.min, Decimal) for l in tiers.levels)
        return t.DECIMAL if decimal else t.INT

    def tier_helper_columns(self) -> list[exp.Expression]:
        tiers = self.rules.tiers
        by_type = self.tier_by_type()
        by = self.typed_sql(tiers.by, by_type)
        earned_ifs = [exp.If(this=exp.GTE(this=by.copy(), expression=self.constant(level.min, by_type)),
                             true=num(i)) for i, level in reversed(list(enumerate(tiers.levels)))]
        earned = exp.Case(ifs=earned_ifs, default=num(0))
        index: exp.Expression = earned
        if tiers.current is not None:
            held = exp.Case(this=exp.column("current_tier", quoted=True),
                            ifs=[exp.If(this=exp.Literal.string(level.name), true=num(i))
                                 for i, level in enumerate(tiers.levels)])
            keep = exp.GT(this=held, expression=earned.copy())
            if tiers.downgrade is not None:
                keep = exp.and_(keep, exp.Not(this=exp.Coalesce(this=paren(self.sql(tiers.downgrade)),
                                                                expressions=[exp.false()])))
            index = exp.Case(ifs=[exp.If(this=keep, true=held.copy())], default=earned.copy())
        columns = [exp.alias_(by, PREFIX + "tier_by", quoted=True),
                   exp.alias_(cast(index, "BIGINT"), PREFIX + "tier_index", quoted=True)]
        if tiers.forecast_earned is not None:
            earned_type = t.FLOAT if tiers.forecast_earned.type.kind == "float" else t.DECIMAL
            columns.append(exp.alias_(self.typed_sql(tiers.forecast_earned, earned_type), PREFIX + "tier_earned",
                                      quoted=True))
        return columns

    def constant(self, value: int | Decimal, type_: t.Type) -> exp.Expression:
        if type_.kind == "decimal":
            return cast(exp.Literal.string(format(Decimal(value), "f")), sql_type(t.DECIMAL, self.r))
        return cast(num(int(value)), "BIGINT")

    def by_index(self, values: list, type_: t.Type) -> exp.Expression:
        index = exp.column(PREFIX + "tier_index", quoted=True)
        ifs = [exp.If(this=num(i), true=self.constant(v, type_) if type_.kind != "string" else exp.Literal.string(v))
               for i, v in enumerate(values) if v is not None]
        return exp.Case(this=index, ifs=ifs)

    def tier_columns(self) -> list[exp.Expression]:
        tiers = self.rules.tiers
        levels = tiers.levels
        by_type = self.tier_by_type()
        by = exp.column(PREFIX + "tier_by", quoted=True)
        names = [level.name for level in levels]
        mins = [level.min for level in levels]
        tier = self.by_index(names, t.STRING)
        next_tier = self.by_index(names[1:] + [None], t.STRING)
        next_min = self.by_index(mins[1:] + [None], by_type)
        spans = self.by_index([b - a for a, b in zip(mins, mins[1:])] + [None], by_type)
        low = self.by_index(mins, by_type)
        missing = exp.or_(exp.Is(this=by.copy(), expression=exp.Null()),
                          exp.Is(this=next_min.copy(), expression=exp.Null()))
        gap = exp.Sub(this=next_min.copy(), expression=by.copy())
        tier_gap = exp.Case(ifs=[exp.If(this=missing, true=exp.Null()),
                                 exp.If(this=exp.LT(this=gap.copy(), expression=num(0)),
                                        true=self.constant(0, by_type))],
                            default=gap)
        share = self.divide_unscaled(exp.Sub(this=by.copy(), expression=low), by_type.kind, spans, by_type.kind)
        progress_units = exp.Mul(this=self.r.int_div(share, num(10 ** (SCALE - 4))), expression=num(10 ** (SCALE - 4)))
        progress = exp.Case(ifs=[exp.If(this=missing.copy(), true=exp.Null()),
                                 exp.If(this=exp.LTE(this=by.copy(), expression=self.by_index(mins, by_type)),
                                        true=self.constant(0, t.DECIMAL)),
                                 exp.If(this=exp.GTE(this=by.copy(), expression=next_min.copy()),
                                        true=self.constant(1, t.DECIMAL))],
                            default=self.from_unscaled(progress_units))
        columns = [exp.alias_(tier, "tier", quoted=True), exp.alias_(next_tier, "next_tier", quoted=True),
                   exp.alias_(cast(tier_gap, sql_type(by_type, self.r)), "tier_gap", quoted=True),
                   exp.alias_(cast(progress, sql_type(t.DECIMAL, self.r)), PREFIX + "tier_progress", quoted=True)]
        days: exp.Expression = cast(exp.Null(), "BIGINT")
        if tiers.forecast_earned is not None and tiers.forecast_window is not None:
            days = self.days_to_next_tier(tier_gap, by_type)
        columns.append(exp.alias_(days, PREFIX + "days_to_next_tier", quoted=True))
        return columns

    def days_to_next_tier(self, tier_gap: exp.Expression, by_type: t.Type) -> exp.Expression:
        """⌈gap / (earned / window days)⌉ = ⌈gap · p / (earned · q)⌉ with window days = p / q, exactly."""
        tiers = self.rules.tiers
        window = Fraction(int(tiers.forecast_window.total_seconds() * 1_000_000), US_PER_DAY)
        earned = exp.column(PREFIX + "tier_earned", quoted=True)
        gap = paren(tier_gap.copy())
        if tiers.forecast_earned.type.kind == "float":
            value = exp.Ceil(this=exp.Div(this=exp.Mul(this=cast(gap, "DOUBLE"), expression=num(window.numerator)),
                                          expression=exp.Mul(this=earned.copy(), expression=num(window.denominator))))
            value = cast(value, "BIGINT")
        else:
            n = exp.Mul(this=paren(self.unscaled(gap, by_type.kind)), expression=num(window.numerator))
            d = exp.Mul(this=paren(self.unscaled(earned.copy(), "decimal")), expression=num(window.denominator))
            value = cast(self.r.int_div(exp.Sub(this=exp.Add(this=n, expression=d.copy()), expression=num(1)), d),
                         "BIGINT")
        positive = exp.GT(this=earned.copy(), expression=num(0))
        return exp.Case(ifs=[exp.If(this=exp.and_(positive, exp.Not(this=exp.Is(this=gap.copy(),
                                                                                   expression=exp.Null()))),
                                    true=value)],
                        default=cast(exp.Null(), "BIGINT"))

    # -- final -------------------------------------------------------------------------------------

    def final_select(self, source: str) -> tuple[exp.Select, list[tuple[str, t.Type]]]:
        rules = self.rules
        key = rules.member.key
        columns: list[tuple[str, exp.Expression, t.Type]] = [
            (key, exp.column(key, quoted=True), rules.member.fields.get(key, t.STRING))]
        if rules.tiers is not None:
            by_type = self.tier_by_type()
            columns += [("tier", exp.column("tier", quoted=True), t.STRING),
                        ("next_tier", exp.column("next_tier", quoted=True), t.STRING.with_null()),
                        ("tier_gap", exp.column("tier_gap", quoted=True), by_type.with_null()),
                        ("tier_progress", exp.column(PREFIX + "tier_progress", quoted=True), t.DECIMAL.with_null()),
                        ("days_to_next_tier", exp.column(PREFIX + "days_to_next_tier", quoted=True),
                         t.INT.with_null())]
        for name, class_list in rules.classes.items():
            columns.append((name, exp.column(name, quoted=True), t.STRING.with_null(not class_list.has_else)))
        labels = [exp.Case(ifs=[exp.If(this=exp.column(name, quoted=True), true=exp.Literal.string(name))])
                  for name in rules.segments]
        segments = self.r.filter_nulls(exp.Array(expressions=labels)) if labels else \
            cast(exp.Array(expressions=[]), sql_type(t.list_of(t.STRING), self.r))
        columns.append(("segments", segments, t.list_of(t.STRING)))
        for name, metric in rules.metrics.items():
            if metric.output:
                columns.append((name, exp.column(name, quoted=True), metric.type))
        for name, column, type_ in self.carry:
            columns.append((name, exp.column(column, quoted=True), type_))
        self.scope = _Scope(source=source)
        for name, expr in self.extra.items():
            columns.append((name, self.sql(expr), expr.type or t.NULL))
        self.scope = _Scope()
        select = exp.select(*(exp.alias_(value, name, quoted=True) for name, value, _ in columns))
        select = select.from_(exp.to_table(source)).order_by(exp.column(key, quoted=True))
        return select, [(name, type_) for name, _, type_ in columns]

    # -- expressions ---------------------------------------------------------------------------------

    def sql(self, node: ast.Expr) -> exp.Expression:
        return getattr(self, type(node).__name__.lower() + "_sql")(node)

    def typed_sql(self, node: ast.Expr, to: t.Type) -> exp.Expression:
        """`node` as a value of `to`'s kind, cast to its SQL type so every step agrees on it."""
        value = self.coerce(self.sql(node), node.type, to)
        if to.kind in ("decimal", "int", "float") or node.type.kind == "null":
            return cast(value, sql_type(to, self.r))
        return value

    def coerce(self, value: exp.Expression, source: t.Type | None, to: t.Type) -> exp.Expression:
        kind = source.kind if source else "null"
        if kind == to.kind or kind == "error":
            return value
        if kind == "null":
            return cast(exp.Null(), sql_type(to, self.r))
        if to.kind == "decimal":
            return cast(value, sql_type(t.DECIMAL, self.r))
        if to.kind == "float":
            return cast(value, "DOUBLE")
        if to.kind == "timestamp" and kind == "date":
            return self.as_timestamp(value, source)
        return value

    def as_timestamp(self, value: exp.Expression, type_: t.Type) -> exp.Expression:
        # A date stands for midnight of that day in the session (= rule set) time zone.
        return cast(value, "TIMESTAMPTZ") if type_.kind == "date" else value

    def local_date(self, value: exp.Expression, type_: t.Type) -> exp.Expression:
        return cast(value, "DATE") if type_.kind == "timestamp" else value

    # leaves

    def literal_sql(self, node: ast.Literal) -> exp.Expression:
        kind, value = node.kind, node.value
        if kind == "null":
            return exp.Null()
        if kind == "bool":
            return exp.true() if value else exp.false()
        if kind == "int":
            return num(value) if abs(value) < 2 ** 31 else cast(num(value), "BIGINT")
        if kind == "decimal":
            return cast(exp.Literal.string(format(value, "f")), sql_type(t.DECIMAL, self.r))
        if kind == "string":
            return exp.Literal.string(value)
        if kind == "duration":
            return cast(num(_micros(value)), "BIGINT")
        if kind == "date":
            return cast(exp.Literal.string(value.isoformat()), "DATE")
        stamp = value.replace(tzinfo=self.tz) if value.tzinfo is None else value
        return cast(exp.Literal.string(stamp.isoformat()), "TIMESTAMPTZ")

    def listliteral_sql(self, node: ast.ListLiteral) -> exp.Expression:
        item = node.type.item if node.type and node.type.item else t.NULL
        items = [self.coerce(self.sql(i), i.type, item) for i in node.items]
        if not items:
            return cast(exp.Array(expressions=[]), sql_type(t.list_of(item if item.kind != "null" else t.STRING), self.r))
        return exp.Array(expressions=items)

    def name_sql(self, node: ast.Name) -> exp.Expression:
        ref = node.ref
        if ref == "param":
            param = self.rules.params[node.name]
            return self.literal_sql(ast.Literal(param.type.kind, param.value))
        if ref == "as_of":
            return self.as_of()
        if ref == "event":
            return exp.column(node.name, table="e", quoted=True)
        column = "current_tier" if ref == "current_tier" else node.name
        return exp.column(column, table=self.scope.member_alias, quoted=True) if self.scope.member_alias \
            else exp.column(column, quoted=True)

    def attribute_sql(self, node: ast.Attribute) -> exp.Expression:
        raise ValueError(f"{node.table}.{node.field} outside an aggregate reached the SQL backend")

    # operators

    def unary_sql(self, node: ast.Unary) -> exp.Expression:
        operand = self.sql(node.operand)
        if node.op == "not":
            return exp.Not(this=paren(operand))
        if node.type.kind == "int":
            operand = cast(operand, "BIGINT")
        return exp.Neg(this=paren(operand))

    def binaryop_sql(self, node: ast.BinaryOp) -> exp.Expression:
        op = node.op
        left, right = self.sql(node.left), self.sql(node.right)
        lt, rt = node.left.type, node.right.type
        if op == "and":
            return exp.And(this=paren(left), expression=paren(right))
        if op == "or":
            return exp.Or(this=paren(left), expression=paren(right))
        result = node.type
        if op == "??":
            return exp.Coalesce(this=self.coerce(left, lt, result), expressions=[self.coerce(right, rt, result)])
        if lt.kind == "null" or rt.kind == "null":
            return cast(exp.Null(), sql_type(result if result.kind != "null" else t.STRING, self.r))
        kinds = (lt.kind, rt.kind)
        if lt.is_numeric and rt.is_numeric:
            return self.arithmetic(op, left, lt.kind, right, rt.kind, result.kind)
        if kinds == ("string", "string"):
            return exp.DPipe(this=paren(left), expression=paren(right), safe=True)
        if kinds == ("timestamp", "duration"):
            return self.r.add_us(left, right if op == "+" else exp.Neg(this=paren(right)))
        if kinds == ("duration", "timestamp"):
            return self.r.add_us(right, left)
        if kinds == ("date", "duration"):
            days = self.whole_days(right)
            return self.r.date_add_days(left, days if op == "+" else exp.Neg(this=paren(days)))
        if kinds == ("duration", "date"):
            return self.r.date_add_days(right, self.whole_days(left))
        if kinds == ("duration", "duration"):
            return (exp.Add if op == "+" else exp.Sub)(this=paren(left), expression=paren(right))
        if kinds == ("timestamp", "timestamp"):
            return exp.Sub(this=self.r.epoch_us(left), expression=self.r.epoch_us(right))
        if kinds == ("date", "date"):
            return exp.Mul(this=cast(self.r.date_diff_days(right, left), "BIGINT"), expression=num(US_PER_DAY))
        if op == "*":  # duration × int
            return exp.Mul(this=cast(paren(left), "BIGINT"), expression=cast(paren(right), "BIGINT"))
        raise ValueError(f"no SQL for {lt} {op} {rt}")

    def whole_days(self, micros: exp.Expression) -> exp.Expression:
        return cast(self.r.int_div(micros, num(US_PER_DAY)), "INTEGER")

    def arithmetic(self, op: str, left, lk: str, right, rk: str, kind: str) -> exp.Expression:
        if kind == "float":
            left, right = cast(left, "DOUBLE"), cast(right, "DOUBLE")
            if op == "/":
                return exp.Div(this=left, expression=exp.Nullif(this=right, expression=num(0)))
            return {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}[op](this=left, expression=right)
        if op == "/":
            return self.divide(left, lk, right, rk)
        if op == "%":
            if kind == "int":
                return exp.Mod(this=cast(paren(left), "BIGINT"), expression=exp.Nullif(this=paren(right),
                                                                                      expression=num(0)))
            a, b = self.unscaled(left, lk), self.unscaled(right, rk)
            return self.from_unscaled(exp.Mod(this=paren(a), expression=exp.Nullif(this=paren(b), expression=num(0))))
        if kind == "int":
            return {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}[op](this=cast(paren(left), "BIGINT"),
                                                                   expression=paren(right))
        decimal = sql_type(t.DECIMAL, self.r)
        if op in ("+", "-"):
            return cast((exp.Add if op == "+" else exp.Sub)(this=cast(paren(left), decimal),
                                                             expression=cast(paren(right), decimal)), decimal)
        return self.multiply(left, lk, right, rk)

    def multiply(self, left, lk: str, right, rk: str) -> exp.Expression:
        """Decimal product, exact up to 18 digits after the point (then truncated).

        DECIMAL(38, 18) × DECIMAL(38, 18) has scale 36 and overflows above 100, so a decimal
        is split into whole and fraction parts: a·b = aᵢbᵢ + aᵢb_f + a_f·bᵢ + trunc(a_f·b_f)."""
        decimal = sql_type(t.DECIMAL, self.r)
        whole = "DECIMAL(38, 0)"
        if lk == "int" or rk == "int":
            return cast(exp.Mul(this=cast(paren(left), whole if lk == "int" else decimal),
                                expression=cast(paren(right), whole if rk == "int" else decimal)), decimal)
        a, b = cast(paren(left), decimal), cast(paren(right), decimal)
        ai, bi = cast(self.r.trunc(a), whole), cast(self.r.trunc(b), whole)
        af = cast(exp.Sub(this=a.copy(), expression=ai.copy()), decimal)
        bf = cast(exp.Sub(this=b.copy(), expression=bi.copy()), decimal)
        fractions = self.from_unscaled(self.r.int_div(
            exp.Mul(this=paren(self.unscaled(af, "decimal")), expression=paren(self.unscaled(bf, "decimal"))),
            num(ONE_UNIT)))
        terms = [exp.Mul(this=ai, expression=bi), exp.Mul(this=ai.copy(), expression=bf.copy()),
                 exp.Mul(this=af.copy(), expression=bi.copy()), fractions]
        total = terms[0]
        for term in terms[1:]:
            total = exp.Add(this=cast(total, decimal), expression=cast(term, decimal))
        return cast(total, decimal)

    def unscaled(self, value: exp.Expression, kind: str) -> exp.Expression:
        """The value × 10^18 as an exact integer (of the dialect's widest integer type)."""
        big = self.r.int_type
        if kind == "int":
            return exp.Mul(this=cast(paren(value), big), expression=cast(num(ONE_UNIT), big))
        return self.r.unscaled(cast(paren(value), sql_type(t.DECIMAL, self.r)), big, self.r.trunc)

    def from_unscaled(self, units: exp.Expression) -> exp.Expression:
        return self.r.from_units(units, sql_type(t.DECIMAL, self.r))

    def divide(self, left, lk: str, right, rk: str) -> exp.Expression:
        return self.from_unscaled(self.divide_unscaled(left, lk, right, rk))

    def divide_unscaled(self, left, lk: str, right, rk: str) -> exp.Expression:
        """trunc(a / b × 10^18), exact; null when b is 0 (docs/SEMANTICS.md "Values")."""
        n = self.unscaled(left, lk)
        div = self.r.int_div
        big = self.r.int_type
        if rk == "int":
            return div(n, exp.Nullif(this=cast(paren(right), big), expression=num(0)))
        d = exp.Nullif(this=self.unscaled(right, rk), expression=num(0))
        chunk = cast(num(10 ** 9), big)
        # Long division in two chunks of nine digits: n = q·d + r, then r·10⁹ = d₁·d + r₂, …
        q = div(n, d)
        r = exp.Mod(this=paren(n.copy()), expression=paren(d.copy()))
        r1 = exp.Mul(this=paren(r), expression=chunk)
        d1 = div(r1, d.copy())
        r2 = exp.Mul(this=paren(exp.Mod(this=paren(r1.copy()), expression=paren(d.copy()))), expression=chunk.copy())
        d2 = div(r2, d.copy())
        return exp.Add(this=exp.Add(this=exp.Mul(this=paren(q), expression=cast(num(ONE_UNIT), big)),
                                    expression=exp.Mul(this=paren(d1), expression=chunk.copy())),
                       expression=d2)

    def compare_sql(self, node: ast.Compare) -> exp.Expression:
        lt, rt = node.left.type, node.right.type
        if node.op in ("in", "not in"):
            found = self.contained(node)
            return exp.Not(this=paren(found)) if node.op == "not in" else found
        left, right = self.sql(node.left), self.sql(node.right)
        if {lt.kind, rt.kind} == {"date", "timestamp"}:
            left, right = self.as_timestamp(left, lt), self.as_timestamp(right, rt)
        elif "float" in (lt.kind, rt.kind) and {lt.kind, rt.kind} <= {"float", "int", "decimal"}:
            # A float compared with a number compares as floats, in every dialect (SEMANTICS.md).
            left, right = self.typed_sql(node.left, t.FLOAT), self.typed_sql(node.right, t.FLOAT)
        return _COMPARE[node.op](this=paren(left), expression=paren(right))

    def contained(self, node: ast.Compare) -> exp.Expression:
        left = self.sql(node.left)
        lt = node.left.type
        right_node = node.right
        if isinstance(right_node, ast.ListLiteral):
            items = [self.sql(i) for i in right_node.items]
            if lt.kind == "timestamp" or any(i.type.kind == "timestamp" for i in right_node.items):
                left = self.as_timestamp(left, lt)
                items = [self.as_timestamp(v, i.type) for v, i in zip(items, right_node.items)]
            if not items:
                return exp.Case(ifs=[exp.If(this=exp.Is(this=left, expression=exp.Null()),
                                            true=cast(exp.Null(), "BOOLEAN"))], default=exp.false())
            return exp.In(this=paren(left), expressions=items)
        values = self.sql(right_node)
        has_null = exp.LT(this=exp.ArraySize(this=self.r.filter_nulls(values.copy())),
                          expression=exp.ArraySize(this=values.copy()))
        return exp.Case(ifs=[
            exp.If(this=exp.or_(exp.Is(this=left, expression=exp.Null()), exp.Is(this=values, expression=exp.Null())),
                   true=cast(exp.Null(), "BOOLEAN")),
            exp.If(this=exp.ArrayContains(this=values.copy(), expression=left.copy()), true=exp.true()),
            exp.If(this=has_null, true=cast(exp.Null(), "BOOLEAN")),
        ], default=exp.false())

    def isnull_sql(self, node: ast.IsNull) -> exp.Expression:
        test = exp.Is(this=paren(self.sql(node.operand)), expression=exp.Null())
        return exp.Not(this=test) if node.negated else test

    # functions

    def call_sql(self, node: ast.Call) -> exp.Expression:
        args = [self.sql(arg) for arg in node.args]
        types = [arg.type for arg in node.args]
        return getattr(self, "fn_" + node.func)(args, types, node)

    def _date(self, args, types, i: int = 0) -> exp.Expression:
        return self.local_date(args[i], types[i])

    def fn_days_between(self, args, types, node):
        return cast(self.r.date_diff_days(self._date(args, types, 0), self._date(args, types, 1)), "BIGINT")

    def _extract(self, part: str, args, types) -> exp.Expression:
        return cast(exp.Extract(this=exp.var(part), expression=self._date(args, types)), "BIGINT")

    def fn_day_of_month(self, args, types, node):
        return self._extract("DAY", args, types)

    def fn_month(self, args, types, node):
        return self._extract("MONTH", args, types)

    def fn_year(self, args, types, node):
        return self._extract("YEAR", args, types)

    def fn_day_of_year(self, args, types, node):
        return cast(self.r.day_of_year(self._date(args, types)), "BIGINT")

    def fn_day_of_week(self, args, types, node):
        return cast(self.r.iso_dow(self._date(args, types)), "BIGINT")

    def fn_hour(self, args, types, node):
        if types[0].kind == "date":
            return exp.Case(ifs=[exp.If(this=exp.Is(this=args[0], expression=exp.Null()),
                                        true=cast(exp.Null(), "BIGINT"))], default=cast(num(0), "BIGINT"))
        return cast(exp.Extract(this=exp.var("HOUR"), expression=args[0]), "BIGINT")

    def fn_date(self, args, types, node):
        return self._date(args, types)

    def fn_days(self, args, types, node):
        return cast(self.r.int_div(args[0], num(US_PER_DAY)), "BIGINT")

    def fn_days_until_anniversary(self, args, types, node):
        d = self._date(args, types)
        today = cast(self.as_of(), "DATE")
        year = cast(exp.Extract(this=exp.var("YEAR"), expression=today), "INTEGER")
        month = cast(exp.Extract(this=exp.var("MONTH"), expression=d), "INTEGER")
        day = cast(exp.Extract(this=exp.var("DAY"), expression=d.copy()), "INTEGER")

        def anniversary(y: exp.Expression) -> exp.Expression:
            leap = exp.or_(exp.and_(exp.EQ(this=exp.Mod(this=y.copy(), expression=num(4)), expression=num(0)),
                                    exp.NEQ(this=exp.Mod(this=y.copy(), expression=num(100)), expression=num(0))),
                           exp.EQ(this=exp.Mod(this=y.copy(), expression=num(400)), expression=num(0)))
            feb29 = exp.and_(exp.EQ(this=month.copy(), expression=num(2)), exp.EQ(this=day.copy(), expression=num(29)),
                             exp.Not(this=paren(leap)))
            return self.r.make_date(y.copy(), month.copy(), exp.Case(ifs=[exp.If(this=feb29, true=num(28))],
                                                                     default=day.copy()))

        this_year = anniversary(year)
        next_year = anniversary(exp.Add(this=year.copy(), expression=num(1)))
        upcoming = exp.Case(ifs=[exp.If(this=exp.LT(this=this_year, expression=today.copy()), true=next_year)],
                            default=this_year.copy())
        return cast(self.r.date_diff_days(today.copy(), upcoming), "BIGINT")

    def fn_coalesce(self, args, types, node):
        coerced = [self.coerce(a, ty, node.type) for a, ty in zip(args, types)]
        return exp.Coalesce(this=coerced[0], expressions=coerced[1:])

    def fn_nullif(self, args, types, node):
        # Compared in their common type (as `==` does), but the result keeps a's type.
        common = t.unify(types[0], types[1])
        equal = exp.EQ(this=self.coerce(args[0].copy(), types[0], common),
                       expression=self.coerce(args[1], types[1], common))
        return exp.Case(ifs=[exp.If(this=equal, true=exp.Null())], default=args[0])

    def _least_greatest(self, func, args, types, node):
        coerced = [self.coerce(a, ty, node.type) for a, ty in zip(args, types)]
        if any(ty.kind == "null" for ty in types):
            return cast(exp.Null(), sql_type(node.type if node.type.kind != "null" else t.STRING, self.r))
        # LEAST/GREATEST skip nulls in several dialects; docs/SEMANTICS.md wants null.
        any_null = exp.or_(*(exp.Is(this=paren(a.copy()), expression=exp.Null()) for a in coerced))
        return exp.Case(ifs=[exp.If(this=any_null, true=exp.Null())],
                        default=func(this=coerced[0], expressions=coerced[1:]))

    def fn_min(self, args, types, node):
        return self._least_greatest(exp.Least, args, types, node)

    def fn_max(self, args, types, node):
        return self._least_greatest(exp.Greatest, args, types, node)

    def fn_round(self, args, types, node):
        digits = node.args[1].value if len(node.args) > 1 else 0
        kind = types[0].kind
        if kind == "null":
            return exp.Null()
        rounded = exp.Round(this=args[0], decimals=num(digits))
        return cast(rounded, sql_type(node.type, self.r))

    def fn_abs(self, args, types, node):
        return exp.Abs(this=args[0])

    def fn_lower(self, args, types, node):
        return exp.Lower(this=args[0])

    def fn_upper(self, args, types, node):
        return exp.Upper(this=args[0])

    def fn_contains(self, args, types, node):
        return self.r.contains(args[0], args[1])

    def fn_starts_with(self, args, types, node):
        return exp.StartsWith(this=args[0], expression=args[1])

    def fn_ends_with(self, args, types, node):
        return self.r.ends_with(args[0], args[1])

    def fn_length(self, args, types, node):
        if types[0].kind == "list":
            return cast(exp.ArraySize(this=args[0]), "BIGINT")
        return cast(exp.Length(this=args[0]), "BIGINT")

    # aggregates

    def eventaggregate_sql(self, node: ast.EventAggregate) -> exp.Expression:
        return exp.column(self.event_aggregates[node].column, quoted=True)

    def populationaggregate_sql(self, node: ast.PopulationAggregate) -> exp.Expression:
        value = self.sql(node.value)
        vt = node.value.type
        source = exp.to_table(self.scope.source)
        where = paren(self.sql(node.where)) if node.where is not None else None
        func = node.func
        if func == "quantile":
            return self.quantile(value, where, source, node)
        if func == "count":
            aggregate = cast(exp.Count(this=value), "BIGINT")
        elif func == "sum":
            total = self.r.float_sum(value) if vt.kind == "float" else exp.Sum(this=value)
            aggregate = exp.Coalesce(this=cast(total, sql_type(node.type.with_null(False), self.r)),
                                     expressions=[self.zero(node.type)])
        elif func == "avg":
            count = exp.Count(this=value.copy())
            if vt.kind == "float":
                aggregate = exp.Div(this=self.r.float_sum(value), expression=exp.Nullif(this=count, expression=num(0)))
            else:
                aggregate = self.divide(exp.Sum(this=value), "int" if vt.kind == "int" else "decimal", count, "int")
        else:
            aggregate = (exp.Min if func == "min" else exp.Max)(this=value)
        select = exp.select(aggregate).from_(source)
        if where is not None:
            select = select.where(where)
        return exp.Subquery(this=select)

    def quantile(self, value, where, source, node) -> exp.Expression:
        """Nearest rank: the smallest v with #{values ≤ v} ≥ max(1, ⌈q·n⌉)."""
        v = exp.column(PREFIX + "v", quoted=True)
        inner = exp.select(exp.alias_(value, PREFIX + "v", quoted=True)).from_(source)
        inner = inner.where(exp.and_(*(c for c in (where, exp.Not(this=exp.Is(this=paren(value.copy()),
                                                                                 expression=exp.Null())))
                                      if c is not None)))
        running = exp.Window(this=exp.Count(this=exp.Star()), order=exp.Order(expressions=[exp.Ordered(this=v.copy())]),
                             spec=exp.WindowSpec(kind="RANGE", start="UNBOUNDED", start_side="PRECEDING",
                                                 end="CURRENT ROW"))
        total = exp.Window(this=exp.Count(this=exp.Star()))
        ranked = exp.select(v.copy(), exp.alias_(running, PREFIX + "c", quoted=True),
                            exp.alias_(total, PREFIX + "n", quoted=True)).from_(
            exp.alias_(exp.Subquery(this=inner), PREFIX + "values", table=True))
        fraction = cast(exp.Literal.string(format(Decimal(node.fraction.value), "f")), "DECIMAL(38, 18)")
        k = exp.Ceil(this=exp.Mul(this=fraction, expression=exp.column(PREFIX + "n", quoted=True)))
        enough = exp.and_(exp.GTE(this=exp.column(PREFIX + "c", quoted=True), expression=k),
                          exp.GTE(this=exp.column(PREFIX + "c", quoted=True), expression=num(1)))
        outer = exp.select(exp.Min(this=v.copy())).from_(
            exp.alias_(exp.Subquery(this=ranked), PREFIX + "ranked", table=True)).where(enough)
        return exp.Subquery(this=outer)

    def ranking_sql(self, node: ast.Ranking) -> exp.Expression:
        value = self.sql(node.value)
        is_null = exp.Is(this=paren(value.copy()), expression=exp.Null())

        def ordered(desc: bool) -> exp.Order:
            return exp.Order(expressions=[exp.Ordered(this=value.copy(), desc=desc, nulls_first=False)])

        count_all = exp.Window(this=exp.Count(this=value.copy()))
        if node.func == "rank":
            result = exp.Window(this=exp.Anonymous(this="RANK"), order=ordered(True))
        elif node.func == "ntile":
            buckets = node.buckets.value
            running = exp.Window(this=exp.Count(this=value.copy()), order=ordered(False),
                                 spec=exp.WindowSpec(kind="RANGE", start="UNBOUNDED", start_side="PRECEDING",
                                                     end="CURRENT ROW"))
            # ⌈n·c / N⌉ in integers; NTILE would split ties across buckets.
            numerator = exp.Sub(this=exp.Add(this=exp.Mul(this=num(buckets), expression=cast(running, "BIGINT")),
                                             expression=cast(count_all.copy(), "BIGINT")), expression=num(1))
            result = self.r.int_div(numerator, cast(count_all.copy(), "BIGINT"))
        else:
            rank = exp.Window(this=exp.Anonymous(this="RANK"), order=ordered(False))
            result = exp.Case(ifs=[exp.If(this=exp.EQ(this=count_all.copy(), expression=num(1)),
                                          true=cast(num(0), "DOUBLE"))],
                              default=exp.Div(this=cast(exp.Sub(this=rank, expression=num(1)), "DOUBLE"),
                                              expression=cast(exp.Sub(this=count_all.copy(), expression=num(1)),
                                                              "DOUBLE")))
            return exp.Case(ifs=[exp.If(this=is_null, true=cast(exp.Null(), "DOUBLE"))], default=result)
        return exp.Case(ifs=[exp.If(this=is_null, true=cast(exp.Null(), "BIGINT"))], default=cast(result, "BIGINT"))


def _micros(value: dt.timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds

