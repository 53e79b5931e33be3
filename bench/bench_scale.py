"""How the DuckDB engine scales: wall time and peak memory at a million members.

    python bench/bench_scale.py                      # 1M members, 10M orders, 10M events
    python bench/bench_scale.py --members 20000 --orders 200000 --events 200000 --python-members 5000

Prints one table:
  (a) `evaluate --engine duckdb` on the default pack (rules/): snapshot files → results.jsonl
      and actions.jsonl (its 12 campaigns decided on a first run); the same without the
      campaigns; the SQL alone (files → Arrow); and, as the fastest DuckDB itself writes a
      results file, the SQL without campaigns into DuckDB's own JSON writer (COPY … FORMAT JSON,
      in key order; not memberrules' bytes, decimals keep all 18 places);
  (b) the RFM / lifecycle / tier part of the pack, compiled, against a hand-written DuckDB
      query computing the same results (the baseline);
  (c) on --python-members members: `evaluate` with each engine (default pack), and each
      engine's evaluation alone (files → rows, without campaigns);
and the ratios the targets are stated in. Every measurement runs in its own process, so
peak memory (max RSS) is that measurement's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

AS_OF = "2026-11-01T00:00:00+08:00"

SUBSET = """\
metrics:
  recency_days: {expr: "days_between(last(orders.placed_at), as_of)", output: true}
  frequency: {expr: "count(orders within rfm_window)", output: true}
  monetary: {expr: "sum(orders.amount within rfm_window)", output: true}
  avg_spend: {expr: "avg(monetary over members where frequency > 0)", output: true}
  above_avg_spend: (monetary >= avg_spend) ?? false
  orders_total: count(orders)
classes:
  rfm:
    - {name: best, when: "(recency_days ?? 9999) <= rfm_recent_days and frequency >= rfm_frequent and above_avg_spend"}
    - {name: breakthrough, when: "frequency < rfm_frequent and above_avg_spend"}
    - {name: maintain, when: "frequency >= rfm_frequent and not above_avg_spend"}
    - {name: general, when: "(recency_days ?? 9999) > rfm_recent_days and frequency < rfm_frequent and not above_avg_spend"}
    - {name: unclassified, else: true}
  lifecycle:
    - {name: new, when: "registered_at > as_of - new_member_window and orders_total == 0"}
    - {name: active, when: "(recency_days ?? 9999) <= active_days"}
    - {name: silent, when: "(recency_days ?? 9999) <= silent_days"}
    - {name: dormant, when: "(recency_days ?? 9999) <= dormant_days"}
    - {name: churned, when: "recency_days is not null and recency_days > dormant_days"}
    - {name: potential, else: true}
tiers:
  by: growth_value
  levels: [{name: normal, min: 0}, {name: silver, min: 1000}, {name: gold, min: 5000}, {name: platinum, min: 20000}]
  current: tier
  downgrade: {when: "day_of_year(as_of) == 1"}
