"""How fast `validate` checks a large rule set: 2,000 rules over 20 files, target 1 s.

Usage: .venv/bin/python bench/bench_validate.py [--rules 2000] [--files 20] [--profile]

Generates metrics, segments and class lists (with their cases) into a temporary
directory, times `check_rule_set` in process (best of 3) and the `memberrules validate`
command end to end (a new process: start-up and imports included), and prints a table.
--profile prints the top of a cProfile of one in-process check.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memberrules.engine.check import check_rule_set

TARGET_SECONDS = 1.0
CASES_PER_CLASS_LIST = 10

SCHEMA = """\
timezone: Asia/Shanghai
schema:
  member:
    key: member_id
    fields: {member_id: string, name: string, registered_at: timestamp, birthday: date?,
             growth_value: int, tier: string?, opted_in_sms: bool, tags: list<string>}
  orders:
    key: member_id
    time: placed_at
    fields: {member_id: string, placed_at: timestamp, amount: decimal, category: string}
  events:
    key: member_id
    time: at
    fields: {member_id: string, at: timestamp, type: string}
params:
  min_orders: 3
  window: 30d
tiers:
  by: growth_value
  levels:
    - {name: normal, min: 0}
    - {name: silver, min: 1000}
    - {name: gold, min: 5000}
  current: tier
"""


def _metric(i: int, nullable: list[bool]) -> str:
    """The i-th metric; records in `nullable` whether it can be null (a recency, or built on one)."""
    j, k = (i * 7) % max(i, 1), (i * 13) % max(i, 1)
    kind = i % 5
    nullable.append(kind == 3 or (kind == 2 and i > 1 and (nullable[j] or nullable[k])))
    return [
        f"count(orders within {i % 90 + 1}d where amount > {i % 50} and category != 'c{i % 7}')",
        f"sum(orders.amount within {i % 180 + 1}d)",
        f"m{j} + m{k} * 2 - {i % 10}" if i > 1 else "growth_value + 1",
        f"days_between(last(orders.placed_at), as_of) + m{j}",
        f"count(events within window where type in ['read', 'login', 'share{i % 5}'])",
    ][kind]


def _value(i: int, nullable: list[bool]) -> str:
    return f"(m{i} ?? 0)" if nullable[i] else f"m{i}"


def generate(directory: Path, rules: int, files: int) -> dict[str, int]:
    """Write a rule set of about `rules` rules; returns how many of each kind."""
    metrics = rules * 2 // 5
    class_cases = rules * 3 // 10
    class_lists = max(class_cases // CASES_PER_CLASS_LIST, 1)
    segments = rules - metrics - class_lists * CASES_PER_CLASS_LIST
    (directory / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    chunks: list[list[str]] = [[] for _ in range(files)]
    nullable: list[bool] = []
    for i in range(metrics):
        chunks[i % files].append(("metrics", f"  m{i}: \"{_metric(i, nullable)}\""))
    for n in range(class_lists):
        lines = [f"  c{n}:"]
        for case in range(CASES_PER_CLASS_LIST - 1):
            a, b = (n * 11 + case) % metrics, (n * 17 + case * 3) % metrics
            lines.append(f"    - {{name: k{case}, when: \"{_value(a, nullable)} >= {case * 10} and "
                         f"{_value(b, nullable)} < {500 - case} and tier != 'gold'\"}}")
        lines.append("    - {name: other, else: true}")
        chunks[n % files].append(("classes", "\n".join(lines)))
    for i in range(segments):
        a = (i * 19) % metrics
        chunks[i % files].append(("segments", f"  s{i}: \"{_value(a, nullable)} > {i % 100} and 'vip' in tags or "
                                              f"c{i % class_lists} == 'k{i % 9}'\""))
    for number, chunk in enumerate(chunks):
        text = []
        for section in ("metrics", "classes", "segments"):
            entries = [entry for kind, entry in chunk if kind == section]
            if entries:
                text.append(f"{section}:\n" + "\n".join(entries))
        (directory / f"rules_{number:02d}.yaml").write_text("\n".join(text) + "\n", encoding="utf-8")
    return {"metrics": metrics, "class cases": class_lists * CASES_PER_CLASS_LIST, "segments": segments}


def _cpu() -> float:
    """CPU seconds of this process and its finished children: steadier than the wall clock
    on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best_of(times: int, action) -> tuple[float, float]:
    """The best wall-clock and the best CPU seconds of `times` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(times):
        wall, cpu = time.perf_counter(), _cpu()
        action()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, _cpu() - cpu)
    return best_wall, best_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one check")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="memberrules-bench-") as tmp:
        directory = Path(tmp)
        counts = generate(directory, options.rules, options.files)
        total = sum(counts.values())
        result = check_rule_set(directory)
        errors = [d for d in result.diagnostics if d.is_error]
        if errors:
            print(f"the generated rule set has {len(errors)} error(s); first: {errors[0]}", file=sys.stderr)
            return 1

        in_process = _best_of(3, lambda: check_rule_set(directory))
        command = [sys.executable, "-m", "memberrules.cli", "validate", str(directory)]
        end_to_end = _best_of(3, lambda: subprocess.run(command, capture_output=True, check=True))
        startup = _best_of(3, lambda: subprocess.run(
            [sys.executable, "-c", "import memberrules.cli"], capture_output=True, check=True))

        kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        print(f"rule set: {total} rules ({kinds}) in {options.files + 1} files, "
              f"{len(result.diagnostics)} warning(s)")
        print(f"{'stage':<40}{'seconds':>9}{'cpu s':>8}{'rules/s':>10}{'target':>9}  ")
        rows = [("check_rule_set (in process, best of 3)", in_process),
                ("memberrules validate (end to end)", end_to_end),
                ("  of which start-up and imports", startup)]
        for label, (seconds, cpu) in rows:
            verdict = "" if label.startswith("  ") else ("ok" if seconds <= TARGET_SECONDS else "SLOW")
            target = "" if label.startswith("  ") else f"{TARGET_SECONDS:.1f} s"
            print(f"{label:<40}{seconds:>9.3f}{cpu:>8.3f}{total / seconds:>10.0f}{target:>9}  {verdict}")

        if options.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            check_rule_set(directory)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            print(out.getvalue())
        return 0 if end_to_end[0] <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
