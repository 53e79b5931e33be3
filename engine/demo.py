"""A deterministic demo snapshot (member, orders, events, benefits) for trying rules out.

Every value comes from one `random.Random(seed)`, drawn in a fixed order, so the
same arguments give byte-identical files. Members follow lifecycle personas
(potential, new, active, silent, dormant, churned) so that every class of the
default rule pack has members in it; a few rows lie after `as_of`, as in a
snapshot exported a day or two after the evaluation instant.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from .snapshot import paused_gc

TABLES = ("member", "orders", "events", "benefits")

MEMBER_COLUMNS = ("member_id", "name", "registered_at", "birthday", "growth_value", "tier",
                  "opted_in_sms", "opted_in_push", "opted_in_email", "tags", "city")
ORDER_COLUMNS = ("member_id", "order_id", "placed_at", "amount", "category")
EVENT_COLUMNS = ("member_id", "at", "type")
BENEFIT_COLUMNS = ("member_id", "granted_at", "kind", "expires_at", "claimed_at", "used_at")

DEFAULT_AS_OF = datetime(2026, 11, 1, tzinfo=timezone(timedelta(hours=8)))
TIER_THRESHOLDS = (("normal", 0), ("silver", 1000), ("gold", 5000), ("platinum", 20000))

_OFFSET = 8 * 3600  # every timestamp is written with +08:00
_DAY = 86400
_UNIX_ORDINAL = date(1970, 1, 1).toordinal()

_PERSONAS = ("potential", "new", "active", "silent", "dormant", "churned")
_PERSONA_WEIGHTS = (14, 6, 28, 16, 14, 22)
# Days since the last order, per persona; `new` members register within 30 days.
_LAST_ORDER_DAYS = {"active": (0, 30), "silent": (31, 90), "dormant": (91, 180), "churned": (181, 900)}
_ORDER_SCALE = {"new": 0.6, "active": 3.0, "silent": 1.8, "dormant": 1.4, "churned": 1.2}
_EVENT_SCALE = {"potential": 1.0, "new": 3.0, "active": 8.0, "silent": 2.0, "dormant": 1.0, "churned": 0.5}

_CATEGORIES = ("apparel", "beauty", "grocery", "electronics", "home", "baby", "sports", "books")
_CATEGORY_CUMULATIVE = tuple(itertools.accumulate((22, 18, 20, 8, 12, 8, 7, 5)))
_EVENT_TYPES = ("read", "login", "search", "add_to_cart", "share", "interact", "refer")
_EVENT_CUMULATIVE = tuple(itertools.accumulate((35, 30, 15, 10, 4, 5, 1)))
_BENEFIT_KINDS = ("free_shipping", "coupon_20", "coupon_50", "double_points", "birthday_gift",
                  "priority_support", "lounge_access")
_BENEFIT_VALIDITY_DAYS = (7, 30, 90, 180, 365)
_CITIES = ("上海", "北京", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆",
           "苏州", "天津", "Hong Kong", "Singapore", "Kuala Lumpur")
_CITY_CUMULATIVE = tuple(itertools.accumulate((16, 14, 10, 10, 9, 8, 6, 6, 5, 5, 4, 3, 2, 1, 1)))
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高欧阳司马"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
          "明", "超", "秀英", "晓燕", "子涵", "浩然", "欣怡", "梓萱", "雨桐", "一诺")
_LATIN_FIRST = ("Emma", "Lucas", "Olivia", "Noah", "Mia", "Leo", "Chloe", "Ethan", "Grace",
                "Ryan", "Zoe", "Kevin", "Ivy", "Jason", "Amy")
_LATIN_LAST = ("Li", "Wang", "Chen", "Tan", "Lim", "Ng", "Wong", "Smith", "Lee", "Ho")


def write_demo_snapshot(out_dir: Path, members: int = 10_000, seed: int = 7,
                        as_of: datetime = DEFAULT_AS_OF, fmt: str = "csv") -> dict[str, Path]:
    """Write member, orders, events and benefits tables into `out_dir`.

    Args:
        out_dir: created if missing; existing demo files in it are overwritten.
        members: number of member rows (ids M000001 …).
        seed: the only source of randomness.
        as_of: the evaluation instant the data is shaped around; a naive value is read as +08:00.
        fmt: "csv" (UTF-8, `\\n` line ends, lists as JSON arrays) or "parquet" (typed columns).

    Returns:
        table name → path of the file written.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     sorted(write_demo_snapshot(Path(out), members=3))
    ['benefits', 'events', 'member', 'orders']
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    if members < 0:
        raise ValueError("members must be 0 or more")
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone(timedelta(hours=8)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _write_csv if fmt == "csv" else _write_parquet
    with paused_gc():
        tables = _generate(members, random.Random(seed), int(as_of.timestamp()))
        return {name: writer(out_dir / f"{name}.{fmt}", name, tables[name]) for name in TABLES}


# Generation. Timestamps are int seconds since the epoch, dates int days since
# 1970-01-01, amounts int cents, until a writer formats them.

def _generate(n: int, rng: random.Random, as_of: int) -> dict[str, dict[str, list]]:
    rand, choices, expo = rng.random, rng.choices, rng.expovariate

    def randint(low: int, high: int) -> int:
        # rng.randint costs ten times as much, and this runs millions of times.
        return low + int(rand() * (high - low + 1))

    width = max(6, len(str(n)))
    personas = choices(_PERSONAS, _PERSONA_WEIGHTS, k=n)
    three_years = 3 * 365 * _DAY

    member: dict[str, list] = {c: [] for c in MEMBER_COLUMNS}
    orders: dict[str, list] = {"member_id": [], "placed_at": [], "amount": [], "category": []}
    events: dict[str, list] = {"member_id": [], "at": [], "type": []}
    benefits: dict[str, list] = {c: [] for c in BENEFIT_COLUMNS}
    this_year = (date(1970, 1, 1) + timedelta(seconds=as_of + _OFFSET)).year

    for i in range(n):
        member_id = f"M{i + 1:0{width}d}"
        persona = personas[i]
        if persona == "new":
            registered = as_of - randint(3600, 30 * _DAY)
        else:
            # Skewed towards recent sign-ups, as programmes grow.
            registered = as_of - 31 * _DAY - int((three_years - 31 * _DAY) * rand() ** 1.4)

        # Orders: the last one fixes the persona, the others fall between sign-up and it.
        order_times: list[int] = []
        if persona in _LAST_ORDER_DAYS or (persona == "new" and rand() < 0.5):
            low, high = _LAST_ORDER_DAYS.get(persona, (0, 0))
            last = as_of - randint(low * _DAY, high * _DAY + _DAY - 1) if persona != "new" \
                else randint(registered, as_of - 60)
            last = max(last, registered + 60)
            count = min(400, int(rng.paretovariate(1.3) * _ORDER_SCALE[persona]))
            order_times = [last] + [randint(registered, last) for _ in range(max(count - 1, 0))]
            if persona == "active" and rand() < 0.04:
                order_times.append(as_of + randint(60, 2 * _DAY))  # exported after as_of
        spend = 0
        for placed in order_times:
            cents = max(100, min(5_000_000, int(math.exp(rng.gauss(4.8, 0.9)) * 100)))
            if placed <= as_of:
                spend += cents
            orders["member_id"].append(member_id)
            orders["placed_at"].append(placed)
            orders["amount"].append(cents)
        orders["category"] += choices(_CATEGORIES, cum_weights=_CATEGORY_CUMULATIVE, k=len(order_times))

        # Events: around the last sign of life; seed users share and refer a lot.
        last_seen = max(order_times) if order_times else randint(registered, as_of)
        last_seen = min(last_seen, as_of)
        n_events = int(expo(1.0) * _EVENT_SCALE[persona] * 2)
        first_seen = max(registered, last_seen - 120 * _DAY)
        times = [randint(first_seen, last_seen) for _ in range(n_events)]
        kinds = choices(_EVENT_TYPES, cum_weights=_EVENT_CUMULATIVE, k=n_events)
        if persona == "active" and rand() < 0.01:
            extra = randint(8, 40)
            times += [randint(max(registered, as_of - 90 * _DAY), as_of) for _ in range(extra)]
            kinds += choices(("share", "refer"), (4, 1), k=extra)
        if persona in ("active", "new") and rand() < 0.05:
            times.append(as_of + randint(60, 2 * _DAY))
            kinds.append("login")
        events["member_id"] += [member_id] * len(times)
        events["at"] += times
        events["type"] += kinds

        growth = spend // 100 + randint(0, 300)
        earned = _tier_index(growth)
        held: int | None = earned
        roll = rand()
        if roll < 0.08 and earned > 0:
            held = earned - 1  # upgrade not applied yet
        elif roll < 0.13 and earned < 3 and registered < as_of - 365 * _DAY:
            held = earned + 1  # kept until the yearly review
        elif roll < 0.15:
            held = None

        # Benefits: more for higher tiers; some expire within three days of as_of.
        n_benefits = randint(0, 1 + (held or 0))
        if rand() < 0.05:
            n_benefits += 1
        for b in range(n_benefits):
            closing = b == n_benefits - 1 and rand() < 0.3
            if closing:
                expires = as_of + randint(3600, 3 * _DAY)
                granted = expires - randint(7, 90) * _DAY
            else:
                granted = randint(max(registered, as_of - 365 * _DAY), as_of)
                if rand() < 0.01:
                    granted = as_of + randint(60, _DAY)  # exported after as_of
                expires = granted + _pick(rand, _BENEFIT_VALIDITY_DAYS) * _DAY
            claimed = used = None
            if not closing and rand() < 0.6:
                claimed = min(granted + randint(0, 10 * _DAY), expires)
                if rand() < 0.5:
                    used = randint(claimed, expires)
            benefits["member_id"].append(member_id)
            benefits["granted_at"].append(granted)
            benefits["kind"].append(_pick(rand, _BENEFIT_KINDS))
            benefits["expires_at"].append(expires)
            benefits["claimed_at"].append(claimed)
            benefits["used_at"].append(used)

        tags = []
        if (held is not None and held >= 2 and rand() < 0.5) or rand() < 0.02:
            tags.append("vip")
        if persona == "new":
            tags.append("new")
        if rand() < 0.08:
            tags.append("student")
        if rand() < 0.01:
            tags.append("wholesale")

        birth_year = this_year - randint(18, 65)
        birthday = None if rand() < 0.15 else \
            date(birth_year, 1, 1).toordinal() - _UNIX_ORDINAL + randint(0, 364)
        member["member_id"].append(member_id)
        member["name"].append(_name(rand))
        member["registered_at"].append(registered)
        member["birthday"].append(birthday)
        member["growth_value"].append(growth)
        member["tier"].append(None if held is None else TIER_THRESHOLDS[held][0])
        member["opted_in_sms"].append(rand() < 0.6)
        member["opted_in_push"].append(rand() < 0.7)
        member["opted_in_email"].append(rand() < 0.4)
        member["tags"].append(tags)
        member["city"].append(choices(_CITIES, cum_weights=_CITY_CUMULATIVE)[0])

    # Exports list orders and events by time; ties keep generation order, so this is deterministic.
    _sort_by(orders, "placed_at")
    orders["order_id"] = [f"O{k:09d}" for k in range(1, len(orders["placed_at"]) + 1)]
    _sort_by(events, "at")
    return {"member": member, "orders": orders, "events": events, "benefits": benefits}


def _tier_index(growth: int) -> int:
    index = 0
    for k, (_, minimum) in enumerate(TIER_THRESHOLDS):
        if growth >= minimum:
            index = k
    return index


def _pick(rand, options: tuple | str):
    return options[int(rand() * len(options))]


def _name(rand) -> str:
    if rand() < 0.7:
        surname = _pick(rand, _SURNAMES)
        if surname in "欧司" and rand() < 0.5:
            surname = "欧阳" if surname == "欧" else "司马"
        return surname + _pick(rand, _GIVEN)
    return f"{_pick(rand, _LATIN_FIRST)} {_pick(rand, _LATIN_LAST)}"


def _sort_by(table: dict[str, list], column: str) -> None:
    order = sorted(range(len(table[column])), key=table[column].__getitem__)
    for name, values in table.items():
        table[name] = [values[k] for k in order]


# Writers. Both build typed Arrow columns first, so CSV text and Parquet values agree.

_COLUMNS = {"member": MEMBER_COLUMNS, "orders": ORDER_COLUMNS, "events": EVENT_COLUMNS,
            "benefits": BENEFIT_COLUMNS}
_TIMESTAMP_COLUMNS = {"registered_at", "placed_at", "at", "granted_at", "expires_at", "claimed_at", "used_at"}


def _arrow_column(name: str, values: list):
    import pyarrow as pa
    import pyarrow.compute as pc

    if name in _TIMESTAMP_COLUMNS:
        return pc.multiply(pa.array(values, pa.int64()), 1_000_000).cast(pa.timestamp("us", tz="+08:00"))
    if name == "amount":
        return pa.array([f"{v // 100}.{v % 100:02d}" for v in values], pa.string()).cast(pa.decimal128(12, 2))
    if name == "birthday":
        return pa.array(values, pa.int32()).cast(pa.date32())
    if name == "tags":
        return pa.array(values, pa.list_(pa.string()))
    if name.startswith("opted_in_"):
        return pa.array(values, pa.bool_())
    if name == "growth_value":
        return pa.array(values, pa.int64())
    return pa.array(values, pa.string())


def _csv_text(name: str, values: list) -> list:
    """The cells of one column; null is an empty cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if name in _TIMESTAMP_COLUMNS:
        # Local wall time as a naive timestamp, then the fixed offset as text: Arrow's cast to
        # string is several times faster than its strftime, which resolves the zone per value.
        local = pc.add(pa.array(values, pa.int64()), _OFFSET).cast(pa.timestamp("s"))
        text = pc.replace_substring(local.cast(pa.string()), " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(text, "+08:00", "").fill_null("").to_pylist()
    if name == "amount":
        return [f"{v // 100}.{v % 100:02d}" for v in values]
    if name == "birthday":
        return pa.array(values, pa.int32()).cast(pa.date32()).cast(pa.string()).fill_null("").to_pylist()
    if name == "tags":
        cache: dict[tuple, str] = {}
        for key in map(tuple, values):
            if key not in cache:
                cache[key] = json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))
        return [cache[tuple(tags)] for tags in values]
    if name.startswith("opted_in_"):
        return ["true" if v else "false" for v in values]
    return ["" if v is None else v for v in values]


def _write_csv(path: Path, table: str, columns: dict[str, list]) -> Path:
    names = _COLUMNS[table]
    texts = [_csv_text(name, columns[name]) for name in names]
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(zip(*texts))
    return path


def _write_parquet(path: Path, table: str, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _COLUMNS[table]
    pq.write_table(pa.table([_arrow_column(name, columns[name]) for name in names], names=list(names)), path)
    return path
