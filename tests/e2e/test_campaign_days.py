"""Campaigns over several days of a scripted history, through the real CLI and the state file.

Upgrades are congratulated once, win-back respects its 30-day cooldown, nobody gets an
SMS without consent, caps and budgets hold, and a run killed between writing its
actions and committing the state, then rerun, yields each action exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberrules.engine.campaigns import campaign_run
from memberrules.engine.check import check_rule_set
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.snapshot import Snapshot, SnapshotStats
from memberrules.engine.state import CRASH_ENV, CRASH_EXIT_CODE, StateStore

SH = ZoneInfo("Asia/Shanghai")
START = dt.date(2026, 11, 2)

RULES = """
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string, growth_value: int, tier: string?,
             opted_in_sms: bool, opted_in_push: bool}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal}
metrics:
  recency_days: days_between(last(orders.placed_at), as_of)
tiers:
  by: growth_value
  levels: [{name: normal, min: 0}, {name: silver, min: 1000}, {name: gold, min: 5000}]
  current: tier
classes:
  lifecycle:
    - {name: active, when: "(recency_days ?? 999) <= 30"}
    - {name: dormant, when: "(recency_days ?? 999) <= 180"}
    - {name: potential, else: true}
delivery:
  channels:
    push: {caps: [{max: 1, per: 2d}]}
  budget: 50
campaigns:
  congrats:
    on: tier_up
    requires: opted_in_push
    transactional: true
    action: {channel: push, template: "Congratulations {{ member.name }}, welcome to {{ tier }}!"}
  win_back:
    when: lifecycle == 'dormant'
    requires: opted_in_sms
    cooldown: 30d
    action: {channel: sms, template: "{{ member.name }}, we miss you: 20% off this week"}
  promo:
    when: "true"
    requires: opted_in_push
    budget: 2
    action: {channel: push, template: "New arrivals, {{ member.name }}"}
