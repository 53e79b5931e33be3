"""`memberrules init DIR`: a new rule set that validates and tests clean.

The files are the starter pack in engine/starter/ (package data), copied as
they are, so what `init` writes is exactly what the tests validate.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

STARTER_FILES = ("schema.yaml", "rules.yaml", "rules.test.yaml", "README.md")


class InitError(Exception):
    """The target cannot take a new rule set (not empty, or not a directory)."""


def starter_files() -> dict[str, bytes]:
    """The starter rule set: file name → contents."""
    folder = resources.files(__package__) / "starter"
    return {name: (folder / name).read_bytes() for name in STARTER_FILES}


def init_rule_set(directory: Path) -> list[Path]:
    """Write a new rule set (schema, rules, tests, README) into an empty or new directory.

    Args:
        directory: where to write; created (with its parents) if missing.

    Returns:
        The files written.

    Raises:
        InitError: the directory is not empty, or is a file.
    """
    if directory.exists() and not directory.is_dir():
        raise InitError(f"{directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise InitError(f"{directory} is not empty; init writes only into an empty or new directory")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in starter_files().items():
        path = directory / name
        with open(path, "xb") as out:  # "x": never overwrite a file that appeared meanwhile
            out.write(content)
        written.append(path)
    return written
