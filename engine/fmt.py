"""`memberrules fmt`: every expression of a rule set rewritten in canonical form.

The canonical text of an expression is `ast.to_source` of its parse. Only the
characters of the expression scalars change: the rest of each file (comments,
key order, indentation, flow maps, blank lines) is kept byte for byte, because
the new text is spliced into the file at the positions ruamel.yaml's composer
reports, instead of re-dumping the document (a round-trip dump re-indents
sequences and re-flows long flow maps). Each rewritten file is composed again
and compared with the original before it is written, so fmt cannot change a
value it did not mean to change.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML, nodes

from . import ast
from .check import check_rule_set
from .errors import Diagnostic, Span
from .load import Positions, _scalar_value, load_file, rule_files
from .parse import parse_expr

# Long expressions that the author already spread over several lines are wrapped
# again at this width; a one-line expression stays on one line, however long.
WRAP_WIDTH = 100

FilePath = tuple  # a path inside one file: ("classes", "rfm", 0, "when")


def expression_paths(data: dict) -> Iterator[FilePath]:
    """The paths of every expression of one rule file (its plain values), in file order.

    >>> list(expression_paths({"segments": {"vip": "'vip' in tags"}, "params": {"x": 1}}))
    [('segments', 'vip')]
    """
    if not isinstance(data, dict):
        return
    for section, value in data.items():
        if section == "metrics" and isinstance(value, dict):
            for name, metric in value.items():
                yield from _string_at(value, (name,), ("metrics",)) if not isinstance(metric, dict) \
                    else _string_at(metric, ("expr",), ("metrics", name))
        elif section == "tiers" and isinstance(value, dict):
            yield from _string_at(value, ("by",), ("tiers",))
            yield from _string_at(value, ("downgrade", "when"), ("tiers",))
            yield from _string_at(value, ("forecast", "earned"), ("tiers",))
        elif section == "classes" and isinstance(value, dict):
            for name, cases in value.items():
                if isinstance(cases, list):
                    for i, case in enumerate(cases):
                        yield from _string_at(case, ("when",), ("classes", name, i))
        elif section == "segments" and isinstance(value, dict):
            for name, segment in value.items():
                yield from _string_at(value, (name,), ("segments",)) if not isinstance(segment, dict) \
                    else _string_at(segment, ("when",), ("segments", name))
        elif section == "campaigns" and isinstance(value, dict):
            for name, campaign in value.items():
                yield from _string_at(campaign, ("when",), ("campaigns", name))
                yield from _string_at(campaign, ("action", "points"), ("campaigns", name))


def _string_at(value: object, steps: tuple, prefix: tuple) -> Iterator[FilePath]:
    for step in steps:
        if not isinstance(value, dict) or step not in value:
            return
        value = value[step]
    if isinstance(value, str):
        yield prefix + steps


@dataclass
class FileResult:
    """What fmt did (or would do) to one file."""

    file: str
    changed: bool = False
    skipped: bool = False  # left untouched because of errors
    expressions: int = 0  # expressions whose text changed


@dataclass
class FmtResult:
    files: list[FileResult]
    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        return [f.file for f in self.files if f.changed]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def format_rule_set(rules: Path, check: bool = False) -> FmtResult:
    """Rewrite every expression of a rule set in canonical form, file by file.

    A file with an error (YAML, shape, syntax, names or types) is reported and
    left untouched; the other files are still formatted.

    Args:
        rules: a rule-set directory, or one rule file.
        check: only report which files would change; write nothing.

    Returns:
        The files seen (changed, skipped), and the errors found.
    """
    checked = check_rule_set(rules)
    diagnostics = [d for d in checked.diagnostics if d.is_error]
    sources = dict(checked.sources)
    broken = {d.span.file for d in diagnostics if d.span is not None}
    results = []
    for path in rule_files(rules):
        display = str(path)
        result = FileResult(display)
        results.append(result)
        if display in broken:
            result.skipped = True
            continue
        outcome = format_file_text(path, display)
        sources.update(outcome.sources)
        if outcome.diagnostics:
            diagnostics += outcome.diagnostics
            result.skipped = True
            continue
        result.expressions = outcome.expressions
        if outcome.text is not None and outcome.text != outcome.original:
            result.changed = True
            if not check:
                write_atomically(path, outcome.encoded())
    return FmtResult(results, diagnostics, sources)


@dataclass
class _Outcome:
    original: str | None
    text: str | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str]
    expressions: int = 0
    bom: bool = False

    def encoded(self) -> bytes:
        return ("\ufeff" if self.bom else "").encode("utf-8") + (self.text or "").encode("utf-8")


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    path: FilePath
    canonical: str


def format_file_text(path: Path, display: str) -> _Outcome:
    """The canonical text of one rule file (or the diagnostics that stop it)."""
    diagnostics: list[Diagnostic] = []
    positions = Positions()
    loaded = load_file(path, display, positions, diagnostics)
    sources = {name: lines.text for name, lines in positions.lines.items()}
    if loaded.data is None or diagnostics:
        return _Outcome(None, None, [d for d in diagnostics if d.is_error], sources)
    text = positions.lines[display].text
    bom = path.read_bytes().startswith(b"\xef\xbb\xbf")
    edits: list[_Edit] = []
    renders: dict[FilePath, str] = {}
    for file_path in expression_paths(loaded.data):
        origin = positions.origins[(display,) + file_path]
        node = origin.node
        parsed = parse_expr(node.value, positions.locator((display,) + file_path))
        if parsed.expr is None:
            diagnostics += parsed.diagnostics
            continue
        canonical = ast.to_source(parsed.expr)
        again = parse_expr(canonical).expr
        if again != parsed.expr:  # a printer bug must never change a rule: refuse, loudly
            diagnostics.append(Diagnostic(
                "MR208", f"cannot format this expression safely (canonical text '{canonical}' reads differently)",
                positions.span((display,) + file_path), hint="please report this; the file is left as it is"))
            continue
        if _normalized_value(node) == canonical:
            continue
        start, end = _extent(node, text)
        edits.append(_Edit(start, end, file_path, canonical))
        renders[file_path] = _render(node, canonical, text, _in_flow(positions, display, file_path))
    if diagnostics:
        return _Outcome(text, None, diagnostics, sources)
    if not edits:
        return _Outcome(text, text, [], sources, 0, bom)
    new_text = _splice(text, edits, renders)
    if not _same_document(text, new_text, {e.path: e.canonical for e in edits}):
        # A style that reads back differently in this spot: fall back to double quotes.
        renders = {e.path: _double_quoted(e.canonical) for e in edits}
        new_text = _splice(text, edits, renders)
        if not _same_document(text, new_text, {e.path: e.canonical for e in edits}):
            return _Outcome(text, None, [Diagnostic(
                "MR208", "cannot format this file safely", Span.point(display, 1, 1),
                hint="please report this; the file is left as it is")], sources)
    return _Outcome(text, new_text, [], sources, len(edits), bom)


def _splice(text: str, edits: list[_Edit], renders: dict[FilePath, str]) -> str:
    parts, last = [], 0
    for edit in sorted(edits, key=lambda e: e.start):
        parts += [text[last:edit.start], renders[edit.path]]
        last = edit.end
    parts.append(text[last:])
    return "".join(parts)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace a file in one step: readers see the old or the new file, never half of one."""
    mode = path.stat().st_mode & 0o7777
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# -- scalar styles ---------------------------------------------------------------------------


