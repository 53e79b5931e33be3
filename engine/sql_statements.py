"""DuckDB statements as sqlglot trees, for the engine's own tables (campaigns, delivery, views).

Names come from rule sets (campaigns, segments, classes, member fields), so none is ever
pasted into SQL text: columns and tables are quoted identifiers and values are literals in
a tree, printed once. Statements whose text is fixed are parsed once, and the tables they
name are replaced in the tree (`statement`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import sqlglot
from sqlglot import exp

from .sql_dialects import fn, parenthesize


def col(name: str, table: str | None = None) -> exp.Column:
    """A quoted column, qualified by a table alias when given."""
    return exp.column(name, table=table, quoted=True)


def table_ref(name: str, alias: str | None = None) -> exp.Table:
    """A quoted table name, with an alias when given."""
    node = exp.Table(this=exp.to_identifier(name, quoted=True))
    return node.as_(alias) if alias else node


def text(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def or_false(node: exp.Expression) -> exp.Expression:
    """`COALESCE(node, FALSE)`: unknown counts as no."""
    return exp.Coalesce(this=node, expressions=[exp.false()])


def all_of(parts: Iterable[exp.Expression]) -> exp.Expression:
    parts = list(parts)
    return exp.and_(*parts) if parts else exp.true()


def list_has(values: exp.Expression, item: exp.Expression) -> exp.Expression:
    """Whether the list `values` holds `item`: false, not unknown, for a null list."""
    return or_false(fn("list_contains", values, item))


def named(node: exp.Expression, name: str) -> exp.Alias:
    return exp.alias_(node, name, quoted=True)


def create_table(name: str, query: exp.Expression, temporary: bool = False) -> exp.Create:
    """`CREATE OR REPLACE [TEMP] TABLE name AS query`."""
    properties = exp.Properties(expressions=[exp.TemporaryProperty()]) if temporary else None
    return exp.Create(this=table_ref(name), kind="TABLE", replace=True, expression=query, properties=properties)


def create_view(name: str, query: exp.Expression) -> exp.Create:
    """`CREATE OR REPLACE TEMP VIEW name AS query`."""
    return exp.Create(this=table_ref(name), kind="VIEW", replace=True, expression=query,
                      properties=exp.Properties(expressions=[exp.TemporaryProperty()]))


def drop(kind: str, name: str) -> exp.Drop:
    """`DROP <kind> IF EXISTS name`."""
    return exp.Drop(kind=kind, exists=True, tables=[table_ref(name)])


def duckdb(node: exp.Expression) -> str:
    """A tree built here, printed for DuckDB with every operand's parentheses explicit."""
    return parenthesize(node.copy()).sql("duckdb")


@lru_cache(maxsize=None)
def _parsed(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


def statement(sql: str, **tables: str) -> str:
    """Fixed statement text, its tables (by the names written in it) replaced by `tables`.

    >>> statement("SELECT pos FROM judged WHERE rule IS NULL", judged="_mr_judged")
    'SELECT pos FROM "_mr_judged" WHERE rule IS NULL'
    """
    tree = _parsed(sql).copy()
    for node in tree.find_all(exp.Table):
        if node.name in tables:
            node.set("this", exp.to_identifier(tables[node.name], quoted=True))
    for node in tree.find_all(exp.Column):
        if node.table in tables:  # `judged.pos` in an UPDATE names the table itself
            node.set("table", exp.to_identifier(tables[node.table], quoted=True))
    return tree.sql("duckdb")
