"""Campaigns on DuckDB give the Python engine's files, byte for byte, on random rule sets.

Hypothesis draws a campaign rule set (triggers `when`/`on`, channels, consent, cooldowns,
exclusive groups with tied priorities, budgets, windows, transactional campaigns, simple
and complex templates), a `delivery:` section (channel caps, quiet hours, global caps, a run
budget) and a small snapshot (tricky names, null consents, orders around and after `as_of`,
members who join on a later day), and runs it on two or three consecutive `as_of`s with a
state file on each engine. results.jsonl and actions.jsonl must be the same bytes on every
run, and the state files the same rows (wall-clock columns left out). The Python engine is
the reference.

50 examples by default (about 30 s of CPU, under a minute on a busy 2-core machine); more with
MR_CAMPAIGN_EXAMPLES=500. A failure prints the rule set (hypothesis' note), the run, the file
and its first differing line.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, Phase, event, given, note, settings, target
from hypothesis import strategies as st

from conftest import state_file_rows
from memberrules.engine.duckdb_engine import evaluate_rules_with

EXAMPLES = int(os.environ.get("MR_CAMPAIGN_EXAMPLES", "50"))
TZ = ZoneInfo("Asia/Shanghai")
ENGINES = ("python", "duckdb")

# -- the rule set ---------------------------------------------------------------------------------

HEAD = """\
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string?, held_tier: string?, points_balance: int, credit: decimal?,
             opted_in_sms: bool?, opted_in_push: bool?, opted_in_email: bool, vip: bool?}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal}
params:
  bonus_rate: 2
  threshold: 100.50
  greeting: "Hi"
