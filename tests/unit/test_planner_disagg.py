"""The prefill/decode planner (dsserve/planner/disagg.py): the KV transfer against published KV sizes and
link bandwidths, the decode-only steady state, the TTFT decomposition and the xPyD balance."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dsserve.catalog import ACCELERATORS, MODEL_ARCHS, kv_bytes_per_token
from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment
from dsserve.planner.disagg import (
    PoolCapacity,
    Role,
    balance,
    decode_capacity_qps,
    decode_load,
    evaluate_disagg,
    kv_transfer,
    plan_disagg,
    prefill_mix,
)
from dsserve.planner.published import deployment, perf_of
from dsserve.planner.slo import RequestMix, TokenDist, capacity_qps, evaluate_load


def _v3_dp16() -> Deployment:
    """llm-d's wide-EP side: R1/V3 FP8, DP16 attention + EP16 over two 8-GPU H200 nodes."""
    dep = deployment(
        "deepseek-v3", "h200", tp=1, dp=16, ep=True, quantization="fp8", max_model_len=8192, batched_tokens=16384
    )
    return replace(dep, nodes=2, replicas=1)


def _v2_tp4() -> Deployment:
    return deployment("deepseek-v2", "h800", tp=4, ep=True, quantization="fp8", max_model_len=8192, replicas=1)


MIX_2K = RequestMix(4.0, TokenDist("const", 2048), TokenDist("const", 2048))
MIX_LONG = RequestMix(1.0, TokenDist("const", 6000), TokenDist("const", 300), metric="itl", threshold_s=0.025)


def test_mla_transfer_moves_the_whole_latent_per_gpu() -> None:
    """With MLA each GPU of a DP rank holds the full 70,272-byte latent per V3 token (ISCA'25 Table 1), so
    that is what one GPU moves; across nodes at one 400 Gb/s NIC per GPU (~40 GB/s achievable), a
    2,048-token prompt is 144 MB and about 3.6 ms plus the fixed cost."""
    x = kv_transfer(_v3_dp16(), _v3_dp16(), same_node=False)
    assert x.bytes_per_token == kv_bytes_per_token(MODEL_ARCHS["deepseek-v3"]) == 70272
    assert x.bandwidth == ACCELERATORS["h200"].scaleout_bandwidth
    assert x.bytes_per_request(2048) == 2048 * 70272
    assert x.seconds(2048) == pytest.approx(2048 * 70272 / 40e9 + A.KV_TRANSFER_LATENCY_S + A.SCALEOUT_LATENCY_S)
    assert x.seconds(0) == 0.0


def test_same_node_transfer_runs_at_nvlink_speed() -> None:
    inside = kv_transfer(_v2_tp4(), _v2_tp4(), same_node=True)
    across = kv_transfer(_v2_tp4(), _v2_tp4(), same_node=False)
    assert inside.bandwidth == ACCELERATORS["h800"].link_bandwidth == 4 * across.bandwidth
    fixed = A.KV_TRANSFER_LATENCY_S
    assert inside.seconds(4096) - fixed == pytest.approx((across.seconds(4096) - fixed - A.SCALEOUT_LATENCY_S) / 4)


def test_gqa_transfer_is_one_tp_share_per_gpu() -> None:
    """GQA splits KV heads over TP: each of 8 ranks moves an eighth of 67B's 389,120 bytes per token."""
    dep = deployment("deepseek-llm-67b", "h800", tp=8, replicas=1)
    x = kv_transfer(dep, dep, same_node=True)
    assert x.bytes_per_token == pytest.approx(389120 / 8)


def test_transfer_is_set_by_the_side_holding_more_per_gpu() -> None:
    """A TP2 prefill engine of 67B holds four times the per-GPU KV of a TP8 decode engine: its links set
    the pace."""
    p = deployment("deepseek-llm-67b", "h200", tp=2, replicas=1, quantization="fp8")
    d = deployment("deepseek-llm-67b", "h200", tp=8, replicas=1)
    assert kv_transfer(p, d, same_node=True).bytes_per_token == pytest.approx(389120 / 2)


