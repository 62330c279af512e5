"""The catalog: published model shapes, parameter counts computed from them, KV sizes, accelerators,
and reading a Hugging Face config.json into the same record.

Sources are cited per test; "reference" is shared/reference/deepseek-and-hardware.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsserve.catalog import ACCELERATORS, GIB, MODEL_ARCHS, arch_from_hf_config, kv_bytes_per_token, load_hf_config
from dsserve.errors import ModelBuildError

# The reference's "computed from config" row (§1.1, tag [C]): total / active parameters, in billions.
# Our counts include the MoE router in "active"; the reference row does not, hence 0.5% tolerance.
REFERENCE_COMPUTED = {
    "deepseek-llm-67b": (67.42, 67.42),
    "deepseek-moe-16b": (16.38, 2.82),
    "deepseek-v2-lite": (15.71, 2.66),
    "deepseek-v2": (235.7, 21.3),
    "deepseek-v3": (671.0, 37.4),
}


def test_names_config_py_relies_on_are_kept() -> None:
    """dsserve/config.py and dsserve/app.py read these keys and fields; they must not drift."""
    for key in (
        "deepseek-v3",
        "deepseek-r1",
        "deepseek-v2",
        "deepseek-v2-lite",
        "deepseek-moe-16b",
        "deepseek-llm-67b",
        "tiny-deepseek-v2",
        "tiny-deepseek-llm",
    ):
        arch = MODEL_ARCHS[key]
        assert isinstance(arch.is_moe, bool) and arch.max_context >= 4096
    assert not MODEL_ARCHS["deepseek-llm-67b"].is_moe and MODEL_ARCHS["deepseek-v3"].is_moe
    assert not ACCELERATORS["cpu"].is_gpu and ACCELERATORS["cpu"].ray_accelerator_type is None
    for key in ("h800", "h100", "h200", "a100-80g"):
        assert ACCELERATORS[key].is_gpu
    assert ACCELERATORS["h100"].ray_accelerator_type == "H100"
    assert ACCELERATORS["h800"].ray_accelerator_type is None  # Ray has no H800 constant


@pytest.mark.parametrize("key", sorted(REFERENCE_COMPUTED))
def test_parameter_counts_match_the_reference(key: str) -> None:
    total, active = REFERENCE_COMPUTED[key]
    arch = MODEL_ARCHS[key]
    assert arch.total_params / 1e9 == pytest.approx(total, rel=0.005)
    assert arch.active_params / 1e9 == pytest.approx(active, rel=0.005)


@pytest.mark.parametrize("key", sorted(REFERENCE_COMPUTED))
def test_parameter_counts_match_the_official_numbers(key: str) -> None:
    """Official totals (papers/READMEs, [V]) agree within 1%: they are rounded to 2-3 digits."""
    arch = MODEL_ARCHS[key]
    assert arch.total_params == pytest.approx(arch.published["total_params"], rel=0.01)


def test_active_params_official_within_rounding() -> None:
    # V3 README: 37B activated [V]; V2 paper: 21B [V]; DeepSeekMoE: ~2.8B [V]. V2-Lite's official 2.4B
    # excludes the input embedding (reference §1.1: 2.45B without it), so it is checked that way.
    assert MODEL_ARCHS["deepseek-v3"].active_params == pytest.approx(37e9, rel=0.02)
    assert MODEL_ARCHS["deepseek-v2"].active_params == pytest.approx(21e9, rel=0.02)
    assert MODEL_ARCHS["deepseek-moe-16b"].active_params == pytest.approx(2.8e9, rel=0.02)
    lite = MODEL_ARCHS["deepseek-v2-lite"]
    assert lite.active_params - lite.embedding_params == pytest.approx(2.45e9, rel=0.01)


# Reference §2 (all [C] from [V] shapes); V3 also ISCA'25 Table 1 "70.272 KB" [V].
KV_BF16 = {
    "deepseek-llm-67b": 389_120,
    "deepseek-moe-16b": 229_376,
    "deepseek-v2-lite": 31_104,
    "deepseek-v2": 69_120,
    "deepseek-v3": 70_272,
    "deepseek-r1": 70_272,
}


@pytest.mark.parametrize("key", sorted(KV_BF16))
def test_kv_bytes_per_token_exact(key: str) -> None:
    arch = MODEL_ARCHS[key]
    assert kv_bytes_per_token(arch) == KV_BF16[key]
    assert kv_bytes_per_token(arch, 1) == KV_BF16[key] // 2  # FP8 column of the same table


def test_v2_six_bit_kv_reproduces_the_93_percent_claim() -> None:
    """V2 README: "KV cache reduced by 93.3%" vs the 67B, with V2's ~6-bit KV (reference §2) [V]."""
    v2 = kv_bytes_per_token(MODEL_ARCHS["deepseek-v2"], 0.75)
    reduction = 1 - v2 / kv_bytes_per_token(MODEL_ARCHS["deepseek-llm-67b"])
    assert reduction == pytest.approx(0.933, abs=0.001)


