"""Render a :class:`~dsserve.planner.plan.Plan` as a readable report or as JSON-ready data."""

from __future__ import annotations

import math
from typing import Any

from dsserve.catalog import GIB, kv_bytes_per_token
from dsserve.planner.disagg import DisaggPlan, PoolCapacity, balance
from dsserve.planner.gateway import GatewayPlan
from dsserve.planner.plan import Plan, assumption_lines

__all__ = ["plan_to_dict", "render_text", "table"]

_BATCHES = (1, 8, 32, 64, 128, 256, 512, 1024)
_PROMPTS = (128, 512, 2048, 8192)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        parts = [c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=False)]
        lines.append("  " + "  ".join(parts).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _numeric(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("%"))
    except ValueError:
        return False
    return True


def _ms(s: float) -> float:
    return s * 1000.0


def _batches(plan: Plan) -> list[int]:
    top = plan.perf.max_decode_batch(plan.decode_context)
    out = [b for b in _BATCHES if b < top] + ([top] if top else [])
    return out


def throughput_rows(plan: Plan) -> list[dict[str, float]]:
    ctx = plan.decode_context
    rows = []
    for b in _batches(plan):
        t = plan.perf.tpot_s(b, ctx)
        rows.append(
            {
                "batch": b,
                "context": ctx,
                "tpot_s": t,
                "tok_s_per_unit": b / t,
                "tok_s_total": b / t * plan.deployment.units,
            }
        )
    return rows


def prefill_rows(plan: Plan) -> list[dict[str, float]]:
    mml = plan.deployment.max_model_len
    rows = []
    for n in sorted({p for p in _PROMPTS if p < mml} | {int(plan.mix.input.mean)}):
        t = plan.prefill_time_s(n)
        rows.append({"prompt_tokens": n, "prefill_s": t, "tok_s_per_unit": n / t})
    return rows


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (what ``--json`` prints)."""
    dep, mem = plan.deployment, plan.memory
    return {
        "name": dep.name,
        "ok": plan.ok,
        "model": {
            "architecture": dep.arch.key,
            "attention": dep.arch.attention,
            "moe": dep.arch.is_moe,
            "total_params": dep.arch.total_params,
            "active_params": dep.arch.active_params,
            "weights": dep.weights.name,
            "kv_cache_dtype": dep.kv_dtype_label,
            "kv_bytes_per_token": kv_bytes_per_token(dep.arch, dep.kv_bytes),
        },
        "hardware": {"accelerator": dep.accel.key, "gpus_per_node": dep.gpus_per_node, "nodes": dep.nodes},
        "layout": {
            "tp": dep.layout.tp,
            "pp": dep.layout.pp,
            "dp": dep.layout.dp,
            "ep": dep.layout.ep,
            "replicas": dep.replicas,
            "label": dep.layout.label(),
        },
        "speculative": (
            {
                "method": "mtp",
                "num_speculative_tokens": dep.speculative_tokens,
                "acceptance_rate_assumed": dep.mtp_acceptance,
                "tokens_per_step": dep.tokens_per_step,
                "mtp_params": dep.arch.mtp_params,
            }
            if dep.speculative_tokens
            else None
        ),
        "memory": {
            "fits": mem.fits,
            "reason": mem.reason,
            "usable_gib": mem.usable_bytes / GIB,
            "budget_gib": mem.budget_bytes / GIB,
            "gpu_memory_utilization": dep.gpu_memory_utilization,
            "weights_gib_per_gpu": mem.weight_bytes / GIB,
            "activation_gib": mem.activation_bytes / GIB,
            "non_torch_gib": mem.non_torch_bytes / GIB,
            "kv_gib_per_gpu": max(mem.kv_budget_bytes, 0) / GIB,
            "headroom_after_weights_gib": mem.headroom_after_weights_bytes / GIB,
            "kv_bytes_per_token_per_gpu": mem.kv_bytes_per_token,
            "kv_tokens_per_replica": mem.kv_tokens,
            "max_seqs_at_max_model_len_per_replica": mem.max_seqs_at_max_len,
            "max_model_len": dep.max_model_len,
            "max_num_seqs": dep.max_num_seqs,
            "notes": mem.notes,
        },
        "performance": {
            "decode": throughput_rows(plan) if mem.fits else [],
            "prefill": prefill_rows(plan) if mem.fits else [],
            "max_num_batched_tokens": dep.max_num_batched_tokens,
        },
        "slo": _slo_dict(plan),
        **(disagg_to_dict(plan.disagg) if plan.disagg is not None else {}),
        "gateway": plan.gateway.to_dict() if plan.gateway is not None else None,
        "drain": plan.drain.to_dict() if plan.drain is not None else None,
        "alternatives": [
            {
                "change": a.change,
                "distance": a.distance,
                "layout": a.deployment.layout.label(),
                "accelerator": a.deployment.accel.key,
                "nodes": a.deployment.nodes,
                "replicas": a.deployment.replicas,
                "weights": a.deployment.weights.name,
                "kv_cache_dtype": a.deployment.kv_dtype_label,
                "weights_gib_per_gpu": a.memory.weight_bytes / GIB,
                "kv_tokens_per_replica": a.memory.kv_tokens,
                "max_generation_tok_s": a.max_generation_tok_s,
            }
            for a in plan.alternatives
        ],
        "notes": plan.notes,
        "assumptions": assumption_lines(dep),
    }


def _slo_dict(plan: Plan) -> dict[str, Any]:
    """The SLO block of ``--json``: the load point of the single-engine model, or of the P/D model (both pools
    and the transfer; the fields only one engine has are then null)."""
    load, mix = plan.load, plan.mix
    head = {
        "qps": mix.qps,
        "input_tokens": mix.input.label(),
        "output_tokens": mix.output.label(),
        "metric": mix.metric,
        "percentile": mix.percentile,
        "threshold_s": mix.threshold_s,
        "meets": plan.meets_slo,
        "max_qps_meeting_slo": plan.max_qps,
        "sustainable_qps": plan.capacity_qps,
    }
    if plan.disagg is not None:
        d = plan.disagg.load
        return {
            **head,
            "stable": d.stable,
            "reason": d.reason,
            "ttft_s": _finite(d.ttft_s),
            "e2e_s": _finite(d.e2e_s),
            "itl_s": _finite(d.itl_s),
            "ttft_mean_s": None,
            "e2e_mean_s": None,
            "batch_per_replica": d.decode_batch,
            "step_s": None,
            "prefill_utilization": None,
            "output_tok_s": d.output_tok_s,
        }
    return {
        **head,
        "stable": load.stable,
        "reason": load.reason,
        "ttft_s": _finite(load.ttft_s),
        "e2e_s": _finite(load.e2e_s),
        "itl_s": _finite(load.itl_s),
        "ttft_mean_s": _finite(load.ttft_mean_s),
        "e2e_mean_s": _finite(load.e2e_mean_s),
        "batch_per_replica": load.batch,
        "step_s": _finite(load.step_s),
        "prefill_utilization": load.prefill_utilization,
        "output_tok_s": load.output_tok_s,
    }


def _pool_dict(pool: PoolCapacity) -> dict[str, Any]:
    dep = pool.deployment
    return {
        "layout": dep.layout.label(),
        "gpus_per_instance": pool.gpus_per_instance,
        "instances": pool.instances,
        "gpus": pool.gpus,
        "fits": pool.fits,
        "reason": pool.reason,
        "qps_per_instance": pool.qps_per_instance,
        "qps": pool.qps,
        "max_num_seqs": dep.max_num_seqs,
        "max_num_batched_tokens": dep.max_num_batched_tokens,
    }


def _balanced(d: DisaggPlan) -> tuple[int, int, float]:
    """The xPyD split of the deployment's own GPU count that serves the most requests per second."""
    return balance(d.prefill, d.decode, d.prefill.gpus + d.decode.gpus)


def disagg_to_dict(d: DisaggPlan) -> dict[str, Any]:
    """The P/D sections of ``--json``: each pool, the KV transfer and the latency parts at the mix's rate."""
    load, mix = d.load, d.mix
    x, y, qps = _balanced(d)
    return {
        "prefill": _pool_dict(d.prefill),
        "decode": _pool_dict(d.decode),
        "kv_transfer": {
            "link": d.transfer.link,
            "bandwidth_bytes_per_s": d.transfer.bandwidth,
            "bytes_per_token_busiest_gpu": d.transfer.bytes_per_token,
            "fixed_latency_s": d.transfer.latency_s,
            "mean_prompt_s": d.transfer_mean_s,
            "mean_prompt_bytes": d.transfer.bytes_per_request(mix.input.mean),
            "percentile_prompt_s": _finite(load.transfer_s),
        },
        "disaggregation": {
            "capacity_qps": d.capacity_qps,
            "bottleneck": d.bottleneck,
            "balanced_prefill_per_decode": _finite(d.balanced_ratio),
            "best_split_of_these_gpus": {"prefill": x, "decode": y, "qps": qps},
            "stable": load.stable,
            "reason": load.reason,
            "ttft_s": _finite(load.ttft_s),
            "ttft_parts_s": {
                "prefill": _finite(load.prefill_ttft_s),
                "transfer": _finite(load.transfer_s),
                "decode_join": _finite(load.decode_join_s),
            },
            "itl_s": _finite(load.itl_s),
            "e2e_s": _finite(load.e2e_s),
            "output_tok_s": load.output_tok_s,
        },
    }


def disagg_lines(d: DisaggPlan) -> list[str]:
    """The P/D section of the text report."""
    load, mix = d.load, d.mix
    x, y, qps = _balanced(d)
    rows = [
        [
            p.role,
            p.deployment.layout.label(),
            p.instances,
            p.gpus,
            "yes" if p.fits else f"no: {p.reason}",
            f"{p.qps_per_instance:,.1f}",
            f"{p.qps:,.1f}",
        ]
        for p in (d.prefill, d.decode)
    ]
    out = [
        "Prefill/decode disaggregation",
        table(["pool", "layout", "instances", "GPUs", "fits", "QPS/instance", "QPS"], rows),
        f"  KV transfer: {d.transfer.link}, {d.transfer.bandwidth / 1e9:,.0f} GB/s per GPU, "
        f"{d.transfer.bytes_per_token:,.0f} B/token on the busiest GPU: {d.transfer_mean_s * 1e3:.2f} ms for the "
        f"mean prompt ({mix.input.mean:,.0f} tokens)",
        f"  capacity {d.capacity_qps:,.1f} QPS ({d.bottleneck} pool first); balanced at "
        f"{d.balanced_ratio:.2f} prefill per decode instance; best split of these {d.prefill.gpus + d.decode.gpus} "
        f"GPUs: {x}P{y}D, {qps:,.1f} QPS",
    ]
    if load.stable:
        out.append(
            f"  at {mix.qps:g} QPS: p{mix.percentile:g} TTFT {_ms(load.ttft_s):.0f} ms = prefill "
            f"{_ms(load.prefill_ttft_s):.0f} + transfer {_ms(load.transfer_s):.1f} + decode join "
            f"{_ms(load.decode_join_s):.0f}; TPOT {_ms(load.itl_s):.1f} ms; E2E {_ms(load.e2e_s):.0f} ms"
        )
    else:
        out.append(f"  at {mix.qps:g} QPS: {load.reason}")
    return out


def _finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def gateway_lines(g: GatewayPlan) -> list[str]:
    """The gateway section of the report: CPU per request by hop, cores, replicas, HAProxy."""
    where = (
        "each engine replica terminates HTTP (direct mode)"
        if g.mode == "direct"
        else "ingress replicas in front of the engine replicas (ingress mode)"
    )
    out = [f"Gateway at {g.qps:g} QPS of {g.output_tokens}-token streams: {where}"]
    rows = [[hop, ms, round(g.qps * ms / 1000.0, 3)] for hop, ms in g.hops.items()]
    rows.append(["total", round(g.cpu_ms_per_request, 3), g.cores])
    out.append(table(["hop", "CPU ms/request", "cores at target"], rows))
    who = "engine replicas" if g.mode == "direct" else "ingress replicas"
    planned = g.to_dict()["utilization_planned"]
    out.append(
        f"  {who}: {g.replicas} (the target needs {g.replicas_needed} at {planned:.0%} "
        f"of a core each); busiest process {g.busiest_process_share:.0%} busy; HAProxy threads "
        f"{g.haproxy_threads}" + (f"; ingress request router replicas {g.router_replicas}" if g.router_replicas else "")
    )
    out.append(f"  => {'CARRIES' if g.carries_target else 'CANNOT CARRY'} the target: up to {g.carries_qps:,.1f} QPS")
    out.append(f"     CPU per request measured by {g.source}")
    out.extend(f"     note: {n}" for n in g.notes)
    return out


def _aggregated_slo_lines(plan: Plan) -> list[str]:
    """The SLO section of a single-pool plan: the load point and the verdict."""
    load, mix = plan.load, plan.mix
    out: list[str] = []
    if load.stable:
        out.append(
            table(
                ["", "value"],
                [
                    ["running sequences per replica", round(load.batch, 1)],
                    ["time per output token (TPOT) ms", _ms(load.tpot_s)],
                    ["prefill budget utilization", f"{load.prefill_utilization:.0%}"],
                    [f"p{mix.percentile:g} TTFT ms", _ms(load.ttft_s)],
                    [f"p{mix.percentile:g} E2E ms", _ms(load.e2e_s)],
                    [f"p{mix.percentile:g} ITL ms", _ms(load.itl_s)],
                    ["output tok/s", load.output_tok_s],
                ],
            )
        )
    verdict = "MEETS" if plan.meets_slo else "FAILS"
    why = (
        load.reason
        if not load.stable
        else (
            f"p{mix.percentile:g} {mix.metric.upper()} {_ms(load.value(mix.metric)):.0f} ms vs "
            f"{_ms(mix.threshold_s):g} ms"
        )
    )
    out.append(f"  => {verdict}: {why}")
    out.append(
        f"     largest QPS meeting this SLO: {plan.max_qps:,.1f}; largest sustainable QPS (any "
        f"latency): {plan.capacity_qps:,.1f}"
    )

    return out


def render_text(plan: Plan) -> str:
    dep, mem, mix, arch = plan.deployment, plan.memory, plan.mix, plan.deployment.arch
    out: list[str] = []
    hw = f"{dep.nodes} x {dep.gpus_per_node} {dep.accel.key}" if dep.accel.is_gpu else "cpu"
    out.append(f"dsserve plan: {dep.name}: {arch.key} on {hw}, {dep.layout.label()}, {dep.replicas} replica(s)")
    kind = f"{'MLA' if arch.attention == 'mla' else arch.attention.upper()}, " + (
        f"MoE {arch.routed_experts}+{arch.shared_experts} experts top-{arch.experts_per_token}"
        if arch.is_moe
        else "dense"
    )
    out.append(
        f"  model: {arch.total_params / 1e9:.1f}B params ({arch.active_params / 1e9:.1f}B active), "
        f"{kind}; weights {dep.weights.name}; KV {dep.kv_dtype_label}, "
        f"{kv_bytes_per_token(arch, dep.kv_bytes):,} B/token"
    )
    out.append("")
    out.append("Memory per GPU (fullest pipeline stage)")
    if dep.accel.is_gpu:
        rows: list[tuple[str, float]] = [
            ("usable device memory", mem.usable_bytes / GIB),
            (f"budget at gpu_memory_utilization {dep.gpu_memory_utilization:g}", mem.budget_bytes / GIB),
            (f"weights ({dep.weights.name})", mem.weight_bytes / GIB),
            ("activations (vLLM profiling peak)", mem.activation_bytes / GIB),
            ("non-torch (CUDA context, NCCL)", mem.non_torch_bytes / GIB),
            ("left for the KV cache", mem.kv_budget_bytes / GIB),
        ]
        out.append(table(["", "GiB"], [[r[0], round(r[1], 2)] for r in rows]))
    else:
        out.append(
            f"  CPU KV cache (engine.cpu.kvcache_space_gib): {dep.cpu_kv_gib:g} GiB; weights in host "
            f"RAM: {mem.weight_bytes / GIB:.3f} GiB"
        )
    out.append(
        f"  KV cache: {mem.kv_bytes_per_token:,.0f} B/token per GPU; {mem.kv_tokens:,} tokens per replica; "
        f"{mem.max_seqs_at_max_len} sequences of max_model_len {dep.max_model_len} per replica "
        f"(max_num_seqs {dep.max_num_seqs})"
    )
    out.append(f"  => {'FITS' if mem.fits else 'DOES NOT FIT'}: {mem.reason}")
    for n in mem.notes:
        out.append(f"     note: {n}")

    if mem.fits:
        out.append("")
        out.append(f"Decode (per step, mean context {plan.decode_context:,.0f} tokens; {dep.units} scheduler unit(s))")
        out.append(
            table(
                ["batch", "TPOT ms", "tok/s per replica", "tok/s total"],
                [[r["batch"], _ms(r["tpot_s"]), r["tok_s_per_unit"], r["tok_s_total"]] for r in throughput_rows(plan)],
            )
        )
        tput, batch = plan.perf.max_generation_throughput(plan.decode_context)
        out.append(f"  max generation throughput (decode only): {tput:,.0f} tok/s at batch {batch} per scheduler unit")
        out.append("")
        out.append(f"Prefill (one prompt alone, chunks of {dep.max_num_batched_tokens} tokens)")
        out.append(
            table(
                ["prompt tokens", "prefill ms", "prompt tok/s"],
                [[r["prompt_tokens"], _ms(r["prefill_s"]), r["tok_s_per_unit"]] for r in prefill_rows(plan)],
            )
        )

    out.append("")
    out.append(
        f"SLO: p{mix.percentile:g} {mix.metric.upper()} <= {_ms(mix.threshold_s):g} ms at {mix.qps:g} QPS, "
        f"{mix.label()} tokens (Poisson arrivals)"
    )
    if plan.disagg is not None:
        out.extend(disagg_lines(plan.disagg))
        d = plan.disagg.load
        value = _ms(d.value(mix.metric))
        why = d.reason if not d.stable else f"p{mix.percentile:g} {mix.metric.upper()} {value:.0f} ms"
        out.append(f"  => {'MEETS' if plan.meets_slo else 'FAILS'}: {why} vs {_ms(mix.threshold_s):g} ms")
        out.append(
            f"     largest QPS meeting this SLO: {plan.max_qps:,.1f}; largest sustainable QPS (any "
            f"latency): {plan.capacity_qps:,.1f}"
        )
    else:
        out.extend(_aggregated_slo_lines(plan))

    if plan.gateway is not None:
        out.append("")
        out.extend(gateway_lines(plan.gateway))
    if plan.drain is not None:
        out.append(plan.drain.line())

    if plan.alternatives:
        out.append("")
        out.append("Nearest layouts that fit (fewest changes first)")
        out.append(
            table(
                ["change", "layout", "replicas", "weights GiB/GPU", "KV tokens/scheduler", "max gen tok/s"],
                [
                    [
                        a.change,
                        a.deployment.layout.label(),
                        a.deployment.replicas,
                        round(a.memory.weight_bytes / GIB, 1),
                        a.memory.kv_tokens,
                        a.max_generation_tok_s,
                    ]
                    for a in plan.alternatives
                ],
            )
        )
    for n in plan.notes:
        out.append(f"note: {n}")
    out.append("")
    out.append("Assumptions")
    out.extend(f"  - {line}" for line in assumption_lines(dep))
    return "\n".join(out) + "\n"
