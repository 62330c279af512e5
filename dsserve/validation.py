"""Pydantic validation errors as one line per problem: YAML path, bad value, and the fix.

Shared by the deployment spec (dsserve/config.py) and load-test scenarios (dsserve/loadgen/scenario.py),
so both speak the same way: unknown keys get a did-you-mean, type errors say what is expected, and
cross-field checks raise :class:`PathError` to name their own path instead of the parent model's.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["PathError", "choices", "describe_errors"]


class PathError(ValueError):
    """A cross-field error that knows its own YAML path (model validators otherwise report the parent)."""

    def __init__(self, path: str, value: Any, fix: str) -> None:
        super().__init__(fix)
        self.path, self.value, self.fix = path, value, fix


def choices(value: str, options: Any) -> str:
    """``did you mean 'x'? choose one of: a, b, c`` for a value that is not one of ``options``."""
    names = sorted(options)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}choose one of: {', '.join(names)}"


_TYPE_HINTS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list (- item lines)",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short")
#: Fields whose values errors never print: they name where API keys live, and a key may be pasted there.
SECRET_FIELDS = frozenset({"api_keys_env", "api_keys_file"})


class _Hidden:
    def __repr__(self) -> str:
        return "<value not shown: it may be a key>"


_HIDDEN = _Hidden()
# pydantic's union-branch tags in an error location; they are not YAML keys
_UNION_TAGS = ("int", "float", "str", "bool", "literal['auto']")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item not in _UNION_TAGS:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for item in loc:
        try:
            data = data[item]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _allowed_keys(root: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    model = root
    for item in parent:
        if isinstance(item, int):
            continue
        field = _field_by_key(model, str(item))
        if field is None:
            return []
        stack, nxt = [field.annotation], None
        while stack:
            c = stack.pop()
            if isinstance(c, type) and issubclass(c, BaseModel):
                nxt = c
                break
            stack.extend(getattr(c, "__args__", ()))
        if nxt is None:
            return []
        model = nxt
    return [f.alias or name for name, f in model.model_fields.items()]  # YAML spells a field by its alias


def _field_by_key(model: type[BaseModel], key: str) -> Any:
    """The field a YAML key names: its alias, else its name (``schema`` is the field ``schema_``)."""
    for name, f in model.model_fields.items():
        if (f.alias or name) == key:
            return f
    return None


def _describe(err: Any, data: Any, where: str, root: type[BaseModel], example: str) -> str:
    loc = tuple(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "value_error" and isinstance(ctx.get("error"), PathError):
        pe: PathError = ctx["error"]
        if pe.value is None:
            return f"{where}: {pe.path}: {pe.fix}"
        return f"{where}: {pe.path}: got {pe.value!r}; {pe.fix}"
    path = _loc_to_path(loc)
    clean = tuple(x for x in loc if isinstance(x, int) or x not in _UNION_TAGS)
    value = _lookup(data, clean)
    if any(x in SECRET_FIELDS for x in clean if isinstance(x, str)):
        value = _HIDDEN  # a key pasted into the wrong place must not be printed back
    if etype == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(root, clean[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(sorted(allowed))}"
        return f"{where}: {path}: unknown key; {hint} (remove or rename it)"
    if etype == "missing":
        return f"{where}: {path}: required but missing; add it (see {example})"
    if etype == "literal_error":
        return f"{where}: {path}: got {value!r}; choose one of: {ctx.get('expected')}"
    if etype in _TYPE_HINTS:
        return f"{where}: {path}: got {value!r}; must be {_TYPE_HINTS[etype]}"
    if etype in _BOUNDS:
        return f"{where}: {path}: got {value!r}; {err['msg'].lower()}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{where}: {path}: {msg}" if value is None else f"{where}: {path}: got {value!r}; {msg}"


def describe_errors(exc: ValidationError, data: Any, where: str, *, root: type[BaseModel], example: str) -> str:
    """Every problem in ``exc``, one line each, duplicates dropped; ``example`` names a valid file."""
    lines = [_describe(e, data, where, root, example) for e in exc.errors()]
    return "\n".join(dict.fromkeys(lines))
