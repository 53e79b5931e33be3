"""YAML rule files → plain values plus where each value came from.

Rule files are untrusted: they are composed (never constructed) by ruamel.yaml's
safe YAML 1.2 composer, which also reads SPEC §2's `{birthday: date?}` flow maps
that PyYAML's 1.1 scanner rejects; no tag ever builds an object, scalars are resolved by our own small table (YAML 1.2 core:
`on`/`yes` stay strings, nothing becomes a timestamp, `19.90` becomes an exact
Decimal), aliases may not expand past a limit, and files have a size limit.
`load_rule_set` composes with libyaml when PyYAML has it (same nodes, ten times
faster; PyYAML's pure-Python scanner is the one that rejects those flow maps).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import yaml as pyyaml
from ruamel.yaml import YAML, events, nodes
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scanner import Scanner

from .errors import Diagnostic, Span

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_VALUES = 200_000  # expanded nodes per file: stops alias ("billion laughs") bombs
MAX_DEPTH = 64

# Sections whose entries are named and may be spread over several files.
NAMED_SECTIONS = ("schema", "params", "metrics", "classes", "segments", "campaigns")

Path_ = tuple  # a path into the merged document: ("classes", "rfm", 0, "when")

# libyaml (PyYAML's C parser) composes the same nodes, with the same character marks, about
# ten times faster than ruamel's pure-Python composer: most of `validate` on a large rule set
# (bench/bench_validate.py). Like ruamel it reads SPEC §2's `{birthday: date?}`, and it refuses
# nesting past 1000 levels itself. Without libyaml, ruamel composes everything.
_LIBYAML = bool(getattr(pyyaml, "__with_libyaml__", False))
_SCALAR_NODES = (nodes.ScalarNode, pyyaml.ScalarNode)
_SEQUENCE_NODES = (nodes.SequenceNode, pyyaml.SequenceNode)
_MAPPING_NODES = (nodes.MappingNode, pyyaml.MappingNode)

_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_DECIMAL_RE = re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


class _Lines:
    """Offsets ↔ 1-based line:col within one file's text."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, index) - 1
        return line + 1, index - self.starts[line] + 1


@dataclass(frozen=True)
class Origin:
    """Where one YAML value stands: its file, its node, and the node of its key."""

    file: str
    node: nodes.Node
    key_node: nodes.Node | None = None


@dataclass
class Positions:
    """Spans of every value of a merged rule set, by path."""

    origins: dict[Path_, Origin] = field(default_factory=dict)
    lines: dict[str, _Lines] = field(default_factory=dict)

    def _span(self, file: str, node: nodes.Node) -> Span:
        lines = self.lines[file]
        line, col = lines.position(node.start_mark.index)
        end_line, end_col = lines.position(node.end_mark.index)
        if end_line != line:  # show only the first line of a block
            end_line, end_col = line, len(lines.text[node.start_mark.index:].split("\n", 1)[0]) + col
        return Span(file, line, col, end_line, max(end_col, col + 1))

    def nearest(self, path: Path_) -> Path_:
        path = tuple(path)
        while path and path not in self.origins:
            path = path[:-1]
        return path

    def span(self, path: Path_) -> Span | None:
        origin = self.origins.get(self.nearest(path))
        return None if origin is None else self._span(origin.file, origin.node)

    def key_span(self, path: Path_) -> Span | None:
        origin = self.origins.get(self.nearest(path))
        if origin is None:
            return None
        return self._span(origin.file, origin.key_node or origin.node)

    def locator(self, path: Path_):
        """A parse.Locator for the expression text stored at `path`."""
        origin = self.origins[path]
        node, lines = origin.node, self.lines[origin.file]
        offsets = _align_scalar(node, lines.text)

        def locate(start: int, end: int) -> Span:
            if offsets is None:  # a value that cannot be found in its source: point at the scalar
                return self._span(origin.file, node)
            last = len(offsets) - 1
            start_index = offsets[min(max(start, 0), last)]
            end_index = offsets[min(max(end - 1, 0), last)] + 1 if end > start else start_index + 1
            line, col = lines.position(start_index)
            end_line, end_col = lines.position(end_index)
            if end_line != line:
                end_line, end_col = line, col + 1
            return Span(origin.file, line, col, end_line, max(end_col, col + 1))

        return locate


