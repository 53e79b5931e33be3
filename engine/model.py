"""The rule-file shape (SPEC §2) as pydantic models; expressions stay text here.

Unknown keys are errors (extra="forbid"). `check.py` parses and types the
expression strings; `load.py` keeps where every value came from.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

Number = Union[StrictInt, Decimal]
ParamValue = Union[StrictBool, StrictInt, Decimal, StrictStr]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TableSchema(Strict):
    """One snapshot table: `member` (one row per member) or an event table."""

    key: StrictStr = Field(description="column holding the member key")
    time: StrictStr | None = Field(None, description="event time column (event tables only)")
    fields: dict[Name, StrictStr] = Field(description="column → type, e.g. amount: decimal, birthday: date?")


class Metric(Strict):
    expr: StrictStr = Field(description="the expression")
    description: StrictStr | None = None
    output: StrictBool = Field(False, description="write this metric into every result row")


class TierLevel(Strict):
    name: Name
    min: Number = Field(description="the `by` value from which a member holds this tier")
    description: StrictStr | None = None


class Downgrade(Strict):
    when: StrictStr = Field(description="when true, a member may move down to the tier their value earns")


class Forecast(Strict):
    earned: StrictStr = Field(description="growth earned over `window`, e.g. sum(orders.amount within 90d)")
    window: StrictStr = Field(description="the window of `earned`, a duration such as 90d")


class Tiers(Strict):
    by: StrictStr = Field(description="the numeric value tiers are thresholds on, e.g. growth_value")
    levels: list[TierLevel] = Field(min_length=1, description="low to high; the highest satisfied wins")
    current: StrictStr | None = Field(None, description="member field holding the tier they have now")
    downgrade: Downgrade | None = Field(None, description="without it a member never moves down")
    forecast: Forecast | None = Field(None, description="predicts days to reach the next tier")


class ClassCase(Strict):
    name: Name
    when: StrictStr | None = None
    else_: Literal[True] | None = Field(None, alias="else")
    description: StrictStr | None = None


class Segment(Strict):
    when: StrictStr
    description: StrictStr | None = None


Channel = Literal["sms", "email", "push", "in_app", "coupon", "points"]


class Action(Strict):
    channel: Channel
    template: StrictStr | None = Field(None, description="Jinja2 text, rendered in a sandbox")
    coupon: StrictStr | None = Field(None, description="coupon code or kind, for channel coupon")
    points: StrictStr | None = Field(None, description="expression: points to grant, for channel points")


class Campaign(Strict):
    when: StrictStr | None = Field(None, description="condition on the member")
    on: StrictStr | None = Field(None, description="transition trigger, e.g. tier_up, entered vip")
    requires: StrictStr | list[StrictStr] | None = Field(None, description="consent field(s), all must be true")
    action: Action
    cooldown: StrictStr | None = Field(None, description="duration before the same member gets it again")
    priority: StrictInt = 0
    group: StrictStr | None = Field(None, description="exclusive group: one action per member per group")
    description: StrictStr | None = None
    window: CampaignWindow | None = Field(None, description="when the campaign is live (dates, weekdays, hours)")
    budget: Annotated[StrictInt, Field(ge=0)] | None = Field(None, description="at most this many actions per run")
    transactional: StrictBool = Field(False, description="a service message: not counted by, nor held back by, "
                                                         "the frequency caps")


class CampaignWindow(Strict):
    """When a campaign is live, read against `as_of` in the rule set's timezone."""

    from_: StrictStr | None = Field(None, alias="from", description="first day, e.g. '@2026-11-09' (quoted in YAML)")
    to: StrictStr | None = Field(None, description="last day, included")
    weekdays: list[StrictInt | StrictStr] | None = Field(None, description="1 (Monday) … 7 (Sunday), or mon … sun")
    hours: StrictStr | None = Field(None, description="local time of day, e.g. '10:00-22:00' (end excluded)")


class Cap(Strict):
    """A frequency cap: at most `max` actions to one member within any `per`."""

    max: Annotated[StrictInt, Field(ge=1)]
    per: StrictStr = Field(description="a duration, e.g. 1d or 7d")


class ChannelRules(Strict):
    max_length: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="characters a message may have (validate warns when a template can exceed it)")
    placeholder_length: Annotated[StrictInt, Field(ge=0)] = Field(
        20, description="characters assumed for each {{ … }} when estimating a message's length")
    quiet_hours: StrictStr | None = Field(
        None, description="local time range such as '21:00-09:00'; actions due inside wait until it ends")
    caps: list[Cap] = Field(default_factory=list, description="frequency caps on this channel, across campaigns")


class Delivery(Strict):
    """Rules every campaign's actions pass before they go out."""

    channels: dict[Channel, ChannelRules] = Field(default_factory=dict)
    caps: list[Cap] = Field(default_factory=list, description="frequency caps across all channels and campaigns")
    budget: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None, description="at most this many actions per run, highest priority first")


class RuleSet(Strict):
    """A whole rule set: every *.yaml of a directory, merged."""

    version: Literal[1] = 1
    timezone: StrictStr = "UTC"
    schema_: dict[Name, TableSchema] = Field(alias="schema")
    params: dict[Name, ParamValue] = Field(default_factory=dict)
    metrics: dict[Name, Union[StrictStr, Metric]] = Field(default_factory=dict)
    tiers: Tiers | None = None
    classes: dict[Name, list[ClassCase]] = Field(default_factory=dict)
    segments: dict[Name, Union[StrictStr, Segment]] = Field(default_factory=dict)
    campaigns: dict[Name, Campaign] = Field(default_factory=dict)
    delivery: Delivery | None = None

    @field_validator("schema_")
    @classmethod
    def _has_member_table(cls, tables: dict[str, TableSchema]) -> dict[str, TableSchema]:
        if "member" not in tables:
            raise ValueError("the schema needs a 'member' table (one row per member)")
        return tables


SECTIONS = tuple(field.alias or name for name, field in RuleSet.model_fields.items())


def _text_as_written(node: object) -> None:
    """validate reads `points: 100` or `when: true` as the text written (shape.py), so wherever a
    rule file takes plain text the schema accepts a YAML number or bool too."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not ({"enum", "pattern", "format", "const"} & node.keys()):
            node["type"] = ["string", "number", "boolean"]
        for value in node.values():
            _text_as_written(value)
    elif isinstance(node, list):
        for value in node:
            _text_as_written(value)


def json_schema() -> dict:
    """JSON Schema of one rule file (every section optional, since files are merged)."""
    schema = RuleSet.model_json_schema(by_alias=True)
    _text_as_written(schema)
    schema.pop("required", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "memberrules rule file"
    return schema
