"""`memberrules test` (engine/testing.py): fixtures, expectations, positions, JUnit, coverage."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from memberrules.engine import types as t
from memberrules.engine.testing import fixture_value, render_report, run_tests, summary_line, write_junit

RULES = """\
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, growth: int, tier: string?, tags: list<string>, birthday: date?}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal}
params:
  frequent: 2
metrics:
  frequency: count(orders within 30d)
  monetary: sum(orders.amount within 30d)
  avg_spend: avg(monetary over members where frequency > 0)
tiers:
  by: growth
  levels:
    - {name: normal, min: 0}
    - {name: gold, min: 5000}
  current: tier
classes:
  rfm:
    - {name: best, when: "frequency >= frequent and monetary >= (avg_spend ?? 0)"}
    - {name: maintain, when: "frequency >= frequent"}
    - {name: general, else: true}
segments:
  vip: "'vip' in tags"
  buyer: frequency > 0
campaigns:
  thanks:
    when: rfm == 'best'
    action: {channel: in_app, template: "Thank you!"}
"""

PASSING = """\
tests:
  - name: best and maintain
    as_of: 2026-11-01T10:00:00+08:00
    members:
      - {member_id: m1, growth: 5000, tier: normal, tags: [vip]}
      - {member_id: m2, growth: 10, tags: []}
    orders:
      - {member_id: m1, placed_at: 2026-10-30T10:00:00, amount: 100.50}
      - {member_id: m1, placed_at: 2026-10-31T10:00:00, amount: 20.00}
      - {member_id: m2, placed_at: 2026-10-30T10:00:00, amount: 1.00}
      - {member_id: m2, placed_at: 2026-10-31T10:00:00, amount: 1.00}
    expect:
      - member: m1
        tier: gold
        next_tier: null
        classes: {rfm: best}
        segments: {vip: true, buyer: true}
        metrics: {frequency: 2, monetary: 120.50, avg_spend: 61.25}
        actions: [{campaign: thanks, channel: in_app}]
      - member: m2
        rfm: maintain
        segments: [buyer]
        actions: []
