"""Step times and KV capacity of the simulated engine, from the planner.

The simulator does not invent its own latency model: it asks :class:`dsserve.planner.perf.PerfModel`
for the time of each step it schedules (decodes, prefill tokens, their contexts) and takes the KV
cache size from :func:`dsserve.planner.memory.plan_memory`. So a ``sim-*`` profile and its GPU twin
share one set of assumptions, and calibrating the planner calibrates the simulator.

The inputs travel inside the rendered Ray Serve config (``experimental_configs.dsserve_simulator``)
as the spec's own sections, so the replica rebuilds exactly the plan `dsserve plan` prints, and the
same ``model.parsers`` the real engine would get (``spec.model.frontend_kwargs()``): the simulated engine
answers ``tool_choice`` as vLLM does with those flags (:mod:`dsserve.sim.answer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec
    from dsserve.planner.perf import PerfModel

__all__ = ["SimTiming", "sim_inputs", "spec_from_inputs", "timing_from_inputs", "timing_from_spec"]

_SECTIONS = {"name", "model", "engine", "hardware", "serving"}


def sim_inputs(spec: DeploymentSpec) -> dict[str, Any]:
    """The parts of a spec the simulator needs, as plain data (non-default fields only)."""
    return spec.model_dump(mode="json", include=_SECTIONS, exclude_defaults=True)


@dataclass(frozen=True)
class SimTiming:
    """What one simulated engine (a replica, or one DP rank) needs to pace itself."""

    perf: PerfModel
    kv_tokens: int  # KV cache capacity of this engine, in tokens
    block_tokens: int  # KV block size (tokens per block), as vLLM pages its cache
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    description: str  # e.g. "deepseek-v2-lite TP1 on h800"
    time_scale: float = 1.0  # engine.sim_time_scale: >1 slows every step (e.g. for open-stream tests)

    def step_time_s(self, decode: int, prefill: int, context: float, prompt_context: float) -> float:
        """Seconds one engine step takes with this many decodes and prompt tokens."""
        return self.time_scale * self.perf.step_time_s(float(decode), float(prefill), context, prompt_context)

    @property
    def speculative_tokens(self) -> int:
        """MTP draft tokens a step verifies (0: off, or an architecture without an MTP module)."""
        return self.perf.dep.speculative_tokens if self.perf.dep.arch.mtp_layers else 0

    @property
    def acceptance(self) -> float:
        return self.perf.dep.mtp_acceptance if self.speculative_tokens else 0.0

    @property
    def kv_blocks(self) -> int:
        return max(1, self.kv_tokens // self.block_tokens)


def timing_from_spec(spec: DeploymentSpec) -> SimTiming:
    """Plan the spec's layout and accelerator, and refuse (as vLLM would) a layout that does not fit."""
    from dsserve.errors import SpecError
    from dsserve.planner.deployment import deployment_from_spec
    from dsserve.planner.memory import plan_memory
    from dsserve.planner.perf import PerfModel

    dep = deployment_from_spec(spec)
    mem = plan_memory(dep)
    if not mem.fits:
        raise SpecError(f"simulated engine: {spec.name} would not start on {dep.accel.key}: {mem.reason}")
    return SimTiming(
        perf=PerfModel(dep, mem),
        kv_tokens=int(mem.kv_tokens),
        block_tokens=int(mem.kv_block_tokens),
        max_num_seqs=dep.max_num_seqs,
        max_num_batched_tokens=dep.max_num_batched_tokens,
        max_model_len=dep.max_model_len,
        description=f"{dep.arch.key} {dep.layout.label()} on {dep.accel.key}"
        + (
            f", MTP {dep.speculative_tokens} draft(s) at acceptance {dep.mtp_acceptance:g}"
            if dep.speculative_tokens
            else ""
        )
        + (f", steps x{spec.engine.sim_time_scale:g}" if spec.engine.sim_time_scale != 1.0 else ""),
        time_scale=spec.engine.sim_time_scale,
    )


def spec_from_inputs(inputs: dict[str, Any]) -> DeploymentSpec:
    """Rebuild the spec inside a replica from :func:`sim_inputs`' output (the engine also reads its parsers)."""
    from dsserve.config import parse_spec

    return parse_spec(inputs, where="experimental_configs.dsserve_simulator")


def timing_from_inputs(inputs: dict[str, Any]) -> SimTiming:
    """Rebuild the timing inside a replica from :func:`sim_inputs`' output."""
    return timing_from_spec(spec_from_inputs(inputs))
