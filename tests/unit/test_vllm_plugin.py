"""The CPU expert-parallel fix, checked on vLLM's real CPU fused-MoE kernel.

Two EP ranks, each holding half the experts' weights and given ids translated by the fix, must add up to
what one rank holding every expert computes. The tiny model cannot show this end to end (its random
experts barely move the logits), so the kernel itself is the witness; the e2e test shows the patched path
runs in both ranks of a live TP2 + EP engine.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ops = pytest.importorskip("vllm._custom_ops")

from dsserve.vllm_plugin import register, translate_expert_ids  # noqa: E402  # after the importorskips

E, K, HIDDEN, INTER, TOKENS, RANKS = 8, 2, 256, 128, 16, 2
ISA = "vec"  # CPUUnquantizedExperts.isa, the portable kernel vLLM picks without AMX


def _moe(hidden, w13, w2, weights, ids) -> torch.Tensor:
    out = torch.empty_like(hidden)
    ops.cpu_fused_moe(
        out,
        hidden,
        ops.cpu_prepack_moe_weight(w13, ISA),
        ops.cpu_prepack_moe_weight(w2, ISA),
        None,
        None,
        weights,
        ids,
        "silu",
        ISA,
        False,
    )
    return out


@pytest.fixture(scope="module")
def problem() -> dict:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(TOKENS, HIDDEN, generator=g).to(torch.bfloat16)
    w13 = (torch.randn(E, 2 * INTER, HIDDEN, generator=g) * 0.1).to(torch.bfloat16)
    w2 = (torch.randn(E, HIDDEN, INTER, generator=g) * 0.1).to(torch.bfloat16)
    logits = torch.randn(TOKENS, E, generator=g)
    weights, ids = torch.topk(torch.softmax(logits, -1), K, dim=-1)
    return {"hidden": hidden, "w13": w13, "w2": w2, "weights": weights.float(), "ids": ids.to(torch.int32)}


def _expert_map(rank: int) -> torch.Tensor:
    """vLLM's linear placement: rank r holds experts [r*E/R, (r+1)*E/R), -1 elsewhere."""
    per = E // RANKS
    m = torch.full((E,), -1, dtype=torch.int32)
    m[rank * per : (rank + 1) * per] = torch.arange(per, dtype=torch.int32)
    return m


def _ep_sum(problem: dict, translate) -> torch.Tensor:
    per = E // RANKS
    total = torch.zeros(TOKENS, HIDDEN, dtype=torch.float32)
    for rank in range(RANKS):
        weights, ids = translate(problem["weights"], problem["ids"], _expert_map(rank))
        local = slice(rank * per, (rank + 1) * per)
        total += _moe(problem["hidden"], problem["w13"][local], problem["w2"][local], weights, ids).float()
    return total


def test_ep_ranks_sum_to_the_full_moe(problem: dict) -> None:
    full = _moe(problem["hidden"], problem["w13"], problem["w2"], problem["weights"], problem["ids"]).float()
    ep = _ep_sum(problem, translate_expert_ids)
    assert full.abs().mean() > 0.5  # a real signal, not zeros
    assert torch.allclose(ep, full, rtol=2e-2, atol=2e-2), (ep - full).abs().max()


def test_without_zeroing_remote_experts_the_sum_is_wrong(problem: dict) -> None:
    """The check above can fail: mapping remote experts to local id 0 without zeroing their weight is off."""

    def unzeroed(weights, ids, expert_map):
        local = expert_map[ids.long()]
        return weights, local.clamp_min(0).to(ids.dtype)

    full = _moe(problem["hidden"], problem["w13"], problem["w2"], problem["weights"], problem["ids"]).float()
    assert (_ep_sum(problem, unzeroed) - full).abs().max() > 0.1


def test_register_patches_once_and_keeps_non_ep_calls_unchanged() -> None:
    from vllm.model_executor.layers.fused_moe.experts import cpu_moe

    register()
    patched = cpu_moe.CPUUnquantizedExperts.apply
    register()
    assert cpu_moe.CPUUnquantizedExperts.apply is patched
    assert getattr(patched, "_dsserve_cpu_ep_fix", False)


def test_plugin_is_declared_for_vllm() -> None:
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "dsserve.vllm_plugin:register" in names
