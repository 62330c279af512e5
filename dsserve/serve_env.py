"""The process environment a spec's Ray nodes start with: Serve's fast path and its sizing.

Ray Serve reads these when its processes start (``ray/serve/_private/constants.py``), not from the Serve
config, so they cannot travel in the application's YAML: `dsserve up` puts them in its own environment
before starting Ray, the rendered Serve YAML lists them in its header, and the Helm values set them on
every Ray container. One function, so the three agree. :func:`scoped_environ` is the one way dsserve changes its own
process environment, and undoes it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dsserve.haproxy_launch import ENV_ADMIN_HOST, ENV_HTTP_REQUEST_TIMEOUT, LAUNCHER, WILDCARD_HOSTS

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = ["serve_env", "haproxy_maxconn_wanted", "haproxy_launcher", "scoped_environ", "IDLE_TRIMS"]

#: What a deployment does not need from Ray's background work, turned down. Measured by
#: bench/frontend_cpu.py (idle cores of the local-cpu stack: 0.056 with them, stock Serve 0.080;
#: bench/results/frontend-cpu.json, docs/performance.md).
IDLE_TRIMS = {
    # Serve's replicas, handles and proxies flush their cached request metrics every 100 ms by default
    # (serve/_private/constants.py RAY_SERVE_METRICS_EXPORT_INTERVAL_MS); Prometheus scrapes every 5-15 s.
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # The Serve controller's reconcile loop runs every 0.1 s by default; replica failures are found by
    # health checks every 10 s anyway, so 0.5 s changes no reaction time a client can see.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    # HAProxy logs one line per request to a socket that Serve's HAProxyManager parses into ray_serve_*
    # HTTP metrics (0.3 ms of CPU per request here); dsserve's pipeline records the same requests
    # (dsserve_*), and the dashboards and alerts read those.
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    # Ray keeps up to one idle worker per CPU warm for tasks; a serving cluster runs actors, which get
    # their own workers anyway.
    "RAY_num_workers_soft_limit": "0",
    # No usage reports (and no network here to send them).
    "RAY_USAGE_STATS_ENABLED": "0",
}


def haproxy_maxconn_wanted(spec: DeploymentSpec) -> int:
    """RAY_SERVE_HAPROXY_MAXCONN for a spec: every sequence the deployment may admit, plus room for refusals.

    Ray 2.60 defaults it to 4096 (serve/_private/constants.py); past it HAProxy leaves connections waiting
    in the kernel's accept queue, unanswered, however high the admission limit.
    """
    from dsserve.app import admission_limit

    limit = admission_limit(spec)
    return max(4096, (limit if limit is not None else 65536) + 1024)


def serve_env(spec: DeploymentSpec) -> dict[str, str]:
    """Environment variables (name -> value) every Ray node of this deployment needs."""
    from dsserve.planner.gateway import plan_gateway

    env: dict[str, str] = {}
    if spec.serving.proxy == "haproxy":
        env.update(
            {
                # HAProxy in place of Ray's Python proxy, and Serve's throughput-optimized settings (user code on
                # the replica's own event loop, gRPC between replicas, direct ingress to the ingress replicas).
                "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_HAPROXY_MAXCONN": str(haproxy_maxconn_wanted(spec)),
                "RAY_SERVE_HAPROXY_NBTHREAD": str(plan_gateway(spec).haproxy_threads),
                # client-side timeouts from the spec (Ray's own default for the first is 3600 s); the second
                # and the admin address reach HAProxy through dsserve-haproxy (dsserve/haproxy_launch.py),
                # which RAY_SERVE_HAPROXY_BINARY_PATH names: `dsserve up` sets it, the images set it
                "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(spec.api.client_timeout_s),
                ENV_HTTP_REQUEST_TIMEOUT: str(spec.api.http_request_timeout_s),
            }
        )
        if spec.api.host not in WILDCARD_HOSTS:
            env[ENV_ADMIN_HOST] = spec.api.host  # stats page and exporter on the API's own address
    if spec.serving.gateway == "direct" and spec.serving.router == "prefix_cache_affinity":
        # the prefix-affinity router reads the prompt: HAProxy forwards the body to Serve's ingress router
        env["RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY"] = "1"
    env.update(IDLE_TRIMS)
    return env


def haproxy_launcher() -> str | None:
    """The absolute path of ``dsserve-haproxy`` installed beside this Python (None when it is missing)."""
    beside = Path(sys.executable).parent / LAUNCHER
    if beside.is_file():
        return str(beside)
    return shutil.which(LAUNCHER)


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then put back exactly what was there.

    A variable that was set gets its old value back, one that was absent is removed again, also when the
    block raises. Which variables to set is the caller's policy (LocalStack passes only those the user has
    not set, so a user's own value wins); restoring is always this one rule.
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
