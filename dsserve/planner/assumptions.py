"""Every number the planner assumes, in one place, each with where it comes from.

Tags as in ``shared/reference/deepseek-and-hardware.md``: [V] primary source, [S] secondary,
[C] computed from those, [U] unverified assumption. Nothing here was tuned to make a published
number come out right: the comparisons in ``docs/planner.md`` use these values as they stand, and the
ratios predicted/published there show how far off they are. A GPU calibration run (not done yet: no GPU
was available) should replace the [U] values first.
"""

from __future__ import annotations

# --- vLLM defaults (read from the vLLM 0.32.0 source dsserve pins) ---------------------------------

#: ``CacheConfig.gpu_memory_utilization`` default [V] (vllm/config/cache.py, 0.32.0).
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92

#: OpenAI-server ``max_num_batched_tokens`` default by device [V] (vllm/engine/arg_utils.py,
#: ``_get_default_max_num_seqs_and_batched_tokens``): >=160 GiB -> 16384; >=70 GiB and not A100 -> 8192;
#: otherwise 2048; CPU -> 2048 x world size.
VLLM_DEFAULT_BATCHED_TOKENS_LARGE = 16384
VLLM_DEFAULT_BATCHED_TOKENS_HOPPER = 8192
VLLM_DEFAULT_BATCHED_TOKENS_OTHER = 2048

#: KV block size: vLLM's CUDA default is 16 tokens [V]; FlashMLA's paged cache uses 64 [V] (FlashMLA README).
KV_BLOCK_TOKENS = 16
KV_BLOCK_TOKENS_MLA = 64

# --- memory reserves per GPU (what vLLM's profiling run subtracts before sizing the KV cache) -------

#: Peak activation memory of vLLM's profiling forward pass at its default batched-token budget, CUDA
#: graphs included. [S] llm-d-planner ``data/configuration/vllm_memory_constants.json`` (calibrated on
#: vLLM 0.19.0, H100-80GB, 49 runs / 28 models): dense 2.00 GiB, MoE 2.50 GiB; LlamaForCausalLM 1.89,
#: DeepseekV2ForCausalLM 1.93. They found it independent of max_model_len.
ACTIVATION_GIB_DENSE = 2.00
ACTIVATION_GIB_MOE = 2.50
#: The batched-token budget those activation figures were measured at (vLLM's Hopper default) [C].
ACTIVATION_REFERENCE_TOKENS = 8192
#: [U] Activations grow with the tokens in the profiling batch; above the reference budget we scale the
#: figure linearly, below it we keep it (CUDA graphs and the sampler do not shrink).

#: Memory outside PyTorch's allocator (CUDA context, NCCL/custom all-reduce buffers) per GPU.
#: [S] same llm-d-planner file: TP=1 0.27 GiB; TP>=2 2.10 GiB.
NON_TORCH_GIB_TP1 = 0.27
NON_TORCH_GIB_TPN = 2.10

# --- weight formats ---------------------------------------------------------------------------------

#: FP8 block quantization stores one float32 ``weight_scale_inv`` per 128x128 block [V] (README_WEIGHTS).
FP8_SCALE_BYTES = 4
#: GPTQ/AWQ store an fp16 scale and a packed 4-bit zero point per group and output column [S]
#: (AutoGPTQ/AutoAWQ layouts): 2 + 0.5 bytes per group. Default group 128 [S] (both tools' default).
INT4_GROUP_OVERHEAD_BYTES = 2.5
INT4_DEFAULT_GROUP = 128
#: bitsandbytes NF4: 4 bits + one fp32 absmax per 64 weights [S] (bitsandbytes docs; double-quant ignored).
NF4_BLOCK = 64
NF4_SCALE_BYTES = 4

# --- roofline efficiencies ---------------------------------------------------------------------------

#: Fraction of peak HBM bandwidth a decode step's weight and KV reads reach. DeepSeek's FlashMLA reaches
#: 3000 of 3350 GB/s (0.90) on H800 in its memory-bound configuration [V]; a whole step mixes GEMV-like
#: GEMMs, fused-MoE and attention kernels, so we assume a little less. [U]
HBM_EFFICIENCY = 0.80

#: Fraction of dense tensor peak a compute-bound GEMM reaches. DeepGEMM: "up to 1350+ FP8 TFLOPS" of
#: 1979 on H800 (0.68) [V]; FlashMLA: 660 of 989 BF16 TFLOPS (0.67) [V]. We take the measured kernel
#: efficiency and model the rest of a forward pass (communication, launches, scheduling) explicitly.
GEMM_EFFICIENCY = 0.68
ATTENTION_EFFICIENCY = 0.67

