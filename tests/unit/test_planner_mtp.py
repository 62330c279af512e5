"""MTP speculative decoding in the planner: the module's size against DeepSeek's figure, its memory, the
tokens a step yields, the decode speed-up against the V3 report's 1.8×, and the load model's use of it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dsserve.catalog import MODEL_ARCHS
from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment
from dsserve.planner.disagg import decode_load
from dsserve.planner.published import deployment, perf_of, v3_mtp_speedup
from dsserve.planner.slo import RequestMix, TokenDist, evaluate_load


def _v3(k: int = 0, a: float = A.MTP_ACCEPTANCE) -> Deployment:
    dep = deployment("deepseek-v3", "h200", tp=8, ep=True, max_model_len=8192)
    return replace(dep, speculative_tokens=k, mtp_acceptance=a if k else 0.0)


def test_v3_and_r1_ship_one_mtp_module_of_11_5b() -> None:
    for key in ("deepseek-v3", "deepseek-r1"):
        assert MODEL_ARCHS[key].mtp_layers == 1
        assert MODEL_ARCHS[key].mtp_params == pytest.approx(11.5e9, rel=0.015)  # [V] 11.5B; config: 11.61B
    for key in ("deepseek-v2", "deepseek-v2-lite", "deepseek-llm-67b"):
        assert MODEL_ARCHS[key].mtp_layers == 0 and MODEL_ARCHS[key].mtp_params == 0


@pytest.mark.parametrize(("k", "a", "want"), [(0, 0.85, 1.0), (1, 0.85, 1.85), (2, 0.85, 1 + 0.85 + 0.85**2)])
def test_tokens_per_step(k: int, a: float, want: float) -> None:
    assert replace(_v3(), speculative_tokens=k, mtp_acceptance=a).tokens_per_step == pytest.approx(want)


def test_mtp_costs_its_module_and_one_layer_of_kv() -> None:
    """FP8 module split over 8 ranks (attention TP, experts EP) plus the replicated BF16 projection:
    ~1.55 GiB per GPU; and 62 instead of 61 layers of KV per token."""
    off, on = perf_of(_v3()).mem, perf_of(_v3(1)).mem
    arch = MODEL_ARCHS["deepseek-v3"]
    proj_bytes = 2 * arch.hidden_size**2 * 2
    extra = on.weight_bytes - off.weight_bytes
    assert extra == pytest.approx((arch.mtp_params - 2 * arch.hidden_size**2) / 8 + proj_bytes, rel=0.03)
    assert on.kv_bytes_per_token == pytest.approx(off.kv_bytes_per_token * 62 / 61)
    assert on.kv_tokens < off.kv_tokens


def test_a_model_without_mtp_cannot_speculate() -> None:
    dep = replace(deployment("deepseek-v2", "h800", tp=8, quantization="fp8"), speculative_tokens=1)
    mem = perf_of(dep).mem
    assert not mem.fits and "no multi-token-prediction module" in mem.reason


def test_decode_speedup_near_the_v3_report() -> None:
    """DeepSeek: 85-90 % acceptance gives 1.8x TPS. At 128 sequences (memory-bound experts) the model gives
    1.74x; it must stay below 1 + acceptance (verification is not free) and above 1.5x."""
    assert 1.6 < v3_mtp_speedup() < 1 + A.MTP_ACCEPTANCE
    for batch in (1, 8, 32, 256):
        assert 1.3 < v3_mtp_speedup(batch) < 1 + A.MTP_ACCEPTANCE


def test_verification_reads_kv_once_but_computes_every_query() -> None:
    on, off = perf_of(_v3(1)), perf_of(_v3())
    b_on, b_off = on.step_breakdown(64, 0.0, 4096), off.step_breakdown(64, 0.0, 4096)
    assert b_on.total_s > b_off.total_s  # a step does more work...
    assert on.tpot_s(64, 4096) < off.tpot_s(64, 4096)  # ...but yields 1.85 tokens
    assert on.tpot_s(64, 4096) == pytest.approx(on.decode_step_time_s(64, 4096) / 1.85)
    assert on.decode_throughput_tok_s(64, 4096) == pytest.approx(64 * 1.85 / on.decode_step_time_s(64, 4096))


MIX = RequestMix(2.0, TokenDist("const", 1024), TokenDist("const", 512))


def test_the_load_model_holds_a_sequence_for_fewer_steps() -> None:
    """Little's law per step: B = λ·(E[O] / tokens per step)·T; TPOT and E2E shrink with MTP."""
    perf = perf_of(_v3(1))
    load = evaluate_load(perf, MIX)
    base = evaluate_load(perf_of(_v3()), MIX)
    assert load.stable and base.stable
    lam = MIX.qps / perf.dep.units
    assert load.batch == pytest.approx(lam * 512 / 1.85 * load.step_s, rel=1e-6)
    assert load.tpot_s == pytest.approx(load.step_s / 1.85)
    assert load.tpot_s < base.tpot_s and load.e2e_s < base.e2e_s
    assert load.output_tok_s == base.output_tok_s == MIX.qps * 512


def test_the_decode_pool_uses_it_too() -> None:
    on, off = decode_load(perf_of(_v3(1)), MIX), decode_load(perf_of(_v3()), MIX)
    assert on.tokens_per_step == pytest.approx(1.85) and off.tokens_per_step == 1.0
    assert on.tpot_s < off.tpot_s


def test_the_spec_turns_it_on_for_v3_and_renders_vllms_speculative_config() -> None:
    """engine.speculative on a V3 profile: vLLM gets speculative_config {method, num_speculative_tokens}
    (not the acceptance, which is the planner's); the planner reads the same fields; `plan --json` says what
    acceptance it assumed."""
    import yaml

    from dsserve.app import llm_config
    from dsserve.config import parse_spec
    from dsserve.planner.deployment import deployment_from_spec
    from dsserve.planner.plan import build_plan, request_mix_from_spec
    from dsserve.planner.report import plan_to_dict
    from tests.conftest import REPO

    data = yaml.safe_load((REPO / "deploy/profiles/h800x16-deepseek-v3.yaml").read_text())
    data["engine"]["speculative"] = {"num_speculative_tokens": 1, "acceptance_rate": 0.8}
    spec = parse_spec(data)
    kwargs = llm_config(spec)["engine_kwargs"]
    assert kwargs["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 1}
    dep = deployment_from_spec(spec)
    assert (dep.speculative_tokens, dep.mtp_acceptance, dep.tokens_per_step) == (1, 0.8, pytest.approx(1.8))
    out = plan_to_dict(build_plan(dep, request_mix_from_spec(spec), alternatives=False))
    assert out["speculative"]["acceptance_rate_assumed"] == 0.8
    assert out["speculative"]["tokens_per_step"] == pytest.approx(1.8)
    off = plan_to_dict(
        build_plan(
            deployment_from_spec(
                parse_spec(yaml.safe_load((REPO / "deploy/profiles/h800x16-deepseek-v3.yaml").read_text()))
            ),
            request_mix_from_spec(spec),
            alternatives=False,
        )
    )
    assert off["speculative"] is None
