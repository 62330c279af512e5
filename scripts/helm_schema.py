"""Build a chart's values.schema.json from two sources, each the only home of what it says:

- the chart's ``values.yaml``: its ``## @param`` lines give every description and its values every default, and
  readme-generator-for-helm (pinned in helm/package.json; it also writes the README's parameter table) turns
  them into a base schema with the types of the values;
- the chart's ``values.schema.overlay.json``: the constraints that no annotation can carry (closed objects,
  enums, patterns, ranges, if/then rules). It may not hold a description or a default, so that those stay in
  values.yaml.

The overlay is laid over the base: ``properties`` merge key by key, any other keyword of the overlay replaces the
base's, and where the overlay gives a node its own alternatives (anyOf/oneOf) the inferred ``type`` goes. Every
``@param`` node then takes its description from that line and its default from the value in values.yaml
(readme-generator 2.7.2 emits no object-valued parameter, and a ``[default: ...]`` modifier's text for others).
An overlay node ``{"$subchart": "charts/<name>"}`` stands for that subchart's built values.schema.json, so that
the parent refuses a bad subchart value even while the subchart is disabled.
scripts/helm-docs.sh runs this; its --check mode (tests/unit/test_helm_docs.py runs it) fails when the committed
file differs, so a hand edit of values.schema.json cannot survive.

Usage: python scripts/helm_schema.py CHART_DIR GENERATED_SCHEMA [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

OVERLAY = "values.schema.overlay.json"
#: Keywords that belong to values.yaml, not to the overlay.
_FROM_VALUES = ("description", "default")
_PARAM = re.compile(r"^\s*## @param (\S+)\s+(?:\[[^\]]*\]\s*)?(.*\S)\s*$", re.M)


class SchemaError(Exception):
    """The overlay and values.yaml disagree; the message names the path and the fix."""


def params(values_yaml: str) -> dict[str, str]:
    """``## @param`` key -> description, in file order."""
    return {key: desc for key, desc in _PARAM.findall(values_yaml)}


def _check_overlay(node: Any, path: str) -> None:
    if isinstance(node, dict):
        for key in _FROM_VALUES:
            if key in node and not path.endswith("/properties"):
                raise SchemaError(
                    f"{OVERLAY}{path}: has a {key!r}; descriptions and defaults come from values.yaml's "
                    "## @param lines: move it there"
                )
        for key, value in node.items():
            _check_overlay(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_overlay(value, f"{path}/{i}")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` laid over ``base`` (see the module docstring)."""
    out = dict(base)
    if "anyOf" in overlay or "oneOf" in overlay:
        out.pop("type", None)
        out.pop("items", None)
    for key, value in overlay.items():
        if key == "properties":
            props = dict(base.get("properties", {}))
            for name, sub in value.items():
                props[name] = merge(props.get(name, {}), sub)
            out["properties"] = props
        else:
            out[key] = value
    return out


def _node(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    node = schema
    for part in key.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


def _value(values: Any, key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


_HEAD = ("$schema", "title", "$comment")


def _embed_subcharts(chart: Path, node: Any) -> Any:
    """Replace each ``{"$subchart": "charts/<name>", ...}`` by that subchart's (already built) schema with the
    node's other keywords laid over it: Helm checks a disabled subchart's values against nothing, so the
    parent describes them itself, from the subchart's one source."""
    if isinstance(node, list):
        return [_embed_subcharts(chart, v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _embed_subcharts(chart, v) for k, v in node.items()}
    if "$subchart" not in node:
        return node
    sub = json.loads((chart / node.pop("$subchart") / "values.schema.json").read_text())
    return merge({k: v for k, v in sub.items() if k not in _HEAD}, node)


def build(chart: Path, generated: dict[str, Any]) -> dict[str, Any]:
    overlay = json.loads((chart / OVERLAY).read_text())
    _check_overlay(overlay, "")
    overlay = _embed_subcharts(chart, overlay)
    base = {k: v for k, v in generated.items() if k not in ("title", "type", "properties")}
    schema = merge({"type": "object", "properties": generated.get("properties", {}), **base}, overlay)
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    for key, description in params(text).items():
        node = _node(schema, key)
        if node is None:
            raise SchemaError(f"{chart}/values.yaml: @param {key} has no node in the schema; give it one in {OVERLAY}")
        node["description"] = description
        # the value itself: the generator writes none for objects, and a placeholder for `[default: ...]`
        node["default"] = _value(values, key)
    name = chart.name
    head = {  # the keys of _HEAD
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"Values of the {name} chart",
        "$comment": (
            f"Generated by scripts/helm-docs.sh from values.yaml (## @param lines, via readme-generator-for-helm) "
            f"and {OVERLAY} (the constraints). Do not edit: change those and rerun the script."
        ),
    }
    return {**head, **{k: v for k, v in schema.items() if k not in head}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("generated", type=Path, help="the schema readme-generator wrote (-s)")
    parser.add_argument("--out", type=Path, help="default: CHART/values.schema.json")
    args = parser.parse_args(argv)
    try:
        schema = build(args.chart, json.loads(args.generated.read_text()))
    except SchemaError as exc:
        print(f"helm_schema: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.chart / "values.schema.json"
    out.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
