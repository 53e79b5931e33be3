"""The pre-commit hooks (.pre-commit-hooks.yaml) and the CI example (examples/ci/), run for real."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from memberrules.engine.init import init_rule_set

CHECKOUT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MANIFEST = CHECKOUT / ".pre-commit-hooks.yaml"
WORKFLOW = CHECKOUT / "examples" / "ci" / "memberrules.yml"


def environment(tmp_path: Path) -> dict[str, str]:
    """git and pre-commit isolated from the user's configuration and caches."""
    return {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Ops", "GIT_AUTHOR_EMAIL": "ops@example.com",
            "GIT_COMMITTER_NAME": "Ops", "GIT_COMMITTER_EMAIL": "ops@example.com",
            "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def sh(args: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def manifest_hooks() -> list[dict]:
    return yaml.safe_load(MANIFEST.read_text("utf-8"))


def test_the_manifest_offers_validate_and_test_on_yaml_changes():
    hooks = {hook["id"]: hook for hook in manifest_hooks()}
    assert sorted(hooks) == ["memberrules-test", "memberrules-validate"]
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False
        assert hook["entry"].split()[0] == "memberrules"
        files = re.compile(hook["files"])
        assert files.search("rules/tiers.yaml") and files.search("rules/x.yml")
        assert files.search("rules/program.test.yaml")
        assert not files.search("README.md") and not files.search("rules/tiers.yaml.bak")


def user_repository(tmp_path: Path, env: dict, config: str) -> Path:
    """A repository with a rule set (from `init`) and a pre-commit configuration, hooks installed."""
    repo = tmp_path / "program"
    repo.mkdir()
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    init_rule_set(repo / "rules")
    (repo / ".pre-commit-config.yaml").write_text(config, "utf-8")
    sh([str(BIN / "pre-commit"), "install"], repo, env)
    sh(["git", "add", "."], repo, env)
    return repo


def commit(repo: Path, env: dict, message: str) -> subprocess.CompletedProcess:
    return sh(["git", "commit", "-am", message], repo, env, check=False)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new), "utf-8")


def check_bad_change_refused_good_change_accepted(repo: Path, env: dict, hook_ids: list[str]) -> None:
    first = commit(repo, env, "starter rules")
    assert first.returncode == 0, first.stdout + first.stderr
    for hook_id in hook_ids:
        assert re.search(rf"memberrules {hook_id.split('-')[1]}\.+Passed", first.stdout + first.stderr)
    head = sh(["git", "rev-parse", "HEAD"], repo, env).stdout

    rules = repo / "rules" / "rules.yaml"
    edit(rules, "  repurchaser: orders_total >= 2", "  repurchaser: orders_totl >= 2")
    refused = commit(repo, env, "a typo")
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert re.search(r"memberrules validate\.+Failed", output), output
    assert "rules/rules.yaml:" in output and "unknown name 'orders_totl' [MR301]" in output
    assert "did you mean 'orders_total'?" in output
    assert sh(["git", "rev-parse", "HEAD"], repo, env).stdout == head  # nothing was committed

    edit(rules, "  repurchaser: orders_totl >= 2", "  repurchaser: orders_total >= 2")
    edit(rules, "  active_days: 30 ", "  active_days: 35 ")
    accepted = commit(repo, env, "active means 35 days")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert sh(["git", "rev-parse", "HEAD"], repo, env).stdout != head

    edit(repo / "rules" / "README.md", "# Rules of the membership programme", "# Our rules")
    skipped = commit(repo, env, "only prose")
    assert skipped.returncode == 0
    assert re.search(r"memberrules validate\.+\(no files to check\)Skipped", skipped.stdout + skipped.stderr)


def test_pre_commit_refuses_a_bad_rule_change_with_the_diagnostic(tmp_path: Path):
    """The manifest's hooks as `repo: local` hooks calling the installed command: works offline."""
    hooks = manifest_hooks()
    local = []
    for hook in hooks:
        entry = hook["entry"].split()
        local.append({**hook, "language": "system", "entry": " ".join([str(BIN / entry[0]), *entry[1:]])})
    config = yaml.safe_dump({"repos": [{"repo": "local", "hooks": local}]}, sort_keys=False)
    env = environment(tmp_path)
    repo = user_repository(tmp_path, env, config)
    check_bad_change_refused_good_change_accepted(repo, env, [hook["id"] for hook in hooks])


@pytest.mark.heavy
def test_pre_commit_installs_the_hooks_from_this_repository(tmp_path: Path):
    """`repo: <this checkout>` at a commit: pre-commit clones it and pip-installs it (from PyPI)."""
    hooks_repo = tmp_path / "memberrules"
    hooks_repo.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py", ".pre-commit-hooks.yaml", "engine", "grammar", "rules"):
        source = CHECKOUT / name
        if source.is_dir():
            shutil.copytree(source, hooks_repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, hooks_repo / name)
    env = environment(tmp_path)
    sh(["git", "init", "-q", "-b", "main"], hooks_repo, env)
    sh(["git", "add", "."], hooks_repo, env)
    sh(["git", "commit", "-q", "-m", "memberrules"], hooks_repo, env)
    rev = sh(["git", "rev-parse", "HEAD"], hooks_repo, env).stdout.strip()
    ids = [hook["id"] for hook in manifest_hooks()]
    config = yaml.safe_dump({"repos": [{"repo": str(hooks_repo), "rev": rev,
                                        "hooks": [{"id": hook_id} for hook_id in ids]}]}, sort_keys=False)
    repo = user_repository(tmp_path, env, config)
    sh([str(BIN / "pre-commit"), "install-hooks"], repo, env)
    check_bad_change_refused_good_change_accepted(repo, env, ids)