def test_prefill_side_sees_one_output_token() -> None:
    m = prefill_mix(MIX_2K)
    assert m.output.mean == 1 and m.input == MIX_2K.input and m.qps == MIX_2K.qps


def test_decode_pool_has_no_prefill_in_its_steps() -> None:
    """The point of P/D: at the same rate, a decode-only engine's inter-token latency is below the
    aggregated engine's, whose steps carry prompt chunks (6,000-token prompts here)."""
    dep = _v2_tp4()
    perf = perf_of(dep)
    agg = evaluate_load(perf, MIX_LONG, 0.5)
    dec = decode_load(perf, MIX_LONG, 0.5)
    assert agg.stable and dec.stable
    assert dec.step_s < agg.itl_s
    assert dec.step_s == pytest.approx(perf.decode_step_time_s(dec.batch, 6000 + 150), rel=1e-6)
    assert dec.batch == pytest.approx(0.5 * 300 * dec.step_s, rel=1e-6)  # Little's law: B = λ·O·T


def test_decode_capacity_is_the_stability_edge() -> None:
    perf = perf_of(_v2_tp4())
    mix = replace(MIX_LONG, metric="ttft")
    cap = decode_capacity_qps(perf, mix)
    assert cap > 0
    assert decode_load(perf, mix, 0.98 * cap).stable
    assert not decode_load(perf, mix, 1.05 * cap).stable
    assert "decoding sequences per unit" in decode_load(perf, mix, 1.05 * cap).reason


def test_an_itl_slo_caps_the_decode_batch() -> None:
    perf = perf_of(_v2_tp4())
    free = decode_capacity_qps(perf, replace(MIX_LONG, metric="ttft"))
    bound = decode_capacity_qps(perf, MIX_LONG)  # ITL <= 25 ms (30 ms at the stability edge)
    assert 0 < bound < free
    assert decode_load(perf, MIX_LONG, bound).step_s <= MIX_LONG.threshold_s
    assert decode_load(perf, MIX_LONG, bound * 1.05).step_s > MIX_LONG.threshold_s


def test_ttft_is_prefill_plus_transfer_plus_decode_join() -> None:
    p, d = _v3_dp16(), _v3_dp16()
    x = kv_transfer(p, d, same_node=False)
    load = evaluate_disagg(p, d, x, MIX_2K)
    assert load.stable, load.reason
    pre = evaluate_load(perf_of(p), prefill_mix(MIX_2K))
    dec = decode_load(perf_of(d), MIX_2K)
    assert load.prefill_ttft_s == pre.ttft_s
    assert load.transfer_s == x.seconds(2048)
    assert load.decode_join_s == pytest.approx(dec.slot_wait_s + 1.5 * dec.step_s)
    assert load.ttft_s == pytest.approx(load.prefill_ttft_s + load.transfer_s + load.decode_join_s)
    assert load.e2e_s == pytest.approx(load.ttft_s + 2047 * dec.step_s)
    assert load.output_tok_s == MIX_2K.qps * 2048


def test_overload_names_the_pool_that_runs_out() -> None:
    p, d = _v3_dp16(), _v3_dp16()
    plan = plan_disagg(p, d, MIX_2K, same_node=False)
    assert plan.decode.qps < plan.prefill.qps
    between = (plan.decode.qps + plan.prefill.qps) / 2  # only the bottleneck runs out
    over = evaluate_disagg(p, d, plan.transfer, MIX_2K, between)
    assert not over.stable
    assert plan.bottleneck == "decode" and over.reason.startswith("decode pool: unsustainable")


def test_pool_capacities_and_balanced_ratio() -> None:
    p, d = _v3_dp16(), _v3_dp16()
    plan = plan_disagg(p, d, MIX_2K, same_node=False)
    assert plan.prefill.qps_per_instance == pytest.approx(capacity_qps(perf_of(p), prefill_mix(MIX_2K)))
    assert plan.decode.qps_per_instance == pytest.approx(decode_capacity_qps(perf_of(d), MIX_2K))
    assert plan.balanced_ratio == pytest.approx(plan.decode.qps_per_instance / plan.prefill.qps_per_instance)
    assert plan.capacity_qps == min(plan.prefill.qps, plan.decode.qps)


