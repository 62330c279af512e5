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

__all__ = ["OPENAPI_PATH", "openapi_for", "openapi_spec"]

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@lru_cache(maxsize=1)
def _openapi_file() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text())


def openapi_spec(
    max_n: int | None = None,
    *,
    max_prompts: int | None = None,
    max_tokens: int | None = None,
    max_messages: int | None = None,
    max_tools: int | None = None,
) -> dict[str, Any]:
    """The document, with this server's request limits filled in (``api.*``; None leaves the file's)."""
    spec: dict[str, Any] = json.loads(json.dumps(_openapi_file()))
    schemas = spec["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        props = schemas[name]["properties"]
        if max_n is not None:
            props["n"]["maximum"] = max_n
            props["n"]["description"] = (
                f"At most api.max_n ({max_n} here) sequences in all: n x the prompts of a completions batch."
            )
        if max_tokens is not None:
            for field in ("max_tokens", "max_completion_tokens"):
                if field in props:
                    props[field]["maximum"] = max_tokens
                    props[field]["description"] = f"At most api.max_tokens ({max_tokens} here)."
    if max_prompts is not None:
        for option in schemas["CompletionRequest"]["properties"]["prompt"]["oneOf"]:
            if option.get("type") == "array" and option["items"].get("type") == "string":
                option["maxItems"] = max_prompts
    if max_messages is not None:
        schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] = max_messages
    if max_tools is not None:
        tools = schemas["ChatCompletionRequest"]["properties"]["tools"]
        tools["maxItems"] = max_tools
        tools["description"] = f"At most api.max_tools ({max_tools} here)."
    return spec


def openapi_for(settings: Any) -> dict[str, Any]:
    """The document for a pipeline's settings (:class:`~dsserve.serving.pipeline.PipelineSettings`)."""
    return openapi_spec(
        settings.max_n,
        max_prompts=settings.max_prompts,
        max_tokens=settings.max_tokens,
        max_messages=settings.max_messages,
        max_tools=settings.max_tools,
    )
