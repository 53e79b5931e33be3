"""Typed expressions → Python source, for the reference engine (eval.py).

Only checked trees reach this module. Generated names are our own (`_v3`, `_p1`);
rule names appear only as dictionary keys, through repr(); literal values that are
not plain ints, strings or bools are passed in as constants, never printed as code.
Each generated function sits in a factory `make(P, POP, as_of)`: params, population
values and everything that depends only on them and `as_of` ("invariant" parts such
as `as_of - 30d`) are computed once per evaluation in the factory, and the member
function reads them as closure variables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from . import ast
from . import types as t
from .check_expr import Table

# Name refs whose value differs between members (everything but params and as_of).
MEMBER_REFS = frozenset(("member", "metric", "tier", "next_tier", "tier_gap", "current_tier", "class",
                         "segment", "event"))
# Refs that name a per-member item computed by the engine, and the V key they live under.
ITEM_REFS = frozenset(("metric", "tier", "next_tier", "tier_gap", "class", "segment"))


def item_of(name: ast.Name) -> tuple[str, str] | None:
    """The item (as in CheckedRuleSet.order) a name reads."""
    if name.ref == "metric":
        return ("metric", name.name)
    if name.ref in ("tier", "next_tier", "tier_gap"):
        return ("tier", "tier")
    if name.ref in ("class", "segment"):
        return (name.ref, name.name)
    return None


def population_nodes(expr: ast.Expr) -> list[ast.Expr]:
    """The population aggregates and rankings inside an expression, outermost first."""
    return [node for node in ast.walk(expr) if isinstance(node, (ast.PopulationAggregate, ast.Ranking))]


def is_invariant(node: ast.Expr) -> bool:
    """Whether a node's value is the same for every member (params, as_of, population values)."""
    if isinstance(node, ast.PopulationAggregate):
        return True
    if isinstance(node, (ast.EventAggregate, ast.Ranking, ast.Attribute)):
        return False
    if isinstance(node, ast.Name):
        return node.ref not in MEMBER_REFS
    return all(is_invariant(child) for child in ast.children(node))


def population_key(node: ast.Expr) -> str:
    """The key of a population value in Evaluation.population: its canonical text."""
    return ast.to_source(node)


def _kind(node: ast.Expr) -> str:
    return node.type.kind if node.type is not None else "error"


def _nullable(node: ast.Expr) -> bool:
    return node.type is None or node.type.nullable


class Program:
    """Every generated factory of one rule set, compiled together into one module."""

    def __init__(self, tz: ZoneInfo, tables: dict[str, Table], current_field: str | None = None):
        self.tz = tz
        self.tables = tables
        self.current_field = current_field
        self.member_key = tables["member"].key
        self.constants: dict[str, object] = {}
        self._constant_ids: dict[tuple, str] = {}
        self.units: list[Unit] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"_{prefix}{self.counter}"

    def constant(self, value: object, kind: str) -> str:
        """A global name holding a literal value (Decimal, duration, date, timestamp, list)."""
        key = (kind, type(value).__name__, repr(value))
        name = self._constant_ids.get(key)
        if name is None:
            name = f"_k{len(self.constants)}"
            self.constants[name] = value
            self._constant_ids[key] = name
        return name

    def source(self) -> str:
        return "\n\n".join(unit.source() for unit in self.units) + "\n"


@dataclass
class Scope:
    """How names resolve in the code being generated."""

    items: dict[str, str] = field(default_factory=dict)  # V key → local variable of this function
    row: str | None = None  # the event row variable inside an aggregate's `where`
    time: tuple[str, str] | None = None  # (time field, variable already holding it) inside a loop
    aggregates: dict[str, str] = field(default_factory=dict)  # aggregate text → variable (fused loops)


