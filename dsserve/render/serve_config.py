"""Ray Serve YAML for `serve deploy` (and KubeRay's ``serveConfigV2``), rendered from a spec.

The YAML names ``dsserve.app:build_openai_app`` with :func:`dsserve.app.serving_args` as its args, the
same call `dsserve up` makes, so a cluster runs exactly what was tested locally.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from dsserve.app import import_path, serving_args
from dsserve.catalog import ACCELERATORS
from dsserve.config import DeploymentSpec
from dsserve.planner import assumptions as A
from dsserve.planner.gateway import plan_gateway
from dsserve.serve_env import haproxy_maxconn_wanted, serve_env

__all__ = ["serve_config", "render_serve_config", "cluster_topology", "haproxy_maxconn_wanted"]


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


def cluster_topology(spec: DeploymentSpec) -> list[str]:
    """The Ray cluster a GPU spec needs and how its replicas are placed, as lines for the YAML's header.

    Empty for CPU specs (`dsserve up` starts their Ray itself). The placement itself is
    :func:`dsserve.app._placement`; this only states it for whoever builds the cluster.
    """
    hw = spec.hardware
    if not hw.is_gpu:
        return []
    accel = ACCELERATORS[hw.accelerator]
    kind = hw.accelerator.upper()
    nodes = f"{hw.nodes} node{'s' if hw.nodes > 1 else ''}"
    if spec.disaggregation is not None:
        pools = [(role, _engine_placement(spec.pool(role))) for role in ("prefill", "decode")]
        use = "; ".join(f"{role} pool: {u}" for role, (u, _) in pools) + f" ({spec.disaggregation.transport} KV)"
        place = " ".join(f"{role.capitalize()}: {p}" for role, (_, p) in pools)
    else:
        use, place = _engine_placement(spec)
    lines = [
        f"Ray cluster: {nodes} x {hw.gpus_per_node} {kind} GPUs (Ray resource GPU: {hw.gpus_per_node} "
        f"per node); {use}.",
        f"Placement: {place}",
    ]
    if accel.ray_accelerator_type:
        lines.append(
            f"accelerator_type:{accel.ray_accelerator_type}: Ray sets this resource on {kind} nodes; "
            "the LLM config requests it."
        )
    else:
        lines.append(
            f"accelerator_type: none (Ray has no {kind} constant): replicas are placed by GPU count, "
            "so keep other GPU kinds out of this cluster."
        )
    return [w for line in lines for w in textwrap.wrap(line, 108, subsequent_indent="  ")]


def _engine_placement(spec: DeploymentSpec) -> tuple[str, str]:
    """(GPUs the engine replicas use, how they are placed) for one engine deployment."""
    hw, eng, sv = spec.hardware, spec.engine, spec.serving
    tp, pp, dp = eng.tensor_parallel_size, eng.pipeline_parallel_size, eng.data_parallel_size
    ranks = tp * pp
    layout = f"TP{tp}" + (f" x PP{pp}" if pp > 1 else "")
    replicas = sv.autoscaling.max_replicas if sv.autoscaling else sv.replicas
    if dp > 1:
        use = f"{replicas} DP group(s) x DP{dp} x {layout} = {replicas * dp * ranks} GPUs"
        place = (
            f"one Serve replica per DP rank ({dp} per group, gang-scheduled), each {ranks} {{GPU: 1}} "
            f"bundle(s), STRICT_PACK; the ranks of a group may land on any node."
        )
    elif ranks <= hw.gpus_per_node:
        use = f"{replicas} replica(s) x {layout} = {replicas * ranks} GPUs"
        place = f"each replica {ranks} {{GPU: 1}} bundle(s), STRICT_PACK (one node, NVLink only)."
    else:
        use = f"{replicas} replica(s) x {layout} = {replicas * ranks} GPUs"
        span = -(-ranks // hw.gpus_per_node)
        inside = (
            f"each TP{tp} group stays on one node and only pipeline-stage boundaries cross the network"
            if tp <= hw.gpus_per_node
            else f"each TP{tp} group spans {-(-tp // hw.gpus_per_node)} nodes"
        )
        place = (
            f"each replica {ranks} {{GPU: 1}} bundles over {span} nodes, PACK (STRICT_PACK cannot span "
            f"nodes): Ray fills one node before the next and vLLM gives a TP group consecutive ranks, so "
            f"{inside}. Give each replica whole, free nodes."
        )
    return use, place


def gateway_lines(spec: DeploymentSpec) -> list[str]:
    """The gateway the planner sized for the profile's target, in the words of its arithmetic."""
    g = plan_gateway(spec)
    where = (
        f"each of the {g.replicas} engine replica(s)"
        if g.mode == "direct"
        else f"{g.replicas} ingress replica(s) in front of {g.engine_replicas} engine replica(s)"
    )
    hops = ", ".join(f"{name} {ms:g}" for name, ms in g.hops.items())
    lines = [
        f"Gateway: {g.mode} (HTTP ends in {where}). At slo.target_qps {g.qps:g} of {g.output_tokens}-token "
        f"streams: {g.cpu_ms_per_request:g} ms CPU per request",
        f"  ({hops}) = {g.cores:g} cores; busiest process {g.busiest_process_share:.0%} busy; carries up to "
        f"{g.carries_qps:g} req/s at {A.GATEWAY_UTILIZATION:.0%} busy "
        f"({'enough' if g.carries_target else 'NOT enough'}).",
    ]
    if g.router_replicas:
        lines.append(
            f"  Serve ingress request router (prefix affinity): {g.router_replicas} replica(s). "
            "`dsserve plan` shows the arithmetic."
        )
    else:
        lines.append("  `dsserve plan` shows the arithmetic.")
    return lines


def render_serve_config(spec: DeploymentSpec, *, source: str) -> str:
    """The Serve config as YAML text, headed by how to regenerate it."""
    header = (
        f"# Generated from {source} by `dsserve render serve-config {source}`. Do not edit:\n"
        "# change the profile and run `make render`; tests fail when this file drifts.\n"
    )
    env = serve_env(spec)
    if env:
        header += "# Start Ray with this environment on every node (Serve reads it at start, not from this file):\n"
        header += "".join(f"#   {k}={v}\n" for k, v in env.items())
        if "RAY_SERVE_HAPROXY_MAXCONN" in env:
            header += (
                "# (Ray's default maxconn, 4096, leaves admitted requests waiting unanswered in the accept "
                "queue;\n# give HAProxy two open files per connection.)\n"
            )
        if "DSSERVE_HAPROXY_TIMEOUT_HTTP_REQUEST_S" in env:
            header += (
                "# The DSSERVE_HAPROXY_* settings reach HAProxy through dsserve's launcher: also set\n"
                "#   RAY_SERVE_HAPROXY_BINARY_PATH=<absolute path of dsserve-haproxy> (the images set it).\n"
            )
    where = "engine replica" if spec.serving.gateway == "direct" else "ingress"
    header += "".join(f"# {line}\n" for line in gateway_lines(spec))
    if spec.api.api_keys_env:
        header += f"# API keys are read from ${spec.api.api_keys_env} on the {where} nodes.\n"
    if spec.api.api_keys_file:
        header += f"# API keys are read from {spec.api.api_keys_file} on the {where} nodes (re-read when it changes).\n"
    header += "".join(f"# {line}\n" for line in cluster_topology(spec))
    body = yaml.safe_dump(serve_config(spec), sort_keys=False, default_flow_style=False, width=100)
    return header + body
