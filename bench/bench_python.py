"""Members per second of the Python engine, against a hand-written Python loop.

Both sides start from the same loaded snapshot (engine/snapshot.py rows) and compute
the same RFM class, lifecycle stage and tier for every member; the engine runs a
rule set saying so, the loop is what a programmer would write by hand. Then the
default pack (rules/) runs on the full snapshot. Data: `memberrules demo` output,
generated once into bench/data/ (git-ignored).

    .venv/bin/python bench/bench_python.py [--members 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from memberrules.engine.check import check_rule_set
from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.snapshot import paused_gc, read_snapshot

ROOT = Path(__file__).resolve().parent.parent

# The same logic as `hand_written` below, as rules.
RFM_RULES = """
version: 1
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string, registered_at: timestamp, birthday: date?, growth_value: int,
             tier: string?, opted_in_sms: bool, opted_in_push: bool, opted_in_email: bool,
             tags: list<string>, city: string}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, order_id: string, placed_at: timestamp, amount: decimal, category: string}
params:
  rfm_recent_days: 15
  rfm_frequent: 8
metrics:
  recency_days: days_between(last(orders.placed_at), as_of)
  frequency: count(orders within 30d)
  monetary: sum(orders.amount within 30d)
  orders_total: count(orders)
  avg_spend: avg(monetary over members where frequency > 0)
  above_avg: (monetary >= avg_spend) ?? false
tiers:
  by: growth_value
  levels:
    - {name: normal, min: 0}
    - {name: silver, min: 1000}
    - {name: gold, min: 5000}
    - {name: platinum, min: 20000}
  current: tier
  downgrade: {when: "day_of_year(as_of) == 1"}
classes:
  rfm:
    - {name: best, when: "(recency_days ?? 9999) <= rfm_recent_days and frequency >= rfm_frequent and above_avg"}
    - {name: breakthrough, when: "frequency < rfm_frequent and above_avg"}
    - {name: maintain, when: "frequency >= rfm_frequent and not above_avg"}
    - {name: general, when: "(recency_days ?? 9999) > rfm_recent_days and frequency < rfm_frequent and not above_avg"}
    - {name: unclassified, else: true}
  lifecycle:
    - {name: new, when: "registered_at > as_of - 30d and orders_total == 0"}
    - {name: active, when: "(recency_days ?? 9999) <= 30"}
    - {name: silent, when: "(recency_days ?? 9999) <= 90"}
    - {name: dormant, when: "(recency_days ?? 9999) <= 180"}
    - {name: churned, when: "recency_days is not null and recency_days > 180"}
    - {name: potential, else: true}
