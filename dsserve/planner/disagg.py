"""Prefill/decode disaggregation: two pools of engines and the KV cache moved between them.

A disaggregated deployment sends each request first to a *prefill* engine, which runs the prompt with
``max_tokens=1`` (how Ray's ``build_pd_openai_app`` and vLLM's P/D proxies drive it), then to a *decode*
engine, which pulls the prompt's KV cache over a connector (NIXL: GPU-to-GPU RDMA) instead of computing
it and generates every output token. Each side is an ordinary :class:`Deployment` with its own layout and
replicas, so the single-engine models apply to each:

- the prefill pool is :func:`~dsserve.planner.slo.evaluate_load` on a mix whose outputs are one token:
  its queueing, chunked prefill and Serve overhead give the prefill part of TTFT;
- the decode pool never prefills, so its steady state is the decode-only fixed point of continuous
  batching, ``B = λ·E[O]·T`` with ``T = step(B, 0, context)``, and its inter-token latency is that
  ``T`` with no prefill chunk in it (the reason to disaggregate: long prompts stop stretching TPOT);
- the transfer moves the prompt's KV, per receiving GPU, over NVLink when both pools share a node and
  over the scale-out fabric (InfiniBand/RoCE) when they do not, at the accelerator's achievable
  per-GPU bandwidths from the catalog, plus a fixed per-request cost.

TTFT = prefill-side TTFT (queueing + prefill + proxy) + transfer + the decode side's wait for a sequence
slot, half a step to join and the step that samples the first token. At a percentile, the parts' own
percentiles are added: a conservative bound, since their tails are not simultaneous.

The balance between the pools (xPyD: x prefill instances per y decode instances) is the ratio of their
per-instance capacities for the mix; :func:`balance` picks the integer split of a GPU budget that
serves the most requests per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment, deployment_from_spec
from dsserve.planner.memory import plan_memory
from dsserve.planner.perf import PerfModel
from dsserve.planner.slo import RequestMix, TokenDist, capacity_qps, erlang_c, evaluate_load, largest_rate

if TYPE_CHECKING:
    from dsserve.catalog import ModelArch
    from dsserve.config import DeploymentSpec

__all__ = [
    "DecodeLoad",
    "DisaggLoad",
    "DisaggPlan",
    "KvTransfer",
    "PoolCapacity",
    "Role",
    "balance",
    "decode_capacity_qps",
    "decode_load",
    "evaluate_disagg",
    "kv_transfer",
    "max_qps_meeting",
    "plan_disagg",
    "plan_disagg_spec",
    "pools_share_a_node",
    "prefill_mix",
    "transfer_for_spec",
]

Role = Literal["prefill", "decode"]


@dataclass(frozen=True)
class KvTransfer:
    """How one request's KV cache travels from its prefill engine to its decode engine.

    Rank pairs move their shares in parallel, so the time is set by the GPU that moves the most: the
    larger of what one prefill GPU holds and what one decode GPU must receive per prompt token (with MLA
    every TP rank holds the whole latent, so that is the model's full per-token KV).
    """

    bytes_per_token: float  # per GPU on the busiest link
    bandwidth: float  # bytes/s one GPU moves over that link
    latency_s: float
    link: str

    def seconds(self, tokens: float) -> float:
        """Wall time to move the KV of a ``tokens``-token prompt."""
        if tokens <= 0:
            return 0.0
        return self.latency_s + tokens * self.bytes_per_token / self.bandwidth

    def bytes_per_request(self, tokens: float) -> float:
        return tokens * self.bytes_per_token


def kv_transfer(prefill: Deployment, decode: Deployment, *, same_node: bool) -> KvTransfer:
    """The transfer between two pools; ``same_node`` when a prefill and a decode engine share NVLink."""
    per_gpu = max(plan_memory(prefill).kv_bytes_per_token, plan_memory(decode).kv_bytes_per_token)
    acc = decode.accel
    if same_node or not acc.scaleout_bandwidth:
        bw, link, lat = acc.link_bandwidth, acc.link_name or "intra-node link", A.KV_TRANSFER_LATENCY_S
    else:
        bw, link = acc.scaleout_bandwidth, "scale-out fabric (InfiniBand/RoCE, one NIC per GPU)"
        lat = A.KV_TRANSFER_LATENCY_S + A.SCALEOUT_LATENCY_S
    return KvTransfer(per_gpu, bw, lat, link)


def pools_share_a_node(spec: DeploymentSpec) -> bool:
    """Whether one node holds every engine of both pools of ``spec`` (a disaggregated spec): only then is
    every transfer on NVLink, since a decode replica may be handed any prefill replica's KV. What
    ``transport: auto`` reads as NVLink, and what ``transport: nvlink`` needs."""
    gpus = sum(p.engine.devices_per_replica * p.serving.replicas for p in (spec.pool("prefill"), spec.pool("decode")))
    return spec.hardware.is_gpu and gpus <= spec.hardware.gpus_per_node


def transfer_for_spec(spec: DeploymentSpec, arch: ModelArch | None = None) -> KvTransfer:
    """The KV transfer of a disaggregated spec, over the link its ``disaggregation.transport`` names
    (``arch``: a catalog override, as :func:`deployment_from_spec` takes it)."""
    dis = spec.disaggregation
    if dis is None:
        raise ValueError(f"{spec.name} is not disaggregated")
    prefill = deployment_from_spec(spec.pool("prefill"), arch)
    decode = deployment_from_spec(spec.pool("decode"), arch)
    transport = dis.transport
    if transport == "auto":
        transport = "tcp" if not spec.hardware.is_gpu else ("nvlink" if pools_share_a_node(spec) else "rdma")
    if transport == "tcp":
        per_gpu = max(plan_memory(prefill).kv_bytes_per_token, plan_memory(decode).kv_bytes_per_token)
        # one port per engine: its ranks share it, so the busiest rank gets a share of it
        ranks = max(decode.layout.tp * decode.layout.pp, 1)
        return KvTransfer(
            per_gpu, A.TCP_TRANSFER_BANDWIDTH / ranks, A.KV_TRANSFER_LATENCY_S, "TCP on the pod network (assumed)"
        )
    return kv_transfer(prefill, decode, same_node=transport == "nvlink")


def plan_disagg_spec(spec: DeploymentSpec, mix: RequestMix, arch: ModelArch | None = None) -> DisaggPlan:
    """:func:`plan_disagg` for a disaggregated spec: its pools, replicas and transport."""
    prefill = deployment_from_spec(spec.pool("prefill"), arch)
    decode = deployment_from_spec(spec.pool("decode"), arch)
    return plan_disagg(prefill, decode, mix, transfer=transfer_for_spec(spec, arch))


def prefill_mix(mix: RequestMix) -> RequestMix:
    """The mix as the prefill pool sees it: the same prompts, one output token each."""
    return replace(mix, output=TokenDist("const", 1))


# -- the decode pool --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeLoad:
    """Steady state of a decode-only pool at one arrival rate."""

    qps: float
    stable: bool
    reason: str
    batch: float = 0.0  # decoding sequences per unit
    step_s: float = math.inf  # no prefill chunks on this side
    slot_wait_s: float = 0.0  # at the mix's percentile
    slot_wait_mean_s: float = 0.0
    tokens_per_step: float = 1.0  # above 1 with MTP speculative decoding

    @property
    def tpot_s(self) -> float:
        return self.step_s / self.tokens_per_step


def _decode_context(mix: RequestMix) -> float:
    o = mix.output
    return mix.input.mean + o.second_moment / (2 * o.mean)


def decode_load(perf: PerfModel, mix: RequestMix, qps: float | None = None) -> DecodeLoad:
    """Solve ``T = step(λ·E[O]·T, 0, context)`` per unit, and the wait for a free sequence slot."""
    dep, mem = perf.dep, perf.mem
    qps = mix.qps if qps is None else qps
    if not mem.fits:
        return DecodeLoad(qps, False, f"does not fit: {mem.reason}")
    # with MTP a sequence gains tokens_per_step tokens a step, so it holds its slot for fewer steps
    lam, o_mean, ctx = qps / dep.units, mix.output.mean / perf.tokens_per_step, _decode_context(mix)
    seq_cap = min(dep.max_num_seqs, mem.kv_tokens / max(ctx, 1.0))
    t = perf.step_time_s(0.0, 0.0, ctx)
    if lam > 0:
        # T grows slower than B (weights are read once per step), so the fixed point exists until the
        # batch hits a cap; bisect on step(λ·O·t) - t as slo.evaluate_load does.
        lo, hi = t, t
        while perf.step_time_s(lam * o_mean * hi, 0.0, ctx) > hi:
            if lam * o_mean * hi > seq_cap:
                break
            hi *= 2
            if hi > 3600:
                return DecodeLoad(qps, False, f"unsustainable at {qps:g} QPS: decode step time diverges")
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if perf.step_time_s(lam * o_mean * mid, 0.0, ctx) > mid:
                lo = mid
            else:
                hi = mid
        t = hi
    b = lam * o_mean * t
    slots = max(1, int(seq_cap))
    if b >= slots:
        why = (
            f"max_num_seqs {dep.max_num_seqs}"
            if dep.max_num_seqs <= seq_cap
            else (f"the KV cache (~{seq_cap:.0f} sequences at a mean context of {ctx:.0f} tokens)")
        )
        return DecodeLoad(qps, False, f"unsustainable at {qps:g} QPS: needs {b:.0f} decoding sequences per unit, {why}")
    hold = o_mean * t
    p_wait = erlang_c(slots, b) if b > 0 else 0.0
    rate = (slots - b) / hold
    q = 1 - mix.percentile / 100
    wait_p = math.log(p_wait / q) / rate if p_wait > q else 0.0
    return DecodeLoad(qps, True, "", b, t, wait_p, p_wait / rate, perf.tokens_per_step)


def decode_capacity_qps(perf: PerfModel, mix: RequestMix) -> float:
    """Largest arrival rate the decode pool sustains; with an inter-token-latency SLO in the mix, the
    largest whose step time also meets it (the batch a TPOT target allows)."""

    def ok(q: float) -> bool:
        d = decode_load(perf, mix, q)
        return d.stable and (mix.metric != "itl" or d.tpot_s <= mix.threshold_s)

    return largest_rate(ok, perf)


# -- both pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCapacity:
    """One side's engines and how many requests per second they serve for a mix."""

    role: Role
    deployment: Deployment
    gpus_per_instance: int
    instances: int
    qps_per_instance: float
    fits: bool
    reason: str = ""

    @property
    def gpus(self) -> int:
        return self.gpus_per_instance * self.instances

    @property
    def qps(self) -> float:
        return self.qps_per_instance * self.instances


def _one_instance(dep: Deployment) -> PerfModel:
    one = replace(dep, replicas=1)
    return PerfModel(one, plan_memory(one))


def _pool(role: Role, dep: Deployment, mix: RequestMix) -> PoolCapacity:
    perf = _one_instance(dep)
    mem = perf.mem
    if not mem.fits:
        return PoolCapacity(role, dep, dep.layout.gpus, dep.replicas, 0.0, False, mem.reason)
    cap = capacity_qps(perf, prefill_mix(mix)) if role == "prefill" else decode_capacity_qps(perf, mix)
    return PoolCapacity(role, dep, dep.layout.gpus, dep.replicas, cap, True)


@dataclass(frozen=True)
class DisaggLoad:
    """Latency of a P/D deployment at one arrival rate, part by part."""

    qps: float
    stable: bool
    reason: str
    prefill_ttft_s: float = math.inf  # percentile: queueing + prefill + Serve overhead
    transfer_s: float = math.inf  # for the percentile prompt
    decode_join_s: float = math.inf  # percentile slot wait + half a step + the first step
    ttft_s: float = math.inf
    itl_s: float = math.inf  # time per output token on the decode side
    e2e_s: float = math.inf
    decode_batch: float = 0.0
    output_tok_s: float = 0.0

    def value(self, metric: str) -> float:
        return {"ttft": self.ttft_s, "e2e": self.e2e_s, "itl": self.itl_s}[metric]


def _quantile(dist: TokenDist, percentile: float) -> float:
    """The token count at ``percentile`` of a discretised distribution."""
    acc, target = 0.0, percentile / 100
    for v, w in sorted(dist.points()):
        acc += w
        if acc >= target - 1e-12:
            return v
    return dist.max


def evaluate_disagg(
    prefill: Deployment, decode: Deployment, transfer: KvTransfer, mix: RequestMix, qps: float | None = None
) -> DisaggLoad:
    """TTFT, ITL and E2E at the mix's percentile, with every replica of both pools serving."""
    qps = mix.qps if qps is None else qps
    pre = evaluate_load(PerfModel(prefill, plan_memory(prefill)), prefill_mix(mix), qps)
    if not pre.stable:
        return DisaggLoad(qps, False, f"prefill pool: {pre.reason}")
    dec = decode_load(PerfModel(decode, plan_memory(decode)), mix, qps)
    if not dec.stable:
        return DisaggLoad(qps, False, f"decode pool: {dec.reason}")
    xfer = transfer.seconds(_quantile(mix.input, mix.percentile))
    join = dec.slot_wait_s + 1.5 * dec.step_s
    ttft = pre.ttft_s + xfer + join
    e2e = ttft + (_quantile(mix.output, mix.percentile) - 1) * dec.tpot_s
    return DisaggLoad(qps, True, "", pre.ttft_s, xfer, join, ttft, dec.tpot_s, e2e, dec.batch, qps * mix.output.mean)


@dataclass(frozen=True)
class DisaggPlan:
    """Both pools, the transfer, the balanced ratio and the latency at the mix's rate."""

    prefill: PoolCapacity
    decode: PoolCapacity
    transfer: KvTransfer
    mix: RequestMix
    load: DisaggLoad
    #: Prefill instances per decode instance at which both pools run out together, for this mix.
    balanced_ratio: float

    @property
    def capacity_qps(self) -> float:
        return min(self.prefill.qps, self.decode.qps)

    @property
    def bottleneck(self) -> Role:
        return "prefill" if self.prefill.qps < self.decode.qps else "decode"

    @property
    def transfer_mean_s(self) -> float:
        return self.transfer.seconds(self.mix.input.mean)


def plan_disagg(
    prefill: Deployment,
    decode: Deployment,
    mix: RequestMix,
    *,
    same_node: bool = False,
    transfer: KvTransfer | None = None,
) -> DisaggPlan:
    """Plan a P/D deployment for ``mix``; ``same_node`` when the pools' engines share NVLink (or the
    ``transfer`` itself)."""
    p, d = _pool("prefill", prefill, mix), _pool("decode", decode, mix)
    xfer = transfer or kv_transfer(prefill, decode, same_node=same_node)
    ratio = d.qps_per_instance / p.qps_per_instance if p.qps_per_instance > 0 else math.inf
    return DisaggPlan(p, d, xfer, mix, evaluate_disagg(prefill, decode, xfer, mix), ratio)


def max_qps_meeting(plan: DisaggPlan, metric: str) -> float:
    """Largest arrival rate at which the P/D deployment holds ``metric`` (ttft, e2e, itl) at the mix's
    percentile within its threshold (``slo.largest_rate``'s search, on :func:`evaluate_disagg`)."""
    pre, dec, mix = plan.prefill.deployment, plan.decode.deployment, plan.mix

    def ok(q: float) -> bool:
        load = evaluate_disagg(pre, dec, plan.transfer, mix, q)
        return load.stable and load.value(metric) <= mix.threshold_s

    return largest_rate(ok, PerfModel(dec, plan_memory(dec)))


def balance(prefill: PoolCapacity, decode: PoolCapacity, gpu_budget: int) -> tuple[int, int, float]:
    """(x prefill instances, y decode instances, requests/s) that serve the most within ``gpu_budget``
    GPUs, at least one of each; among equal rates, the fewest GPUs. (0, 0, 0.0) when none fits."""
    best = (0, 0, 0.0, 0)
    gp, gd = prefill.gpus_per_instance, decode.gpus_per_instance
    for x in range(1, gpu_budget // gp + 1):
        y = (gpu_budget - x * gp) // gd
        if y < 1:
            break
        qps = min(x * prefill.qps_per_instance, y * decode.qps_per_instance)
        # the fewest decode instances that still serve that rate
        while y > 1 and (y - 1) * decode.qps_per_instance >= qps:
            y -= 1
        gpus = x * gp + y * gd
        if qps > best[2] * (1 + 1e-9) or (math.isclose(qps, best[2]) and gpus < best[3]):
            best = (x, y, qps, gpus)
    return best[0], best[1], best[2]
