"""Positions and diagnostics, and the text, JSON and GitHub renderings of them.

A Diagnostic is data: no colours and no positions inside its message. Renderers
turn it into what a person (text), a tool (json) or GitHub (annotations) reads.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, counted in characters."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, file: str, line: int, col: int, width: int = 1) -> Span:
        return cls(file, line, col, line, col + max(width, 1))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: a stable code (MR1xx shape, MR2xx syntax, MR3xx names and types,
    MR4xx rule-set logic, MR5xx data, MR59x the run), where it is, and what to do about it."""

    code: str
    message: str
    span: Span | None = None
    severity: str = "error"
    hint: str | None = None
    related: tuple[tuple[str, Span], ...] = field(default_factory=tuple)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class DiagnosticError(Exception):
    """Raised where work cannot go on; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.message for d in self.diagnostics))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelled word, if one is close enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def display_width(text: str) -> int:
    """Terminal columns of a text: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _caret_line(source_line: str, span: Span) -> str:
    start = span.col - 1
    end = span.end_col - 1 if span.end_line == span.line else len(source_line)
    end = max(end, start + 1)
    pad = display_width(source_line[:start].replace("\t", " "))
    width = max(display_width(source_line[start:end]), 1)
    return " " * pad + "^" * width


def render_text(diagnostic: Diagnostic, sources: Mapping[str, str]) -> str:
    """The human form: `file:line:col: error: message [CODE]`, the line, a caret, a hint."""
    head = f"{diagnostic.severity}: {diagnostic.message} [{diagnostic.code}]"
    span = diagnostic.span
    if span is None:
        lines = [head]
    else:
        lines = [f"{span}: {head}"]
        text = sources.get(span.file)
        # Lines end at "\n" only, as spans count them: str.splitlines() also breaks at \x0c,
        # \x1c-\x1e, \x85 and \u2028, which would show the wrong line under the message.
        source_lines = [line.removesuffix("\r") for line in text.split("\n")] if text is not None else []
        if 0 < span.line <= len(source_lines):
            source_line = source_lines[span.line - 1].replace("\t", " ")
            gutter = " " * len(str(span.line))
            lines += [
                f"{gutter} |",
                f"{span.line} | {source_line}",
                f"{gutter} | {_caret_line(source_line, span)}",
            ]
    if diagnostic.hint:
        lines.append(f"   = hint: {diagnostic.hint}")
    for note, related_span in diagnostic.related:
        lines.append(f"   = note: {note} ({related_span})")
    return "\n".join(lines)


def to_json(diagnostic: Diagnostic) -> dict:
    span = diagnostic.span
    return {
        "code": diagnostic.code,
        "severity": diagnostic.severity,
        "message": diagnostic.message,
        "file": span.file if span else None,
        "line": span.line if span else None,
        "col": span.col if span else None,
        "end_line": span.end_line if span else None,
        "end_col": span.end_col if span else None,
        "hint": diagnostic.hint,
        "related": [{"note": note, "at": str(where)} for note, where in diagnostic.related],
    }


def _github_escape(text: str, is_property: bool = False) -> str:
    # https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if is_property:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(diagnostic: Diagnostic) -> str:
    """A GitHub Actions workflow command, shown as an annotation on the pull request."""
    level = "error" if diagnostic.is_error else "warning"
    message = f"{diagnostic.code}: {diagnostic.message}"
    if diagnostic.hint:
        message += f"\nhint: {diagnostic.hint}"
    span = diagnostic.span
    if span is None:
        return f"::{level}::{_github_escape(message)}"
    props = (f"file={_github_escape(span.file, True)},line={span.line},col={span.col},"
             f"endLine={span.end_line},endColumn={span.end_col},title={diagnostic.code}")
    return f"::{level} {props}::{_github_escape(message)}"


def render(diagnostics: list[Diagnostic], fmt: str, sources: Mapping[str, str]) -> str:
    """All diagnostics in one of the formats `text`, `json`, `github`."""
    if fmt == "json":
        return json.dumps([to_json(d) for d in diagnostics], ensure_ascii=False, indent=2)
    if fmt == "github":
        return "\n".join(render_github(d) for d in diagnostics)
    return "\n\n".join(render_text(d, sources) for d in diagnostics)


def sort_key(diagnostic: Diagnostic) -> tuple:
    span = diagnostic.span
    if span is None:
        return ("", 0, 0, diagnostic.code)
    return (span.file, span.line, span.col, diagnostic.code)