"""

# Scripted history: (member, name, sms consent, push consent, last order days before START);
# None: an active member, who ordered the day before each run.
MEMBERS = [
    ("m1", "Alice", True, True, None),  # upgraded to silver on day 3
    ("m2", "Bob", True, True, 100),     # dormant: win-back on day 1, again after 30 days
    ("m3", "Carol", False, True, 100),  # dormant but no SMS consent: never an SMS
    ("m4", "Dan", True, True, None),
    ("m5", "Eve", True, False, None),   # no push consent: no promo
]


def growth(member: str, day: int) -> int:
    return 1200 if member == "m1" and day >= 3 else 500


def as_of(day: int) -> dt.date:
    return START + dt.timedelta(days=day - 1)


def write_snapshot(directory: Path, day: int) -> Path:
    data = directory / f"data{day}"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "member.jsonl", "w", encoding="utf-8") as out:
        for key, name, sms, push, _ in MEMBERS:
            out.write(json.dumps({"member_id": key, "name": name, "growth_value": growth(key, day), "tier": "normal",
                                  "opted_in_sms": sms, "opted_in_push": push}) + "\n")
    with open(data / "orders.jsonl", "w", encoding="utf-8") as out:
        for key, _, _, _, days_before in MEMBERS:
            last = START - dt.timedelta(days=days_before) if days_before is not None else as_of(day - 1)
            placed = dt.datetime.combine(last, dt.time(12), SH)
            out.write(json.dumps({"member_id": key, "placed_at": placed.isoformat(), "amount": "10"}) + "\n")
    return data


@pytest.fixture
def world(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(textwrap.dedent(RULES), encoding="utf-8")
    return tmp_path


def evaluate(world: Path, day: int, crash: bool = False, extra=()) -> subprocess.CompletedProcess:
    env = {**os.environ, CRASH_ENV: "1"} if crash else {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    data = write_snapshot(world, day)
    command = [sys.executable, "-m", "memberrules.cli", "evaluate", str(world / "rules"), "--data", str(data),
               "--as-of", as_of(day).isoformat(), "--out", str(world / "out" / f"day{day}" / "results.jsonl"),
               "--state", str(world / "state.db"), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=world)


def actions_of(world: Path, day: int) -> list[dict]:
    path = world / "out" / f"day{day}" / "actions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_scripted_days_through_the_cli(world):
    days = [1, 2, 3, 4, 5, 31, 32, 33]
    for day in days:
        if day == 4:
            killed = evaluate(world, day, crash=True)
            assert killed.returncode == CRASH_EXIT_CODE, killed.stderr
            assert not (world / "out" / "day4" / "results.jsonl").exists()
            assert not (world / "out" / "day4" / "actions.jsonl").exists()
            assert all(e.as_of.date() != as_of(4) for e in StateStore.open(world / "state.db").ledger())
        done = evaluate(world, day)
        assert done.returncode == 0, done.stdout + done.stderr
        if day == 1:
            assert "no previous state" in done.stdout
    per_day = {day: actions_of(world, day) for day in days}
    sent = [(day, a["campaign"], a["member"]) for day, actions in per_day.items() for a in actions]

    # The upgrade is congratulated once, on the day it happened.
    assert [(d, m) for d, c, m in sent if c == "congrats"] == [(3, "m1")]
    congrats = next(a for a in per_day[3] if a["campaign"] == "congrats")
    assert congrats["message"] == "Congratulations Alice, welcome to silver!"
    assert congrats["values"] == {"tier": "silver", "previous_tier": "normal"}
    # Win-back: day 1, then not before 30 days have passed (day 31 is exactly 30 days on).
    assert [(d, m) for d, c, m in sent if c == "win_back"] == [(1, "m2"), (31, "m2")]
    # No SMS without consent.
    assert not any(a["channel"] == "sms" and a["member"] in ("m3",) for actions in per_day.values() for a in actions)
    # The promo's budget (2 a run) goes to the lowest member keys the push cap (1 per 2 days) allows.
    promo = {day: [a["member"] for a in actions if a["campaign"] == "promo"] for day, actions in per_day.items()}
    assert promo[1] == ["m1", "m2"] and promo[2] == ["m3", "m4"] and promo[3] == ["m1", "m2"]
    assert all(len(members) <= 2 for members in promo.values())
    assert "m5" not in {m for members in promo.values() for m in members}

    # Exactly once: the ledger holds every action of every day's file, each key once.
    ledger = StateStore.open(world / "state.db").ledger()
    keys = [a["key"] for actions in per_day.values() for a in actions]
    assert sorted(e.key for e in ledger) == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_running_the_same_day_twice_repeats_the_actions_and_records_them_once(world):
    assert evaluate(world, 1).returncode == 0
    assert evaluate(world, 2).returncode == 0
    first = (world / "out" / "day2" / "actions.jsonl").read_bytes()
    ledger = len(StateStore.open(world / "state.db").ledger())
    again = evaluate(world, 2)
    assert again.returncode == 0
    assert (world / "out" / "day2" / "actions.jsonl").read_bytes() == first
    assert len(StateStore.open(world / "state.db").ledger()) == ledger
    assert "already in the ledger" in again.stdout


def test_dry_run_prints_the_audiences_and_writes_nothing(world):
    done = evaluate(world, 1, extra=["--dry-run"])
    assert done.returncode == 0, done.stderr
    assert "win_back" in done.stdout and "no consent" in done.stdout and "dry run" in done.stdout
    assert not (world / "out").exists() and not (world / "state.db").exists()
    assert evaluate(world, 1).returncode == 0
    again = evaluate(world, 2, extra=["--dry-run"])
    assert again.returncode == 0 and "previous run 2026-11-02T00:00:00+08:00" in again.stdout
    assert [as_of for as_of, _, _ in StateStore.open(world / "state.db").runs()] == \
        [dt.datetime(2026, 11, 2, tzinfo=SH)]
    assert not (world / "out" / "day2").exists()


def test_a_state_file_that_is_not_one_is_bad_input(world):
    (world / "state.db").write_text("hello", encoding="utf-8")
    done = evaluate(world, 1)
    assert done.returncode == 2
    assert "not a memberrules state file" in done.stderr


# -- random day sequences: the ledger never breaks a delivery rule ----------------------------------

HYPO_RULES = """
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, score: int, sms: bool, push: bool}
delivery:
  channels:
    sms: {quiet_hours: "21:00-09:00", caps: [{max: 1, per: 1d}]}
  caps: [{max: 2, per: 3d}]
  budget: 4
