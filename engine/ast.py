"""The typed syntax tree of expressions, and `to_source`, its canonical printer.

Nodes are frozen and compare without their spans, so `parse(to_source(node)) == node`
holds for every tree the parser can build (tests/test_properties.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Union

from .errors import Span
from .types import Type

EVENT_AGGREGATES = ("count", "sum", "avg", "min", "max", "first", "last")
POPULATION_AGGREGATES = ("count", "sum", "avg", "min", "max", "quantile")
RANKINGS = ("rank", "ntile", "percent_rank")

LiteralValue = Union[None, bool, int, Decimal, str, dt.timedelta, dt.date, dt.datetime]


@dataclass(frozen=True)
class Node:
    span: Span | None = field(default=None, compare=False, repr=False, kw_only=True)
    # Set by the checker (check_expr.py), which returns a typed copy of the tree.
    type: Type | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Literal(Node):
    """`12`, `19.90`, `'vip'`, `30d`, `@2026-11-01`, `true`, `null`."""

    kind: str
    value: LiteralValue


@dataclass(frozen=True)
class ListLiteral(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Name(Node):
    """A member field, param, metric, tier or class list, segment, or `as_of`."""

    name: str
    # What the name refers to, set by the checker: member, param, metric, tier, next_tier,
    # tier_gap, current_tier (the member field named by tiers.current), class, segment, as_of,
    # or event (a field of the aggregated event table).
    ref: str | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Attribute(Node):
    """`orders.amount`: a field of an event table, only meaningful inside an aggregate."""

    table: str
    field: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "not" or "-"
    operand: Expr


@dataclass(frozen=True)
class BinaryOp(Node):
    op: str  # + - * / % ?? and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Node):
    op: str  # == != < <= > >= in "not in"
    left: Expr
    right: Expr


@dataclass(frozen=True)
class IsNull(Node):
    operand: Expr
    negated: bool = False


@dataclass(frozen=True)
class Call(Node):
    """A scalar function: `days_between(a, b)`, `coalesce(a, b)`, `round(x, 2)`."""

    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class EventAggregate(Node):
    """`sum(orders.amount within 30d where category == 'food')`, per member."""

    func: str
    table: str
    field: str | None
    within: Expr | None = None
    where: Expr | None = None


@dataclass(frozen=True)
class PopulationAggregate(Node):
    """`avg(monetary over members where frequency > 0)`, `quantile(x, 0.8 over members)`."""

    func: str
    value: Expr
    fraction: Expr | None = None  # quantile only
    where: Expr | None = None


@dataclass(frozen=True)
class Ranking(Node):
    """`rank(x)`, `ntile(x, 5)`, `percent_rank(x)`: a member's place among all members."""

    func: str
    value: Expr
    buckets: Expr | None = None  # ntile only


Expr = Union[
    Literal, ListLiteral, Name, Attribute, Unary, BinaryOp, Compare, IsNull, Call,
    EventAggregate, PopulationAggregate, Ranking,
]


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, in source order."""
    match node:
        case ListLiteral(items=items):
            return items
        case Unary(operand=operand) | IsNull(operand=operand):
            return (operand,)
        case BinaryOp(left=left, right=right) | Compare(left=left, right=right):
            return (left, right)
        case Call(args=args):
            return args
        case EventAggregate(within=within, where=where):
            return tuple(e for e in (within, where) if e is not None)
        case PopulationAggregate(value=value, fraction=fraction, where=where):
            return tuple(e for e in (value, fraction, where) if e is not None)
        case Ranking(value=value, buckets=buckets):
            return tuple(e for e in (value, buckets) if e is not None)
    return ()


def walk(node: Expr):
    """Every node of the tree, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


# Binding strength, loosest first; the grammar's order (grammar/memberrules.lark).
_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "compare": 4, "??": 5, "+": 6, "-": 6,
               "*": 7, "/": 7, "%": 7, "neg": 8}
_ATOM = 9


def _precedence(node: Expr) -> int:
    match node:
        case BinaryOp(op=op):
            return _PRECEDENCE[op]
        case Compare() | IsNull():
            return _PRECEDENCE["compare"]
        case Unary(op="not"):
            return _PRECEDENCE["not"]
        case Unary(op="-"):
            return _PRECEDENCE["neg"]
    return _ATOM


