"""`memberrules init`: a new rule set that validates, tests and formats clean at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memberrules.engine.fmt import format_rule_set
from memberrules.engine.init import STARTER_FILES, init_rule_set

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parent.parent


def memberrules(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    return subprocess.run([str(BIN / "memberrules"), *args], cwd=cwd, capture_output=True, text=True)


def test_init_writes_schema_rules_tests_and_readme(tmp_path: Path):
    result = memberrules("init", "rules", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "rules").iterdir()) == sorted(STARTER_FILES)
    assert result.stdout.splitlines() == [f"wrote {Path('rules') / name}" for name in STARTER_FILES]
    readme = (tmp_path / "rules" / "README.md").read_text("utf-8")
    for name in STARTER_FILES[:-1]:
        assert f"`{name}`" in readme  # the README explains every file


def test_the_new_rule_set_validates_with_no_warning(tmp_path: Path):
    assert memberrules("init", "rules", cwd=tmp_path).returncode == 0
    result = memberrules("validate", "rules", "--strict", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("ok: 2 file(s), 4 metrics, 1 class lists, 2 segments, 2 campaigns\n")
    assert "warning" not in result.stderr


def test_the_new_rule_set_passes_its_own_tests_and_they_reach_every_rule(tmp_path: Path):
    assert memberrules("init", "rules", cwd=tmp_path).returncode == 0
    result = memberrules("test", "rules", "--coverage", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every tier level, class case, segment and campaign was reached by a test" in result.stdout
    assert "ok: 2 test(s) in 1 file(s): 2 passed" in result.stderr


def test_the_starter_tests_can_fail(tmp_path: Path):
    assert memberrules("init", "rules", cwd=tmp_path).returncode == 0
    tests = tmp_path / "rules" / "rules.test.yaml"
    tests.write_text(tests.read_text("utf-8").replace("growth_value: 5200", "growth_value: 4200"), "utf-8")
    result = memberrules("test", "rules", cwd=tmp_path)
    assert result.returncode == 1
    assert "member m1, as_of 2026-11-01T10:00:00+08:00, tier: expected gold, got silver" in result.stdout


def test_the_new_rule_set_is_already_formatted(tmp_path: Path):
    init_rule_set(tmp_path / "rules")
    assert format_rule_set(tmp_path / "rules", check=True).changed == []


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path):
    target = tmp_path / "rules"
    target.mkdir()
    (target / "mine.yaml").write_text("# my own rules\n", "utf-8")
    result = memberrules("init", "rules", cwd=tmp_path)
    assert result.returncode == 2
    assert "rules is not empty" in result.stderr
    assert [p.name for p in target.iterdir()] == ["mine.yaml"]
    assert (target / "mine.yaml").read_text("utf-8") == "# my own rules\n"


def test_init_refuses_a_file(tmp_path: Path):
    (tmp_path / "rules").write_text("x", "utf-8")
    result = memberrules("init", "rules", cwd=tmp_path)
    assert result.returncode == 2
    assert "is a file" in result.stderr


def test_init_creates_missing_parents_and_takes_an_empty_directory(tmp_path: Path):
    assert len(init_rule_set(tmp_path / "a" / "b" / "rules")) == len(STARTER_FILES)
    (tmp_path / "empty").mkdir()
    assert len(init_rule_set(tmp_path / "empty")) == len(STARTER_FILES)


def test_the_starter_files_ship_as_package_data(tmp_path: Path):
    """Build the package as a wheel would lay it out, and run init from that copy."""
    setuptools = pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py", "engine", "grammar", "rules"):
        copy = shutil.copytree if (CHECKOUT / name).is_dir() else shutil.copy
        copy(CHECKOUT / name, source / name)
    build = tmp_path / "lib"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; "
                    f"setup(script_args=['-q', 'build_py', '--build-lib', {str(build)!r}])"],
                   cwd=source, check=True, capture_output=True)
    assert setuptools is not None
    assert sorted(p.name for p in (build / "memberrules" / "engine" / "starter").iterdir()) == sorted(STARTER_FILES)
    env = {**os.environ, "PYTHONPATH": str(build)}
    code = ("import memberrules.engine.init as i, pathlib, sys; "
            "assert i.__file__.startswith(sys.argv[1]), i.__file__; "
            "i.init_rule_set(pathlib.Path(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(build), str(tmp_path / "out")], env=env, check=True,
                   cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(STARTER_FILES)