class Unit:
    """One factory: `def make_x(P, POP, as_of, E)` returning `def x(<args>)`.

    A member's event rows come from `E` (table → member key → rows, as in a Snapshot)
    when the function takes `(m, V)`, or from the argument `ev` (table → rows) when it
    takes `(m, ev, V)`.
    """

    def __init__(self, program: Program, name: str, args: str = "m, V"):
        self.program = program
        self.name = name
        self.args = args
        self.factory_lines: list[str] = []
        self.body: list[str] = []
        self.params: dict[str, str] = {}
        self.hoisted: dict[str, str] = {}
        self.pops: dict[tuple[str, str], str] = {}
        self.row_lists: dict[str, str] = {}
        self.today: str | None = None
        program.units.append(self)

    def rows(self, table: str, lines: list[str]) -> str:
        """The variable holding this member's rows of `table`; fetched once, where first needed."""
        if "ev" in self.args.split(", "):
            return f"ev[{table!r}]"
        if table not in self.row_lists:
            by_member = self.factory_var("E", f"E[{table!r}]")
            var = self.program.fresh("rows")
            lines.append(f"{var} = {by_member}.get(m[{self.program.member_key!r}], ())")
            self.row_lists[table] = var
        return self.row_lists[table]

    def source(self) -> str:
        head = [f"def make_{self.name}(P, POP, as_of, E):"]
        factory = ["    " + line for line in self.factory_lines]
        inner = [f"    def {self.name}({self.args}):"] + ["        " + line for line in self.body or ["pass"]]
        return "\n".join(head + factory + inner + [f"    return {self.name}"])

    def factory_var(self, prefix: str, code: str) -> str:
        var = self.program.fresh(prefix)
        self.factory_lines.append(f"{var} = {code}")
        return var

    def param(self, name: str) -> str:
        if name not in self.params:
            self.params[name] = self.factory_var("p", f"P[{name!r}]")
        return self.params[name]

    def population(self, key: str, suffix: str = "") -> str:
        slot = (key, suffix)
        if slot not in self.pops:
            self.pops[slot] = self.factory_var("pop", f"POP[{key!r}]{suffix}")
        return self.pops[slot]

    def today_var(self) -> str:
        if self.today is None:
            self.today = self.factory_var("today", "local_date(as_of)")
        return self.today

    def compiler(self, scope: Scope | None = None) -> ExprCompiler:
        return ExprCompiler(self, self.body, scope or Scope(), in_factory=False)

    def hoist(self, node: ast.Expr) -> str:
        """The factory variable holding an invariant expression, computed once per evaluation."""
        key = ast.to_source(node)
        if key not in self.hoisted:
            code = ExprCompiler(self, self.factory_lines, Scope(), in_factory=True).expr(node)
            self.hoisted[key] = self.factory_var("h", code)
        return self.hoisted[key]


