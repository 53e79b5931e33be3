"""Rule sets named by a git revision, `REV:path` (`main:rules`, `HEAD~1:rules`).

The files are read out of the repository's object store with git itself
(`git rev-parse`, `git ls-tree`, `git cat-file`) into a temporary directory. The
user's working tree, index and HEAD are never touched: nothing is checked out.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Only these files matter to a rule set (rule files and their *.test.yaml files).
_RULE_SUFFIXES = (".yaml", ".yml")
_REGULAR_MODES = ("100644", "100755")
MAX_FILES = 10_000


class GitSourceError(Exception):
    """A `REV:path` that cannot be read: no git, no repository, no such revision or path."""


@dataclass(frozen=True)
class GitSpec:
    """`REV:path`, with the path relative to the repository root (git's own reading)."""

    rev: str
    path: str


@dataclass(frozen=True)
class RuleSource:
    """A rule set on disk, ready for `check_rule_set(path, base=base)`.

    `label` is what the user wrote; `commit` the revision it resolved to (None for a
    plain directory).
    """

    label: str
    path: Path
    base: Path | None = None
    commit: str | None = None


def parse_git_spec(text: str) -> GitSpec | None:
    """`REV:path` → GitSpec; None when `text` names an existing path or has no colon.

    >>> parse_git_spec("main:rules")
    GitSpec(rev='main', path='rules')
    >>> parse_git_spec("HEAD~1:./rules/") is None
    False
    """
    if os.path.exists(text) or ":" not in text:
        return None
    rev, _, path = text.partition(":")
    if not rev:
        return None
    return GitSpec(rev, path)


def _git(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    except FileNotFoundError:
        raise GitSourceError("git is not installed (needed to read a REV:path rule set)") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitSourceError(message[-1] if message else f"git {args[0]} failed")
    return done.stdout


def _repository_path(spec: GitSpec, cwd: Path) -> tuple[Path, str]:
    """The repository root, and the spec's path relative to it.

    As in `git show REV:path`, a path is relative to the root, unless it starts with
    ./ or ../ (then it is relative to the current directory).
    """
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd).decode().strip())
    except GitSourceError:
        raise GitSourceError(f"'{spec.rev}:{spec.path}' names a git revision, but {cwd} is not inside a "
                             "git repository") from None
    path = spec.path.replace(os.sep, "/")
    if path.startswith(("./", "../")) or path in (".", ".."):
        prefix = _git(["rev-parse", "--show-prefix"], cwd).decode().strip()
        path = posixpath.join(prefix, path)
    path = posixpath.normpath(path) if path else "."
    if path.startswith("../") or path == ".." or posixpath.isabs(path):
        raise GitSourceError(f"'{spec.path}' is outside the repository")
    return top, "" if path == "." else path


def _resolve(rev: str, top: Path) -> str:
    for peel in ("^{commit}", "^{tree}"):
        try:
            return _git(["rev-parse", "--verify", "--quiet", "--end-of-options", rev + peel], top).decode().strip()
        except GitSourceError:
            continue
    raise GitSourceError(f"unknown git revision '{rev}'")


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and all(part not in ("", ".", "..", ".git") for part in parts)


def _read_blobs(oids: list[str], top: Path) -> list[bytes]:
    """The contents of many blobs with one `git cat-file --batch`."""
    output = _git(["cat-file", "--batch"], top, ("\n".join(oids) + "\n").encode())
    contents, pos = [], 0
    for oid in oids:
        header_end = output.index(b"\n", pos)
        fields = output[pos:header_end].split()
        if len(fields) != 3 or fields[1] != b"blob":
            raise GitSourceError(f"git object {oid} is not a file")
        size = int(fields[2])
        start = header_end + 1
        contents.append(output[start:start + size])
        pos = start + size + 1
    return contents


def export_rule_set(spec: GitSpec, destination: Path, cwd: Path | None = None) -> RuleSource:
    """Write the rule files of `spec` (as they are in that revision) under `destination`.

    The files keep their repository paths (`destination/rules/tiers.yaml`), so
    diagnostics name them as the user knows them.

    Raises:
        GitSourceError: no git, not a repository, an unknown revision or path.
    """
    cwd = cwd or Path.cwd()
    top, path = _repository_path(spec, cwd)
    commit = _resolve(spec.rev, top)
    target = f"{commit}:{path}" if path else f"{commit}^{{tree}}"
    try:
        kind = _git(["cat-file", "-t", target], top).decode().strip()
    except GitSourceError:
        raise GitSourceError(f"'{spec.path or '.'}' does not exist in revision '{spec.rev}'") from None
    label = f"{spec.rev}:{spec.path}"
    if kind == "blob":
        file = destination / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(_read_blobs([target], top)[0])
        return RuleSource(label, file, destination, commit)
    if kind != "tree":
        raise GitSourceError(f"'{label}' is a {kind}, not a directory or file")
    listing = _git(["ls-tree", "-r", "-z", "--full-tree", target], top)
    entries = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, name_bytes = record.partition(b"\t")
        mode, kind, oid = meta.decode().split()
        name = name_bytes.decode("utf-8", "surrogateescape")
        if kind == "blob" and mode in _REGULAR_MODES and name.endswith(_RULE_SUFFIXES) and _safe_relative(name):
            entries.append((name, oid))
    if len(entries) > MAX_FILES:
        raise GitSourceError(f"'{label}' holds {len(entries)} YAML files; the limit is {MAX_FILES}")
    root = destination / path if path else destination
    root.mkdir(parents=True, exist_ok=True)
    for (name, _), content in zip(entries, _read_blobs([oid for _, oid in entries], top) if entries else []):
        file = root / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
    return RuleSource(label, root, destination, commit)


@contextlib.contextmanager
def open_rule_source(text: str, cwd: Path | None = None) -> Iterator[RuleSource]:
    """The rule set named by `text`: a directory or file as it is, or `REV:path` read out of
    git into a temporary directory that is removed afterwards.

    An existing path always wins, so a directory whose name contains a colon still works.
    """
    spec = parse_git_spec(text)
    if spec is None:
        path = Path(text)
        if not path.exists():
            raise GitSourceError(f"'{text}' is neither a directory nor a REV:path git revision")
        yield RuleSource(text, path)
        return
    with tempfile.TemporaryDirectory(prefix="memberrules-git-") as temp:
        yield export_rule_set(spec, Path(temp), cwd)
