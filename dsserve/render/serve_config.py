"""Ray Serve YAML for `serve deploy` (and KubeRay's ``serveConfigV2``), rendered from a spec.

The YAML names ``dsserve.app:build_openai_app`` with :func:`dsserve.app.serving_args` as its args, the
same call `dsserve up` makes, so a cluster runs exactly what was tested locally.
"""

from __future__ import annotations

from typing import Any

import yaml

from dsserve.app import import_path, serving_args
from dsserve.config import DeploymentSpec

__all__ = ["serve_config", "render_serve_config"]


def serve_config(spec: DeploymentSpec) -> dict[str, Any]:
    """The Serve config document as data."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": spec.api.host, "port": spec.api.port},
        "applications": [
            {
                "name": spec.name,
                "route_prefix": "/",
                "import_path": import_path(spec),
                "args": serving_args(spec),
            }
        ],
    }


def render_serve_config(spec: DeploymentSpec, *, source: str) -> str:
    """The Serve config as YAML text, headed by how to regenerate it."""
    header = (
        f"# Generated from {source} by `dsserve render serve-config {source}`. Do not edit:\n"
        "# change the profile and run `make render`; tests fail when this file drifts.\n"
    )
    if spec.serving.proxy == "haproxy":
        header += (
            "# HAProxy fast path: start Ray with RAY_SERVE_ENABLE_HA_PROXY=1 and\n"
            "# RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the environment of every node.\n"
        )
    if spec.api.api_keys_env:
        header += f"# API keys are read from ${spec.api.api_keys_env} on the ingress nodes.\n"
    body = yaml.safe_dump(serve_config(spec), sort_keys=False, default_flow_style=False, width=100)
    return header + body