"""

# The same RFM / lifecycle / tier results, written by hand as one would without memberrules.
BASELINE = """
WITH per_member AS (
  SELECT member_id, max(placed_at) AS last_order,
         count(*) FILTER (WHERE placed_at > TIMESTAMPTZ '{as_of}' - INTERVAL 30 DAY) AS frequency,
         sum(amount) FILTER (WHERE placed_at > TIMESTAMPTZ '{as_of}' - INTERVAL 30 DAY) AS monetary,
         count(*) AS orders_total
  FROM read_parquet('{data}/orders.parquet') WHERE placed_at <= TIMESTAMPTZ '{as_of}' GROUP BY member_id
), members AS (
  SELECT m.member_id, m.registered_at, m.growth_value, m.tier AS held,
         coalesce(o.frequency, 0) AS frequency, coalesce(o.monetary, 0) AS monetary,
         coalesce(o.orders_total, 0) AS orders_total,
         date_diff('day', CAST(o.last_order AS DATE), CAST(TIMESTAMPTZ '{as_of}' AS DATE)) AS recency_days
  FROM read_parquet('{data}/member.parquet') AS m LEFT JOIN per_member AS o USING (member_id)
), average AS (SELECT avg(monetary) FILTER (WHERE frequency > 0) AS avg_spend FROM members),
ranked AS (
  SELECT *, coalesce(monetary >= avg_spend, false) AS above,
         CASE WHEN growth_value >= 20000 THEN 3 WHEN growth_value >= 5000 THEN 2
              WHEN growth_value >= 1000 THEN 1 ELSE 0 END AS earned,
         CASE held WHEN 'normal' THEN 0 WHEN 'silver' THEN 1 WHEN 'gold' THEN 2 WHEN 'platinum' THEN 3 END AS kept
  FROM members, average
), tiered AS (
  SELECT *, CASE WHEN kept > earned AND dayofyear(TIMESTAMPTZ '{as_of}') <> 1 THEN kept ELSE earned END AS t
  FROM ranked
)
SELECT member_id,
       (['normal', 'silver', 'gold', 'platinum'])[t + 1] AS tier,
       (['silver', 'gold', 'platinum', NULL])[t + 1] AS next_tier,
       greatest(([1000, 5000, 20000, NULL])[t + 1] - growth_value, 0) AS tier_gap,
       CASE WHEN coalesce(recency_days, 9999) <= 15 AND frequency >= 8 AND above THEN 'best'
            WHEN frequency < 8 AND above THEN 'breakthrough'
            WHEN frequency >= 8 AND NOT above THEN 'maintain'
            WHEN coalesce(recency_days, 9999) > 15 AND frequency < 8 AND NOT above THEN 'general'
            ELSE 'unclassified' END AS rfm,
       CASE WHEN registered_at > TIMESTAMPTZ '{as_of}' - INTERVAL 30 DAY AND orders_total = 0 THEN 'new'
            WHEN coalesce(recency_days, 9999) <= 30 THEN 'active'
            WHEN coalesce(recency_days, 9999) <= 90 THEN 'silent'
            WHEN coalesce(recency_days, 9999) <= 180 THEN 'dormant'
            WHEN recency_days > 180 THEN 'churned' ELSE 'potential' END AS lifecycle,
       recency_days, frequency, monetary, avg_spend
