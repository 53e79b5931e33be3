"""The Python reference engine: a CheckedRuleSet compiled once into Python functions.

`compile_rule_set` turns every metric, the tiers, every class list and segment into
generated Python source (eval_codegen.py), compiled once. Evaluation then runs in
stages: population aggregates and ranks (`avg(monetary over members)`, `ntile(x, 5)`)
need a value from every member first, so each stage computes, for all members, the
items that need no population value not yet known; between stages the population
values that just became computable are computed over all members.

>>> from pathlib import Path
>>> from .check import check_rule_set
>>> compiled = compile_rule_set(check_rule_set(Path("tests/fixtures/spec_example")).rule_set)  # doctest: +SKIP
>>> evaluation = compiled.evaluate(snapshot, as_of)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from . import ast
from .check import CheckedRuleSet, Param, param_value_from_text
from .errors import Diagnostic, DiagnosticError
from .snapshot import paused_gc
from .eval_codegen import (ITEM_REFS, ExprCompiler, Program, Scope, Unit, emit_event_loop, is_invariant,
                           item_of, population_key, population_nodes)
from .eval_runtime import (Ranks, TierRule, decimal_context, in_decimal_context, population_value, ranks_of,
                           runtime_namespace)

ENGINE = "python"
TIER_COLUMNS = ("tier", "next_tier", "tier_gap", "tier_progress", "days_to_next_tier")
_PROGRESS_CHUNK = 8192


@dataclass
class MemberState:
    """Everything known about one member after evaluation (what explain and campaigns read)."""

    member: dict
    events: dict[str, list[dict]]
    values: dict[str, object]  # metrics, tier columns, classes and segments by name
    as_of: datetime
    population: dict[str, object]
    params: dict[str, object] = field(default_factory=dict)


@dataclass
class EvaluationStats:
    members: int
    seconds: float
    stage_seconds: list[float]
    population_seconds: float
    engine: str = ENGINE

    @property
    def members_per_second(self) -> float:
        return self.members / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Evaluation:
    """The result of one evaluation: rows in result order, population values, member states.

    `population` maps the canonical text of each population aggregate or ranking
    (`avg(monetary over members where frequency > 0)`) to its value (a `Ranks` for
    rankings); `population_counts` to the number of members whose value went into it.
    """

    rows: list[dict]
    population: dict[str, object]
    population_counts: dict[str, int]
    stats: EvaluationStats
    as_of: datetime
    params: dict[str, object]
    members: list[dict] = field(repr=False)
    events: dict[str, dict[object, list[dict]]] = field(repr=False)  # table → member key → rows
    values: list[dict[str, object]] = field(repr=False)
    key: str = field(repr=False, default="member_id")
    _index: dict | None = field(default=None, repr=False)
    _states: list[MemberState] | None = field(default=None, repr=False)

    def _position(self, member_key: object) -> int:
        if self._index is None:
            self._index = {m[self.key]: i for i, m in enumerate(self.members)}
        return self._index[member_key]

    def state(self, member_key: object) -> MemberState:
        """The state of one member; KeyError if no member has that key."""
        return self._make_state(self._position(member_key))

    def row(self, member_key: object) -> dict:
        """The result row of one member; KeyError if no member has that key."""
        return self.rows[self._position(member_key)]

    def _make_state(self, i: int) -> MemberState:
        member = self.members[i]
        key = member[self.key]
        events = {table: by_member.get(key, []) for table, by_member in self.events.items()}
        return MemberState(member, events, self.values[i], self.as_of, self.population, self.params)

    @property
    def states(self) -> list[MemberState]:
        if self._states is None:
            self._states = [self._make_state(i) for i in range(len(self.members))]
        return self._states


@dataclass
class _Item:
    kind: str
    name: str
    exprs: list[ast.Expr]
    stage: int = 0


@dataclass
class _PopulationPlan:
    key: str
    node: ast.Expr
    ready_after: int  # computed once stage `ready_after` has run for all members (-1: before stage 0)
    factory: Callable | None = None


class EvaluationError(DiagnosticError):
    """Evaluating a member failed (a value out of range, e.g. a date past year 9999)."""


class CompiledRuleSet:
    """A rule set compiled to Python; evaluate it on any number of snapshots."""

    def __init__(self, rules: CheckedRuleSet):
        self.rules = rules
        self.tz = ZoneInfo(rules.timezone)
        tiers = rules.tiers
        self.tier_rule: TierRule | None = None
        if tiers is not None:
            window = tiers.forecast_window
            days = Fraction(int(window.total_seconds()), 86400) if window is not None else None
            self.tier_rule = TierRule(tiers.names(), tuple(level.min for level in tiers.levels),
                                      days if tiers.forecast_earned is not None else None)
        self.items = self._items()
        self.population_plans = self._plan()
        self.stage_count = max((item.stage for item in self.items), default=0) + 1
        self.columns = result_column_names(rules)
        self._program = Program(self.tz, rules.tables, tiers.current if tiers else None)
        self._stage_units = [self._stage_unit(k) for k in range(self.stage_count)]
        self._population_units = {plan.key: self._population_unit(i, plan)
                                  for i, plan in enumerate(self.population_plans)}
        self._row_unit = self._row_builder()
        self.source = self._program.source()
        namespace = self._namespace(self._program)
        exec(_compile(self.source, "<memberrules rules>"), namespace)  # our generated code only
        self._stage_factories = [namespace[f"make_{unit.name}"] for unit in self._stage_units]
        for plan in self.population_plans:
            plan.factory = namespace[f"make_{self._population_units[plan.key].name}"]
        self._row_factory = namespace[f"make_{self._row_unit.name}"]
        self._expr_cache: dict[ast.Expr, Callable] = {}

    # -- planning -------------------------------------------------------------------------------

    def _items(self) -> list[_Item]:
        rules = self.rules
        items = []
        for kind, name in rules.order:
            if kind == "metric":
                exprs = [rules.metrics[name].expr]
            elif kind == "tier":
                tiers = rules.tiers
                exprs = [e for e in (tiers.by, tiers.downgrade, tiers.forecast_earned) if e is not None]  # type: ignore
            elif kind == "class":
                exprs = [case.when for case in rules.classes[name].cases if case.when is not None]
            else:
                exprs = [rules.segments[name]]
            items.append(_Item(kind, name, exprs))
        return items

    def _plan(self) -> list[_PopulationPlan]:
        """Stages of items and when each population value becomes computable."""
        stage_of: dict[tuple[str, str], int] = {}
        plans: dict[str, _PopulationPlan] = {}

        def ready_after(node: ast.Expr) -> int:
            key = population_key(node)
            if key not in plans:
                inner = [child for child in ast.children(node)]
                stages = [stage_of.get(dep, 0) for e in inner for dep in _direct_items(e)]
                plans[key] = _PopulationPlan(key, node, max(stages, default=-1))
            return plans[key].ready_after

        for item in self.items:
            stage = 0
            for expr in item.exprs:
                for dep in _direct_items(expr):
                    stage = max(stage, stage_of.get(dep, 0))
                for node in population_nodes(expr):
                    stage = max(stage, ready_after(node) + 1)
            item.stage = stage
            stage_of[(item.kind, item.name)] = stage
        for campaign in self.rules.campaigns.values():
            for expr in (campaign.when, campaign.points):
                if expr is not None:
                    for node in population_nodes(expr):
                        ready_after(node)
        return list(plans.values())

    # -- code generation ------------------------------------------------------------------------

    def _stage_unit(self, stage: int) -> Unit:
        unit = Unit(self._program, f"stage{stage}")
        items = [item for item in self.items if item.stage == stage]
        scope = Scope()
        compiler = unit.compiler(scope)
        # Aggregates whose window and filter read no computed item are summed in one pass
        # per event table at the start of the stage, however many metrics use them.
        fusable: dict[str, list[ast.EventAggregate]] = {}
        for item in items:
            for expr in item.exprs:
                for node in _member_level_aggregates(expr):
                    if _fusable(node):
                        fusable.setdefault(node.table, []).append(node)
        for table, nodes in fusable.items():
            scope.aggregates.update(emit_event_loop(compiler, table, nodes))
        for item in items:
            getattr(self, f"_{item.kind}_item")(unit, compiler, scope, item)
        return unit

    def _metric_item(self, unit: Unit, compiler: ExprCompiler, scope: Scope, item: _Item) -> None:
        var = self._program.fresh("v")
        unit.body.append(f"{var} = {compiler.expr(item.exprs[0])}")
        unit.body.append(f"V[{item.name!r}] = {var}")
        scope.items[item.name] = var

    def _tier_item(self, unit: Unit, compiler: ExprCompiler, scope: Scope, item: _Item) -> None:
        tiers = self.rules.tiers
        assert tiers is not None
        by = compiler.expr(tiers.by)
        current = f"m[{tiers.current!r}]" if tiers.current else "None"
        downgrade = compiler.expr(tiers.downgrade) if tiers.downgrade is not None else "None"
        earned = compiler.expr(tiers.forecast_earned) if tiers.forecast_earned is not None else "None"
        names = [self._program.fresh("tier") for _ in TIER_COLUMNS]
        unit.body.append(f"{', '.join(names)} = tier_result({by}, {current}, {downgrade}, {earned})")
        for column, var in zip(TIER_COLUMNS, names):
            unit.body.append(f"V[{column!r}] = {var}")
            scope.items[column] = var

    def _class_item(self, unit: Unit, compiler: ExprCompiler, scope: Scope, item: _Item) -> None:
        var = self._program.fresh("c")
        unit.body.append(f"{var} = None")
        fallback = None
        for case in self.rules.classes[item.name].cases:
            if case.when is None:
                fallback = case.name
                continue
            condition = compiler.expr(case.when)
            test = f"({condition}) is True" if case.when.type is None or case.when.type.nullable else condition
            unit.body.append(f"if {var} is None and {test}:")
            unit.body.append(f"    {var} = {case.name!r}")
        if fallback is not None:
            unit.body.append(f"if {var} is None:")
            unit.body.append(f"    {var} = {fallback!r}")
        unit.body.append(f"V[{item.name!r}] = {var}")
        scope.items[item.name] = var

    def _segment_item(self, unit: Unit, compiler: ExprCompiler, scope: Scope, item: _Item) -> None:
        var = self._program.fresh("s")
        expr = item.exprs[0]
        condition = compiler.expr(expr)
        nullable = expr.type is None or expr.type.nullable or expr.type.kind != "bool"
        unit.body.append(f"{var} = ({condition}) is True" if nullable else f"{var} = {condition}")
        unit.body.append(f"V[{item.name!r}] = {var}")
        scope.items[item.name] = var

    def _population_unit(self, i: int, plan: _PopulationPlan) -> Unit:
        unit = Unit(self._program, f"population{i}")
        compiler = unit.compiler()
        node = plan.node
        if isinstance(node, ast.Ranking):
            unit.body.append(f"return {compiler.expr(node.value)}")
        else:
            value = compiler.expr(node.value)  # type: ignore[union-attr]
            where = compiler.expr(node.where) if node.where is not None else "True"  # type: ignore[union-attr]
            unit.body.append(f"return ({value}, {where})")
        return unit

    def _row_builder(self) -> Unit:
        unit = Unit(self._program, "row")
        rules = self.rules
        parts = [f"{rules.member.key!r}: m[{rules.member.key!r}]"]
        if rules.tiers is not None:
            parts += [f"{c!r}: V[{c!r}]" for c in TIER_COLUMNS]
        parts += [f"{name!r}: V[{name!r}]" for name in rules.classes]
        unit.body.append("segments = []")
        for name in rules.segments:
            unit.body.append(f"if V[{name!r}]:")
            unit.body.append(f"    segments.append({name!r})")
        parts.append("'segments': segments")
        parts += [f"{name!r}: V[{name!r}]" for name, metric in rules.metrics.items() if metric.output]
        unit.body.append("return {" + ", ".join(parts) + "}")
        return unit

    def _namespace(self, program: Program) -> dict:
        namespace = runtime_namespace(self.tz)
        namespace.update(program.constants)
        if self.tier_rule is not None:
            namespace["tier_result"] = self.tier_rule.result
        return namespace

    # -- evaluation -----------------------------------------------------------------------------

    def param_values(self, overrides: dict[str, object] | None = None) -> dict[str, object]:
        """The params of one evaluation: the rule set's, with `overrides` (typed values or text)."""
        values = {name: _localize_param(param.value, self.tz) for name, param in self.rules.params.items()}
        for name, value in (overrides or {}).items():
            param = self.rules.params.get(name)
            if param is None:
                known = ", ".join(self.rules.params) or "none"
                raise ValueError(f"the rule set has no param '{name}' (params: {known})")
            values[name] = _localize_param(coerce_param(param, value), self.tz)
        return values

    def evaluate(self, snapshot, as_of: datetime, params: dict | None = None,
                 progress: Callable[[int], None] | None = None) -> Evaluation:
        """Evaluate every member of a snapshot.

        Args:
            snapshot: a `snapshot.Snapshot` (members sorted by key, events per member key).
            as_of: the evaluation instant; a naive value is read in the rule set's timezone.
            params: param overrides for this run (typed values, or text as on the command line).
            progress: called with the number of members just processed, a chunk at a time
                (once per stage and population pass), for progress bars.

        Returns:
            An Evaluation with one result row per member, sorted by member key.
        """
        started = time.perf_counter()
        as_of = _localize(as_of, self.tz)
        param_values = self.param_values(params)
        members = snapshot.members
        key = self.rules.member.key
        events = self._visible_events(snapshot, as_of)
        population: dict[str, object] = {}
        counts: dict[str, int] = {}
        stage_seconds: list[float] = []
        population_seconds = 0.0
        # Evaluation makes millions of acyclic objects; cyclic collections would only rescan them.
        with decimal_context(), paused_gc():
            values: list[dict] = [{} for _ in members]
            for stage in range(-1, self.stage_count):
                if stage >= 0:
                    began = time.perf_counter()
                    function = self._stage_factories[stage](param_values, population, as_of, events)
                    _run(function, members, values, key, progress)
                    stage_seconds.append(time.perf_counter() - began)
                began = time.perf_counter()
                for plan in self.population_plans:
                    if plan.ready_after == stage:
                        self._compute_population(plan, param_values, population, counts, as_of,
                                                 members, events, values, key)
                        if progress is not None:
                            progress(0)
                population_seconds += time.perf_counter() - began
            row = self._row_factory(param_values, population, as_of, events)
            rows = [row(m, v) for m, v in zip(members, values)]
        stats = EvaluationStats(len(members), time.perf_counter() - started, stage_seconds, population_seconds)
        return Evaluation(rows, population, counts, stats, as_of, param_values, members, events, values, key)

    def _visible_events(self, snapshot, as_of: datetime) -> dict[str, dict[object, list[dict]]]:
        """The snapshot's event rows per table, without rows after as_of (SPEC §4).

        A snapshot read for this as_of has none; its rows are sorted by time, so the
        last row of each member tells, and only members with later rows are copied.
        """
        result = {}
        for name, table in self.rules.event_tables.items():
            by_member = snapshot.events.get(name, {})
            time_field = table.time
            if time_field is None:
                result[name] = by_member
                continue
            limit = as_of if self.rules.tables[name].fields[time_field].kind == "timestamp" else as_of.date()
            lasts = [rows[-1][time_field] for rows in by_member.values() if rows]
            try:
                latest = max(lasts, default=None)
            except TypeError:  # a row without a time: compare the others
                latest = max((moment for moment in lasts if moment is not None), default=None)
            if latest is not None and latest > limit:
                late = [k for k, rows in by_member.items()
                        if rows and rows[-1][time_field] is not None and rows[-1][time_field] > limit]
                by_member = dict(by_member)
                for k in late:
                    by_member[k] = [r for r in by_member[k] if r[time_field] is None or not r[time_field] > limit]
            result[name] = by_member
        return result

    def _compute_population(self, plan: _PopulationPlan, params, population, counts, as_of,
                            members, events, values, key) -> None:
        function = plan.factory(params, population, as_of, events)  # type: ignore[misc]
        try:
            results = list(map(function, members, values))
        except Exception as error:  # noqa: BLE001 - reported with the member it happened on
            _raise_for_member(function, members, values, key, error)
        node = plan.node
        if isinstance(node, ast.Ranking):
            ranks = ranks_of(results)
            population[plan.key] = ranks
            counts[plan.key] = ranks.count
            return
        fraction = node.fraction.value if node.fraction is not None else None  # type: ignore[union-attr]
        kind = node.type.kind if node.type is not None else "int"
        population[plan.key], counts[plan.key] = population_value(node.func, results, kind, fraction)

    # -- sub-expressions (explain) --------------------------------------------------------------

    def expr_function(self, expr: ast.Expr) -> Callable[[MemberState], object]:
        """A function computing any typed expression of this rule set for one member state.

        Items (metrics, tier, classes, segments) are read from `state.values` and population
        values from `state.population`, so call it on the states of an Evaluation.
        """
        cached = self._expr_cache.get(expr)
        if cached is not None:
            return cached
        program = Program(self.tz, self.rules.tables, self.rules.tiers.current if self.rules.tiers else None)
        unit = Unit(program, "expr", "m, ev, V")
        compiler = unit.compiler()
        unit.body.append(f"return {compiler.expr(expr)}")
        namespace = self._namespace(program)
        exec(_compile(program.source(), "<memberrules expression>"), namespace)  # our generated code only
        factory = namespace["make_expr"]
        defaults = self.param_values()
        # The member function for the last (params, population, as_of) seen: the states of one
        # Evaluation share all three, so it is made once per evaluation, not once per call.
        last: list = [None, None, None, None]

        def evaluate(state: MemberState) -> object:
            params = state.params or defaults
            if state.population is not last[0] or params is not last[1] or state.as_of is not last[2]:
                last[:] = [state.population, params, state.as_of,
                           factory(params, state.population, state.as_of, None)]
            if in_decimal_context():
                return last[3](state.member, state.events, state.values)
            with decimal_context():
                return last[3](state.member, state.events, state.values)

        self._expr_cache[expr] = evaluate
        return evaluate

    def expr_values(self, expr: ast.Expr, states: Iterable[MemberState]) -> list[object]:
        """`expr_function(expr)` over many states, in one decimal context (faster than one by one)."""
        function = self.expr_function(expr)
        with decimal_context():
            return [function(state) for state in states]

    @property
    def population_nodes(self) -> dict[str, ast.Expr]:
        """Every population aggregate and ranking the rule set uses, by key."""
        return {plan.key: plan.node for plan in self.population_plans}


