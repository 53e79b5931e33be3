"""Expression text → Lark tree → ast, with Lark's errors turned into Diagnostics."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import Diagnostic, Span

MAX_EXPRESSION_CHARS = 20_000
MAX_NESTING = 64
# Levels of operators in one tree (`a and b and …` nests one level per `and`). Every later
# stage (checker, engines, printer) recurses per level; this keeps them far from Python's
# recursion limit.
MAX_TREE_DEPTH = 100

# grammar/ sits beside engine/ both in the checkout and in the installed package.
GRAMMAR_PATH = Path(__file__).resolve().parent.parent / "grammar" / "memberrules.lark"

# Locates the characters [start, end) of the expression text in its file.
Locator = Callable[[int, int], Span]


def text_locator(text: str, file: str = "<expr>") -> Locator:
    """Positions inside a bare expression string (used when it has no YAML origin)."""

    def locate(start: int, end: int) -> Span:
        line = text.count("\n", 0, start) + 1
        col = start - (text.rfind("\n", 0, start) + 1) + 1
        end_line = text.count("\n", 0, end) + 1
        end_col = end - (text.rfind("\n", 0, end) + 1) + 1
        return Span(file, line, col, end_line, max(end_col, col + 1) if end_line == line else end_col)

    return locate


@functools.cache
def _parser() -> Lark:
    grammar = GRAMMAR_PATH.read_text("utf-8")
    # Every token stays in the tree (keep_all_tokens), so _ToAst.build takes a node's span from
    # its first and last token; Lark's propagate_positions did the same at twice the parse time
    # (bench/bench_validate.py). _ToAst drops the anonymous tokens ("(", "and", …) itself.
    return Lark(grammar, parser="lalr", keep_all_tokens=True, maybe_placeholders=True)


@functools.cache
def _named_terminals() -> frozenset[str]:
    """The terminals a tree keeps by Lark's rules: declared by name, not starting with '_'."""
    grammar = GRAMMAR_PATH.read_text("utf-8")
    names = re.findall(r"^([A-Z][A-Z0-9_]*)(?:\.\d+)?\s*:", grammar, flags=re.MULTILINE)
    return frozenset(names)


@dataclass(frozen=True)
class _Meta:
    """Where a tree stands in the expression text, as Lark's meta would say."""

    start_pos: int
    end_pos: int


@dataclass
class ParseResult:
    expr: ast.Expr | None
    diagnostics: list[Diagnostic] = field(default_factory=list)


_DROPPED = object()  # an anonymous token: "(", ",", "and", …


class _SyntaxProblem(Exception):
    """A construct the grammar accepts but the language does not (e.g. `within` on `round`)."""

    def __init__(self, message: str, start: int, end: int, hint: str | None = None):
        super().__init__(message)
        self.message, self.start, self.end, self.hint = message, start, end, hint


_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_ESCAPE_RE = re.compile(r"\\(.)")


def _unescape(token: Token) -> str:
    body = str(token)[1:-1]

    def replace(match: re.Match) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            offset = token.start_pos + 1 + match.start()
            raise _SyntaxProblem(f"unknown escape '\\{char}' in a string", offset, offset + 2,
                                 "escapes are \\\\ \\' \\\" \\n \\t \\r")
        return _ESCAPES[char]

    return _ESCAPE_RE.sub(replace, body)


_DURATION_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _span_of(locate: Locator, meta_or_token) -> Span:
    return locate(meta_or_token.start_pos, meta_or_token.end_pos)


