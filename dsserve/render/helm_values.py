"""Helm values for ``helm/dsserve`` (a KubeRay RayService), rendered from the same spec as `dsserve up`.

The values carry the Ray Serve config as a *string* (``serveConfigV2``), exactly the text
`dsserve render serve-config` writes, plus the sizing the chart cannot guess: GPUs per worker pod, worker
pods (one per node), autoscaling bounds, the gateway and metrics ports, the HAProxy switches, the
name of the API-key variable, and what the load-test subchart must know of them (``loadtest.target``,
``loadtest.apiKey``). So one YAML file drives `dsserve up`, `serve deploy` and `helm install`.

Why a string and not a YAML mapping: Helm decodes values into float64 and prints large numbers in
exponent form (``2000000`` becomes ``2e+06``), which would silently change engine arguments on their way
through the chart. A string passes through untouched.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from dsserve.catalog import ACCELERATORS
from dsserve.config import DeploymentSpec
from dsserve.errors import SpecError
from dsserve.planner.drain import graceful_shutdown_timeout_s
from dsserve.render.serve_config import render_serve_config
from dsserve.serve_env import haproxy_maxconn_wanted, serve_env

__all__ = ["helm_values", "render_helm_values", "worker_nodes_for", "API_KEYS_SECRET", "API_KEYS_SECRET_KEY"]

#: The Secret (made by the operator of the cluster, never by the chart) that holds comma-separated API keys.
API_KEYS_SECRET = "dsserve-api-keys"
API_KEYS_SECRET_KEY = "api-keys"


#: Set by the chart's own haproxy.* values.
_CHART_HAPROXY_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_HAPROXY_MAXCONN")


#: Node label of NVIDIA GPU Feature Discovery that names the GPU product (catalog ``Accelerator.gpu_product``).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


#: Seconds a Ray pod's grace period adds to the replicas' drain: Ray Serve 2.60 behind HAProxy keeps a
#: stopping replica registered 30 s + 5 s so balancers deregister it, and the rest is room to stop Ray.
TERMINATION_HEADROOM_S = 60


def termination_grace_period_s(spec: DeploymentSpec) -> int:
    """terminationGracePeriodSeconds of the Ray pods: the drain (planner/drain.py) plus the headroom."""
    return math.ceil(graceful_shutdown_timeout_s(spec)) + TERMINATION_HEADROOM_S


def worker_nodes_for(spec: DeploymentSpec, replicas: int) -> int:
    """Worker pods (one per node) that ``replicas`` engine replicas need, as Ray will place them.

    A replica whose TP x PP group fits one node is packed onto one node (STRICT_PACK, see
    :func:`dsserve.app._placement`); a larger one spans ``ceil(group / gpus_per_node)`` whole nodes
    (PACK). With DP attention a replica is a DP group of ``data_parallel_size`` ranks, each its own
    Serve replica and placement group, so DP16 x TP1 on 8-GPU nodes needs two nodes.
    """
    hw = spec.hardware
    if not hw.is_gpu:
        return hw.nodes
    group = spec.engine.tensor_parallel_size * spec.engine.pipeline_parallel_size
    placements = replicas * spec.engine.data_parallel_size
    if group <= hw.gpus_per_node:
        return math.ceil(placements / (hw.gpus_per_node // group))
    return placements * math.ceil(group / hw.gpus_per_node)


def _check_kubernetes_ready(spec: DeploymentSpec) -> None:
    if spec.api.host != "0.0.0.0":
        raise SpecError(
            f"api.host: got {spec.api.host!r}; on Kubernetes the Serve proxy must listen on every "
            "interface so the serve Service can reach it; set api.host: 0.0.0.0 in the profile"
        )
    hw, sv = spec.hardware, spec.serving
    wanted = sv.autoscaling.max_replicas if sv.autoscaling else sv.replicas
    field = "serving.autoscaling.max_replicas" if sv.autoscaling else "serving.replicas"
    needed = worker_nodes_for(spec, wanted)
    if hw.is_gpu and needed > hw.nodes:
        group = spec.engine.devices_per_replica  # TP x PP x DP
        raise SpecError(
            f"{field}: got {wanted}; {wanted} replica(s) of {group} GPU(s) need {needed} node(s) of "
            f"{hw.gpus_per_node} GPUs but hardware.nodes is {hw.nodes}; raise hardware.nodes to {needed} "
            f"or lower {field}"
        )


def helm_values(spec: DeploymentSpec, *, source: str) -> dict[str, Any]:
    """Values for ``helm install -f``: only what the spec decides; the chart's defaults do the rest."""
    _check_kubernetes_ready(spec)
    hw, sv = spec.hardware, spec.serving
    worker: dict[str, Any] = {"gpusPerPod": hw.gpus_per_node}
    autoscaling: dict[str, Any] = {"enabled": sv.autoscaling is not None}
    if sv.autoscaling:
        low = worker_nodes_for(spec, sv.autoscaling.min_replicas) if sv.autoscaling.min_replicas else 0
        worker.update({"replicas": low, "minReplicas": low, "maxReplicas": hw.nodes})
    else:
        worker.update({"replicas": hw.nodes, "minReplicas": hw.nodes, "maxReplicas": hw.nodes})
    if hw.cpus_per_node:
        worker["rayCpus"] = hw.cpus_per_node
    if not hw.is_gpu:
        worker["tolerations"] = []
    worker.update(_gpu_placement(spec))
    values: dict[str, Any] = {
        "serveConfigV2": render_serve_config(spec, source=source),
        "serve": {"port": spec.api.port},
        "metrics": {"port": spec.observability.metrics_export_port},
        "haproxy": {"enabled": sv.proxy == "haproxy", "maxconn": haproxy_maxconn_wanted(spec)},
        # the rest of the environment `dsserve up` gives Ray (the chart sets the HAProxy switches itself)
        "serveEnv": {k: v for k, v in serve_env(spec).items() if k not in _CHART_HAPROXY_ENV},
        "apiKeys": {
            "envName": spec.api.api_keys_env or "",
            "existingSecret": API_KEYS_SECRET if spec.api.api_keys_env or spec.api.api_keys_file else "",
            "secretKey": API_KEYS_SECRET_KEY,
            # the chart mounts the Secret there (a directory volume, so rotations reach the ingress); empty
            # turns off the chart's default key file, so that a profile without keys runs without them
            "filePath": spec.api.api_keys_file or "",
        },
        "worker": worker,
        "autoscaling": autoscaling,
        # the loadtest subchart sees only its own values: tell it the port, the model and the key to send
        # (the chart's dsserve.validateValues refuses a load test aimed elsewhere)
        "loadtest": {
            "target": {"port": spec.api.port, "model": spec.model.id},
            "apiKey": {
                "existingSecret": API_KEYS_SECRET if spec.api.api_keys_env or spec.api.api_keys_file else "",
                "envName": spec.api.api_keys_env or "",
            },
        },
        # above the replicas' drain: Ray's HAProxy holds a stopping replica 30 s + 5 s for balancers first
        "terminationGracePeriodSeconds": termination_grace_period_s(spec),
        # after an upgrade's switch the old cluster finishes its in-flight generations before KubeRay deletes it
        "upgradeStrategy": {"rayClusterDeletionDelaySeconds": termination_grace_period_s(spec)},
    }
    # GPU profiles are production: the chart refuses to install them from a tag alone (image.requireDigest)
    values["image"] = {"requireDigest": True} if hw.is_gpu else {"repository": "dsserve-cpu"}
    mount = _model_mount(str(spec.model.source))
    values["modelStorage"] = {"mountPath": mount} if mount else {"type": "none"}
    return values


