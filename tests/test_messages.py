"""messages.py prints values as Jinja2 does (templates.render), a column at a time."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberrules.engine import types as t
from memberrules.engine.campaigns import _canonical
from memberrules.engine.messages import Value, join_parts, printed, simple_parts
from memberrules.engine.templates import environment, render, syntax_error_span

KINDS = {
    "string": (st.text(max_size=8), pa.string()),
    "int": (st.integers(-(2 ** 63), 2 ** 63 - 1), pa.int64()),
    "bool": (st.booleans(), pa.bool_()),
    "date": (st.dates(min_value=dt.date(1000, 1, 1)), pa.date32()),
    "decimal": (st.decimals(min_value=Decimal("-1e19"), max_value=Decimal("1e19"), places=18, allow_nan=False),
                pa.decimal128(38, 18)),
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)))
def test_a_column_prints_as_jinja_prints_each_value(data, kind):
    values, arrow_type = KINDS[kind]
    column = data.draw(st.lists(st.none() | values, min_size=1, max_size=6))
    texts = printed(pa.array(column, arrow_type), t.Type(kind))
    assert texts is not None
    assert texts.to_pylist() == [render("{{ x }}", {"x": _canonical(v)}) for v in column]


def test_tiny_decimals_print_in_scientific_notation_as_python_does():
    column = [Decimal("0.0000001"), Decimal("-0.00000012"), Decimal("0.000001"), Decimal("120.50")]
    texts = printed(pa.array(column, pa.decimal128(38, 18)), t.DECIMAL).to_pylist()
    assert texts == ["1E-7", "-1.2E-7", "0.000001", "120.5"]


def test_floats_timestamps_and_lists_are_left_to_jinja():
    assert printed(pa.array([0.1]), t.Type("float")) is None
    assert printed(pa.array([dt.datetime(2026, 1, 1)]), t.Type("timestamp")) is None
    assert printed(pa.array([["a"]]), t.Type("list", item=t.STRING)) is None


def test_simple_templates_split_into_text_and_values():
    assert simple_parts("Hi {{ member.name }}, {{ gap }} to {{next_tier}}!") == (
        "Hi ", Value("member", "name"), ", ", Value("gap"), " to ", Value("next_tier"), "!")
    assert simple_parts("no values\n") == ("no values\n",)


def test_anything_more_is_not_simple():
    for text in ("{{ spend | round(1) }}", "{% if vip %}VIP{% endif %}", "{{ a + b }}", "{{ member['name'] }}",
                 "{{ member.items }}", "{{ 'x' }}", "{{ classes.rfm }}", "{{ oops"):
        assert simple_parts(text) is None, text


def test_parts_join_element_wise():
    names = pa.array(["Ann", "Bo"])
    assert join_parts(["Hi ", names, "!"], 2).to_pylist() == ["Hi Ann!", "Hi Bo!"]
    assert join_parts(["same"], 3).to_pylist() == ["same"] * 3


@pytest.mark.parametrize("text, stops_at", [
    ("Hi {{ member.name }, welcome", "}"),  # the lexer cannot take a lone `}`
    ("{{ a.b( }}", "}"),
    ("{{ 1 +* 2 }}", "*"),  # the parser cannot take this token
    ("{{ x y }}", "y"),
    ("x {% endfor %}", "endfor"),
    ("{% for %}", "%}"),
    ("{% if x %}never closed  ", "d"),  # ends too soon: its last character
    ("{{", "{"),
])
def test_a_template_syntax_error_points_where_jinja_stops_reading(text, stops_at):
    start, end = syntax_error_span(text)
    assert text[start:end] == stops_at


_PIECES = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", " ", "\n", "x", "if", "endif", "for", "in",
                           "(", ")", "|", "+", "*", "'", '"', ".", "1", "}", "{", "member", "é"])


@given(st.lists(_PIECES, max_size=14).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_span_is_inside_the_text_exactly_when_the_template_does_not_compile(text):
    from jinja2 import TemplateSyntaxError

    try:
        environment().parse(text)
        compiles = True
    except TemplateSyntaxError:
        compiles = False
    span = syntax_error_span(text)
    assert (span is None) == compiles
    if span is not None:
        start, end = span
        assert 0 <= start < end <= max(len(text), 1)
