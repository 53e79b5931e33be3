"""Hostile and random input never gives a traceback: only diagnostics (SPEC §6).

Expressions: arbitrary text, and token soup from the language's own words (the parser's
error paths). hypothesis' `from_lark` is not used: it draws no `%ignore`d whitespace
between terminals (hypothesis #1804), so `not` `x` comes out as `notx`, and it needs
about half a second per example on this grammar; the round trip in test_parse.py covers
grammatical text. Rule sets: arbitrary YAML-ish text, random structures dumped to YAML,
mutations of the SPEC example, and well-typed-ish expressions placed in it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from memberrules.engine import ast
from memberrules.engine.check import CheckResult, check_rule_set
from memberrules.engine.parse import ParseResult, parse_expr

SPEC_EXAMPLE = (Path(__file__).parent / "fixtures" / "spec_example" / "rules.yaml").read_text("utf-8")
def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_only_diagnostics(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    assert (result.expr is None) == bool(result.diagnostics)
    for diagnostic in result.diagnostics:
        assert diagnostic.code.startswith("MR2") and diagnostic.is_error
        assert diagnostic.span is not None and diagnostic.span.line >= 1 and diagnostic.span.col >= 1
        assert diagnostic.span.end_col > diagnostic.span.col or diagnostic.span.end_line > diagnostic.span.line


# -- expressions --------------------------------------------------------------------------------

@fuzz(300)
@given(st.text(max_size=120))
@example("")
@example("\t")
@example("a\u2028b")
@example("'\\")
@example("@9999-99-99")
@example("count(")
@example("((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((")
def test_parse_expr_never_raises_on_arbitrary_text(text):
    assert_only_diagnostics(parse_expr(text))


WORDS = ["or", "and", "not", "in", "is", "null", "true", "false", "within", "where", "over", "members",
         "(", ")", "[", "]", ",", ".", "==", "!=", "<", "<=", ">", ">=", "=", "+", "-", "*", "/", "%", "??",
         "?", "!", "&&", "@", "'", '"', "\\", "count", "sum", "avg", "quantile", "rank", "ntile", "round",
         "days_between", "orders", "orders.amount", "x", "重点突破", "0", "19.90", "30d", "0d", "99999999w",
         "@2026-11-01", "@2026-02-30", "@2026-11-01T25:00", "'vip'", '"a\\"b"', "'\\q'", "1e3"]
token_soup = st.lists(st.sampled_from(WORDS), max_size=30).flatmap(
    lambda words: st.lists(st.sampled_from(["", " ", "\n", "\t"]), min_size=len(words), max_size=len(words)).map(
        lambda gaps: "".join(g + w for g, w in zip(gaps, words))))


@fuzz(400)
@given(token_soup)
@example("count(orders within 30d within 3d)")
@example("quantile(x over members)")
@example("rank(x within 3d)")
@example("sum(1 over customers)")
@example("not " * 2000 + "x")
@example(" + ".join(["x"] * 3000))
def test_parse_expr_never_raises_on_token_soup(text):
    note(repr(text))
    assert_only_diagnostics(parse_expr(text))


# -- rule sets ----------------------------------------------------------------------------------

class RuleDir:
    """One temporary rule-set directory, rewritten for each example."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="memberrules-fuzz-"))
        atexit.register(shutil.rmtree, self.path, ignore_errors=True)

    def check(self, content: str | bytes, name: str = "rules.yaml", extra: dict[str, str] | None = None) -> CheckResult:
        self.path.mkdir(parents=True, exist_ok=True)  # another process may have cleaned /tmp
        for old in self.path.iterdir():
            old.unlink()
        target = self.path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        for extra_name, text in (extra or {}).items():
            (self.path / extra_name).write_text(text, encoding="utf-8")
        result = check_rule_set(self.path, base=self.path)
        assert isinstance(result, CheckResult)
        assert all(d.code.startswith("MR") and d.severity in ("error", "warning") for d in result.diagnostics)
        assert result.ok == (not any(d.is_error for d in result.diagnostics))
        return result


YAML_ALPHABET = st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?~<=() \n\t\\") + list("abcmnxyz019_.") + ["重", "\u00e9"])
yamlish = st.text(YAML_ALPHABET, max_size=200)


@fuzz(150)
@given(yamlish)
@example("schema: {member: {key: id, fields: {id: string}}}\nmetrics: {a: '((('}\n")
@example("a: &a [*a]\n")
@example("? [a]\n: b\n")
@example("<<: {a: 1}\n")
@example("!!binary x: 1\n")
def test_arbitrary_yamlish_text_gives_diagnostics(text):
    DIRS["text"].check(text)


SECTION_WORDS = ["schema", "member", "orders", "key", "fields", "time", "params", "metrics", "tiers", "by",
                 "levels", "name", "min", "current", "downgrade", "forecast", "when", "else", "classes",
                 "segments", "campaigns", "on", "requires", "action", "channel", "template", "cooldown",
                 "expr", "output", "priority", "group", "version", "timezone", "member_id", "amount"]
EXPRESSIONS = ["count(orders)", "member_id", "x >", "sum(orders.amount within 30d)", "'vip' in tags", "30d",
               "{{ member.name }}", "{% for %}", "string", "list<int>", "int?", "push", "tier_up", "as_of", "1 = 1"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.text(max_size=8),
                    st.sampled_from(EXPRESSIONS), st.sampled_from(SECTION_WORDS),
                    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(float))