class _ToAst:
    """One-liners from grammar aliases to ast nodes; spans come from the tokens under each node."""

    def __init__(self, locate: Locator):
        self.locate = locate
        self.named = _named_terminals()

    def build(self, tree: Tree) -> tuple[object, int, int]:
        """The node of a tree, children first, with the text offsets it covers."""
        children: list = []
        start = end = None
        for child in tree.children:
            if isinstance(child, Tree):
                value, child_start, child_end = self.build(child)
            elif isinstance(child, Token):
                value, child_start, child_end = child, child.start_pos, child.end_pos
                if child.type not in self.named:
                    value = _DROPPED
            else:  # None: an absent [optional] part
                children.append(child)
                continue
            if start is None:
                start = child_start
            end = child_end
            if value is not _DROPPED:
                children.append(value)
        method = getattr(self, tree.data, None)
        if method is None:  # `( expr )`: the expression keeps its own span
            return children[0], start, end
        return method(_Meta(start, end), children), start, end

    def _span(self, meta) -> Span:
        return _span_of(self.locate, meta)

    def _literal(self, meta, kind: str, value) -> ast.Literal:
        return ast.Literal(kind, value, span=self._span(meta))

    def int_literal(self, meta, children):
        return self._literal(meta, "int", int(children[0]))

    def decimal_literal(self, meta, children):
        return self._literal(meta, "decimal", Decimal(str(children[0])))

    def string_literal(self, meta, children):
        return self._literal(meta, "string", _unescape(children[0]))

    def duration_literal(self, meta, children):
        text = str(children[0])
        seconds = int(text[:-1]) * _DURATION_SECONDS[text[-1]]
        if seconds > 200 * 365 * 86400:
            raise _SyntaxProblem(f"duration {text} is longer than 200 years", meta.start_pos, meta.end_pos)
        return self._literal(meta, "duration", dt.timedelta(seconds=seconds))

    def date_literal(self, meta, children):
        text = str(children[0])[1:]
        try:
            if "T" in text:
                return self._literal(meta, "timestamp", dt.datetime.fromisoformat(text))
            return self._literal(meta, "date", dt.date.fromisoformat(text))
        except ValueError:
            raise _SyntaxProblem(f"@{text} is not a valid date", meta.start_pos, meta.end_pos,
                                 "write dates as @YYYY-MM-DD or @YYYY-MM-DDTHH:MM") from None

    def true_literal(self, meta, children):
        return self._literal(meta, "bool", True)

    def false_literal(self, meta, children):
        return self._literal(meta, "bool", False)

    def null_literal(self, meta, children):
        return self._literal(meta, "null", None)

    def list_literal(self, meta, children):
        return ast.ListLiteral(tuple(c for c in children if c is not None), span=self._span(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), span=self._span(meta))

    def attribute(self, meta, children):
        return ast.Attribute(str(children[0]), str(children[1]), span=self._span(meta))

    def negate(self, meta, children):
        return ast.Unary("-", children[0], span=self._span(meta))

    def not_op(self, meta, children):
        return ast.Unary("not", children[0], span=self._span(meta))

    def and_op(self, meta, children):
        return ast.BinaryOp("and", children[0], children[1], span=self._span(meta))

    def or_op(self, meta, children):
        return ast.BinaryOp("or", children[0], children[1], span=self._span(meta))

    def coalesce_op(self, meta, children):
        return ast.BinaryOp("??", children[0], children[1], span=self._span(meta))

    def binary(self, meta, children):
        left, op, right = children
        return ast.BinaryOp(str(op), left, right, span=self._span(meta))

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(str(op), left, right, span=self._span(meta))

    def in_op(self, meta, children):
        return ast.Compare("in", children[0], children[1], span=self._span(meta))

    def not_in_op(self, meta, children):
        return ast.Compare("not in", children[0], children[1], span=self._span(meta))

    def is_null(self, meta, children):
        return ast.IsNull(children[0], False, span=self._span(meta))

    def is_not_null(self, meta, children):
        return ast.IsNull(children[0], True, span=self._span(meta))

    def within_clause(self, meta, children):
        return ("within", children[0], meta)

    def where_clause(self, meta, children):
        return ("where", children[0], meta)

    def over_clause(self, meta, children):
        return ("over", str(children[0]), meta)

    def arguments(self, meta, children):
        return [c for c in children if not isinstance(c, tuple)], [c for c in children if isinstance(c, tuple)]

    def call(self, meta, children):
        func_token, arguments = children
        func = str(func_token)
        args, clauses = arguments if arguments is not None else ([], [])
        return _build_call(func, args, clauses, self._span(meta), meta)