campaigns:
  nudge:
    when: score >= 1
    requires: push
    cooldown: 2d
    group: daily
    priority: 1
    action: {channel: push}
  offer:
    when: score >= 2
    requires: sms
    cooldown: 5d
    group: daily
    priority: 2
    action: {channel: sms}
  reminder:
    when: score >= 3
    requires: [sms, push]
    cooldown: 1d
    action: {channel: sms}
  receipt:
    when: score == 4
    transactional: true
    action: {channel: push}
"""

COOLDOWN = {"nudge": dt.timedelta(days=2), "offer": dt.timedelta(days=5), "reminder": dt.timedelta(days=1)}
REQUIRES = {"nudge": ("push",), "offer": ("sms",), "reminder": ("sms", "push"), "receipt": ()}


@pytest.fixture(scope="module")
def hypo_rules(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hypo")
    (directory / "rules.yaml").write_text(HYPO_RULES, encoding="utf-8")
    rules = check_rule_set(directory).rule_set
    return rules, compile_rule_set(rules)


member_day = st.tuples(st.integers(0, 4), st.booleans(), st.booleans())  # score, sms, push
run_step = st.tuples(st.integers(0, 60), st.lists(member_day, min_size=3, max_size=3))  # hours after the last run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(run_step, min_size=1, max_size=12), st.data())
def test_random_day_sequences_keep_the_ledger_within_the_rules(tmp_path_factory, hypo_rules, steps, data):
    rules, compiled = hypo_rules
    state = tmp_path_factory.mktemp("state") / "state.db"
    moment = dt.datetime(2026, 11, 1, 8, tzinfo=SH)
    consent: dict[tuple[dt.datetime, str], dict] = {}
    for hours, members in steps:
        moment += dt.timedelta(hours=hours + 1)
        rows = [{"member_id": f"m{i}", "score": s, "sms": sms, "push": push} for i, (s, sms, push) in enumerate(members)]
        for row in rows:
            consent[(moment, row["member_id"])] = row
        snapshot = Snapshot(rows, {}, SnapshotStats({}, 0, {}, {}))
        reruns = data.draw(st.integers(1, 2), label="runs of this as_of")
        for _ in range(reruns):  # a job that runs twice must not send twice
            with campaign_run(rules, compiled, compiled.evaluate(snapshot, moment), state):
                pass
    ledger = StateStore.open(state).ledger()
    assert len({e.key for e in ledger}) == len(ledger)
    by_pair = defaultdict(list)
    by_member = defaultdict(list)
    for entry in ledger:
        row = consent[(entry.as_of.astimezone(SH), entry.member)]
        assert all(row[field] for field in REQUIRES[entry.campaign]), entry
        by_pair[(entry.campaign, entry.member)].append(entry.send_at)
        by_member[entry.member].append(entry)
        if entry.channel == "sms":
            assert not (entry.send_at.astimezone(SH).hour >= 21 or entry.send_at.astimezone(SH).hour < 9), entry
    for (campaign, _), times in by_pair.items():
        times.sort()
        if campaign in COOLDOWN:
            assert all(b - a >= COOLDOWN[campaign] for a, b in zip(times, times[1:])), (campaign, times)
    for entries in by_member.values():
        capped = sorted(e.send_at for e in entries if e.capped)
        sms = sorted(e.send_at for e in entries if e.capped and e.channel == "sms")
        assert all(sum(1 for t in capped if start <= t < start + dt.timedelta(days=3)) <= 2 for start in capped)
        assert all(sum(1 for t in sms if start <= t < start + dt.timedelta(days=1)) <= 1 for start in sms)
        per_run = Counter((e.as_of, e.campaign) for e in entries if e.campaign in ("nudge", "offer"))
        assert all(count <= 1 for count in per_run.values())
        grouped = Counter(e.as_of for e in entries if e.campaign in ("nudge", "offer"))
        assert all(count <= 1 for count in grouped.values())  # one action per group per run
    assert all(count <= 4 for count in Counter(e.as_of for e in ledger).values())
