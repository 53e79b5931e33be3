"""`memberrules explain` through the real CLI: plain text when piped, JSON, exit codes, the state file."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent.parent / "fixtures" / "explain"
GOLDEN = Path(__file__).parent.parent / "golden" / "explain"
AS_OF = "2026-11-01T10:00:00"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memberrules.cli", *args], capture_output=True, text=True,
                          encoding="utf-8", timeout=120)


def explain(*args: str, data: Path = FIXTURE / "data") -> subprocess.CompletedProcess:
    return run("explain", str(FIXTURE / "rules"), "--data", str(data), *args)


def test_piped_text_is_plain_and_equals_the_golden_file():
    done = explain("--member", "m2", "--as-of", AS_OF)
    assert (done.returncode, done.stderr) == (0, "")
    assert "\x1b[" not in done.stdout
    assert done.stdout == (GOLDEN / "m2.txt").read_text(encoding="utf-8")


def test_json_format_is_one_document_for_tools():
    done = explain("--member", "m4", "--as-of", AS_OF, "--format", "json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert data["member"] == "m4"
    assert data["as_of"] == "2026-11-01T10:00:00+08:00"
    metrics = {m["name"]: m for m in data["metrics"]}
    assert metrics["recency_days"]["value"] is None
    assert metrics["avg_spend"]["population"][0]["members"] == 3
    assert [s["condition"]["outcome"] for s in data["segments"]] == [False, False, None]


def test_param_override_changes_the_explanation():
    # With rfm_frequent = 2, m2's 2 orders are enough: best.
    done = explain("--member", "m2", "--as-of", AS_OF, "--param", "rfm_frequent=2")
    assert done.returncode == 0
    assert "  rfm = best\n" in done.stdout
    assert "frequency >= rfm_frequent: 2 >= 2 → true" in done.stdout


def test_unknown_member_exits_2_with_did_you_mean():
    done = explain("--member", "M2", "--as-of", AS_OF)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"error: member 'M2' is not in {FIXTURE / 'data' / 'member.csv'}; did you mean 'm2'?\n"


def test_bad_as_of_and_unknown_param_exit_2():
    assert explain("--member", "m2", "--as-of", "yesterday").returncode == 2
    done = explain("--member", "m2", "--as-of", AS_OF, "--param", "nope=1")
    assert done.returncode == 2
    assert "the rule set has no param 'nope'" in done.stderr


def test_cooldown_from_the_state_file_is_explained_and_the_file_is_not_written(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", data)
    member = data / "member.csv"
    # m3 (unclassified, vip) consents to SMS, so win_back goes out on 1 November.
    member.write_text(member.read_text(encoding="utf-8").replace("m3,Zhang Wei,2025-03-01T10:00:00,4200,gold,false",
                                                                 "m3,Zhang Wei,2025-03-01T10:00:00,4200,gold,true"),
                      encoding="utf-8")
    state = tmp_path / "state.db"
    first = run("evaluate", str(FIXTURE / "rules"), "--data", str(data), "--as-of", AS_OF,
                "--out", str(tmp_path / "out" / "results.jsonl"), "--state", str(state))
    assert first.returncode == 0, first.stderr
    actions = (tmp_path / "out" / "actions.jsonl").read_text(encoding="utf-8")
    assert '"campaign":"win_back","member":"m3"' in actions
    before = hashlib.sha256(state.read_bytes()).hexdigest()

    done = explain("--member", "m3", "--as-of", "2026-11-02T10:00:00", "--state", str(state), data=data)
    assert done.returncode == 0, done.stderr
    assert "  win_back  not sent: cooldown until 2026-12-01" in done.stdout
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before