def test_accelerator_figures_are_dense_and_sourced() -> None:
    h800 = ACCELERATORS["h800"]
    # Reference §4: dense BF16 989.4, dense FP8 1978.9 TFLOP/s (sparse is double); H800 NVLink ~160 GB/s
    # achievable per direction [V]; usable memory ~79.1 GiB as vLLM reports it [S].
    assert h800.bf16_flops == pytest.approx(989.4e12) and h800.fp8_flops == pytest.approx(2 * 989.45e12, rel=1e-3)
    assert h800.link_bandwidth == pytest.approx(160e9)
    assert h800.usable_memory_bytes / GIB == pytest.approx(79.1, abs=0.01)
    assert ACCELERATORS["h200"].hbm_bandwidth == pytest.approx(4.8e12)
    assert ACCELERATORS["a100-80g"].fp8_flops == 0  # no FP8 tensor cores on Ampere
    for a in ACCELERATORS.values():
        assert a.sources, f"{a.key} has no source note"


V3_CONFIG = {  # DeepSeek-V3 inference/configs/config_671B.json and HF config.json fields [V]
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "vocab_size": 129280,
    "max_position_embeddings": 163840,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
}


def test_hf_config_reproduces_the_catalog_v3() -> None:
    arch = arch_from_hf_config(V3_CONFIG, key="deepseek-v3")
    cat = MODEL_ARCHS["deepseek-v3"]
    for f in (
        "attention",
        "num_layers",
        "hidden_size",
        "num_heads",
        "vocab_size",
        "max_context",
        "weight_dtype",
        "intermediate_size",
        "moe_intermediate_size",
        "kv_lora_rank",
        "q_lora_rank",
        "qk_rope_head_dim",
        "routed_experts",
        "shared_experts",
        "experts_per_token",
        "first_k_dense_replace",
        "quant_block",
    ):
        assert getattr(arch, f) == getattr(cat, f), f
    assert arch.total_params == cat.total_params


def test_tiny_model_recipes_match_the_catalog() -> None:
    """The catalog's tiny entries describe exactly what `dsserve tiny-model` builds."""
    from dsserve.tiny_models import TINY_MODELS

    types = {"DeepseekV2Config": "deepseek_v2", "LlamaConfig": "llama"}
    for name, recipe in TINY_MODELS.items():
        cfg = dict(recipe.config, vocab_size=recipe.model_vocab_size, model_type=types[recipe.config_class])
        arch = arch_from_hf_config(cfg, key=name)
        cat = MODEL_ARCHS[name]
        assert arch.total_params == cat.total_params, name
        assert kv_bytes_per_token(arch) == kv_bytes_per_token(cat), name
        assert (arch.attention, arch.is_moe, arch.max_context) == (cat.attention, cat.is_moe, cat.max_context)


def test_gptq_config_reads_int4_and_group() -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "num_hidden_layers": 95,
        "vocab_size": 102400,
        "max_position_embeddings": 4096,
        "intermediate_size": 22016,
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32},
    }
    arch = arch_from_hf_config(cfg, key="67b-gptq")
    assert (arch.weight_dtype, arch.quant_group_size, arch.attention) == ("int4", 32, "gqa")


def test_load_hf_config_from_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(V3_CONFIG))
    assert load_hf_config(tmp_path)["model_type"] == "deepseek_v3"


@pytest.mark.parametrize(
    "cfg,fragments",
    [
        ({"model_type": "gpt2"}, ["model_type 'gpt2' is not supported", "llama"]),
        ({"model_type": "llama", "hidden_size": 8}, ["'num_attention_heads' is missing", "must set it"]),
        (dict(V3_CONFIG, moe_layer_freq=2), ["moe_layer_freq", "not supported"]),
        (dict(V3_CONFIG, quantization_config={"quant_method": "gptq", "bits": 8}), ["bits", "4-bit"]),
    ],
)
def test_bad_hf_config_names_field_and_fix(cfg: dict, fragments: list[str]) -> None:
    with pytest.raises(ModelBuildError) as info:
        arch_from_hf_config(cfg, key="x", where="m/config.json")
    msg = str(info.value)
    assert msg.startswith("m/config.json: ")
    for f in fragments:
        assert f in msg, msg


def test_load_hf_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelBuildError, match="no such file"):
        load_hf_config(tmp_path / "missing")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ModelBuildError, match="not a readable JSON file"):
        load_hf_config(bad)
