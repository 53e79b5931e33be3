"""Action templates: Jinja2 in its sandbox, undefined names are errors (SPEC §6)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.lexer import TokenStream
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import Diagnostic, did_you_mean
from .parse import Locator


# Results of `*` and `**` above these sizes are refused: `{{ 'x' * 10**10 }}` would take the
# process's memory, and jinja2's sandbox lets both operators through by default.
MAX_REPEAT_LENGTH = 100_000
MAX_POWER_BITS = 4096


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is too large for a message")
        if operator == "*":
            sizes = [len(v) for v in (left, right) if isinstance(v, (str, list, tuple))]
            times = [v for v in (left, right) if isinstance(v, int)]
            if sizes and times and sizes[0] * times[0] > MAX_REPEAT_LENGTH:
                raise SecurityError("a repeated text or list this long is too large for a message")
        return super().call_binop(context, operator, left, right)


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one environment templates compile and render in: sandboxed, immutable, strict."""
    # A null value prints as nothing: a message must never say "None" to a member.
    return _BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                           finalize=lambda value: "" if value is None else value)


def _line_offset(text: str, lineno: int) -> int:
    offset = 0
    for _ in range(max(lineno - 1, 0)):
        newline = text.find("\n", offset)
        if newline < 0:
            break
        offset = newline + 1
    return offset


def syntax_error_span(text: str) -> tuple[int, int] | None:
    """Where Jinja2 stops reading `text`, as offsets into it: the character its lexer cannot
    take, the token its parser cannot, or the end of the text when it ends too soon; None
    when the text compiles. (Jinja2's own errors give only a line.)"""
    env = environment()
    lexed = 0  # the lexer's raw tokens, end to end, are the first `lexed` characters of the text
    lexer_stopped = False
    read = []  # (token the parser reads, where it is in the text)

    def raw_tokens():
        nonlocal lexed, lexer_stopped
        try:
            for token in env.lexer.tokeniter(text, None):
                lexed += len(token[2])
                yield token
        except TemplateSyntaxError:
            lexer_stopped = True
            raise

    def parser_tokens():
        before = 0
        for token in env.lexer.wrap(raw_tokens()):
            # wrap() drops whitespace and comments: the token is the last raw one read.
            text_before = text[before:lexed]
            read.append((token, (before + len(text_before) - len(text_before.lstrip()), lexed)))
            before = lexed
            yield token

    parser = Parser(env, "")
    try:
        parser.stream = TokenStream(parser_tokens(), None, None)
        parser.parse()
    except TemplateSyntaxError:
        if lexer_stopped:
            rest = text[lexed:]
            at = min(lexed + len(rest) - len(rest.lstrip()), max(len(text) - 1, 0))
            return at, at + 1
        # Equal tokens may stand in several places: the one the parser stopped at is this object.
        span = next((where for token, where in read if token is parser.stream.current), None)
        if span is not None and span[1] > span[0]:
            return span
        end = len(text.rstrip())  # it ended too soon: point at its last character
        return max(end - 1, 0), max(end, 1)
    return None


def _find(text: str, word: str, lineno: int) -> tuple[int, int]:
    start = _line_offset(text, lineno)
    at = text.find(word, start)
    if at < 0:
        at = text.find(word)
    return (at, at + len(word)) if at >= 0 else (start, start + 1)


def check_template(text: str, names: Iterable[str], member_fields: Mapping[str, object],
                   locate: Locator) -> list[Diagnostic]:
    """Every name a template uses must exist; `member.x` must be a member field."""
    env = environment()
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as problem:
        start, end = syntax_error_span(text) or (0, 1)
        return [Diagnostic("MR315", f"the template does not compile: {problem.message}",
                           locate(start, end), hint="templates are Jinja2: {{ member.name }}")]
    known = set(names)
    diagnostics = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    if any(True for _ in tree.find_all(nodes.For)):
        assigned.add("loop")  # `loop.index` and friends, inside a for loop
    for node in tree.find_all(nodes.Name):
        if node.ctx != "load" or node.name in known or node.name in assigned or node.name in env.globals:
            continue
        guess = did_you_mean(node.name, known)
        start, end = _find(text, node.name, node.lineno)
        diagnostics.append(Diagnostic("MR314", f"the template uses '{node.name}', which does not exist",
                                      locate(start, end),
                                      hint=f"did you mean '{guess}'?" if guess else
                                      "templates see member.<field>, metrics, tier, next_tier, gap, classes, "
                                      "segments, params and as_of"))
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "member" and node.attr not in member_fields:
            guess = did_you_mean(node.attr, list(member_fields))
            start, end = _find(text, node.attr, node.lineno)
            diagnostics.append(Diagnostic("MR314", f"the template uses member.{node.attr}, which is not a member "
                                                   "field", locate(start, end),
                                          hint=f"did you mean 'member.{guess}'?" if guess else None))
    return diagnostics


@functools.lru_cache(maxsize=1024)
def _compiled(text: str):
    return environment().from_string(text)


def render(text: str, context: Mapping[str, object]) -> str:
    """Render a checked template; sandbox violations raise jinja2's SecurityError.
    Each text is compiled once, however many members it is rendered for."""
    return _compiled(text).render(context)
