"""`memberrules test`: run a rule set's own `*.test.yaml` files.

A test is a small world (promtool's shape): members and event rows as fixtures,
an `as_of`, optional `params` overrides and `previous` state, and expectations
that match only the fields they name. Population values (averages, ranks) are
computed over the test's own members. Test files are read with the rule loader,
so every failure points at the line and column of its expectation.

```yaml
tests:
  - name: best customer
    as_of: 2026-11-01T10:00:00+08:00
    params: {rfm_frequent: 8}
    members: [{member_id: m1, ...}]
    orders: [{member_id: m1, placed_at: 2026-10-30T12:00:00, amount: 19.90, ...}]
    expect:
      - member: m1
        tier: gold
        classes: {rfm: best}
        segments: {vip: true}            # a list names exactly the member's segments
        metrics: {frequency: 9}
        actions: [{campaign: win_back, channel: sms}]   # [] asserts that nothing is sent
```
"""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from . import types as t
from .check import CheckedRuleSet, CheckResult, check_rule_set
from .errors import Diagnostic, DiagnosticError, Span, did_you_mean
from .eval import CompiledRuleSet, Evaluation, compile_rule_set
from .evaluate import parse_as_of
from .load import Positions, load_file
from .results import decimal_text
from .snapshot import Snapshot, SnapshotStats, parse_value

TEST_SUFFIXES = (".test.yaml", ".test.yml")
CASE_KEYS = ("name", "description", "as_of", "params", "members", "previous", "expect")
EXPECT_GROUPS = ("classes", "segments", "metrics", "actions")


@dataclass
class Failure:
    """One expectation that did not hold."""

    member: object
    field: str
    expected: object
    actual: object
    span: Span | None
    as_of: str
    message: str = ""

    def text(self) -> str:
        where = f"{self.span}: " if self.span else ""
        detail = self.message or f"expected {show(self.expected)}, got {show(self.actual)}"
        return f"{where}member {self.member}, as_of {self.as_of}, {self.field}: {detail}"


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    name: str
    file: str
    span: Span | None
    failures: list[Failure] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures and not self.errors


@dataclass
class Coverage:
    """What the tests reached: tier levels, class cases, segments (true at least once), campaigns."""

    tiers: set[str] = field(default_factory=set)
    cases: set[tuple[str, str]] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    campaigns: set[str] = field(default_factory=set)
    campaigns_evaluated: bool = False

    def missing(self, rules: CheckedRuleSet) -> list[tuple[str, list[str]]]:
        """(what, [names no test reached]) for tiers, each class list, segments and campaigns."""
        gaps: list[tuple[str, list[str]]] = []
        if rules.tiers is not None:
            gaps.append(("tier levels", [n for n in rules.tiers.names() if n not in self.tiers]))
        for name, class_list in rules.classes.items():
            gaps.append((f"{name} cases", [c.name for c in class_list.cases if (name, c.name) not in self.cases]))
        gaps.append(("segments", [n for n in rules.segments if n not in self.segments]))
        if self.campaigns_evaluated:
            gaps.append(("campaigns", [n for n in rules.campaigns if n not in self.campaigns]))
        return gaps


@dataclass
class TestReport:
    __test__ = False  # not a pytest test class

    check: CheckResult
    files: list[str] = field(default_factory=list)
    results: list[TestResult] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    problems: list[Diagnostic] = field(default_factory=list)  # test files that could not be read
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.check.ok and bool(self.results) and not self.problems
                and all(result.passed for result in self.results))


