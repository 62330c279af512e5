"""docs/spec-reference.md is generated from the spec's models and stays current with them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from dsserve.cli import main
from dsserve.config import DeploymentSpec
from dsserve.render.spec_reference import COMMAND, DEFAULT_OUTPUT, render_spec_reference
from tests.conftest import REPO


def _models(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    out = [(path, model)]
    for name, field in model.model_fields.items():
        stack = [field.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                out += _models(a, f"{path}.{name}" if path else name)
            else:
                stack.extend(getattr(a, "__args__", ()))
    return out


def test_committed_reference_is_current() -> None:
    committed = REPO / DEFAULT_OUTPUT
    assert committed.is_file(), f"{DEFAULT_OUTPUT} is missing; run `{COMMAND}` (make render)"
    assert committed.read_text(encoding="utf-8") == render_spec_reference(), (
        f"{DEFAULT_OUTPUT} drifted from the spec models in dsserve/config.py; run `{COMMAND}` (make render)"
    )


@pytest.mark.parametrize(("path", "model"), _models(DeploymentSpec), ids=lambda x: x if isinstance(x, str) else "")
def test_every_field_has_a_description_and_a_row(path: str, model: type[BaseModel]) -> None:
    text = render_spec_reference()
    assert (f"## `{path}`" if path else "## Top level") in text
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        assert field.description and len(field.description) > 15, f"{key} has no description"
        assert f"| `{key}` |" in text, f"{key} has no row in the reference"


def test_every_cross_field_rule_is_listed_with_its_docstring() -> None:
    text = render_spec_reference()
    for _, model in _models(DeploymentSpec):
        for name in model.__pydantic_decorators__.model_validators:
            assert getattr(model, name).__doc__, f"{model.__name__}.{name} has no docstring for the reference"
            assert f"- `{name.lstrip('_')}`: " in text


def test_placeholders_are_escaped_not_html() -> None:
    text = render_spec_reference()
    assert "tiny:&lt;name&gt;" in text and "tiny:<name>" not in text.replace("`tiny:<name>`", "")


def test_command_writes_the_file(tmp_path) -> None:
    """`dsserve render spec-reference -o FILE` (the command the file's header names) writes the reference."""
    out = tmp_path / "ref.md"
    assert COMMAND.startswith("dsserve render spec-reference ")
    assert main(["render", "spec-reference", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_spec_reference()
