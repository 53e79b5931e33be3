"""The demo snapshot: deterministic, readable by read_snapshot, and shaped like real programme data."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from memberrules.engine.demo import DEFAULT_AS_OF, TIER_THRESHOLDS, write_demo_snapshot
from memberrules.engine.model import TableSchema
from memberrules.engine.snapshot import read_snapshot

SH = ZoneInfo("Asia/Shanghai")
AS_OF = DEFAULT_AS_OF.astimezone(SH)
RULES_SCHEMA = Path(__file__).parent.parent / "rules" / "schema.yaml"

DEMO_SCHEMA = {
    "member": TableSchema(key="member_id", fields={
        "member_id": "string", "name": "string", "registered_at": "timestamp", "birthday": "date?",
        "growth_value": "int", "tier": "string?", "opted_in_sms": "bool", "opted_in_push": "bool",
        "opted_in_email": "bool", "tags": "list<string>", "city": "string"}),
    "orders": TableSchema(key="member_id", time="placed_at", fields={
        "member_id": "string", "order_id": "string", "placed_at": "timestamp", "amount": "decimal",
        "category": "string"}),
    "events": TableSchema(key="member_id", time="at", fields={"member_id": "string", "at": "timestamp",
                                                              "type": "string"}),
    "benefits": TableSchema(key="member_id", time="granted_at", fields={
        "member_id": "string", "granted_at": "timestamp", "kind": "string", "expires_at": "timestamp",
        "claimed_at": "timestamp?", "used_at": "timestamp?"}),
}


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("demo_csv")
    write_demo_snapshot(directory, members=3000)
    return directory


@pytest.fixture(scope="module")
def demo_snapshot(demo_csv):
    return read_snapshot(demo_csv, DEMO_SCHEMA, "Asia/Shanghai", AS_OF, on_bad_row="fail")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_arguments_give_byte_identical_files(tmp_path, fmt):
    first = write_demo_snapshot(tmp_path / "a", members=500, fmt=fmt)
    second = write_demo_snapshot(tmp_path / "b", members=500, fmt=fmt)
    assert sorted(first) == ["benefits", "events", "member", "orders"]
    for table in first:
        assert first[table].name == f"{table}.{fmt}"
        assert first[table].read_bytes() == second[table].read_bytes(), table


def test_another_seed_gives_other_data(tmp_path):
    first = write_demo_snapshot(tmp_path / "a", members=200, seed=7)
    second = write_demo_snapshot(tmp_path / "b", members=200, seed=8)
    assert first["orders"].read_bytes() != second["orders"].read_bytes()


def test_row_counts_and_columns(demo_csv):
    with open(demo_csv / "member.csv", encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == list(DEMO_SCHEMA["member"].fields)
    assert len(rows) == 3001
    assert [row[0] for row in rows[1:4]] == ["M000001", "M000002", "M000003"]
    for table in ("orders", "events", "benefits"):
        with open(demo_csv / f"{table}.csv", encoding="utf-8", newline="") as stream:
            header = next(csv.reader(stream))
        assert header == list(DEMO_SCHEMA[table].fields)


def test_timestamps_are_written_with_the_china_offset(demo_csv):
    text = (demo_csv / "orders.csv").read_text(encoding="utf-8").splitlines()[1]
    assert re.search(r",\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00,", text)


def test_demo_reads_back_without_rejects(demo_snapshot):
    stats = demo_snapshot.stats
    assert stats.rejected == 0 and demo_snapshot.rejects == []
    assert stats.rows_read["member"] == len(demo_snapshot.members) == 3000
    assert stats.events_unknown_member == {"orders": 0, "events": 0, "benefits": 0}
    for table in ("orders", "events", "benefits"):
        kept = sum(map(len, demo_snapshot.events[table].values()))
        assert stats.rows_read[table] == kept + stats.events_after_as_of[table]


def test_parquet_demo_reads_back_equal_to_csv_demo(tmp_path, demo_snapshot):
    write_demo_snapshot(tmp_path, members=3000, fmt="parquet")
    from_parquet = read_snapshot(tmp_path, DEMO_SCHEMA, "Asia/Shanghai", AS_OF)
    assert from_parquet == demo_snapshot


def test_demo_writes_the_default_rule_pack_schema():
    document = yaml.safe_load(RULES_SCHEMA.read_text(encoding="utf-8"))
    pack = {name: TableSchema(**table) for name, table in document["schema"].items()}
    assert pack == DEMO_SCHEMA


def test_demo_has_every_lifecycle_shape(demo_snapshot):
    members, events = demo_snapshot.members, demo_snapshot.events
    orders = events["orders"]
    recency = Counter()
    for member in members:
        rows = orders.get(member["member_id"])
        if not rows:
            recency["never ordered"] += 1
            continue
        days = (AS_OF - rows[-1]["placed_at"]).days
        recency["active" if days <= 30 else "silent" if days <= 90 else "dormant" if days <= 180 else "churned"] += 1
    for shape in ("never ordered", "active", "silent", "dormant", "churned"):
        assert recency[shape] >= 100, recency
    new = [m for m in members if m["registered_at"] > AS_OF - timedelta(days=30)]
    assert len(new) >= 50
    registered = [m["registered_at"] for m in members]
    assert AS_OF - min(registered) > timedelta(days=2 * 365)


def test_demo_order_counts_are_heavy_tailed_and_amounts_exact(demo_snapshot):
    counts = sorted(len(rows) for rows in demo_snapshot.events["orders"].values())
    median = counts[len(counts) // 2]
    assert counts[-1] >= 10 * median
    amounts = [row["amount"] for rows in demo_snapshot.events["orders"].values() for row in rows]
    assert all(amount.as_tuple().exponent == -2 and amount > 0 for amount in amounts)
    assert len(set(amounts)) > len(amounts) // 10


def test_demo_tiers_follow_growth_value_with_some_lagging(demo_snapshot):
    def earned(growth: int) -> str:
        return [name for name, minimum in TIER_THRESHOLDS if growth >= minimum][-1]

    held = Counter(m["tier"] for m in demo_snapshot.members)
    assert {"normal", "silver", "gold", "platinum", None} <= set(held)
    lagging = [m for m in demo_snapshot.members if m["tier"] is not None and m["tier"] != earned(m["growth_value"])]
    matching = [m for m in demo_snapshot.members if m["tier"] == earned(m["growth_value"])]
    assert 0 < len(lagging) < len(matching)


def test_demo_has_rows_after_as_of_birthdays_names_and_seed_users(demo_snapshot):
    members, events, stats = demo_snapshot.members, demo_snapshot.events, demo_snapshot.stats
    assert stats.events_after_as_of["orders"] > 0 and stats.events_after_as_of["events"] > 0
    birthdays = [m["birthday"] for m in members]
    assert 0 < birthdays.count(None) < len(birthdays) // 2
    names = [m["name"] for m in members]
    assert any(re.search(r"[\u4e00-\u9fff]", name) for name in names)
    assert any(re.fullmatch(r"[A-Za-z]+ [A-Za-z]+", name) for name in names)
    assert any("vip" in m["tags"] for m in members) and any(m["tags"] == [] for m in members)
    shares = Counter(member for member, rows in events["events"].items() for row in rows
                     if row["type"] == "share" and row["at"] > AS_OF - timedelta(days=90))
    assert sum(1 for count in shares.values() if count >= 5) >= 3
    assert {row["type"] for rows in events["events"].values() for row in rows} == {
        "read", "login", "search", "add_to_cart", "share", "interact", "refer"}


def test_demo_has_benefits_expiring_within_three_days(demo_snapshot):
    expiring = [row for rows in demo_snapshot.events["benefits"].values() for row in rows
                if row["used_at"] is None and AS_OF < row["expires_at"] <= AS_OF + timedelta(days=3)]
    assert len(expiring) >= 20
    for rows in demo_snapshot.events["benefits"].values():
        for row in rows:
            assert row["expires_at"] > row["granted_at"]
            if row["used_at"] is not None:
                assert row["claimed_at"] is not None and row["claimed_at"] <= row["used_at"]


def test_zero_members_writes_empty_tables(tmp_path):
    write_demo_snapshot(tmp_path, members=0)
    snapshot = read_snapshot(tmp_path, DEMO_SCHEMA, "Asia/Shanghai", AS_OF)
    assert snapshot.members == [] and snapshot.stats.rows_read == {
        "member": 0, "orders": 0, "events": 0, "benefits": 0}


def test_naive_as_of_is_china_time(tmp_path):
    naive = write_demo_snapshot(tmp_path / "naive", members=50, as_of=datetime(2026, 11, 1))
    aware = write_demo_snapshot(tmp_path / "aware", members=50)
    assert naive["orders"].read_bytes() == aware["orders"].read_bytes()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_demo_snapshot(tmp_path, members=1, fmt="xlsx")
