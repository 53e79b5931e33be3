"""Messages for many members at once: simple templates rendered a column at a time.

Most action templates are text with `{{ name }}` and `{{ member.field }}` in it. Such a
template is a list of parts (literal text, or one value), and its messages are those
parts joined element-wise over Arrow columns, each value printed as Jinja2 prints it in
templates.environment(): `str(value)`, and nothing for null. Only values whose `str` Arrow
reproduces exactly take this path: strings, integers, booleans, dates and exact decimals.
Every other template (filters, tests, `{% if %}`, arithmetic, floats, timestamps, lists)
renders member by member in Jinja2's sandbox, exactly as on the Python engine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import TemplateSyntaxError, nodes

from . import types as t
from .results_arrow import decimal_texts
from .templates import environment

# Value kinds printed by Arrow exactly as str() prints the Python value.
PRINTABLE = ("string", "int", "bool", "date", "decimal")


@dataclass(frozen=True)
class Value:
    """A value a template prints: `{{ name }}`, or `{{ member.attr }}` (name "member")."""

    name: str
    attr: str | None = None


@functools.lru_cache(maxsize=1024)
def simple_parts(text: str) -> tuple[str | Value, ...] | None:
    """The template as literal text and printed values, or None when it is more than that.

    >>> simple_parts("Hi {{ member.name }}, you are {{ tier }}.")
    ('Hi ', Value(name='member', attr='name'), ', you are ', Value(name='tier', attr=None), '.')
    >>> simple_parts("{{ spend | round(1) }}") is None
    True
    """
    try:
        tree = environment().parse(text)
    except TemplateSyntaxError:
        return None
    parts: list[str | Value] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                parts.append(Value(node.name))
            elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) \
                    and node.node.name == "member" and not hasattr(dict, node.attr):
                # On a dict, the sandbox finds a method before a key: `member.items` is not a field.
                parts.append(Value("member", node.attr))
            else:
                return None
    return tuple(parts)


def printed(array: pa.Array, type_: t.Type) -> pa.Array | None:
    """The text Jinja2 prints for each value (`""` for null), or None for a kind Arrow cannot print
    the way Python's str() does."""
    kind = type_.kind
    if kind == "string":
        text = array.cast(pa.string())
    elif kind == "int":
        text = array.cast(pa.int64()).cast(pa.string())
    elif kind == "bool":
        text = pc.if_else(array, "True", "False")
    elif kind == "date":
        text = array.cast(pa.date32()).cast(pa.string())
        if pc.any(pc.not_equal(pc.utf8_length(text), 10)).as_py():
            return None  # years outside 1000–9999: Python pads them differently
    elif kind == "decimal" and pa.types.is_decimal(array.type):
        text = _decimal_strs(array)
    else:
        return None
    return pc.fill_null(text, "")


def _decimal_strs(array: pa.Array) -> pa.Array:
    """str(Decimal(decimal_text(v))): the canonical text, except that str() writes values
    below 1e-6 in scientific notation (`1E-7`); those few go through Decimal."""
    text = decimal_texts(array)
    tiny = pc.fill_null(pc.match_substring_regex(text, r"^-?0\.000000"), False)
    if pc.any(tiny).as_py():
        fixed = [str(Decimal(v)) for v in pc.filter(text, tiny).to_pylist()]
        text = pc.replace_with_mask(text, tiny, pa.array(fixed, pa.string()))
    return text


def join_parts(parts: list[str | pa.Array], length: int) -> pa.Array:
    """Element-wise concatenation of constant texts and string arrays of `length` elements."""
    arrays = [part for part in parts if not isinstance(part, str)]
    if not arrays:
        return pa.array(["".join(parts)] * length, pa.string())  # type: ignore[arg-type]
    return pc.binary_join_element_wise(*parts, "")
