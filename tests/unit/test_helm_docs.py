"""The charts' generated files: each README's Parameters table and each values.schema.json come from the
``## @param`` lines of values.yaml (readme-generator-for-helm, pinned in helm/package.json) and the constraints
of values.schema.overlay.json (scripts/helm_schema.py), through scripts/helm-docs.sh. These tests run its
--check mode, show that it catches a hand edit, and keep every value documented and described by the schema.

They need node and npm (scripts/install-system-deps.sh installs them, and `make test` runs it first); the
first run installs the pinned tool into helm/node_modules with `npm ci`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.unit.helm_support import CHART, LOADTEST_CHART, lookup, value_paths

CHARTS = {"dsserve": CHART, "loadtest": LOADTEST_CHART}
SCRIPT = REPO / "scripts" / "helm-docs.sh"


def _helm_docs(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail(
            "node and npm are needed to check the charts' README and schema: run scripts/install-system-deps.sh"
        )
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        [str(root / "scripts" / "helm-docs.sh"), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_readmes_and_schemas_are_generated_from_the_values() -> None:
    run = _helm_docs(REPO, "--check")
    assert run.returncode == 0, f"{run.stderr[-4000:]}\nrun scripts/helm-docs.sh and commit the result"


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripts and helm/ in a scratch directory (sharing helm/node_modules), to be broken there."""
    if not (REPO / "helm" / "node_modules").is_dir():
        _helm_docs(REPO, "--check")  # installs the pinned tool
    root = tmp_path_factory.mktemp("repo")
    (root / "scripts").mkdir()
    for name in ("helm-docs.sh", "helm_schema.py"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    shutil.copytree(REPO / "helm", root / "helm", ignore=shutil.ignore_patterns("node_modules"))
    (root / "helm" / "node_modules").symlink_to(REPO / "helm" / "node_modules")
    return root


@pytest.mark.parametrize(
    "path,edit",
    [
        ("helm/dsserve/values.schema.json", lambda t: t.replace('"maximum": 65535', '"maximum": 65536', 1)),
        ("helm/dsserve/charts/loadtest/values.schema.json", lambda t: t.replace('"smoke"', '"smoke2"', 1)),
        ("helm/dsserve/README.md", lambda t: t.replace("| `serve.port`", "| `serve.prt`", 1)),
        ("helm/dsserve/values.yaml", lambda t: t.replace("## @param serve.port Port", "## @param serve.port The port")),
    ],
    ids=["schema-hand-edit", "subchart-schema-hand-edit", "readme-hand-edit", "values-description-changed"],
)
def test_the_check_catches_what_was_not_regenerated(scratch_repo: Path, path: str, edit: Any) -> None:
    target = scratch_repo / path
    original = target.read_text()
    edited = edit(original)
    assert edited != original, "the edit must change the file"
    target.write_text(edited)
    try:
        run = _helm_docs(scratch_repo, "--check")
    finally:
        target.write_text(original)
    assert run.returncode == 1 and "run scripts/helm-docs.sh" in run.stderr, run.stderr[-2000:]


def _load_helm_schema() -> ModuleType:
    spec = importlib.util.spec_from_file_location("helm_schema", REPO / "scripts" / "helm_schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overlay_carries_constraints_only(tmp_path: Path) -> None:
    """Descriptions and defaults have one home, values.yaml: an overlay that repeats one is refused."""
    helm_schema = _load_helm_schema()
    for chart in CHARTS.values():
        overlay = json.loads((chart / helm_schema.OVERLAY).read_text())
        helm_schema._check_overlay(overlay, "")  # the committed ones pass
    chart = tmp_path / "c"
    chart.mkdir()
    (chart / "values.yaml").write_text("## @param port The port.\nport: 1\n")
    (chart / helm_schema.OVERLAY).write_text('{"properties": {"port": {"description": "x", "minimum": 1}}}')
    with pytest.raises(helm_schema.SchemaError, match=r"/properties/port: has a 'description'.*move it there"):
        helm_schema.build(chart, {"properties": {"port": {"type": "number"}}})
    (chart / helm_schema.OVERLAY).write_text('{"properties": {"port": {"anyOf": [{"type": "integer"}]}}}')
    built = helm_schema.build(chart, {"properties": {"port": {"type": "number", "description": "x", "default": 1}}})
    # the overlay's alternatives replace the inferred type; the description and default come from values.yaml
    assert built["properties"]["port"] == {"anyOf": [{"type": "integer"}], "description": "The port.", "default": 1}


def _schema_node(schema: dict, path: str) -> dict | None:
    node = schema
    for key in path.split("."):
        props = node.get("properties")
        if props is None:
            return node  # a free-form map (resources, labels): its keys are the user's
        if key not in props:
            return None
        node = props[key]
    return node


@pytest.mark.parametrize("name", CHARTS)
def test_every_value_is_documented_and_in_the_schema(name: str) -> None:
    chart = CHARTS[name]
    text = (chart / "values.yaml").read_text()
    params = re.findall(r"^\s*## @param (\S+) \S", text, flags=re.M)
    values = yaml.safe_load(text)
    paths = value_paths(values)
    assert len(params) == len(set(params)), "a key is documented twice"
    assert not set(params) - set(paths), f"@param for keys that do not exist: {sorted(set(params) - set(paths))}"

    def documented(path: str) -> bool:
        return any(path == q or path.startswith(q + ".") for q in params)

    leaves = [p for p in paths if not isinstance(lookup(values, p), dict) or not lookup(values, p)]
    undocumented = [p for p in leaves if not documented(p)]
    assert not undocumented, f"values without a ## @param comment: {undocumented}"
    schema = json.loads((chart / "values.schema.json").read_text())
    missing = [p for p in paths if _schema_node(schema, p) is None]
    assert not missing, f"values the schema does not describe: {missing}"
    assert not set(schema["properties"]) - set(values) - {"global"}, "schema keys with no default value"
    assert schema.get("additionalProperties") is False, "the schema must refuse unknown top-level keys"


def test_the_parent_schema_embeds_the_subcharts() -> None:
    """Helm checks a disabled subchart's values against nothing, so the parent's schema carries the subchart's
    (generated from it, "$subchart" in the overlay): a misspelt loadtest.* value is refused either way."""
    parent = json.loads((CHART / "values.schema.json").read_text())["properties"]["loadtest"]
    sub = json.loads((LOADTEST_CHART / "values.schema.json").read_text())
    assert parent["additionalProperties"] is False and set(parent["properties"]) == set(sub["properties"])
    # the values the parent sets itself (its defaults, its descriptions) may differ; the rest is the subchart's
    own = set(yaml.safe_load((CHART / "values.yaml").read_text())["loadtest"])
    assert own == {"enabled", "target", "apiKey"}
    for key in set(sub["properties"]) - own:
        assert parent["properties"][key] == sub["properties"][key], key
