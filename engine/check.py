"""A loaded rule set → a CheckedRuleSet: names, types, nulls, cycles, tiers, classes.

Only a CheckedRuleSet reaches an engine, so unchecked text is never evaluated.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from . import ast
from . import types as t
from .check_expr import ExprChecker, Symbol, Table
from .delivery import (Cap, CampaignWindow, ChannelPolicy, CheckedDelivery, parse_day, parse_time_range,
                       parse_weekday, template_problems)
from .errors import Diagnostic, Span, did_you_mean, sort_key
from .load import LoadedRuleSet, load_rule_set
from .model import Metric, RuleSet, Segment
from .parse import parse_expr, text_locator
from .shape import validate_shape
from .templates import check_template

RESERVED = {"as_of": "the evaluation instant", "tier": "the tier", "next_tier": "the next tier",
            "tier_gap": "the gap to the next tier", "current_tier": "the tier held before this run"}


@dataclass(frozen=True)
class Param:
    name: str
    value: object
    type: t.Type


@dataclass(frozen=True)
class CheckedMetric:
    name: str
    expr: ast.Expr
    output: bool

    @property
    def type(self) -> t.Type:
        return self.expr.type  # type: ignore[return-value]


@dataclass(frozen=True)
class TierLevel:
    name: str
    min: int | Decimal


@dataclass(frozen=True)
class CheckedTiers:
    by: ast.Expr
    levels: tuple[TierLevel, ...]
    current: str | None = None
    downgrade: ast.Expr | None = None
    forecast_earned: ast.Expr | None = None
    forecast_window: dt.timedelta | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(level.name for level in self.levels)


@dataclass(frozen=True)
class ClassCase:
    name: str
    when: ast.Expr | None  # None: the `else` case


@dataclass(frozen=True)
class ClassList:
    name: str
    cases: tuple[ClassCase, ...]

    @property
    def has_else(self) -> bool:
        return bool(self.cases) and self.cases[-1].when is None


@dataclass(frozen=True)
class Trigger:
    """A transition against the member's previous state (`on:`)."""

    kind: str  # tier_up, tier_down, tier_at_risk, first_order, entered, left, class_change
    subject: str | None = None  # segment or class list
    from_value: str | None = None
    to_value: str | None = None


@dataclass(frozen=True)
class CheckedCampaign:
    name: str
    when: ast.Expr | None
    trigger: Trigger | None
    requires: tuple[str, ...]
    channel: str
    template: str | None
    coupon: str | None
    points: ast.Expr | None
    cooldown: dt.timedelta | None
    priority: int
    group: str | None
    window: CampaignWindow | None = None
    budget: int | None = None
    transactional: bool = False


@dataclass
class CheckedRuleSet:
    """Everything an engine needs, typed; `order` lists per-member items in dependency order."""

    model: RuleSet
    timezone: str
    tables: dict[str, Table]
    params: dict[str, Param]
    metrics: dict[str, CheckedMetric]
    tiers: CheckedTiers | None
    classes: dict[str, ClassList]
    segments: dict[str, ast.Expr]
    campaigns: dict[str, CheckedCampaign]
    order: list[tuple[str, str]]  # ("metric", name) | ("tier", "tier") | ("class", name) | ("segment", name)
    sources: dict[str, str] = field(default_factory=dict)
    delivery: CheckedDelivery = field(default_factory=CheckedDelivery)
    # `count(<table>)`, typed, for every event table: the DuckDB engine counts each member's rows
    # with them (the summary's rows of unknown members), the first_order trigger uses orders'.
    row_counts: dict[str, ast.Expr] = field(default_factory=dict)

    @property
    def order_count(self) -> ast.Expr | None:
        """`count(orders)` when the schema has an `orders` table: the first_order trigger compares
        it with the previous run's count."""
        return self.row_counts.get("orders")

    @property
    def member(self) -> Table:
        return self.tables["member"]

    @property
    def event_tables(self) -> dict[str, Table]:
        return {name: table for name, table in self.tables.items() if name != "member"}


@dataclass
class CheckResult:
    rule_set: CheckedRuleSet | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str]
    files: list[str]

    @property
    def ok(self) -> bool:
        return self.rule_set is not None


