"""The merged YAML document → the pydantic RuleSet, with shape errors at file:line:col."""

from __future__ import annotations

import types as pytypes
import typing

import pydantic
from pydantic import BaseModel

from .errors import Diagnostic, did_you_mean
from .load import LoadedRuleSet
from .model import RuleSet


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The pydantic model describing the map at `path` (for "did you mean" on keys)."""
    annotation: object = RuleSet
    for step in path:
        model = _as_model(annotation, prefer_model=True)
        if model is not None:
            fields = {f.alias or name: f for name, f in model.model_fields.items()}
            if step not in fields:
                return None
            annotation = fields[step].annotation
            continue
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is dict:
            annotation = args[1]
        elif origin is list:
            annotation = args[0]
        else:
            annotation = _as_model(annotation, prefer_model=True)
            if annotation is None:
                return None
    return _as_model(annotation, prefer_model=True)


def _as_model(annotation: object, prefer_model: bool) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, pytypes.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _data_path(loc: tuple, data: object) -> tuple[tuple, bool]:
    """Follow a pydantic `loc` through the data, dropping union-branch tags.

    Returns the path and whether the error belongs to the branch the value is in
    (a map value is a model, not a `str`; a string is not a model).
    """
    path: list = []
    current = data
    for step in loc:
        if isinstance(current, dict) and step in current:
            path.append(step)
            current = current[step]
        elif isinstance(current, list) and isinstance(step, int) and step < len(current):
            path.append(step)
            current = current[step]
        elif isinstance(step, str) and step[:1].isupper():  # a model branch of a union
            if not isinstance(current, dict):
                return tuple(path), False
        elif isinstance(current, dict) and _is_field(tuple(path), step):  # a missing key
            path.append(step)
        elif isinstance(current, dict):  # a scalar branch of a union, but the value is a map
            return tuple(path), False
    return tuple(path), True


def _value_at(data: object, path: tuple) -> object:
    for step in path:
        data = data[step]  # type: ignore[index]
    return data


def _is_field(path: tuple, step: object) -> bool:
    model = _model_at(path)
    return model is not None and any(step == (f.alias or n) for n, f in model.model_fields.items())


def _message(error: dict, path: tuple) -> tuple[str, str | None]:
    kind = error["type"]
    where = ".".join(str(p) for p in path[:-1]) or "the rule file"
    if kind == "extra_forbidden":
        key = path[-1]
        model = _model_at(path[:-1])
        allowed = [f.alias or n for n, f in model.model_fields.items()] if model else []
        guess = did_you_mean(str(key), allowed)
        hint = f"did you mean '{guess}'?" if guess else ("allowed here: " + ", ".join(allowed) if allowed else None)
        return f"unknown key '{key}' in {where}", hint
    if kind == "missing":
        return f"'{path[-1]}' is required in {where}", None
    message = error["msg"]
    if kind.endswith("_type") or kind.startswith("literal"):
        message = f"{'.'.join(str(p) for p in path)}: {message[0].lower()}{message[1:]}"
    return message, None


_KIND_WORDS = {"bool_type": "true or false", "int_type": "a whole number", "decimal_type": "a number",
               "float_type": "a number", "string_type": "text", "model_type": "a map", "dict_type": "a map",
               "list_type": "a list"}


def _no_branch_message(path: tuple, value: object, kinds: list[str]) -> str:
    """`params.window: a map is not accepted here; expected true or false, a whole number, a number or text`."""
    given = "a map" if isinstance(value, dict) else "a list" if isinstance(value, list) else "this value"
    expected = list(dict.fromkeys(_KIND_WORDS.get(kind, kind.replace("_", " ")) for kind in kinds))
    listed = ", ".join(expected[:-1]) + " or " + expected[-1] if len(expected) > 1 else expected[0]
    return f"{'.'.join(str(p) for p in path) or 'the rule file'}: {given} is not accepted here; expected {listed}"


def _accepted(annotation: object) -> set[type]:
    """The Python types of the scalars an annotation accepts (StrictStr → {str}, Number → {int, Decimal})."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepted(typing.get_args(annotation)[0])
    if origin in (typing.Union, pytypes.UnionType):
        return set().union(*(_accepted(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {type(value) for value in typing.get_args(annotation)}
    return {annotation} if isinstance(annotation, type) else set()


def _container(annotation: object, kind: type) -> object | None:
    """The `dict[...]` or `list[...]` inside an annotation such as `list[str] | str | None`."""
    origin = typing.get_origin(annotation)
    if origin is kind:
        return annotation
    if origin in (typing.Union, pytypes.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _container(arg, kind)
            if found is not None:
                return found
    return None


def _as_written(value: object, annotation: object, path: tuple, loaded: LoadedRuleSet) -> object:
    """YAML reads `points: 100`, `when: true` or a metric `bonus: 10` as a number or a bool;
    where the model wants text (an expression), the text as written is what was meant."""
    if isinstance(value, dict):
        model = _as_model(annotation, prefer_model=True)
        if model is not None:
            fields = {f.alias or name: f.annotation for name, f in model.model_fields.items()}
            return {k: _as_written(v, fields[k], path + (k,), loaded) if k in fields else v for k, v in value.items()}
        mapping = _container(annotation, dict)
        if mapping is None:
            return value
        inner = typing.get_args(mapping)[1]
        return {k: _as_written(v, inner, path + (k,), loaded) for k, v in value.items()}
    if isinstance(value, list):
        sequence = _container(annotation, list)
        if sequence is None:
            return value
        inner = typing.get_args(sequence)[0]
        return [_as_written(v, inner, path + (i,), loaded) for i, v in enumerate(value)]
    if value is not None and not isinstance(value, str):
        accepted = _accepted(annotation)
        if str in accepted and type(value) not in accepted:
            origin = loaded.positions.origins.get(path)
            return origin.node.value if origin is not None else str(value)
    return value


def validate_shape(loaded: LoadedRuleSet) -> tuple[RuleSet | None, list[Diagnostic]]:
    """Validate the merged document against the model; every error points into a file."""
    data = _as_written(loaded.data, RuleSet, (), loaded)
    try:
        return RuleSet.model_validate(data), []
    except pydantic.ValidationError as failure:
        diagnostics: list[Diagnostic] = []
        seen: set[tuple] = set()
        missing: dict[tuple, Diagnostic] = {}
        misspelt: set[tuple] = set()
        wrong_branch: dict[tuple, list[str]] = {}  # place → what each union branch expected
        for error in failure.errors():
            if error["type"] == "missing" and error["loc"] == ("schema",):
                diagnostics.append(Diagnostic("MR107", "the rule set has no 'schema' section",
                                              hint="declare the data the rules may read: schema: {member: …}"))
                continue
            path, in_branch = _data_path(tuple(error["loc"]), data)
            if not in_branch:
                wrong_branch.setdefault(path, []).append(error["type"])
                continue
            if path in seen:  # one message per place: the first branch of a union is enough
                continue
            seen.add(path)
            message, hint = _message(error, path)
            span = loaded.positions.key_span(path) if error["type"] == "extra_forbidden" else \
                loaded.positions.span(path)
            diagnostics.append(Diagnostic("MR108", message, span, hint=hint))
            if error["type"] == "missing":
                missing[path] = diagnostics[-1]
            elif error["type"] == "extra_forbidden" and hint and hint.startswith("did you mean '"):
                misspelt.add(path[:-1] + (hint.split("'")[1],))
        # A value no branch of a union accepts (a map where a scalar goes), with nothing
        # reported inside it: one error naming what the place takes.
        for path, kinds in wrong_branch.items():
            if not any(seen_path[:len(path)] == path for seen_path in seen):
                seen.add(path)
                diagnostics.append(Diagnostic("MR108", _no_branch_message(path, _value_at(data, path), kinds),
                                              loaded.positions.span(path)))
        # `levles:` for `levels:` is one mistake: the missing 'levels' follows from it.
        explained = [missing[path] for path in misspelt if path in missing]
        return None, [d for d in diagnostics if not any(d is e for e in explained)]
