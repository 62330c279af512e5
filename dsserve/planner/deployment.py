"""What the planner plans: a model, an accelerator, a parallel layout and the engine limits.

:func:`deployment_from_spec` turns a validated :class:`~dsserve.config.DeploymentSpec` into a
:class:`Deployment`, resolving what vLLM would resolve at start-up (the weight format from
``engine.quantization`` and the checkpoint, the KV dtype, the defaults of unset engine knobs), so the
memory and performance code below works from plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from dsserve.catalog import ACCELERATORS, GIB, Accelerator, ModelArch
from dsserve.planner import assumptions as A

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = [
    "Deployment",
    "Layout",
    "WeightFormat",
    "deployment_from_spec",
    "weight_format_for",
    "default_batched_tokens",
    "int4_format",
]


@dataclass(frozen=True)
class Layout:
    """How one engine replica is split over GPUs, in vLLM's terms.

    ``dp`` > 1 on a MoE model means vLLM's data-parallel attention: each DP rank schedules its own
    sequences and holds their KV cache, and the experts are split over all ``tp * dp`` ranks. On a dense
    model DP ranks are independent replicas.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def label(self) -> str:
        s = f"TP{self.tp}"
        if self.pp > 1:
            s += f" PP{self.pp}"
        if self.dp > 1:
            s += f" DP{self.dp}"
        return s + (" +EP" if self.ep else "")


@dataclass(frozen=True)
class WeightFormat:
    """How linear-layer weights are stored and computed.

    ``bytes_per_param`` includes the scales amortised per weight. Embeddings, the LM head, norms and the
    MoE router stay in the activation dtype (``dense_bytes``) in every format modelled here, as in vLLM.
    """

    name: str
    bytes_per_param: float
    dense_bytes: float = 2.0
    fp8_compute: bool = False  # GEMMs on FP8 tensor cores (W8A8) rather than BF16
    note: str = ""


def weight_format_for(
    arch: ModelArch, accel: Accelerator, quantization: str | None, dtype: str = "bfloat16"
) -> WeightFormat:
    """The weight format vLLM ends up with for this checkpoint and ``engine.quantization``."""
    dense = 4.0 if dtype == "float32" else 2.0
    fp8_tc = accel.fp8_flops > 0
    fp8_block = WeightFormat(
        "fp8 (128x128 block scales)",
        1 + A.FP8_SCALE_BYTES / (128 * 128),
        dense,
        fp8_tc,
        "" if fp8_tc else f"{accel.key} has no FP8 tensor cores: FP8 weights run as W8A16 at BF16 rate",
    )
    if quantization is None:
        if arch.weight_dtype == "fp8":
            return fp8_block
        if arch.weight_dtype == "int4":
            return int4_format(arch.quant_group_size, dense)
        if arch.weight_dtype == "fp32" and dtype == "auto":
            return WeightFormat("fp32", 4.0, 4.0)
        if dtype == "float32":
            return WeightFormat("fp32", 4.0, 4.0)
        return WeightFormat("fp16" if dtype == "float16" else "bf16", 2.0, dense)
    if quantization == "fp8":
        if arch.weight_dtype == "fp8":
            return fp8_block
        return WeightFormat(
            "fp8 (online, per-tensor scales)",
            1.0,
            dense,
            fp8_tc,
            "vLLM quantizes the BF16 checkpoint to FP8 while loading",
        )
    if quantization in ("awq", "gptq"):
        group = arch.quant_group_size or A.INT4_DEFAULT_GROUP
        fmt = int4_format(group, dense)
        if arch.weight_dtype != "int4":
            fmt = replace(
                fmt, note=f"assumes a 4-bit {quantization.upper()} checkpoint of {arch.key} with group size {group}"
            )
        return fmt
    if quantization == "bitsandbytes":
        return WeightFormat(
            f"nf4 (block {A.NF4_BLOCK})",
            0.5 + A.NF4_SCALE_BYTES / A.NF4_BLOCK,
            dense,
            note="bitsandbytes NF4; double quantization ignored",
        )
    # compressed-tensors: the format is whatever the checkpoint says; FP8 W8A8 is the common case.
    return WeightFormat(
        "compressed-tensors (assumed FP8 W8A8)",
        1.0,
        dense,
        fp8_tc,
        "compressed-tensors format assumed FP8 W8A8; pass --hf-config to be exact",
    )


def int4_format(group: int, dense: float = 2.0) -> WeightFormat:
    """INT4 GPTQ/AWQ: 4 bits per weight plus an fp16 scale and a 4-bit zero per group (0: per column)."""
    per = 0.5 + (A.INT4_GROUP_OVERHEAD_BYTES / group if group else 0.0)
    label = f"int4 (group {group})" if group else "int4 (per-column scales)"
    return WeightFormat(label, per, dense)


