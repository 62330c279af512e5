"""The "1200 QPS" table of ``docs/planner.md``: per profile and request mix, the largest QPS that keeps
p99 TTFT (and, separately, p99 E2E) under 500 ms, and whether a target QPS is feasible at all.

``dsserve plan --sweep PROFILE...`` prints it; the doc quotes that output verbatim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsserve.config import load_spec

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec
from dsserve.planner.deployment import deployment_from_spec
from dsserve.planner.memory import plan_memory
from dsserve.planner.perf import PerfModel
from dsserve.planner.slo import (
    RequestMix,
    TokenDist,
    capacity_qps,
    evaluate_load,
    max_qps_for_slo,
    meets,
)

__all__ = ["MIXES", "SweepRow", "sweep", "sweep_table"]

#: The request mixes the question is asked for: (name, prompt tokens, output tokens).
MIXES: list[tuple[str, int, int]] = [
    ("short chat", 128, 32),
    ("chat", 512, 256),
    ("RAG", 4096, 256),
]
PERCENTILE = 99.0
THRESHOLD_S = 0.5


@dataclass(frozen=True)
class SweepRow:
    profile: str
    layout: str
    mix: str
    inp: int
    out: int
    servable: str  # "" when the mix fits the deployment, else why not
    sustainable_qps: float = 0.0
    max_qps_ttft: float = 0.0
    max_qps_e2e: float = 0.0
    target_sustainable: bool = False
    target_meets_ttft: bool = False
    ttft_at_target_s: float = math.inf
    limit: str = ""  # what stops the deployment just above its sustainable QPS
    nodes: int = 1  # nodes one copy of the deployment occupies


_LIMITS = [
    ("max_num_seqs", "max_num_seqs"),
    ("KV cache", "KV cache"),
    ("max_num_batched_tokens", "token budget"),
    ("prefill budget", "prefill budget"),
    ("max_ongoing_requests", "max_ongoing_requests"),
    ("sequence slots", "KV/sequence slots"),
    ("diverges", "step time"),
]


def _limit(reason: str) -> str:
    return next((label for key, label in _LIMITS if key in reason), reason)


def sweep(
    profiles: list[str | Path],
    *,
    target_qps: float = 1200.0,
    mixes: list[tuple[str, int, int]] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[SweepRow]:
    """Sweep each profile (with optional what-if ``overrides``, as `dsserve plan` takes them)."""
    from dsserve.planner.plan import apply_overrides

    rows: list[SweepRow] = []
    for path in profiles:
        spec = apply_overrides(load_spec(path), overrides or {}, where=str(path))
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        name = spec.name + ("".join(f" --{k.replace('_', '-')} {v}" for k, v in given.items()) if given else "")
        if spec.disaggregation is not None:
            rows += _disagg_rows(spec, name, target_qps, mixes or MIXES)
            continue
        dep = deployment_from_spec(spec)
        mem = plan_memory(dep)
        perf = PerfModel(dep, mem)
        label = f"{dep.layout.label()} ×{dep.replicas}" if dep.replicas > 1 else dep.layout.label()
        for mix_name, inp, out in mixes or MIXES:
            base: dict[str, Any] = dict(profile=name, layout=label, mix=mix_name, inp=inp, out=out, nodes=dep.nodes)
            if not mem.fits:
                rows.append(SweepRow(servable=f"does not fit: {mem.reason}", **base))
                continue
            if inp + out > dep.max_model_len:
                rows.append(SweepRow(servable=f"{inp}+{out} tokens > max_model_len {dep.max_model_len}", **base))
                continue
            mix = _sweep_mix(target_qps, inp, out)
            at_target = evaluate_load(perf, mix)
            cap = capacity_qps(perf, mix)
            rows.append(
                SweepRow(
                    servable="",
                    sustainable_qps=cap,
                    limit=_limit(evaluate_load(perf, mix, cap * 1.01).reason),
                    max_qps_ttft=max_qps_for_slo(perf, mix, "ttft"),
                    max_qps_e2e=max_qps_for_slo(perf, mix, "e2e"),
                    target_sustainable=at_target.stable,
                    target_meets_ttft=meets(at_target, mix, "ttft"),
                    ttft_at_target_s=at_target.ttft_s,
                    **base,
                )
            )
    return rows


def _sweep_mix(target_qps: float, inp: int, out: int) -> RequestMix:
    return RequestMix(
        target_qps,
        TokenDist("const", inp),
        TokenDist("const", out),
        metric="ttft",
        percentile=PERCENTILE,
        threshold_s=THRESHOLD_S,
    )


def _disagg_rows(
    spec: DeploymentSpec, name: str, target_qps: float, mixes: list[tuple[str, int, int]]
) -> list[SweepRow]:
    """A disaggregated profile's rows: both pools and the transfer (dsserve/planner/disagg.py) per mix."""
    from dsserve.planner.disagg import evaluate_disagg, max_qps_meeting, plan_disagg_spec

    pools = [deployment_from_spec(spec.pool(role)) for role in ("prefill", "decode")]
    label = " / ".join(
        f"{role[0].upper()}: {d.layout.label()} ×{d.replicas}"
        for role, d in zip(("prefill", "decode"), pools, strict=True)
    )
    nodes, rows = spec.hardware.nodes, []
    for mix_name, inp, out in mixes:
        base: dict[str, Any] = dict(profile=name, layout=label, mix=mix_name, inp=inp, out=out, nodes=nodes)
        if inp + out > spec.engine.max_model_len:
            rows.append(SweepRow(servable=f"{inp}+{out} tokens > max_model_len {spec.engine.max_model_len}", **base))
            continue
        mix = _sweep_mix(target_qps, inp, out)
        plan = plan_disagg_spec(spec, mix)
        if not (plan.prefill.fits and plan.decode.fits):
            rows.append(SweepRow(servable=f"does not fit: {plan.prefill.reason or plan.decode.reason}", **base))
            continue

        def at(q: float, plan: Any = plan, mix: RequestMix = mix) -> Any:
            return evaluate_disagg(plan.prefill.deployment, plan.decode.deployment, plan.transfer, mix, q)

        cap = plan.capacity_qps
        rows.append(
            SweepRow(
                servable="",
                sustainable_qps=cap,
                limit=f"{plan.bottleneck}: " + _limit(at(cap * 1.01).reason),
                max_qps_ttft=max_qps_meeting(plan, "ttft"),
                max_qps_e2e=max_qps_meeting(plan, "e2e"),
                target_sustainable=plan.load.stable,
                target_meets_ttft=plan.load.stable and plan.load.ttft_s <= mix.threshold_s,
                ttft_at_target_s=plan.load.ttft_s,
                **base,
            )
        )
    return rows


