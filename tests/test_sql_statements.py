"""sql_statements: the engine's own DuckDB statements are trees, so no name or value changes their meaning."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from memberrules.engine.sql_statements import (all_of, col, create_table, create_view, drop, duckdb as printed,
                                               list_has, named, or_false, statement, table_ref, text)

HOSTILE = ['a"b', "x'; DROP TABLE t; --", "segments", "ümlaut ✓", 'q"."tier', "back\\slash", "semi;colon"]


@pytest.fixture()
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


@given(st.text(min_size=0, max_size=30))
@settings(max_examples=200, deadline=None)
def test_a_text_literal_reads_back_as_itself(value):
    value = value.replace("\x00", "")  # DuckDB strings hold no NUL
    with duckdb.connect() as connection:
        assert connection.execute(printed(exp.select(named(text(value), "v")))).fetchall() == [(value,)]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_and_column_names_stay_names(con, name):
    con.register("source", pa.table({name: [1, 2], "other": [3, 4]}))
    con.execute(printed(create_table(name, exp.select(col(name), col("other")).from_(table_ref("source")),
                                     temporary=True)))
    query = exp.select(named(exp.Sum(this=col(name, "t")), "total")).from_(table_ref(name, "t"))
    assert con.execute(printed(query)).fetchall() == [(3,)]
    con.execute(printed(drop("TABLE", name)))
    con.execute(printed(drop("TABLE", name)))  # IF EXISTS: dropping twice is fine
    with pytest.raises(duckdb.CatalogException):
        con.execute(printed(query))


def test_a_view_is_replaced_not_duplicated(con):
    for value in (1, 2):
        con.execute(create_view("v", exp.select(named(exp.Literal.number(value), "x"))).sql("duckdb"))
    assert con.execute('SELECT x FROM "v"').fetchall() == [(2,)]


def test_printing_makes_every_operand_explicit_and_leaves_the_tree_alone():
    both = exp.and_(col("a"), col("b"))
    negated = exp.Not(this=both)
    assert printed(negated) == 'NOT ("a" AND "b")'
    assert negated.this is both  # the tree given is not rewritten


def test_helpers_keep_three_valued_logic_explicit(con):
    row = con.execute(printed(exp.select(
        or_false(exp.Null()), all_of([]), all_of([exp.true(), exp.Null()]),
        list_has(exp.Array(expressions=[text("a"), text("b")]), text("b")),
        list_has(exp.Cast(this=exp.Null(), to=exp.DataType.build("VARCHAR[]")), text("b"))))).fetchall()
    assert row == [(False, True, None, True, False)]


def test_a_fixed_statement_gets_its_tables_by_name_wherever_they_appear():
    sql = """UPDATE judged SET rule = r.rule FROM ruled AS r
             WHERE judged.pos = r.pos AND judged.pos IN (SELECT pos FROM history AS judged_too)"""
    once = statement(sql, judged='x"y', ruled="_mr_ruled", history="_mr_history")
    assert once == ('UPDATE "x""y" SET rule = r.rule FROM "_mr_ruled" AS r WHERE "x""y".pos = r.pos '
                    'AND "x""y".pos IN (SELECT pos FROM "_mr_history" AS judged_too)')
    # The parsed statement is kept for the next call, unchanged by this one.
    assert statement(sql, judged="j2", ruled="r2", history="h2").startswith('UPDATE "j2" SET')


def test_a_statement_with_unnamed_tables_is_left_as_written():
    assert statement("SELECT a FROM t AS x JOIN u ON x.a = u.a") == "SELECT a FROM t AS x JOIN u ON x.a = u.a"