# --- per-step fixed costs ----------------------------------------------------------------------------

#: [U] Minimum time of one small GPU kernel inside a CUDA graph (launch, ramp-up, tail): 2-5 us is the
#: usual range on Hopper; we take 4 us. Multiplied by the kernels one layer launches below.
KERNEL_MIN_S = 4e-6
#: [U] Kernels per layer in vLLM's forward pass, counted from its model code (attention part + FFN
#: part). GQA attention: norm, QKV GEMM, rotary, attention, O GEMM, residual (~6). MLA attention adds
#: the latent projections and norms and the absorbed-MLA batched matmuls (~16). Dense FFN: norm, gate-up,
#: activation, down (~4). MoE FFN: norm, router, top-k, token sort, two grouped GEMMs, activation,
#: shared-expert GEMMs, reduce (~14).
KERNELS_ATTN_GQA = 6
KERNELS_ATTN_MLA = 16
KERNELS_FFN_DENSE = 4
KERNELS_FFN_MOE = 14

#: [U] Engine time per step outside the GPU forward pass that async scheduling does not hide
#: (scheduling, sampling, output processing): 1 ms.
STEP_OVERHEAD_S = 1e-3

#: [U] Latency of one small all-reduce inside a node (vLLM's custom one-shot all-reduce over NVLink);
#: 5-10 us is typical for messages of a few hundred KB; we take 8 us. Large messages add bytes/bandwidth.
ALLREDUCE_LATENCY_S = 8e-6
#: [C] Fixed cost of one expert-parallel dispatch or combine, from DeepEP's low-latency kernels on H800
#: (EP8, 128 tokens, hidden 7168, top-8) [V]: dispatch 77 us for 7.3 MB FP8, combine 114 us for 14.7 MB
#: BF16; at ~160 GB/s the bytes explain 46 and 92 us, leaving ~25 us of latency each.
ALL_TO_ALL_LATENCY_S = 25e-6
#: [U] Inter-node latency added per collective (IB round trip + proxy): 10 us.
SCALEOUT_LATENCY_S = 10e-6

#: [U] Fixed cost of moving one request's KV cache between a prefill and a decode engine (P/D), beyond
#: bytes / bandwidth: the prefill side's ``kv_transfer_params`` travel back through the P/D proxy to the
#: decode engine, which posts the RDMA reads (NIXL) and learns they finished at a step boundary. 1 ms; no
#: published per-request figure was found. The bandwidths are the catalog's achievable per-GPU link
#: (NVLink) and scale-out (one 400 Gb/s NIC per GPU) figures.
KV_TRANSFER_LATENCY_S = 1e-3
#: [U] Per-engine bandwidth of a P/D KV transfer over TCP on the pod network (``disaggregation.transport:
#: tcp``, and every cpu deployment): a 100 Gb/s Ethernet port at ~80 %, shared by the engine's ranks.
TCP_TRANSFER_BANDWIDTH = 10e9

#: Acceptance of DeepSeek-V3's MTP draft token when serving: "between 85% and 90% across various
#: generation topics", giving 1.8x tokens per second [V] (V3 technical report, arXiv:2412.19437 §5.4.3).
#: We take the low end. Further draft tokens (the one module applied again) are assumed accepted at the
#: same rate given their predecessors [U]; DeepSeek and vLLM's recipes use one.
MTP_ACCEPTANCE = 0.85

#: Activation element size in bytes: BF16 hidden states on the wire and in attention [V] (DeepSeek:
#: "combine transmissions use the BF16 format"; dispatch is FP8 when the weights are FP8).
ACT_BYTES = 2

# --- serving layer -------------------------------------------------------------------------------------

#: Time-to-first-token that Ray Serve's proxy and ingress add, by proxy kind. Python proxy: +48 ms p50
#: at concurrency 1 versus bare vLLM [S] (ray-project/ray#59681, small model). HAProxy fast path: [U]
#: assumed 5 ms (Anyscale claims up to 8x lower latency; no absolute number was found).
PROXY_TTFT_S = {"python": 0.048, "haproxy": 0.005}

#: [U] Routing imbalance across replicas under power-of-two-choices: none. Requests are split evenly.

# --- the gateway: CPU the serving path spends per request (bench/frontend_cpu.py) ---------------------

