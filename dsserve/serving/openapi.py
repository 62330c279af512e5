"""dsserve's OpenAPI document (``dsserve/openapi.yaml``), served at ``GET /openapi.json`` in both modes.

The app below would serve its own generated schema (vLLM's lists routes the pipeline does not serve);
this one lists what the API serves and the fields dsserve documents, with this server's limits filled in.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["OPENAPI_PATH", "openapi_spec"]

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@lru_cache(maxsize=1)
def _openapi_file() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text())


def openapi_spec(max_n: int | None = None) -> dict[str, Any]:
    """The document, with this server's ``n`` limit filled in."""
    spec: dict[str, Any] = json.loads(json.dumps(_openapi_file()))
    if max_n is not None:
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            n = spec["components"]["schemas"][name]["properties"]["n"]
            n["maximum"] = max_n
            n["description"] = f"At most api.max_n ({max_n} here)."
    return spec
