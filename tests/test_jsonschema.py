"""`memberrules schema` checked by the real check-jsonschema tool, as editors and CI use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memberrules.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# The default pack and the SPEC example: every rule file must pass the schema.
RULE_FILES = sorted(p for p in (ROOT / "rules").glob("*.yaml") if not p.name.endswith(".test.yaml")) + [
    ROOT / "tests" / "fixtures" / "spec_example" / "rules.yaml"]


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory) -> Path:
    result = CliRunner().invoke(main, ["schema"], catch_exceptions=False)
    assert result.exit_code == 0
    path = tmp_path_factory.mktemp("schema") / "memberrules.schema.json"
    path.write_text(result.stdout, encoding="utf-8")
    return path


def run_check(schema_file: Path, *files: Path) -> subprocess.CompletedProcess:
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is missing: pip install -e '.[test]'"
    return subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(schema_file), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_schema_is_a_2020_12_schema_of_one_rule_file(schema_file):
    schema = json.loads(schema_file.read_text("utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "required" not in schema  # a file may hold any subset of the sections
    assert {"schema", "metrics", "tiers", "classes", "segments", "campaigns"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_every_rule_file_of_the_default_pack_and_the_spec_example_passes(schema_file):
    assert len(RULE_FILES) > 1
    result = run_check(schema_file, *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = {
    "unknown_top_level_key": "metircs:\n  x: count(orders)\n",
    "unknown_key_in_tiers": "tiers:\n  by: growth_value\n  levles: []\n",
    "levels_not_a_list": "tiers:\n  by: growth_value\n  levels: 3\n",
    "unknown_channel": "campaigns:\n  c:\n    when: vip\n    action: {channel: fax}\n",
    "class_case_without_name": "classes:\n  rfm:\n    - {when: vip}\n",
    "schema_fields_not_a_map": "schema:\n  member: {key: member_id, fields: [a, b]}\n",
    "priority_not_an_int": "campaigns:\n  c:\n    when: vip\n    priority: high\n    action: {channel: sms}\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_rule_file_fails(schema_file, tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(BROKEN[name], encoding="utf-8")
    result = run_check(schema_file, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{name}.yaml" in result.stdout + result.stderr


def test_the_same_broken_files_fail_validate_too(tmp_path):
    # The schema and the loader agree: what the editor flags, validate refuses.
    for name, text in BROKEN.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "rules.yaml").write_text(
            "schema:\n  member: {key: member_id, fields: {member_id: string}}\n" + text
            if not text.startswith("schema:") else text, encoding="utf-8")
        result = CliRunner().invoke(main, ["validate", str(directory)])
        assert result.exit_code == 1, name


def test_numbers_and_bools_written_for_text_pass_the_schema_as_they_pass_validate(schema_file, tmp_path):
    # YAML reads `points: 100` and `when: true` as a number and a bool; validate takes the text.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "schema:\n  member: {key: member_id, fields: {member_id: string}}\n"
        "metrics:\n  bonus: 10\n"
        "segments:\n  everyone: true\n"
        "campaigns:\n  c:\n    when: true\n    action: {channel: points, points: 100}\n", encoding="utf-8")
    assert run_check(schema_file, rules / "rules.yaml").returncode == 0
    assert CliRunner().invoke(main, ["validate", str(rules)]).exit_code == 0
