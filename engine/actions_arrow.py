"""actions.jsonl a campaign at a time: Arrow columns formatted into the lines Action.to_json writes.

On the DuckDB engine a campaign's actions are columns (member keys, messages, points, the
values its condition read, idempotency keys). Each column is formatted with the same
vectorised encoders as result rows (results_arrow.json_texts), the constant parts of the
line (campaign, channel, send_at, coupon) once, and the lines are joined element-wise. The
bytes are campaigns.Action.to_json's for the same action.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from . import types as t
from .results_arrow import _write_strings, json_strings, json_texts
from .state import LedgerEntry


@dataclass(frozen=True)
class ValueColumn:
    """One entry of an action's `values`: its name, its SQL (a sqlglot tree) over the campaign
    rows, its type."""

    name: str
    sql: exp.Expression
    type: t.Type
    # Where true, the value is the integer 0 (`max(gap, 0)` in Python keeps an int 0, which
    # JSON writes as `0` even where the column is a float).
    zero_when: exp.Expression | None = None


@dataclass
class ActionBlock:
    """One campaign's actions of this run, in member-key order."""

    campaign: str
    channel: str
    send_at: dt.datetime
    capped: bool  # counted by frequency caps
    members: pa.Array  # the member keys, typed as in result rows
    keys: pa.Array  # idempotency keys
    lines: pa.Array  # the actions.jsonl lines, each with its newline

    def __len__(self) -> int:
        return len(self.lines)

    def write(self, out) -> None:
        _write_strings(out, self.lines)

    def ledger_entries(self, as_of: dt.datetime) -> Iterator[LedgerEntry]:
        members = self.members.cast(pa.string()).to_pylist()
        for key, member in zip(self.keys.to_pylist(), members):
            yield LedgerEntry(key, self.campaign, member, self.channel, as_of, self.send_at, self.capped)


def _constant(value: object, tz: ZoneInfo) -> str:
    from .campaigns import dumps

    return dumps(value, tz)


def action_lines(campaign: str, channel: str, send_at: dt.datetime, coupon: str | None, tz: ZoneInfo, *,
                 members: pa.Array, member_type: t.Type, keys: pa.Array, messages: pa.Array | None,
                 points: tuple[pa.Array, t.Type] | None,
                 values: list[tuple[str, pa.Array]]) -> pa.Array:
    """The actions.jsonl lines: `{"campaign":…,"member":…,"channel":…,"send_at":…,"message":…,
    "coupon":…,"points":…,"values":{…},"key":…}` and a newline, for each member.

    Args:
        values: (name, JSON texts) in the order the Python engine fills the action's values.
    """
    n = len(members)
    parts: list = ['{"campaign":' + _constant(campaign, tz) + ',"member":', json_texts(members, member_type, tz),
                   ',"channel":' + _constant(channel, tz) + ',"send_at":' + _constant(send_at, tz) + ',"message":']
    parts.append("null" if messages is None else pc.fill_null(json_strings(messages), "null"))
    parts.append(',"coupon":' + _constant(coupon, tz) + ',"points":')
    parts.append("null" if points is None else json_texts(points[0], points[1], tz))
    parts.append(',"values":{')
    for i, (name, texts) in enumerate(values):
        parts.append(("," if i else "") + _constant(name, tz) + ":")
        parts.append(texts)
    parts.append('},"key":')
    parts.append(json_strings(keys))
    parts.append("}\n")
    merged: list = []
    for part in parts:  # neighbouring constants as one
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if not n:
        return pa.array([], pa.string())
    return pc.binary_join_element_wise(*merged, "")


def value_texts(array: pa.Array, column: ValueColumn, zero: pa.Array | None, tz: ZoneInfo) -> pa.Array:
    """A value column as JSON texts (`null` for null), with `0` where `zero` is true."""
    texts = json_texts(array, column.type, tz)
    if zero is not None:
        texts = pc.if_else(pc.fill_null(zero, False), "0", texts)
    return texts