def default_batched_tokens(accel: Accelerator, world_size: int) -> int:
    """vLLM 0.32's OpenAI-server default for ``max_num_batched_tokens`` on this device [V]."""
    if not accel.is_gpu:
        return A.VLLM_DEFAULT_BATCHED_TOKENS_OTHER * world_size
    mem = accel.usable_memory_bytes or accel.memory_bytes
    if mem >= 160 * GIB:
        return A.VLLM_DEFAULT_BATCHED_TOKENS_LARGE
    if mem >= 70 * GIB and not accel.key.startswith("a100"):
        return A.VLLM_DEFAULT_BATCHED_TOKENS_HOPPER
    return A.VLLM_DEFAULT_BATCHED_TOKENS_OTHER


@dataclass(frozen=True)
class Deployment:
    """Everything the memory and performance models read, resolved to numbers."""

    name: str
    arch: ModelArch
    accel: Accelerator
    layout: Layout
    weights: WeightFormat
    kv_bytes: float  # bytes per cached element
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    replicas: int = 1
    gpus_per_node: int = 8
    nodes: int = 1
    cpu_kv_gib: float = 0.0  # CPU engines: VLLM_CPU_KVCACHE_SPACE
    proxy: Literal["python", "haproxy"] = "python"
    stream_interval_s: float = 0.0
    max_ongoing_requests: int = 1 << 30
    quantization: str | None = None  # engine.quantization as given (weights holds the resolved format)
    dtype: str = "bfloat16"
    speculative_tokens: int = 0  # MTP draft tokens per step (vLLM num_speculative_tokens); 0 = off
    mtp_acceptance: float = 0.0  # probability one draft token is accepted, given the ones before it were

    @property
    def tokens_per_step(self) -> float:
        """Output tokens one decoding sequence gains per engine step: 1 without speculation; with k MTP
        drafts each accepted with probability a once its predecessors were, 1 + a + ... + a^k."""
        a = self.mtp_acceptance
        return sum(a**i for i in range(self.speculative_tokens + 1))

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def units(self) -> int:
        """Independent schedulers serving traffic: replicas x DP ranks."""
        return self.replicas * self.layout.dp

    @property
    def kv_dtype_label(self) -> str:
        return {2.0: "bf16", 1.0: "fp8", 4.0: "fp32"}.get(float(self.kv_bytes), f"{self.kv_bytes * 8:g}-bit")

    def with_layout(self, layout: Layout, *, replicas: int | None = None) -> Deployment:
        return replace(self, layout=layout, replicas=replicas if replicas is not None else self.replicas)


def deployment_from_spec(spec: DeploymentSpec, arch: ModelArch | None = None) -> Deployment:
    """Resolve a validated spec; ``arch`` overrides the catalog entry (e.g. from a local config.json)."""
    arch = arch or spec.model_arch
    accel = ACCELERATORS[spec.hardware.accelerator]
    eng, hw, sv = spec.engine, spec.hardware, spec.serving
    layout = Layout(
        eng.tensor_parallel_size, eng.pipeline_parallel_size, eng.data_parallel_size, eng.enable_expert_parallel
    )
    act_bytes = 4.0 if eng.dtype == "float32" else 2.0
    kv_bytes = 1.0 if eng.kv_cache_dtype.startswith("fp8") else act_bytes
    util = eng.gpu_memory_utilization or A.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    replicas = sv.autoscaling.max_replicas if sv.autoscaling else sv.replicas
    return Deployment(
        name=spec.name,
        arch=arch,
        accel=accel,
        layout=layout,
        weights=weight_format_for(arch, accel, eng.quantization, eng.dtype),
        kv_bytes=kv_bytes,
        gpu_memory_utilization=util,
        max_model_len=eng.max_model_len,
        max_num_seqs=eng.max_num_seqs,
        max_num_batched_tokens=eng.max_num_batched_tokens or default_batched_tokens(accel, layout.tp * layout.pp),
        replicas=replicas,
        gpus_per_node=max(hw.gpus_per_node, 1),
        nodes=hw.nodes,
        cpu_kv_gib=eng.cpu.kvcache_space_gib if not accel.is_gpu else 0.0,
        proxy=sv.proxy,
        stream_interval_s=sv.stream_batching_interval_ms / 1000.0,
        # With DP attention each DP rank is its own Serve replica (ray.serve.llm DPServer.get_deployment_options
        # multiplies num_replicas by data_parallel_size), so a DP group holds dp x max_ongoing_requests.
        max_ongoing_requests=sv.max_ongoing_requests * eng.data_parallel_size,
        quantization=eng.quantization,
        dtype=eng.dtype,
        speculative_tokens=eng.speculative.num_speculative_tokens if eng.speculative else 0,
        mtp_acceptance=eng.speculative.acceptance_rate if eng.speculative else 0.0,
    )
