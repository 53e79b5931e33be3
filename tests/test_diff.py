"""`memberrules diff`: a rule change on a git branch, compared on a small snapshot counted by hand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberrules.cli import main
from memberrules.engine.check import check_rule_set
from memberrules.engine.diff import compare_rules, diff_rule_sets, parse_threshold, render_markdown
from memberrules.engine.gitsource import GitSourceError, open_rule_source
from memberrules.engine.init import init_rule_set

AS_OF = "2026-11-01T10:00:00+08:00"

# The starter rule set (engine/starter) is the rule set under change. Hand count, as_of 1 Nov 2026 10:00:
#
#   member  growth  held    orders (days before as_of)   old tier / lifecycle   new tier / lifecycle
#   a1      850     normal  20 Oct (12), 120.00           normal / active        silver / active
#   a2      950     normal  25 Sep (37), 40.00            normal / silent        silver / active
#   a3      700     normal   1 Sep (61), 30.00            normal / silent        normal / silent
#   a4      1200    silver  30 + 31 Oct, 60.00 + 50.00    silver / active        silver / active
#   a5      6000    gold     1 Mar (245), 10.00           gold   / churned       gold   / churned
#   a6      900     silver  none, registered 2025         silver / potential     silver / potential
#   a7      0       (none)  none, registered 25 Oct       normal / new           normal / new
#
# The branch lowers silver from 1000 to 800 (a1, a2 move up; a6 holds silver either way) and
# widens "active" from 30 to 45 days (a2 moves from silent to active), and adds a segment
# big_spender (30-day spend >= 100: a1 with 120.00, a4 with 110.00).
# win_back (lifecycle silent, push consent: a2, a3) goes to a2 and a3 before, to a3 after.
MEMBERS = """member_id,name,registered_at,growth_value,tier,opted_in_push,tags
a1,Li Lei,2024-01-05T09:00:00,850,normal,false,"[""vip""]"
a2,Han Meimei,2024-02-01T09:00:00,950,normal,true,[]
a3,Zhang Wei,2024-03-01T09:00:00,700,normal,true,[]
a4,Wang Fang,2024-04-01T09:00:00,1200,silver,false,[]
a5,Liu Yang,2024-05-01T09:00:00,6000,gold,false,[]
a6,Chen Jing,2025-01-01T09:00:00,900,silver,false,[]
a7,Zhao Lei,2026-10-25T09:00:00,0,,false,[]
"""
ORDERS = """member_id,placed_at,amount
a1,2026-10-20T12:00:00,120.00
a2,2026-09-25T12:00:00,40.00
a3,2026-09-01T12:00:00,30.00
a4,2026-10-30T12:00:00,60.00
a4,2026-10-31T12:00:00,50.00
a5,2026-03-01T12:00:00,10.00
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Ops", "GIT_AUTHOR_EMAIL": "ops@example.com",
           "GIT_COMMITTER_NAME": "Ops", "GIT_COMMITTER_EMAIL": "ops@example.com"}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), "utf-8")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    """A git repository: the starter rules committed on main, the change committed on a branch."""
    root = tmp_path / "program"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    init_rule_set(root / "rules")
    data = root / "data"
    data.mkdir()
    (data / "member.csv").write_text(MEMBERS, "utf-8")
    (data / "orders.csv").write_text(ORDERS, "utf-8")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "starter rules")
    git(root, "checkout", "-q", "-b", "lower-silver")
    rules = root / "rules" / "rules.yaml"
    edit(rules, "    - {name: silver, min: 1000}", "    - {name: silver, min: 800}")
    edit(rules, "  active_days: 30 ", "  active_days: 45 ")
    # Spacing only: not a change of meaning, so not listed.
    edit(rules, "  repurchaser: orders_total >= 2", "  repurchaser: orders_total>=2\n  big_spender: monetary >= 100")
    git(root, "commit", "-q", "-am", "lower the silver threshold, widen active")
    monkeypatch.chdir(root)
    return root


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def cells(matrix: dict) -> dict[tuple, int]:
    return {(c["from"], c["to"]): c["count"] for c in matrix["cells"]}


