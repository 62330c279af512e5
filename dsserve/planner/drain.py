"""How long a stopping replica waits for its requests: the longest generation the profile allows.

Ray Serve gives a stopping replica ``graceful_shutdown_timeout_s`` (20 s by default) to finish what it
holds, then kills it; a SIGTERM, a redeploy and a downscale all stop replicas that way. A generation of
``api.max_tokens`` tokens at this profile's modelled time per output token takes minutes on most
profiles, so the default here is that time with a margin, within :data:`DRAIN_FLOOR_S` and
:data:`DRAIN_CAP_S`. The pace is the planner's (a full decode batch at half the context, the slowest the
engine steps in normal service), so calibrating the planner moves it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = ["DRAIN_CAP_S", "DRAIN_FLOOR_S", "DRAIN_MARGIN", "Drain", "plan_drain", "graceful_shutdown_timeout_s"]

#: Ray Serve's own default: never drain for less.
DRAIN_FLOOR_S = 20.0
#: A stop that waits longer than this holds a rollout (and a node drain) for too long; generations still
#: running then are cut, and clients retry.
DRAIN_CAP_S = 900.0
#: Room over the modelled time: queueing behind other requests, a prompt's prefill.
DRAIN_MARGIN = 1.25


@dataclass(frozen=True)
class Drain:
    timeout_s: float  # what the deployments are given
    longest_generation_s: float  # the modelled time of the longest generation the profile allows
    tokens: int  # its output tokens
    tpot_ms: float  # the modelled time per output token it assumed
    source: str  # "spec" (serving.graceful_shutdown_timeout_s) or "modelled"

    def to_dict(self) -> dict[str, object]:
        return {
            "graceful_shutdown_timeout_s": self.timeout_s,
            "source": self.source,
            "longest_generation_s": round(self.longest_generation_s, 1),
            "tokens": self.tokens,
            "tpot_ms": round(self.tpot_ms, 2),
            "margin": DRAIN_MARGIN,
            "floor_s": DRAIN_FLOOR_S,
            "cap_s": DRAIN_CAP_S,
        }

    def line(self) -> str:
        """One line of `dsserve plan`."""
        why = (
            "serving.graceful_shutdown_timeout_s"
            if self.source == "spec"
            else f"{DRAIN_MARGIN:g} x the longest generation, within {DRAIN_FLOOR_S:g}-{DRAIN_CAP_S:g} s"
        )
        return (
            f"Drain: a stopping replica waits up to {self.timeout_s:g} s for its requests ({why}; the longest "
            f"generation, {self.tokens} tokens at {self.tpot_ms:.1f} ms/token in a full batch, takes "
            f"{self.longest_generation_s:.0f} s)"
        )


def plan_drain(spec: DeploymentSpec) -> Drain:
    from dsserve.planner.deployment import deployment_from_spec
    from dsserve.planner.memory import plan_memory
    from dsserve.planner.perf import PerfModel

    if spec.disaggregation is not None:
        # the decode pool generates; a prefill replica's requests are one token each, and shorter anyway
        return plan_drain(spec.pool("decode"))
    dep = deployment_from_spec(spec)
    tokens = min(spec.api.max_tokens or dep.max_model_len, dep.max_model_len)
    perf = PerfModel(dep, plan_memory(dep))
    context = dep.max_model_len / 2
    batch = max(1, perf.max_decode_batch(context))
    tpot = perf.step_time_s(float(batch), 0.0, context, 0.0) * spec.engine.sim_time_scale
    longest = tokens * tpot
    if spec.serving.graceful_shutdown_timeout_s is not None:
        return Drain(spec.serving.graceful_shutdown_timeout_s, longest, tokens, tpot * 1000, "spec")
    timeout = min(DRAIN_CAP_S, max(DRAIN_FLOOR_S, math.ceil(longest * DRAIN_MARGIN)))
    return Drain(float(timeout), longest, tokens, tpot * 1000, "modelled")


def graceful_shutdown_timeout_s(spec: DeploymentSpec) -> float:
    """``graceful_shutdown_timeout_s`` of every deployment of this spec."""
    return plan_drain(spec).timeout_s