"""

LEVELS = (("normal", 0), ("silver", 1000), ("gold", 5000), ("platinum", 20000))
_Q = Decimal(1).scaleb(-18)


def hand_written(members: list[dict], orders: dict[str, list[dict]], as_of: datetime) -> list[dict]:
    """RFM, lifecycle and tier in plain Python, the way one would write it without an engine."""
    cutoff = as_of - timedelta(days=30)
    today = as_of.date()
    review = today.timetuple().tm_yday == 1
    names = [name for name, _ in LEVELS]
    index = {name: i for i, name in enumerate(names)}
    per_member = []
    for m in members:
        rows = orders.get(m["member_id"], ())
        last = None
        frequency = 0
        monetary = Decimal(0)
        for o in rows:
            placed = o["placed_at"]
            if last is None or placed > last:
                last = placed
            if placed > cutoff:
                frequency += 1
                monetary += o["amount"]
        recency = (today - last.date()).days if last is not None else None
        per_member.append((m, recency, frequency, monetary, len(rows)))
    buyers = [monetary for _, _, frequency, monetary, _ in per_member if frequency > 0]
    avg_spend = (sum(buyers) / len(buyers)).quantize(_Q, rounding=ROUND_DOWN) if buyers else None
    results = []
    for m, recency, frequency, monetary, total in per_member:
        r = 9999 if recency is None else recency
        above = avg_spend is not None and monetary >= avg_spend
        if r <= 15 and frequency >= 8 and above:
            rfm = "best"
        elif frequency < 8 and above:
            rfm = "breakthrough"
        elif frequency >= 8 and not above:
            rfm = "maintain"
        elif r > 15 and frequency < 8 and not above:
            rfm = "general"
        else:
            rfm = "unclassified"
        if m["registered_at"] > cutoff and total == 0:
            stage = "new"
        elif r <= 30:
            stage = "active"
        elif r <= 90:
            stage = "silent"
        elif r <= 180:
            stage = "dormant"
        elif recency is not None:
            stage = "churned"
        else:
            stage = "potential"
        growth = m["growth_value"]
        earned = 0
        for i, (_, low) in enumerate(LEVELS):
            if growth >= low:
                earned = i
        held = index.get(m["tier"])
        level = held if held is not None and held > earned and not review else earned
        next_tier = names[level + 1] if level + 1 < len(names) else None
        gap = max(LEVELS[level + 1][1] - growth, 0) if next_tier else None
        results.append({"member_id": m["member_id"], "tier": names[level], "next_tier": next_tier,
                        "tier_gap": gap, "rfm": rfm, "lifecycle": stage})
    return results


def _best_of(repeat: int, run) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        if gc.isenabled():
            gc.collect()
        began = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    as_of = DEFAULT_AS_OF
    data = ROOT / "bench" / "data" / f"demo-{args.members}"
    if not (data / "member.csv").exists():
        print(f"writing demo data ({args.members:,} members) to {data} …")
        write_demo_snapshot(data, members=args.members)

    with tempfile.TemporaryDirectory() as tmp:
        rules_file = Path(tmp) / "rfm.yaml"
        rules_file.write_text(RFM_RULES, encoding="utf-8")
        checked = check_rule_set(rules_file)
    assert checked.rule_set is not None, checked.diagnostics
    rfm_rules = checked.rule_set
    snapshot = read_snapshot(data, rfm_rules.model.schema_, rfm_rules.timezone, as_of)
    members, orders = snapshot.members, snapshot.events["orders"]
    n_orders = sum(len(rows) for rows in orders.values())

    compiled = compile_rule_set(rfm_rules)
    hand_seconds, expected = _best_of(args.repeat, lambda: hand_written(members, orders, as_of))
    # The engine pauses the cyclic garbage collector while it runs; so may a careful programmer.
    with paused_gc():
        paused_seconds, _ = _best_of(args.repeat, lambda: hand_written(members, orders, as_of))
    engine_seconds, evaluation = _best_of(args.repeat, lambda: compiled.evaluate(snapshot, as_of))
    columns = ("member_id", "tier", "next_tier", "tier_gap", "rfm", "lifecycle")
    got = [{c: row[c] for c in columns} for row in evaluation.rows]  # type: ignore[attr-defined]
    agree = got == expected

    pack = check_rule_set(ROOT / "rules")
    assert pack.rule_set is not None, [str(d) for d in pack.diagnostics if d.is_error]
    full = read_snapshot(data, pack.rule_set.model.schema_, pack.rule_set.timezone, as_of)
    n_events = sum(len(rows) for table in full.events.values() for rows in table.values())
    began = time.perf_counter()
    pack_compiled = compile_rule_set(pack.rule_set)
    compile_seconds = time.perf_counter() - began
    pack_seconds, _ = _best_of(args.repeat, lambda: pack_compiled.evaluate(full, as_of))

    n = len(members)
    rows = [
        ("hand-written Python loop (RFM, lifecycle, tier)", n, n_orders, hand_seconds),
        ("hand-written Python loop, garbage collector paused", n, n_orders, paused_seconds),
        ("memberrules python engine, same rules", n, n_orders, engine_seconds),
        (f"memberrules python engine, default pack rules/ ({len(pack.rule_set.metrics)} metrics)",
         n, n_events, pack_seconds),
    ]
    print(f"\n{n:,} members, as_of {as_of.isoformat()}, best of {args.repeat}\n")
    print(f"| {'run':<66} | {'members':>9} | {'event rows':>10} | {'seconds':>7} | {'members/s':>10} |")
    print(f"|{'-' * 68}|{'-' * 11}:|{'-' * 11}:|{'-' * 8}:|{'-' * 11}:|")
    for label, members_count, events_count, seconds in rows:
        print(f"| {label:<66} | {members_count:>9,} | {events_count:>10,} | {seconds:>7.3f} | "
              f"{members_count / seconds:>10,.0f} |")
    ratio = min(hand_seconds, paused_seconds) / engine_seconds
    print(f"\nengine / fastest hand-written loop: {ratio:.2f}x the members per second (target ≥ 0.5x); "
          f"results agree: {agree}")
    print(f"default pack compiled in {compile_seconds * 1000:.0f} ms")
    if not agree:
        raise SystemExit("the engine and the hand-written loop disagree")


if __name__ == "__main__":
    main()