def _gpu_placement(spec: DeploymentSpec) -> dict[str, Any]:
    """Worker values that follow from the accelerator and the node count.

    A GPU profile pins its workers to the product the planner sized it for (GPU Feature Discovery's
    ``nvidia.com/gpu.product``): Ray places these replicas by GPU count alone, so on a mixed cluster a worker
    could otherwise land on a GPU whose memory the layout does not fit. A profile over several nodes turns on
    the chart's InfiniBand path (``worker.rdma``): its TP x PP stage boundaries or DP x EP all-to-all cross
    nodes, and without RDMA NCCL falls back to TCP over the pod network. CPU profiles stay unpinned.
    """
    hw = spec.hardware
    if not hw.is_gpu:
        return {}
    out: dict[str, Any] = {}
    product = ACCELERATORS[hw.accelerator].gpu_product
    if product:
        out["nodeSelector"] = {GPU_PRODUCT_LABEL: product}
    if hw.nodes > 1:
        out["rdma"] = {"enabled": True}
    return out


def _model_mount(source: str) -> str | None:
    """The directory to mount model storage at: the parent of an absolute model.source, e.g. /models."""
    if not source.startswith("/"):
        return None  # a Hugging Face id or a tiny: model: nothing to mount
    parent = source.rstrip("/").rsplit("/", 1)[0]
    return parent or "/"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks, so the Serve config stays readable in the values file."""


def _str_block(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_block)


def render_helm_values(spec: DeploymentSpec, *, source: str) -> str:
    """The values file as YAML text, headed by how to regenerate and install it."""
    values = helm_values(spec, source=source)
    header = (
        f"# Helm values for helm/dsserve, generated from {source} by\n"
        f"# `dsserve render helm-values {source}`.\n"
        "# Do not edit: change the profile and run `make render`; tests fail when this file drifts.\n"
        f"# Install: helm install {spec.name} helm/dsserve -n <namespace> -f <this file>"
        + (" --set image.digest=sha256:<digest>\n" if spec.hardware.is_gpu else "\n")
    )
    if spec.api.api_keys_env:
        header += (
            f"# API keys: kubectl -n <namespace> create secret generic {API_KEYS_SECRET} "
            f"--from-literal={API_KEYS_SECRET_KEY}=<key>[,<key>...]\n"
        )
    elif spec.api.api_keys_file:
        header += (
            f"# API keys: kubectl -n <namespace> create secret generic {API_KEYS_SECRET} "
            f"--from-file={API_KEYS_SECRET_KEY}=<file, one key per line>\n"
        )
    body = yaml.dump(values, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=1000)
    return header + body
