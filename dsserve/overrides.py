"""``--set PATH=VALUE`` overrides for any parsed YAML document, like ``helm --set``.

One implementation for the deployment spec (`dsserve up --set`) and load-test scenarios
(`dsserve loadtest --set`): values are parsed as YAML, dotted keys walk mappings (creating missing
sections) and integer keys index lists. Validation stays with the document's own model, so an override
that names a wrong key fails there with the usual path-and-fix message.
"""

from __future__ import annotations

from typing import Any

import yaml

from dsserve.errors import DsserveError

__all__ = ["apply_overrides"]


def apply_overrides(
    data: Any,
    overrides: list[str] | tuple[str, ...],
    *,
    where: str,
    error: type[DsserveError],
    example: str,
) -> Any:
    """Apply each ``a.b.0.c=value`` to ``data`` in place and return it; bad syntax raises ``error``."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise error(f"--set {item!r}: expected PATH=VALUE, e.g. --set {example}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            here = ".".join(keys[: depth + 1])
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise error(
                        f"{where}: --set {item!r}: {here}: {'.'.join(keys[:depth]) or 'it'} is "
                        f"a list of {len(node)}; index it with 0..{len(node) - 1}"
                    )
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
                continue
            if not isinstance(node, dict):
                raise error(f"{where}: --set {item!r}: {'.'.join(keys[:depth])} is a value, not a section")
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return data