def _clause_map(func: str, clauses: list[tuple], allowed: tuple[str, ...]) -> dict:
    found: dict = {}
    for kind, value, meta in clauses:
        if kind not in allowed:
            hint = {
                "over": "'over members' goes with avg, sum, min, max, count and quantile",
                "within": "'within' and 'where' go with an event aggregate such as count(orders within 30d)",
                "where": "'within' and 'where' go with an event aggregate or 'over members'",
            }[kind]
            raise _SyntaxProblem(f"'{kind}' cannot be used in {func}(…)", meta.start_pos, meta.end_pos, hint)
        if kind in found:
            raise _SyntaxProblem(f"'{kind}' is given twice in {func}(…)", meta.start_pos, meta.end_pos)
        found[kind] = (value, meta)
    return found


def _build_call(func: str, args: list, clauses: list[tuple], span: Span, meta) -> ast.Expr:
    over = next((c for c in clauses if c[0] == "over"), None)
    if over is not None:
        found = _clause_map(func, clauses, ("over", "where"))
        if found["over"][0] != "members":
            over_meta = found["over"][1]
            raise _SyntaxProblem(f"'over {found['over'][0]}': only 'over members' exists",
                                 over_meta.start_pos, over_meta.end_pos, "write 'over members'")
        if func not in ast.POPULATION_AGGREGATES:
            raise _SyntaxProblem(f"{func}(…) is not a population aggregate", meta.start_pos, meta.end_pos,
                                 "over members works with " + ", ".join(ast.POPULATION_AGGREGATES))
        expected = 2 if func == "quantile" else 1
        if len(args) != expected:
            shape = "quantile(x, 0.8 over members)" if func == "quantile" else f"{func}(x over members)"
            raise _SyntaxProblem(f"{func}(… over members) takes {expected} argument(s), got {len(args)}",
                                 meta.start_pos, meta.end_pos, f"write {shape}")
        where = found.get("where", (None,))[0]
        fraction = args[1] if func == "quantile" else None
        return ast.PopulationAggregate(func, args[0], fraction, where, span=span)
    if func == "quantile":
        raise _SyntaxProblem("quantile needs 'over members'", meta.start_pos, meta.end_pos,
                             "write quantile(x, 0.8 over members)")
    is_event_source = len(args) == 1 and isinstance(args[0], (ast.Name, ast.Attribute))
    if func in ast.EVENT_AGGREGATES and (is_event_source or clauses):
        found = _clause_map(func, clauses, ("within", "where"))
        if not is_event_source:
            raise _SyntaxProblem(f"{func}(…) over events takes a table or table.field",
                                 meta.start_pos, meta.end_pos, "write e.g. sum(orders.amount within 30d)")
        source = args[0]
        table, field_name = (source.name, None) if isinstance(source, ast.Name) else (source.table, source.field)
        return ast.EventAggregate(func, table, field_name, found.get("within", (None,))[0],
                                  found.get("where", (None,))[0], span=span)
    _clause_map(func, clauses, ())
    if func in ast.RANKINGS:
        expected = 2 if func == "ntile" else 1
        if len(args) != expected:
            shape = "ntile(x, 5)" if func == "ntile" else f"{func}(x)"
            raise _SyntaxProblem(f"{func} takes {expected} argument(s), got {len(args)}",
                                 meta.start_pos, meta.end_pos, f"write {shape}")
        return ast.Ranking(func, args[0], args[1] if func == "ntile" else None, span=span)
    return ast.Call(func, tuple(args), span=span)


# What a person reads for each terminal Lark expects.
_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "a number", "DECIMAL": "a number", "STRING": "a string",
    "DURATION": "a duration such as 30d", "DATE": "a date such as @2026-11-01",
    "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '%'",
    "$END": "the end of the expression",
}


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    for terminal in _parser().terminals:
        if terminal.name == name and terminal.pattern.type == "str":
            return f"'{terminal.pattern.value}'"
    return name.lower()


