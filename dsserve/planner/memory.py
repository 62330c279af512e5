"""Per-GPU memory: weights, reserves and the KV cache, split the way vLLM splits them.

vLLM sizes the KV cache at start-up as ``usable x gpu_memory_utilization - weights - peak activation -
non-torch memory`` on every rank and takes the smallest; it refuses to start when that cannot hold one
sequence of ``max_model_len``. This module reproduces that arithmetic from the model's shape:

- attention is split over TP, except MLA's latent down-projections (replicated); GQA KV heads are
  split while there are at least as many as TP ranks, then replicated (one head per rank);
- the MLA latent KV cache is *not* split by TP: every TP rank holds all of it (vLLM
  ``get_num_kv_heads`` returns 1 for MLA) -- so TP8 gives an MLA model the KV capacity of one GPU;
- experts are split over ``tp x dp`` ranks (whole experts with EP, slices without); shared experts
  over TP; embeddings and the LM head are vocab-parallel over TP; PP splits layers as vLLM's
  ``get_pp_indices`` does, embeddings on the first stage and the LM head on the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsserve.catalog import GIB, ModelArch
from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment, Layout

__all__ = ["MemoryPlan", "StageShape", "plan_memory", "stage_shapes", "pp_partition", "layout_problems"]


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage, exactly as vLLM's ``get_pp_indices`` assigns them [V]."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


@dataclass(frozen=True)
class StageShape:
    """The per-rank view of one pipeline stage: what one GPU of it holds and computes per token."""

    index: int
    layers: int
    dense_ffn_layers: int
    moe_layers: int
    first: bool
    last: bool
    # per-rank parameter counts
    attn_params: float  # per layer
    dense_ffn_params: float  # per dense-FFN layer
    shared_params: float  # per MoE layer (shared experts, always active)
    router_params: float  # per MoE layer
    expert_params: float  # one routed expert, whole
    experts_split: int  # ranks the routed experts are spread over (tp x dp)
    vocab_params: float  # embedding + LM head held by this rank
    lm_head_params: float  # LM head held by this rank (computed once per sampled token)
    kv_bytes_per_token: float  # this rank's KV bytes per cached token (its layers)
    weight_bytes: float  # everything this rank holds
    # MTP speculative decoding (last stage only): draft modules held, and each one's [emb; hidden] projection
    mtp_layers: int = 0
    mtp_proj_params: float = 0.0


def _kv_layer_bytes(arch: ModelArch, tp: int, kv_bytes: float) -> float:
    if arch.attention == "mla":
        return (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_bytes  # replicated on every TP rank
    heads = max(1, arch.num_kv_heads // tp)  # replicated when fewer KV heads than ranks [V]
    return 2 * heads * arch.head_dim * kv_bytes


def _attn_params_per_rank(arch: ModelArch, tp: int) -> float:
    rep, split = arch.attention_params()
    if arch.attention == "mla":
        return rep + split / tp
    kv = arch.kv_proj_params()
    kv_rank = kv / arch.num_kv_heads * max(1, arch.num_kv_heads // tp)
    return (split - kv) / tp + kv_rank


def stage_shapes(dep: Deployment) -> list[StageShape]:
    """One :class:`StageShape` per pipeline stage."""
    arch, lay, fmt = dep.arch, dep.layout, dep.weights
    tp, q, d = lay.tp, fmt.bytes_per_param, fmt.dense_bytes
    experts_split = tp * lay.dp if arch.is_moe else 1
    attn = _attn_params_per_rank(arch, tp)
    dense_ffn = arch.dense_mlp_params / tp
    shared = arch.shared_experts * arch.expert_params / tp
    router = float(arch.router_params)
    routed_rank = arch.routed_experts * arch.expert_params / experts_split
    kv_layer = _kv_layer_bytes(arch, tp, dep.kv_bytes)
    shapes: list[StageShape] = []
    start = 0
    parts = pp_partition(arch.num_layers, lay.pp)
    for i, n in enumerate(parts):
        idx = range(start, start + n)
        start += n
        dense_n = sum(1 for x in idx if x < arch.first_k_dense_replace or not arch.is_moe)
        moe_n = n - dense_n
        first, last = i == 0, i == len(parts) - 1
        emb = arch.embedding_params / tp if first else 0.0
        head = arch.lm_head_params / tp if last else 0.0
        if last and arch.tie_word_embeddings and not first:
            head = arch.embedding_params / tp  # tied head still needs the matrix on the last stage
        norms = (2 * n + (1 if last else 0)) * arch.hidden_size
        weight = (
            n * attn * q
            + dense_n * dense_ffn * q
            + moe_n * ((shared + routed_rank) * q + router * d)
            + (emb + head + norms) * d
        )
        # vLLM runs the MTP draft module on the last rank of the pipeline, split like a main layer; its
        # projection is a replicated linear, and its attention keeps its own KV cache.
        mtp = arch.mtp_layers if (last and dep.speculative_tokens > 0) else 0
        proj = 2.0 * arch.hidden_size * arch.hidden_size if mtp else 0.0
        if mtp:
            ffn_w = (shared + routed_rank) * q + router * d if arch.is_moe else dense_ffn * q
            weight += mtp * (attn * q + ffn_w + (proj + 3 * arch.hidden_size) * d)
        shapes.append(
            StageShape(
                index=i,
                layers=n,
                dense_ffn_layers=dense_n,
                moe_layers=moe_n,
                first=first,
                last=last,
                attn_params=attn,
                dense_ffn_params=dense_ffn,
                shared_params=shared,
                router_params=router,
                expert_params=float(arch.expert_params),
                experts_split=experts_split,
                vocab_params=emb + head,
                lm_head_params=arch.vocab_size * arch.hidden_size / tp if last else 0.0,
                kv_bytes_per_token=(n + mtp) * kv_layer,
                weight_bytes=weight,
                mtp_layers=mtp,
                mtp_proj_params=proj,
            )
        )
    return shapes


def layout_problems(arch: ModelArch, layout: Layout, *, fp8_block: bool = False) -> list[str]:
    """Why vLLM would refuse this layout for this model (empty when it would accept it)."""
    out: list[str] = []
    tp = layout.tp
    if arch.num_heads % tp:
        out.append(f"{arch.num_heads} attention heads are not divisible by TP {tp}")
    if arch.attention != "mla" and arch.num_kv_heads % tp and tp % arch.num_kv_heads:
        out.append(f"{arch.num_kv_heads} KV heads and TP {tp} do not divide one another")
    if layout.pp > arch.num_layers:
        out.append(f"PP {layout.pp} exceeds the {arch.num_layers} layers")
    if layout.ep and not arch.is_moe:
        out.append("expert parallelism needs a MoE model")
    if arch.is_moe:
        split = tp * layout.dp
        if layout.ep and arch.routed_experts % split:
            out.append(f"{arch.routed_experts} experts are not divisible by EP {split}")
        if not layout.ep and arch.moe_intermediate_size % split:
            out.append(f"moe_intermediate_size {arch.moe_intermediate_size} is not divisible by {split}")
        if fp8_block and not layout.ep and (arch.moe_intermediate_size // split) % 128:
            out.append(f"FP8 128x128 blocks need moe_intermediate_size/{split} to be a multiple of 128")
    if arch.intermediate_size % tp:
        out.append(f"intermediate_size {arch.intermediate_size} is not divisible by TP {tp}")
    return out


@dataclass(frozen=True)
class MemoryPlan:
    """The memory verdict for one deployment, per GPU of its fullest pipeline stage."""

    fits: bool
    reason: str
    usable_bytes: float
    budget_bytes: float
    weight_bytes: float  # fullest stage, per GPU
    activation_bytes: float
    non_torch_bytes: float
    kv_bytes_per_token: float  # per GPU (stage with the most KV per token)
    kv_budget_bytes: float  # per GPU, after weights and reserves (can be negative)
    kv_tokens: int  # per scheduler unit (replica or DP rank)
    max_seqs_at_max_len: int  # per unit, vLLM's "Maximum concurrency for max_model_len tokens"
    kv_block_tokens: int
    stages: list[StageShape] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def headroom_after_weights_bytes(self) -> float:
        """Memory left per GPU after the weights, before reserves and KV, at the utilization cap."""
        return self.budget_bytes - self.weight_bytes


def plan_memory(dep: Deployment) -> MemoryPlan:
    """Fit check, KV capacity and concurrency for one deployment."""
    arch, lay, accel = dep.arch, dep.layout, dep.accel
    shapes = stage_shapes(dep)
    block = A.KV_BLOCK_TOKENS_MLA if (arch.attention == "mla" and accel.is_gpu) else A.KV_BLOCK_TOKENS
    notes: list[str] = []
    problems = layout_problems(arch, lay, fp8_block=dep.weights.name.startswith("fp8 (128"))
    if dep.speculative_tokens > 0 and not arch.mtp_layers:
        problems.append(f"{arch.key} has no multi-token-prediction module for MTP speculative decoding")
    if not accel.is_gpu:
        kv_budget = dep.cpu_kv_gib * GIB
        per_tok = sum(s.kv_bytes_per_token for s in shapes)
        tokens = int(kv_budget // (per_tok * block)) * block if per_tok else 0
        seqs = tokens // dep.max_model_len
        fits = not problems and seqs >= 1
        reason = (
            "; ".join(problems)
            if problems
            else f"the CPU KV cache ({dep.cpu_kv_gib:g} GiB) holds {tokens} tokens"
            + ("" if seqs >= 1 else f", less than one max_model_len sequence ({dep.max_model_len})")
        )
        notes.append("CPU engine: weights live in host RAM and are not checked against its size")
        w = sum(s.weight_bytes for s in shapes)
        return MemoryPlan(
            fits, reason, 0.0, kv_budget, w, 0.0, 0.0, per_tok, kv_budget, tokens, seqs, block, shapes, notes
        )

    usable = float(accel.usable_memory_bytes or accel.memory_bytes)
    budget = usable * dep.gpu_memory_utilization
    act_gib = A.ACTIVATION_GIB_MOE if arch.is_moe else A.ACTIVATION_GIB_DENSE
    act = act_gib * GIB * max(1.0, dep.max_num_batched_tokens / A.ACTIVATION_REFERENCE_TOKENS)
    non_torch = (A.NON_TORCH_GIB_TPN if lay.tp > 1 else A.NON_TORCH_GIB_TP1) * GIB
    tokens_by_stage = []
    worst_weight = max(s.weight_bytes for s in shapes)
    worst_kv_budget = math.inf
    for s in shapes:
        kv_budget = budget - s.weight_bytes - act - non_torch
        worst_kv_budget = min(worst_kv_budget, kv_budget)
        per_block = s.kv_bytes_per_token * block
        tokens_by_stage.append(int(max(kv_budget, 0.0) // per_block) * block if per_block else 0)
    tokens = min(tokens_by_stage)
    per_tok = max(s.kv_bytes_per_token for s in shapes)
    seqs = tokens // dep.max_model_len

    def gib(b: float) -> str:
        return f"{b / GIB:.1f} GiB"

    total_needed = lay.gpus * dep.replicas
    if problems:
        fits, reason = False, "vLLM rejects the layout: " + "; ".join(problems)
    elif total_needed > dep.total_gpus:
        fits, reason = (
            False,
            (
                f"{dep.replicas} replica(s) x {lay.gpus} GPUs = {total_needed} GPUs, but the "
                f"cluster has {dep.total_gpus}"
            ),
        )
    elif worst_weight > budget:
        fits, reason = (
            False,
            (
                f"weights need {gib(worst_weight)} per GPU but only {gib(budget)} is usable "
                f"({gib(usable)} x gpu_memory_utilization {dep.gpu_memory_utilization:g})"
            ),
        )
    elif worst_kv_budget <= 0:
        fits, reason = (
            False,
            (
                f"weights ({gib(worst_weight)}) + activations ({gib(act)}) + non-torch ({gib(non_torch)}) "
                f"exceed the {gib(budget)} budget per GPU, leaving nothing for the KV cache"
            ),
        )
    elif seqs < 1:
        fits, reason = (
            False,
            (
                f"the KV cache holds {tokens} tokens per replica, less than one max_model_len sequence "
                f"({dep.max_model_len}); vLLM refuses to start"
            ),
        )
    else:
        fits = True
        reason = (
            f"{gib(worst_kv_budget)} per GPU left for KV: {tokens:,} tokens, {seqs} sequences of {dep.max_model_len}"
        )
    if arch.attention == "mla" and lay.tp > 1:
        notes.append(
            f"MLA latent KV is replicated on all {lay.tp} TP ranks (vLLM): capacity does not grow "
            "with TP; DP attention (data_parallel_size) would"
        )
    if arch.attention != "mla" and arch.num_kv_heads < lay.tp:
        notes.append(f"{arch.num_kv_heads} KV heads < TP {lay.tp}: vLLM replicates KV heads")
    if dep.weights.note:
        notes.append(dep.weights.note)
    return MemoryPlan(
        fits,
        reason,
        usable,
        budget,
        worst_weight,
        act,
        non_torch,
        per_tok,
        worst_kv_budget,
        tokens,
        seqs,
        block,
        shapes,
        notes,
    )
