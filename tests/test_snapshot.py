"""Reading snapshots: types, nulls, encodings, bad rows, counts, and the same data in three formats."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberrules.engine.errors import DiagnosticError
from memberrules.engine.model import TableSchema
from memberrules.engine.snapshot import (
    MAX_ROW_ERRORS,
    RejectedRow,
    find_table_files,
    parse_value,
    read_snapshot,
)
from memberrules.engine.types import parse_type

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"
SH = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2026, 11, 1, tzinfo=SH)

ALL_TYPES = {
    "member": TableSchema(key="member_id", fields={
        "member_id": "string", "name": "string", "joined": "timestamp", "birthday": "date?", "points": "int",
        "tier": "string?", "sms": "bool", "tags": "list<string>", "balance": "decimal", "ratio": "float",
        "grace": "duration", "lucky": "list<int>"}),
    "orders": TableSchema(key="member_id", time="at",
                          fields={"at": "timestamp", "amount": "decimal", "note": "string?"}),
}
SIMPLE = {
    "member": TableSchema(key="member_id", fields={"member_id": "string", "name": "string", "joined": "timestamp",
                                                   "points": "int", "balance": "decimal"}),
    "orders": TableSchema(key="member_id", time="at", fields={"at": "timestamp", "amount": "decimal"}),
}


def read(data_dir: Path, schema=SIMPLE, on_bad_row: str = "fail", as_of: datetime = AS_OF):
    return read_snapshot(data_dir, schema, "Asia/Shanghai", as_of, on_bad_row=on_bad_row)


def write(directory: Path, name: str, text: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def problems(error: pytest.ExceptionInfo[DiagnosticError]) -> list[tuple[str, str, int, int]]:
    return [(d.code, Path(d.span.file).name, d.span.line, d.span.col) for d in error.value.diagnostics]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(SH)


# Values


@pytest.mark.parametrize(("text", "type_text", "expected"), [
    ("42", "int", 42),
    (" -7 ", "int", -7),
    ("19.90", "decimal", Decimal("19.90")),
    ("1e3", "decimal", Decimal("1E+3")),
    ("-.5", "float", -0.5),
    ("plain text", "string", "plain text"),
    ("", "string", ""),
    ("", "string?", None),
    ("TRUE", "bool", True),
    ("0", "bool", False),
    ("2026-02-28", "date", date(2026, 2, 28)),
    ("", "date?", None),
    ("2026-11-01T09:30:00+08:00", "timestamp", datetime(2026, 11, 1, 9, 30, tzinfo=SH)),
    ("2026-11-01 09:30", "timestamp", datetime(2026, 11, 1, 9, 30, tzinfo=SH)),
    ("2026-11-01T01:30:00Z", "timestamp", datetime(2026, 11, 1, 9, 30, tzinfo=SH)),
    ("2026-11-01T00:00:00-05:00", "timestamp", datetime(2026, 11, 1, 13, 0, tzinfo=SH)),
    ("30d", "duration", timedelta(days=30)),
    ("1d6h30m", "duration", timedelta(days=1, hours=6, minutes=30)),
    ("2w", "duration", timedelta(weeks=2)),
    ("P1DT2H", "duration", timedelta(days=1, hours=2)),
    ('["vip","新"]', "list<string>", ["vip", "新"]),
    ("[1, 2]", "list<int>", [1, 2]),
    ('["2026-01-02"]', "list<date>", [date(2026, 1, 2)]),
    ("[0.1]", "list<decimal>", [Decimal("0.1")]),
    ("[null]", "list<string?>", [None]),
])
def test_parse_value_reads_each_type(text, type_text, expected):
    value = parse_value(text, parse_type(type_text), SH)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_value_returns_timestamps_in_the_rule_set_timezone():
    value = parse_value("2026-11-01T00:00:00Z", parse_type("timestamp"), SH)
    assert value.tzinfo is SH
    assert value.hour == 8


@pytest.mark.parametrize(("text", "type_text", "reason"), [
    ("", "int", "missing value"),
    ("", "timestamp", "missing value"),
    ("12.5", "int", "'12.5' is not an integer"),
    ("1_000", "int", "is not an integer"),
    ("NaN", "decimal", "'NaN' is not a decimal number"),
    ("abc", "decimal", "is not a decimal number"),
    ("inf", "float", "is not a number"),
    ("1e999", "float", "too large"),
    ("yes", "bool", "is not a bool"),
    ("2026-13-01", "date", "is not a date"),
    ("2026-11-01T10:00", "date", "is not a date"),
    ("yesterday", "timestamp", "is not a timestamp"),
    ("2026-02-30T00:00:00", "timestamp", "is not a timestamp"),
    ("30", "duration", "is not a duration"),
    ("P", "duration", "is not a duration"),
    ("vip", "list<string>", "is not a JSON array"),
    ('{"a": 1}', "list<string>", "is not a JSON array"),
    ("[1]", "list<string>", "list item 1: expected a string"),
    ("[null]", "list<string>", "list item 1 is null"),
    ("[1.5]", "list<int>", "list item 1: '1.5' is not an integer"),
])
def test_parse_value_explains_bad_text(text, type_text, reason):
    with pytest.raises(ValueError, match=None) as error:
        parse_value(text, parse_type(type_text), SH)
    assert reason in str(error.value)


def test_decimals_stay_exact_in_every_format(tmp_path):
    csv_dir, jsonl_dir, parquet_dir = tmp_path / "csv", tmp_path / "jsonl", tmp_path / "parquet"
    write(csv_dir, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,0.1\n")
    write(csv_dir, "orders.csv", "member_id,at,amount\nM1,2026-10-01,0.1\nM1,2026-10-02,0.2\n")
    write(jsonl_dir, "member.jsonl", '{"member_id":"M1","name":"A","joined":"2026-10-01","points":1,"balance":0.1}\n')
    write(jsonl_dir, "orders.jsonl", '{"member_id":"M1","at":"2026-10-01","amount":0.1}\n'
                                     '{"member_id":"M1","at":"2026-10-02","amount":0.2}\n')
    parquet_dir.mkdir()
    pq.write_table(pa.table({"member_id": ["M1"], "name": ["A"], "joined": ["2026-10-01"], "points": [1],
                             "balance": pa.array([Decimal("0.1")], pa.decimal128(12, 2))}),
                   parquet_dir / "member.parquet")
    pq.write_table(pa.table({"member_id": ["M1", "M1"], "at": ["2026-10-01", "2026-10-02"],
                             "amount": pa.array([Decimal("0.10"), Decimal("0.20")], pa.decimal128(12, 2))}),
                   parquet_dir / "orders.parquet")
    for directory in (csv_dir, jsonl_dir, parquet_dir):
        orders = read(directory).events["orders"]["M1"]
        amounts = [row["amount"] for row in orders]
        assert all(type(amount) is Decimal for amount in amounts)
        assert amounts[0] + amounts[1] == Decimal("0.3")


def test_parquet_float_column_for_a_decimal_is_a_column_error(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,0.1\n")
    pq.write_table(pa.table({"member_id": ["M1"], "at": ["2026-10-01"], "amount": pa.array([0.1], pa.float64())}),
                   tmp_path / "orders.parquet")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    (diagnostic,) = error.value.diagnostics
    assert diagnostic.code == "MR502"
    assert "'amount' is double" in diagnostic.message
    assert "decimal128" in diagnostic.hint


# Whole files


def test_reads_every_type_from_csv():
    snapshot = read(FIXTURES / "all_types", ALL_TYPES)
    alice, wang, doe = snapshot.members
    assert alice == {
        "member_id": "M001", "name": "Alice", "joined": datetime(2026, 10, 1, 9, 30, tzinfo=SH),
        "birthday": date(1990, 2, 28), "points": 10, "tier": "gold", "sms": True, "tags": ["vip", "new"],
        "balance": Decimal("19.90"), "ratio": 1.5, "grace": timedelta(days=30), "lucky": [7, 8]}
    assert wang["name"] == "王小明"
    assert wang["birthday"] is None and wang["tier"] is None and wang["tags"] == []
    assert wang["sms"] is False and wang["ratio"] == -2.0 and wang["grace"] == timedelta(hours=12)
    assert doe["name"] == "Doe, John" and doe["tags"] == ["新"] and doe["ratio"] == 1000.0
    assert doe["grace"] == timedelta(days=1, hours=2)


def test_naive_and_offset_timestamps_name_the_same_instant():
    snapshot = read(FIXTURES / "all_types", ALL_TYPES)
    joined = {m["member_id"]: m["joined"] for m in snapshot.members}
    # M001 has +08:00, M002 no offset (read in Asia/Shanghai), M003 Z.
    assert joined["M001"] == joined["M002"] == joined["M003"] == datetime(2026, 10, 1, 1, 30, tzinfo=timezone.utc)
    assert all(value.tzinfo is SH for value in joined.values())


def test_members_are_sorted_by_key():
    snapshot = read(FIXTURES / "all_types", ALL_TYPES)
    assert [m["member_id"] for m in snapshot.members] == ["M001", "M002", "M003"]


def test_events_are_sorted_by_time_then_file_order():
    snapshot = read(FIXTURES / "all_types", ALL_TYPES)
    notes = [row["note"] for row in snapshot.events["orders"]["M002"]]
    # 10:00+08:00 and 02:00Z are the same instant: the earlier line comes first.
    assert notes == ["second", "same instant as the row above", None]


def test_events_after_as_of_and_of_unknown_members_are_dropped_and_counted():
    snapshot = read(FIXTURES / "all_types", ALL_TYPES)
    stats = snapshot.stats
    assert stats.rows_read == {"member": 3, "orders": 6}
    assert stats.events_unknown_member == {"orders": 1}
    assert stats.events_after_as_of == {"orders": 1}
    assert "M999" not in snapshot.events["orders"]
    assert [row["amount"] for row in snapshot.events["orders"]["M001"]] == [Decimal("100")]


def test_event_at_exactly_as_of_is_kept(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv",
          "member_id,at,amount\nM1,2026-11-01T00:00:00+08:00,1\nM1,2026-11-01T00:00:01+08:00,2\n")
    snapshot = read(tmp_path)
    assert [row["amount"] for row in snapshot.events["orders"]["M1"]] == [Decimal("1")]
    assert snapshot.stats.events_after_as_of == {"orders": 1}


def test_naive_as_of_is_read_in_the_rule_set_timezone(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\nM1,2026-10-31T23:00:00+08:00,1\nM1,2026-10-31T17:00:00Z,2\n")
    snapshot = read(tmp_path, as_of=datetime(2026, 11, 1))
    assert [row["amount"] for row in snapshot.events["orders"]["M1"]] == [Decimal("1")]


def parquet_typed(directory: Path) -> None:
    """The all_types fixture with native Parquet types."""
    directory.mkdir(parents=True)
    joined = datetime(2026, 10, 1, 1, 30, tzinfo=timezone.utc)
    pq.write_table(pa.table({
        "member_id": ["M003", "M001", "M002"],
        "name": ["Doe, John", "Alice", "王小明"],
        "joined": pa.array([joined] * 3, pa.timestamp("ms", tz="Europe/London")),
        "birthday": pa.array([date(2000, 1, 1), date(1990, 2, 28), None], pa.date32()),
        "points": pa.array([-5, 10, 0], pa.int32()),
        "tier": ["silver", "gold", None],
        "sms": [True, True, False],
        "tags": pa.array([["新"], ["vip", "new"], []], pa.list_(pa.string())),
        "balance": pa.array([Decimal("0.20"), Decimal("19.90"), Decimal("0.10")], pa.decimal128(12, 2)),
        "ratio": pa.array([1000.0, 1.5, -2.0], pa.float64()),
        "grace": pa.array([timedelta(days=1, hours=2), timedelta(days=30), timedelta(hours=12)], pa.duration("s")),
        "lucky": pa.array([[1], [7, 8], []], pa.list_(pa.int16())),
    }), directory / "member.parquet")
    pq.write_table(pa.table({
        "member_id": ["M002", "M002", "M001", "M002", "M999", "M001"],
        # Naive timestamps: wall time in the rule set's timezone, as for text.
        "at": pa.array([datetime(2026, 10, 3, 10), datetime(2026, 10, 2, 10), datetime(2026, 10, 2, 10),
                        datetime(2026, 10, 2, 10), datetime(2026, 10, 2, 10), datetime(2026, 11, 2, 10)],
                       pa.timestamp("us")),
        "amount": pa.array([Decimal("0.1"), Decimal("0.2"), Decimal("100"), Decimal("0.3"), Decimal("1"),
                            Decimal("5")], pa.decimal128(10, 1)),
        "note": pa.array([None, "second", None, "same instant as the row above", "unknown member", "after as_of"]),
    }), directory / "orders.parquet")


def parquet_text(directory: Path) -> None:
    """The all_types CSV fixture stored as Parquet string columns."""
    directory.mkdir(parents=True)
    for table in ("member", "orders"):
        source = FIXTURES / "all_types" / f"{table}.csv"
        names = source.read_text(encoding="utf-8").splitlines()[0].split(",")
        data = pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False))
        pq.write_table(data, directory / f"{table}.parquet")


def test_csv_jsonl_and_parquet_give_equal_snapshots(tmp_path):
    from_csv = read(FIXTURES / "all_types", ALL_TYPES)
    from_jsonl = read(FIXTURES / "all_types_jsonl", ALL_TYPES)
    parquet_typed(tmp_path / "typed")
    parquet_text(tmp_path / "text")
    from_typed = read(tmp_path / "typed", ALL_TYPES)
    from_text = read(tmp_path / "text", ALL_TYPES)
    assert from_jsonl == from_csv
    assert from_typed == from_csv
    assert from_text == from_csv
    for snapshot in (from_jsonl, from_typed, from_text):
        for member in snapshot.members:
            assert member["joined"].tzinfo is SH
            assert type(member["points"]) is int and type(member["balance"]) is Decimal


def test_bom_crlf_quotes_and_chinese_text(tmp_path):
    text = ("member_id,name,joined,points,balance\r\n"
            'M1,"李雷, ""老李""\r\n第二行",2026-10-01T09:00:00+08:00,1,1.00\r\n'
            "\r\n"
            "M2,韩梅梅,2026-10-01T09:00:00+08:00,2,2.00\r\n")
    write(tmp_path, "member.csv", "\ufeff".encode() + text.encode("utf-8"))
    write(tmp_path, "orders.csv", "member_id,at,amount\r\n")
    snapshot = read(tmp_path)
    assert [m["member_id"] for m in snapshot.members] == ["M1", "M2"]
    assert snapshot.members[0]["name"] == '李雷, "老李"\r\n第二行'
    assert snapshot.members[1]["name"] == "韩梅梅"


def test_bom_does_not_hide_the_first_column_in_jsonl(tmp_path):
    write(tmp_path, "member.jsonl", "\ufeff".encode() + b'{"member_id":"M1","name":"A","joined":"2026-10-01",'
                                                      b'"points":1,"balance":1}\r\n')
    write(tmp_path, "orders.jsonl", b"")
    assert [m["member_id"] for m in read(tmp_path).members] == ["M1"]


def test_integer_member_keys_sort_numerically(tmp_path):
    schema = {"member": TableSchema(key="id", fields={"id": "int"}),
              "orders": TableSchema(key="id", time="at", fields={"at": "timestamp"})}
    write(tmp_path, "member.csv", "id\n10\n9\n100\n")
    write(tmp_path, "orders.csv", "id,at\n9,2026-10-01\n")
    snapshot = read(tmp_path, schema)
    assert [m["id"] for m in snapshot.members] == [9, 10, 100]
    assert list(snapshot.events["orders"]) == [9]


# Empty tables


def test_header_only_and_zero_byte_event_files_are_empty_tables(tmp_path):
    schema = {**SIMPLE, "events": TableSchema(key="member_id", time="at", fields={"at": "timestamp"})}
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    write(tmp_path, "events.jsonl", "")
    snapshot = read(tmp_path, schema)
    assert snapshot.events == {"orders": {}, "events": {}}
    assert snapshot.stats.rows_read == {"member": 1, "orders": 0, "events": 0}


def test_member_file_without_rows_gives_an_empty_snapshot(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\nM1,2026-10-01,1\n")
    snapshot = read(tmp_path)
    assert snapshot.members == [] and snapshot.events == {"orders": {}}
    assert snapshot.stats.events_unknown_member == {"orders": 1}


def test_empty_parquet_event_table(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    pq.write_table(pa.table({"member_id": pa.array([], pa.string()), "at": pa.array([], pa.timestamp("us", tz="UTC")),
                             "amount": pa.array([], pa.decimal128(12, 2))}), tmp_path / "orders.parquet")
    assert read(tmp_path).events == {"orders": {}}


# Bad rows

BAD_ROWS_EXPECTED = [
    ("MR503", "member.csv", 3, 3),   # month 13
    ("MR503", "member.csv", 4, 4),   # points "three"
    ("MR503", "member.csv", 5, 1),   # no key
    ("MR504", "member.csv", 6, 1),   # M1 again
    ("MR505", "member.csv", 9, 1),   # four fields (line 7-8 is one record with a quoted newline)
    ("MR503", "member.csv", 10, 5),  # balance "abc"
    ("MR503", "orders.csv", 3, 2),   # no time
    ("MR503", "orders.csv", 4, 3),   # amount "x"
]


def test_bad_rows_fail_with_file_row_and_column():
    with pytest.raises(DiagnosticError) as error:
        read(FIXTURES / "bad_rows")
    assert problems(error) == BAD_ROWS_EXPECTED
    messages = [d.message for d in error.value.diagnostics]
    assert messages[0] == "bad value in member.joined: '2026-13-01T09:00:00+08:00' is not a timestamp " \
                          "(expected ISO 8601, e.g. 2026-11-01T09:30:00+08:00)"
    assert messages[1] == "bad value in member.points: 'three' is not an integer"
    assert messages[3] == "duplicate member key 'M1' (first at line 2)"
    assert error.value.diagnostics[3].related[0][1].line == 2
    assert "4 fields; the header has 5" in messages[4]
    assert "--on-bad-row skip" in error.value.diagnostics[-1].hint


def test_bad_rows_skipped_are_counted_so_read_equals_kept_plus_rejected():
    snapshot = read(FIXTURES / "bad_rows", on_bad_row="skip")
    stats = snapshot.stats
    assert [m["member_id"] for m in snapshot.members] == ["M1", "M6"]
    assert snapshot.members[1]["name"] == "Multi\nline"
    by_table = {"member": 0, "orders": 0}
    for reject in snapshot.rejects:
        by_table[reject.table] += 1
    assert stats.rejected == len(snapshot.rejects) == 8
    assert stats.rows_read["member"] == len(snapshot.members) + by_table["member"] == 8
    orders_kept = sum(map(len, snapshot.events["orders"].values()))
    # M8's own row was rejected, so its order counts as one of an unknown member.
    assert stats.events_unknown_member == {"orders": 1}
    assert stats.rows_read["orders"] == (orders_kept + by_table["orders"] + stats.events_unknown_member["orders"]
                                         + stats.events_after_as_of["orders"]) == 4
    assert [(r.table, r.row, r.column) for r in snapshot.rejects] == [
        ("member", 3, "joined"), ("member", 4, "points"), ("member", 5, "member_id"), ("member", 6, "member_id"),
        ("member", 9, None), ("member", 10, "balance"), ("orders", 3, "at"), ("orders", 4, "amount")]


def test_rejected_rows_keep_their_cells_as_text():
    snapshot = read(FIXTURES / "bad_rows", on_bad_row="skip")
    first = snapshot.rejects[0]
    assert first == RejectedRow(
        table="member", file=str(FIXTURES / "bad_rows" / "member.csv"), row=3, column="joined",
        reason="'2026-13-01T09:00:00+08:00' is not a timestamp (expected ISO 8601, e.g. 2026-11-01T09:30:00+08:00)",
        raw={"member_id": "M2", "name": "Bob", "joined": "2026-13-01T09:00:00+08:00", "points": "2",
             "balance": "2.00"})
    malformed = snapshot.rejects[4]
    assert malformed.raw == {"_record": "M7,Gus,2026-10-01T09:00:00+08:00,7"}


def test_a_row_with_two_bad_cells_gives_two_diagnostics_but_one_reject(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,never,x,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert problems(error) == [("MR503", "member.csv", 2, 3), ("MR503", "member.csv", 2, 4)]
    snapshot = read(tmp_path, on_bad_row="skip")
    assert [(r.row, r.column) for r in snapshot.rejects] == [(2, "joined")]
    assert snapshot.stats.rows_read["member"] == 1 and snapshot.members == []


def test_fail_mode_stops_after_a_bounded_number_of_errors(tmp_path):
    rows = "".join(f"M{i},A,2026-10-01,bad,1\n" for i in range(100))
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\n" + rows)
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert len(error.value.diagnostics) == MAX_ROW_ERRORS
    assert [line for _, _, line, _ in problems(error)] == list(range(2, 2 + MAX_ROW_ERRORS))
    assert "reading stopped here" in error.value.diagnostics[-1].hint


def test_duplicate_member_keys_keep_the_first_row_when_skipping(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,first,2026-10-01,1,1\n"
                                  "M2,other,2026-10-01,1,1\nM1,second,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert problems(error) == [("MR504", "member.csv", 4, 1)]
    snapshot = read(tmp_path, on_bad_row="skip")
    assert [m["name"] for m in snapshot.members] == ["first", "other"]
    assert snapshot.rejects[0].reason == "duplicate member key 'M1' (first at line 2)"


def test_null_event_time_is_a_bad_row_even_when_declared_nullable(tmp_path):
    schema = {"member": SIMPLE["member"],
              "orders": TableSchema(key="member_id", time="at", fields={"at": "timestamp?", "amount": "decimal"})}
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\nM1,,1\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, schema)
    assert problems(error) == [("MR503", "orders.csv", 2, 2)]
    assert "missing time" in error.value.diagnostics[0].message


def test_bad_value_in_a_large_column_is_found_at_its_line(tmp_path):
    # Large columns take the vectorised paths; a bad value must still be pinned to its row.
    lines = [f"M1,2026-10-{1 + i % 28:02d}T10:00:00+08:00,{i % 7}.50" for i in range(300)]
    lines[150] = "M1,2026-02-30T10:00:00+08:00,1.00"
    lines[200] = "M1,2026-10-01T10:00:00+08:00,1.0.0"
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n" + "\n".join(lines) + "\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert problems(error) == [("MR503", "orders.csv", 152, 2), ("MR503", "orders.csv", 202, 3)]


def test_jsonl_bad_lines(tmp_path):
    write(tmp_path, "member.jsonl", '{"member_id":"M1","name":"A","joined":"2026-10-01","points":1,"balance":1}\n'
                                    "\n"
                                    "{not json\n"
                                    "[1, 2]\n"
                                    '{"member_id":"M2","name":"B","joined":"2026-10-01","points":"x","balance":1}\n'
                                    '{"member_id":"M3","name":"C","joined":"2026-10-01","points":true,"balance":1.5}\n'
                                    '{"member_id":"M4","name":null,"joined":"2026-10-01","points":2,"balance":NaN}\n')
    write(tmp_path, "orders.jsonl", "")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert [(code, line) for code, _, line, _ in problems(error)] == [
        ("MR505", 3), ("MR505", 4), ("MR503", 5), ("MR503", 6), ("MR505", 7)]
    assert "expected an integer, got true" in error.value.diagnostics[3].message
    snapshot = read(tmp_path, on_bad_row="skip")
    assert [m["member_id"] for m in snapshot.members] == ["M1"]
    assert snapshot.stats.rows_read["member"] == 1 + len(snapshot.rejects) == 6


def test_jsonl_null_for_a_required_string_is_a_missing_value(tmp_path):
    write(tmp_path, "member.jsonl", '{"member_id":"M1","name":null,"joined":"2026-10-01","points":1,"balance":1}\n'
                                    '{"member_id":"M2","joined":"2026-10-01","points":1,"balance":1,"name":"B"}\n')
    write(tmp_path, "orders.jsonl", "")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert problems(error) == [("MR503", "member.jsonl", 1, 2)]
    assert "missing value" in error.value.diagnostics[0].message


def test_parquet_rows_are_numbered_from_one_and_nulls_checked(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\nM1,A,2026-10-01,1,1\n")
    pq.write_table(pa.table({"member_id": ["M1", "M1", None],
                             "at": pa.array([datetime(2026, 10, 1), None, datetime(2026, 10, 1)], pa.timestamp("s")),
                             "amount": pa.array([Decimal(1), Decimal(2), Decimal(3)], pa.decimal128(5, 0))}),
                   tmp_path / "orders.parquet")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    assert problems(error) == [("MR503", "orders.parquet", 2, 2), ("MR503", "orders.parquet", 3, 1)]


def test_file_that_is_not_utf8_is_a_file_error(tmp_path):
    write(tmp_path, "member.csv", b"member_id,name,joined,points,balance\nM1,\xe9t\xe9,2026-10-01,1,1\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    assert problems(error) == [("MR501", "member.csv", 2, 4)]
    assert "not UTF-8" in error.value.diagnostics[0].message


# Column and file problems (fatal even when skipping)


def test_missing_and_unexpected_columns_are_fatal_even_when_skipping(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,pionts,balance,extra\nM1,A,2026-10-01,1,1,x\n")
    write(tmp_path, "orders.csv", "member_id,at\nM1,2026-10-01\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    found = [(d.code, Path(d.span.file).name, d.message, d.hint) for d in error.value.diagnostics]
    assert found == [
        ("MR502", "member.csv", "unexpected column 'pionts' in table 'member'", "did you mean 'points'?"),
        ("MR502", "member.csv", "unexpected column 'extra' in table 'member'",
         "declare it in the schema, or drop it from the file"),
        ("MR502", "member.csv", "column 'points' (int) is missing from table 'member'", "the file has 'pionts'"),
        ("MR502", "orders.csv", "column 'amount' (decimal) is missing from table 'orders'",
         "the columns are: member_id, at, amount"),
    ]
    assert [d.span.col for d in error.value.diagnostics[:2]] == [4, 6]


def test_repeated_header_column_is_fatal(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance,name\nM1,A,2026-10-01,1,1,B\n")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    assert problems(error) == [("MR502", "member.csv", 1, 6)]


def test_jsonl_unexpected_key_and_absent_required_column_are_fatal(tmp_path):
    write(tmp_path, "member.jsonl", '{"member_id":"M1","name":"A","joined":"2026-10-01","points":1,"balance":1}\n'
                                    '{"member_id":"M2","name":"B","joined":"2026-10-01","points":1,"balance":1,'
                                    '"x":1}\n')
    write(tmp_path, "orders.jsonl", '{"member_id":"M1","at":"2026-10-01"}\n')
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    assert problems(error) == [("MR502", "member.jsonl", 2, 6)]
    (tmp_path / "member.jsonl").write_text(
        '{"member_id":"M1","name":"A","joined":"2026-10-01","points":1,"balance":1}\n')
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path, on_bad_row="skip")
    assert [d.message for d in error.value.diagnostics] == ["column 'amount' (decimal) is missing from table 'orders'"]


def test_jsonl_may_leave_out_nullable_columns(tmp_path):
    write(tmp_path, "member.jsonl", '{"member_id":"M1","name":"A","joined":"2026-10-01","points":1,"balance":1,'
                                    '"grace":"1d","tags":[],"ratio":1,"sms":true,"lucky":[]}\n')
    write(tmp_path, "orders.jsonl", '{"member_id":"M1","at":"2026-10-01","amount":1}\n')
    snapshot = read(tmp_path, ALL_TYPES)
    assert snapshot.members[0]["birthday"] is None and snapshot.members[0]["tier"] is None
    assert snapshot.events["orders"]["M1"][0]["note"] is None


def test_missing_table_file_names_the_expected_files(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\n")
    write(tmp_path, "order.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path)
    (diagnostic,) = error.value.diagnostics
    assert diagnostic.code == "MR501"
    assert "no file for table 'orders'" in diagnostic.message
    assert "orders.csv, orders.jsonl, orders.ndjson, orders.parquet" in diagnostic.message
    assert diagnostic.hint == "is 'order.csv' meant to be orders.csv?"


def test_two_files_for_one_table_is_an_error(tmp_path):
    write(tmp_path, "member.csv", "member_id,name,joined,points,balance\n")
    write(tmp_path, "member.jsonl", "")
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    with pytest.raises(DiagnosticError) as error:
        find_table_files(tmp_path, SIMPLE)
    (diagnostic,) = error.value.diagnostics
    assert diagnostic.code == "MR501"
    assert diagnostic.message == "table 'member' has 2 files: member.csv, member.jsonl"


def test_missing_snapshot_directory(tmp_path):
    with pytest.raises(DiagnosticError) as error:
        read(tmp_path / "nowhere")
    assert "does not exist" in error.value.diagnostics[0].message


def test_find_table_files_accepts_each_format(tmp_path):
    write(tmp_path, "member.parquet", b"")
    write(tmp_path, "orders.ndjson", "")
    write(tmp_path, "notes.txt", "")
    assert find_table_files(tmp_path, SIMPLE) == {"member": tmp_path / "member.parquet",
                                                  "orders": tmp_path / "orders.ndjson"}


def test_unknown_on_bad_row_mode_is_refused():
    with pytest.raises(ValueError, match="on_bad_row"):
        read(FIXTURES / "all_types", ALL_TYPES, on_bad_row="ignore")


# The vectorised paths agree with parse_value

TIMESTAMP_TEXTS = st.builds(
    lambda moment, separator, fraction, zone: (
        moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
        + (f".{moment.microsecond:06d}"[:fraction + 1] if fraction else "") + zone),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)),
    st.sampled_from(["T", " "]),
    st.integers(0, 6),
    st.sampled_from(["", "Z", "+08:00", "-05:30", "+00:00", "+14:00"]),
)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(TIMESTAMP_TEXTS, min_size=70, max_size=120),
       zone=st.sampled_from(["Asia/Shanghai", "America/New_York", "UTC"]))
def test_timestamp_columns_read_as_parse_value_reads_each_cell(tmp_path_factory, texts, zone):
    directory = tmp_path_factory.mktemp("ts")
    schema = {"member": TableSchema(key="id", fields={"id": "int", "at": "timestamp"}),
              "orders": TableSchema(key="id", time="at", fields={"at": "timestamp"})}
    write(directory, "member.csv", "id,at\n" + "".join(f"{i},{text}\n" for i, text in enumerate(texts)))
    write(directory, "orders.csv", "id,at\n")
    tz = ZoneInfo(zone)
    snapshot = read_snapshot(directory, schema, zone, datetime(2200, 1, 1, tzinfo=tz))
    assert [m["at"] for m in snapshot.members] == [parse_value(text, parse_type("timestamp"), tz) for text in texts]
    assert all(m["at"].tzinfo is tz for m in snapshot.members)


NUMBER_TEXTS = ["0", "-1", "19.90", "0.1", " 7 ", "+3", "1e2", ".5", "5.", "007", "-0.00", "1E-3"]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), options=st.sets(st.sampled_from(NUMBER_TEXTS), min_size=1))
def test_number_columns_read_as_parse_value_reads_each_cell(tmp_path_factory, data, options):
    # A few distinct values repeated: the dictionary path, fast unless a cell needs stripping.
    values = data.draw(st.lists(st.sampled_from(sorted(options)), min_size=70, max_size=200))
    directory = tmp_path_factory.mktemp("num")
    schema = {"member": TableSchema(key="id", fields={"id": "int", "d": "decimal", "f": "float"}),
              "orders": TableSchema(key="id", time="at", fields={"at": "timestamp"})}
    write(directory, "member.csv", "id,d,f\n" + "".join(f"{i},{v},{v}\n" for i, v in enumerate(values)))
    write(directory, "orders.csv", "id,at\n")
    snapshot = read(directory, schema)
    decimal_, float_ = parse_type("decimal"), parse_type("float")
    assert [m["d"] for m in snapshot.members] == [parse_value(v, decimal_, SH) for v in values]
    assert [str(m["d"]) for m in snapshot.members] == [str(parse_value(v, decimal_, SH)) for v in values]
    assert [m["f"] for m in snapshot.members] == [parse_value(v, float_, SH) for v in values]


def test_large_nullable_timestamp_column_with_empty_cells(tmp_path):
    rows = "".join(f"M{i},2026-10-01,{'' if i % 3 else '2026-10-02T10:00:00'}\n" for i in range(100))
    schema = {"member": TableSchema(key="member_id", fields={"member_id": "string", "joined": "timestamp",
                                                             "left": "timestamp?"}),
              "orders": SIMPLE["orders"]}
    write(tmp_path, "member.csv", "member_id,joined,left\n" + rows)
    write(tmp_path, "orders.csv", "member_id,at,amount\n")
    members = {m["member_id"]: m for m in read(tmp_path, schema).members}
    assert members["M3"]["left"] == datetime(2026, 10, 2, 10, tzinfo=SH)
    assert members["M4"]["left"] is None