#: The processes a request passes through (hops), by name.
HOP_ENGINE_DIRECT = "engine replica (HTTP + pipeline + vLLM frontend)"
HOP_INGRESS = "ingress replica (HTTP + pipeline)"
HOP_ENGINE_BEHIND_INGRESS = "engine replica (vLLM frontend)"
HOP_HAPROXY = "HAProxy"
HOP_RAY_AGENTS = "Ray agents (metrics export)"
HOP_ROUTER = "Serve ingress request router (LLMRouter)"
HOP_PREFIX_TREE = "prefix tree actor"
#: The hops that are one Python process each (one event loop, one core at most), per gateway mode.
GATEWAY_PROCESSES = {"direct": (HOP_ENGINE_DIRECT,), "ingress": (HOP_INGRESS, HOP_ENGINE_BEHIND_INGRESS)}

#: Marginal CPU milliseconds per streamed chat request in each hop, for a request of
#: GATEWAY_REFERENCE_TOKENS output tokens. [V] measured by ``bench/frontend_cpu.py``
#: (bench/results/frontend-cpu.json: the slope between 10 and 30 req/s, 60 s each, idle cost excluded)
#: on the development VM (2-core Intel Xeon at 2.6 GHz, no GPU), real vLLM CPU engine, ``local-cpu``
#: in both gateway modes; except the ingress replica: 5.9 ms from the simulated-engine run of the same
#: script (every token its own chunk, as the GPU profiles ship, and prefix-affinity routing inside it),
#: the larger of its two figures (3.1 ms on ``local-cpu``, whose 50 ms batching sends fewer chunks).
#: The engine's own processes (EngineCore, workers) are not the gateway and are not counted. Per-core
#: speed of an H800 host's CPUs is assumed equal [U] (server cores are as fast or faster).
GATEWAY_REFERENCE_TOKENS = 16
GATEWAY_CPU_MS = {
    "direct": {HOP_ENGINE_DIRECT: 4.6, HOP_HAPROXY: 0.5, HOP_RAY_AGENTS: 0.4},
    "ingress": {HOP_INGRESS: 5.9, HOP_ENGINE_BEHIND_INGRESS: 4.3, HOP_HAPROXY: 0.3, HOP_RAY_AGENTS: 0.4},
}
#: Extra CPU milliseconds per further output token (one SSE event each), per hop. [V] the slope between
#: bench/results/frontend-cpu.json (16 tokens) and bench/results/frontend-cpu-64-tokens.json (64 tokens,
#: 5 and 15 req/s); bare vLLM's API server: 0.031.
GATEWAY_CPU_MS_PER_TOKEN = {
    "direct": {HOP_ENGINE_DIRECT: 0.067, HOP_HAPROXY: 0.016, HOP_RAY_AGENTS: 0.012},
    "ingress": {HOP_INGRESS: 0.025, HOP_ENGINE_BEHIND_INGRESS: 0.047, HOP_HAPROXY: 0.003, HOP_RAY_AGENTS: 0.008},
}
#: With ``serving.router: prefix_cache_affinity``: in direct mode HAProxy first asks Serve's ingress
#: request router (LLMRouter), which asks the prefix tree actor; in ingress mode the ingress asks the
#: tree actor. CPU ms per request, [V] bench/frontend_cpu.py's simulated-engine run (frontend-cpu.json).
GATEWAY_ROUTER_CPU_MS = 1.9
GATEWAY_PREFIX_TREE_CPU_MS = {"direct": 1.0, "ingress": 1.6}
#: Where those figures were measured, for `dsserve plan` to print beside them.
GATEWAY_CPU_SOURCE = (
    "bench/frontend_cpu.py on the 2-core Intel Xeon dev VM (bench/results/frontend-cpu*.json), "
    "streamed chat, real vLLM CPU engine; routing hops from its simulated-engine run"
)
#: [U] Busy share one gateway process (one Python event loop, one core at most) is planned to: above
#: ~60 % queueing in the event loop starts to add visibly to TTFT (M/D/1 waiting time rho/(2(1-rho)) of
#: the service time reaches 0.75 at 0.6).
GATEWAY_UTILIZATION = 0.6

# --- request-mix defaults --------------------------------------------------------------------------

#: Points used to discretise a token-count distribution (quantile midpoints); enough for p99 to be
#: resolved by the queueing formula, few enough that a plan takes milliseconds.
DIST_POINTS = 64

__all__ = [name for name in dir() if name.isupper()]
