"""Result writers (engine/results.py): canonical text per docs/SEMANTICS.md, atomic files."""

from __future__ import annotations

import json
import os
import stat
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberrules.engine import types as t
from memberrules.engine.check import check_rule_set
from memberrules.engine.results import (Column, decimal_text, jsonl_lines, rejects_path, result_columns,
                                        write_rejects, write_rows)
from memberrules.engine.errors import DiagnosticError
from memberrules.engine.snapshot import RejectedRow

TZ = ZoneInfo("Asia/Shanghai")

COLUMNS = [Column("member_id", t.STRING), Column("tier", t.STRING), Column("gap", t.INT.with_null()),
           Column("money", t.DECIMAL.with_null()), Column("share", t.FLOAT.with_null()),
           Column("ok", t.BOOL.with_null()), Column("at", t.TIMESTAMP.with_null()),
           Column("birthday", t.DATE.with_null()), Column("wait", t.DURATION.with_null()),
           Column("segments", t.list_of(t.STRING))]

ROW = {"member_id": "m1", "tier": '金 "gold"', "gap": 120, "money": Decimal("120.50"), "share": 0.25,
       "ok": True, "at": datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc), "birthday": date(1990, 2, 28),
       "wait": timedelta(days=1, hours=2), "segments": ["vip", "新"]}
NULLS = {"member_id": "m2", "tier": "normal", "gap": None, "money": None, "share": None, "ok": None, "at": None,
         "birthday": None, "wait": None, "segments": []}


@pytest.mark.parametrize("value, text", [
    (Decimal("120.50"), "120.5"), (Decimal("1.2E+2"), "120"), (Decimal("0.000"), "0"), (Decimal("-0"), "0"),
    (Decimal("-0.10"), "-0.1"), (Decimal("3.333333333333333333"), "3.333333333333333333"),
    (Decimal("1E-18"), "0.000000000000000001"), (7, "7"), (Decimal("100"), "100"),
])
def test_decimals_are_written_in_plain_notation_without_trailing_zeros(value, text):
    assert decimal_text(value) == text


def test_jsonl_lines_are_exact():
    lines = list(jsonl_lines([ROW, NULLS], COLUMNS, TZ))
    assert lines[0] == ('{"member_id":"m1","tier":"金 \\"gold\\"","gap":120,"money":120.5,"share":0.25,"ok":true,'
                        '"at":"2026-11-01T10:00:00+08:00","birthday":"1990-02-28","wait":93600,'
                        '"segments":["vip","新"]}\n')
    assert lines[1] == ('{"member_id":"m2","tier":"normal","gap":null,"money":null,"share":null,"ok":null,'
                        '"at":null,"birthday":null,"wait":null,"segments":[]}\n')
    assert json.loads(lines[0])["money"] == 120.5


def test_jsonl_file_is_utf8_one_object_per_line(tmp_path):
    out = tmp_path / "r.jsonl"
    assert write_rows([ROW, NULLS], COLUMNS, out, "jsonl", TZ) == 2
    raw = out.read_bytes()
    assert "金".encode() in raw and raw.count(b"\n") == 2 and b"\r" not in raw


def test_csv_has_a_header_empty_nulls_and_segments_as_json(tmp_path):
    out = tmp_path / "r.csv"
    write_rows([ROW, NULLS], COLUMNS, out, "csv", TZ)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "member_id,tier,gap,money,share,ok,at,birthday,wait,segments"
    assert lines[1] == ('m1,"金 ""gold""",120,120.5,0.25,true,2026-11-01T10:00:00+08:00,1990-02-28,93600,'
                        '"[""vip"",""新""]"')
    assert lines[2] == "m2,normal,,,,,,,,[]"


def test_parquet_columns_are_typed(tmp_path):
    out = tmp_path / "r.parquet"
    write_rows([ROW, NULLS], COLUMNS, out, "parquet", TZ)
    table = pq.read_table(out)
    schema = table.schema
    assert schema.field("money").type == pa.decimal128(38, 18)
    assert schema.field("at").type == pa.timestamp("us", tz="Asia/Shanghai")
    assert schema.field("segments").type == pa.list_(pa.string())
    assert schema.field("gap").type == pa.int64()
    rows = table.to_pylist()
    assert rows[0]["money"] == Decimal("120.5") and rows[1]["money"] is None
    assert rows[0]["at"] == ROW["at"]
    assert rows[0]["segments"] == ["vip", "新"] and rows[0]["wait"] == timedelta(days=1, hours=2)