def _expected_words(expected) -> str:
    words = sorted({_describe_terminal(name) for name in expected})
    if len(words) > 6:
        words = words[:6] + ["…"]
    return ", ".join(words)


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "the end of the expression"
    return f"'{token}'"


def _syntax_diagnostic(text: str, error: UnexpectedInput, locate: Locator) -> Diagnostic:
    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream
        char = text[pos]
        two = text[pos:pos + 2]
        hint = {"=": "use '==' to compare", "&&": "write 'and'", "||": "write 'or'", "!": "write 'not'"}.get(
            two if two in ("&&", "||") else char)
        if char == "@":
            hint = "write dates as @YYYY-MM-DD"
        elif char in "'\"":
            hint = "close the string with the same quote it opened with"
        return Diagnostic("MR201", f"unexpected character '{char}'", locate(pos, pos + len(two if hint and two in ('&&', '||') else char)),
                          hint=hint)
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            pos = len(text.rstrip())
            return Diagnostic("MR202", "the expression ends too early; expected " + _expected_words(error.expected),
                              locate(max(pos - 1, 0), max(pos, 1)), hint=_unclosed_hint(text))
        start, end = token.start_pos, token.end_pos
        hint = None
        if token.type == "COMP_OP" or str(token) in ("in", "is"):
            hint = "comparisons do not chain: write 'a < b and b < c'"
            return Diagnostic("MR203", f"a comparison cannot follow a comparison ('{token}')",
                              locate(start, end), hint=hint)
        if token.type in ("INT", "DECIMAL") and text[max(start - 1, 0):start].strip() == "":
            hint = None
        return Diagnostic("MR204", f"unexpected {_describe_token(token)}; expected {_expected_words(error.expected)}",
                          locate(start, end), hint=hint)
    assert isinstance(error, UnexpectedEOF)
    pos = len(text.rstrip())
    return Diagnostic("MR202", "the expression ends too early", locate(max(pos - 1, 0), max(pos, 1)),
                      hint=_unclosed_hint(text))


def _unclosed_hint(text: str) -> str | None:
    if text.count("(") > text.count(")"):
        return "a '(' is not closed"
    if text.count("[") > text.count("]"):
        return "a '[' is not closed"
    return None


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth -= 1
    return deepest


def parse_expr(text: str, locate: Locator | None = None) -> ParseResult:
    """Parse one expression. Never raises on bad input: problems come back as diagnostics.

    >>> parse_expr("frequency >= 8").expr
    Compare(op='>=', left=Name(name='frequency'), right=Literal(kind='int', value=8))
    """
    locate = locate or text_locator(text)
    if not text.strip():
        return ParseResult(None, [Diagnostic("MR205", "the expression is empty", locate(0, 1))])
    if len(text) > MAX_EXPRESSION_CHARS:
        return ParseResult(None, [Diagnostic("MR206", f"the expression is {len(text)} characters long",
                                             locate(0, 1), hint=f"the limit is {MAX_EXPRESSION_CHARS}")])
    if _nesting_depth(text) > MAX_NESTING:
        return ParseResult(None, [Diagnostic("MR206", "the expression nests parentheses too deeply",
                                             locate(0, 1), hint=f"the limit is {MAX_NESTING} levels")])
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        return ParseResult(None, [_syntax_diagnostic(text, error, locate)])
    try:
        expr = _ToAst(locate).build(tree)[0] if isinstance(tree, Tree) else tree
    except _SyntaxProblem as problem:
        return ParseResult(None, [Diagnostic("MR207", problem.message, locate(problem.start, problem.end),
                                             hint=problem.hint)])
    except RecursionError:
        return ParseResult(None, [Diagnostic("MR206", "the expression nests too deeply", locate(0, 1))])
    depth = _tree_depth(expr)
    if depth > MAX_TREE_DEPTH:
        return ParseResult(None, [Diagnostic("MR206", f"the expression nests {depth} levels deep",
                                             locate(0, 1), hint=f"the limit is {MAX_TREE_DEPTH}; "
                                                                "split it into metrics")])
    return ParseResult(expr)


def _tree_depth(expr: ast.Expr) -> int:
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.children(node))
    return deepest
