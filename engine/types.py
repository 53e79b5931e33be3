"""The value types of the expression language (SPEC §3) and how they combine."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCALAR_KINDS = ("bool", "int", "decimal", "float", "string", "date", "timestamp", "duration")
NUMERIC_KINDS = ("int", "decimal", "float")
ORDERED_KINDS = NUMERIC_KINDS + ("string", "date", "timestamp", "duration")


@dataclass(frozen=True)
class Type:
    """A type: a kind, whether null is allowed, and the item type of a list.

    The kind `null` is the type of the literal `null`; `error` marks an expression
    that already has a diagnostic and unifies with anything, so one mistake gives
    one message.

    >>> str(parse_type("list<string>?"))
    'list<string>?'
    """

    kind: str
    nullable: bool = False
    item: Type | None = None

    def __str__(self) -> str:
        text = f"list<{self.item}>" if self.kind == "list" else self.kind
        return text + "?" if self.nullable and self.kind not in ("null", "error") else text

    @property
    def is_error(self) -> bool:
        return self.kind == "error"

    @property
    def is_numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    def with_null(self, nullable: bool = True) -> Type:
        if self.kind in ("null", "error"):
            return self
        return Type(self.kind, nullable, self.item)


BOOL = Type("bool")
INT = Type("int")
DECIMAL = Type("decimal")
FLOAT = Type("float")
STRING = Type("string")
DATE = Type("date")
TIMESTAMP = Type("timestamp")
DURATION = Type("duration")
NULL = Type("null", True)
ERROR = Type("error", True)


def list_of(item: Type, nullable: bool = False) -> Type:
    return Type("list", nullable, item)


_TYPE_RE = re.compile(r"^\s*(?:list\s*<\s*(?P<item>[a-z]+\??)\s*>|(?P<kind>[a-z]+))\s*(?P<q>\?)?\s*$")


class TypeSyntaxError(ValueError):
    """A schema type such as `lsit<string>` that does not name a type."""


def parse_type(text: str) -> Type:
    """Read a schema type: `int`, `date?`, `list<string>`.

    >>> parse_type("decimal?")
    Type(kind='decimal', nullable=True, item=None)
    """
    match = _TYPE_RE.match(text)
    if not match:
        raise TypeSyntaxError(f"'{text}' is not a type")
    if match["item"]:
        item_text = match["item"]
        item = parse_type(item_text)
        return list_of(item, bool(match["q"]))
    kind = match["kind"]
    if kind not in SCALAR_KINDS:
        raise TypeSyntaxError(f"'{kind}' is not a type")
    return Type(kind, bool(match["q"]))


def type_names() -> list[str]:
    return list(SCALAR_KINDS) + ["list<T>"]


def numeric_result(left: Type, right: Type) -> Type | None:
    """The kind two numbers combine to under + - * %; None when either is not numeric."""
    if not (left.is_numeric and right.is_numeric):
        return None
    kinds = {left.kind, right.kind}
    if "float" in kinds:
        return FLOAT
    if "decimal" in kinds:
        return DECIMAL
    return INT


def comparable(left: Type, right: Type) -> bool:
    """Whether `left == right` (and, for ordered kinds, `<`) makes sense."""
    if left.kind in ("null", "error") or right.kind in ("null", "error"):
        return True
    if left.is_numeric and right.is_numeric:
        return True
    if {left.kind, right.kind} == {"date", "timestamp"}:
        return True
    if left.kind == "list" and right.kind == "list":
        return left.item is None or right.item is None or comparable(left.item, right.item)
    return left.kind == right.kind


def unify(left: Type, right: Type) -> Type | None:
    """The common type of two branches (coalesce, list items, min/max); None when none."""
    if left.is_error or right.is_error:
        return ERROR
    if left.kind == "null":
        return right.with_null()
    if right.kind == "null":
        return left.with_null()
    nullable = left.nullable or right.nullable
    if left.kind == right.kind and left.kind != "list":
        return Type(left.kind, nullable)
    if left.kind == "list" and right.kind == "list":
        if left.item is None or right.item is None:
            return list_of(left.item or right.item, nullable)  # type: ignore[arg-type]
        item = unify(left.item, right.item)
        return None if item is None else list_of(item, nullable)
    number = numeric_result(left, right)
    if number is not None:
        return number.with_null(nullable)
    if {left.kind, right.kind} == {"date", "timestamp"}:
        return TIMESTAMP.with_null(nullable)
    return None