class ExprCompiler:
    """Emits Python for typed expressions: `expr(node)` returns an expression string and may
    first append statements (event loops) to `lines`. Null is None; logic is three-valued."""

    def __init__(self, unit: Unit, lines: list[str], scope: Scope, in_factory: bool):
        self.unit = unit
        self.lines = lines
        self.scope = scope
        self.in_factory = in_factory

    @property
    def program(self) -> Program:
        return self.unit.program

    def tmp(self) -> str:
        return self.program.fresh("t")

    def expr(self, node: ast.Expr) -> str:
        if not self.in_factory and not isinstance(node, (ast.Literal, ast.Name, ast.PopulationAggregate)) \
                and not _constant_list(node) and is_invariant(node):
            return self.unit.hoist(node)
        method: Callable[[ast.Expr], str] = getattr(self, type(node).__name__.lower() + "_py")
        return method(node)

    def coerce(self, code: str, node: ast.Expr, target: t.Type | None) -> str:
        """Convert a value to the kind of `target` where Python would not mix them."""
        if target is None:
            return code
        kind = _kind(node)
        if target.kind == "float" and kind in ("int", "decimal"):
            return f"float({code})" if not _nullable(node) else self._none_safe(code, "float({})")
        if target.kind == "timestamp" and kind == "date":
            return f"to_timestamp({code})"
        return code

    def _none_safe(self, code: str, template: str) -> str:
        a = self.tmp()
        return f"(None if ({a} := {code}) is None else {template.format(a)})"

    # -- leaves ---------------------------------------------------------------------------------

    def literal_py(self, node: ast.Literal) -> str:
        kind, value = node.kind, node.value
        if kind == "null":
            return "None"
        if kind in ("bool", "int", "string"):
            return repr(value)
        if kind == "timestamp":
            stamp: dt.datetime = value  # type: ignore[assignment]
            value = stamp.replace(tzinfo=self.program.tz) if stamp.tzinfo is None else stamp.astimezone(self.program.tz)
        return self.program.constant(value, kind)

    def listliteral_py(self, node: ast.ListLiteral) -> str:
        if all(isinstance(item, ast.Literal) for item in node.items):
            values = [self._literal_value(item) for item in node.items]  # type: ignore[arg-type]
            return self.program.constant(values, "list")
        return "[" + ", ".join(self.coerce(self.expr(item), item, node.type.item if node.type else None)
                               for item in node.items) + "]"

    def _literal_value(self, node: ast.Literal) -> object:
        if node.kind == "timestamp":
            stamp: dt.datetime = node.value  # type: ignore[assignment]
            return stamp.replace(tzinfo=self.program.tz) if stamp.tzinfo is None else stamp.astimezone(self.program.tz)
        return node.value

    def name_py(self, node: ast.Name) -> str:
        ref, name = node.ref, node.name
        if ref == "member" or ref == "current_tier":
            return f"m[{self._member_field(node)!r}]"
        if ref == "param":
            return self.unit.param(name)
        if ref == "as_of":
            return "as_of"
        if ref == "event":
            if self.scope.row is None:
                raise ValueError(f"'{name}' is an event field: it has a value only inside an aggregate's where")
            if self.scope.time is not None and self.scope.time[0] == name:
                return self.scope.time[1]
            return f"{self.scope.row}[{name!r}]"
        if ref in ITEM_REFS:
            return self.scope.items.get(name) or f"V[{name!r}]"
        raise ValueError(f"cannot evaluate the name '{name}' (ref {ref})")

    def _member_field(self, node: ast.Name) -> str:
        if node.ref == "current_tier":
            return self.program.current_field  # type: ignore[return-value]
        return node.name

    def attribute_py(self, node: ast.Attribute) -> str:
        raise ValueError(f"{node.table}.{node.field} has a value only inside an aggregate")

    # -- operators ------------------------------------------------------------------------------

    def unary_py(self, node: ast.Unary) -> str:
        operand = self.expr(node.operand)
        if node.op == "not":
            return f"(not {operand})" if not _nullable(node.operand) else self._none_safe(operand, "(not {})")
        return f"(-{operand})" if not _nullable(node.operand) else self._none_safe(operand, "(-{})")

    def binaryop_py(self, node: ast.BinaryOp) -> str:
        op = node.op
        if op == "and":
            return self._and(node)
        if op == "or":
            return self._or(node)
        if op == "??":
            left = self.coerce(self.expr(node.left), node.left, node.type)
            if not _nullable(node.left):
                return left
            a = self.tmp()
            right = self.coerce(self.expr(node.right), node.right, node.type)
            return f"({a} if ({a} := {left}) is not None else {right})"
        return self._arithmetic(node)

    def _and(self, node: ast.BinaryOp) -> str:
        left, right = self.expr(node.left), self.expr(node.right)
        if not _nullable(node.left):
            return f"({left} and {right})"
        a = self.tmp()
        if not _nullable(node.right):
            return f"(False if ({a} := {left}) is False else ({right} and {a}))"
        b = self.tmp()
        return (f"(False if ({a} := {left}) is False else (False if ({b} := {right}) is False else "
                f"(None if {a} is None or {b} is None else True)))")

    def _or(self, node: ast.BinaryOp) -> str:
        left, right = self.expr(node.left), self.expr(node.right)
        if not _nullable(node.left):
            return f"({left} or {right})"
        a = self.tmp()
        if not _nullable(node.right):
            return f"(True if ({a} := {left}) is True else ({right} or {a}))"
        b = self.tmp()
        return (f"(True if ({a} := {left}) is True else (True if ({b} := {right}) is True else "
                f"(None if {a} is None or {b} is None else False)))")

    def _binary(self, node: ast.BinaryOp | ast.Compare, template: str, left: str, right: str,
                strict: bool = True) -> str:
        """`template` applied to both sides; null when either is null (unless the helper handles it)."""
        if "null" in (_kind(node.left), _kind(node.right)):
            return "None"
        if not strict or not (_nullable(node.left) or _nullable(node.right)):
            return template.format(left, right)
        tests = []
        names = []
        for side, code in ((node.left, left), (node.right, right)):
            if _nullable(side):
                var = self.tmp()
                tests.append(f"({var} := {code}) is None")
                names.append(var)
            else:
                names.append(code)
        return f"(None if {' or '.join(tests)} else {template.format(*names)})"

    def _arithmetic(self, node: ast.BinaryOp) -> str:
        op = node.op
        lk, rk = _kind(node.left), _kind(node.right)
        left, right = self.expr(node.left), self.expr(node.right)
        if op == "/":
            return self._binary(node, "divide({}, {})", left, right, strict=False)
        if op == "%":
            return self._binary(node, "modulo({}, {})", left, right, strict=False)
        if lk == "timestamp" and rk == "duration":
            return self._binary(node, "ts_add({}, " + ("-" if op == "-" else "") + "{})", left, right)
        if lk == "duration" and rk == "timestamp":
            return self._binary(node, "ts_add({1}, {0})", left, right)
        if lk == "timestamp" and rk == "timestamp":
            return self._binary(node, "ts_sub({}, {})", left, right)
        if lk == "date" and rk == "duration":
            return self._binary(node, "date_add({}, " + ("-" if op == "-" else "") + "{})", left, right)
        if lk == "duration" and rk == "date":
            return self._binary(node, "date_add({1}, {0})", left, right)
        if lk == "date" and rk == "date":
            return self._binary(node, "date_sub({}, {})", left, right)
        if _kind(node) == "float":
            return self._binary(node, "(float({}) " + op + " float({}))", left, right)
        if op == "*" and lk == "decimal" and rk == "decimal":
            # Decimals hold 18 places (DECIMAL(38, 18) in SQL): a product is truncated there too.
            return self._binary(node, "truncate({} * {})", left, right)
        return self._binary(node, "({} " + op + " {})", left, right)

    def compare_py(self, node: ast.Compare) -> str:
        op = node.op
        day_test = self._day_compare(node)
        if day_test is not None:
            return day_test
        left_code, right_code = self.expr(node.left), self.expr(node.right)
        if op in ("in", "not in"):
            return self._membership(node, left_code, right_code)
        lk, rk = _kind(node.left), _kind(node.right)
        if {lk, rk} == {"date", "timestamp"}:
            left_code = self.coerce(left_code, node.left, t.TIMESTAMP)
            right_code = self.coerce(right_code, node.right, t.TIMESTAMP)
        elif "float" in (lk, rk) and {lk, rk} <= {"float", "int", "decimal"}:
            # Compared as floats, as SQL compares a DOUBLE with a DECIMAL: Python would compare
            # 0.7 (the float) with 0.7 (the decimal) exactly, and find it smaller.
            left_code = self.coerce(left_code, node.left, t.FLOAT)
            right_code = self.coerce(right_code, node.right, t.FLOAT)
        return self._binary(node, "({} " + op + " {})", left_code, right_code)

    _MIRRORED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

    def _day_compare(self, node: ast.Compare) -> str | None:
        """`date(ts) == D` for a date D the same for everyone, as `start(D) <= ts < start(D + 1)`:
        the same answer without finding the calendar day of every row's timestamp."""
        if self.in_factory or node.op not in self._MIRRORED:
            return None
        for call, other, op in ((node.left, node.right, node.op), (node.right, node.left, self._MIRRORED[node.op])):
            if isinstance(call, ast.Call) and call.func == "date" and len(call.args) == 1 \
                    and _kind(call.args[0]) == "timestamp" and _kind(other) == "date" \
                    and not _nullable(other) and is_invariant(other):
                break
        else:
            return None
        unit = self.unit
        key = "day:" + ast.to_source(other)
        if key not in unit.hoisted:
            day = ExprCompiler(unit, unit.factory_lines, Scope(), in_factory=True).expr(other)
            day_var = unit.factory_var("day", day)
            unit.hoisted[key] = unit.factory_var("start", f"day_start({day_var})")
            unit.hoisted[key + "+1"] = unit.factory_var("start", f"day_start({day_var}, 1)")
        start, end = unit.hoisted[key], unit.hoisted[key + "+1"]
        template = {"==": f"({start} <= {{}} < {end})", "!=": f"(not ({start} <= {{}} < {end}))",
                    "<": f"({{}} < {start})", "<=": f"({{}} < {end})", ">": f"({{}} >= {end})",
                    ">=": f"({{}} >= {start})"}[op]
        stamp = self.expr(call.args[0])  # type: ignore[union-attr]
        if not _nullable(call.args[0]):  # type: ignore[union-attr]
            return template.format(stamp)
        return self._none_safe(stamp, template)

    def _membership(self, node: ast.Compare, left: str, right: str) -> str:
        negated = node.op == "not in"
        list_type = node.right.type
        items_nullable = list_type is None or list_type.item is None or list_type.item.nullable
        simple = not _nullable(node.left) and not _nullable(node.right) and not items_nullable
        if isinstance(node.right, ast.ListLiteral) and all(isinstance(i, ast.Literal) for i in node.right.items):
            values = [self._literal_value(i) for i in node.right.items]  # type: ignore[arg-type]
            if None not in values and not _nullable(node.left) and all(_hashable(v) for v in values):
                constant = self.program.constant(frozenset(values), "set")
                return f"({left} {'not in' if negated else 'in'} {constant})"
        if simple:
            return f"({left} {'not in' if negated else 'in'} {right})"
        return f"{'not_contained' if negated else 'contained'}({left}, {right})"

    def isnull_py(self, node: ast.IsNull) -> str:
        operand = self.expr(node.operand)
        if not _nullable(node.operand):
            return "True" if node.negated else "False"
        # Through a name: `5 is None` (a folded operand) is a SyntaxWarning in Python.
        value = self.tmp()
        return f"(({value} := {operand}) is {'not ' if node.negated else ''}None)"

    # -- functions ------------------------------------------------------------------------------

    _HELPERS = {"days_between": "days_between", "day_of_month": "day_of_month", "day_of_year": "day_of_year",
                "day_of_week": "day_of_week", "month": "month", "year": "year", "hour": "hour",
                "date": "local_date", "days": "whole_days", "abs": "absolute", "lower": "lower",
                "upper": "upper", "contains": "contains", "starts_with": "starts_with",
                "ends_with": "ends_with", "length": "length"}

    def call_py(self, node: ast.Call) -> str:
        func = node.func
        if func == "coalesce":
            return self._coalesce(node)
        if func == "days_between":
            return f"date_diff({self._local_day(node.args[0])}, {self._local_day(node.args[1])})"
        args = [self.expr(arg) for arg in node.args]
        if func in ("min", "max"):
            args = [self.coerce(code, arg, node.type) for code, arg in zip(args, node.args)]
            return f"{'least' if func == 'min' else 'greatest'}({', '.join(args)})"
        if func == "round":
            if len(node.args) == 1:
                return f"round_to_int({args[0]})"
            digits = node.args[1].value  # type: ignore[union-attr]
            return f"round_half_away({args[0]}, {int(digits)!r})"  # type: ignore[arg-type]
        if func == "nullif":
            a = self.tmp()
            common = t.unify(node.args[0].type, node.args[1].type)  # compare like `==` does
            value, other = (self.coerce(code, arg, common) for code, arg in zip(args, node.args))
            return f"(None if ({a} := {value}) is None or {a} == {other} else {args[0]})"
        if func == "days_until_anniversary":
            return f"days_until_anniversary({args[0]}, {self._today()})"
        helper = self._HELPERS.get(func)
        if helper is None:
            raise ValueError(f"no Python implementation of {func}()")
        return f"{helper}({', '.join(args)})"

    def _local_day(self, node: ast.Expr) -> str:
        """The calendar day of a date or timestamp; found once per evaluation when it is invariant."""
        if self.in_factory or not is_invariant(node):
            code = self.expr(node)
            return code if _kind(node) == "date" else f"local_date({code})"
        key = "day of:" + ast.to_source(node)
        if key not in self.unit.hoisted:
            code = ExprCompiler(self.unit, self.unit.factory_lines, Scope(), in_factory=True).expr(node)
            self.unit.hoisted[key] = self.unit.factory_var("day", f"local_date({code})")
        return self.unit.hoisted[key]

    def _today(self) -> str:
        if self.in_factory:
            return "local_date(as_of)"
        return self.unit.today_var()

    def _coalesce(self, node: ast.Call) -> str:
        *heads, last = node.args
        code = self.coerce(self.expr(last), last, node.type)
        for arg in reversed(heads):
            a = self.tmp()
            value = self.coerce(self.expr(arg), arg, node.type)
            code = f"({a} if ({a} := {value}) is not None else {code})"
        return code

    # -- aggregates -----------------------------------------------------------------------------

    def eventaggregate_py(self, node: ast.EventAggregate) -> str:
        key = ast.to_source(node)
        var = self.scope.aggregates.get(key)
        if var is None:
            var = emit_event_loop(self, node.table, [node])[key]
        return var

    def populationaggregate_py(self, node: ast.PopulationAggregate) -> str:
        return self.unit.population(population_key(node))

    def ranking_py(self, node: ast.Ranking) -> str:
        value = self.expr(node.value)
        key = population_key(node)
        if node.func == "rank":
            return f"{self.unit.population(key, '.rank')}({value})"
        if node.func == "ntile":
            buckets = int(node.buckets.value)  # type: ignore[union-attr]
            return f"{self.unit.population(key, '.ntile')}({value}, {buckets!r})"
        return f"{self.unit.population(key, '.percent_rank')}({value})"


