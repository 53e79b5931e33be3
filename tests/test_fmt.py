"""`memberrules fmt`: canonical expressions, everything else in the files kept as it was."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from memberrules.cli import main
from memberrules.engine import ast
from memberrules.engine.check import check_rule_set
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.fmt import expression_paths, format_rule_set, is_plain_safe, wrap_expression
from memberrules.engine.init import init_rule_set
from memberrules.engine.load import load_rule_set
from memberrules.engine.parse import parse_expr
from memberrules.engine.snapshot import read_snapshot

SCHEMA = """\
# The data.
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, registered_at: timestamp, growth_value: int, tier: string?,
             tags: list<string>, opted_in_push: bool}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal, category: string}
"""

MESSY = """\
# Metrics first.   (a comment with  odd   spacing)
metrics:
  recency_days: days_between( last(orders.placed_at),as_of )   # trailing comment
  frequency:
    expr: "count(orders within 30d)"
    output: true
  monetary: sum(orders.amount within 720h where category in ["food",'home'])

  # A blank line above, and a long expression spread over two lines:
  score: 1*count(orders within 30d where category == "food")
       + 2*count(orders within 30d where category == "home") + ((frequency))

tiers:
  by: growth_value
  levels:
    - {name: normal, min: 0}      # flow maps stay flow maps
    - {name: silver, min: 1000}
  current: tier
  downgrade: {when: "day_of_year(as_of)==1"}

classes:
  lifecycle:
    - name: active
      when: (recency_days ?? 9999) <= 30
    - name: lapsed
      when: >
        recency_days is not null and
        recency_days > 30
    - {name: other, else: true}

segments:
  vip: "'vip' in tags or (tier == \\"silver\\")"
  food_lover: 'monetary >= 100'
  busy: {when: "frequency>=2"}
"""


def write_rules(directory: Path, rules: str = MESSY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schema.yaml").write_text(SCHEMA, "utf-8")
    (directory / "rules.yaml").write_text(rules, "utf-8")
    return directory


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def expressions(directory: Path) -> dict[tuple, ast.Expr]:
    """Every expression of a rule set, parsed, by (file name, path)."""
    loaded = load_rule_set(directory, base=directory)
    found = {}
    for file in loaded.files:
        data = load_rule_set(directory / file, base=directory).data
        for path in expression_paths(data):
            value = data
            for step in path:
                value = value[step]
            parsed = parse_expr(value)
            assert parsed.expr is not None, (file, path, value)
            found[(file, path)] = parsed.expr
    return found


def test_check_fails_on_a_non_canonical_file_and_passes_after_fmt(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    result = run("fmt", str(rules), "--check")
    assert result.exit_code == 1
    assert result.stdout == f"would reformat {rules / 'rules.yaml'}\n"
    assert (rules / "rules.yaml").read_text("utf-8") == MESSY  # --check writes nothing
    result = run("fmt", str(rules))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"reformatted {rules / 'rules.yaml'}\n"
    assert run("fmt", str(rules), "--check").exit_code == 0


def test_fmt_rewrites_expressions_and_keeps_comments_and_layout(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    format_rule_set(rules)
    assert (rules / "rules.yaml").read_text("utf-8") == """\
# Metrics first.   (a comment with  odd   spacing)
metrics:
  recency_days: days_between(last(orders.placed_at), as_of)   # trailing comment
  frequency:
    expr: "count(orders within 30d)"
    output: true
  monetary: sum(orders.amount within 30d where category in ['food', 'home'])

  # A blank line above, and a long expression spread over two lines:
  score: 1 * count(orders within 30d where category == 'food')
       + 2 * count(orders within 30d where category == 'home') + frequency

tiers:
  by: growth_value
  levels:
    - {name: normal, min: 0}      # flow maps stay flow maps
    - {name: silver, min: 1000}
  current: tier
  downgrade: {when: "day_of_year(as_of) == 1"}

classes:
  lifecycle:
    - name: active
      when: (recency_days ?? 9999) <= 30
    - name: lapsed
      when: >
        recency_days is not null and
        recency_days > 30
    - {name: other, else: true}

segments:
  vip: "'vip' in tags or tier == 'silver'"
  food_lover: 'monetary >= 100'
  busy: {when: "frequency >= 2"}