def show(value: object) -> str:
    """A value as a rule author writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def fixture_value(value: object, type_: t.Type, tz: ZoneInfo) -> object:
    """A YAML value (str, int, Decimal, bool, list, None) as a value of a schema type.

    Text goes through the snapshot reader's `parse_value`, so a fixture row reads
    exactly as the same row in a CSV file would.

    >>> fixture_value("2026-11-01T10:00", t.TIMESTAMP, ZoneInfo("Asia/Shanghai")).isoformat()
    '2026-11-01T10:00:00+08:00'
    >>> fixture_value(8, t.DECIMAL, ZoneInfo("UTC"))
    Decimal('8')
    """
    kind = type_.kind
    if value is None:
        if type_.nullable or kind == "null":
            return None
        raise ValueError(f"null is not allowed here (the type is {type_}, not {type_.with_null()})")
    if kind == "list":
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {show(value)}")
        item = type_.item or t.STRING
        return [fixture_value(v, item, tz) for v in value]
    if isinstance(value, (list, dict)):
        raise ValueError(f"expected {type_}, got a {'list' if isinstance(value, list) else 'map'}")
    if isinstance(value, bool):
        if kind != "bool":
            raise ValueError(f"expected {type_}, got {show(value)}")
        return value
    if isinstance(value, int):
        if kind == "int":
            return value
        if kind == "decimal":
            return Decimal(value)
        if kind == "float":
            return float(value)
        if kind == "string":
            return str(value)
        raise ValueError(f"expected {type_}, got the number {value}")
    if isinstance(value, Decimal):
        if kind == "decimal":
            return value
        if kind == "float":
            return float(value)
        if kind == "string":
            return str(value)
        raise ValueError(f"expected {type_}, got the number {decimal_text(value)}")
    text = str(value)
    if kind == "string":
        return text
    if text == "":
        raise ValueError(f"expected {type_}, got an empty text")
    return parse_value(text, type_, tz)


def _loose_equal(expected: object, actual: object) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, float) or isinstance(actual, float):
        try:
            return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
    if isinstance(expected, bool) != isinstance(actual, bool):
        return False
    try:
        return expected == actual
    except TypeError:
        return False


class _TestError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def test_files(rules_dir: Path) -> list[Path]:
    """The `*.test.yaml` files of a rule-set directory, sorted."""
    if rules_dir.is_file():
        return [rules_dir] if rules_dir.name.endswith(TEST_SUFFIXES) else []
    return sorted(p for p in rules_dir.rglob("*") if p.is_file() and p.name.endswith(TEST_SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(rules_dir).parts))


test_files.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def run_tests(rules_dir: Path, params: dict[str, str] | None = None) -> TestReport:
    """Check the rule set in `rules_dir` and run every `*.test.yaml` in it.

    Args:
        rules_dir: the rule-set directory.
        params: --param overrides as text, applied to every test (a test's own `params` win).

    Returns:
        A TestReport; `report.ok` is False when the rules do not check, a test file cannot
        be read, there is no test, or any test fails.
    """
    check = check_rule_set(rules_dir, params)
    report = TestReport(check)
    if check.rule_set is None:
        return report
    rules = check.rule_set
    compiled = compile_rule_set(rules)
    runner = _Runner(rules, compiled, report)
    for path in test_files(rules_dir):
        runner.run_file(path)
    return report


class _Runner:
    def __init__(self, rules: CheckedRuleSet, compiled: CompiledRuleSet, report: TestReport):
        self.rules = rules
        self.compiled = compiled
        self.report = report
        self.tz = ZoneInfo(rules.timezone)
        try:
            from .campaigns import decide_actions
        except ImportError:
            decide_actions = None
        self.decide_actions = decide_actions
        report.coverage.campaigns_evaluated = decide_actions is not None and bool(rules.campaigns)
        self.columns = _expectable_columns(rules)

    # -- files -----------------------------------------------------------------------------------

    def run_file(self, path: Path) -> None:
        display = str(path)
        positions = Positions()
        problems: list[Diagnostic] = []
        loaded = load_file(path, display, positions, problems)
        self.report.files.append(display)
        self.report.sources.update({name: lines.text for name, lines in positions.lines.items()})
        self.positions, self.display = positions, display
        if problems or loaded.data is None:
            self.report.problems += problems
            return
        data = loaded.data
        unknown = [key for key in data if key != "tests"]
        for key in unknown:
            self.report.problems.append(Diagnostic(
                "MR150", f"unknown key '{key}' in a test file", self.key_span(key),
                hint="a test file holds one key, tests: a list of tests"))
        tests = data.get("tests")
        if not isinstance(tests, list):
            self.report.problems.append(Diagnostic(
                "MR150", "a test file needs 'tests:', a list of tests", self.span("tests") or self.span(),
                hint="tests: [{name: …, as_of: 2026-11-01T10:00:00+08:00, members: […], expect: […]}]"))
            return
        for index, case in enumerate(tests):
            self.report.results.append(self.run_case(index, case))

    def span(self, *path) -> Span | None:
        return self.positions.span((self.display, *path))

    def key_span(self, *path) -> Span | None:
        return self.positions.key_span((self.display, *path))

    def error(self, message: str, path: tuple, code: str = "MR151", hint: str | None = None,
              key: bool = False) -> _TestError:
        span = self.key_span(*path) if key else self.span(*path)
        return _TestError(Diagnostic(code, message, span, hint=hint))

    # -- one test --------------------------------------------------------------------------------

    def run_case(self, index: int, case: object) -> TestResult:
        path = ("tests", index)
        name = case.get("name") if isinstance(case, dict) else None
        result = TestResult(str(name) if name is not None else f"test {index + 1}", self.display, self.span(*path))
        began = time.perf_counter()
        try:
            if not isinstance(case, dict):
                raise self.error("a test is a map with name, as_of, members and expect", path, "MR150")
            self._run(case, path, result)
        except _TestError as problem:
            result.errors.append(problem.diagnostic)
        result.seconds = time.perf_counter() - began
        return result

    def _run(self, case: dict, path: tuple, result: TestResult) -> None:
        rules = self.rules
        tables = rules.event_tables
        for key in case:
            if key not in CASE_KEYS and key not in tables:
                guess = did_you_mean(key, list(CASE_KEYS) + list(tables))
                raise self.error(f"unknown key '{key}' in a test", (*path, key), "MR150", key=True,
                                 hint=f"did you mean '{guess}'?" if guess else
                                 "keys: " + ", ".join(list(CASE_KEYS) + list(tables)))
        if "name" not in case:
            raise self.error("a test needs a name", path, "MR150")
        if "as_of" not in case:
            raise self.error("a test needs as_of, the evaluation instant", path, "MR150",
                             hint="as_of: 2026-11-01T10:00:00+08:00")
        try:
            as_of = parse_as_of(str(case["as_of"]), rules.timezone)
        except ValueError as problem:
            raise self.error(str(problem), (*path, "as_of"), "MR152") from None
        as_of_text = str(case["as_of"])
        params = case.get("params") or {}
        if not isinstance(params, dict):
            raise self.error("params is a map of param → value", (*path, "params"), "MR150")
        try:
            param_values = self.compiled.param_values(params)
        except ValueError as problem:
            raise self.error(str(problem), (*path, "params"), "MR152") from None
        snapshot = self.snapshot(case, path, as_of)
        evaluation = self.compiled.evaluate(snapshot, as_of, param_values)
        decision = self.decide(case, path, evaluation, result)
        self.cover(evaluation, decision)
        expectations = case.get("expect")
        if expectations is None:
            raise self.error("a test needs expect: a list of expectations, one per member", path, "MR150")
        if not isinstance(expectations, list):
            raise self.error("expect is a list of expectations, one per member", (*path, "expect"), "MR150")
        for j, expectation in enumerate(expectations):
            self.check_expectation(expectation, (*path, "expect", j), evaluation, decision, as_of_text, result)

    def snapshot(self, case: dict, path: tuple, as_of: datetime) -> Snapshot:
        rules = self.rules
        member_table = rules.member
        key_field = member_table.key
        rows = case.get("members")
        if not isinstance(rows, list):
            raise self.error("a test needs members: a list of member rows", (*path, "members"), "MR150")
        members: dict[object, dict] = {}
        for i, raw in enumerate(rows):
            row = self.fixture_row(raw, member_table.fields, (*path, "members", i), "member")
            key = row[key_field]
            if key in members:
                raise self.error(f"member {key} is listed twice", (*path, "members", i, key_field), "MR152")
            members[key] = row
        events: dict[str, dict[object, list[dict]]] = {}
        read: dict[str, int] = {"member": len(members)}
        after: dict[str, int] = {}
        for name, table in rules.event_tables.items():
            table_rows = case.get(name) or []
            if not isinstance(table_rows, list):
                raise self.error(f"{name} is a list of rows", (*path, name), "MR150")
            by_member: dict[object, list[dict]] = {}
            late = 0
            for i, raw in enumerate(table_rows):
                row = self.fixture_row(raw, table.fields, (*path, name, i), name, key=table.key)
                key = row[table.key]
                if key not in members:
                    raise self.error(f"{name} row for member {key}, who is not in members", (*path, name, i, table.key),
                                     "MR152", hint=_guess(str(key), [str(k) for k in members]))
                moment = row.get(table.time) if table.time else None
                if moment is not None and _after(moment, as_of):
                    late += 1  # SPEC §4: rows after as_of are never seen
                    continue
                by_member.setdefault(key, []).append(row)
            if table.time:
                for group in by_member.values():
                    group.sort(key=lambda r, f=table.time: _time_key(r[f]))
            events[name] = by_member
            read[name], after[name] = len(table_rows), late
        ordered = [members[k] for k in sorted(members, key=_sort_key)]
        return Snapshot(ordered, events, SnapshotStats(read, 0, {}, after))

    def fixture_row(self, raw: object, fields: dict[str, t.Type], path: tuple, table: str,
                    key: str | None = None) -> dict:
        if not isinstance(raw, dict):
            raise self.error(f"a {table} row is a map of field → value", path, "MR150")
        for name in raw:
            if name not in fields:
                raise self.error(f"{table} has no field '{name}'", (*path, name), key=True,
                                 hint=_guess(name, list(fields)) or "fields: " + ", ".join(fields))
        row = {}
        for name, type_ in fields.items():
            if name not in raw:
                if type_.nullable:
                    row[name] = None
                    continue
                raise self.error(f"the {table} row has no '{name}' ({type_})", path, "MR152",
                                 hint=f"add {name}: … (only nullable fields may be left out)")
            try:
                row[name] = fixture_value(raw[name], type_, self.tz)
            except ValueError as problem:
                raise self.error(f"{table}.{name}: {problem}", (*path, name), "MR152") from None
            if name == key and row[name] in (None, ""):
                raise self.error(f"{table}.{name}: missing member key", (*path, name), "MR152")
        return row

    def decide(self, case: dict, path: tuple, evaluation: Evaluation, result: TestResult):
        if self.decide_actions is None or not self.rules.campaigns:
            return None
        previous = case.get("previous")
        if previous is not None and not isinstance(previous, dict):
            raise self.error("previous is a map of member → {tier, classes, segments, …}", (*path, "previous"),
                             "MR150")
        try:
            return self.decide_actions(self.rules, self.compiled, evaluation, previous=previous)
        except DiagnosticError as problem:
            raise _TestError(problem.diagnostics[0]) from None

    def cover(self, evaluation: Evaluation, decision) -> None:
        coverage = self.report.coverage
        rules = self.rules
        for row in evaluation.rows:
            if rules.tiers is not None:
                coverage.tiers.add(row["tier"])
            for name in rules.classes:
                if row[name] is not None:
                    coverage.cases.add((name, row[name]))
            coverage.segments.update(row["segments"])
        if decision is not None:
            coverage.campaigns.update(action.campaign for action in decision.actions)

    # -- expectations ----------------------------------------------------------------------------

    def check_expectation(self, expectation: object, path: tuple, evaluation: Evaluation, decision,
                          as_of: str, result: TestResult) -> None:
        rules = self.rules
        if not isinstance(expectation, dict) or "member" not in expectation:
            raise self.error("an expectation names its member: - member: m1", path, "MR150")
        key_type = rules.member.fields[rules.member.key]
        try:
            member = fixture_value(expectation["member"], key_type, self.tz)
        except ValueError as problem:
            raise self.error(str(problem), (*path, "member"), "MR152") from None
        try:
            state = evaluation.state(member)
        except KeyError:
            known = [str(m[rules.member.key]) for m in evaluation.members]
            raise self.error(f"member {member} is not in this test's members", (*path, "member"), "MR151",
                             hint=_guess(str(member), known)) from None
        row = evaluation.row(member)

        def compare(field_name: str, expected_raw: object, actual: object, type_: t.Type, at: tuple) -> None:
            try:
                expected = fixture_value(expected_raw, type_.with_null(), self.tz)
            except ValueError as problem:
                raise self.error(f"{field_name}: {problem}", at, "MR152") from None
            if not _loose_equal(expected, actual):
                result.failures.append(Failure(member, field_name, expected, actual, self.span(*at), as_of))

        for name, expected in expectation.items():
            at = (*path, name)
            if name == "member":
                continue
            if name in self.columns:
                compare(name, expected, row[name], self.columns[name], at)
            elif name == "classes":
                for list_name, value in self.mapping(expected, at, "classes").items():
                    if list_name not in rules.classes:
                        raise self.error(f"unknown class list '{list_name}'", (*at, list_name), key=True,
                                         hint=_guess(list_name, rules.classes))
                    compare(list_name, value, state.values.get(list_name), t.STRING, (*at, list_name))
            elif name == "metrics":
                for metric, value in self.mapping(expected, at, "metrics").items():
                    if metric not in rules.metrics:
                        raise self.error(f"unknown metric '{metric}'", (*at, metric), key=True,
                                         hint=_guess(metric, rules.metrics))
                    compare(metric, value, state.values.get(metric), rules.metrics[metric].type, (*at, metric))
            elif name == "segments":
                self.check_segments(expected, at, member, row["segments"], as_of, result)
            elif name == "actions":
                self.check_actions(expected, at, member, decision, as_of, result)
            else:
                allowed = list(self.columns) + list(EXPECT_GROUPS)
                raise self.error(f"unknown expectation '{name}'", at, key=True,
                                 hint=_guess(name, allowed) or "expect: " + ", ".join(allowed))

    def mapping(self, value: object, at: tuple, what: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(f"{what} is a map, e.g. {what}: {{name: value}}", at, "MR150")
        return value

    def check_segments(self, expected: object, at: tuple, member, actual: list[str], as_of: str,
                       result: TestResult) -> None:
        segments = self.rules.segments
        if isinstance(expected, list):
            for i, name in enumerate(expected):
                if name not in segments:
                    raise self.error(f"unknown segment '{name}'", (*at, i), hint=_guess(str(name), segments))
            if sorted(map(str, expected)) != sorted(actual):
                result.failures.append(Failure(member, "segments", expected, actual, self.span(*at), as_of))
            return
        for name, value in self.mapping(expected, at, "segments").items():
            if name not in segments:
                raise self.error(f"unknown segment '{name}'", (*at, name), key=True, hint=_guess(name, segments))
            if not isinstance(value, bool):
                raise self.error(f"segment {name}: expected true or false, got {show(value)}", (*at, name), "MR152")
            if value != (name in actual):
                result.failures.append(Failure(member, f"segments.{name}", value, name in actual,
                                               self.span(*at, name), as_of))

    def check_actions(self, expected: object, at: tuple, member, decision, as_of: str, result: TestResult) -> None:
        if not isinstance(expected, list):
            raise self.error("actions is a list, e.g. [{campaign: win_back, channel: sms}] or []", at, "MR150")
        if self.decide_actions is None:
            result.notes.append("actions not yet evaluated: the campaign runtime (engine/campaigns.py) is absent")
            return
        actual = [a for a in (decision.actions if decision is not None else []) if str(a.member) == str(member)]
        unmatched = list(actual)
        for i, wanted in enumerate(expected):
            if not isinstance(wanted, dict) or "campaign" not in wanted:
                raise self.error("an expected action names its campaign: {campaign: win_back, …}", (*at, i), "MR150")
            if wanted["campaign"] not in self.rules.campaigns:
                raise self.error(f"unknown campaign '{wanted['campaign']}'", (*at, i, "campaign"),
                                 hint=_guess(str(wanted["campaign"]), self.rules.campaigns))
            found = next((a for a in unmatched if _action_matches(wanted, a, self.tz)), None)
            if found is None:
                same = next((a for a in unmatched if a.campaign == wanted["campaign"]), None)
                got = _action_text(same, list(wanted)) if same else \
                    ("no action" if not actual else "only " + ", ".join(_action_text(a) for a in actual))
                result.failures.append(Failure(member, "actions", wanted, got, self.span(*at, i), as_of,
                                               message=f"expected {show(wanted)}, got {got}"))
            else:
                unmatched.remove(found)
        for extra in unmatched:
            result.failures.append(Failure(member, "actions", None, extra, self.span(*at), as_of,
                                           message=f"unexpected action {_action_text(extra)}"
                                                   + ("" if expected else " (expected none)")))


def _action_matches(wanted: dict, action, tz: ZoneInfo) -> bool:
    for name, value in wanted.items():
        actual = getattr(action, name, None)
        if isinstance(actual, datetime):
            try:
                value = fixture_value(value, t.TIMESTAMP, tz)
            except ValueError:
                return False
        elif isinstance(actual, str) and not isinstance(value, str):
            value = show(value)
        if not _loose_equal(value, actual):
            return False
    return True


def _action_text(action, fields: list[str] | None = None) -> str:
    names = fields or ["campaign", "channel"]
    parts = [f"{name}: {show(getattr(action, name, None))}" for name in names]
    return "{" + ", ".join(parts) + "}"


def _expectable_columns(rules: CheckedRuleSet) -> dict[str, t.Type]:
    """Result columns an expectation may name directly, with their types."""
    from .results import result_columns

    columns = {column.name: column.type for column in result_columns(rules)}
    columns.pop("segments", None)
    columns.pop(rules.member.key, None)
    return columns


def _guess(word: str, candidates: Iterable) -> str | None:
    guess = did_you_mean(word, [str(c) for c in candidates])
    return f"did you mean '{guess}'?" if guess else None


def _after(moment: object, as_of: datetime) -> bool:
    if isinstance(moment, datetime):
        return moment > as_of
    if isinstance(moment, date):
        return moment > as_of.date()
    return False


def _time_key(value: object) -> tuple:
    # Rows with no time sort first; the snapshot reader rejects them, fixtures may still hold them.
    if value is None:
        return (0, 0)
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (1, datetime.combine(value, datetime.min.time()).timestamp())  # type: ignore[arg-type]


def _sort_key(key: object) -> tuple:
    return (str(type(key).__name__), key)


# -- output ------------------------------------------------------------------------------------------

def render_report(report: TestReport, coverage: bool = False) -> str:
    """The text `memberrules test` prints: one line per test, failures with their positions."""
    lines = []
    for result in report.results:
        where = f" ({result.span})" if result.span else ""
        status = "ok  " if result.passed else ("ERROR" if result.errors else "FAIL")
        lines.append(f"{status} {result.name}{where}")
        for failure in result.failures:
            lines.append("     " + failure.text())
        for diagnostic in result.errors:
            where = f"{diagnostic.span}: " if diagnostic.span else ""
            lines.append(f"     {where}error: {diagnostic.message} [{diagnostic.code}]"
                         + (f"\n       = hint: {diagnostic.hint}" if diagnostic.hint else ""))
        for note in dict.fromkeys(result.notes):
            lines.append(f"     note: {note}")
    if coverage and report.check.rule_set is not None and report.results:
        lines.append("")
        gaps = [(what, names) for what, names in report.coverage.missing(report.check.rule_set) if names]
        if not gaps:
            lines.append("coverage: every tier level, class case, segment and campaign was reached by a test")
        else:
            lines.append("coverage: not reached by any test")
            lines += [f"  {what}: {', '.join(names)}" for what, names in gaps]
        if not report.coverage.campaigns_evaluated and report.check.rule_set.campaigns:
            lines.append("  campaigns: not evaluated (no campaign runtime)")
    return "\n".join(lines)


def summary_line(report: TestReport) -> str:
    results = report.results
    failed = sum(1 for r in results if r.failures and not r.errors)
    errors = sum(1 for r in results if r.errors)
    passed = len(results) - failed - errors
    files = len(report.files)
    if not results and not report.problems:
        return f"no tests: no *.test.yaml with tests in the rule set ({files} file(s))"
    parts = [f"{passed} passed"] + ([f"{failed} failed"] if failed else [])
    parts += [f"{errors} error(s)"] if errors else []
    head = "ok" if report.ok else "failed"
    return f"{head}: {len(results)} test(s) in {files} file(s): {', '.join(parts)}"


def write_junit(report: TestReport, path: Path) -> None:
    """JUnit XML, one testsuite per test file, one testcase per test."""
    from .results import atomic_path

    suites = ElementTree.Element("testsuites", name="memberrules")
    by_file: dict[str, list[TestResult]] = {}
    for result in report.results:
        by_file.setdefault(result.file, []).append(result)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for file, results in by_file.items():
        failures = sum(1 for r in results if r.failures and not r.errors)
        errors = sum(1 for r in results if r.errors)
        suite = ElementTree.SubElement(suites, "testsuite", name=file, tests=str(len(results)),
                                       failures=str(failures), errors=str(errors), skipped="0",
                                       time=f"{sum(r.seconds for r in results):.3f}")
        totals["tests"] += len(results)
        totals["failures"] += failures
        totals["errors"] += errors
        for result in results:
            case = ElementTree.SubElement(suite, "testcase", classname=Path(file).name.split(".")[0],
                                          name=result.name, file=file, time=f"{result.seconds:.3f}")
            if result.span is not None:
                case.set("line", str(result.span.line))
            if result.errors:
                first = result.errors[0]
                error = ElementTree.SubElement(case, "error", message=first.message, type=first.code)
                error.text = "\n".join(f"{d.span}: {d.message} [{d.code}]" if d.span else d.message
                                       for d in result.errors)
            elif result.failures:
                failure = ElementTree.SubElement(case, "failure", message=result.failures[0].text(),
                                                 type="expectation")
                failure.text = "\n".join(f.text() for f in result.failures)
            for note in dict.fromkeys(result.notes):
                ElementTree.SubElement(case, "system-out").text = note
    for name, value in totals.items():
        suites.set(name, str(value))
    ElementTree.indent(suites)
    with atomic_path(path) as temp:
        ElementTree.ElementTree(suites).write(temp, encoding="utf-8", xml_declaration=True)


__all__ = ["Coverage", "Failure", "TestReport", "TestResult", "fixture_value", "render_report", "run_tests",
           "summary_line", "test_files", "write_junit"]