def _align_scalar(node: nodes.ScalarNode, text: str) -> list[int] | None:
    """The file index of each character of a scalar's value, or None where it cannot be found.

    The value's characters stand in the source in order, separated only by indentation,
    line folds, the block header and doubled quotes; in a double-quoted scalar an escape
    such as `\\u00e9` stands for one character (its index is the backslash's).
    """
    value = node.value
    start, stop = node.start_mark.index, node.end_mark.index
    style = node.style or ""
    skippable = " \t\r\n" + ("'" if style == "'" else "")
    offsets: list[int] = []
    i = start
    if style in ("'", '"'):
        i += 1
    elif style in ("|", ">"):
        newline = text.find("\n", start, stop)
        i = stop if newline < 0 else newline + 1
    for char in value:
        width = 1
        while i < stop:
            if style == '"' and text[i] == "\\":
                decoded, width = _escape(text, i)
                if decoded is None:  # an escaped line break stands for nothing
                    i += width
                    continue
                if decoded != char:
                    return None
                break
            if text[i] == char:
                width = 1
                break
            if char == " " and text[i] == "\n":  # a folded line break; in a flow scalar the
                # next line's indentation goes with it
                width = 1 if style in ("|", ">") else _past_blanks(text, i + 1) - i
                break
            if text[i] not in skippable:
                return None
            i += 1
        if i >= stop:
            return None
        offsets.append(i)
        i += width
    return offsets or [start]