def _constant_list(node: ast.Expr) -> bool:
    return isinstance(node, ast.ListLiteral) and all(isinstance(item, ast.Literal) for item in node.items)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass
class _AggregateState:
    node: ast.EventAggregate
    var: str
    extra: str | None = None  # the count of avg, the time of first/last


def emit_event_loop(compiler: ExprCompiler, table_name: str, nodes: list[ast.EventAggregate]) -> dict[str, str]:
    """One pass over a member's rows of one event table computing several aggregates.

    Returns aggregate text → the variable holding its value after the loop.
    """
    program = compiler.program
    table = program.tables[table_name]
    lines = compiler.lines
    rows = compiler.unit.rows(table_name, lines)
    result: dict[str, str] = {}
    states: list[_AggregateState] = []
    looped: list[_AggregateState] = []
    for node in nodes:
        key = ast.to_source(node)
        if key in result:
            continue
        state = _AggregateState(node, program.fresh("a"))
        result[key] = state.var
        if node.func == "count" and node.field is None and node.within is None and node.where is None:
            lines.append(f"{state.var} = len({rows})")
            continue
        states.append(state)
        looped.append(state)
    if not looped:
        return result

    time_field = table.time
    time_type = table.fields.get(time_field) if time_field else None
    time_var = program.fresh("tm")
    needs_time = any(s.node.within is not None or s.node.func in ("first", "last") for s in looped) or any(
        isinstance(n, ast.Name) and n.ref == "event" and n.name == time_field
        for s in looped if s.node.where is not None for n in ast.walk(s.node.where))
    row = program.fresh("r")
    shared_time = (time_field, time_var) if needs_time and time_type is not None \
        and time_type.kind == "timestamp" else None
    inner = ExprCompiler(compiler.unit, [], Scope(compiler.scope.items, row=row, time=shared_time), compiler.in_factory)

    for state in looped:
        node = state.node
        if node.func == "count":
            lines.append(f"{state.var} = 0")
        elif node.func in ("sum", "avg"):
            kind = table.fields[node.field].kind  # type: ignore[index]
            zero = "0.0" if kind == "float" else ("0" if kind == "int" or node.func == "avg"
                                                  else program.constant(_decimal_zero(), "decimal"))
            lines.append(f"{state.var} = {zero}")
            if node.func == "avg":
                state.extra = program.fresh("n")
                lines.append(f"{state.extra} = 0")
        else:
            lines.append(f"{state.var} = None")
            if node.func in ("first", "last") and not (node.field == time_field and time_type is not None
                                                          and time_type.kind == "timestamp"):
                state.extra = program.fresh("at")
                lines.append(f"{state.extra} = None")

    # Group aggregates by window, then by filter, so each condition is tested once per row.
    groups: dict[str, dict[str, list[_AggregateState]]] = {}
    for state in looped:
        within = ast.to_source(state.node.within) if state.node.within is not None else ""
        where = ast.to_source(state.node.where) if state.node.where is not None else ""
        groups.setdefault(within, {}).setdefault(where, []).append(state)

    body: list[str] = []
    if needs_time:
        read = f"{row}[{time_field!r}]"
        if time_type is not None and time_type.kind == "date":
            read = f"to_timestamp({read})"
        body.append(f"{time_var} = {read}")
    time_nullable = time_type is None or time_type.nullable
    inner.lines = body

    for by_where in groups.values():
        first = next(iter(by_where.values()))[0].node
        indent = ""
        if first.within is not None:
            cutoff = _cutoff(compiler, first.within)
            test = f"{time_var} is not None and {cutoff} < {time_var}" if time_nullable else f"{cutoff} < {time_var}"
            body.append(f"if {test}:")
            indent = "    "
        for members in by_where.values():
            where = members[0].node.where
            inner_indent = indent
            if where is not None:
                code = inner.expr(where)
                body.append(f"{indent}if {code if not _nullable(where) else f'({code}) is True'}:")
                inner_indent = indent + "    "
            for state in members:
                body += [inner_indent + line for line in _update(state, row, time_var, table)]

    lines.append(f"for {row} in {rows}:")
    lines += ["    " + line for line in body]
    for state in looped:
        if state.node.func == "avg":
            kind = table.fields[state.node.field].kind  # type: ignore[index]
            lines.append(f"{state.var} = average({state.var}, {state.extra}, {kind == 'float'!r})")
    return result


