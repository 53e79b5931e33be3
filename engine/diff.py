"""`memberrules diff`: what a rule change does to a real snapshot.

Both rule sets are evaluated on the same snapshot at the same `as_of`; the
results are compared member by member: the tier transition matrix (from → to),
one matrix per class list, segment sizes with the members who entered and left,
action counts per campaign, and a few example members for every change. Next to
that, the rules that changed as text (canonical expressions, params, levels) and
the names added and removed. Either side may be a `REV:path` git revision.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from . import ast
from .campaigns import decide_actions
from .check import CheckedRuleSet, CheckResult, check_rule_set
from .errors import Diagnostic, Span
from .campaigns_sql import decide_first_run
from .duckdb_engine import DuckDBStream, Limits, choose_engine, evaluate_duckdb, out_of_memory_reported
from .eval import compile_rule_set
from .evaluate import parse_as_of
from .gitsource import RuleSource, open_rule_source, parse_git_spec
from .snapshot import Snapshot, read_snapshot

MAX_EXAMPLES = 5
NONE = "—"  # shown for "no value": no tier section, or a class list without a match


# -- what changed as text ------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleChange:
    """One rule that reads differently: `kind` is added, removed or changed."""

    address: str  # metrics.frequency, tiers.levels.silver, classes.lifecycle.active, …
    kind: str
    old: str | None
    new: str | None


_SECTIONS = ("timezone", "schema", "params", "metrics", "tiers", "classes", "segments", "campaigns")


def _param_text(value: object, kind: str) -> str:
    if kind in ("int", "decimal", "bool", "duration", "date", "timestamp", "string"):
        return ast.format_literal(kind, value)  # type: ignore[arg-type]
    return str(value)


def rule_texts(rules: CheckedRuleSet) -> dict[str, str]:
    """Every meaningful setting of a rule set as canonical text, by address (descriptions left out).

    Expressions are `ast.to_source` of their parse, so a change of spacing or
    quoting is not a change.
    """
    texts: dict[str, str] = {"timezone": rules.timezone}
    for table_name, table in rules.tables.items():
        texts[f"schema.{table_name}.key"] = table.key
        if table.time is not None:
            texts[f"schema.{table_name}.time"] = table.time
        for name, type_ in table.fields.items():
            texts[f"schema.{table_name}.fields.{name}"] = str(type_)
    for name, param in rules.params.items():
        texts[f"params.{name}"] = _param_text(param.value, param.type.kind)
    for name, metric in rules.metrics.items():
        texts[f"metrics.{name}"] = ast.to_source(metric.expr)
        if metric.output:
            texts[f"metrics.{name}.output"] = "true"
    tiers = rules.tiers
    if tiers is not None:
        texts["tiers.by"] = ast.to_source(tiers.by)
        for level in tiers.levels:
            texts[f"tiers.levels.{level.name}"] = f"min {level.min}"
        if tiers.current is not None:
            texts["tiers.current"] = tiers.current
        if tiers.downgrade is not None:
            texts["tiers.downgrade.when"] = ast.to_source(tiers.downgrade)
        if tiers.forecast_earned is not None:
            texts["tiers.forecast.earned"] = ast.to_source(tiers.forecast_earned)
        if tiers.forecast_window is not None:
            texts["tiers.forecast.window"] = ast.format_duration(tiers.forecast_window)
    for list_name, class_list in rules.classes.items():
        for case in class_list.cases:
            texts[f"classes.{list_name}.{case.name}"] = "else" if case.when is None else ast.to_source(case.when)
    for name, expr in rules.segments.items():
        texts[f"segments.{name}"] = ast.to_source(expr)
    for name, campaign in rules.campaigns.items():
        prefix = f"campaigns.{name}"
        model = rules.model.campaigns.get(name)
        parts = {
            "when": ast.to_source(campaign.when) if campaign.when is not None else None,
            "on": model.on if model is not None else None,
            "requires": ", ".join(campaign.requires) or None,
            "action.channel": campaign.channel,
            "action.template": campaign.template,
            "action.coupon": campaign.coupon,
            "action.points": ast.to_source(campaign.points) if campaign.points is not None else None,
            "cooldown": ast.format_duration(campaign.cooldown) if campaign.cooldown is not None else None,
            "priority": str(campaign.priority) if campaign.priority else None,
            "group": campaign.group,
        }
        texts.update({f"{prefix}.{key}": value for key, value in parts.items() if value is not None})
    return texts


def _section_rank(address: str) -> int:
    head = address.split(".", 1)[0]
    return _SECTIONS.index(head) if head in _SECTIONS else len(_SECTIONS)


def compare_rules(old: CheckedRuleSet, new: CheckedRuleSet) -> list[RuleChange]:
    """The settings that differ between two rule sets, section by section, in declaration order.

    A class list whose cases keep their conditions but change their order is a
    change too (the first matching case wins): it is listed as `classes.NAME (order)`.
    """
    before, after = rule_texts(old), rule_texts(new)
    addresses = list(after) + [a for a in before if a not in after]
    addresses.sort(key=_section_rank)  # stable: declaration order within a section
    changes = []
    for address in addresses:
        was, now = before.get(address), after.get(address)
        if was == now:
            continue
        kind = "added" if was is None else "removed" if now is None else "changed"
        changes.append(RuleChange(address, kind, was, now))
    for name in new.classes:
        if name not in old.classes:
            continue
        old_order = [c.name for c in old.classes[name].cases if c.name in {d.name for d in new.classes[name].cases}]
        new_order = [c.name for c in new.classes[name].cases if c.name in set(old_order)]
        if old_order != new_order:
            position = max((i for i, c in enumerate(changes) if c.address.startswith(f"classes.{name}.")),
                           default=len(changes) - 1)
            changes.insert(position + 1, RuleChange(f"classes.{name} (order)", "changed",
                                                    ", ".join(old_order), ", ".join(new_order)))
    return changes


# -- what changed for members --------------------------------------------------------------------

@dataclass
class Matrix:
    """Members moving between the values of one column (the tier, or a class list)."""

    name: str
    from_values: list[str | None]  # the rows, in rule order
    to_values: list[str | None]  # the columns
    counts: dict[tuple[str | None, str | None], int]
    examples: dict[tuple[str | None, str | None], list[object]]
    status: str = ""  # "added" or "removed" when only one rule set has it

    @property
    def changed(self) -> int:
        return sum(n for (a, b), n in self.counts.items() if a != b)

    def transitions(self) -> list[tuple[str | None, str | None, int, list[object]]]:
        """The off-diagonal cells, most members first (ties in rule order)."""
        order = {v: i for i, v in enumerate(self.from_values)}
        to_order = {v: i for i, v in enumerate(self.to_values)}
        cells = [(a, b, n, self.examples.get((a, b), [])) for (a, b), n in self.counts.items() if a != b and n]
        cells.sort(key=lambda c: (-c[2], order.get(c[0], 0), to_order.get(c[1], 0)))
        return cells


@dataclass
class SegmentChange:
    name: str
    before: int
    after: int
    entered: int
    left: int
    entered_examples: list[object]
    left_examples: list[object]
    status: str = ""

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class CampaignChange:
    name: str
    channel: str
    before: int  # actions sent
    after: int
    gained: int
    lost: int
    gained_examples: list[object]
    lost_examples: list[object]
    status: str = ""

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class RuleSetDiff:
    """Everything `diff` shows; renderers turn it into text, markdown or JSON."""

    old_label: str
    new_label: str
    as_of: dt.datetime
    members: int
    members_changed: int  # members whose tier or any class changed
    rules: list[RuleChange]
    tiers: Matrix | None
    classes: list[Matrix]
    segments: list[SegmentChange]
    campaigns: list[CampaignChange]
    notes: list[str] = field(default_factory=list)
    old_commit: str | None = None
    new_commit: str | None = None

    @property
    def changed_share(self) -> float:
        return self.members_changed / self.members if self.members else 0.0


def _levels(rules: CheckedRuleSet | None) -> list[str]:
    return list(rules.tiers.names()) if rules is not None and rules.tiers is not None else []


def _ordered(first: Iterable, second: Iterable, seen_values: set) -> list:
    values = list(dict.fromkeys([*first, *second]))
    values += sorted((v for v in seen_values if v not in values and v is not None), key=str)
    if None in seen_values:
        values.append(None)
    return [v for v in values if v in seen_values]


def _matrix(name: str, pairs: Iterable[tuple[object, object, object]], old_order: list, new_order: list,
            status: str = "") -> Matrix:
    counts: dict = defaultdict(int)
    examples: dict = defaultdict(list)
    froms, tos = set(), set()
    for key, a, b in pairs:
        counts[(a, b)] += 1
        froms.add(a)
        tos.add(b)
        if a != b and len(examples[(a, b)]) < MAX_EXAMPLES:
            examples[(a, b)].append(key)
    return Matrix(name, _ordered(old_order, new_order, froms), _ordered(old_order, new_order, tos),
                  dict(counts), dict(examples), status)


def compare_rows(old_rules: CheckedRuleSet, new_rules: CheckedRuleSet, old_rows: list[dict],
                 new_rows: list[dict]) -> tuple[Matrix | None, list[Matrix], list[SegmentChange], int, list[object]]:
    """Tier and class matrices, segment changes, the number of members whose tier or a class
    changed, and the keys found on one side only."""
    old_key, new_key = old_rules.member.key, new_rules.member.key
    old_by = {row[old_key]: row for row in old_rows}
    new_by = {row[new_key]: row for row in new_rows}
    keys = [k for k in old_by if k in new_by]
    one_sided = [k for k in old_by if k not in new_by] + [k for k in new_by if k not in old_by]
    changed: set = set()

    tiers = None
    if old_rules.tiers is not None or new_rules.tiers is not None:
        pairs = [(k, old_by[k].get("tier"), new_by[k].get("tier")) for k in keys]
        status = "added" if old_rules.tiers is None else "removed" if new_rules.tiers is None else ""
        tiers = _matrix("tier", pairs, _levels(old_rules), _levels(new_rules), status)
        changed.update(k for k, a, b in pairs if a != b)

    classes = []
    for name in list(dict.fromkeys([*old_rules.classes, *new_rules.classes])):
        old_list, new_list = old_rules.classes.get(name), new_rules.classes.get(name)
        pairs = [(k, old_by[k].get(name) if old_list else None, new_by[k].get(name) if new_list else None)
                 for k in keys]
        status = "added" if old_list is None else "removed" if new_list is None else ""
        classes.append(_matrix(name, pairs, [c.name for c in old_list.cases] if old_list else [],
                               [c.name for c in new_list.cases] if new_list else [], status))
        changed.update(k for k, a, b in pairs if a != b)

    segments = []
    for name in list(dict.fromkeys([*old_rules.segments, *new_rules.segments])):
        before = after = entered = left = 0
        entered_examples: list = []
        left_examples: list = []
        for k in keys:
            was = name in (old_by[k].get("segments") or ())
            now = name in (new_by[k].get("segments") or ())
            before += was
            after += now
            if now and not was:
                entered += 1
                if len(entered_examples) < MAX_EXAMPLES:
                    entered_examples.append(k)
            elif was and not now:
                left += 1
                if len(left_examples) < MAX_EXAMPLES:
                    left_examples.append(k)
        status = "added" if name not in old_rules.segments else "removed" if name not in new_rules.segments else ""
        segments.append(SegmentChange(name, before, after, entered, left, entered_examples, left_examples, status))
    return tiers, classes, segments, len(changed), one_sided


def compare_actions(old_rules: CheckedRuleSet, new_rules: CheckedRuleSet, old_actions: Mapping[str, list],
                    new_actions: Mapping[str, list], channels: Mapping[str, str]) -> list[CampaignChange]:
    """Actions sent per campaign before and after, with the members who gain or lose one."""
    result = []
    for name in list(dict.fromkeys([*old_rules.campaigns, *new_rules.campaigns])):
        before, after = old_actions.get(name, []), new_actions.get(name, [])
        before_set, after_set = set(before), set(after)
        gained = [k for k in after if k not in before_set]
        lost = [k for k in before if k not in after_set]
        status = "added" if name not in old_rules.campaigns else "removed" if name not in new_rules.campaigns else ""
        result.append(CampaignChange(name, channels.get(name, ""), len(before), len(after), len(gained), len(lost),
                                     gained[:MAX_EXAMPLES], lost[:MAX_EXAMPLES], status))
    return result


# -- running both sides ----------------------------------------------------------------------------

@dataclass
class DiffOutcome:
    """A diff, or the diagnostics that stopped it (rule errors in OLD or NEW)."""

    diff: RuleSetDiff | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str]


def _relabel(result: CheckResult, source: RuleSource) -> tuple[list[Diagnostic], dict[str, str]]:
    """Diagnostics of a rule set read out of git name their files as git does: `main:rules/tiers.yaml`."""
    spec = parse_git_spec(source.label) if source.commit else None
    if spec is None:
        return result.diagnostics, result.sources

    def name(file: str) -> str:
        return f"{spec.rev}:{file}"

    def span(value: Span | None) -> Span | None:
        return None if value is None else replace(value, file=name(value.file))

    diagnostics = [replace(d, span=span(d.span), related=tuple((note, span(s)) for note, s in d.related))
                   for d in result.diagnostics]
    return diagnostics, {name(file): text for file, text in result.sources.items()}


def _read(rules: CheckedRuleSet, data: Path, as_of: dt.datetime, cache: dict) -> Snapshot:
    """The snapshot as `rules` reads it; read once when both rule sets declare the same data."""
    key = (repr(sorted((n, t.model_dump_json()) for n, t in rules.model.schema_.items())), rules.timezone)
    if key not in cache:
        cache[key] = read_snapshot(data, rules.model.schema_, rules.timezone, as_of)
    return cache[key]


def _sent_by_campaign(rules: CheckedRuleSet, compiled, evaluation) -> tuple[dict[str, list], list[str]]:
    """Members sent an action, per campaign, as on a first run (no previous state, empty ledger),
    and the campaign runtime's notes on what that leaves out."""
    if not rules.campaigns:
        return {}, []
    decision = decide_actions(rules, compiled, evaluation)
    return decision.sent_members(), list(decision.notes)