def param_value_from_text(text: str) -> tuple[object, t.Type]:
    """A param written as text (YAML string or --param k=v): a duration, date or number if it
    reads as one, else the string itself."""
    result = parse_expr(text.strip())
    expr = result.expr
    if isinstance(expr, ast.Literal) and expr.kind not in ("null",):
        return expr.value, t.Type(expr.kind)
    if isinstance(expr, ast.Unary) and expr.op == "-" and isinstance(expr.operand, ast.Literal) \
            and expr.operand.kind in ("int", "decimal"):
        return -expr.operand.value, t.Type(expr.operand.kind)  # type: ignore[operator]
    return text, t.STRING


def _param_from_yaml(value: object) -> tuple[object, t.Type]:
    if isinstance(value, bool):
        return value, t.BOOL
    if isinstance(value, int):
        return value, t.INT
    if isinstance(value, Decimal):
        return value, t.DECIMAL
    return param_value_from_text(str(value))


_TRIGGER_PATTERNS = (
    (re.compile(r"^(tier_up|tier_down|tier_at_risk|first_order)$"), lambda m: Trigger(m[1])),
    (re.compile(r"^(entered|left)\s+(\w+)$"), lambda m: Trigger(m[1], m[2])),
    (re.compile(r"^(?:class\s+)?(\w+)\s+(?:from\s+(\w+))?\s*(?:to\s+(\w+))?$"),
     lambda m: Trigger("class_change", m[1], m[2], m[3]) if (m[2] or m[3]) else None),
)


def parse_trigger(text: str) -> Trigger | None:
    """`tier_up`, `tier_down`, `tier_at_risk`, `first_order`, `entered vip`, `left vip`,
    `class lifecycle from silent to dormant` (either end may be left out)."""
    for pattern, build in _TRIGGER_PATTERNS:
        match = pattern.match(text.strip())
        if match:
            return build(match)
    return None