def _wrap(node: Expr, minimum: int) -> str:
    text = to_source(node)
    return f"({text})" if _precedence(node) < minimum else text


def _wrap_operand(node: Expr) -> str:
    """A comparison operand: `??` binds tighter than `<=`, but readers expect otherwise, so
    `(recency_days ?? 9999) <= 30` keeps its parentheses."""
    if isinstance(node, BinaryOp) and node.op == "??":
        return f"({to_source(node)})"
    return _wrap(node, _PRECEDENCE["compare"] + 1)


_STRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote_string(value: str) -> str:
    return "'" + "".join(_STRING_ESCAPES.get(ch, ch) for ch in value) + "'"


_DURATION_UNITS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in _DURATION_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_literal(kind: str, value: LiteralValue) -> str:
    if kind == "null":
        return "null"
    if kind == "bool":
        return "true" if value else "false"
    if kind == "string":
        return quote_string(value)  # type: ignore[arg-type]
    if kind == "duration":
        return format_duration(value)  # type: ignore[arg-type]
    if kind == "date":
        return "@" + value.isoformat()  # type: ignore[union-attr]
    if kind == "timestamp":
        return "@" + value.strftime("%Y-%m-%dT%H:%M:%S")  # type: ignore[union-attr]
    return str(value)


def _clauses(within: Expr | None, where: Expr | None) -> str:
    text = ""
    if within is not None:
        text += " within " + _wrap(within, _PRECEDENCE["+"])
    if where is not None:
        text += " where " + to_source(where)
    return text


def to_source(node: Expr) -> str:
    """The canonical text of an expression: single-quoted strings, minimal parentheses.

    >>> from .parse import parse_expr
    >>> to_source(parse_expr("(a+b) * 2 > 3 and not(x)").expr)
    '(a + b) * 2 > 3 and not x'
    """
    match node:
        case Literal(kind=kind, value=value):
            return format_literal(kind, value)
        case ListLiteral(items=items):
            return "[" + ", ".join(to_source(item) for item in items) + "]"
        case Name(name=name):
            return name
        case Attribute(table=table, field=field_name):
            return f"{table}.{field_name}"
        case Unary(op="not", operand=operand):
            return "not " + _wrap(operand, _PRECEDENCE["not"])
        case Unary(op="-", operand=operand):
            return "-" + _wrap(operand, _PRECEDENCE["neg"])
        case BinaryOp(op="??", left=left, right=right):
            # Arithmetic binds tighter than `??`, but `(6 - x) ?? 1` reads better bracketed.
            left_level = _ATOM if isinstance(left, BinaryOp) else _PRECEDENCE["??"]
            right_level = _ATOM if isinstance(right, BinaryOp) else _PRECEDENCE["??"] + 1
            return f"{_wrap(left, left_level)} ?? {_wrap(right, right_level)}"
        case BinaryOp(op=op, left=left, right=right):
            level = _PRECEDENCE[op]
            return f"{_wrap(left, level)} {op} {_wrap(right, level + 1)}"
        case Compare(op=op, left=left, right=right):
            return f"{_wrap_operand(left)} {op} {_wrap_operand(right)}"
        case IsNull(operand=operand, negated=negated):
            suffix = " is not null" if negated else " is null"
            return _wrap_operand(operand) + suffix
        case Call(func=func, args=args):
            return f"{func}(" + ", ".join(to_source(arg) for arg in args) + ")"
        case EventAggregate(func=func, table=table, field=field_name, within=within, where=where):
            source = table if field_name is None else f"{table}.{field_name}"
            return f"{func}({source}{_clauses(within, where)})"
        case PopulationAggregate(func=func, value=value, fraction=fraction, where=where):
            head = to_source(value) + ("" if fraction is None else ", " + to_source(fraction))
            return f"{func}({head} over members{_clauses(None, where)})"
        case Ranking(func=func, value=value, buckets=buckets):
            tail = "" if buckets is None else ", " + to_source(buckets)
            return f"{func}({to_source(value)}{tail})"
    raise TypeError(f"not an expression node: {node!r}")