def _evaluate_duckdb(rules: CheckedRuleSet, data: Path, as_of: dt.datetime, limits: Limits
                     ) -> tuple[list[dict], dict[str, list], list[str]]:
    """`_sent_by_campaign` and the result rows, on the DuckDB engine."""
    if not rules.campaigns:
        return evaluate_duckdb(rules, data, as_of, limits=limits).rows, {}, []
    with out_of_memory_reported(limits):
        stream = DuckDBStream(rules, data, as_of, limits=limits)
        try:
            rows, decision = decide_first_run(rules, stream.con, stream.as_of, stream.views.names)
        finally:
            stream.close()
    return rows, decision.sent_members(), list(decision.notes)


ENGINES = ("python", "duckdb", "auto")


def diff_rule_sets(old: str, new: str, data: Path, as_of: dt.datetime | str | None = None,
                   cwd: Path | None = None, engine: str = "python", limits: Limits | None = None) -> DiffOutcome:
    """Evaluate two rule sets on one snapshot and compare the results.

    Args:
        old, new: rule-set directories (or files), or `REV:path` git revisions such as `main:rules`.
        data: the snapshot directory (one file per schema table).
        as_of: the evaluation instant, or `--as-of` text (naive: in the new rule set's timezone);
            default now.
        cwd: where `REV:path` is resolved (default: the current directory).
        engine: "python", "duckdb" for large snapshots (the same diff, campaigns included), or
            "auto": duckdb from duckdb_engine.AUTO_MIN_MEMBERS members of the snapshot.
        limits: memory, spill directory and threads for the DuckDB engine.

    Returns:
        A DiffOutcome with the diff, or with the errors of either rule set.

    Raises:
        GitSourceError: a `REV:path` that git cannot read.
        ValueError: `as_of` text that is not a date or timestamp, or an unknown engine.
        DiagnosticError: the snapshot cannot be read (MR5xx), or DuckDB ran out of memory (MR592).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (engines: {', '.join(ENGINES)})")
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_rule_source(text, cwd)) for text in (old, new)]
        checked = [check_rule_set(s.path, base=s.base) for s in sources]
        diagnostics: list[Diagnostic] = []
        texts: dict[str, str] = {}
        for source, result in zip(sources, checked):
            if not result.ok:
                found, shown = _relabel(result, source)
                diagnostics += [d for d in found if d.is_error]
                texts.update(shown)
        if diagnostics:
            return DiffOutcome(None, diagnostics, texts)
        old_rules, new_rules = checked[0].rule_set, checked[1].rule_set
        assert old_rules is not None and new_rules is not None
        if isinstance(as_of, dt.datetime):
            tz = ZoneInfo(new_rules.timezone)
            when = as_of.replace(tzinfo=tz) if as_of.tzinfo is None else as_of.astimezone(tz)
        else:
            when = parse_as_of(as_of, new_rules.timezone)
        cache: dict = {}
        rows, actions, campaign_notes = [], [], []
        channels: dict[str, str] = {}
        if engine == "auto":
            engine = choose_engine("auto", new_rules, data, None)
        for rules in (old_rules, new_rules):
            if engine == "duckdb":
                found, sent, side_notes = _evaluate_duckdb(rules, data, when, limits or Limits())
                rows.append(found)
            else:
                compiled = compile_rule_set(rules)
                evaluation = compiled.evaluate(_read(rules, data, when, cache), when)
                rows.append(evaluation.rows)
                sent, side_notes = _sent_by_campaign(rules, compiled, evaluation)
            actions.append(sent)
            campaign_notes += [note for note in side_notes if note not in campaign_notes]
            channels.update({name: c.channel for name, c in rules.campaigns.items()})
        tiers, classes, segments, changed, one_sided = compare_rows(old_rules, new_rules, rows[0], rows[1])
        notes = []
        if one_sided:
            notes.append(f"{len(one_sided)} member(s) are in only one of the results "
                         f"(e.g. {', '.join(map(str, one_sided[:MAX_EXAMPLES]))}): the two schemas read the "
                         "snapshot differently")
        campaigns = compare_actions(old_rules, new_rules, actions[0], actions[1], channels)
        notes += campaign_notes
        members = len({*(r[old_rules.member.key] for r in rows[0])} & {*(r[new_rules.member.key] for r in rows[1])})
        result = RuleSetDiff(sources[0].label, sources[1].label, when, members, changed,
                             compare_rules(old_rules, new_rules), tiers, classes, segments, campaigns, notes,
                             sources[0].commit, sources[1].commit)
        return DiffOutcome(result, [], {})


# -- --fail-on ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Threshold:
    """`--fail-on 50` (members) or `--fail-on 2%` (of all members)."""

    value: Decimal
    percent: bool

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else f"{self.value} members"

    def exceeded(self, diff: RuleSetDiff) -> bool:
        """Whether more members than allowed change tier or class."""
        if self.percent:
            return diff.members > 0 and Decimal(diff.members_changed) * 100 > self.value * diff.members
        return diff.members_changed > self.value


def parse_threshold(text: str) -> Threshold:
    """`50` → at most 50 members may change; `2%` or `0.5%` → at most that share.

    >>> parse_threshold("2.5%")
    Threshold(value=Decimal('2.5'), percent=True)
    """
    raw = text.strip()
    percent = raw.endswith("%")
    number = raw[:-1].strip() if percent else raw
    try:
        value = Decimal(number)
    except ArithmeticError:
        raise ValueError(f"'{text}' is not a number of members (50) or a share (2%)") from None
    if not value.is_finite() or value < 0 or (not percent and value != value.to_integral_value()):
        raise ValueError(f"'{text}' is not a number of members (50) or a share (2%)")
    return Threshold(value, percent)


# -- rendering ------------------------------------------------------------------------------------

def _show(value: object) -> str:
    return NONE if value is None else str(value)


def _keys(keys: Iterable[object]) -> str:
    return ", ".join(str(k) for k in keys)


def _shorten(text: str | None, limit: int = 160) -> str:
    if text is None:
        return NONE
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


def _percent(part: int, whole: int) -> str:
    if not whole:
        return "0%"
    share = part * 100 / whole
    return f"{share:.1f}%" if share >= 0.1 or part == 0 else "<0.1%"


def _headline(diff: RuleSetDiff) -> str:
    return (f"{diff.members_changed} of {diff.members} members ({_percent(diff.members_changed, diff.members)}) "
            "change tier or class")


def _label(label: str, commit: str | None) -> str:
    return f"{label} ({commit[:7]})" if commit else label


def _table(head: list[str], rows: list[list[str]], right: int = 1) -> list[str]:
    """A plain-text table: the first `right` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

    def line(row):
        return "  ".join(c.ljust(w) if i < right else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [line(head), *(line(r) for r in rows)]


def _matrix_rows(matrix: Matrix, corner: str) -> tuple[list[str], list[list[str]]]:
    head = [corner, *(_show(v) for v in matrix.to_values)]
    rows = [[_show(a), *(str(matrix.counts.get((a, b), 0)) for b in matrix.to_values)] for a in matrix.from_values]
    return head, rows


def _matrix_title(matrix: Matrix) -> str:
    title = "Tier" if matrix.name == "tier" else f"Class list {matrix.name}"
    suffix = f" ({matrix.status} by this change)" if matrix.status else ""
    return f"{title}{suffix}: {matrix.changed} member(s) move"


def _moving(diff: RuleSetDiff) -> tuple[list[Matrix], list[str]]:
    """The matrices worth a table, and the names of those where nobody moves."""
    matrices = ([diff.tiers] if diff.tiers else []) + diff.classes
    shown = [m for m in matrices if m.changed or m.status]
    still = [m.name for m in matrices if not (m.changed or m.status)]
    return shown, still


def _segment_changed(s: SegmentChange) -> bool:
    return bool(s.entered or s.left or s.status)


def _campaign_changed(c: CampaignChange) -> bool:
    return bool(c.gained or c.lost or c.status)


def render_text(diff: RuleSetDiff) -> str:
    """The diff for a terminal."""
    lines = [f"diff {_label(diff.old_label, diff.old_commit)} → {_label(diff.new_label, diff.new_commit)}, "
             f"as of {diff.as_of.isoformat()}", _headline(diff), ""]
    lines.append("Rules changed:" if diff.rules else "Rules changed: none")
    mark = {"added": "+", "removed": "-", "changed": "~"}
    for change in diff.rules:
        if change.kind == "changed":
            lines.append(f"  ~ {change.address}: {_shorten(change.old)}  →  {_shorten(change.new)}")
        else:
            lines.append(f"  {mark[change.kind]} {change.address}: {_shorten(change.new or change.old)}")
    shown, still = _moving(diff)
    for matrix in shown:
        head, rows = _matrix_rows(matrix, "from \\ to")
        lines += ["", _matrix_title(matrix), *("  " + line for line in _table(head, rows))]
        lines += [f"  {_show(a)} → {_show(b)}: {n} (e.g. {_keys(keys)})" for a, b, n, keys in matrix.transitions()]
    if still:
        lines += ["", "Nobody moves in: " + ", ".join(still)]
    changed_segments = [s for s in diff.segments if _segment_changed(s)]
    if changed_segments:
        rows = [[s.name + (f" ({s.status})" if s.status else ""), str(s.before), str(s.after), _signed(s.delta),
                 f"+{s.entered}", f"-{s.left}"] for s in changed_segments]
        lines += ["", "Segments:",
                  *("  " + line for line in _table(["segment", "before", "after", "delta", "entered", "left"], rows))]
        for s in changed_segments:
            if s.entered_examples:
                lines.append(f"  {s.name}: entered e.g. {_keys(s.entered_examples)}")
            if s.left_examples:
                lines.append(f"  {s.name}: left e.g. {_keys(s.left_examples)}")
    same = [f"{s.name} {s.after}" for s in diff.segments if not _segment_changed(s)]
    if same:
        lines += ["", "Segments unchanged: " + ", ".join(same)]
    changed_campaigns = [c for c in diff.campaigns if _campaign_changed(c)]
    if changed_campaigns:
        rows = [[c.name + (f" ({c.status})" if c.status else ""), c.channel, str(c.before), str(c.after),
                 _signed(c.delta)] for c in changed_campaigns]
        lines += ["", "Actions per campaign:",
                  *("  " + line for line in _table(["campaign", "channel", "before", "after", "delta"], rows, right=2))]
        for c in changed_campaigns:
            if c.gained_examples:
                lines.append(f"  {c.name}: {c.gained} member(s) gain it, e.g. {_keys(c.gained_examples)}")
            if c.lost_examples:
                lines.append(f"  {c.name}: {c.lost} member(s) lose it, e.g. {_keys(c.lost_examples)}")
    same = [f"{c.name} {c.after}" for c in diff.campaigns if not _campaign_changed(c)]
    if same:
        lines += ["", "Actions unchanged: " + ", ".join(same)]
    if diff.notes:
        lines.append("")
        lines += [f"note: {note}" for note in diff.notes]
    return "\n".join(lines)


def _md(text: object) -> str:
    """Text in a table cell or list item: markdown's special characters escaped."""
    text = str(text).replace("\n", " ")
    for char in "\\|*`[]<>":
        text = text.replace(char, "\\" + char)
    return text


def _code(text: str | None) -> str:
    """A code span in a table cell (pipes must be escaped even there, in GitHub's tables)."""
    if text is None:
        return NONE
    text = _shorten(text, 200).replace("|", "\\|").replace("\n", " ")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_table(head: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A markdown table; `align` has one letter per column: l(eft) or r(ight)."""
    marks = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(marks) + " |",
            *("| " + " | ".join(row) + " |" for row in rows)]


def render_markdown(diff: RuleSetDiff) -> str:
    """The diff as a pull-request comment: a headline, then tables."""
    lines = [f"### memberrules diff: `{_label(diff.old_label, diff.old_commit)}` → "
             f"`{_label(diff.new_label, diff.new_commit)}`", "",
             f"**{_headline(diff)}** on the snapshot as of {diff.as_of.isoformat()}.", "", "#### Rules changed", ""]
    if diff.rules:
        rows = [[change.kind, f"`{change.address}`", _code(change.old), _code(change.new)] for change in diff.rules]
        lines += _md_table(["", "rule", "before", "after"], rows, "llll")
    else:
        lines.append("No rule reads differently: only comments, descriptions or layout changed.")
    shown, still = _moving(diff)
    for matrix in shown:
        head, rows = _matrix_rows(matrix, "from ↓ to →")
        for a, row in zip(matrix.from_values, rows):  # members who stay put, in bold: the diagonal
            if a in matrix.to_values:
                column = matrix.to_values.index(a) + 1
                row[column] = f"**{row[column]}**"
        rows = [[_md(row[0]), *row[1:]] for row in rows]
        lines += ["", f"#### {_md(_matrix_title(matrix))}", "",
                  *_md_table([_md(h) for h in head], rows, "l" + "r" * (len(head) - 1)), ""]
        lines += [f"- {_md(_show(a))} → {_md(_show(b))}: {n} (e.g. {_md(_keys(keys))})"
                  for a, b, n, keys in matrix.transitions()]
    if still:
        lines += ["", "Nobody moves in: " + ", ".join(f"`{name}`" for name in still) + "."]
    changed_segments = [s for s in diff.segments if _segment_changed(s)]
    same_segments = [s for s in diff.segments if not _segment_changed(s)]
    if diff.segments:
        lines += ["", "#### Segments", ""]
    if changed_segments:
        rows = []
        for s in changed_segments:
            examples = "; ".join(part for part in (
                f"in: {_keys(s.entered_examples)}" if s.entered_examples else "",
                f"out: {_keys(s.left_examples)}" if s.left_examples else "") if part)
            name = f"`{s.name}`" + (f" ({s.status})" if s.status else "")
            rows.append([name, str(s.before), str(s.after), _signed(s.delta), f"+{s.entered}", f"-{s.left}",
                         _md(examples) or NONE])
        lines += _md_table(["segment", "before", "after", "Δ", "entered", "left", "e.g."], rows, "lrrrrrl")
    if same_segments:
        lines += ["", "Unchanged: " + ", ".join(f"`{s.name}` {s.after}" for s in same_segments) + "."]
    changed_campaigns = [c for c in diff.campaigns if _campaign_changed(c)]
    same_campaigns = [c for c in diff.campaigns if not _campaign_changed(c)]
    if diff.campaigns:
        lines += ["", "#### Actions per campaign", ""]
    if changed_campaigns:
        rows = []
        for c in changed_campaigns:
            examples = "; ".join(part for part in (
                f"gain: {_keys(c.gained_examples)}" if c.gained_examples else "",
                f"lose: {_keys(c.lost_examples)}" if c.lost_examples else "") if part)
            name = f"`{c.name}`" + (f" ({c.status})" if c.status else "")
            rows.append([name, c.channel, str(c.before), str(c.after), _signed(c.delta), _md(examples) or NONE])
        lines += _md_table(["campaign", "channel", "before", "after", "Δ", "e.g."], rows, "llrrrl")
    if same_campaigns:
        lines += ["", "Unchanged: " + ", ".join(f"`{c.name}` {c.after}" for c in same_campaigns) + "."]
    if diff.notes:
        lines.append("")
        lines += [f"> {_md(note)}" for note in diff.notes]
    return "\n".join(lines) + "\n"


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def to_json(diff: RuleSetDiff) -> dict:
    """The diff as plain JSON values (member keys as they are in the result rows)."""

    def matrix(m: Matrix) -> dict:
        return {"name": m.name, "status": m.status or None, "changed": m.changed,
                "from_values": m.from_values, "to_values": m.to_values,
                "cells": [{"from": a, "to": b, "count": n, "examples": [_json_value(k) for k in m.examples.get((a, b), [])]}
                          for a in m.from_values for b in m.to_values if (n := m.counts.get((a, b), 0))]}

    return {
        "old": {"label": diff.old_label, "commit": diff.old_commit},
        "new": {"label": diff.new_label, "commit": diff.new_commit},
        "as_of": diff.as_of.isoformat(),
        "members": diff.members,
        "members_changed": diff.members_changed,
        "rules": [{"address": c.address, "kind": c.kind, "old": c.old, "new": c.new} for c in diff.rules],
        "tiers": matrix(diff.tiers) if diff.tiers else None,
        "classes": [matrix(m) for m in diff.classes],
        "segments": [{"name": s.name, "status": s.status or None, "before": s.before, "after": s.after,
                      "delta": s.delta, "entered": s.entered, "left": s.left,
                      "entered_examples": [_json_value(k) for k in s.entered_examples],
                      "left_examples": [_json_value(k) for k in s.left_examples]} for s in diff.segments],
        "campaigns": [{"name": c.name, "status": c.status or None, "channel": c.channel, "before": c.before,
                       "after": c.after, "delta": c.delta, "gained": c.gained, "lost": c.lost,
                       "gained_examples": [_json_value(k) for k in c.gained_examples],
                       "lost_examples": [_json_value(k) for k in c.lost_examples]} for c in diff.campaigns],
        "notes": diff.notes,
    }


def render(diff: RuleSetDiff, fmt: str) -> str:
    """The diff as `text`, `markdown` or `json`."""
    if fmt == "json":
        return json.dumps(to_json(diff), ensure_ascii=False, indent=2)
    if fmt == "markdown":
        return render_markdown(diff)
    return render_text(diff)