# -- the GitHub Actions example ----------------------------------------------------------------------

def test_the_ci_example_is_a_valid_github_workflow():
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_ci_example_validates_with_annotations_and_diffs_on_pull_requests():
    steps = yaml.safe_load(WORKFLOW.read_text("utf-8"))["jobs"]["rules"]["steps"]
    runs = " ".join(step.get("run", "") for step in steps)
    assert 'memberrules validate "$RULES" --format github' in runs
    assert 'memberrules test "$RULES"' in runs
    assert 'memberrules diff "origin/$BASE_REF:$RULES" "$RULES"' in runs and "--format markdown" in runs
    assert all("${{" not in step.get("run", "") for step in steps)  # expressions go through env, not the shell


MEMBERS = """member_id,name,registered_at,growth_value,tier,opted_in_push,tags
a1,Li Lei,2024-01-05T09:00:00,850,normal,false,[]
a2,Han Meimei,2024-02-01T09:00:00,1200,silver,true,[]
a3,Zhang Wei,2026-10-25T09:00:00,0,,false,[]
"""
ORDERS = """member_id,placed_at,amount
a1,2026-10-20T12:00:00,120.00
a2,2026-09-25T12:00:00,40.00
"""


def _expand(value: str, context: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: context[m.group(1)], value)


def run_workflow(repo: Path, tmp_path: Path, env: dict, context: dict[str, str]) -> list[tuple[str, int, str]]:
    """Run the workflow's shell steps in `repo` as the runner would; `gh` is a stand-in that records."""
    workflow = yaml.safe_load(WORKFLOW.read_text("utf-8"))
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    gh = fake_bin / "gh"
    gh.write_text('#!/bin/sh\necho "$@" >> "$GH_LOG"\n'
                  'while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "$GH_LOG.body"; shift; done\n', "utf-8")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    base = {**env, **{k: _expand(str(v), context) for k, v in workflow["env"].items()},
            "PATH": f"{fake_bin}{os.pathsep}{env['PATH']}", "GH_LOG": str(tmp_path / "gh.log"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    results = []
    for step in workflow["jobs"]["rules"]["steps"]:
        if "run" not in step or step["run"].startswith("pip install"):
            continue  # actions/checkout, setup-python and the install: the test runs in this checkout's venv
        condition = step.get("if")
        if condition is not None:
            assert condition == "github.event_name == 'pull_request'", condition
            if context["github.event_name"] != "pull_request":
                continue
        step_env = {**base, **{k: _expand(str(v), context) for k, v in step.get("env", {}).items()}}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=repo,
                              env=step_env, capture_output=True, text=True)
        results.append((step["name"], done.returncode, done.stdout + done.stderr))
    return results


def test_the_ci_example_runs_on_a_pull_request_and_comments_the_diff(tmp_path: Path):
    env = environment(tmp_path)
    repo = tmp_path / "program"
    repo.mkdir()
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    init_rule_set(repo / "rules")
    snapshot = repo / "snapshots" / "sample"
    snapshot.mkdir(parents=True)
    (snapshot / "member.csv").write_text(MEMBERS, "utf-8")
    (snapshot / "orders.csv").write_text(ORDERS, "utf-8")
    sh(["git", "add", "."], repo, env)
    sh(["git", "commit", "-q", "-m", "rules"], repo, env)
    sh(["git", "update-ref", "refs/remotes/origin/main", "HEAD"], repo, env)  # what checkout fetches
    sh(["git", "checkout", "-q", "-b", "lower-silver"], repo, env)
    edit(repo / "rules" / "rules.yaml", "{name: silver, min: 1000}", "{name: silver, min: 850}")
    sh(["git", "commit", "-q", "-am", "silver from 850"], repo, env)
    context = {"github.event_name": "pull_request", "github.base_ref": "main",
               "github.event.pull_request.number": "42", "github.token": "token"}

    results = run_workflow(repo, tmp_path, env, context)
    # a1 (850) moves from normal to silver: 1 of 3 members, more than 5%: the check fails.
    assert [(name, code) for name, code, _ in results] == [
        ("Validate", 0), ("Test", 0), ("Format", 0), ("Diff against the base branch", 1)]
    comment = (tmp_path / "gh.log.body").read_text("utf-8")
    assert comment.startswith("### memberrules diff: `origin/main:rules (")
    assert "- normal → silver: 1 (e.g. a1)" in comment
    assert (tmp_path / "gh.log").read_text("utf-8").startswith("pr comment 42 --edit-last --body-file diff.md")
    assert (tmp_path / "summary.md").read_text("utf-8") == comment

    edit(repo / "rules" / "rules.yaml", "  repurchaser: orders_total >= 2", "  repurchaser: orders_totl >= 2")
    results = run_workflow(repo, tmp_path, env, context)
    name, code, output = results[0]
    assert (name, code) == ("Validate", 1)
    assert output.startswith("::error file=rules/rules.yaml,line=")
    assert "MR301: unknown name 'orders_totl'" in output