def _normalized_value(node: nodes.ScalarNode) -> str:
    """The expression text of a scalar; a block scalar's final line break is not part of it."""
    return node.value.rstrip("\n") if node.style in ("|", ">") else node.value


def _extent(node: nodes.ScalarNode, text: str) -> tuple[int, int]:
    """The characters to replace: the scalar, without a block scalar's trailing blank lines."""
    start, end = node.start_mark.index, node.end_mark.index
    if node.style in ("|", ">"):
        end = start + len(text[start:end].rstrip())
    return start, end


def _in_flow(positions: Positions, display: str, file_path: FilePath) -> bool:
    for depth in range(len(file_path)):
        origin = positions.origins.get((display,) + file_path[:depth])
        if origin is not None and isinstance(origin.node, nodes.CollectionNode) and origin.node.flow_style:
            return True
    return False


def _column(text: str, index: int) -> int:
    return index - (text.rfind("\n", 0, index) + 1)


def _line_break(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _render(node: nodes.ScalarNode, canonical: str, text: str, in_flow: bool) -> str:
    style = node.style or ""
    start, end = _extent(node, text)
    newline = _line_break(text)
    if style in ("|", ">"):
        return _render_block(node, canonical, text[start:end], newline)
    if style == "'" and "'" not in canonical:
        return "'" + canonical + "'"
    if style == "" and is_plain_safe(canonical, in_flow):
        original = text[start:end]
        if "\n" not in original:
            return canonical
        # The author spread the expression over several lines: keep doing so.
        following = original.split("\n", 1)[1]
        indent = len(following) - len(following.lstrip(" "))
        lines = wrap_expression(canonical, WRAP_WIDTH - _column(text, start), WRAP_WIDTH - indent)
        return (newline + " " * indent).join(lines)
    return _double_quoted(canonical)


def _render_block(node: nodes.ScalarNode, canonical: str, original: str, newline: str) -> str:
    header, _, body = original.partition("\n")
    first = next((line for line in body.split("\n") if line.strip()), "")
    indent = len(first) - len(first.lstrip(" "))
    lines = wrap_expression(canonical, WRAP_WIDTH - indent, WRAP_WIDTH - indent)
    if len(lines) > 1 and node.style == "|":
        # In a literal block the line breaks stay in the value; folding reads them as spaces.
        header = header.replace("|", ">", 1)
    return header.rstrip("\r") + newline + newline.join(" " * indent + line for line in lines)


_DOUBLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _double_quoted(text: str) -> str:
    body = "".join(_DOUBLE_ESCAPES.get(ch, ch if ch.isprintable() else f"\\u{ord(ch):04x}") for ch in text)
    return '"' + body + '"'


# YAML 1.1 readers (PyYAML, many editors) take these for booleans.
_YAML11_WORDS = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")


def is_plain_safe(text: str, in_flow: bool = False) -> bool:
    """Whether `text` reads back as the same string when written as a plain YAML scalar.

    >>> is_plain_safe("frequency >= 8"), is_plain_safe("'vip' in tags"), is_plain_safe("12")
    (True, False, False)
    """
    if not text or text != text.strip() or "\n" in text or "\t" in text:
        return False
    if text[0] in "?:-" and (len(text) == 1 or text[1] == " "):
        return False
    if text[0] in ",[]{}#&*!|>'\"%@`":
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    if in_flow and any(ch in text for ch in ",[]{}"):
        return False
    if not all(ch.isprintable() for ch in text):
        return False
    if _YAML11_WORDS.match(text):
        return False
    return isinstance(_scalar_value(nodes.ScalarNode("tag:yaml.org,2002:str", text)), str)


def wrap_expression(text: str, first_width: int, width: int) -> list[str]:
    """Canonical text cut at spaces into lines of at most `width` characters where possible.

    Each line ends at the loosest place that fits: outside parentheses first, and before
    `or`, then `and`, then a comparison, then arithmetic. Never cuts inside a string
    literal, nor before a character that would start something else at the beginning
    of a YAML line (`-`, `#`, …).

    >>> wrap_expression("count(orders within 30d) >= 8 and vip", 30, 30)
    ['count(orders within 30d) >= 8', 'and vip']
    """
    cuts = _cut_points(text)
    lines: list[str] = []
    begin, limit = 0, max(first_width, 20)
    while len(text) - begin > limit:
        fitting = [cut for cut in cuts if begin < cut <= begin + limit]
        if fitting:
            cut = min(fitting, key=lambda c: (cuts[c], -c))
        else:
            cut = next((c for c in cuts if c > begin), None)
            if cut is None:
                break
        lines.append(text[begin:cut])
        begin, limit = cut + 1, max(width, 20)
    lines.append(text[begin:])
    return lines


# How good a line break before each word is: breaking before a looser operator reads better.
_BREAK_BEFORE = {"or": 0, "and": 1, "not": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
                 "in": 3, "is": 3, "??": 4, "+": 5, "*": 6, "/": 6, "within": 7, "where": 7, "over": 7}


def _cut_points(text: str) -> dict[int, tuple[int, int]]:
    """The spaces where a line may break, each with its rank (lower is a better break)."""
    cuts: dict[int, tuple[int, int]] = {}
    quote, depth, i = None, 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == " " and i + 1 < len(text) and text[i + 1] not in " -?:#%!&*|>'\"@`[]{},":
            word = text[i + 1:].split(" ", 1)[0]
            cuts[i] = (depth, _BREAK_BEFORE.get(word, 9))
        i += 1
    return cuts


# -- the safety net --------------------------------------------------------------------------


def _tree(text: str) -> tuple:
    """A document as nested tuples: ("map", ((key, value), …)), ("seq", (…)), ("scalar", text, plain)."""

    def convert(node: nodes.Node) -> tuple:
        if isinstance(node, nodes.ScalarNode):
            return ("scalar", node.value, not node.style)
        if isinstance(node, nodes.SequenceNode):
            return ("seq", tuple(convert(item) for item in node.value))
        return ("map", tuple((convert(key), convert(value)) for key, value in node.value))

    return convert(YAML(typ="safe", pure=True).compose(text))


def _without(tree: tuple, changed: dict[FilePath, str], path: FilePath = ()) -> tuple | None:
    """The tree with the scalars at `changed` blanked out."""
    if path in changed:
        return None
    if tree[0] == "map":
        return ("map", tuple((key, _without(value, changed, path + (key[1],))) for key, value in tree[1]))
    if tree[0] == "seq":
        return ("seq", tuple(_without(item, changed, path + (i,)) for i, item in enumerate(tree[1])))
    return tree


def _at(tree: tuple, path: FilePath) -> tuple | None:
    for step in path:
        if tree[0] == "map":
            tree = next((value for key, value in tree[1] if key[1] == step), None)
        elif tree[0] == "seq" and isinstance(step, int) and step < len(tree[1]):
            tree = tree[1][step]
        else:
            return None
        if tree is None:
            return None
    return tree


def _same_document(old_text: str, new_text: str, changed: dict[FilePath, str]) -> bool:
    """Whether the new text holds the same document but for the expressions in `changed`,
    which must now read as their canonical text."""
    try:
        old, new = _tree(old_text), _tree(new_text)
    except Exception:  # noqa: BLE001 - text that cannot be read back is not the same document
        return False
    for path, canonical in changed.items():
        scalar = _at(new, path)
        if scalar is None or scalar[0] != "scalar" or scalar[1].rstrip("\n") != canonical:
            return False
        if scalar[2] and not isinstance(_scalar_value(nodes.ScalarNode("tag:yaml.org,2002:str", scalar[1])), str):
            return False
    return _without(old, changed) == _without(new, changed)