def test_diff_of_a_branch_against_main_counts_members_by_hand(repo: Path):
    result = run("diff", "main:rules", "rules", "--data", "data", "--as-of", AS_OF, "--format", "json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert diff["members"] == 7
    assert diff["members_changed"] == 2  # a1 (tier), a2 (tier and lifecycle)
    assert cells(diff["tiers"]) == {("normal", "normal"): 2, ("normal", "silver"): 2,
                                     ("silver", "silver"): 2, ("gold", "gold"): 1}
    assert [(c["from"], c["to"], c["examples"]) for c in diff["tiers"]["cells"] if c["from"] != c["to"]] \
        == [("normal", "silver", ["a1", "a2"])]
    (lifecycle,) = diff["classes"]
    assert cells(lifecycle) == {("new", "new"): 1, ("active", "active"): 2, ("silent", "active"): 1,
                                ("silent", "silent"): 1, ("churned", "churned"): 1, ("potential", "potential"): 1}
    segments = {s["name"]: s for s in diff["segments"]}
    assert (segments["vip"]["before"], segments["vip"]["after"]) == (2, 2)  # a1 (tag), a5 (gold)
    assert (segments["big_spender"]["status"], segments["big_spender"]["before"], segments["big_spender"]["after"],
            segments["big_spender"]["entered_examples"]) == ("added", 0, 2, ["a1", "a4"])
    campaigns = {c["name"]: c for c in diff["campaigns"]}
    assert (campaigns["win_back"]["before"], campaigns["win_back"]["after"], campaigns["win_back"]["lost_examples"]) \
        == (2, 1, ["a2"])
    # Without a previous run tier_up compares with the held tier (tiers.current): a2 (push consent) moves
    # up from normal only under the new rules; a1 moves up too but has no push consent.
    assert (campaigns["congrats"]["before"], campaigns["congrats"]["after"], campaigns["congrats"]["gained_examples"]) \
        == (0, 1, ["a2"])
    assert any("tier_up and tier_down compare with tiers.current" in note for note in diff["notes"])
    assert [(r["address"], r["kind"], r["old"], r["new"]) for r in diff["rules"]] == [
        ("params.active_days", "changed", "30", "45"),
        ("tiers.levels.silver", "changed", "min 1000", "min 800"),
        ("segments.big_spender", "added", None, "monetary >= 100"),
    ]
    assert diff["old"]["commit"] == git(repo, "rev-parse", "main").strip()


def test_markdown_diff_is_a_pull_request_comment_with_tables(repo: Path):
    result = run("diff", "main:rules", "rules", "--data", "data", "--as-of", AS_OF, "--format", "markdown")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("### memberrules diff: `main:rules (")
    assert "**2 of 7 members (28.6%) change tier or class**" in text
    assert "| changed | `tiers.levels.silver` | `min 1000` | `min 800` |" in text
    assert "\n".join([
        "| from ↓ to → | normal | silver | gold |",
        "| --- | ---: | ---: | ---: |",
        "| normal | **2** | 2 | 0 |",
        "| silver | 0 | **2** | 0 |",
        "| gold | 0 | 0 | **1** |",
    ]) in text
    assert "- normal → silver: 2 (e.g. a1, a2)" in text
    assert "- silent → active: 1 (e.g. a2)" in text
    assert "| `big_spender` (added) | 0 | 2 | +2 | +2 | -0 | in: a1, a4 |" in text
    assert "| `win_back` | push | 2 | 1 | -1 | lose: a2 |" in text


def test_diff_reads_revisions_without_touching_the_working_tree(repo: Path):
    rules = repo / "rules" / "rules.yaml"
    edit(rules, "  silent_days: 90 ", "  silent_days: 120 ")  # an uncommitted edit must survive
    before = {p: p.read_bytes() for p in (repo / "rules").iterdir()}
    status = git(repo, "status", "--porcelain")
    head = git(repo, "rev-parse", "HEAD")
    result = run("diff", "HEAD~1:rules", "HEAD:rules", "--data", "data", "--as-of", AS_OF, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["members_changed"] == 2
    assert {p: p.read_bytes() for p in (repo / "rules").iterdir()} == before
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "rev-parse", "HEAD") == head


def test_diff_paths_are_relative_to_the_repository_root_or_to_the_current_directory(repo: Path, monkeypatch):
    monkeypatch.chdir(repo / "rules")
    for old in ("main:rules", "main:./", "main:../rules"):
        outcome = diff_rule_sets(old, ".", repo / "data", AS_OF)
        assert outcome.diff is not None and outcome.diff.members_changed == 2, old


@pytest.mark.parametrize(("fail_on", "exit_code"), [("1", 1), ("2", 0), ("25%", 1), ("30%", 0)])
def test_fail_on_fails_when_more_members_change_tier_or_class(repo: Path, fail_on: str, exit_code: int):
    result = run("diff", "main:rules", "rules", "--data", "data", "--as-of", AS_OF, "--fail-on", fail_on)
    assert result.exit_code == exit_code, result.output
    if exit_code:
        assert f"2 of 7 members change tier or class, more than --fail-on {fail_on}" in result.stderr


def test_threshold_reads_counts_and_shares():
    assert parse_threshold("50").percent is False
    assert parse_threshold("0.5%").percent is True
    for bad in ("-1", "x", "1.5", "%", "nan%"):
        with pytest.raises(ValueError):
            parse_threshold(bad)


def test_unknown_revision_is_bad_input(repo: Path):
    result = run("diff", "nope:rules", "rules", "--data", "data", "--as-of", AS_OF)
    assert result.exit_code == 2
    assert "unknown git revision 'nope'" in result.stderr
    result = run("diff", "main:missing", "rules", "--data", "data", "--as-of", AS_OF)
    assert result.exit_code == 2
    assert "'missing' does not exist in revision 'main'" in result.stderr


def test_errors_in_a_revision_name_the_file_as_git_does(repo: Path):
    git(repo, "checkout", "-q", "-b", "broken")
    edit(repo / "rules" / "rules.yaml", "  repurchaser: orders_total>=2", "  repurchaser: orders_totl >= 2")
    git(repo, "commit", "-q", "-am", "typo")
    git(repo, "checkout", "-q", "lower-silver")
    result = run("diff", "main:rules", "broken:rules", "--data", "data", "--as-of", AS_OF)
    assert result.exit_code == 1
    assert "broken:rules/rules.yaml:" in result.stderr
    assert "unknown name 'orders_totl'" in result.stderr


def test_a_directory_whose_name_has_a_colon_is_a_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    init_rule_set(tmp_path / "v1:rules")
    with open_rule_source("v1:rules") as source:
        assert source.commit is None and source.path == Path("v1:rules")
    with pytest.raises(GitSourceError, match="not inside a git repository"):
        with open_rule_source("v2:rules"):
            pass


def test_reordered_class_cases_are_a_change_of_meaning(tmp_path: Path):
    init_rule_set(tmp_path / "old")
    init_rule_set(tmp_path / "new")
    edit(tmp_path / "new" / "rules.yaml", """    - name: active
      when: (recency_days ?? 9999) <= active_days
    - name: silent
      when: (recency_days ?? 9999) <= silent_days
""", """    - name: silent
      when: (recency_days ?? 9999) <= silent_days
    - name: active
      when: (recency_days ?? 9999) <= active_days
""")
    old = check_rule_set(tmp_path / "old").rule_set
    new = check_rule_set(tmp_path / "new").rule_set
    assert [(c.address, c.old, c.new) for c in compare_rules(old, new)] == [
        ("classes.lifecycle (order)", "new, active, silent, churned, potential",
         "new, silent, active, churned, potential")]


def test_unchanged_rules_say_so(tmp_path: Path):
    init_rule_set(tmp_path / "rules")
    data = tmp_path / "data"
    data.mkdir()
    (data / "member.csv").write_text(MEMBERS, "utf-8")
    (data / "orders.csv").write_text(ORDERS, "utf-8")
    outcome = diff_rule_sets(str(tmp_path / "rules"), str(tmp_path / "rules"), data, AS_OF)
    assert outcome.diff is not None and outcome.diff.members_changed == 0
    text = render_markdown(outcome.diff)
    assert "No rule reads differently" in text
    assert "Nobody moves in: `tier`, `lifecycle`." in text


def test_the_duckdb_engine_gives_the_same_diff_campaigns_included(repo: Path):
    args = ["diff", "main:rules", "rules", "--data", "data", "--as-of", AS_OF, "--format", "json"]
    python = json.loads(run(*args).stdout)
    duckdb = json.loads(run(*args, "--engine", "duckdb").stdout)
    assert python["campaigns"], "the starter rule set's campaigns send actions on this data"
    assert duckdb == python