def compile_rule_set(rules: CheckedRuleSet) -> CompiledRuleSet:
    """Compile a checked rule set into Python, once.

    Args:
        rules: `check_rule_set(path).rule_set`.

    Returns:
        A CompiledRuleSet whose `evaluate(snapshot, as_of)` gives an Evaluation.
    """
    return CompiledRuleSet(rules)


def result_column_names(rules: CheckedRuleSet) -> list[str]:
    """The columns of a result row, in order (docs/SEMANTICS.md "Result rows")."""
    columns = [rules.member.key]
    if rules.tiers is not None:
        columns += list(TIER_COLUMNS)
    columns += list(rules.classes) + ["segments"]
    columns += [name for name, metric in rules.metrics.items() if metric.output]
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DiagnosticError([Diagnostic(
                "MR402", f"'{column}' names two columns of the result rows", None,
                hint="rename the class list or metric; tier columns and 'segments' are built-in")])
        seen.add(column)
    return columns


def coerce_param(param: Param, value: object) -> object:
    """A param override as a value of the param's declared kind, or ValueError."""
    kind = param.type.kind
    if isinstance(value, str) and kind != "string":
        value, _ = param_value_from_text(value)
    if kind == "decimal" and isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if kind == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    expected = {"bool": bool, "int": int, "decimal": Decimal, "string": str, "date": date,
                "timestamp": datetime, "duration": type(param.value)}.get(kind)
    ok = expected is not None and isinstance(value, expected) and not (kind == "int" and isinstance(value, bool))
    if kind == "date" and isinstance(value, datetime):
        ok = False
    if not ok:
        raise ValueError(f"param {param.name}: expected {param.type}, got {value!r}")
    return value


