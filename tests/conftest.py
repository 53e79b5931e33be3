"""Shared pytest options and fixtures.

Golden files (tests/golden/**) change only through `pytest --update-golden`, which
rewrites them from the current output instead of comparing; review the diff before
committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden(update_golden: bool):
    """`golden(path, actual)`: compare `actual` with the file, or rewrite it under --update-golden."""

    def check(path: Path, actual: str) -> None:
        if update_golden:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8", newline="\n")
            return
        assert path.exists(), f"{path} is missing: run pytest --update-golden and review it"
        expected = path.read_text(encoding="utf-8")
        assert actual == expected, f"{path} differs (pytest --update-golden rewrites it)"

    return check


def state_file_rows(path) -> dict[str, list[tuple]]:
    """A state file's rows without its wall-clock columns: what two engines' runs must share."""
    import sqlite3

    with sqlite3.connect(path) as db:
        return {
            "ledger": db.execute("SELECT key, campaign, member, channel, as_of, send_at, capped FROM ledger "
                                 "ORDER BY key").fetchall(),
            "member_state": db.execute("SELECT * FROM member_state ORDER BY as_of, member").fetchall(),
            "runs": db.execute("SELECT as_of, members, actions FROM runs ORDER BY as_of").fetchall()}