def _decimal_zero():
    from decimal import Decimal

    return Decimal(0)


def _cutoff(compiler: ExprCompiler, within: ast.Expr) -> str:
    """`as_of - within`, hoisted into the factory when the duration is the same for everyone."""
    unit = compiler.unit
    if is_invariant(within) and not compiler.in_factory:
        key = "cutoff:" + ast.to_source(within)
        if key not in unit.hoisted:
            code = ExprCompiler(unit, unit.factory_lines, Scope(), in_factory=True).expr(within)
            unit.hoisted[key] = unit.factory_var("cut", f"ts_add(as_of, -{code})")
        return unit.hoisted[key]
    duration = compiler.expr(within)
    return f"ts_add(as_of, -{duration})"


def _update(state: _AggregateState, row: str, time_var: str, table: Table) -> list[str]:
    node, var = state.node, state.var
    func = node.func
    if node.field is None:
        return [f"{var} += 1"]
    field_type = table.fields[node.field]
    value = f"{row}[{node.field!r}]"
    nullable = field_type.nullable
    if func == "count":
        return [f"if {value} is not None:", f"    {var} += 1"] if nullable else [f"{var} += 1"]
    if func in ("sum", "avg"):
        count = [f"{state.extra} += 1"] if func == "avg" else []
        if not nullable:
            return [f"{var} += {value}"] + count
        v = f"{var}_v"
        return [f"{v} = {value}", f"if {v} is not None:", f"    {var} += {v}"] + ["    " + s for s in count]
    if func in ("min", "max"):
        better = "<" if func == "min" else ">"
        v = f"{var}_v"
        test = f"({var} is None or {v} {better} {var})"
        if nullable:
            test = f"{v} is not None and {test}"
        return [f"{v} = {value}", f"if {test}:", f"    {var} = {v}"]
    # first / last: by the table's time; among equal times the smallest / largest value.
    better = "<" if func == "first" else ">"
    if node.field == table.time and field_type.kind == "timestamp":
        test = f"({var} is None or {time_var} {better} {var})"
        if field_type.nullable:
            test = f"{time_var} is not None and {test}"
        return [f"if {test}:", f"    {var} = {time_var}"]
    v, at = f"{var}_v", state.extra
    test = (f"{v} is not None and {time_var} is not None and ({at} is None or {time_var} {better} {at} "
            f"or ({time_var} == {at} and {v} {better} {var}))")
    return [f"{v} = {value}", f"if {test}:", f"    {var} = {v}", f"    {at} = {time_var}"]