def _compile(source: str, name: str):
    # The parser bounds expression depth, so this holds for every checked rule set; should
    # Python still refuse the generated nesting, say so instead of failing with a traceback.
    try:
        return compile(source, name, "exec")
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise DiagnosticError([Diagnostic(
            "MR206", f"the rules nest too deeply for the Python engine ({type(error).__name__})", None,
            hint="split deep expressions into metrics")]) from None


def _localize(value: datetime, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


def _localize_param(value: object, tz: ZoneInfo) -> object:
    return _localize(value, tz) if isinstance(value, datetime) else value


def _run(function, members, values, key, progress) -> None:
    try:
        if progress is None:
            for m, v in zip(members, values):
                function(m, v)
            return
        for start in range(0, len(members), _PROGRESS_CHUNK):
            stop = start + _PROGRESS_CHUNK
            for m, v in zip(members[start:stop], values[start:stop]):
                function(m, v)
            progress(len(members[start:stop]))
    except Exception as error:  # noqa: BLE001 - reported with the member it happened on
        _raise_for_member(function, members, values, key, error)


def _raise_for_member(function, members, values, key, error: Exception):
    for m, v in zip(members, values):
        try:
            function(m, v)
        except Exception as problem:  # noqa: BLE001
            raise EvaluationError([Diagnostic(
                "MR590", f"member {m.get(key)!r}: the rules could not be evaluated: "
                         f"{type(problem).__name__}: {problem}", None,
                hint="a value in this member's rows is out of range (e.g. a date near year 9999)")]) from problem
    raise error


def _direct_items(expr: ast.Expr) -> Iterable[tuple[str, str]]:
    """Items a member-level expression reads (population aggregates excluded, ranks included)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.PopulationAggregate):
            continue
        if isinstance(node, ast.Name) and node.ref in ITEM_REFS:
            item = item_of(node)
            if item is not None:
                yield item
        stack.extend(ast.children(node))


def _member_level_aggregates(expr: ast.Expr) -> Iterable[ast.EventAggregate]:
    """Event aggregates of an expression, outside population aggregates (those run per member elsewhere)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.PopulationAggregate):
            continue
        if isinstance(node, ast.EventAggregate):
            yield node
            continue
        stack.extend(ast.children(node))


def _fusable(node: ast.EventAggregate) -> bool:
    """Whether an aggregate reads only rows, member fields, params and as_of."""
    for part in (node.within, node.where):
        if part is None:
            continue
        for sub in ast.walk(part):
            if isinstance(sub, ast.Name) and sub.ref in ITEM_REFS:
                return False
            if isinstance(sub, (ast.PopulationAggregate, ast.Ranking)):
                return False
    if node.within is not None and not is_invariant(node.within):
        return False
    return True


__all__ = ["CompiledRuleSet", "Evaluation", "EvaluationError", "EvaluationStats", "MemberState", "Ranks",
           "compile_rule_set", "result_column_names", "coerce_param", "ENGINE", "TIER_COLUMNS"]
