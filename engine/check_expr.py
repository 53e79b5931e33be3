"""Type-checking one expression: names, types and nulls → a typed copy of the tree.

Problems are collected, never raised. A node whose check failed gets the `error`
type, which combines silently with anything, so one mistake gives one diagnostic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ast
from . import types as t
from .errors import Diagnostic, Span, did_you_mean
from .functions import FUNCTIONS, FunctionError


@dataclass(frozen=True)
class Symbol:
    """A name an expression may use, what it is, and where it was defined."""

    name: str
    # member, param, metric, tier, next_tier, tier_gap, current_tier (the member field named by
    # tiers.current), class, segment, as_of, event
    ref: str
    type: t.Type
    span: Span | None = None
    values: tuple[str, ...] = ()  # the names a tier or class list can take, for typo checks


@dataclass(frozen=True)
class Table:
    """A snapshot table as the checker sees it."""

    name: str
    key: str
    time: str | None
    fields: dict[str, t.Type]


@dataclass(frozen=True)
class Context:
    event_table: Table | None = None  # inside count(orders where …)
    in_population: bool = False  # inside avg(x over members …)
    non_null: frozenset[str] = frozenset()  # names proven non-null by an enclosing `and`/`or`


KIND_WORDS = {"member": "member field", "param": "param", "metric": "metric", "tier": "the tier",
              "next_tier": "the next tier", "current_tier": "the tier held before this run", "tier_gap": "the gap to the next tier", "class": "class list",
              "segment": "segment", "as_of": "the evaluation instant", "event": "event field"}


@dataclass
class ExprChecker:
    """Checks expressions against a set of names; one instance per rule set."""

    lookup: Callable[[str], Symbol | None]
    all_names: Callable[[], list[Symbol]]
    tables: dict[str, Table]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    references: set[str] = field(default_factory=set)

    def error(self, code: str, message: str, node: ast.Node, hint: str | None = None,
              related: tuple = ()) -> None:
        self.diagnostics.append(Diagnostic(code, message, node.span, hint=hint, related=related))

    def check(self, node: ast.Expr, ctx: Context = Context()) -> ast.Expr:
        method = getattr(self, "check_" + type(node).__name__.lower())
        return method(node, ctx)

    @staticmethod
    def typed(node: ast.Expr, type_: t.Type, **changes) -> ast.Expr:
        return dataclasses.replace(node, type=type_, **changes)

    # -- leaves -------------------------------------------------------------------------------

    def check_literal(self, node: ast.Literal, ctx: Context) -> ast.Expr:
        kind = node.kind
        return self.typed(node, t.NULL if kind == "null" else t.Type(kind))

    def check_listliteral(self, node: ast.ListLiteral, ctx: Context) -> ast.Expr:
        items = tuple(self.check(item, ctx) for item in node.items)
        # Start from the first item, not from NULL: unify(NULL, string) is string?, which
        # made ['a', 'b'] a list<string?> and every `x in [...]` nullable.
        item_type: t.Type = items[0].type if items else t.NULL
        for item in items[1:]:
            combined = t.unify(item_type, item.type)
            if combined is None:
                self.error("MR302", f"a list cannot mix {item_type} and {item.type}", item)
                combined = t.ERROR
            item_type = combined
        return self.typed(node, t.list_of(item_type), items=items)

    def check_name(self, node: ast.Name, ctx: Context) -> ast.Expr:
        table = ctx.event_table
        if table is not None and node.name in table.fields:
            type_ = table.fields[node.name]
            if node.name in ctx.non_null:
                type_ = type_.with_null(False)
            return self.typed(node, type_, ref="event")
        symbol = self.lookup(node.name)
        if symbol is None:
            return self._unknown_name(node, ctx)
        self.references.add(node.name)
        type_ = symbol.type.with_null(False) if node.name in ctx.non_null else symbol.type
        return self.typed(node, type_, ref=symbol.ref)

    def _unknown_name(self, node: ast.Name, ctx: Context) -> ast.Expr:
        if node.name in self.tables and node.name != "member":
            self.error("MR305", f"'{node.name}' is an event table, not a value", node,
                       hint=f"aggregate it, e.g. count({node.name}) or count({node.name} within 30d)")
            return self.typed(node, t.ERROR)
        candidates = {s.name: s for s in self.all_names()}
        if ctx.event_table is not None:
            candidates.update({f: Symbol(f, "event", ty) for f, ty in ctx.event_table.fields.items()})
        guess = did_you_mean(node.name, candidates)
        hint = None
        if guess:
            symbol = candidates[guess]
            where = f", {symbol.span}" if symbol.span else ""
            hint = f"did you mean '{guess}'? ({KIND_WORDS[symbol.ref]}{where})"
        self.error("MR301", f"unknown name '{node.name}'", node, hint=hint)
        return self.typed(node, t.ERROR)

    def check_attribute(self, node: ast.Attribute, ctx: Context) -> ast.Expr:
        if node.table in self.tables and node.table != "member":
            self.error("MR306", f"{node.table}.{node.field} is a field of many events, not one value", node,
                       hint=f"aggregate it, e.g. sum({node.table}.{node.field} within 30d) "
                            f"or last({node.table}.{node.field})")
        elif node.table == "member":
            self.error("MR306", f"write '{node.field}', not 'member.{node.field}', in expressions", node,
                       hint="member fields are plain names; member.x is for templates")
        else:
            self.error("MR301", f"unknown table '{node.table}'", node,
                       hint=_suggest(node.table, [n for n in self.tables if n != "member"], "event table"))
        return self.typed(node, t.ERROR)

    # -- operators ----------------------------------------------------------------------------

    def check_unary(self, node: ast.Unary, ctx: Context) -> ast.Expr:
        operand = self.check(node.operand, ctx)
        ty = operand.type
        if node.op == "not":
            if not ty.is_error and ty.kind not in ("bool", "null"):
                self.error("MR302", f"'not' needs a bool, got {ty}", operand)
                return self.typed(node, t.ERROR, operand=operand)
            return self.typed(node, t.BOOL.with_null(ty.nullable), operand=operand)
        if not (ty.is_error or ty.is_numeric or ty.kind in ("duration", "null")):
            self.error("MR302", f"cannot negate {ty}", operand)
            return self.typed(node, t.ERROR, operand=operand)
        return self.typed(node, ty, operand=operand)

    def check_binaryop(self, node: ast.BinaryOp, ctx: Context) -> ast.Expr:
        if node.op in ("and", "or"):
            return self._check_logic(node, ctx)
        left = self.check(node.left, ctx)
        right = self.check(node.right, ctx)
        if node.op == "??":
            return self._check_coalesce(node, left, right)
        result = _arithmetic(node.op, left.type, right.type)
        if result is not None and node.op in ("/", "%") and not _is_nonzero_literal(node.right):
            result = result.with_null()  # x / 0 is null (docs/SEMANTICS.md)
        if result is None:
            self.error("MR302", f"cannot {_OP_VERBS[node.op]} {left.type} and {right.type}", node,
                       hint=_arithmetic_hint(node.op, left.type, right.type))
            result = t.ERROR
        return self.typed(node, result, left=left, right=right)

    def _check_logic(self, node: ast.BinaryOp, ctx: Context) -> ast.Expr:
        left = self.check(node.left, ctx)
        # `x is not null and x > 3`: the right side knows x is not null (and `x is null or …`).
        facts = non_null_facts(node.left, node.op == "and")
        right = self.check(node.right, dataclasses.replace(ctx, non_null=ctx.non_null | facts))
        for side in (left, right):
            if not side.type.is_error and side.type.kind not in ("bool", "null"):
                self.error("MR302", f"'{node.op}' needs bools on both sides, got {side.type}", side)
        nullable = left.type.nullable or right.type.nullable
        return self.typed(node, t.BOOL.with_null(nullable), left=left, right=right)

    def _check_coalesce(self, node: ast.BinaryOp, left: ast.Expr, right: ast.Expr) -> ast.Expr:
        combined = t.unify(left.type, right.type)
        if combined is None:
            self.error("MR302", f"'??' needs the same kind on both sides, got {left.type} and {right.type}", node)
            return self.typed(node, t.ERROR, left=left, right=right)
        if not left.type.nullable and not left.type.is_error:
            self.diagnostics.append(Diagnostic(
                "MR411", f"the left side of '??' is never null, so '{ast.to_source(node.right)}' is never used",
                node.span, severity="warning"))
        return self.typed(node, combined.with_null(right.type.nullable), left=left, right=right)

    def check_compare(self, node: ast.Compare, ctx: Context) -> ast.Expr:
        left = self.check(node.left, ctx)
        right = self.check(node.right, ctx)
        lt, rt = left.type, right.type
        nullable = lt.nullable or rt.nullable
        if node.op in ("in", "not in"):
            if rt.is_error or lt.is_error:
                return self.typed(node, t.BOOL.with_null(nullable), left=left, right=right)
            if rt.kind != "list":
                hint = "use contains(text, part) for text" if rt.kind == "string" else None
                self.error("MR302", f"'{node.op}' needs a list on the right, got {rt}", right, hint=hint)
                return self.typed(node, t.ERROR, left=left, right=right)
            if rt.item is not None and not t.comparable(lt, rt.item):
                self.error("MR302", f"cannot look for {lt} in {rt}", node)
                return self.typed(node, t.ERROR, left=left, right=right)
            self._check_known_values(left, right)
            item_nullable = rt.item is not None and rt.item.nullable
            return self.typed(node, t.BOOL.with_null(nullable or item_nullable), left=left, right=right)
        if not t.comparable(lt, rt):
            self.error("MR302", f"cannot compare {lt} with {rt}", node, hint=_compare_hint(lt, rt))
            return self.typed(node, t.ERROR, left=left, right=right)
        ordered = node.op not in ("==", "!=")
        for side in (left, right):
            kind = side.type.kind
            if ordered and kind in ("bool", "list"):
                self.error("MR302", f"'{node.op}' does not order {side.type} values", side)
                return self.typed(node, t.ERROR, left=left, right=right)
        if lt.kind == "null" or rt.kind == "null":
            self.error("MR302", f"'{node.op} null' is always unknown", node,
                       hint="write 'is null' or 'is not null'")
            return self.typed(node, t.ERROR, left=left, right=right)
        self._check_known_values(left, right)
        self._check_known_values(right, left)
        return self.typed(node, t.BOOL.with_null(nullable), left=left, right=right)

    def _check_known_values(self, name_side: ast.Expr, value_side: ast.Expr) -> None:
        """`lifecycle == 'dormnt'`: a class or tier name that does not exist is a typo."""
        if not isinstance(name_side, ast.Name) or name_side.ref not in ("class", "tier", "next_tier"):
            return
        symbol = self.lookup(name_side.name)
        if symbol is None or not symbol.values:
            return
        literals = value_side.items if isinstance(value_side, ast.ListLiteral) else (value_side,)
        for literal in literals:
            if isinstance(literal, ast.Literal) and literal.kind == "string" and literal.value not in symbol.values:
                hint = _suggest(literal.value, symbol.values, KIND_WORDS[symbol.ref].removeprefix("the "))
                self.error("MR309", f"'{literal.value}' is not one of {name_side.name}'s values "
                                    f"({', '.join(symbol.values)})", literal, hint=hint)

    def check_isnull(self, node: ast.IsNull, ctx: Context) -> ast.Expr:
        operand = self.check(node.operand, ctx)
        if not operand.type.nullable and not operand.type.is_error:
            words = "is not null" if node.negated else "is null"
            self.diagnostics.append(Diagnostic(
                "MR412", f"'{ast.to_source(node.operand)}' is never null, so '{words}' is always "
                         f"{'true' if node.negated else 'false'}", node.span, severity="warning"))
        return self.typed(node, t.BOOL, operand=operand)

    # -- calls --------------------------------------------------------------------------------

    def check_call(self, node: ast.Call, ctx: Context) -> ast.Expr:
        args = tuple(self.check(arg, ctx) for arg in node.args)
        signature = FUNCTIONS.get(node.func)
        if signature is None:
            hint = _suggest(node.func, list(FUNCTIONS) + list(ast.EVENT_AGGREGATES) + list(ast.RANKINGS),
                            "function")
            if node.func in ast.EVENT_AGGREGATES:
                hint = (f"{node.func} of one value is itself; over events write {node.func}(orders.amount), "
                        f"over members {node.func}(x over members)")
            self.error("MR303", f"unknown function '{node.func}'", node, hint=hint)
            return self.typed(node, t.ERROR, args=args)
        if any(arg.type.is_error for arg in args):
            return self.typed(node, t.ERROR, args=args)
        try:
            result = signature.result([arg.type for arg in args], args)
        except FunctionError as problem:
            self.error("MR304", f"{node.func}(…): {problem.message}", node, hint=signature.usage)
            return self.typed(node, t.ERROR, args=args)
        return self.typed(node, result, args=args)

    def check_eventaggregate(self, node: ast.EventAggregate, ctx: Context) -> ast.Expr:
        if ctx.event_table is not None:
            self.error("MR308", "an event aggregate cannot stand inside another one's 'where'", node)
            return self.typed(node, t.ERROR)
        table = self.tables.get(node.table)
        if table is None or node.table == "member":
            return self._not_an_event_table(node)
        within = where = None
        if node.within is not None:
            within = self.check(node.within, ctx)
            wt = within.type
            if not wt.is_error and wt.kind != "duration":
                hint = f"write {ast.to_source(node.within)}d for days" if wt.kind == "int" else None
                self.error("MR307", f"'within' needs a duration such as 30d, got {wt}", within, hint=hint)
            elif wt.nullable:
                self.error("MR307", "'within' needs a duration that is never null", within)
            if table.time is None:
                self.error("MR307", f"'{node.table}' has no time column, so 'within' cannot apply", within,
                           hint=f"declare time: in schema.{node.table}")
        if node.where is not None:
            where = self.check(node.where, dataclasses.replace(ctx, event_table=table))
            if not where.type.is_error and where.type.kind not in ("bool", "null"):
                self.error("MR302", f"'where' needs a bool condition, got {where.type}", where)
        result = self._event_result(node, table)
        return self.typed(node, result, within=within, where=where)

    def _not_an_event_table(self, node: ast.EventAggregate) -> ast.Expr:
        events = [name for name in self.tables if name != "member"]
        symbol = self.lookup(node.table)
        if symbol is not None and node.field is None:
            self.references.add(node.table)
            if node.func in ("count", "sum", "avg", "min", "max"):
                hint = (f"over all members write {node.func}({node.table} over members); "
                        f"of several values, {node.func}(a, b)")
            else:
                hint = f"{node.func}(…) takes an event field, e.g. {node.func}({events[0]}.…)" if events else None
            self.error("MR305", f"'{node.table}' is a {KIND_WORDS[symbol.ref]}, not an event table", node,
                       hint=hint)
        else:
            self.error("MR305", f"unknown event table '{node.table}'", node,
                       hint=_suggest(node.table, events, "event table"))
        return self.typed(node, t.ERROR)

    def _event_result(self, node: ast.EventAggregate, table: Table) -> t.Type:
        func = node.func
        if node.field is None:
            if func == "count":
                return t.INT
            self.error("MR306", f"{func}({node.table}) needs a field", node,
                       hint=f"write {func}({node.table}.<field>), e.g. {func}({node.table}.{table.time or 'x'})")
            return t.ERROR
        field_type = table.fields.get(node.field)
        if field_type is None:
            self.error("MR301", f"'{node.table}' has no field '{node.field}'", node,
                       hint=_suggest(node.field, list(table.fields), f"field of {node.table}"))
            return t.ERROR
        if func == "count":
            return t.INT
        if func in ("sum", "avg") and not field_type.is_numeric:
            self.error("MR306", f"cannot {func} {node.table}.{node.field}: it is {field_type}, not a number", node)
            return t.ERROR
        if func in ("min", "max") and field_type.kind not in t.ORDERED_KINDS:
            self.error("MR306", f"cannot take the {func} of {field_type}", node)
            return t.ERROR
        if func == "sum":
            return field_type.with_null(False)
        if func == "avg":
            return (t.FLOAT if field_type.kind == "float" else t.DECIMAL).with_null()
        return field_type.with_null()

    def check_populationaggregate(self, node: ast.PopulationAggregate, ctx: Context) -> ast.Expr:
        if ctx.event_table is not None or ctx.in_population:
            self.error("MR308", "a population aggregate cannot stand inside an aggregate", node,
                       hint="compute the inner value as a metric first")
            return self.typed(node, t.ERROR)
        inner = Context(in_population=True)
        value = self.check(node.value, inner)
        where = None
        if node.where is not None:
            where = self.check(node.where, inner)
            if not where.type.is_error and where.type.kind not in ("bool", "null"):
                self.error("MR302", f"'where' needs a bool condition, got {where.type}", where)
        fraction = None
        if node.fraction is not None:
            fraction = self.check(node.fraction, inner)
            if not _is_constant_fraction(node.fraction):
                self.error("MR304", "the quantile must be a number between 0 and 1, such as 0.8", fraction)
        vt = value.type
        result: t.Type = t.ERROR
        if vt.is_error:
            pass
        elif node.func == "count":
            result = t.INT
        elif node.func in ("sum", "avg") and not vt.is_numeric:
            self.error("MR306", f"cannot {node.func} {vt} over members: it is not a number", value)
        elif node.func in ("min", "max", "quantile") and vt.kind not in t.ORDERED_KINDS:
            self.error("MR306", f"cannot take the {node.func} of {vt} over members", value)
        elif node.func == "sum":
            result = vt.with_null(False)
        elif node.func == "avg":
            result = (t.FLOAT if vt.kind == "float" else t.DECIMAL).with_null()
        else:
            result = vt.with_null()
        return self.typed(node, result, value=value, where=where, fraction=fraction)

    def check_ranking(self, node: ast.Ranking, ctx: Context) -> ast.Expr:
        if ctx.event_table is not None or ctx.in_population:
            self.error("MR308", f"{node.func}(…) cannot stand inside an aggregate", node,
                       hint="compute it as a metric first")
            return self.typed(node, t.ERROR)
        value = self.check(node.value, Context(in_population=True))
        buckets = None
        if node.buckets is not None:
            buckets = self.check(node.buckets, ctx)
            literal = node.buckets
            if not (isinstance(literal, ast.Literal) and literal.kind == "int" and 0 < literal.value <= 1000):
                self.error("MR304", "ntile needs a whole number of buckets from 1 to 1000, such as 5", buckets)
        if not value.type.is_error and value.type.kind not in t.ORDERED_KINDS:
            self.error("MR306", f"cannot rank {value.type} values", value)
            return self.typed(node, t.ERROR, value=value, buckets=buckets)
        result = t.FLOAT if node.func == "percent_rank" else t.INT
        return self.typed(node, result.with_null(value.type.nullable), value=value, buckets=buckets)


def _is_nonzero_literal(node: ast.Expr) -> bool:
    return isinstance(node, ast.Literal) and node.kind in ("int", "decimal", "float") and node.value != 0


def _is_constant_fraction(node: ast.Expr) -> bool:
    return isinstance(node, ast.Literal) and node.kind in ("decimal", "int") and 0 <= node.value <= 1


def non_null_facts(node: ast.Expr, when_true: bool) -> frozenset[str]:
    """Names that cannot be null when `node` evaluates to `when_true`."""
    match node:
        case ast.IsNull(operand=ast.Name(name=name), negated=negated):
            return frozenset({name}) if negated == when_true else frozenset()
        case ast.Unary(op="not", operand=operand):
            return non_null_facts(operand, not when_true)
        case ast.BinaryOp(op="and", left=left, right=right) if when_true:
            return non_null_facts(left, True) | non_null_facts(right, True)
        case ast.BinaryOp(op="or", left=left, right=right) if not when_true:
            return non_null_facts(left, False) | non_null_facts(right, False)
    return frozenset()


_OP_VERBS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the remainder of"}


def _arithmetic(op: str, left: t.Type, right: t.Type) -> t.Type | None:
    if left.is_error or right.is_error:
        return t.ERROR
    nullable = left.nullable or right.nullable
    if left.kind == "null" or right.kind == "null":
        other = right if left.kind == "null" else left
        return (other if other.kind != "null" else t.NULL).with_null()
    kinds = (left.kind, right.kind)
    number = t.numeric_result(left, right)
    result: t.Type | None = None
    if op in ("+", "-", "*") and number is not None:
        result = number
    elif op == "/" and number is not None:
        result = t.FLOAT if number.kind == "float" else t.DECIMAL
    elif op == "%" and number is not None and number.kind != "float":
        result = number
    elif op == "+" and kinds == ("string", "string"):
        result = t.STRING
    elif op in ("+", "-") and kinds in (("timestamp", "duration"), ("date", "duration")):
        result = left
    elif op == "+" and kinds in (("duration", "timestamp"), ("duration", "date")):
        result = right
    elif op in ("+", "-") and kinds == ("duration", "duration"):
        result = t.DURATION
    elif op == "-" and kinds in (("timestamp", "timestamp"), ("date", "date")):
        result = t.DURATION
    elif op == "*" and kinds in (("duration", "int"), ("int", "duration")):
        result = t.DURATION
    return None if result is None else result.with_null(nullable)


def _arithmetic_hint(op: str, left: t.Type, right: t.Type) -> str | None:
    kinds = {left.kind, right.kind}
    if kinds == {"timestamp", "int"} or kinds == {"date", "int"}:
        return "add a duration, e.g. as_of - 30d"
    if "string" in kinds and op == "+":
        return "only two strings join with '+'"
    if kinds == {"date", "timestamp"} and op == "-":
        return "use days_between(a, b), or date(ts) to compare dates"
    return None


def _compare_hint(left: t.Type, right: t.Type) -> str | None:
    kinds = {left.kind, right.kind}
    if kinds & {"date", "timestamp"} and kinds & {"int", "decimal"}:
        return "compare with a date such as @2026-11-01, or use days_between(a, b)"
    if kinds == {"duration", "int"}:
        return "write a duration such as 30d"
    if kinds == {"string", "int"} or kinds == {"string", "decimal"}:
        return "quote the number, or compare with a number field"
    return None


def _suggest(word: str, candidates, kind_word: str) -> str | None:
    guess = did_you_mean(word, candidates)
    return f"did you mean '{guess}'? ({kind_word})" if guess else None