class _RuleSetChecker:
    def __init__(self, loaded: LoadedRuleSet, model: RuleSet, overrides: dict[str, str]):
        self.loaded = loaded
        self.model = model
        self.overrides = overrides
        self.diagnostics: list[Diagnostic] = []
        self.tables: dict[str, Table] = {}
        self.symbols: dict[str, Symbol] = {}
        self.params: dict[str, Param] = {}
        self.metric_exprs: dict[str, ast.Expr] = {}
        self.metric_state: dict[str, str] = {}
        self.deps: dict[tuple[str, str], set[str]] = {}
        self.tier_by: ast.Expr | None = None

    # -- positions -----------------------------------------------------------------------------

    def span(self, *path) -> Span | None:
        return self.loaded.positions.span(path)

    def key_span(self, *path) -> Span | None:
        return self.loaded.positions.key_span(path)

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None,
              severity: str = "error", related: tuple = ()) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, severity, hint, related))

    def parse(self, text: str, *path) -> ast.Expr | None:
        origins = self.loaded.positions.origins
        locate = self.loaded.positions.locator(path) if path in origins else text_locator(text)
        result = parse_expr(text, locate)
        self.diagnostics.extend(result.diagnostics)
        return result.expr

    def expr_checker(self) -> ExprChecker:
        return ExprChecker(self.lookup, lambda: list(self.symbols.values()), self.tables, self.diagnostics)

    # -- schema and names ----------------------------------------------------------------------

    def check_timezone(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.model.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            guess = did_you_mean(self.model.timezone, sorted(zoneinfo.available_timezones()))
            self.error("MR311", f"unknown timezone '{self.model.timezone}'", self.span("timezone"),
                       hint=f"did you mean '{guess}'?" if guess else "use an IANA name such as Asia/Shanghai")

    def check_schema(self) -> None:
        for table_name, table in self.model.schema_.items():
            fields: dict[str, t.Type] = {}
            for field_name, type_text in table.fields.items():
                try:
                    fields[field_name] = t.parse_type(type_text)
                except t.TypeSyntaxError as problem:
                    word = type_text.strip().rstrip("?")
                    guess = did_you_mean(word, list(t.SCALAR_KINDS) + [f"list<{k}>" for k in t.SCALAR_KINDS])
                    self.error("MR310", str(problem), self.span("schema", table_name, "fields", field_name),
                               hint=f"did you mean '{guess}'?" if guess else "types: " + ", ".join(t.type_names()))
                    fields[field_name] = t.ERROR
            if table.key not in fields:
                self.error("MR312", f"the key '{table.key}' of {table_name} is not one of its fields",
                           self.span("schema", table_name, "key"),
                           hint=_maybe(table.key, fields) or f"add {table.key}: string to fields")
            if table_name == "member" and table.time is not None:
                self.error("MR312", "the member table has one row per member and no time column",
                           self.key_span("schema", table_name, "time"))
            if table_name != "member":
                if table.time is None:
                    self.error("MR312", f"event table '{table_name}' needs a time column",
                               self.key_span("schema", table_name), hint="add time: <its timestamp field>")
                elif table.time not in fields:
                    self.error("MR312", f"the time column '{table.time}' of {table_name} is not one of its fields",
                               self.span("schema", table_name, "time"), hint=_maybe(table.time, fields))
                elif fields[table.time].kind not in ("timestamp", "date", "error"):
                    self.error("MR312", f"the time column '{table.time}' must be a timestamp, not "
                                        f"{fields[table.time]}", self.span("schema", table_name, "fields", table.time))
            self.tables[table_name] = Table(table_name, table.key, table.time, fields)

    def define(self, symbol: Symbol, key_path: tuple) -> None:
        existing = self.symbols.get(symbol.name)
        if existing is not None:
            related = (("first defined here", existing.span),) if existing.span else ()
            self.error("MR402", f"'{symbol.name}' is defined twice: as {_kind(existing)} and as {_kind(symbol)}",
                       symbol.span, related=related, hint="names are unique across the rule set")
            return
        if symbol.name in RESERVED and symbol.ref not in RESERVED:
            self.error("MR402", f"'{symbol.name}' is a built-in name ({RESERVED[symbol.name]})", symbol.span,
                       hint="choose another name")
            return
        self.symbols[symbol.name] = symbol

    def define_names(self) -> None:
        member = self.tables.get("member")
        current = self.model.tiers.current if self.model.tiers else None
        if member:
            for name, type_ in member.fields.items():
                span = self.span("schema", "member", "fields", name)
                if name == current:
                    # SPEC §2 stores the held tier in a field usually named `tier`, while `tier` in
                    # expressions is the tier of this run: the held one is read as `current_tier`.
                    self.define(Symbol("current_tier", "current_tier", type_, span), ())
                    continue
                self.define(Symbol(name, "member", type_, span), ())
        self.define(Symbol("as_of", "as_of", t.TIMESTAMP), ())
        for name, raw in self.model.params.items():
            value, type_ = _param_from_yaml(raw)
            if name in self.overrides:
                value, type_ = self.override(name, type_)
            self.params[name] = Param(name, value, type_)
            self.define(Symbol(name, "param", type_, self.key_span("params", name)), ())
        for name in self.overrides:
            if name not in self.model.params:
                self.error("MR403", f"--param {name}: the rule set has no param '{name}'", None,
                           hint=_maybe(name, self.model.params) or "params: " + ", ".join(self.model.params))
        for name in self.model.metrics:
            # The type is known once the expression is checked: resolved lazily by lookup().
            self.define(Symbol(name, "metric", t.ERROR, self.key_span("metrics", name)), ())
        tiers = self.model.tiers
        if tiers is not None:
            names = tuple(level.name for level in tiers.levels)
            self.define(Symbol("tier", "tier", t.STRING, self.key_span("tiers"), names), ())
            self.define(Symbol("next_tier", "next_tier", t.STRING.with_null(), self.key_span("tiers"), names), ())
            self.define(Symbol("tier_gap", "tier_gap", t.ERROR, self.key_span("tiers")), ())
        for name, cases in self.model.classes.items():
            has_else = bool(cases) and cases[-1].else_ is not None
            values = tuple(case.name for case in cases)
            self.define(Symbol(name, "class", t.STRING.with_null(not has_else), self.key_span("classes", name),
                               values), ())
        for name in self.model.segments:
            self.define(Symbol(name, "segment", t.BOOL, self.key_span("segments", name)), ())

    def override(self, name: str, declared: t.Type) -> tuple[object, t.Type]:
        value, type_ = param_value_from_text(self.overrides[name])
        if declared.kind == "decimal" and type_.kind == "int":
            return Decimal(value), t.DECIMAL  # type: ignore[arg-type]
        if declared.kind == "bool" and str(value).lower() in ("true", "false"):
            return str(value).lower() == "true", t.BOOL
        if type_.kind != declared.kind:
            self.error("MR403", f"--param {name}={self.overrides[name]}: expected {declared}, got {type_}", None)
            return value, declared
        return value, type_

    def lookup(self, name: str) -> Symbol | None:
        symbol = self.symbols.get(name)
        if symbol is None:
            return None
        if symbol.ref == "metric" and self.metric_state.get(name) != "done":
            self.check_metric(name)
            symbol = self.symbols[name]
        elif symbol.ref == "tier_gap" and symbol.type.is_error and self.tier_by is not None:
            symbol = Symbol(name, "tier_gap", self.tier_by.type.with_null(), symbol.span)  # type: ignore[union-attr]
            self.symbols[name] = symbol
        return symbol

    # -- metrics -------------------------------------------------------------------------------

    def check_metric(self, name: str) -> None:
        if self.metric_state.get(name) is not None:  # in progress: a cycle, reported by order()
            return
        self.metric_state[name] = "checking"
        raw = self.model.metrics[name]
        text, path = (raw.expr, ("metrics", name, "expr")) if isinstance(raw, Metric) else (raw, ("metrics", name))
        expr = self.parse(text, *path)
        checker = self.expr_checker()
        typed = checker.check(expr) if expr is not None else None
        self.deps[("metric", name)] = checker.references
        if typed is not None:
            self.metric_exprs[name] = typed
            symbol = self.symbols[name]
            self.symbols[name] = Symbol(name, "metric", typed.type, symbol.span)  # type: ignore[arg-type]
        self.metric_state[name] = "done"

    def check_condition(self, text: str, item: tuple[str, str], *path, warn_nulls: bool = True) -> ast.Expr | None:
        typed = self.check_value(text, item, *path)
        if typed is None:
            return None
        kind = typed.type.kind  # type: ignore[union-attr]
        if kind not in ("bool", "error", "null"):
            self.error("MR313", f"a condition must be true or false, got {typed.type}", typed.span,
                       hint="compare it, e.g. x > 0")
        elif warn_nulls and typed.type.nullable and kind == "bool" and not _has_error(typed):  # type: ignore
            culprits = _nullable_names(typed)
            named = " or ".join(f"'{n}'" for n in culprits) or "a value"
            self.error("MR413", f"this condition is unknown when {named} is null, and then does not match",
                       typed.span, severity="warning",
                       hint=f"say what null means: ({culprits[0] if culprits else 'x'} ?? …) or "
                            f"'{culprits[0] if culprits else 'x'} is not null and …'")
        return typed

    def check_value(self, text: str, item: tuple[str, str], *path) -> ast.Expr | None:
        expr = self.parse(text, *path)
        if expr is None:
            return None
        checker = self.expr_checker()
        typed = checker.check(expr)
        self.deps.setdefault(item, set()).update(checker.references)
        return typed

    # -- tiers, classes, segments, campaigns ---------------------------------------------------

    def check_tiers(self) -> CheckedTiers | None:
        tiers = self.model.tiers
        if tiers is None:
            return None
        by = self.check_value(tiers.by, ("tier", "tier"), "tiers", "by")
        self.tier_by = by
        if by is not None and not by.type.is_error and not by.type.is_numeric:  # type: ignore[union-attr]
            self.error("MR404", f"tiers.by must be a number, got {by.type}", by.span)
        levels: list[TierLevel] = []
        seen: dict[str, int] = {}
        for i, level in enumerate(tiers.levels):
            if level.name in seen:
                self.error("MR405", f"tier '{level.name}' is listed twice", self.span("tiers", "levels", i, "name"))
            seen[level.name] = i
            if levels and level.min <= levels[-1].min:
                self.error("MR406", f"tier thresholds must increase: {level.name} (min {level.min}) is not above "
                                    f"{levels[-1].name} (min {levels[-1].min})",
                           self.span("tiers", "levels", i, "min"),
                           hint="list levels from low to high, each min above the one before")
            levels.append(TierLevel(level.name, level.min))
        if tiers.current is not None:
            current = self.tables.get("member", Table("member", "", None, {})).fields.get(tiers.current)
            if current is None:
                self.error("MR301", f"tiers.current: '{tiers.current}' is not a member field",
                           self.span("tiers", "current"), hint=_maybe(tiers.current, self.tables["member"].fields
                                                                      if "member" in self.tables else {}))
            elif current.kind not in ("string", "error"):
                self.error("MR404", f"tiers.current must be a string field, got {current}",
                           self.span("tiers", "current"))
        downgrade = None
        if tiers.downgrade is not None:
            downgrade = self.check_condition(tiers.downgrade.when, ("tier", "tier"), "tiers", "downgrade", "when")
            if tiers.current is None:
                self.error("MR404", "tiers.downgrade needs tiers.current (the tier members hold now)",
                           self.key_span("tiers", "downgrade"))
        earned = window = None
        if tiers.forecast is not None:
            earned = self.check_value(tiers.forecast.earned, ("tier", "tier"), "tiers", "forecast", "earned")
            if earned is not None and not earned.type.is_error and not earned.type.is_numeric:  # type: ignore
                self.error("MR404", f"tiers.forecast.earned must be a number, got {earned.type}", earned.span)
            window = self.duration(tiers.forecast.window, "tiers", "forecast", "window")
        return CheckedTiers(by, tuple(levels), tiers.current, downgrade, earned, window)  # type: ignore[arg-type]

    def duration(self, text: str, *path) -> dt.timedelta | None:
        expr = self.parse(text, *path)
        if expr is None:
            return None
        if isinstance(expr, ast.Name) and expr.name in self.params and self.params[expr.name].type.kind == "duration":
            return self.params[expr.name].value  # type: ignore[return-value]
        if not (isinstance(expr, ast.Literal) and expr.kind == "duration"):
            self.error("MR307", f"expected a duration such as 30d, got '{text}'", self.span(*path))
            return None
        if expr.value <= dt.timedelta(0):  # type: ignore[operator]
            self.error("MR307", "the duration must be longer than zero", self.span(*path))
        return expr.value  # type: ignore[return-value]

    def check_classes(self) -> dict[str, ClassList]:
        result: dict[str, ClassList] = {}
        for list_name, cases in self.model.classes.items():
            checked: list[ClassCase] = []
            names: dict[str, int] = {}
            if not cases:
                self.error("MR407", f"class list '{list_name}' has no cases", self.key_span("classes", list_name))
            for i, case in enumerate(cases):
                path = ("classes", list_name, i)
                if case.name in names:
                    self.error("MR405", f"class '{case.name}' is listed twice in {list_name}", self.span(*path, "name"))
                names[case.name] = i
                if (case.when is None) == (case.else_ is None):
                    self.error("MR408", f"class '{case.name}' needs exactly one of 'when:' or 'else: true'",
                               self.span(*path))
                    continue
                if case.else_ is not None:
                    if i != len(cases) - 1:
                        self.error("MR409", f"the 'else' case '{case.name}' must be the last of {list_name}",
                                   self.key_span(*path, "else"),
                                   hint="cases after it could never match; move it to the end")
                    checked.append(ClassCase(case.name, None))
                    continue
                when = self.check_condition(case.when, ("class", list_name), *path, "when")  # type: ignore[arg-type]
                if when is not None:
                    checked.append(ClassCase(case.name, when))
            result[list_name] = ClassList(list_name, tuple(checked))
        return result

    def check_segments(self) -> dict[str, ast.Expr]:
        result: dict[str, ast.Expr] = {}
        for name, raw in self.model.segments.items():
            text, path = (raw.when, ("segments", name, "when")) if isinstance(raw, Segment) else (raw, ("segments", name))
            when = self.check_condition(text, ("segment", name), *path)
            if when is not None:
                result[name] = when
        return result

    def check_campaigns(self) -> dict[str, CheckedCampaign]:
        result: dict[str, CheckedCampaign] = {}
        member_fields = self.tables["member"].fields if "member" in self.tables else {}
        for name, campaign in self.model.campaigns.items():
            path = ("campaigns", name)
            item = ("campaign", name)
            if campaign.when is None and campaign.on is None:
                self.error("MR410", f"campaign '{name}' needs 'when:' (a condition) or 'on:' (a transition)",
                           self.key_span(*path))
            when = self.check_condition(campaign.when, item, *path, "when") if campaign.when else None
            trigger = None
            if campaign.on is not None:
                trigger = parse_trigger(campaign.on)
                if trigger is None:
                    self.error("MR414", f"unknown trigger '{campaign.on}'", self.span(*path, "on"),
                               hint="triggers: tier_up, tier_down, tier_at_risk, first_order, entered SEGMENT, "
                                    "left SEGMENT, "
                                    "class LIST from A to B")
                else:
                    self.check_trigger(trigger, self.span(*path, "on"))
            requires = (campaign.requires,) if isinstance(campaign.requires, str) else tuple(campaign.requires or ())
            for i, consent in enumerate(requires):
                consent_type = member_fields.get(consent)
                consent_path = (*path, "requires") if isinstance(campaign.requires, str) else (*path, "requires", i)
                if consent_type is None:
                    self.error("MR301", f"requires: '{consent}' is not a member field", self.span(*consent_path),
                               hint=_maybe(consent, member_fields) or "name a bool consent field such as opted_in_sms")
                elif consent_type.kind not in ("bool", "error"):
                    self.error("MR302", f"requires: '{consent}' must be a bool consent field, got {consent_type}",
                               self.span(*consent_path))
            points = None
            if campaign.action.points is not None:
                points = self.check_value(campaign.action.points, item, *path, "action", "points")
                if points is not None and not points.type.is_error and points.type.kind != "int":  # type: ignore
                    self.error("MR302", f"points must be a whole number, got {points.type}", points.span)
            if campaign.action.channel == "points" and campaign.action.points is None:
                self.error("MR410", f"campaign '{name}' on channel points needs action.points",
                           self.key_span(*path, "action"))
            if campaign.action.template is not None:
                self.diagnostics.extend(check_template(
                    campaign.action.template, self.template_names(), member_fields,
                    self.loaded.positions.locator((*path, "action", "template"))))
                self.diagnostics.extend(template_problems(
                    campaign.action.template, campaign.action.channel, self.delivery.policy(campaign.action.channel),
                    self.loaded.positions.locator((*path, "action", "template"))))
            cooldown = self.duration(campaign.cooldown, *path, "cooldown") if campaign.cooldown else None
            result[name] = CheckedCampaign(name, when, trigger, requires, campaign.action.channel,
                                           campaign.action.template, campaign.action.coupon, points, cooldown,
                                           campaign.priority, campaign.group, self.campaign_window(name),
                                           campaign.budget, campaign.transactional)
        return result

    def check_trigger(self, trigger: Trigger, span: Span | None) -> None:
        if trigger.kind in ("tier_up", "tier_down", "tier_at_risk") and self.model.tiers is None:
            self.error("MR414", f"'{trigger.kind}' needs a tiers section", span)
        if trigger.kind == "tier_at_risk" and self.model.tiers is not None and self.model.tiers.downgrade is None:
            self.error("MR414", "'tier_at_risk' needs tiers.downgrade: without it nobody ever loses a tier", span)
        if trigger.kind == "first_order" and "orders" not in self.model.schema_:
            self.error("MR414", "'first_order' needs an event table named 'orders' in the schema", span)
        if trigger.kind in ("entered", "left") and trigger.subject not in self.model.segments:
            self.error("MR301", f"unknown segment '{trigger.subject}'", span,
                       hint=_maybe(trigger.subject or "", self.model.segments))
        if trigger.kind == "class_change":
            cases = self.model.classes.get(trigger.subject or "")
            if cases is None:
                self.error("MR301", f"unknown class list '{trigger.subject}'", span,
                           hint=_maybe(trigger.subject or "", self.model.classes))
                return
            names = [case.name for case in cases]
            for value in (trigger.from_value, trigger.to_value):
                if value is not None and value not in names:
                    self.error("MR309", f"'{value}' is not a class of {trigger.subject} ({', '.join(names)})", span,
                               hint=_maybe(value, names))

    def template_names(self) -> set[str]:
        names = {name for name, symbol in self.symbols.items() if symbol.ref != "member"}
        return names | {"member", "gap", "campaign", "segments", "classes", "keep_gap", "earned_tier", "previous"}

    # -- delivery (consent, caps, quiet hours, budget) and campaign windows ----------------------

    def time_range(self, text: str, *path) -> object:
        try:
            return parse_time_range(text)
        except ValueError as problem:
            self.error("MR420", str(problem), self.span(*path), hint="write local times as HH:MM-HH:MM")
            return None

    def caps(self, caps, channel: str | None, *path) -> tuple[Cap, ...]:
        result = []
        for i, cap in enumerate(caps):
            per = self.duration(cap.per, *path, i, "per")
            if per is not None:
                result.append(Cap(cap.max, per, channel))
        return tuple(result)

    def check_delivery(self) -> CheckedDelivery:
        delivery = self.model.delivery
        if delivery is None:
            return CheckedDelivery()
        channels = {}
        for channel, rules in delivery.channels.items():
            path = ("delivery", "channels", channel)
            quiet = self.time_range(rules.quiet_hours, *path, "quiet_hours") if rules.quiet_hours else None
            channels[channel] = ChannelPolicy(rules.max_length, rules.placeholder_length, quiet,  # type: ignore[arg-type]
                                              self.caps(rules.caps, channel, *path, "caps"))
        return CheckedDelivery(channels, self.caps(delivery.caps, None, "delivery", "caps"), delivery.budget)

    def campaign_window(self, name: str) -> CampaignWindow | None:
        window = self.model.campaigns[name].window
        if window is None:
            return None
        path = ("campaigns", name, "window")
        days = []
        for key, text in (("from", window.from_), ("to", window.to)):
            try:
                days.append(parse_day(text) if text is not None else None)
            except ValueError:
                days.append(None)
                self.error("MR420", f"window.{key}: '{text}' is not a date", self.span(*path, key),
                           hint="write a day as '@2026-11-09' (quoted: YAML reserves a leading @)")
        if days[0] is not None and days[1] is not None and days[1] < days[0]:
            self.error("MR420", f"the window ends ({days[1]}) before it starts ({days[0]})", self.span(*path, "to"))
        weekdays = None
        if window.weekdays is not None:
            weekdays = set()
            for i, value in enumerate(window.weekdays):
                try:
                    weekdays.add(parse_weekday(value))
                except ValueError as problem:
                    self.error("MR420", str(problem), self.span(*path, "weekdays", i))
        hours = self.time_range(window.hours, *path, "hours") if window.hours is not None else None
        return CampaignWindow(days[0], days[1], frozenset(weekdays) if weekdays is not None else None,
                              hours)  # type: ignore[arg-type]

    def row_counts(self) -> dict[str, ast.Expr]:
        checker = ExprChecker(self.lookup, lambda: [], self.tables, [])
        counts = {}
        for name in self.tables:
            expr = parse_expr(f"count({name})").expr if name != "member" else None
            # A table name the grammar cannot read as one (quotes, spaces) gets no count.
            if isinstance(expr, ast.EventAggregate) and expr.table == name and expr.field is None:
                counts[name] = checker.check(expr)
        return counts

    # -- order ---------------------------------------------------------------------------------

    def item_of(self, name: str) -> tuple[str, str] | None:
        symbol = self.symbols.get(name)
        if symbol is None:
            return None
        if symbol.ref == "metric":
            return ("metric", name)
        if symbol.ref in ("tier", "next_tier", "tier_gap"):
            return ("tier", "tier")
        if symbol.ref in ("class", "segment"):
            return (symbol.ref, name)
        return None

    def order(self) -> list[tuple[str, str]]:
        """Per-member items in dependency order (declaration order among equals); cycles are errors."""
        items = [("metric", n) for n in self.model.metrics]
        if self.model.tiers is not None:
            items.append(("tier", "tier"))
        items += [("class", n) for n in self.model.classes] + [("segment", n) for n in self.model.segments]
        edges = {item: [d for d in (self.item_of(n) for n in sorted(self.deps.get(item, ()))) if d] for item in items}
        done: list[tuple[str, str]] = []
        state: dict[tuple[str, str], str] = {}
        reported: set[frozenset] = set()

        def visit(item, trail):
            if state.get(item) == "done":
                return
            if state.get(item) == "visiting":
                cycle = trail[trail.index(item):] + [item]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    self.error("MR401", "a cycle: " + " → ".join(name for _, name in cycle),
                               self.item_span(item), hint="a value cannot depend on itself; break the loop")
                return
            state[item] = "visiting"
            for dep in edges.get(item, ()):
                visit(dep, trail + [item])
            state[item] = "done"
            done.append(item)

        for item in items:
            visit(item, [])
        return done

    def item_span(self, item: tuple[str, str]) -> Span | None:
        section = {"metric": "metrics", "class": "classes", "segment": "segments", "tier": "tiers"}[item[0]]
        return self.key_span(section) if item[0] == "tier" else self.key_span(section, item[1])

    def run(self) -> CheckedRuleSet | None:
        self.check_timezone()
        self.check_schema()
        self.define_names()
        tiers = self.check_tiers()
        for name in self.model.metrics:
            self.check_metric(name)
        classes = self.check_classes()
        segments = self.check_segments()
        self.delivery = self.check_delivery()
        campaigns = self.check_campaigns()
        order = self.order()
        if any(d.is_error for d in self.diagnostics):
            return None
        metrics = {}
        for name, raw in self.model.metrics.items():
            output = raw.output if isinstance(raw, Metric) else False
            metrics[name] = CheckedMetric(name, self.metric_exprs[name], output)
        return CheckedRuleSet(self.model, self.model.timezone, self.tables, self.params, metrics, tiers, classes,
                              segments, campaigns, order, self.loaded.sources, self.delivery, self.row_counts())


def _kind(symbol: Symbol) -> str:
    from .check_expr import KIND_WORDS

    return "a " + KIND_WORDS[symbol.ref] if symbol.ref not in RESERVED else RESERVED[symbol.ref]


def _maybe(word: str, candidates) -> str | None:
    guess = did_you_mean(word, list(candidates))
    return f"did you mean '{guess}'?" if guess else None


def _has_error(expr: ast.Expr) -> bool:
    """Whether a sub-expression already failed (its diagnostic says enough)."""
    return any(node.type is not None and node.type.is_error for node in ast.walk(expr))


def _nullable_names(expr: ast.Expr) -> list[str]:
    names: list[str] = []
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and node.type is not None and node.type.nullable \
                and node.type.kind != "error" and node.name not in names and node.ref != "event":
            names.append(node.name)
        elif isinstance(node, (ast.EventAggregate, ast.PopulationAggregate, ast.Ranking, ast.Call)) \
                and node.type is not None and node.type.nullable:
            text = ast.to_source(node)
            if text not in names:
                names.append(text)
    return names


def check_loaded(loaded: LoadedRuleSet, params: dict[str, str] | None = None) -> CheckResult:
    """Check a loaded rule set; `params` are --param overrides as text."""
    diagnostics = list(loaded.diagnostics)
    model = None
    if not any(d.is_error for d in diagnostics):
        model, shape_problems = validate_shape(loaded)
        diagnostics += shape_problems
    rule_set = None
    if model is not None:
        checker = _RuleSetChecker(loaded, model, params or {})
        try:
            rule_set = checker.run()
        except RecursionError:
            checker.error("MR206", "the rule set nests too deeply to check", None)
        diagnostics += checker.diagnostics
    diagnostics.sort(key=sort_key)
    if any(d.is_error for d in diagnostics):
        rule_set = None
    return CheckResult(rule_set, diagnostics, loaded.sources, loaded.files)


def check_rule_set(directory: Path, params: dict[str, str] | None = None, base: Path | None = None) -> CheckResult:
    """Load, shape-check and type-check a rule-set directory.

    >>> result = check_rule_set(Path("rules"))  # doctest: +SKIP
    >>> result.ok
    True
    """
    return check_loaded(load_rule_set(directory, base), params)
