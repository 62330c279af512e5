"""The plan: memory verdict, performance model, SLO check and nearest fitting layouts, in one object.

:func:`build_plan` is the library entry point (a future simulated engine calls
``plan.decode_step_time_s(batch, context)`` and ``plan.prefill_time_s(tokens)``);
:func:`plan_profile` adds what the CLI needs: reading a profile, applying command-line overrides
through the spec's own validation, and resolving the request mix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsserve.catalog import ACCELERATORS, GIB, arch_from_hf_config, load_hf_config
from dsserve.errors import SpecError
from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment, Layout, deployment_from_spec, weight_format_for
from dsserve.planner.disagg import DisaggPlan, max_qps_meeting, plan_disagg_spec
from dsserve.planner.drain import Drain, plan_drain
from dsserve.planner.gateway import GatewayPlan, plan_gateway
from dsserve.planner.memory import MemoryPlan, layout_problems, plan_memory
from dsserve.planner.perf import PerfModel
from dsserve.planner.slo import LoadPoint, RequestMix, TokenDist, capacity_qps, evaluate_load, max_qps_for_slo, meets

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = ["Alternative", "Plan", "build_plan", "plan_profile", "request_mix_from_spec", "assumption_lines"]


@dataclass(frozen=True)
class Alternative:
    """A layout, dtype or hardware change that makes the model fit, with its cost in changes."""

    change: str
    distance: int
    deployment: Deployment
    memory: MemoryPlan
    max_generation_tok_s: float = 0.0


@dataclass
class Plan:
    """Everything `dsserve plan` reports, as data."""

    deployment: Deployment
    memory: MemoryPlan
    perf: PerfModel
    mix: RequestMix
    load: LoadPoint
    max_qps: float  # largest QPS meeting the mix's SLO
    capacity_qps: float  # largest sustainable QPS, any latency
    alternatives: list[Alternative] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the serving path's CPU for the mix's QPS (dsserve/planner/gateway.py); set when planned from a spec
    gateway: GatewayPlan | None = None
    #: how long stopping replicas wait for their requests (dsserve/planner/drain.py); set from a spec
    drain: Drain | None = None
    #: both pools and the KV transfer of a disaggregated spec; the fields above are then its decode pool's
    disagg: DisaggPlan | None = None

    # -- the simulated engine's interface ------------------------------------------------------
    def decode_step_time_s(self, batch: float, context: float) -> float:
        """Seconds per decode step (= TPOT) with ``batch`` sequences at mean ``context`` tokens."""
        return self.perf.decode_step_time_s(batch, context)

    def prefill_time_s(self, tokens: int, context: int = 0) -> float:
        """Seconds to prefill one prompt of ``tokens`` alone, after ``context`` cached tokens."""
        return self.perf.prefill_time_s(tokens, context)

    def step_time_s(self, decode: float, prefill: float = 0.0, context: float = 0.0) -> float:
        """One mixed continuous-batching step: ``decode`` sequences plus ``prefill`` prompt tokens."""
        return self.perf.step_time_s(decode, prefill, context)

    # -- verdicts ---------------------------------------------------------------------------------
    @property
    def fits(self) -> bool:
        if self.disagg is not None:
            return self.disagg.prefill.fits and self.disagg.decode.fits
        return self.memory.fits

    @property
    def meets_slo(self) -> bool:
        if self.disagg is not None:
            load = self.disagg.load
            return load.stable and load.value(self.mix.metric) <= self.mix.threshold_s
        return meets(self.load, self.mix)

    @property
    def ok(self) -> bool:
        return self.fits and self.meets_slo and (self.gateway is None or self.gateway.carries_target)

    @property
    def decode_context(self) -> float:
        """Mean context a decoding sequence of the mix holds (the context the throughput table uses)."""
        o = self.mix.output
        return self.mix.input.mean + o.second_moment / (2 * o.mean)


def request_mix_from_spec(
    spec: DeploymentSpec,
    *,
    qps: float | None = None,
    input_tokens: str | int | None = None,
    output_tokens: str | int | None = None,
    metric: str | None = None,
    percentile: float | None = None,
    threshold_ms: float | None = None,
) -> RequestMix:
    """The spec's ``slo`` section, with command-line overrides, checked against max_model_len."""
    slo = spec.slo
    if qps is not None and not qps > 0:
        raise SpecError(f"--qps: got {qps:g}; must be a positive request rate, e.g. --qps 20")
    if percentile is not None and not 0 < percentile < 100:
        raise SpecError(f"--percentile: got {percentile:g}; must be between 0 and 100, e.g. 99")
    if threshold_ms is not None and not threshold_ms > 0:
        raise SpecError(f"--threshold-ms: got {threshold_ms:g}; must be positive, e.g. 500")
    src_in = "--input-tokens" if input_tokens is not None else "slo.input_tokens"
    src_out = "--output-tokens" if output_tokens is not None else "slo.output_tokens"
    inp = TokenDist.parse(input_tokens if input_tokens is not None else slo.input_tokens, flag=src_in)
    out = TokenDist.parse(output_tokens if output_tokens is not None else slo.output_tokens, flag=src_out)
    mml = spec.engine.max_model_len
    if inp.kind == "const" and out.kind == "const" and inp.a + out.a > mml:
        raise SpecError(
            f"{src_in}/{src_out}: {int(inp.a)} + {int(out.a)} tokens exceed engine.max_model_len {mml}; "
            "shorten the request mix or raise engine.max_model_len"
        )
    if out.max >= mml:
        raise SpecError(
            f"{src_out}: up to {out.max} output tokens leave no room for a prompt within "
            f"engine.max_model_len {mml}; cap the distribution"
        )
    inp, out = inp.capped(mml - out.max), out
    m = metric or slo.metric
    return RequestMix(
        qps=qps if qps is not None else slo.target_qps,
        input=inp,
        output=out,
        metric=m,  # type: ignore[arg-type]  # slo.metric and --metric are validated to Metric's values
        percentile=percentile if percentile is not None else slo.percentile,
        threshold_s=(threshold_ms if threshold_ms is not None else slo.threshold_ms) / 1000.0,
    )


