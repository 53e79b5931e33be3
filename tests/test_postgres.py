"""The compiled Postgres SQL, run on a real PostgreSQL 15 server, gives the Python engine's rows.

The server is started by the test itself (unix socket only, no TCP) and talked to through
`psql`, so no Python driver is needed. Marked heavy (it starts a server; about 3 s);
skipped where PostgreSQL 15 or its `postgres` OS user is missing.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from memberrules.engine import types as t
from memberrules.engine.check import check_rule_set
from memberrules.engine.demo import DEFAULT_AS_OF, write_demo_snapshot
from memberrules.engine.eval import compile_rule_set
from memberrules.engine.results import jsonl_lines, result_columns
from memberrules.engine.snapshot import read_snapshot
from memberrules.engine.sql import compile_sql, sql_type
from memberrules.engine.sql_dialects import rules_for

ROOT = Path(__file__).parent.parent
CASES = {"default_pack": ROOT / "rules", "spec_example": ROOT / "tests" / "fixtures" / "spec_example"}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# psql prints NULL and the empty string alike in CSV unless told otherwise.
NULL = "<<null>>"

pytestmark = pytest.mark.heavy


class Postgres:
    def __init__(self, socket_dir: Path, port: int):
        self.socket_dir = socket_dir
        self.port = port

    def psql(self, script: str) -> str:
        done = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-P", f"null={NULL}",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-f", "-"],
            input=script, capture_output=True, text=True, timeout=120, env={**os.environ, "PGTZ": "UTC"})
        assert done.returncode == 0, f"psql failed:\n{done.stderr}"
        return done.stdout


# initdb refuses root: as root the server runs as the `postgres` OS user, otherwise as us.
AS_ROOT = os.geteuid() == 0


def _as_postgres(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []
    return subprocess.run([*prefix, *command], cwd=cwd, capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    missing = [str(PG_BIN / b) for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).exists()]
    if missing or shutil.which("psql") is None or (AS_ROOT and shutil.which("runuser") is None):
        pytest.skip(f"PostgreSQL 15 is not installed here (missing: {', '.join(missing) or 'psql/runuser'})")
    if AS_ROOT:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no `postgres` OS user to run the server as (initdb refuses root)")
    # Not under pytest's tmp_path: its parents are private to root and the server user must reach it.
    home = Path(tempfile.mkdtemp(prefix="memberrules-pg-"))
    try:
        for sub in ("data", "sock"):
            (home / sub).mkdir()
        for path in (home, home / "data", home / "sock"):
            if AS_ROOT:
                shutil.chown(path, "postgres", "postgres")
        init = _as_postgres(str(PG_BIN / "initdb"), "-D", str(home / "data"), "-A", "trust", "-U", "postgres",
                            "-E", "UTF8", "--locale=C", "--no-sync", cwd=home)
        assert init.returncode == 0, init.stderr
        port = _free_port()
        options = f"-c listen_addresses='' -k {home / 'sock'} -p {port} -c fsync=off"
        start = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"),
                             "-w", "-o", options, "start", cwd=home)
        if start.returncode != 0:
            log = (home / "log").read_text(errors="replace") if (home / "log").exists() else ""
            raise AssertionError(f"pg_ctl start failed:\n{start.stderr}\n{log}")
        try:
            yield Postgres(home / "sock", port)
        finally:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(home / "data"), "stop", "-m", "immediate", cwd=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def keep_schema_columns(rules, data: Path) -> None:
    """The demo snapshot has every column the default pack reads; a smaller schema (SPEC's
    example) rejects the others, so each CSV keeps only its table's fields."""
    for name, table in rules.tables.items():
        path = data / f"{name}.csv"
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table.fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_script(rules, data: Path) -> str:
    """Each schema table from its CSV: copied as text into a staging table, then cast into a
    table of the types the compiled SQL reads (lists arrive as JSON arrays)."""
    dialect = rules_for("postgres")
    lines = []
    for name, table in rules.tables.items():
        path = data / f"{name}.csv"
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f))
        stage = f'"_stage_{name}"'
        lines.append(f'DROP TABLE IF EXISTS "{name}"; DROP TABLE IF EXISTS {stage};')
        text_columns = ", ".join(f'"{column}" TEXT' for column in header)
        lines.append(f"CREATE TABLE {stage} ({text_columns});")
        lines.append(f"\\copy {stage} FROM {_sql_literal(str(path))} WITH (FORMAT csv, HEADER true)")
        columns, values = [], []
        for field, type_ in table.fields.items():
            columns.append(f'"{field}" {sql_type(type_, dialect).sql("postgres")}')
            if type_.kind == "list":
                values.append(f'ARRAY(SELECT jsonb_array_elements_text("{field}"::jsonb))')
            else:
                values.append(f'"{field}"::{sql_type(type_, dialect).sql("postgres")}')
        lines.append(f'CREATE TABLE "{name}" ({", ".join(columns)});')
        lines.append(f'INSERT INTO "{name}" SELECT {", ".join(values)} FROM {stage};')
    return "\n".join(lines) + "\n"