FROM tiered ORDER BY member_id
"""


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User and system time of every thread of this process so far (DuckDB's and Arrow's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def results_rules() -> Path:
    """The default pack without its campaigns: what `evaluate` computes and writes as result rows."""
    directory = Path(tempfile.mkdtemp())
    for path in (ROOT / "rules").glob("*.yaml"):
        if path.name not in ("campaigns.yaml", "program.test.yaml"):
            (directory / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return directory


def measure(kind: str, data: Path) -> dict:
    """One measurement, in this process: returns seconds, peak MiB and members."""
    from datetime import datetime

    from memberrules.engine.check import check_rule_set
    from memberrules.engine.duckdb_engine import connect, evaluate_duckdb
    from memberrules.engine.sql import compile_sql

    as_of = datetime.fromisoformat(AS_OF)
    if kind == "subset":
        directory = Path(tempfile.mkdtemp())
        for name in ("schema.yaml", "params.yaml"):
            (directory / name).write_text((ROOT / "rules" / name).read_text(encoding="utf-8"), encoding="utf-8")
        (directory / "subset.yaml").write_text(SUBSET, encoding="utf-8")
        rules = check_rule_set(directory).rule_set
    elif kind == "sql-copy":
        rules = check_rule_set(results_rules()).rule_set
    else:
        rules = check_rule_set(ROOT / "rules").rule_set
    began, cpu = time.perf_counter(), _cpu_seconds()
    if kind in ("engine", "engine-results", "python-engine"):
        from memberrules.engine.duckdb_engine import evaluate_rules_with

        out = Path(tempfile.mkdtemp()) / "results.jsonl"
        evaluate = evaluate_rules_with("python" if kind == "python-engine" else "duckdb")
        outcome = evaluate(ROOT / "rules" if kind != "engine-results" else results_rules(), data, as_of=as_of, out=out)
        members = outcome.report.rows_written
    elif kind == "rows":
        members = len(evaluate_duckdb(rules, data, as_of).rows)
    elif kind == "python":
        from memberrules.engine.eval import compile_rule_set
        from memberrules.engine.snapshot import read_snapshot

        snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, as_of)
        members = len(compile_rule_set(rules).evaluate(snapshot, as_of).rows)
    else:
        con = connect()
        con.execute(f"SET TimeZone = '{rules.timezone}'").fetchall()
        if kind == "baseline":
            sql = BASELINE.format(as_of=AS_OF, data=data)
        else:
            tables = {name: f"read_parquet('{data / (name + '.parquet')}')" for name in rules.tables}
            for name, source in tables.items():
                con.execute(f'CREATE TEMP VIEW "_mr_{name}" AS SELECT * FROM {source}').fetchall()
            sql = compile_sql(rules, "duckdb", as_of=as_of, tables={n: f"_mr_{n}" for n in tables}).query_sql()
        if kind == "sql-copy":
            # DuckDB's own JSON writer, in key order: the fastest way DuckDB has to a results file
            # (not memberrules' bytes: its decimals keep all 18 places).
            out = Path(tempfile.mkdtemp()) / "results.jsonl"
            con.execute("SET preserve_insertion_order = true").fetchall()
            members = con.execute(f"COPY ({sql}) TO '{out}' (FORMAT JSON)").fetchall()[0][0]
        else:
            members = con.sql(sql).to_arrow_table().num_rows
    return {"seconds": time.perf_counter() - began, "cpu_seconds": _cpu_seconds() - cpu, "peak_mib": _peak_mib(),
            "members": members}


def run(kind: str, data: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--measure", kind, "--data", str(data)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def ensure(data: Path, members: int, orders: int, events: int) -> Path:
    from gen_scale import generate

    if not (data / "benefits.parquet").exists():
        result = generate(data, members, orders, events, AS_OF)
        print(f"generated {data} in {result['seconds']:.1f} s", file=sys.stderr)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--python-members", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memberrules-bench")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data)))
        return

    big = ensure(args.work / f"m{args.members}_o{args.orders}_e{args.events}", args.members, args.orders, args.events)
    ratio = args.python_members / args.members
    small = ensure(args.work / f"m{args.python_members}", args.python_members, int(args.orders * ratio),
                   int(args.events * ratio))
    results = {
        "(a) evaluate --engine duckdb, default pack": run("engine", big),
        "(a) same, without the campaigns": run("engine-results", big),
        "(a) its SQL alone, files → Arrow": run("sql", big),
        "(a) its SQL without campaigns → DuckDB's JSON writer": run("sql-copy", big),
        "(b) RFM/lifecycle/tier compiled → Arrow": run("subset", big),
        "(b) hand-written DuckDB SQL → Arrow": run("baseline", big),
        "(c) evaluate --engine python, default pack": run("python-engine", small),
        "(c) evaluate --engine duckdb, same data": run("engine", small),
        "(c) Python engine alone, files → rows": run("python", small),
        "(c) DuckDB engine alone, files → rows": run("rows", small),
    }
    print(f"\n{'measurement':<54} {'members':>10} {'wall s':>8} {'cpu s':>7} {'peak MiB':>9} {'members/s':>11}")
    for name, r in results.items():
        print(f"{name:<54} {r['members']:>10,} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.1f} {r['peak_mib']:>9.0f} "
              f"{r['members'] / r['seconds']:>11,.0f}")

    def rate(name: str) -> float:
        return results[name]["members"] / results[name]["seconds"]

    compiled, baseline = results["(b) RFM/lifecycle/tier compiled → Arrow"], results["(b) hand-written DuckDB SQL → Arrow"]
    engine = results["(a) evaluate --engine duckdb, default pack"]
    print(f"\ncompiled / hand-written (same results):  {compiled['seconds'] / baseline['seconds']:.2f}x  (target ≤ 1.5x)")
    print(f"DuckDB engine, default pack, {args.members:,} members: {engine['seconds']:.1f} s, "
          f"{engine['peak_mib'] / 1024:.2f} GiB (target < 30 s, < 4 GiB)")
    # The work itself bounds the wall time from below: cpu seconds over the cores there are.
    cores = os.cpu_count() or 1
    needed = args.members / (20 * rate("(c) evaluate --engine python, default pack"))
    print(f"DuckDB engine, default pack: {engine['cpu_seconds']:.1f} cpu s, {engine['cpu_seconds'] / engine['seconds']:.2f}"
          f" of {cores} cores busy; even with every core busy ≥ {engine['cpu_seconds'] / cores:.1f} s "
          f"(20x the Python engine needs ≤ {needed:.1f} s)")
    print(f"DuckDB / Python engine members per second (target ≥ 20x): "
          f"{rate('(a) evaluate --engine duckdb, default pack') / rate('(c) evaluate --engine python, default pack'):.1f}x "
          f"end to end ({args.members:,} / {args.python_members:,} members); "
          f"{rate('(a) its SQL alone, files → Arrow') / rate('(c) Python engine alone, files → rows'):.1f}x "
          f"evaluation alone; "
          f"{rate('(c) evaluate --engine duckdb, same data') / rate('(c) evaluate --engine python, default pack'):.1f}x "
          f"end to end on the same {args.python_members:,} members")


if __name__ == "__main__":
    main()
