"""Capacity and feasibility planner: does a deployment fit, how fast is it, does it meet its SLO.

Pure arithmetic over the catalog (no Ray, no vLLM, no GPU): :mod:`~dsserve.planner.memory` splits
weights and KV cache per GPU the way vLLM does, :mod:`~dsserve.planner.perf` turns a step into
rooflines, :mod:`~dsserve.planner.slo` solves the continuous-batching steady state and its queueing, and
:mod:`~dsserve.planner.plan` ties them together; :mod:`~dsserve.planner.disagg` models a prefill/decode
disaggregated deployment as two pools and the KV transfer between them. Every constant lives in
:mod:`~dsserve.planner.assumptions` with its source; ``docs/planner.md`` compares predictions with
published numbers.

Typical use::

    plan = plan_profile("deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml", mix_args={"qps": 20})
    plan.memory.fits, plan.meets_slo
    plan.decode_step_time_s(batch=64, context=2048), plan.prefill_time_s(4096)
"""

from dsserve.planner.deployment import Deployment, Layout, WeightFormat, deployment_from_spec
from dsserve.planner.memory import MemoryPlan, plan_memory
from dsserve.planner.perf import PerfModel, StepBreakdown
from dsserve.planner.plan import Alternative, Plan, build_plan, plan_profile, request_mix_from_spec
from dsserve.planner.report import plan_to_dict, render_text
from dsserve.planner.slo import LoadPoint, RequestMix, TokenDist, capacity_qps, evaluate_load, max_qps_for_slo

__all__ = [
    "Alternative",
    "Deployment",
    "Layout",
    "LoadPoint",
    "MemoryPlan",
    "PerfModel",
    "Plan",
    "RequestMix",
    "StepBreakdown",
    "TokenDist",
    "WeightFormat",
    "build_plan",
    "capacity_qps",
    "deployment_from_spec",
    "evaluate_load",
    "max_qps_for_slo",
    "plan_memory",
    "plan_profile",
    "plan_to_dict",
    "render_text",
    "request_mix_from_spec",
]