"""


def make(tmp_path: Path, tests: str, rules: str = RULES) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / "rules.yaml").write_text(rules, encoding="utf-8")
    (directory / "program.test.yaml").write_text(textwrap.dedent(tests), encoding="utf-8")
    return directory


def test_a_passing_test_file(tmp_path):
    report = run_tests(make(tmp_path, PASSING))
    assert [r.failures for r in report.results] == [[]]
    assert [r.errors for r in report.results] == [[]]
    assert report.ok
    assert summary_line(report).startswith("ok: 1 test(s) in 1 file(s): 1 passed")


def test_a_failure_names_test_member_as_of_field_and_position(tmp_path):
    failing = PASSING.replace("classes: {rfm: best}", "classes: {rfm: general}")
    report = run_tests(make(tmp_path, failing))
    assert not report.ok
    (failure,) = report.results[0].failures
    directory = tmp_path / "rules"
    assert failure.text() == (f"{directory}/program.test.yaml:16:24: member m1, as_of 2026-11-01T10:00:00+08:00, "
                              "rfm: expected general, got best")
    text = render_report(report)
    assert "FAIL best and maintain" in text and "rfm: expected general, got best" in text


def test_only_named_fields_are_compared(tmp_path):
    tests = PASSING.replace("        next_tier: null\n", "").replace("        tier: gold\n", "")
    assert run_tests(make(tmp_path, tests)).ok


def test_decimals_compare_by_value(tmp_path):
    report = run_tests(make(tmp_path, PASSING.replace("monetary: 120.50", "monetary: 120.5")))
    assert report.ok
    report = run_tests(make(tmp_path, PASSING.replace("monetary: 120.50", "monetary: 120.51")))
    assert [f.field for f in report.results[0].failures] == ["monetary"]


def test_a_segment_list_must_match_exactly(tmp_path):
    report = run_tests(make(tmp_path, PASSING.replace("segments: [buyer]", "segments: [buyer, vip]")))
    (failure,) = report.results[0].failures
    assert failure.field == "segments" and failure.actual == ["buyer"]


def test_unexpected_and_missing_actions_fail(tmp_path):
    tests = PASSING.replace("actions: [{campaign: thanks, channel: in_app}]", "actions: []")
    (failure,) = run_tests(make(tmp_path, tests)).results[0].failures
    assert "unexpected action {campaign: thanks, channel: in_app} (expected none)" in failure.text()
    tests = PASSING.replace("        rfm: maintain\n        segments: [buyer]\n        actions: []",
                            "        actions: [{campaign: thanks}]")
    (failure,) = run_tests(make(tmp_path, tests)).results[0].failures
    assert failure.member == "m2" and "got no action" in failure.text()


def test_params_of_a_test_override_the_rule_set(tmp_path):
    tests = PASSING.replace("    as_of:", "    params: {frequent: 3}\n    as_of:", 1)
    report = run_tests(make(tmp_path, tests))
    fields = sorted(f.field for f in report.results[0].failures)
    assert fields == ["actions", "rfm", "rfm"]  # nobody reaches 3 orders: both are general now


def test_population_values_come_from_the_test_members_only(tmp_path):
    single = PASSING.replace("      - {member_id: m2, growth: 10, tags: []}\n", "").split("      - member: m2")[0]
    single = "\n".join(line for line in single.splitlines() if "member_id: m2" not in line) + "\n"
    report = run_tests(make(tmp_path, single.replace("avg_spend: 61.25", "avg_spend: 120.50")))
    assert report.ok, render_report(report)


def test_an_unknown_fixture_field_is_an_error_with_a_hint(tmp_path):
    tests = PASSING.replace("{member_id: m2, growth: 10, tags: []}", "{member_id: m2, growht: 10, tags: []}")
    report = run_tests(make(tmp_path, tests))
    (error,) = report.results[0].errors
    assert error.code == "MR151" and "member has no field 'growht'" in error.message
    assert error.hint == "did you mean 'growth'?"
    assert (error.span.line, error.span.col) == (6, 25)


def test_a_bad_fixture_value_points_at_it(tmp_path):
    tests = PASSING.replace("amount: 100.50", "amount: lots")
    (error,) = run_tests(make(tmp_path, tests)).results[0].errors
    assert error.code == "MR152" and "orders.amount" in error.message
    assert (error.span.line, error.span.col) == (8, 65)


def test_an_event_row_of_an_unknown_member_is_an_error(tmp_path):
    tests = PASSING.replace("{member_id: m2, placed_at: 2026-10-30", "{member_id: m3, placed_at: 2026-10-30")
    (error,) = run_tests(make(tmp_path, tests)).results[0].errors
    assert "member m3, who is not in members" in error.message


def test_an_expectation_for_a_member_not_in_the_test(tmp_path):
    (error,) = run_tests(make(tmp_path, PASSING.replace("- member: m2", "- member: m9"))).results[0].errors
    assert "member m9 is not in this test's members" in error.message


def test_an_unknown_expectation_key_suggests_the_right_one(tmp_path):
    (error,) = run_tests(make(tmp_path, PASSING.replace("metrics: {frequency", "metric: {frequency"))).results[0].errors
    assert "unknown expectation 'metric'" in error.message and error.hint == "did you mean 'metrics'?"


def test_an_unknown_metric_in_an_expectation(tmp_path):
    (error,) = run_tests(make(tmp_path, PASSING.replace("{frequency: 2", "{frequncy: 2"))).results[0].errors
    assert "unknown metric 'frequncy'" in error.message


def test_a_missing_non_nullable_field_is_an_error_and_nullable_ones_default_to_null(tmp_path):
    tests = PASSING.replace("{member_id: m2, growth: 10, tags: []}", "{member_id: m2, tags: []}")
    (error,) = run_tests(make(tmp_path, tests)).results[0].errors
    assert "has no 'growth' (int)" in error.message
    # m2 leaves out tier and birthday (both nullable) in PASSING, and passes.
    assert run_tests(make(tmp_path, PASSING)).ok


def test_rows_after_as_of_are_dropped_in_fixtures(tmp_path):
    tests = PASSING.replace("      - {member_id: m2, placed_at: 2026-10-30T10:00:00, amount: 1.00}\n",
                            "      - {member_id: m2, placed_at: 2026-11-02T10:00:00, amount: 1.00}\n")
    report = run_tests(make(tmp_path, tests))
    assert {f.field for f in report.results[0].failures} == {"rfm", "avg_spend"}


def test_broken_rules_stop_before_any_test(tmp_path):
    report = run_tests(make(tmp_path, PASSING, RULES.replace("count(orders within 30d)", "count(orders within 30)")))
    assert report.check.rule_set is None and not report.results and not report.ok


def test_no_tests_is_not_ok(tmp_path):
    report = run_tests(make(tmp_path, "tests: []\n"))
    assert not report.ok and summary_line(report).startswith("no tests")


def test_a_test_file_without_tests_key_is_a_problem(tmp_path):
    report = run_tests(make(tmp_path, "test: []\n"))
    assert [p.code for p in report.problems] == ["MR150", "MR150"]


def test_junit_xml_lists_each_test_with_failures(tmp_path):
    failing = PASSING.replace("classes: {rfm: best}", "classes: {rfm: general}")
    tests = failing + PASSING.split("tests:\n", 1)[1].replace("best and maintain", "second")
    report = run_tests(make(tmp_path, tests))
    out = tmp_path / "junit.xml"
    write_junit(report, out)
    root = ElementTree.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["best and maintain", "second"]
    assert "rfm: expected general, got best" in cases[0].find("failure").get("message")
    assert cases[1].find("failure") is None


def test_coverage_lists_what_no_test_reached(tmp_path):
    report = run_tests(make(tmp_path, PASSING))
    gaps = dict(report.coverage.missing(report.check.rule_set))
    assert gaps["tier levels"] == []
    assert gaps["rfm cases"] == ["general"]
    assert gaps["segments"] == []
    assert gaps["campaigns"] == []
    text = render_report(report, coverage=True)
    assert "coverage: not reached by any test" in text and "rfm cases: general" in text


def test_fixture_values_read_like_snapshot_cells():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Shanghai")
    assert fixture_value("2026-11-01", t.DATE, tz).isoformat() == "2026-11-01"
    assert fixture_value("30d", t.DURATION, tz).days == 30
    assert fixture_value([1, 2], t.list_of(t.INT), tz) == [1, 2]
    assert fixture_value(None, t.INT.with_null(), tz) is None
    for bad, type_ in ((None, t.INT), ("x", t.INT), (True, t.INT), ([1], t.INT), (1.5, t.BOOL)):
        try:
            fixture_value(bad, type_, tz)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was read as {type_}")


def test_the_default_pack_tests_run(tmp_path):
    report = run_tests(Path(__file__).parent.parent / "rules")
    assert report.check.ok and len(report.results) >= 20
    assert all(not r.errors for r in report.results), render_report(report)
