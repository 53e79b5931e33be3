"""The state file (`evaluate --state FILE`): members' last results and the action ledger.

A SQLite database with a versioned schema (docs/STATE.md). A run reads the results
of the latest earlier run (for transitions such as tier_up) and the ledger (for
cooldowns and caps), and writes its own results and actions, all in one
transaction that `evaluate` commits only after its output files are written, and
before it renames them into place.

Exactly once: every action has an idempotency key made of campaign, member and
`as_of`. The ledger holds each key once (INSERT OR IGNORE), and a run at `as_of`
only sees ledger entries and results from before `as_of`, so running the same
`as_of` again — after a crash or on purpose — decides the same actions with the
same keys, and records nothing twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "memberrules-state"
VERSION = 1
# Results of this many latest runs are kept: enough to rerun the last few days,
# small enough that the file does not grow with every night.
KEEP_RUNS = 3
# A test hook: when set, the process exits right before the run's commit, as a
# killed job would (tests/e2e/test_campaign_days.py).
CRASH_ENV = "MEMBERRULES_TEST_EXIT_BEFORE_COMMIT"
CRASH_EXIT_CODE = 86

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        as_of        TEXT PRIMARY KEY,
        committed_at TEXT NOT NULL,
        members      INTEGER NOT NULL,
        actions      INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS member_state (
        as_of    TEXT NOT NULL,
        member   TEXT NOT NULL,
        tier     TEXT,
        classes  TEXT NOT NULL,
        segments TEXT NOT NULL,
        orders   INTEGER,
        PRIMARY KEY (as_of, member)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS ledger (
        key         TEXT PRIMARY KEY,
        campaign    TEXT NOT NULL,
        member      TEXT NOT NULL,
        channel     TEXT NOT NULL,
        as_of       TEXT NOT NULL,
        send_at     TEXT NOT NULL,
        capped      INTEGER NOT NULL,
        recorded_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_by_member ON ledger (member, send_at)",
    "CREATE INDEX IF NOT EXISTS ledger_by_as_of ON ledger (as_of)",
)


class StateError(Exception):
    """The state file cannot be used: not a state file, a newer format, or locked."""


def instant_text(value: dt.datetime) -> str:
    """An instant as stored: UTC, always with microseconds, so text order is time order.

    >>> instant_text(dt.datetime(2026, 11, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    '2026-10-31T16:00:00.000000Z'
    """
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def idempotency_key(campaign: str, member: str, as_of: dt.datetime) -> str:
    """The key that makes an action unique: the same campaign, member and `as_of` give the same key.

    >>> idempotency_key("congrats", "M1", dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
    'congrats:de79953d946f7f8d2ec7e457e6afed74'
    """
    text = "\x1f".join((campaign, member, instant_text(as_of)))
    return f"{campaign}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class PreviousState:
    """What a member looked like after the previous run; transitions compare against it."""

    tier: str | None = None
    classes: Mapping[str, str | None] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()
    orders: int | None = None  # count(orders), when the schema has an orders table

    @classmethod
    def from_mapping(cls, data: Mapping) -> PreviousState:
        """From a test file's `previous: {m1: {tier: silver, segments: [vip], classes: {lifecycle: silent}}}`;
        raises ValueError, in words, for anything else."""
        if not isinstance(data, Mapping):
            raise ValueError("expected a map such as {tier: silver, segments: [vip], classes: {lifecycle: silent}}")
        unknown = set(data) - {"tier", "classes", "segments", "orders"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                             "use tier, classes, segments, orders")
        tier, classes, segments, orders = (data.get(k) for k in ("tier", "classes", "segments", "orders"))
        if tier is not None and not isinstance(tier, str):
            raise ValueError("tier is a tier name, e.g. silver")
        if classes is not None and not (isinstance(classes, Mapping) and all(
                isinstance(v, (str, type(None))) for v in classes.values())):
            raise ValueError("classes maps class lists to classes, e.g. {lifecycle: silent}")
        if segments is not None and not (isinstance(segments, (list, tuple)) and all(
                isinstance(v, str) for v in segments)):
            raise ValueError("segments is a list of segment names, e.g. [vip]")
        if orders is not None and (isinstance(orders, bool) or not isinstance(orders, int)):
            raise ValueError("orders is a whole number (the member's order count then)")
        return cls(tier, dict(classes or {}), frozenset(segments or ()), orders)


@dataclass(frozen=True)
class Previous:
    """The latest run before this one: its `as_of` and every member's state then."""

    as_of: dt.datetime | None
    members: Mapping[str, PreviousState]
    # From the state file a member missing here joined after that run (no tier, classes or
    # segments before); in a test file's `previous:` a missing member has no previous state.
    missing_are_new: bool = True


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    campaign: str
    member: str
    channel: str
    as_of: dt.datetime
    send_at: dt.datetime
    capped: bool
    recorded_at: dt.datetime | None = None


class StateStore:
    """An open state file. Use `begin()`, read, record, then `commit()` (or `rollback()`).

    >>> import tempfile
    >>> store = StateStore.open(Path(tempfile.mkdtemp()) / "state.db")
    >>> store.version
    1
    >>> store.close()
    """

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, timeout: float = 30.0) -> StateStore:
        """Open a state file, creating it (with the current schema) when it does not exist."""
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as problem:
            raise StateError(f"{path}: cannot open the state file: {problem}") from problem
        store = cls(connection, path)
        try:
            if fresh:
                store._create()
            store._check_format()
        except sqlite3.DatabaseError as problem:
            connection.close()
            raise StateError(f"{path}: not a memberrules state file ({problem})") from problem
        except StateError:
            connection.close()
            raise
        return store

    def _create(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            self.connection.execute(statement)
        self.connection.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", [
            ("format", FORMAT), ("version", str(VERSION)),
            ("created_at", instant_text(dt.datetime.now(dt.timezone.utc)))])
        self.connection.execute("COMMIT")

    def _check_format(self) -> None:
        try:
            meta = dict(self.connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as problem:
            raise StateError(f"{self.path}: not a memberrules state file (no meta table)") from problem
        if meta.get("format") != FORMAT:
            raise StateError(f"{self.path}: not a memberrules state file (format {meta.get('format')!r})")
        version = int(meta.get("version", "0"))
        if version > VERSION:
            raise StateError(f"{self.path}: state format version {version} is newer than this memberrules "
                             f"reads ({VERSION}); upgrade memberrules")
        if version < VERSION:
            raise StateError(f"{self.path}: state format version {version} is too old (this is {VERSION})")

    @property
    def version(self) -> int:
        return int(self.connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])

    # -- the run's transaction ---------------------------------------------------------------------

    def begin(self, read_only: bool = False) -> None:
        """Start the run's transaction; it takes the write lock, so two runs never interleave.
        A read-only one (dry runs, explain) reads one consistent state without the lock."""
        try:
            self.connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as problem:
            raise StateError(f"{self.path}: {problem} (is another run using this state file?)") from problem

    def commit(self) -> None:
        if os.environ.get(CRASH_ENV):
            os._exit(CRASH_EXIT_CODE)
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def close(self) -> None:
        self.rollback()
        self.connection.close()

    # -- reading -----------------------------------------------------------------------------------

    def previous(self, as_of: dt.datetime) -> Previous | None:
        """The members' results of the latest run before `as_of`; None when there is none, or when
        its results are no longer kept (only the latest KEEP_RUNS runs are)."""
        row = self.connection.execute("SELECT as_of, members FROM runs WHERE as_of < ? ORDER BY as_of DESC LIMIT 1",
                                      (instant_text(as_of),)).fetchone()
        if row is None:
            return None
        kept = self.connection.execute("SELECT 1 FROM member_state WHERE as_of = ? LIMIT 1", (row[0],)).fetchone()
        if kept is None and row[1] > 0:
            return None
        members = {}
        for member, tier, classes, segments, orders in self.connection.execute(
                "SELECT member, tier, classes, segments, orders FROM member_state WHERE as_of = ?", (row[0],)):
            members[member] = PreviousState(tier, json.loads(classes), frozenset(json.loads(segments)), orders)
        return Previous(parse_instant(row[0]), members)

    def history(self, as_of: dt.datetime, lookback: dt.timedelta) -> list[LedgerEntry]:
        """Ledger entries of runs before `as_of` whose send_at lies within `lookback` of it (either side)."""
        rows = self.connection.execute(
            "SELECT key, campaign, member, channel, as_of, send_at, capped, recorded_at FROM ledger "
            "WHERE as_of < ? AND send_at > ? AND send_at < ? ORDER BY member, send_at, campaign",
            (instant_text(as_of), instant_text(as_of - lookback), instant_text(as_of + lookback)))
        return [_entry(row) for row in rows]

    def ledger(self) -> list[LedgerEntry]:
        """Every ledger entry, oldest first."""
        rows = self.connection.execute(
            "SELECT key, campaign, member, channel, as_of, send_at, capped, recorded_at FROM ledger "
            "ORDER BY as_of, campaign, member")
        return [_entry(row) for row in rows]

    def runs(self) -> list[tuple[dt.datetime, int, int]]:
        """(as_of, members, actions) of every committed run, oldest first."""
        rows = self.connection.execute("SELECT as_of, members, actions FROM runs ORDER BY as_of")
        return [(parse_instant(a), m, n) for a, m, n in rows]

    # -- writing -----------------------------------------------------------------------------------

    def record_results(self, as_of: dt.datetime, states: Iterable[tuple[str, PreviousState]]) -> int:
        """Replace the results stored for `as_of` (a rerun overwrites its own) and prune old runs."""
        at = instant_text(as_of)
        self.connection.execute("DELETE FROM member_state WHERE as_of = ?", (at,))
        rows = ((at, member, s.tier, _json(dict(s.classes)), _json(sorted(s.segments)), s.orders)
                for member, s in states)
        count = self.connection.executemany(
            "INSERT INTO member_state (as_of, member, tier, classes, segments, orders) VALUES (?, ?, ?, ?, ?, ?)",
            rows).rowcount
        kept = [r[0] for r in self.connection.execute(
            "SELECT DISTINCT as_of FROM member_state ORDER BY as_of DESC LIMIT ?", (KEEP_RUNS,))]
        if len(kept) == KEEP_RUNS:
            self.connection.execute("DELETE FROM member_state WHERE as_of < ?", (kept[-1],))
        return count

    def record_actions(self, entries: Iterable[LedgerEntry]) -> int:
        """Add actions to the ledger; a key already there is left alone. Returns how many were new."""
        now = instant_text(dt.datetime.now(dt.timezone.utc))
        before = self.connection.total_changes
        self.connection.executemany(
            "INSERT OR IGNORE INTO ledger (key, campaign, member, channel, as_of, send_at, capped, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((e.key, e.campaign, e.member, e.channel, instant_text(e.as_of), instant_text(e.send_at),
              int(e.capped), now) for e in entries))
        return self.connection.total_changes - before

    def record_run(self, as_of: dt.datetime, members: int, actions: int) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO runs (as_of, committed_at, members, actions) VALUES (?, ?, ?, ?)",
            (instant_text(as_of), instant_text(dt.datetime.now(dt.timezone.utc)), members, actions))


def _entry(row) -> LedgerEntry:
    key, campaign, member, channel, as_of, send_at, capped, recorded_at = row
    return LedgerEntry(key, campaign, member, channel, parse_instant(as_of), parse_instant(send_at), bool(capped),
                       parse_instant(recorded_at) if recorded_at else None)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