def _q(x: float) -> str:
    if x <= 0:
        return "0"
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def sweep_table(
    profiles: list[str | Path], *, target_qps: float = 1200.0, overrides: dict[str, Any] | None = None
) -> str:
    """Markdown table of :func:`sweep`."""
    t = f"{target_qps:g}"
    lines = [
        f"| Profile | Layout | Mix (in/out tokens) | Sustainable QPS | Limit above it | Max QPS, p99 TTFT < 500 ms | "
        f"Max QPS, p99 E2E < 500 ms | {t} QPS sustainable? | {t} QPS with p99 TTFT < 500 ms? | "
        f"Nodes for {t} QPS with p99 TTFT < 500 ms |",
        "|---|---|---|---:|---|---:|---:|---|---|---:|",
    ]
    for r in sweep(profiles, target_qps=target_qps, overrides=overrides):
        mix = f"{r.mix} ({r.inp}/{r.out})"
        if r.servable:
            lines.append(f"| {r.profile} | {r.layout} | {mix} | – | {r.servable} | – | – | no | no | – |")
            continue
        copies = "never" if r.max_qps_ttft <= 0 else f"{math.ceil(target_qps / r.max_qps_ttft) * r.nodes:,}"
        lines.append(
            f"| {r.profile} | {r.layout} | {mix} | {_q(r.sustainable_qps)} | {r.limit} | {_q(r.max_qps_ttft)} | "
            f"{_q(r.max_qps_e2e)} | {'yes' if r.target_sustainable else 'no'} | "
            f"{'yes' if r.target_meets_ttft else 'no'} | {copies} |"
        )
    return "\n".join(lines) + "\n"