def _past_blanks(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t":
        at += 1
    return at


def _escape(text: str, backslash: int) -> tuple[str | None, int]:
    """The character a double-quoted scalar's escape at `backslash` stands for (None: an
    escaped line break), and the escape's length; the tables are the YAML scanner's."""
    code = text[backslash + 1:backslash + 2]
    if code in Scanner.ESCAPE_REPLACEMENTS:
        return Scanner.ESCAPE_REPLACEMENTS[code], 2
    if code in Scanner.ESCAPE_CODES:
        digits = Scanner.ESCAPE_CODES[code]
        hex_digits = text[backslash + 2:backslash + 2 + digits]
        return chr(int(hex_digits, 16)), 2 + digits
    if code in ("\r", "\n"):  # the line break and the next line's indentation stand for nothing
        after = backslash + (3 if text[backslash + 1:backslash + 3] == "\r\n" else 2)
        return None, _past_blanks(text, after) - backslash
    return "\\", 1  # not an escape the scanner took: the value has no character for it


def _scalar_value(node: nodes.ScalarNode):
    text = node.value
    if node.style:  # quoted or block: always a string
        return text
    if _NULL_RE.match(text):
        return None
    if _BOOL_RE.match(text):
        return text.lower() == "true"
    if _INT_RE.match(text):
        return int(text)
    if _DECIMAL_RE.match(text):
        return Decimal(text)
    return text


class _Budget:
    def __init__(self):
        self.values = 0


class _TooLarge(Exception):
    def __init__(self, node: nodes.Node, message: str):
        self.node, self.message = node, message


def _to_plain(node: nodes.Node, path: Path_, file: str, positions: Positions, budget: _Budget,
              diagnostics: list[Diagnostic], key_node: nodes.Node | None = None):
    budget.values += 1
    if budget.values > MAX_VALUES:
        raise _TooLarge(node, f"the file expands to more than {MAX_VALUES} values (an alias bomb?)")
    if len(path) > MAX_DEPTH:
        raise _TooLarge(node, f"the file nests deeper than {MAX_DEPTH} levels")
    positions.origins[path] = Origin(file, node, key_node)
    if isinstance(node, _SCALAR_NODES):
        return _scalar_value(node)
    if isinstance(node, _SEQUENCE_NODES):
        return [_to_plain(item, path + (i,), file, positions, budget, diagnostics)
                for i, item in enumerate(node.value)]
    result: dict = {}
    seen: dict[str, nodes.Node] = {}
    for key, value in node.value:
        if not isinstance(key, _SCALAR_NODES):
            diagnostics.append(Diagnostic("MR104", "a key must be a plain name, not a list or a map",
                                          positions._span(file, key)))
            continue
        name = key.value
        if key.tag == "tag:yaml.org,2002:merge":
            diagnostics.append(Diagnostic("MR104", "YAML merge keys (<<) are not supported in rule files",
                                          positions._span(file, key), hint="write the entries out"))
            continue
        if name in seen:
            diagnostics.append(Diagnostic("MR103", f"duplicate key '{name}'", positions._span(file, key),
                                          related=(("first defined here", positions._span(file, seen[name])),)))
            continue
        seen[name] = key
        result[name] = _to_plain(value, path + (name,), file, positions, budget, diagnostics, key)
    return result


def _decode(raw: bytes, file: str) -> tuple[str | None, Diagnostic | None]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        before = raw[:error.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        return None, Diagnostic("MR102", f"the file is not UTF-8 (byte 0x{raw[error.start]:02x})",
                                Span.point(file, line, col), hint="save the file as UTF-8")


def _yaml_error(error: MarkedYAMLError, file: str, text: str = "") -> Diagnostic:
    mark = error.problem_mark or error.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = error.problem or "invalid YAML"
    hint = None
    # ruamel writes the tab as the two characters \t ("found character '\t' that cannot …"),
    # libyaml does not name the character at all: look at the text under the mark.
    at_tab = mark is not None and text[mark.index:mark.index + 1] == "\t"
    if at_tab or "\t" in problem or "\\t" in problem or "tab" in problem:
        hint = "YAML indents with spaces, never tabs"
    elif "could not find expected ':'" in problem or "mapping values are not allowed" in problem:
        hint = "an expression containing ': ' or starting with a quote must be quoted as a whole"
    elif "did not find expected key" in problem or "found character that cannot start" in problem:
        hint = "check the indentation and quote the expression"
    message = problem if not error.context else f"{error.context}: {problem}"
    return Diagnostic("MR101", f"invalid YAML: {message}", Span.point(file, line, col), hint=hint)


_FLOW_BRACKETS = re.compile(r"[\[\]{}]")


def _flow_too_deep(text: str, file: str) -> Diagnostic | None:
    """`[[[[…` deeper than MAX_DEPTH, found before ruamel sees it: its scanner spends time
    quadratic in the open brackets of a line. Quotes are ignored, which only errs on the
    side of counting a level too many in a string of unbalanced brackets."""
    depth = 0
    for match in _FLOW_BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _Lines(text).position(match.start())
                return Diagnostic("MR105", f"the file nests deeper than {MAX_DEPTH} levels",
                                  Span.point(file, line, col))
        elif depth:
            depth -= 1
    return None


def _too_deep(text: str, file: str) -> Diagnostic:
    """Where a file first nests deeper than MAX_DEPTH, found by the parser's flat event stream."""
    depth, line, col = 0, 1, 1
    try:
        for event in YAML(typ="safe", pure=True).parse(text):
            if isinstance(event, (events.MappingStartEvent, events.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = event.start_mark.line + 1, event.start_mark.column + 1
                    break
            elif isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
                depth -= 1
    except YAMLError:
        pass
    return Diagnostic("MR105", f"the file nests deeper than {MAX_DEPTH} levels", Span.point(file, line, col))


@dataclass
class LoadedFile:
    file: str
    data: dict | None
    origins: dict[Path_, Origin] = field(default_factory=dict)  # by path inside this file


def load_file(path: Path, display: str, positions: Positions, diagnostics: list[Diagnostic],
              fast: bool = False) -> LoadedFile:
    """Read one YAML file into plain values; problems go to `diagnostics`.

    With `fast`, libyaml composes the file when PyYAML has it (nodes are then PyYAML's,
    with the same attributes as ruamel's).
    """
    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        diagnostics.append(Diagnostic("MR105", f"the file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}",
                                      Span.point(display, 1, 1)))
        return LoadedFile(display, None)
    text, problem = _decode(raw, display)
    if problem:
        diagnostics.append(problem)
        # The line is still shown under the message, the bad byte as U+FFFD.
        positions.lines[display] = _Lines(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace"))
        return LoadedFile(display, None)
    positions.lines[display] = _Lines(text)
    too_deep = _flow_too_deep(text, display)
    if too_deep:
        diagnostics.append(too_deep)
        return LoadedFile(display, None)
    try:
        if fast and _LIBYAML:
            node = pyyaml.compose(text, Loader=pyyaml.CSafeLoader)
        else:
            node = YAML(typ="safe", pure=True).compose(text)
    except (MarkedYAMLError, pyyaml.MarkedYAMLError) as error:
        if "maximum nesting depth" in str(error.problem):  # libyaml's own limit
            diagnostics.append(_too_deep(text, display))
        else:
            diagnostics.append(_yaml_error(error, display, text))
        return LoadedFile(display, None)
    except (YAMLError, pyyaml.YAMLError) as error:
        # A reader error (a control character) knows only its character position.
        position = getattr(error, "position", None)
        line, col = _Lines(text).position(position) if isinstance(position, int) else (1, 1)
        problem = getattr(error, "reason", None) or str(error).split("\n")[0]
        diagnostics.append(Diagnostic("MR101", f"invalid YAML: {problem}", Span.point(display, line, col)))
        return LoadedFile(display, None)
    except RecursionError:  # the composer recurses per level: `[[[[…` thousands deep
        diagnostics.append(_too_deep(text, display))
        return LoadedFile(display, None)
    if node is None:
        return LoadedFile(display, {})
    if not isinstance(node, _MAPPING_NODES):
        diagnostics.append(Diagnostic("MR104", "a rule file must be a map of sections (schema:, metrics:, …)",
                                      positions._span(display, node)))
        return LoadedFile(display, None)
    file_positions = Positions(lines=positions.lines)
    try:
        data = _to_plain(node, (), display, file_positions, _Budget(), diagnostics)
    except _TooLarge as error:
        diagnostics.append(Diagnostic("MR105", error.message, positions._span(display, error.node)))
        return LoadedFile(display, None)
    except RecursionError:
        diagnostics.append(Diagnostic("MR105", "the file nests too deeply", Span.point(display, 1, 1)))
        return LoadedFile(display, None)
    positions.origins.update({(display,) + p: o for p, o in file_positions.origins.items()})
    return LoadedFile(display, data, file_positions.origins)


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a rule set: every *.yaml / *.yml but the *.test.yaml files, sorted."""
    if directory.is_file():
        return [directory]
    files = [p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
             and not p.name.endswith((".test.yaml", ".test.yml")) and not any(
                 part.startswith(".") for part in p.relative_to(directory).parts)]
    return sorted(files)


@dataclass
class LoadedRuleSet:
    """The merged document, where each value came from, and the text of every file."""

    data: dict
    positions: Positions
    sources: dict[str, str]
    files: list[str]
    diagnostics: list[Diagnostic]


def _display_name(path: Path, base: Path | None) -> str:
    try:
        return str(path.relative_to(base)) if base else str(path)
    except ValueError:
        return str(path)


def load_rule_set(directory: Path, base: Path | None = None) -> LoadedRuleSet:
    """Load and merge every rule file of a directory; duplicates name both places.

    Args:
        directory: a rule-set directory (or a single file).
        base: paths in diagnostics are shown relative to it (default: as given).
    """
    diagnostics: list[Diagnostic] = []
    positions = Positions()
    merged: dict = {}
    merged_origins: dict[Path_, Origin] = {}
    files = rule_files(directory)
    if not files:
        diagnostics.append(Diagnostic("MR106", f"no rule files (*.yaml) in {directory}",
                                      hint="a rule set is a directory of *.yaml files, e.g. rules/"))
    names: list[str] = []
    for path in files:
        display = _display_name(path, base)
        names.append(display)
        loaded = load_file(path, display, positions, diagnostics, fast=True)
        if not loaded.data:
            continue
        by_section: dict[str, dict[Path_, Origin]] = {}
        for origin_path, origin in loaded.origins.items():
            if origin_path:
                by_section.setdefault(origin_path[0], {})[origin_path] = origin
        for section, value in loaded.data.items():
            _merge_section(section, value, display, positions, merged, merged_origins, diagnostics,
                           by_section.get(section, {}))
    positions.origins = merged_origins
    sources = {name: lines.text for name, lines in positions.lines.items()}
    return LoadedRuleSet(merged, positions, sources, names, diagnostics)


def _merge_section(section, value, file, positions: Positions, merged: dict, origins: dict, diagnostics,
                   file_origins: dict[Path_, Origin]):
    """Merge one section of one file; `file_origins` are that section's origins in the file.

    Origins are grouped once per file and per name: scanning every origin of the rule set
    for each section and name made loading quadratic in the size of the rule set.
    """
    if section in NAMED_SECTIONS and isinstance(value, dict):
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            return
        origins.setdefault((section,), file_origins[(section,)])
        by_name: dict[object, list[tuple[Path_, Origin]]] = {}
        for origin_path, origin in file_origins.items():
            if len(origin_path) > 1:
                by_name.setdefault(origin_path[1], []).append((origin_path, origin))
        for name, entry in value.items():
            if name in target:
                first = origins[(section, name)]
                diagnostics.append(Diagnostic(
                    "MR103", f"'{name}' is defined twice in {section}",
                    positions._span(file, file_origins[(section, name)].key_node),
                    related=(("first defined here", positions._span(first.file, first.key_node)),)))
                continue
            target[name] = entry
            origins.update(by_name.get(name, ()))
        return
    if section in merged:
        first = origins[(section,)]
        diagnostics.append(Diagnostic(
            "MR103", f"section '{section}' is given in two files",
            positions._span(file, file_origins[(section,)].key_node),
            related=(("first given here", positions._span(first.file, first.key_node)),),
            hint=f"keep '{section}' in one file"))
        return
    merged[section] = value
    origins.update(file_origins)