keys = st.one_of(st.sampled_from(SECTION_WORDS), st.text(min_size=1, max_size=6))
structures = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=30)
rule_documents = st.dictionaries(st.sampled_from(SECTION_WORDS[:25]), structures, max_size=6)


@fuzz(150)
@given(st.one_of(structures, rule_documents))
@example({"schema": {"member": {"key": "id", "fields": {"id": "string"}}}, "params": {"w": {"type": "duration"}}})
def test_random_structures_dumped_to_yaml_give_diagnostics(document):
    text = yaml.safe_dump(document, allow_unicode=True)
    note(text)
    DIRS["structures"].check(text)


@st.composite
def mutated_spec_example(draw) -> str:
    text = SPEC_EXAMPLE
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace_line", "duplicate_line"]))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif kind == "insert":
            text = text[:at] + draw(st.one_of(yamlish, st.sampled_from(WORDS))) + text[at:]
        else:
            lines = text.split("\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "replace_line":
                lines[index] = lines[index][:draw(st.integers(0, len(lines[index])))] + draw(token_soup)
            else:
                lines.insert(index, lines[index])
            text = "\n".join(lines)
    return text


@fuzz(200)
@given(mutated_spec_example())
def test_mutations_of_the_spec_example_give_diagnostics(text):
    note(text)
    result = DIRS["mutations"].check(text)
    if result.ok:
        for metric in result.rule_set.metrics.values():
            assert all(node.type is not None for node in ast.walk(metric.expr))


@fuzz(40)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_diagnostics(raw):
    DIRS["bytes"].check(raw)


# -- well-typed-ish expressions in a valid rule set ---------------------------------------------

PLAIN_NUMBERS = ["recency_days", "frequency", "monetary", "avg_spend", "activity", "growth_value", "rfm_frequent",
                 "0", "1", "15", "19.90", "tier_gap"]
NUMBERS = PLAIN_NUMBERS + ["count(orders)", "sum(orders.amount within 30d)", "max(orders.amount)"]
TIMES = ["as_of", "registered_at", "birthday", "last(orders.placed_at)", "@2026-11-01", "date(as_of)"]
DURATIONS = ["30d", "rfm_recent", "2w", "12h"]
VALUES = {"tier": ["normal", "gold"], "next_tier": ["silver"], "lifecycle": ["dormant", "new", "potential"],
          "rfm": ["best", "unclassified"], "name": ["重点突破", "x"], "current_tier": ["gold"]}
BOOLS = ["vip", "seed_user", "opted_in_sms", "true", "null"]


def _numbers() -> st.SearchStrategy[str]:
    plain = st.sampled_from(PLAIN_NUMBERS)
    time = st.sampled_from(TIMES)
    duration = st.sampled_from(DURATIONS)

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "??"]), inner).map(" ".join),
            inner.map(lambda x: f"-({x})"),
            st.tuples(time, time).map(lambda p: f"days_between({p[0]}, {p[1]})"),
            plain.map(lambda x: f"avg({x} over members where {x} is not null)"),
            plain.map(lambda x: f"rank({x})"),
            st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
            inner.map(lambda x: f"round({x}, 2)"),
            st.tuples(duration, plain).map(lambda p: f"count(orders within {p[0]} where amount > {p[1]})"),
            inner.map(lambda x: f"({x})"),
        )

    return st.recursive(st.sampled_from(NUMBERS), extend, max_leaves=6)


def _conditions() -> st.SearchStrategy[str]:
    numbers, time, duration = _numbers(), st.sampled_from(TIMES), st.sampled_from(DURATIONS)
    named_value = st.sampled_from(sorted(VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(VALUES[name])))
    comparisons = st.one_of(
        st.tuples(numbers, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers).map(" ".join),
        st.tuples(time, st.sampled_from(["<", ">="]), time, st.sampled_from(["+", "-"]), duration).map(" ".join),
        st.tuples(named_value, st.sampled_from(["==", "!="])).map(lambda p: f"{p[0][0]} {p[1]} '{p[0][1]}'"),
        named_value.map(lambda p: f"{p[0]} in ['{p[1]}', '{VALUES[p[0]][0]}']"),
        st.sampled_from(NUMBERS + TIMES).map(lambda x: f"{x} is not null"),
        st.sampled_from(BOOLS),
    )

    def extend(inner):
        return st.one_of(st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
                         inner.map(lambda x: f"not ({x})"))

    return st.recursive(comparisons, extend, max_leaves=5)


@fuzz(200)
@given(_numbers(), _conditions())
@example("recency_days ?? monetary", "rfm == '重点突破'")
@example("count(orders within rfm_recent where amount > avg_spend)", "vip and not (seed_user)")
def test_well_typed_ish_expressions_in_a_valid_rule_set_never_raise(metric, condition):
    note(f"metric: {metric}\nsegment: {condition}")
    extra = {"probe.yaml": yaml.safe_dump({"metrics": {"probe": metric}, "segments": {"probe_segment": condition}},
                                          allow_unicode=True)}
    result = DIRS["typed"].check(SPEC_EXAMPLE, extra=extra)
    if result.ok:
        typed = result.rule_set.metrics["probe"].expr
        assert all(node.type is not None for node in ast.walk(typed))
        assert parse_expr(ast.to_source(typed)).expr == typed


DIRS = {name: RuleDir() for name in ("text", "structures", "mutations", "bytes", "typed")}