"""

METRICS = {
    "orders_30d": "count(orders within 30d)",
    "spend": "sum(orders.amount within 30d)",
    "last_order_days": "days_between(last(orders.placed_at), as_of)",  # null without orders
    "big_order": "max(orders.amount within 7d)",  # null without an order this week
    "avg_spend": "avg(spend over members where orders_30d > 0)",  # null when nobody ordered
    "share": "percent_rank(spend)",  # a float
    "last_order": "last(orders.placed_at)",  # a timestamp
    "since": "as_of - last(orders.placed_at)",  # a duration
    "first_day": "date(first(orders.placed_at within 30d))",  # a date
    "vip_text": "lower(name ?? 'NONE')",  # a string
}
SEGMENTS = {
    "active": "orders_30d >= 1",
    "big_spender": "spend >= threshold",
    "rich": "points_balance >= 500",
}
LIFECYCLE = [("fresh", "(last_order_days ?? 999) <= 1"), ("active", "(last_order_days ?? 999) <= 7"),
             ("lapsing", "last_order_days <= 30")]  # the last one is null without orders
TIER_BY = ["points_balance", "spend", "points_balance + orders_30d * 100", "credit"]  # credit is nullable

# Conditions: well typed, several of them null for some members.
WHENS = [
    "true", "orders_30d >= 1", "orders_30d >= 2", "spend > 50", "spend >= avg_spend", "last_order_days <= 10",
    "big_order >= 100", "vip", "not vip", "vip == false", "credit > 10", "credit is null", "points_balance >= 200",
    "active", "big_spender", "not rich", "lifecycle == 'active'", "lifecycle != 'lapsing'", "lifecycle is null",
    "count(orders within 1d) > 0", "sum(orders.amount within 7d where amount > 20) > 30", "name is null",
    "contains(name ?? '', 'a')", "rank(points_balance) <= 5", "ntile(spend, 4) == 4",
    "day_of_month(as_of) == 9", "opted_in_sms or opted_in_push", "coalesce(credit, 0) + spend >= 40",
    "share >= 0.5", "percent_rank(points_balance) < 0.7", "round(spend / 7) > 3", "since < 2d",
    "last_order >= as_of - 36h", "first_day is not null", "starts_with(vip_text, 'a')",
]
COMMON = ["true", "orders_30d >= 1", "points_balance >= 200", "not rich", "lifecycle is not null"]  # often true
TIER_WHENS = ["tier == 'gold'", "tier != 'bronze'", "tier_gap <= 200", "next_tier == 'gold'", "tier is null"]
TRIGGERS = ["entered active", "left active", "entered big_spender", "left rich", "first_order",
            "class lifecycle from active to lapsing", "class lifecycle to active", "lifecycle from fresh",
            "class lifecycle to lapsing"]
TIER_TRIGGERS = ["tier_up", "tier_down"]
POINTS = ["10", "orders_30d * 5", "round(spend / 10)", "round(spend * bonus_rate) - 50", "round((credit ?? 0) * 2)",
          "points_balance - 400"]
PIECES = [
    "{{ member.name }}", "Hi {{ member.name }}!", "{{ greeting }}, {{ member.name }}", "{{ orders_30d }} orders",
    "spent {{ spend }}", "{{ spend | round(1) }}", "{{ '%.2f' | format(spend) }}", "{{ spend * bonus_rate }}",
    "{{ big_order }}", "{{ last_order_days }} days", "{{ member.credit }}", "{{ (member.credit or 0) | round(1) }}",
    "{% if big_spender %}big{% else %}small{% endif %}", "{% if member.vip %}VIP{% elif member.vip is none %}?"
    "{% endif %}", "{{ segments | join(',') }}", "{{ classes.lifecycle }}", "{{ lifecycle }}", "{{ as_of.date() }}",
    "{{ campaign }}", "{{ avg_spend }}", "{{ member.points_balance }}", "{{ previous.segments | join('/') }}",
    "{{ previous.classes.lifecycle }}", "“引号” \"q\" back\\slash é 会员 {{ threshold }}",
    "{{ member.name | default('friend', true) | upper }}", "{{ spend / 3 }}", "{{ rich }}",
    "{% for s in segments %}[{{ s }}]{% endfor %}", "{{ share }}", "{{ last_order }}", "{{ since }}",
    "{{ first_day }}", "{{ vip_text }}", "{{ as_of }}", "{{ segments }}", "{{ member.vip }}", "{{ big_spender }}",
    "{{ member.opted_in_sms }}/{{ member.opted_in_email }}", "100% {} %s {{ orders_30d }}", "line\nbreak\ttab",
    "{{ member.member_id }}", "{{ previous.tier }}", "{{ classes }}",
]
TIER_PIECES = ["{{ tier }}", "{{ next_tier }} in {{ gap }}", "{{ previous.tier }} → {{ tier }}", "{{ tier_gap }}"]
CURRENT_PIECES = ["{{ current_tier }}", "{{ earned_tier }}/{{ keep_gap }}"]  # with tiers.current
CHANNELS = ["sms", "push", "email", "in_app", "coupon", "points"]
CONSENTS = ["opted_in_sms", "opted_in_push", "opted_in_email", "vip"]
QUIET = ["21:00-09:00", "22:00-08:00", "23:00-24:00", "00:00-11:00", "10:00-10:30"]
PERS = ["12h", "1d", "2d", "7d"]
WINDOWS = ['{from: "@2026-11-09", to: "@2026-11-09"}', '{hours: "09:00-23:00"}', "{weekdays: [mon, wed]}",
           '{from: "@2026-11-10", weekdays: [2, 3, 4], hours: "00:00-12:00"}']
NAMES = ["zeta", "alpha", "mid", "b_2", "x", "omega"]  # declared in a random order, actions sort by name

# The runs: as_of instants (rule-set time). 23:30 is inside several quiet hours; a rerun of the same
# as_of must decide the same actions again.
DAYS = [
    ("2026-11-09T10:00", "2026-11-09T23:30", "2026-11-10T10:00"),
    ("2026-11-09T10:00", "2026-11-10T10:00"),
    ("2026-11-09T10:00", "2026-11-09T10:00", "2026-11-10T10:00"),
    ("2026-11-08T22:00", "2026-11-09T08:30", "2026-11-11T10:00"),
]
BASE = datetime(2026, 11, 9, 10, 0, tzinfo=TZ)  # orders are placed relative to this


def q(text: str) -> str:
    """A YAML double-quoted string (JSON's escapes are YAML's)."""
    return json.dumps(text, ensure_ascii=False)


def conditions(tiers: bool):
    atom = st.sampled_from(WHENS + TIER_WHENS if tiers else WHENS)
    return st.one_of(
        atom, st.sampled_from(COMMON),
        st.tuples(atom, st.sampled_from(["and", "or"]), atom).map(lambda x: f"({x[0]}) {x[1]} ({x[2]})"),
        atom.map(lambda x: f"not ({x})"),
    )


@st.composite
def templates(draw, tiers: bool, current: bool) -> str:
    pieces = PIECES + (TIER_PIECES if tiers else []) + (CURRENT_PIECES if current else [])
    return " ".join(draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=4)))


@st.composite
def campaigns(draw, name: str, tiers: bool, current: bool, downgrade: bool, common: bool = False) -> str:
    """One campaign; a `common` one has a condition most members meet, so most rule sets send something."""
    triggers = TRIGGERS + (TIER_TRIGGERS if tiers else []) + (["tier_at_risk"] if downgrade else [])
    on = draw(st.sampled_from(triggers)) if not common and draw(st.integers(0, 99)) < 35 else None
    when = draw(st.sampled_from(COMMON)) if common else \
        draw(conditions(tiers)) if on is None else draw(st.none() | conditions(tiers))
    channel = draw(st.sampled_from(CHANNELS))
    action = [f"channel: {channel}"]
    if channel in ("sms", "push", "email", "in_app") or draw(st.booleans()):
        action.append(f"template: {q(draw(templates(tiers, current)))}")
    if channel == "coupon":
        action.append(f"coupon: {draw(st.sampled_from(['WELCOME10', 'x y']))}")
    if channel == "points":
        action.append(f"points: {q(draw(st.sampled_from(POINTS)))}")
    lines = [f"  {name}:"]
    if when is not None:
        lines.append(f"    when: {q(when)}")
    if on is not None:
        lines.append(f"    on: {on}")
    requires = draw(st.sampled_from([None, None, *CONSENTS]) if draw(st.integers(0, 9)) else
                    st.lists(st.sampled_from(CONSENTS), min_size=1, max_size=2, unique=True))
    if isinstance(requires, str):
        lines.append(f"    requires: {requires}")
    elif requires:
        lines.append(f"    requires: [{', '.join(requires)}]")
    lines.append(f"    action: {{{', '.join(action)}}}")
    optional = {
        "cooldown": draw(st.none() | st.sampled_from(["12h", "1d", "3d", "30d"])),
        "group": draw(st.none() | st.sampled_from(["g1", "g2"])),
        "priority": draw(st.none() | st.integers(0, 3)),
        "budget": draw(st.none() | st.sampled_from([0, 1, 2, 3, 9])),
        "transactional": draw(st.sampled_from([None, None, None, "true"])),
        "window": draw(st.sampled_from([None] * 6 + WINDOWS)),
    }
    lines += [f"    {key}: {value}" for key, value in optional.items() if value is not None]
    return "\n".join(lines)


def caps(max_size: int):
    return st.lists(st.tuples(st.integers(1, 3), st.sampled_from(PERS)), max_size=max_size).map(
        lambda items: "[" + ", ".join(f"{{max: {m}, per: {p}}}" for m, p in items) + "]")


@st.composite
def deliveries(draw) -> str | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    lines = ["delivery:", "  channels:"]
    for channel in draw(st.lists(st.sampled_from(CHANNELS), unique=True, max_size=4)):
        rules = []
        quiet = draw(st.none() | st.sampled_from(QUIET))
        if quiet:
            rules.append(f"quiet_hours: {q(quiet)}")
        channel_caps = draw(caps(2))
        if channel_caps != "[]":
            rules.append(f"caps: {channel_caps}")
        if draw(st.integers(0, 4)) == 0:
            rules.append("max_length: 40")  # a warning (MR423) at most
        lines.append(f"    {channel}: {{{', '.join(rules)}}}")
    if len(lines) == 2:
        lines[1] = "  channels: {}"
    global_caps = draw(caps(1))
    if global_caps != "[]":
        lines.append(f"  caps: {global_caps}")
    budget = draw(st.none() | st.sampled_from([0, 1, 3, 5, 8, 12]))
    if budget is not None:
        lines.append(f"  budget: {budget}")
    return "\n".join(lines)


@st.composite
def rule_sets(draw) -> str:
    parts = [HEAD, "metrics:"]
    for name, expr in METRICS.items():
        parts.append(f"  {name}: {{expr: {q(expr)}, output: {'true' if draw(st.booleans()) else 'false'}}}")
    parts.append("segments:")
    parts += [f"  {name}: {q(expr)}" for name, expr in SEGMENTS.items()]
    parts.append("classes:\n  lifecycle:")
    parts += [f"    - {{name: {name}, when: {q(expr)}}}" for name, expr in LIFECYCLE]
    if draw(st.booleans()):
        parts.append("    - {name: gone, else: true}")  # without it, lifecycle is null for some members
    tiers = draw(st.booleans())
    current = downgrade = False
    if tiers:
        parts.append(f"tiers:\n  by: {q(draw(st.sampled_from(TIER_BY)))}")
        parts.append("  levels: [{name: bronze, min: 0}, {name: silver, min: 300}, {name: gold, min: 1000}]")
        current = draw(st.integers(0, 3)) > 0
        if current:
            parts.append("  current: held_tier")
            downgrade_when = draw(st.sampled_from([None, "true", "day_of_month(as_of) == 10"]))
            if downgrade_when is not None:  # a downgrade needs tiers.current
                downgrade = True
                parts.append(f"  downgrade: {{when: {q(downgrade_when)}}}")
    names = draw(st.permutations(NAMES))[:draw(st.integers(1, 6))]
    parts.append("campaigns:")
    parts += [draw(campaigns(name, tiers, current, downgrade, common=i == 0)) for i, name in enumerate(names)]
    delivery = draw(deliveries())
    if delivery is not None:
        parts.append(delivery)
    return "\n".join(parts) + "\n"


# -- the snapshot ---------------------------------------------------------------------------------

HOUR = timedelta(hours=1)
ORDER_TIMES = st.one_of(
    st.sampled_from([timedelta(days=-30), timedelta(days=-30, seconds=1), timedelta(days=-7), timedelta(days=-1),
                     -HOUR, timedelta(0), 5 * HOUR, timedelta(hours=13, minutes=30), timedelta(days=1),
                     timedelta(days=2)]),
    st.integers(-24 * 45, 24 * 2).map(lambda h: h * HOUR),
    st.integers(-60 * 24 * 3, 60 * 24 * 2).map(lambda m: timedelta(minutes=m)),
)
MONEY = st.decimals(min_value=-20, max_value=300, places=2, allow_nan=False, allow_infinity=False)
TRICKY_NAMES = ["O'Brien", 'say "hi"', "back\\slash", "李明", "Zoë", "a,b", "  pad ", "", "😀 emoji", "x\ty",
                "ß", "Ann"]
CONSENT = st.sampled_from([True, True, False, None])
member_rows = st.lists(st.fixed_dictionaries({
    "suffix": st.sampled_from(["", "", "", "'", "é", " x"]),
    "name": st.none() | st.sampled_from(TRICKY_NAMES) | st.text(alphabet="ab'\"\\é中 ", max_size=6),
    "tier": st.none() | st.sampled_from(["bronze", "silver", "gold", "platinum"]),
    "balance": st.integers(0, 1500), "step": st.integers(-400, 400),
    "credit": st.none() | st.decimals(min_value=-20, max_value=200, places=2, allow_nan=False,
                                      allow_infinity=False),
    "sms": CONSENT, "push": CONSENT, "email": st.booleans(), "vip": CONSENT,
    "joins": st.sampled_from([0, 0, 0, 1, 2]),  # the run from which the member is in the snapshot
    "orders": st.lists(st.tuples(ORDER_TIMES, MONEY, st.sampled_from(["offset", "wall", "utc"])), max_size=5),
}), min_size=5, max_size=40)


KEYS = {"padded": "m{k:02d}", "digits": "{k}", "mixed case": "{m}{k}"}  # "10" sorts before "9" as text


@dataclass
class Scenario:
    rules: str
    members: list[dict]
    days: tuple[str, ...]
    fmt: str
    keys: str = "padded"


scenarios = st.builds(Scenario, rules=rule_sets(), members=member_rows, days=st.sampled_from(DAYS),
                      fmt=st.sampled_from(["jsonl", "csv"]), keys=st.sampled_from(list(KEYS)))


def _key(k: int, member: dict, keys: str) -> str:
    return KEYS[keys].format(k=k, m="mM"[k % 2]) + member["suffix"]


def _time(at: datetime, style: str) -> str:
    if style == "wall":
        return at.replace(tzinfo=None).isoformat()  # wall time in the rule set's timezone
    if style == "utc":
        return at.astimezone(ZoneInfo("UTC")).isoformat()
    return at.isoformat()


MEMBER_COLUMNS = ["member_id", "name", "held_tier", "points_balance", "credit", "opted_in_sms", "opted_in_push",
                  "opted_in_email", "vip"]


def write_snapshot(directory: Path, members: list[dict], run: int, fmt: str, keys: str) -> None:
    """The snapshot of run `run`: members who joined by then, with that day's points balance."""
    directory.mkdir(parents=True)
    rows, orders = [], []
    for k, m in enumerate(members):
        if m["joins"] > run:
            continue
        key = _key(k, m, keys)
        rows.append({"member_id": key, "name": m["name"], "held_tier": m["tier"],
                     "points_balance": m["balance"] + run * m["step"], "credit": m["credit"],
                     "opted_in_sms": m["sms"], "opted_in_push": m["push"], "opted_in_email": m["email"],
                     "vip": m["vip"]})
        orders += [{"member_id": key, "placed_at": _time(BASE + at, style), "amount": amount}
                   for at, amount, style in m["orders"]]
    orders.append({"member_id": "NOBODY", "placed_at": BASE.isoformat(), "amount": Decimal("1.00")})
    for table, records in (("member", rows), ("orders", orders)):
        columns = MEMBER_COLUMNS if table == "member" else ["member_id", "placed_at", "amount"]
        if fmt == "jsonl":
            with open(directory / f"{table}.jsonl", "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps({c: str(v) if isinstance(v, Decimal) else v for c, v in record.items()},
                                            ensure_ascii=False) + "\n")
        else:
            with open(directory / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(columns)
                for record in records:
                    writer.writerow([_cell(v) for v in record.values()])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- running both engines -------------------------------------------------------------------------

def _first_difference(python: bytes, duckdb: bytes) -> str:
    want, got = python.decode().splitlines(), duckdb.decode().splitlines()
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            return f"line {i + 1}:\n  python: {w}\n  duckdb: {g}"
    if len(want) != len(got):
        shorter = min(len(want), len(got))
        engine, lines = ("python", want) if len(want) > len(got) else ("duckdb", got)
        return f"{len(want)} python lines, {len(got)} duckdb lines; the first extra ({engine}): {lines[shorter]}"
    return "same lines, different bytes (line endings?)"


def _errors(diagnostics) -> list[str]:
    return [f"{d.code} line {d.span.line if d.span else '?'}: {d.message}" for d in diagnostics
            if d.severity == "error"]


def run_scenario(scenario: Scenario, root: Path) -> int:
    """Run every day on both engines; fail on the first difference. Returns how many actions were sent."""
    rules = root / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(scenario.rules, encoding="utf-8")
    context = f"days: {scenario.days}, snapshot as {scenario.fmt}, {scenario.keys} keys"
    actions = 0
    for run, as_of in enumerate(scenario.days):
        data = root / "data" / f"run{run}"
        write_snapshot(data, scenario.members, run, scenario.fmt, scenario.keys)
        files = {}
        for engine in ENGINES:
            out = root / engine / f"run{run}" / "results.jsonl"
            outcome = evaluate_rules_with(engine)(rules, data, as_of=as_of, out=out, state=root / f"{engine}.db")
            assert outcome.report is not None, \
                f"{engine}: the generated rules do not validate: {_errors(outcome.check.diagnostics)}\n{context}"
            assert outcome.report.actions_file is not None, (engine, context)
            files[engine] = {name: (out.parent / name).read_bytes() for name in ("results.jsonl", "actions.jsonl")}
        for name, python in files["python"].items():
            duckdb = files["duckdb"][name]
            if duckdb != python:  # not `assert`: pytest would add a diff of the whole files
                raise AssertionError(f"run {run} (as_of {as_of}): {name} differs, "
                                     f"{_first_difference(python, duckdb)}\n{context}")
        actions += files["python"]["actions.jsonl"].count(b"\n")
    python_state, duckdb_state = state_file_rows(root / "python.db"), state_file_rows(root / "duckdb.db")
    for table, rows in python_state.items():
        if duckdb_state[table] != rows:
            first = next((i for i, (a, b) in enumerate(zip(rows, duckdb_state[table])) if a != b),
                         min(len(rows), len(duckdb_state[table])))
            raise AssertionError(
                f"state table {table} differs at row {first}: python {rows[first:first + 1]}, "
                f"duckdb {duckdb_state[table][first:first + 1]} ({len(rows)} vs {len(duckdb_state[table])} rows)"
                f"\n{context}")
    return actions


# No explain phase: it re-runs the failing example under coverage tracing, slowly, to list lines.
@settings(max_examples=EXAMPLES, deadline=None, print_blob=True, phases=[p for p in Phase if p is not Phase.explain],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(scenario=scenarios)
def test_random_campaigns_give_the_same_files_on_both_engines(scenario, tmp_path):
    note(scenario.rules)
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        actions = run_scenario(scenario, Path(tmp))
    event("actions sent" if actions else "no action sent")
    target(float(min(actions, 50)), label="actions sent")


# A fixed scenario whose runs surely send actions through every delivery rule: a guard that the
# comparison above compares something.
FIXED_RULES = HEAD + """\
metrics:
  orders_30d: {expr: "count(orders within 30d)", output: true}
  spend: {expr: "sum(orders.amount within 30d)", output: true}
  last_order_days: days_between(last(orders.placed_at), as_of)
segments:
  active: "orders_30d >= 1"
classes:
  lifecycle:
    - {name: active, when: "(last_order_days ?? 999) <= 7"}
    - {name: gone, else: true}
tiers:
  by: points_balance
  levels: [{name: bronze, min: 0}, {name: silver, min: 300}, {name: gold, min: 1000}]
  current: held_tier
campaigns:
  hello:
    when: "true"
    requires: opted_in_sms
    action:
      channel: sms
      template: "{{ greeting }} {{ member.name }}: {{ spend | round(1) }} {% if active %}A{% endif %}"
    cooldown: 12h
    group: g1
    priority: 1
  nudge:
    when: "points_balance >= 0"
    action: {channel: push, template: "{{ tier }} → {{ next_tier }} ({{ gap }})"}
    group: g1
    priority: 1
  up:
    on: tier_up
    transactional: true
    action: {channel: push, template: "{{ previous.tier }} → {{ tier }}"}
  joined:
    on: entered active
    action: {channel: points, points: "orders_30d * 5", template: "{{ lifecycle }}"}
    budget: 3
delivery:
  channels:
    sms: {quiet_hours: "21:00-09:00", caps: [{max: 1, per: 1d}]}
    push: {quiet_hours: "22:00-08:00", caps: [{max: 1, per: 1d}]}
  budget: 40
"""


def test_a_fixed_scenario_sends_actions_and_both_engines_agree(tmp_path):
    members = [{"suffix": "", "name": name, "tier": tier, "balance": 100 * k, "step": 150, "credit": None,
                "sms": k % 3 != 0, "push": True, "email": False, "vip": None, "joins": k % 4 // 3,
                "orders": [(timedelta(hours=5 * k - 24), Decimal("12.50"), "offset")] if k % 2 else []}
               for k, (name, tier) in enumerate(zip(TRICKY_NAMES + [None] * 4, ["bronze", None, "silver"] * 6))]
    assert run_scenario(Scenario(FIXED_RULES, members, DAYS[0], "jsonl"), tmp_path) > 20
    actions = [(tmp_path / "duckdb" / f"run{run}" / "actions.jsonl").read_text(encoding="utf-8") for run in range(3)]
    assert '"send_at":"2026-11-10T09:00:00+08:00"' in actions[1]  # held by the SMS quiet hours
    assert '{"campaign":"up"' in actions[0] and '{"campaign":"up"' in actions[2]  # tier_up, then against the state
    assert '{"campaign":"joined"' in "".join(actions[1:])  # entered active: a transition from the second run on