"""
    assert (rules / "schema.yaml").read_text("utf-8") == SCHEMA  # flow maps over two lines: untouched


def test_fmt_is_idempotent(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    format_rule_set(rules)
    once = (rules / "rules.yaml").read_bytes()
    result = format_rule_set(rules)
    assert result.changed == []
    assert (rules / "rules.yaml").read_bytes() == once


def test_fmt_keeps_the_meaning_of_every_expression(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    before = expressions(rules)
    format_rule_set(rules)
    assert expressions(rules) == before
    assert check_rule_set(rules).ok


def test_a_file_with_errors_is_reported_and_left_untouched(tmp_path: Path):
    broken = MESSY.replace("busy: {when: \"frequency>=2\"}", "busy: {when: \"frequncy>=2\"}")
    rules = write_rules(tmp_path / "rules", broken)
    (rules / "more.yaml").write_text("segments:\n  big: monetary>=500\n", "utf-8")
    result = run("fmt", str(rules))
    assert result.exit_code == 1
    assert "unknown name 'frequncy' [MR301]" in result.stderr
    assert "1 left untouched because of errors" in result.stderr
    assert (rules / "rules.yaml").read_text("utf-8") == broken
    assert (rules / "more.yaml").read_text("utf-8") == "segments:\n  big: monetary >= 500\n"


def test_a_syntax_error_stops_the_file_even_when_another_file_stops_the_checker(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    (rules / "bad.yaml").write_text("segments:\n  odd: frequency >= = 2\n  fine: frequency>=1\n", "utf-8")
    (rules / "shape.yaml").write_text("params: [1, 2]\n", "utf-8")  # a shape error: the checker stops early
    result = format_rule_set(rules)
    assert not result.ok
    assert (rules / "bad.yaml").read_text("utf-8") == "segments:\n  odd: frequency >= = 2\n  fine: frequency>=1\n"


@pytest.mark.parametrize(("line", "formatted"), [
    # plain stays plain when it can; a leading quote or a YAML indicator needs quotes
    ("  s: frequency>=1\n", "  s: frequency >= 1\n"),
    ("  s: \"frequency>=1\"\n", "  s: \"frequency >= 1\"\n"),
    ("  s: 'frequency>=1'\n", "  s: 'frequency >= 1'\n"),
    ("  s: 'tags == [\"a\"]'\n", "  s: \"tags == ['a']\"\n"),
    ("  s: \"'a'in tags\"\n", "  s: \"'a' in tags\"\n"),
    ("  s: ('a' in tags)\n", "  s: \"'a' in tags\"\n"),
    ("  s: \"['a'] == tags\"\n", "  s: \"['a'] == tags\"\n"),
    ("  s: (['a']) == tags\n", "  s: \"['a'] == tags\"\n"),
    # in a flow map a comma would end the value, so the list needs quotes there
    ("  s: {when: \"tags == [ 'a','b' ]\"}\n", "  s: {when: \"tags == ['a', 'b']\"}\n"),
    ("  s: {when: 'frequency>=1'}\n", "  s: {when: 'frequency >= 1'}\n"),
    # escapes inside a string survive both quoting layers
    ("  s: \"'a\\\\\\\\b\\\\'c' in tags\"\n", "  s: \"'a\\\\\\\\b\\\\'c' in tags\"\n"),
    ("  s: \"\\\"x\\\" in tags\"\n", "  s: \"'x' in tags\"\n"),
    # literal blocks keep their style when the expression fits on one line
    ("  s: |\n    frequency>=1\n", "  s: |\n    frequency >= 1\n"),
    ("  s: |-\n    frequency\n    >= 1\n", "  s: |-\n    frequency >= 1\n"),
    ("  s: >\n    frequency>=1\n\n  t: frequency >= 1\n", "  s: >\n    frequency >= 1\n\n  t: frequency >= 1\n"),
])
def test_scalar_styles(tmp_path: Path, line: str, formatted: str):
    rules = write_rules(tmp_path / "rules", MESSY)
    (rules / "s.yaml").write_text("segments:\n" + line, "utf-8")
    result = format_rule_set(rules)
    assert result.ok, result.diagnostics
    assert (rules / "s.yaml").read_text("utf-8") == "segments:\n" + formatted


def test_a_long_literal_block_becomes_folded_so_its_line_breaks_read_as_spaces(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    long = " or ".join(f"'tag{i}' in tags" for i in range(12))
    (rules / "s.yaml").write_text("segments:\n  s: |\n    " + long.replace(" or ", "\n    or ") + "\n", "utf-8")
    format_rule_set(rules)
    text = (rules / "s.yaml").read_text("utf-8")
    assert text.startswith("segments:\n  s: >\n    'tag0' in tags or ")
    assert max(len(line) for line in text.splitlines()) <= 100
    assert expressions(rules)[("s.yaml", ("segments", "s"))] == parse_expr(long).expr


def test_crlf_line_ends_byte_order_mark_and_file_mode_are_kept(tmp_path: Path):
    rules = write_rules(tmp_path / "rules")
    path = rules / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfsegments:\r\n  # note\r\n  s: frequency>=1\r\n")
    os.chmod(path, 0o640)
    format_rule_set(rules)
    assert path.read_bytes() == b"\xef\xbb\xbfsegments:\r\n  # note\r\n  s: frequency >= 1\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in rules.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_the_starter_rule_set_is_canonical(tmp_path: Path):
    init_rule_set(tmp_path / "starter")
    assert format_rule_set(tmp_path / "starter", check=True).changed == []


def test_plain_scalar_safety():
    assert is_plain_safe("frequency >= 8")
    assert is_plain_safe("-x + 1")
    assert not is_plain_safe("- x")
    assert not is_plain_safe("'vip' in tags")
    assert not is_plain_safe("@2026-11-01 < as_of")
    assert not is_plain_safe("true")
    assert not is_plain_safe("on")
    assert not is_plain_safe("19.90")
    assert not is_plain_safe("x in ['a', 'b']", in_flow=True)
    assert is_plain_safe("x in ['a', 'b']", in_flow=False)


def test_wrapping_breaks_before_the_loosest_operator_outside_parentheses():
    text = "count(orders within 30d where category == 'a b c') >= 8 and monetary >= 100 or vip"
    assert wrap_expression(text, 60, 60) == [
        "count(orders within 30d where category == 'a b c') >= 8", "and monetary >= 100 or vip"]
    assert " ".join(wrap_expression(text, 20, 20)) == text


# -- fmt never changes what a rule set means -------------------------------------------------------
#
# Every expression of a rule set is printed back in a messy but equivalent way (extra
# parentheses and spaces, double-quoted strings, durations in other units, a trailing comma
# in lists) and written in a random YAML scalar style. fmt must give back expressions equal
# to the originals, pass --check afterwards, and the evaluation must not change.

PROPERTY_EXPRESSIONS = {
    "recency_days": "days_between(last(orders.placed_at), as_of)",
    "frequency": "count(orders within window)",
    "monetary": "sum(orders.amount within 30d where category in ['food', 'home'])",
    "top_spend": "quantile(monetary, 0.8 over members where frequency > 0)",
    "spend_rank": "rank(monetary)",
    "spend_bucket": "ntile(monetary, 4)",
    "avg_spend": "avg(monetary over members)",
    "share": "monetary / (avg_spend ?? 1) * 100",
    "growth_left": "max(1000 - growth_value, 0) % 7",
    "since": "days_between(registered_at, as_of) - -1",
    "first_food": "first(orders.amount where category == 'food' and amount > 0.5)",
    "by": "growth_value + 0",
    "downgrade": "day_of_year(as_of) == 1 or date(as_of) == @2026-12-31",
    "active": "(recency_days ?? 9999) <= 30 and not frequency == 0",
    "lapsed": "recency_days is not null and (recency_days > 30 or monetary < big)",
    "vip": "'vip' in tags or tier == 'silver' and coalesce(first_food, 0.0) >= 1",
    "ranked": "spend_rank <= 2 and spend_bucket >= 3 and monetary >= top_spend",
    "named": r"lower('A\'b') != 'x\ny' and 'q' not in tags",
    "recent": "registered_at > as_of - 2w + 12h",
}

# <<name>> marks where each expression goes; those in a flow map must stay double-quoted.
PROPERTY_TEMPLATE = """\
params:
  window: 30d
  big: 100.50