def parse_array(text: str) -> list[str | None]:
    """A one-dimensional Postgres array of text, as psql prints it: {a,"b c",NULL}."""
    assert text.startswith("{") and text.endswith("}"), text
    items: list[str | None] = []
    i, body = 0, text[1:-1]
    while i < len(body):
        if body[i] == '"':
            i += 1
            value = []
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                value.append(body[i])
                i += 1
            items.append("".join(value))
            i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end == -1 else end
            word = body[i:end]
            items.append(None if word == "NULL" else word)
            i = end
        i += 1  # the comma
    return items


def parse_value(text: str, type_: t.Type, tz: ZoneInfo):
    if text == NULL:
        return None
    kind = type_.kind
    if kind == "string":
        return text
    if kind == "int":
        return int(text)
    if kind == "decimal":
        return Decimal(text)
    if kind == "bool":
        return {"t": True, "f": False}[text]
    if kind == "timestamp":
        return datetime.fromisoformat(text).astimezone(tz)
    if kind == "date":
        return date.fromisoformat(text)
    if kind == "list":
        return [parse_value(item if item is not None else NULL, type_.item or t.STRING, tz)
                for item in parse_array(text)]
    raise AssertionError(f"no parser for result type {kind}")


def postgres_rows(postgres: Postgres, script: str, columns: list[tuple[str, t.Type]], tz: ZoneInfo) -> list[dict]:
    reader = csv.reader(io.StringIO(postgres.psql(script)))
    header = next(reader)
    assert header == [name for name, _ in columns]
    return [{name: parse_value(cell, type_, tz) for (name, type_), cell in zip(columns, row, strict=True)}
            for row in reader]


@pytest.mark.parametrize("case", sorted(CASES))
def test_postgres_sql_gives_the_python_engines_rows(case, postgres, tmp_path_factory):
    result = check_rule_set(CASES[case])
    assert result.rule_set is not None, [str(d) for d in result.diagnostics if d.is_error]
    rules = result.rule_set
    data = tmp_path_factory.mktemp(f"pg-{case}")
    write_demo_snapshot(data, members=300)
    keep_schema_columns(rules, data)
    snapshot = read_snapshot(data, rules.model.schema_, rules.timezone, DEFAULT_AS_OF)
    expected = compile_rule_set(rules).evaluate(snapshot, DEFAULT_AS_OF).rows
    compiled = compile_sql(rules, "postgres", as_of=DEFAULT_AS_OF)
    # The whole script as compiled, its SET TIME ZONE included; the server's own zone is UTC.
    postgres.psql(load_script(rules, data))
    tz = ZoneInfo(rules.timezone)
    rows = postgres_rows(postgres, compiled.sql(), compiled.columns, tz)
    columns = result_columns(rules)
    assert len(rows) == len(expected) == 300
    got, want = list(jsonl_lines(rows, columns, tz)), list(jsonl_lines(expected, columns, tz))
    differing = [(g, w) for g, w in zip(got, want) if g != w]
    assert not differing, f"{len(differing)} rows differ; first:\npostgres {differing[0][0]}\npython   {differing[0][1]}"