def build_plan(dep: Deployment, mix: RequestMix, *, alternatives: bool = True, max_alternatives: int = 5) -> Plan:
    """Plan one resolved deployment for one request mix."""
    mem = plan_memory(dep)
    perf = PerfModel(dep, mem)
    load = evaluate_load(perf, mix)
    plan = Plan(
        dep,
        mem,
        perf,
        mix,
        load,
        max_qps=max_qps_for_slo(perf, mix) if mem.fits else 0.0,
        capacity_qps=capacity_qps(perf, mix) if mem.fits else 0.0,
    )
    if dep.layout.dp > 1 and dep.arch.is_moe:
        over = " over the inter-node link" if dep.layout.tp * dep.layout.dp > dep.gpus_per_node else ""
        plan.notes.append(
            f"DP attention: expert traffic is modelled as vLLM's default all2all_backend "
            f"(allgather_reducescatter){over}, every rank as loaded as this one; DeepEP is not "
            "modelled"
        )
    if alternatives and dep.accel.is_gpu:
        plan.alternatives = nearest_fitting(dep, plan.decode_context, limit=max_alternatives)
    return plan


# -- nearest layouts that fit ----------------------------------------------------------------------


def _powers(limit: int) -> list[int]:
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def _layouts(dep: Deployment, total: int) -> list[Layout]:
    arch = dep.arch
    out = []
    for tp, pp in itertools.product(_powers(total), _powers(min(total, 16))):
        dps = _powers(total // (tp * pp)) if arch.is_moe else [1]
        for dp in dps:
            if tp * pp * dp > total:
                continue
            for ep in (False, True) if arch.is_moe and tp * dp > 1 else (False,):
                if dp > 1 and not ep:
                    continue  # DP attention is used with EP; without it vLLM slices experts
                out.append(Layout(tp, pp, dp, ep))
    return out


def nearest_fitting(dep: Deployment, context: float, *, limit: int = 5) -> list[Alternative]:
    """Fitting variants of ``dep``: the fastest of each kind of change, fewest changes first.

    Changes and their weights: the parallel layout (1), FP8 KV cache (1), FP8 weights (2), a 4-bit
    AWQ checkpoint (3), twice the nodes (3), an accelerator with more memory (4). Within a kind,
    candidates are ranked by decode throughput at the largest batch their KV cache allows.
    """
    arch = dep.arch
    kv_options = [(dep.kv_bytes, "", 0)] + ([(1.0, "kv_cache_dtype fp8", 1)] if dep.kv_bytes > 1 else [])
    quant_options: list[tuple[str | None, str, int]] = [("keep", "", 0)]
    if arch.weight_dtype in ("bf16", "fp16", "fp32") and not dep.weights.name.startswith(("fp8", "int4")):
        quant_options.append(("fp8", "quantization fp8", 2))
    if not dep.weights.name.startswith("int4"):
        quant_options.append(("awq", "quantization awq (4-bit checkpoint)", 3))
    hw_options = [(dep.accel.key, dep.nodes, "", 0), (dep.accel.key, dep.nodes * 2, f"{dep.nodes * 2} nodes", 3)]
    bigger = [a for a in ACCELERATORS.values() if a.is_gpu and a.usable_memory_bytes > dep.accel.usable_memory_bytes]
    if bigger:
        big = min(bigger, key=lambda a: a.usable_memory_bytes)
        hw_options.append((big.key, dep.nodes, f"{big.key} instead of {dep.accel.key}", 4))
    best: dict[str, tuple[float, Alternative]] = {}
    for (kvb, kv_label, kv_cost), (quant, q_label, q_cost), (acc_key, nodes, hw_label, hw_cost) in itertools.product(
        kv_options, quant_options, hw_options
    ):
        accel = ACCELERATORS[acc_key]
        weights = weight_format_for(arch, accel, dep.quantization if quant == "keep" else quant, dep.dtype)
        total = dep.gpus_per_node * nodes
        kind = ", ".join(p for p in (kv_label, q_label, hw_label) if p)
        for lay in _layouts(dep, total):
            if layout_problems(arch, lay, fp8_block=weights.name.startswith("fp8 (128")):
                continue
            changed = lay != dep.layout
            cost = kv_cost + q_cost + hw_cost + (1 if changed else 0)
            if cost == 0:
                continue
            cand = replace(
                dep,
                accel=accel,
                nodes=nodes,
                layout=lay,
                weights=weights,
                kv_bytes=kvb,
                replicas=max(1, total // lay.gpus),
                quantization=dep.quantization if quant == "keep" else quant,
            )
            mem = plan_memory(cand)
            if not mem.fits:
                continue
            perf = PerfModel(cand, mem)
            top = perf.max_decode_batch(context)
            score = perf.decode_throughput_tok_s(top, context) * cand.units if top else 0.0
            key = f"{kind}|{'layout' if changed else ''}"
            label = ", ".join(p for p in (lay.label() if changed else "", kind) if p)
            if key not in best or score > best[key][0]:
                best[key] = (score, Alternative(label, cost, cand, mem))
    ranked = sorted(best.values(), key=lambda sa: (sa[1].distance, -sa[0]))
    out = []
    for _, alt in ranked[:limit]:
        tput, _b = PerfModel(alt.deployment, alt.memory).max_generation_throughput(context)
        out.append(replace(alt, max_generation_tok_s=tput))
    return out


# -- from a profile ------------------------------------------------------------------------------

#: Command-line override flags -> the spec field they set.
OVERRIDE_PATHS = {
    "architecture": "model.architecture",
    "accelerator": "hardware.accelerator",
    "gpus_per_node": "hardware.gpus_per_node",
    "nodes": "hardware.nodes",
    "tp": "engine.tensor_parallel_size",
    "pp": "engine.pipeline_parallel_size",
    "dp": "engine.data_parallel_size",
    "ep": "engine.enable_expert_parallel",
    "quantization": "engine.quantization",
    "kv_cache_dtype": "engine.kv_cache_dtype",
    "max_model_len": "engine.max_model_len",
    "max_num_seqs": "engine.max_num_seqs",
    "max_num_batched_tokens": "engine.max_num_batched_tokens",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
    "replicas": "serving.replicas",
    "max_ongoing_requests": "serving.max_ongoing_requests",
}


def apply_overrides(spec: DeploymentSpec, overrides: dict[str, Any], *, where: str) -> DeploymentSpec:
    """Re-validate ``spec`` with ``{flag_name: value}`` overrides, through the spec's own checks."""
    from dsserve.config import parse_spec

    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return spec
    data = spec.model_dump(mode="python")
    for key, value in given.items():
        node = data
        *parents, last = OVERRIDE_PATHS[key].split(".")
        for p in parents:
            node = node[p]
        node[last] = None if value == "none" else value
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
    return parse_spec(data, where=f"{where} with {flags}")


def plan_profile(
    path: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    hf_config: str | None = None,
    mix_args: dict[str, Any] | None = None,
    alternatives: bool = True,
) -> Plan:
    """Load a profile, apply overrides and plan it (what `dsserve plan PROFILE` does)."""
    from dsserve.config import load_spec

    spec = apply_overrides(load_spec(path), overrides or {}, where=str(path))
    arch = None
    if hf_config:
        cfg = load_hf_config(hf_config)
        arch = arch_from_hf_config(
            cfg,
            key=Path(hf_config).resolve().parent.name if Path(hf_config).is_file() else Path(hf_config).name,
            where=str(hf_config),
        )
        if spec.engine.max_model_len > arch.max_context:
            raise SpecError(
                f"{path}: engine.max_model_len {spec.engine.max_model_len} exceeds the "
                f"{arch.max_context} tokens {hf_config} allows; lower it with --max-model-len"
            )
    mix = request_mix_from_spec(spec, **(mix_args or {}))
    if spec.disaggregation is not None:
        # the single-engine sections describe the decode pool, the one clients' requests are admitted to
        plan = build_plan(deployment_from_spec(spec.pool("decode"), arch), mix, alternatives=False)
        plan.disagg = plan_disagg_spec(spec, mix, arch)
        plan.max_qps = max_qps_meeting(plan.disagg, mix.metric)
        plan.capacity_qps = plan.disagg.capacity_qps
        plan.notes.append(
            "disaggregated: memory and throughput above are one decode engine's; the SLO verdict "
            "is the P/D deployment's (prefill pool + KV transfer + decode pool)"
        )
    else:
        plan = build_plan(deployment_from_spec(spec, arch), mix, alternatives=alternatives)
    plan.gateway = plan_gateway(spec, qps=mix.qps, output_tokens=round(mix.output.mean))
    plan.drain = plan_drain(spec)
    return plan


def assumption_lines(dep: Deployment) -> list[str]:
    """Every modelling assumption that shaped this plan, as sentences for the report."""
    acc = dep.accel
    gemm_peak = acc.fp8_flops if (dep.weights.fp8_compute and acc.fp8_flops) else acc.bf16_flops
    lines = [
        f"{acc.key}: {(acc.usable_memory_bytes or 0) / GIB:.1f} GiB usable per GPU, HBM "
        f"{acc.hbm_bandwidth / 1e12:.2f} TB/s x {A.HBM_EFFICIENCY} efficiency, GEMMs at "
        f"{gemm_peak / 1e12:.0f} TFLOP/s x {A.GEMM_EFFICIENCY}, attention at {acc.bf16_flops / 1e12:.0f} "
        f"x {A.ATTENTION_EFFICIENCY}, GPU link {acc.link_bandwidth / 1e9:.0f} GB/s per direction "
        f"({acc.link_name}) [{acc.sources}]",
        f"vLLM reserves per GPU: activations {A.ACTIVATION_GIB_MOE if dep.arch.is_moe else A.ACTIVATION_GIB_DENSE}"
        f" GiB at {A.ACTIVATION_REFERENCE_TOKENS} batched tokens (scaled up linearly above), non-torch "
        f"{A.NON_TORCH_GIB_TPN if dep.layout.tp > 1 else A.NON_TORCH_GIB_TP1} GiB "
        "[S: llm-d-planner constants, vLLM 0.19 on H100]",
        "prefill FLOPs = 2 x active matmul params per token + causal attention; decode reads the weights "
        "once per step, the experts some token touched (uniform routing), and each sequence's KV",
        f"fixed costs: {A.KERNEL_MIN_S * 1e6:g} us per kernel launched, {A.STEP_OVERHEAD_S * 1e3:g} ms per "
        f"step, {A.ALLREDUCE_LATENCY_S * 1e6:g} us per all-reduce [U]",
        "arrivals Poisson, routing even across replicas, no prefix-cache hits, no preemption, "
        "MoE routing uniform (no hot experts), "
        + (
            f"MTP speculative decoding: {dep.speculative_tokens} draft token(s) a step, each accepted with "
            f"probability {dep.mtp_acceptance:g} given its predecessors (engine.speculative.acceptance_rate), so "
            f"{dep.tokens_per_step:.2f} tokens per sequence per step"
            if dep.speculative_tokens
            else "no speculative decoding"
        ),
        f"Serve adds {A.PROXY_TTFT_S.get(dep.proxy, 0) * 1e3:g} ms ({dep.proxy} proxy) + "
        f"{dep.stream_interval_s * 1e3:g} ms stream batching to TTFT",
        "latency percentiles: M/G/1 wait for the prefill budget + M/M/c (Erlang C) wait for a sequence "
        "slot, both with exponential tails, + the request's own prefill chunks and decode steps",
    ]
    return lines
