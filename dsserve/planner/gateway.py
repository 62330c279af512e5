"""The gateway: how much CPU the serving path needs for the profile's target QPS, and where.

Whatever terminates HTTP pays CPU per request: HAProxy, then one Python process per hop (the engine
replica itself in direct mode; an ingress replica and the engine replica in ingress mode). A Python
process runs one event loop, so one core is the most a replica can use, and the planner keeps each at
:data:`~dsserve.planner.assumptions.GATEWAY_UTILIZATION` of it. From the measured CPU per request of
each hop (``bench/frontend_cpu.py``; the figures and their source in :mod:`~dsserve.planner.assumptions`)
and the request mix (longer streams cost more: one event per token):

- cores: target QPS x CPU per request, every hop together (what the nodes' CPUs must spare);
- replicas: direct mode uses the engine replicas; ingress mode needs enough ingress replicas that
  each stays under the planned busy share, and the engine replicas carry their own part either way;
- HAProxy: ``maxconn`` from the admission limit, threads from its share of the cores.

A profile whose gateway cannot carry its target is a validation error (:func:`gateway_problem`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dsserve.planner import assumptions as A

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = ["GatewayPlan", "gateway_problem", "plan_gateway"]

#: HAProxy threads: at most this many (Ray's default is 4; one thread relays thousands of requests/s).
HAPROXY_MAX_THREADS = 8


@dataclass(frozen=True)
class GatewayPlan:
    """The gateway a spec needs at ``qps`` requests/s of ``output_tokens``-token streams."""

    mode: str  # direct | ingress
    qps: float
    output_tokens: int
    hops: dict[str, float]  # CPU ms per request in each process kind
    cpu_ms_per_request: float  # all hops together
    cores: float  # qps x cpu_ms_per_request / 1000
    replicas: int  # gateway replicas: engine replicas (direct) or ingress replicas (ingress)
    replicas_needed: int  # how many the target needs at the planned busy share
    engine_replicas: int
    busiest_process_share: float  # planned busy share of the busiest Python process, 0..1+
    haproxy_threads: int
    router_replicas: int  # Serve's ingress request router (prefix affinity, direct mode); 0 when not used
    carries_qps: float  # the most the planned replicas carry at the planned busy share
    source: str = A.GATEWAY_CPU_SOURCE
    notes: list[str] = field(default_factory=list)

    @property
    def carries_target(self) -> bool:
        return self.carries_qps + 1e-9 >= self.qps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["carries_target"] = self.carries_target
        d["utilization_planned"] = A.GATEWAY_UTILIZATION
        return d


def _hop_ms(mode: str, output_tokens: int, prefix_affinity: bool) -> dict[str, float]:
    extra = max(0, output_tokens - A.GATEWAY_REFERENCE_TOKENS)
    hops = {
        name: round(ms + A.GATEWAY_CPU_MS_PER_TOKEN[mode][name] * extra, 3)
        for name, ms in A.GATEWAY_CPU_MS[mode].items()
    }
    if prefix_affinity:
        if mode == "direct":
            hops[A.HOP_ROUTER] = A.GATEWAY_ROUTER_CPU_MS
        hops[A.HOP_PREFIX_TREE] = A.GATEWAY_PREFIX_TREE_CPU_MS[mode]
    return hops


def plan_gateway(spec: DeploymentSpec, *, qps: float | None = None, output_tokens: int | None = None) -> GatewayPlan:
    """The gateway for ``spec`` at its target (or the given) QPS and output length."""
    from dsserve.app import engine_replicas

    sv = spec.serving
    mode = sv.gateway
    qps = spec.slo.target_qps if qps is None else qps
    tokens = spec.slo.output_tokens if output_tokens is None else output_tokens
    hops = _hop_ms(mode, tokens, sv.router == "prefix_cache_affinity")
    total = sum(hops.values())
    per_process_qps = lambda ms: 1000.0 * A.GATEWAY_UTILIZATION / ms  # noqa: E731 - one formula, two uses
    engines = engine_replicas(spec)
    python = A.GATEWAY_PROCESSES[mode]
    if mode == "direct":
        ms = hops[python[0]]
        needed = math.ceil(qps / per_process_qps(ms))
        replicas = engines
        carries = replicas * per_process_qps(ms)
        busiest = qps * ms / 1000.0 / replicas
    else:
        ingress_ms = hops[python[0]]
        engine_ms = hops[python[1]]
        needed = max(1, math.ceil(qps / per_process_qps(ingress_ms)))
        replicas = sv.gateway_replicas if sv.gateway_replicas is not None else needed
        carries = min(replicas * per_process_qps(ingress_ms), engines * per_process_qps(engine_ms))
        busiest = max(qps * ingress_ms / 1000.0 / replicas, qps * engine_ms / 1000.0 / engines)
    router_ms = hops.get(A.HOP_ROUTER)
    router_replicas = math.ceil(qps / per_process_qps(router_ms)) if router_ms else 0
    notes = []
    tree_ms = hops.get(A.HOP_PREFIX_TREE)
    if tree_ms:  # one prefix tree actor per deployment: a ceiling no replica count lifts
        tree_qps = per_process_qps(tree_ms)
        notes.append(
            f"prefix affinity: one prefix tree actor, {tree_ms:g} ms per request, carries up to "
            f"{tree_qps:.0f} QPS at {A.GATEWAY_UTILIZATION:.0%} busy"
        )
        if tree_qps < carries:
            carries = tree_qps
            busiest = max(busiest, qps * tree_ms / 1000.0)
    cores = qps * total / 1000.0
    haproxy_cores = qps * hops[A.HOP_HAPROXY] / 1000.0
    threads = max(1, min(HAPROXY_MAX_THREADS, math.ceil(haproxy_cores / A.GATEWAY_UTILIZATION)))
    if spec.engine.backend == "simulated":
        notes.append("simulated engine: the gateway is planned as for the real engine it models")
    return GatewayPlan(
        mode=mode,
        qps=qps,
        output_tokens=tokens,
        hops=hops,
        cpu_ms_per_request=round(total, 3),
        cores=round(cores, 3),
        replicas=replicas,
        replicas_needed=needed,
        engine_replicas=engines,
        busiest_process_share=round(busiest, 3),
        haproxy_threads=threads,
        router_replicas=router_replicas,
        carries_qps=round(carries, 1),
        notes=notes,
    )


def gateway_problem(spec: DeploymentSpec) -> tuple[str, str] | None:
    """(YAML path, message) when the profile's gateway cannot carry ``slo.target_qps``; None when it can."""
    plan = plan_gateway(spec)
    if plan.carries_target:
        return None
    per = f"{plan.cpu_ms_per_request:g} ms of CPU per {plan.output_tokens}-token request"
    tree_ms = plan.hops.get(A.HOP_PREFIX_TREE)
    if tree_ms and abs(plan.carries_qps - 1000.0 * A.GATEWAY_UTILIZATION / tree_ms) < 0.1:  # the tree is the cap
        return (
            "serving.router",
            f"{plan.qps:g} req/s is more than prefix-cache affinity's one prefix tree actor "
            f"carries ({plan.carries_qps:g} req/s at {tree_ms:g} ms per request); set serving.router: "
            "power_of_two, or lower slo.target_qps",
        )
    if plan.mode == "direct":
        return (
            "slo.target_qps",
            f"{plan.qps:g} req/s needs {plan.replicas_needed} gateway processes at "
            f"{A.GATEWAY_UTILIZATION:.0%} busy ({per}; dsserve plan shows the hops), but direct mode has "
            f"{plan.replicas} (one per engine replica); add engine replicas (a smaller layout each), or "
            "lower slo.target_qps",
        )
    if spec.serving.gateway_replicas is not None and plan.replicas < plan.replicas_needed:
        return (
            "serving.gateway_replicas",
            f"{plan.replicas} ingress replica(s) carry {plan.carries_qps:g} req/s "
            f"({per}); slo.target_qps {plan.qps:g} needs {plan.replicas_needed}; raise it or leave it unset "
            "for the planner to size",
        )
    return (
        "slo.target_qps",
        f"{plan.qps:g} req/s is more than the {plan.engine_replicas} engine replica(s) "
        f"carry ({plan.carries_qps:g} req/s; {per}); add engine replicas or lower slo.target_qps",
    )
