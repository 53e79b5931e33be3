"""The SQLite state file: format version, previous results, the ledger, exactly-once keys."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys

import pytest

from memberrules.engine.state import (CRASH_ENV, CRASH_EXIT_CODE, KEEP_RUNS, VERSION, LedgerEntry, PreviousState,
                                      StateError, StateStore, idempotency_key, instant_text)

UTC = dt.timezone.utc
D1 = dt.datetime(2026, 11, 1, tzinfo=UTC)


def day(n: int) -> dt.datetime:
    return D1 + dt.timedelta(days=n - 1)


def entry(campaign: str, member: str, as_of: dt.datetime, channel: str = "sms") -> LedgerEntry:
    return LedgerEntry(idempotency_key(campaign, member, as_of), campaign, member, channel, as_of, as_of, True)


def commit_run(store: StateStore, as_of, states=(), actions=()):
    store.begin()
    store.record_results(as_of, states)
    new = store.record_actions(actions)
    store.record_run(as_of, len(states), len(actions))
    store.commit()
    return new


def test_a_new_state_file_has_the_current_format_version(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    meta = dict(store.connection.execute("SELECT key, value FROM meta"))
    assert meta["format"] == "memberrules-state" and meta["version"] == str(VERSION)
    assert store.previous(D1) is None


def test_a_newer_format_version_is_refused(tmp_path):
    StateStore.open(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(VERSION + 1),))
    with pytest.raises(StateError, match="newer"):
        StateStore.open(tmp_path / "s.db")


@pytest.mark.parametrize("content", [b"not a database at all" * 10, None])
def test_files_that_are_not_state_files_are_refused(tmp_path, content):
    path = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (x)")
    else:
        path.write_bytes(content)
    with pytest.raises(StateError, match="not a memberrules state file"):
        StateStore.open(path)


def test_previous_is_the_latest_run_before_as_of(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    commit_run(store, day(1), [("m1", PreviousState("normal", {"lifecycle": "new"}, frozenset(), 0))])
    commit_run(store, day(2), [("m1", PreviousState("silver", {"lifecycle": "active"}, frozenset({"vip"}), 1))])
    previous = store.previous(day(3))
    assert previous.as_of == day(2)
    assert previous.members["m1"] == PreviousState("silver", {"lifecycle": "active"}, frozenset({"vip"}), 1)
    # A rerun of day 2 compares against day 1, not against its own earlier results.
    assert store.previous(day(2)).members["m1"].tier == "normal"


def test_only_the_latest_runs_results_are_kept(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    for n in range(1, KEEP_RUNS + 3):
        commit_run(store, day(n), [("m1", PreviousState("normal"))])
    kept = [r[0] for r in store.connection.execute("SELECT DISTINCT as_of FROM member_state ORDER BY as_of")]
    assert kept == [instant_text(day(n)) for n in range(3, KEEP_RUNS + 3)]
    assert store.previous(day(3)) is None  # day 2's results are gone: no transitions for that rerun
    assert len(store.runs()) == KEEP_RUNS + 2


def test_a_rerun_replaces_its_own_results(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    commit_run(store, day(1), [("m1", PreviousState("normal")), ("m2", PreviousState("gold"))])
    commit_run(store, day(1), [("m1", PreviousState("silver"))])
    assert store.previous(day(2)).members == {"m1": PreviousState("silver")}


def test_the_ledger_records_each_key_once(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    actions = [entry("win_back", "m1", day(1)), entry("congrats", "m1", day(1))]
    assert commit_run(store, day(1), actions=actions) == 2
    assert commit_run(store, day(1), actions=actions) == 0
    assert len(store.ledger()) == 2


def test_history_sees_only_earlier_runs_within_the_lookback(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    commit_run(store, day(1), actions=[entry("a", "m1", day(1))])
    commit_run(store, day(5), actions=[entry("a", "m1", day(5))])
    commit_run(store, day(6), actions=[entry("a", "m1", day(6))])
    seen = store.history(day(6), dt.timedelta(days=3))
    assert [e.as_of for e in seen] == [day(5)]  # day 1 is too old, day 6 is this run itself


def test_idempotency_key_depends_on_campaign_member_and_instant_only():
    key = idempotency_key("c", "m", D1)
    assert key == idempotency_key("c", "m", D1.astimezone(dt.timezone(dt.timedelta(hours=8))))
    assert len({key, idempotency_key("c", "m2", D1), idempotency_key("c2", "m", D1),
                idempotency_key("c", "m", D1 + dt.timedelta(seconds=1))}) == 4


def test_an_open_run_holds_the_write_lock(tmp_path):
    first = StateStore.open(tmp_path / "s.db")
    first.begin()
    second = StateStore.open(tmp_path / "s.db", timeout=0.1)
    with pytest.raises(StateError, match="another run"):
        second.begin()
    first.rollback()
    second.begin()
    second.rollback()


def test_a_process_killed_before_commit_leaves_nothing(tmp_path):
    path = tmp_path / "s.db"
    StateStore.open(path).close()
    script = f"""
import datetime as dt
from pathlib import Path
from memberrules.engine.state import StateStore, LedgerEntry, PreviousState
store = StateStore.open(Path({str(path)!r}))
store.begin()
at = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
store.record_results(at, [("m1", PreviousState("gold"))])
store.record_actions([LedgerEntry("k", "c", "m1", "sms", at, at, True)])
store.commit()
"""
    done = subprocess.run([sys.executable, "-c", script], env={**__import__("os").environ, CRASH_ENV: "1"})
    assert done.returncode == CRASH_EXIT_CODE
    store = StateStore.open(path)
    assert store.ledger() == [] and store.previous(day(2)) is None