def test_parquet_keeps_large_decimals_exact_and_refuses_what_does_not_fit(tmp_path):
    columns = [Column("member_id", t.STRING), Column("money", t.DECIMAL)]
    out = tmp_path / "r.parquet"
    write_rows([{"member_id": "m1", "money": Decimal("12345678901.25")}], columns, out, "parquet", TZ)
    assert pq.read_table(out).to_pylist()[0]["money"] == Decimal("12345678901.25")
    with pytest.raises(DiagnosticError) as raised:  # decimal128(38, 18) holds 20 digits before the point
        write_rows([{"member_id": "m1", "money": Decimal("1e25")}], columns, tmp_path / "s.parquet", "parquet", TZ)
    assert raised.value.diagnostics[0].code == "MR591"


def test_writing_twice_gives_identical_bytes(tmp_path):
    for fmt in ("jsonl", "csv", "parquet"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        write_rows([ROW, NULLS], COLUMNS, a, fmt, TZ)
        write_rows([ROW, NULLS], COLUMNS, b, fmt, TZ)
        assert a.read_bytes() == b.read_bytes(), fmt


def _failing_rows():
    yield ROW
    raise RuntimeError("engine died half way")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_failed_write_leaves_nothing_behind(tmp_path, fmt):
    out = tmp_path / "out" / f"results.{fmt}"
    with pytest.raises(RuntimeError):
        write_rows(_failing_rows(), COLUMNS, out, fmt, TZ)
    assert list(out.parent.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text("previous\n")
    with pytest.raises(RuntimeError):
        write_rows(_failing_rows(), COLUMNS, out, "jsonl", TZ)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]


def test_results_get_the_permissions_of_a_new_file(tmp_path):
    out = tmp_path / "results.jsonl"
    write_rows([ROW], COLUMNS, out, "jsonl", TZ)
    probe = tmp_path / "probe"
    probe.write_text("")
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(os.stat(probe).st_mode)


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        write_rows([ROW], COLUMNS, tmp_path / "r.xml", "xml", TZ)


def test_rejects_are_one_json_object_per_line(tmp_path):
    rejects = [RejectedRow("orders", "data/orders.csv", 3, "amount", "'x' is not a decimal number",
                           {"member_id": "m1", "amount": "x"})]
    path = rejects_path(tmp_path / "results.jsonl")
    assert path.name == "results.jsonl.rejects.jsonl"
    assert write_rejects(rejects, path) == 1
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record == {"table": "orders", "file": "data/orders.csv", "row": 3, "column": "amount",
                      "reason": "'x' is not a decimal number", "raw": {"member_id": "m1", "amount": "x"}}


def test_result_columns_follow_the_documented_order():
    rules = check_rule_set(Path(__file__).parent / "fixtures" / "spec_example").rule_set
    columns = result_columns(rules)
    assert [c.name for c in columns] == ["member_id", "tier", "next_tier", "tier_gap", "tier_progress",
                                         "days_to_next_tier", "rfm", "lifecycle", "segments"]
    types = {c.name: c.type for c in columns}
    assert types["tier_gap"] == t.INT.with_null() and types["rfm"] == t.STRING
    assert types["tier_progress"] == t.DECIMAL.with_null()


def test_any_text_survives_both_text_formats(tmp_path):
    tricky = 'a,b "c"\nd\\e {f} \u2028 😀'
    row = dict(NULLS, member_id="m3", tier=tricky, segments=[tricky])
    (line,) = jsonl_lines([row], COLUMNS, TZ)
    assert json.loads(line)["tier"] == tricky and json.loads(line)["segments"] == [tricky]
    out = tmp_path / "r.csv"
    write_rows([row], COLUMNS, out, "csv", TZ)
    import csv

    with open(out, encoding="utf-8", newline="") as handle:
        (_, cells) = list(csv.reader(handle))
    assert cells[1] == tricky and json.loads(cells[-1]) == [tricky]