metrics:
  recency_days: <<recency_days>>
  frequency:
    expr: <<frequency>>
    output: true
  monetary: <<monetary>>
  top_spend: <<top_spend>>
  spend_rank: <<spend_rank>>
  spend_bucket: <<spend_bucket>>
  avg_spend: <<avg_spend>>
  share: <<share>>
  growth_left: <<growth_left>>
  since: <<since>>
  first_food: <<first_food>>
tiers:
  by: <<by>>
  levels:
    - {name: normal, min: 0}
    - {name: silver, min: 1000}
  current: tier
  downgrade: {when: <<downgrade>>}
classes:
  lifecycle:
    - name: active
      when: <<active>>
    - name: lapsed
      when: <<lapsed>>
    - {name: other, else: true}
segments:
  vip: <<vip>>
  ranked: <<ranked>>
  named:
    when: <<named>>
  recent: <<recent>>
"""


def fill_template(texts: dict[str, str], style: callable) -> str:
    lines = []
    for line in PROPERTY_TEMPLATE.splitlines():
        if "<<" in line:
            head, _, rest = line.partition("<<")
            name, _, tail = rest.partition(">>")
            indent = len(line) - len(line.lstrip()) + 2
            in_flow = tail == "}"
            line = head + (json.dumps(texts[name], ensure_ascii=False) if in_flow else style(texts[name], indent)) + tail
        lines.append(line)
    return "\n".join(lines) + "\n"


MEMBERS_CSV = """member_id,registered_at,growth_value,tier,tags,opted_in_push
m1,2024-01-05T09:00:00,1200,normal,"[""vip""]",true
m2,2026-10-25T09:00:00,100,silver,[],false
m3,2025-01-01T09:00:00,999,,[],true
m4,2023-06-01T09:00:00,5000,silver,"[""q""]",false
"""
ORDERS_CSV = """member_id,placed_at,amount,category
m1,2026-10-20T12:00:00,120.50,food
m1,2026-10-28T12:00:00,30.00,home
m2,2026-08-01T12:00:00,10.00,food
m4,2026-10-30T12:00:00,500.00,toys
m4,2026-10-31T12:00:00,0.40,food
"""
AS_OF = dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@st.composite
def messy_source(draw, node: ast.Expr, minimum: int = 0) -> str:
    """`node` printed with random, meaning-preserving noise."""
    body = draw(_messy_body(node))
    if ast._precedence(node) < minimum or draw(st.integers(0, 5)) == 0:
        space = lambda: draw(st.sampled_from(["", " ", "  "]))  # noqa: E731
        return f"({space()}{body}{space()})"
    return body


def _sub(node, minimum=0):
    return messy_source(node, minimum)


@st.composite
def _messy_body(draw, node: ast.Expr) -> str:
    space = lambda: draw(st.sampled_from(["", " ", "  "]))  # noqa: E731
    gap = lambda: draw(st.sampled_from([" ", "  "]))  # noqa: E731
    P = ast._PRECEDENCE
    match node:
        case ast.Literal(kind="string", value=value):
            if draw(st.booleans()):
                return '"' + "".join({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, c)
                                     for c in value) + '"'
            return ast.quote_string(value)
        case ast.Literal(kind="duration", value=value):
            seconds = int(value.total_seconds())
            units = [(u, n) for u, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
                     if seconds % n == 0]
            unit, size = draw(st.sampled_from(units))
            return f"{seconds // size}{unit}"
        case ast.Literal():
            return ast.to_source(node)
        case ast.ListLiteral(items=items):
            parts = [draw(_sub(item)) for item in items]
            trailing = "," if parts and draw(st.booleans()) else ""
            return "[" + space() + ("," + space()).join(parts) + trailing + space() + "]"
        case ast.Name() | ast.Attribute():
            return ast.to_source(node)
        case ast.Unary(op="not", operand=operand):
            inner = draw(_sub(operand, P["not"]))
            return "not" + (gap() if not inner.startswith("(") else space()) + inner
        case ast.Unary(op="-", operand=operand):
            return "-" + space() + draw(_sub(operand, P["neg"]))
        case ast.BinaryOp(op=op, left=left, right=right):
            level = P[op]
            pad = gap if op in ("and", "or") else space
            return draw(_sub(left, level)) + pad() + op + pad() + draw(_sub(right, level + 1))
        case ast.Compare(op=op, left=left, right=right):
            level = P["compare"] + 1
            pad = gap if op in ("in", "not in") else space
            return draw(_sub(left, level)) + pad() + op.replace(" ", gap()) + pad() + draw(_sub(right, level))
        case ast.IsNull(operand=operand, negated=negated):
            words = ["is", "not", "null"] if negated else ["is", "null"]
            return draw(_sub(operand, P["compare"] + 1)) + gap() + gap().join(words)
        case ast.Call(func=func, args=args):
            return func + "(" + space() + ("," + space()).join(draw(_sub(a)) for a in args) + space() + ")"
        case ast.EventAggregate(func=func, table=table, field=field_name, within=within, where=where):
            text = table if field_name is None else f"{table}.{field_name}"
            if within is not None:
                text += gap() + "within" + gap() + draw(_sub(within, P["+"]))
            if where is not None:
                text += gap() + "where" + gap() + draw(_sub(where))
            return f"{func}({space()}{text}{space()})"
        case ast.PopulationAggregate(func=func, value=value, fraction=fraction, where=where):
            text = draw(_sub(value)) + ("" if fraction is None else "," + space() + draw(_sub(fraction)))
            text += gap() + "over" + gap() + "members"
            if where is not None:
                text += gap() + "where" + gap() + draw(_sub(where))
            return f"{func}({space()}{text}{space()})"
        case ast.Ranking(func=func, value=value, buckets=buckets):
            tail = "" if buckets is None else "," + space() + draw(_sub(buckets))
            return f"{func}({space()}{draw(_sub(value))}{tail}{space()})"
    raise TypeError(node)


def _yaml_scalar(draw, text: str, indent: int) -> str:
    """`text` as a YAML value in a random style that reads back as `text` (modulo block folding)."""
    styles = ["double", "single", "folded"] + (["plain"] if is_plain_safe(text) else [])
    style = draw(st.sampled_from(styles))
    if style == "plain":
        return text
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    if style == "folded":
        # Break the folded block at single spaces outside string literals: folding reads them back.
        cuts = [i for i in sorted(wrap_expression.__globals__["_cut_points"](text))
                if text[i - 1] != " " and text[i + 1] != " "]
        chosen = sorted(draw(st.sets(st.sampled_from(cuts), max_size=3))) if cuts else []
        lines, last = [], 0
        for cut in chosen:
            lines.append(text[last:cut])
            last = cut + 1
        lines.append(text[last:])
        return ">-\n" + "\n".join(" " * indent + line for line in lines)
    return json.dumps(text, ensure_ascii=False)


@st.composite
def messy_rule_file(draw) -> str:
    """The property rule file with every expression messed up, each in a random scalar style."""
    messy = {name: draw(messy_source(parse_expr(text).expr)) for name, text in PROPERTY_EXPRESSIONS.items()}
    return fill_template(messy, lambda text, indent: _yaml_scalar(draw, text, indent))


def _snapshot(directory: Path) -> Path:
    data = directory / "data"
    data.mkdir()
    (data / "member.csv").write_text(MEMBERS_CSV, "utf-8")
    (data / "orders.csv").write_text(ORDERS_CSV, "utf-8")
    return data


def _rows(rules_dir: Path, data: Path) -> list[tuple[dict, dict]]:
    checked = check_rule_set(rules_dir)
    assert checked.ok, checked.diagnostics
    rules = checked.rule_set
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, AS_OF)
    evaluation = compile_rule_set(rules).evaluate(snapshot, AS_OF)
    # The rows hold only output metrics; the values hold every metric too.
    return [(row, values) for row, values in zip(evaluation.rows, evaluation.values)]


@pytest.fixture(scope="module")
def property_world(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("fmt_property")
    reference = write_rules(root / "reference", fill_template(
        PROPERTY_EXPRESSIONS, lambda text, indent: text if is_plain_safe(text) else json.dumps(text)))
    data = _snapshot(root)
    assert format_rule_set(reference, check=True).changed == []  # the reference is canonical
    return data, _rows(reference, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(messy=messy_rule_file())
def test_fmt_never_changes_any_expression(tmp_path_factory, messy):
    note(messy)
    rules = write_rules(tmp_path_factory.mktemp("messy") / "rules", messy)
    before = expressions(rules)
    assert sorted(map(ast.to_source, before.values())) == sorted(PROPERTY_EXPRESSIONS.values())
    result = format_rule_set(rules)
    assert result.ok, result.diagnostics
    assert expressions(rules) == before
    assert format_rule_set(rules, check=True).changed == []
    shutil.rmtree(rules.parent)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(messy=messy_rule_file())
def test_fmt_never_changes_the_evaluation(tmp_path_factory, property_world, messy):
    data, reference_rows = property_world
    note(messy)
    rules = write_rules(tmp_path_factory.mktemp("messy") / "rules", messy)
    assert _rows(rules, data) == reference_rows
    format_rule_set(rules)
    assert _rows(rules, data) == reference_rows
    shutil.rmtree(rules.parent)
