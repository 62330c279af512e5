"""docs/spec-reference.md, generated from the deployment spec's pydantic models (dsserve/config.py).

The reference is the models' own words: one section per model in YAML-tree order (``model``,
``model.lora``, ``engine``, ...), and per field its YAML path, type, default, allowed values or bounds
and ``description``, then the model's cross-field rules, each a named validator's docstring. So a field cannot be
added, renamed or re-bounded without the reference changing with it, and tests/unit/test_spec_reference.py
fails until the committed file is regenerated:

    dsserve render spec-reference -o docs/spec-reference.md      (make render runs it)
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["COMMAND", "DEFAULT_OUTPUT", "render_spec_reference"]

#: The command that regenerates the reference, as the file's header and the drift test tell it.
COMMAND = "dsserve render spec-reference -o docs/spec-reference.md"
DEFAULT_OUTPUT = "docs/spec-reference.md"

_SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string", Any: "any"}
_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def render_spec_reference() -> str:
    """The whole reference as Markdown."""
    from dsserve.config import DeploymentSpec

    out = [
        "# Deployment spec reference",
        "",
        f"<!-- Generated from dsserve/config.py by `{COMMAND}` (make render); do not edit by hand. -->",
        "",
        "Every key of a deployment spec (`deploy/profiles/*.yaml`), generated from the pydantic models that",
        "validate it. Unknown keys are errors. Each error names the YAML path, the value and the fix; the",
        'README\'s "The deployment spec" section gives the overview and `deploy/profiles/` has examples.',
        "`dsserve up --set PATH=VALUE` overrides any key, validated like the file; `dsserve validate`",
        "checks a spec without starting anything.",
        "",
    ]
    sections = list(_sections(DeploymentSpec, ""))
    out += ["Sections:", ""]
    out += [f"- [`{path or '(top level)'}`](#{_anchor(path)})" for path, _ in sections]
    out.append("")
    for path, model in sections:
        out += _section(path, model)
    return "\n".join(out).rstrip() + "\n"


def _sections(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """(YAML path, model) for ``model`` and every model nested in it, depth first in field order."""
    yield path, model
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from _sections(nested, f"{path}.{_key(name, field)}" if path else _key(name, field))


def _section(path: str, model: type[BaseModel]) -> list[str]:
    title = f"`{path}`" if path else "Top level"
    out = [f'<a id="{_anchor(path)}"></a>', "", f"## {title}", ""]
    if model.__doc__:  # its own docstring only, not the one it inherits
        out += [_markdown(_one_paragraph(inspect.cleandoc(model.__doc__))), ""]
    out += ["| Key | Type | Default | Allowed | Description |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        key = _key(name, field)
        full = f"{path}.{key}" if path else key
        nested = _nested_model(field.annotation)
        description = _cell(_markdown(field.description or ""))
        if nested is not None:
            description += f" See [`{full}`](#{_anchor(full)})."
        out.append(
            f"| `{full}` | {_type(field.annotation)} | {_default(field, nested)} | {_allowed(field)} | {description} |"
        )
    out.append("")
    rules = [
        (name, inspect.getdoc(getattr(model, name)) or "")
        for name, decorator in model.__pydantic_decorators__.model_validators.items()
        if decorator.info.mode == "after"
    ]
    if rules:
        when = "every section is valid" if not path else "its keys are valid"
        out += [
            f"Cross-field rules, checked in this order once {when}; an error names the first one broken:",
            "",
        ]
        out += [f"- `{name.lstrip('_')}`: {_markdown(_one_paragraph(doc))}" for name, doc in rules]
        out.append("")
    return out


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _anchor(path: str) -> str:
    return "spec-" + (path.replace(".", "-") if path else "top-level")


def _one_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def _markdown(text: str) -> str:
    """reST ``code`` as Markdown `code`, and < > outside code escaped (``tiny:<name>`` is no HTML tag)."""
    parts = text.replace("``", "`").split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if _is_union(annotation):
        for arg in _args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _type(annotation: Any) -> str:
    from dsserve.model_source import AdapterSource, ModelSource

    if _is_union(annotation):
        parts = [a for a in _args(annotation) if a is not type(None)]
        text = " or ".join(_type(a) for a in parts)
        return f"{text} or null" if len(parts) < len(_args(annotation)) else text
    if typing.get_origin(annotation) is Literal:
        return "string" if all(isinstance(a, str) for a in _args(annotation)) else "literal"
    if typing.get_origin(annotation) is dict:
        key, value = _args(annotation)
        return f"mapping of {_type(key)} to {_type(value)}"
    if annotation is AdapterSource:
        return "adapter source"
    if annotation is ModelSource:
        return "model source"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo, nested: type[BaseModel] | None) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "(its defaults)" if nested is not None else _yaml(field.get_default(call_default_factory=True))
    return _yaml(field.default) if field.default is not PydanticUndefined else ""


def _yaml(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    literals: list[str] = []
    stack = [field.annotation]
    while stack:
        a = stack.pop()
        if typing.get_origin(a) is Literal:
            literals += [f"`{v}`" for v in _args(a)]
        elif _is_union(a):
            stack.extend(reversed(_args(a)))
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    listed = extra.get("allowed")
    if isinstance(listed, list | tuple):
        literals += [f"`{v}`" for v in listed]
    parts = [", ".join(literals)] if literals else []
    for meta in field.metadata:
        for cls, attr, sign in _BOUNDS:
            if isinstance(meta, cls):
                parts.append(f"{sign} {getattr(meta, attr):,}")
    return "; ".join(parts)