def test_a_pool_that_does_not_fit_serves_nothing() -> None:
    tiny = deployment("deepseek-v2", "h800", tp=2, quantization="fp8", replicas=1)  # 236B FP8 on 2 GPUs
    plan = plan_disagg(tiny, _v2_tp4(), MIX_LONG, same_node=True)
    assert not plan.prefill.fits and plan.prefill.qps == 0 and "weights need" in plan.prefill.reason
    assert plan.balanced_ratio == math.inf
    assert not plan.load.stable and plan.load.reason.startswith("prefill pool: does not fit")


def _cap(role: Role, gpus: int, qps: float) -> PoolCapacity:
    return PoolCapacity(role, _v2_tp4(), gpus, 1, qps, True)


@pytest.mark.parametrize(
    ("p_qps", "d_qps", "budget", "want"),
    [
        (1.0, 3.0, 8, (6, 2, 6.0)),  # 6P2D: both sides run out together
        (3.0, 1.0, 8, (2, 6, 6.0)),
        (1.0, 1.0, 8, (4, 4, 4.0)),
        (2.0, 10.0, 8, (6, 2, 12.0)),
        (2.0, 10.0, 7, (5, 1, 10.0)),  # 6P1D serves 10 too; 5P1D does it with fewer GPUs
        (1.0, 1.0, 1, (0, 0, 0.0)),  # no room for one of each
    ],
)
def test_balance_splits_a_gpu_budget(p_qps: float, d_qps: float, budget: int, want: tuple[int, int, float]) -> None:
    assert balance(_cap("prefill", 1, p_qps), _cap("decode", 1, d_qps), budget) == want


def test_balance_counts_gpus_per_instance() -> None:
    """Two-GPU prefill instances and four-GPU decode instances in 16 GPUs: 4P2D (8 + 8 GPUs)."""
    x, y, qps = balance(_cap("prefill", 2, 1.0), _cap("decode", 4, 2.0), 16)
    assert (x, y, qps) == (4, 2, 4.0)


def test_llm_d_wide_ep_figure_is_approached_from_below() -> None:
    """llm-d's R1 wide-EP run (32×H200, 2k/2k, 2,048 concurrent) published 25,176 output tok/s. The planner
    models vLLM's default EP exchange (all-gather + reduce-scatter of every token to every rank), which
    llm-d replaced with DeepEP's low-latency all-to-all; so the prediction must be below the figure, and not
    by more than that exchange explains (it is ~70 % of the modelled decode step)."""
    from dsserve.planner.published import llmd_wide_ep_output_tok_s

    predicted = llmd_wide_ep_output_tok_s()
    assert 0.5 * 25176 < predicted < 25176
    step = perf_of(_v3_dp16()).step_breakdown(128, 0.0, 3072)
    assert step.comm_s / step.total_s > 0.6


def test_the_pd_table_in_the_docs_is_what_its_snippet_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/parallelism.md's P/D table: its snippet runs, and every rate and transfer it prints stands in the
    doc, so a planner change that moves them fails here until the doc is updated."""
    import re

    from tests.conftest import REPO

    doc = (REPO / "docs/parallelism.md").read_text()
    section = doc[doc.index("## Prefill/decode disaggregation") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the P/D section lost its snippet"
    exec(compile(code.group(1), "docs/parallelism.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    table = section[: section.index("Reproduce the table")]
    for line in lines:
        agg, pd = re.findall(r"(\d+\.\d\d) req/s", line)
        (ms,) = re.findall(r"transfer (\d+\.\d) ms", line)
        for figure in (f"{agg} req/s", f"{pd} req/s", f"{ms} ms"):
            assert figure in table, f"{figure} (from: {line}) is not in the doc's table"
