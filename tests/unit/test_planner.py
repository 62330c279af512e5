"""The capacity planner, checked against published numbers, its own invariants, and the CLI contract.

"reference" = shared/reference/deepseek-and-hardware.md; its tags: [V] primary, [S] secondary,
[C] computed. Tolerances are stated per test with the reason. Predictions use the constants in
dsserve/planner/assumptions.py as they stand: nothing here was tuned to pass.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsserve.catalog import GIB, MODEL_ARCHS
from dsserve.cli import main
from dsserve.errors import SpecError
from dsserve.planner import (
    Layout,
    RequestMix,
    TokenDist,
    build_plan,
    evaluate_load,
    max_qps_for_slo,
    plan_memory,
    plan_profile,
)
from dsserve.planner import published as P
from dsserve.planner.memory import layout_problems, pp_partition
from dsserve.planner.perf import PerfModel
from dsserve.planner.slo import capacity_qps, erlang_c
from tests.conftest import REPO

PROFILES = REPO / "deploy" / "profiles"
H800_PROFILES = sorted(str(p.relative_to(REPO)) for p in PROFILES.glob("h800x*.yaml"))


def mem(*args, **kw):
    return plan_memory(P.deployment(*args, **kw))


# --- published facts: memory ---------------------------------------------------------------------


def test_v3_fp8_does_not_fit_8xh800_at_any_utilization() -> None:
    # Reference §3.2: ~627 GiB of FP8 weights on 8 x 79.1 GiB; vLLM recipe vram_minimum_gb 805 [V];
    # LMDeploy #2960 OOM on 8xH800 [S]. Exact claim: no fit, so no tolerance.
    for util in (0.9, 0.92, 0.95, 0.99):
        m = mem("deepseek-v3", "h800", tp=8, util=util)
        assert not m.fits and "weights need" in m.reason
    for arch in ("deepseek-v3", "deepseek-r1"):
        assert not mem(arch, "h800", tp=8, ep=True).fits


def test_v3_fp8_fits_8xh200() -> None:
    # vLLM recipe: FP8 target "8xH200 / 8xMI300X" [V]. Exact claim: it fits, with room for KV.
    m = mem("deepseek-v3", "h200", tp=8, ep=True)
    assert m.fits and m.max_seqs_at_max_len >= 100


def test_v3_weights_per_gpu_match_a_real_load() -> None:
    # HabanaAI vllm-fork #809: R1 weights took 79.41 GiB per device on 8 devices [S]. 1% covers the
    # replicated-norm and scale bookkeeping that differs between forks.
    assert mem("deepseek-r1", "h800", tp=8).weight_bytes / GIB == pytest.approx(79.41, rel=0.01)


def test_v3_checkpoint_size() -> None:
    # Reference §3.1: 673 GB with BF16 embed/head + FP32 block scales [C]; 0.5% for rounding.
    assert P.v3_fp8_weight_gb() == pytest.approx(673, rel=0.005)


def test_67b_bf16_fits_tp4() -> None:
    # DeepSeek LLM README: vLLM example with tp_size 4, gpu_memory_utilization 0.9 [V]. Reference §3.3:
    # 31.4 GiB of weights per GPU at TP4 [C]; 1% (we add norms).
    m = mem("deepseek-llm-67b", "h800", tp=4, util=0.9)
    assert m.fits
    assert m.weight_bytes / GIB == pytest.approx(31.4, rel=0.01)
    # Reference §3.3 upper bound ~440k tokens per replica with no reserves; ours subtracts ~4 GiB of
    # activation and NCCL memory, so it must land below it but within 15%.
    assert 0.85 * 440_000 < m.kv_tokens < 440_000


def test_v2_bf16_fits_tp8_with_about_20_gib_left() -> None:
    # V2 README: "80GB*8 GPUs are required" for BF16 [V]; reference §3.3: 54.9 GiB of weights per GPU
    # [C] (without MLA's replicated down-projections, which vLLM keeps on every rank: +1.1 GiB here).
    # The V2 README's vLLM example: TP8, max_model_len 8192 [V]; here at gpu_memory_utilization 0.95.
    m = mem("deepseek-v2", "h800", tp=8, util=0.95, max_model_len=8192)
    assert m.fits
    assert m.weight_bytes / GIB == pytest.approx(54.9, rel=0.03)
    # "roughly 20 GiB per GPU left" after the weights, at gpu_memory_utilization 0.95:
    # +-4 GiB (the reserves, and 0.92-0.95 utilization, move it by that much).
    assert m.headroom_after_weights_bytes / GIB == pytest.approx(20, abs=4)


def test_67b_gptq_group32_size() -> None:
    # TheBloke/deepseek-llm-67b-chat-GPTQ, branch gptq-4bit-32g-actorder_True: 41.4 GB [S]; 2%.
    assert P.gptq_67b_g32_gb() == pytest.approx(41.4, rel=0.02)


def test_int4_67b_profile_is_the_group32_checkpoint() -> None:
    # The catalog's deepseek-llm-67b-gptq is that branch (group 32): the profile's weights are its 41.4 GB
    # split over TP2 (embeddings and LM head vocab-parallel), and it keeps four replicas on one node.
    plan = plan_profile(PROFILES / "h800x8-deepseek-llm-67b-int4.yaml", alternatives=False)
    assert plan.deployment.weights.name == "int4 (group 32)"
    assert plan.memory.weight_bytes * 2 / 1e9 == pytest.approx(P.gptq_67b_g32_gb(), rel=0.01)
    assert plan.fits and plan.deployment.replicas * plan.deployment.layout.gpus == 8


def test_v3_fp8_two_node_profile_needs_both_nodes() -> None:
    # Reference §3.2: V3 FP8 does not fit one 8x80 GB node; TP8 x PP2 over 2 nodes halves the weights
    # per GPU (31 of 61 layers on the fuller stage) and fits with room for 128K sequences.
    plan = plan_profile(PROFILES / "h800x16-deepseek-v3.yaml", alternatives=False)
    assert plan.fits and plan.deployment.nodes == 2 and plan.deployment.layout.gpus == 16
    one_node = mem("deepseek-v3", "h800", tp=8, ep=True)
    assert not one_node.fits
    assert plan.memory.weight_bytes < 0.55 * one_node.weight_bytes
    assert plan.memory.kv_bytes_per_token == pytest.approx(70_272 * 31 / 61, rel=0.001)
    assert plan.memory.max_seqs_at_max_len >= 4


@pytest.mark.parametrize("profile", H800_PROFILES)
def test_every_gpu_profile_fits_and_meets_its_slo(profile: str) -> None:
    # What `dsserve plan` must say of every shipped production profile (exit 0); the headers quote these.
    plan = plan_profile(REPO / profile, alternatives=False)
    assert plan.fits and plan.meets_slo, plan.memory.reason


# --- published facts: throughput -------------------------------------------------------------------
# Tolerance for end-to-end throughput: a factor 1.5 either way. The published figures come from
# DeepSeek's own engine with an unpublished workload (we assume a 2048-token mean context), "exceeding"
# makes them lower bounds, and our efficiencies are unverified [U] constants; a factor 1.5 still
# separates "the model explains the number" from "it is off by the architecture" (the TP8 row below is
# off by 3x, and that is the point of it).


def test_67b_max_generation_throughput_near_v2_paper() -> None:
    # V2 paper §3.2.3: V2's >50K tok/s is 5.76x the 67B's maximum -> ~8.7k tok/s on 8xH800 [C from V].
    ratio = P.max_gen_67b_h800() / 8700
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_v2_max_generation_throughput_near_50k_with_dp_attention() -> None:
    # V2 paper §3.2.3: "exceeding 50K tokens per second" with FP8 weights and ~6-bit KV [V].
    ratio = P.max_gen_v2_h800("dp8") / 50_000
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_v2_tp8_mla_replication_costs_most_of_the_throughput() -> None:
    # vLLM keeps the whole MLA latent cache on every TP rank (reference §2 [V]); DP attention does not.
    # The planner must show that gap: TP8 well below the DP8 figure.
    assert P.max_gen_v2_h800("tp8") < 0.5 * P.max_gen_v2_h800("dp8")


def test_v2_over_67b_speedup_near_5_76() -> None:
    # V2 paper §3.2.3: 5.76x [V]. Same factor-1.5 tolerance as the two throughputs it divides.
    ratio = (P.max_gen_v2_h800("dp8") / P.max_gen_67b_h800()) / 5.76
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_v2_prompt_throughput_near_100k() -> None:
    # V2 paper §3.2.3: prompt throughput "exceeds 100K tokens per second" [V]; factor 1.5.
    ratio = P.prefill_v2_h800("dp8") / 100_000
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_dense_llama_checkpoint_via_config_json_near_trtllm() -> None:
    # TensorRT-LLM perf-overview, Llama-3.3-70B FP8 on H100 TP2 [V]: 4,205 output tok/s at 1000/1000,
    # 898 at 5000/500. TRT-LLM is not vLLM and its max-throughput runs are offline; factor 1.5.
    for (inp, out), published in (((1000, 1000), 4205), ((5000, 500), 898)):
        ratio = P.llama70b_trtllm_tok_s(inp, out) / published
        assert 1 / 1.5 < ratio < 1.5, (inp, out, ratio)


def test_v3_small_batch_latency_within_a_factor_two() -> None:
    # vLLM recipe, V3 on (presumably) 8xH200, one request 8000/1000: TPOT 15.85 ms [V]; V3-AWQ card on
    # 8xH100: 61.5 tok/s at batch 1 [S]. Small-batch latency is set by our [U] per-kernel and per-step
    # costs, so we only claim a factor 2 (the model is optimistic here; docs/planner.md says so).
    assert 0.5 < P.v3_h200_tpot_b1_ms() / 15.85 < 2
    assert 0.5 < P.v3_awq_h100_tpot_ms(1, 1024) / (1000 / 61.5) < 2


def test_published_table_lists_every_comparison_with_its_ratio() -> None:
    table = P.published_table()
    assert table.count("\n") == len(P.COMPARISONS) + 2
    for c in P.COMPARISONS:
        assert c.quantity in table and c.source


# --- memory mechanics (vLLM behaviour, reference §2) -----------------------------------------------


def test_mla_kv_is_replicated_across_tp_but_gqa_is_split() -> None:
    v2_tp1, v2_tp8 = mem("deepseek-v2", "h200", tp=1), mem("deepseek-v2", "h800", tp=8)
    assert v2_tp1.kv_bytes_per_token == v2_tp8.kv_bytes_per_token == 69_120
    # 67B: 8 KV heads / 8 GPUs = 1 head per GPU -> 48,640 B/token per GPU (reference §2 [C]).
    assert mem("deepseek-llm-67b", "h800", tp=8).kv_bytes_per_token == 48_640
    # TP16 over 2 nodes: fewer KV heads than ranks, so vLLM replicates: still one head per GPU.
    dep = P.deployment("deepseek-llm-67b", "h800", tp=16, replicas=1)
    from dataclasses import replace

    assert plan_memory(replace(dep, nodes=2)).kv_bytes_per_token == 48_640


def test_dp_attention_gives_each_rank_its_own_kv() -> None:
    tp8 = mem("deepseek-v3", "h200", tp=8, ep=True)
    dp8 = mem("deepseek-v3", "h200", tp=1, dp=8, ep=True)
    assert tp8.fits and dp8.fits
    # Per scheduler unit DP8 holds fewer tokens (attention weights replicated), but 8 units.
    assert dp8.kv_tokens * 8 > 3 * tp8.kv_tokens


def test_pp_partition_follows_vllm() -> None:
    # vllm/distributed/utils.py get_pp_indices: the remainder goes to the stages before the last [V].
    assert pp_partition(95, 4) == [24, 24, 24, 23]
    assert pp_partition(61, 2) == [31, 30]
    assert pp_partition(60, 8) == [7, 7, 7, 8, 8, 8, 8, 7]
    assert sum(pp_partition(61, 16)) == 61


def test_weights_split_with_tp_and_ep_is_memory_neutral() -> None:
    tp4, tp8 = mem("deepseek-llm-67b", "h800", tp=4), mem("deepseek-llm-67b", "h800", tp=8)
    assert tp4.weight_bytes == pytest.approx(2 * tp8.weight_bytes, rel=0.01)
    ep, no_ep = mem("deepseek-v2", "h800", tp=8, ep=True), mem("deepseek-v2", "h800", tp=8)
    assert ep.weight_bytes == pytest.approx(no_ep.weight_bytes)


def test_layouts_vllm_rejects() -> None:
    assert layout_problems(MODEL_ARCHS["deepseek-llm-67b"], Layout(tp=3))
    assert layout_problems(MODEL_ARCHS["deepseek-v3"], Layout(tp=32), fp8_block=True)
    assert not layout_problems(MODEL_ARCHS["deepseek-v3"], Layout(tp=8, ep=True), fp8_block=True)
    m = mem("deepseek-llm-67b", "h800", tp=3, replicas=1)
    assert not m.fits and "rejects the layout" in m.reason


def test_kv_must_hold_one_max_len_sequence() -> None:
    # vLLM refuses to start when the KV cache cannot hold max_model_len tokens.
    m = mem("deepseek-v2", "h800", tp=8, util=0.80, max_model_len=163840)
    assert not m.fits and "less than one max_model_len sequence" in m.reason


def test_nearest_layouts_for_v3_on_h800_all_fit() -> None:
    plan = build_plan(
        P.deployment("deepseek-v3", "h800", tp=8), RequestMix(1, TokenDist("const", 512), TokenDist("const", 256))
    )
    assert not plan.fits and plan.alternatives
    assert all(a.memory.fits for a in plan.alternatives)
    changes = " | ".join(a.change for a in plan.alternatives)
    assert "awq" in changes and ("2 nodes" in changes or "h200" in changes)
    assert [a.distance for a in plan.alternatives] == sorted(a.distance for a in plan.alternatives)


# --- performance model invariants -----------------------------------------------------------------


@pytest.fixture(scope="module")
def perf67() -> PerfModel:
    return P.perf_of(P.deployment("deepseek-llm-67b", "h800", tp=8))


def test_decode_step_grows_with_batch_and_context_and_throughput_with_batch(perf67: PerfModel) -> None:
    t = [perf67.decode_step_time_s(b, 2048) for b in (1, 16, 64, 256)]
    assert t == sorted(t) and t[0] > 0
    assert perf67.decode_step_time_s(64, 4000) > perf67.decode_step_time_s(64, 500)
    tput = [perf67.decode_throughput_tok_s(b, 2048) for b in (1, 16, 64, 256)]
    assert tput == sorted(tput)


def test_small_batch_decode_is_bounded_by_reading_the_weights(perf67: PerfModel) -> None:
    # Reference §7: 67B BF16 TP8 reads 134.8 GB / (8 x 3.35 TB/s) >= 5.03 ms per step at 100% bandwidth.
    assert perf67.decode_step_time_s(1, 128) > 5.03e-3
    b = perf67.step_breakdown(1, 0, 128)
    assert b.total_s == pytest.approx(b.weights_s + b.experts_s + b.attention_s + b.comm_s + b.kernels_s + b.overhead_s)


def test_moe_decode_reads_only_the_experts_it_touches() -> None:
    perf = P.perf_of(P.deployment("deepseek-v3", "h200", tp=8, ep=True))
    one, many = perf.step_breakdown(1, 0, 1024), perf.step_breakdown(512, 0, 1024)
    # batch 1 touches 8 of 256 experts per layer; batch 512 touches nearly all of them
    assert many.experts_s > 10 * one.experts_s


def test_prefill_scales_with_tokens_and_is_compute_bound(perf67: PerfModel) -> None:
    # Reference §7: 67B prefill ceiling ~58.7k tok/s on 8xH800 at 100% MFU (2N FLOPs/token).
    t1, t2 = perf67.prefill_time_s(2048), perf67.prefill_time_s(8192)
    assert 3.5 < t2 / t1 < 5
    assert 8192 / t2 < 58_700


def test_plan_exposes_the_simulated_engine_interface() -> None:
    plan = plan_profile(PROFILES / "h800x8-deepseek-llm-67b-tp8.yaml", alternatives=False)
    assert plan.decode_step_time_s(32, 1024) == plan.perf.decode_step_time_s(32, 1024)
    assert plan.prefill_time_s(1000) > plan.prefill_time_s(100) > 0
    assert plan.step_time_s(32, 512, 1024) > plan.step_time_s(32, 0, 1024)


# --- queueing and the SLO ---------------------------------------------------------------------------


def _mix(qps: float = 1.0, inp: str = "512", out: str = "256", metric: str = "ttft") -> RequestMix:
    return RequestMix(
        qps, TokenDist.parse(inp, flag="--input-tokens"), TokenDist.parse(out, flag="--output-tokens"), metric=metric
    )


def test_latency_grows_with_load_and_diverges_past_capacity(perf67: PerfModel) -> None:
    mix = _mix()
    cap = capacity_qps(perf67, mix)
    low, mid = evaluate_load(perf67, mix, 0.1 * cap), evaluate_load(perf67, mix, 0.9 * cap)
    assert low.stable and mid.stable
    assert mid.ttft_s > low.ttft_s and mid.step_s > low.step_s and mid.e2e_s > mid.ttft_s
    over = evaluate_load(perf67, mix, 1.2 * cap)
    assert not over.stable and "unsustainable" in over.reason


def test_max_qps_is_the_boundary(perf67: PerfModel) -> None:
    mix = _mix(metric="ttft")
    q = max_qps_for_slo(perf67, mix)
    assert q > 0
    assert evaluate_load(perf67, mix, q).ttft_s <= 0.5
    over = evaluate_load(perf67, mix, q * 1.05)
    assert not over.stable or over.ttft_s > 0.5


def test_e2e_of_256_tokens_cannot_meet_500_ms_on_h800(perf67: PerfModel) -> None:
    # 255 decode steps of >= 5 ms each (the weight read, reference §7) already exceed 500 ms.
    assert max_qps_for_slo(perf67, _mix(metric="e2e")) == 0


def test_heavier_tails_raise_p99(perf67: PerfModel) -> None:
    const = evaluate_load(perf67, _mix(5, "512"))
    expo = evaluate_load(perf67, _mix(5, "exp:512"))
    assert expo.ttft_s > const.ttft_s


def test_erlang_c_known_values() -> None:
    # M/M/1: P(wait) = rho; M/M/2 with a = 1: C = 1/3 (textbook values).
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert 0 < erlang_c(5000, 4900) < 1  # large-c approximation stays a probability


@pytest.mark.parametrize(
    "text,ok",
    [
        ("512", True),
        ("128:1024", True),
        ("exp:300", True),
        ("0", False),
        ("10:5", False),
        ("lots", False),
        ("exp:0", False),
    ],
)
def test_token_distribution_syntax(text: str, ok: bool) -> None:
    if ok:
        d = TokenDist.parse(text, flag="--input-tokens")
        assert d.mean > 0 and abs(sum(w for _, w in d.points()) - 1) < 1e-9
    else:
        with pytest.raises(SpecError, match=r"--input-tokens: got .*; write N"):
            TokenDist.parse(text, flag="--input-tokens")


# --- the CLI contract: 0 fits and meets, 1 does not, 2 bad input -------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["plan", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_fits_and_meets(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run([str(PROFILES / "h800x8-deepseek-v2.yaml")], capsys)
    assert rc == 0
    for fragment in ("Memory per GPU", "FITS", "Decode", "Prefill", "MEETS", "Assumptions", "TPOT ms"):
        assert fragment in out


def test_cli_does_not_fit_exits_1_with_reason_and_alternatives(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(
        [str(PROFILES / "h800x8-deepseek-v2.yaml"), "--architecture", "deepseek-v3", "--quantization", "none"], capsys
    )
    assert rc == 1
    assert "DOES NOT FIT: weights need 79.3 GiB per GPU" in out and "Nearest layouts that fit" in out


def test_cli_slo_miss_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run([str(PROFILES / "h800x8-deepseek-llm-67b-tp8.yaml"), "--qps", "1200"], capsys)
    assert rc == 1 and "FAILS" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run([str(PROFILES / "h800x8-deepseek-llm-67b.yaml"), "--json", "--qps", "5"], capsys)
    data = json.loads(out)
    assert rc == (0 if data["ok"] else 1)
    assert data["memory"]["fits"] and data["memory"]["kv_tokens_per_replica"] > 0
    assert data["slo"]["qps"] == 5 and data["performance"]["decode"] and data["assumptions"]


@pytest.mark.parametrize(
    "argv,fragments",
    [
        (["--qps", "-3"], ["SpecError", "--qps", "positive"]),
        (["--input-tokens", "many"], ["SpecError", "--input-tokens: got 'many'"]),
        (["--input-tokens", "4000", "--output-tokens", "200"], ["exceed engine.max_model_len 4096"]),
        (["--architecture", "deepseek-v9"], ["SpecError", "model.architecture", "deepseek-v9", "choose one of"]),
        (["--tp", "16"], ["engine.tensor_parallel_size", "cluster has 8"]),
        (["--hf-config", "/nonexistent/config.json"], ["ModelBuildError", "no such file"]),
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run([str(PROFILES / "h800x8-deepseek-llm-67b-tp8.yaml"), *argv], capsys)
    assert rc == 2
    for f in fragments:
        assert f in err, err
    assert "Traceback" not in err


def test_cli_missing_profile_and_no_profile_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["nope.yaml"], capsys)[0] == 2
    rc, _, err = _run([], capsys)
    assert rc == 2 and "no PROFILE given" in err
    with pytest.raises(SystemExit) as info:
        main(["plan", "x.yaml", "--metric", "p99"])
    assert info.value.code == 2


def test_cli_plans_a_local_llama_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(P.LLAMA_33_70B_CONFIG))
    rc, out, _ = _run(
        [str(PROFILES / "h800x8-deepseek-llm-67b.yaml"), "--hf-config", str(tmp_path), "--qps", "2"], capsys
    )
    assert rc == 0 and "70.6B params" in out


def test_cli_help_mentions_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert "Exit status: 0 fits" in " ".join(capsys.readouterr().out.split())


def test_plan_is_fast_and_imports_no_engine() -> None:
    """`dsserve plan` must answer in well under a second and never import Ray, vLLM or torch."""
    t0 = time.monotonic()
    plan_profile(PROFILES / "h800x8-deepseek-llm-67b-tp8.yaml", mix_args={"qps": 10})
    assert time.monotonic() - t0 < 1.0
    code = (
        "import sys; from dsserve.cli import main; "
        "rc = main(['plan', 'deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml', '--qps', '5']); "
        "bad = [m for m in ('ray', 'vllm', 'torch') if m in sys.modules]; print(bad); sys.exit(3 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-500:] + r.stderr[-2000:]


# --- docs/planner.md stays reproducible ---------------------------------------------------------------

_BLOCK = re.compile(r"<!-- BEGIN generated: (?P<cmd>[^\n]+?) -->\n(?P<body>.*?)<!-- END generated -->", re.S)


def test_every_generated_table_in_the_doc_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    """Each table in docs/planner.md is the output of the command written above it; rerun and compare."""
    doc = (REPO / "docs" / "planner.md").read_text()
    blocks = list(_BLOCK.finditer(doc))
    assert len(blocks) >= 3
    for m in blocks:
        words = shlex.split(m.group("cmd"))
        assert words[:2] == [".venv/bin/dsserve", "plan"], m.group("cmd")
        argv: list[str] = []
        for w in words[1:]:
            argv.extend(
                sorted(glob.glob(str(REPO / w))) if "*" in w else [str(REPO / w)] if w.startswith("deploy/") else [w]
            )
        assert main(argv) in (0, 1)  # 1 = a plan that does not fit or misses its SLO: still output
        out = capsys.readouterr().out
        lines = m.group("body").splitlines(keepends=True)
        if lines and lines[0].startswith("```"):  # a text report is fenced; tables are not
            assert lines[-1].startswith("```")
            lines = lines[1:-1]
        assert out == "".join(lines), f"docs/planner.md is stale for `{m.group('cmd')}`: rerun it and paste"


def test_doc_has_the_1200_qps_answer_and_no_gpu_note() -> None:
    doc = (REPO / "docs" / "planner.md").read_text()
    assert "1200 QPS" in doc and "No GPU" in doc


def test_an_unset_token_budget_is_vllms_default_for_the_accelerator(tmp_path: Path) -> None:
    """engine.max_num_batched_tokens left out: the planner uses vLLM 0.32's OpenAI-server default for the
    device (8,192 on an 80-141 GB Hopper, 2,048 per rank on CPU)."""
    from dsserve.catalog import ACCELERATORS
    from dsserve.planner import assumptions as A
    from dsserve.planner.deployment import default_batched_tokens

    assert default_batched_tokens(ACCELERATORS["h800"], 8) == A.VLLM_DEFAULT_BATCHED_TOKENS_HOPPER == 8192
    assert default_batched_tokens(ACCELERATORS["h200"], 8) == 8192  # 141 GB: under the 160 GiB step
    assert default_batched_tokens(ACCELERATORS["cpu"], 2) == 2 * A.VLLM_DEFAULT_BATCHED_TOKENS_OTHER
    import yaml

    spec = yaml.safe_load((PROFILES / "h800x8-deepseek-v2.yaml").read_text())
    del spec["engine"]["max_num_batched_tokens"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tmp_path / "p.yaml")]) in (0, 1)  # planned (fits or not), not a crash
