"""Request mixes, steady-state load and the SLO check.

At an arrival rate λ per scheduler unit (Poisson arrivals), with prompts of I tokens and outputs of O
tokens, vLLM's continuous batching settles where every step of length T decodes B = λ·E[O]·T sequences
and prefills P = λ·E[I]·T prompt tokens (Little's law per step), and T is the step time of that mix:
``T = step(B, P)``. We solve that fixed point; it has no solution (the load is unsustainable) when B
exceeds ``max_num_seqs`` or the KV cache, or B + P exceeds ``max_num_batched_tokens``.

Time to first token is queueing for the prefill budget plus the prefill itself. The prefill budget is a
server of ``C = max_num_batched_tokens - B`` tokens per full step, so a prompt of I tokens is I/μ
seconds of work at μ = C / step(B, C). Waiting follows M/G/1 (Pollaczek-Khinchine mean, with the
usual exponential tail ``P(W > w) = ρ·exp(-wρ/E[W])``). A request also waits for a running-sequence
slot: the engine holds at most ``c = min(max_num_seqs, KV tokens / context)`` sequences, each for about
E[O]·T seconds, which we treat as M/M/c (Erlang C: wait probability, then an exponential tail at rate
(c - λ·E[O]·T) / (E[O]·T)). TTFT adds to both waits half a step (a request joins at the next step
boundary), the prompt's own chunks, the Serve proxy and the stream batching interval.
E2E adds (O - 1) decode steps; inter-token latency is the step time, with the longer steps that carry a
prefill chunk counted when they are more frequent than 1 - percentile.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from dsserve.errors import SpecError
from dsserve.planner import assumptions as A
from dsserve.planner.perf import PerfModel

__all__ = [
    "LoadPoint",
    "RequestMix",
    "TokenDist",
    "capacity_qps",
    "erlang_c",
    "evaluate_load",
    "largest_rate",
    "max_qps_for_slo",
    "meets",
]

Metric = Literal["ttft", "e2e", "itl"]


@dataclass(frozen=True)
class TokenDist:
    """A token-count distribution: ``N`` (constant), ``LO:HI`` (uniform) or ``exp:MEAN`` (exponential,
    capped at ``cap``)."""

    kind: Literal["const", "uniform", "exp"]
    a: float
    b: float = 0.0
    cap: int = 1 << 20

    @classmethod
    def parse(cls, text: str | int, *, flag: str) -> TokenDist:
        """Parse the command-line form; a bad value raises :class:`SpecError` naming the flag."""
        s = str(text).strip()
        fix = f"{flag}: got {s!r}; write N (e.g. 512), LO:HI (uniform, e.g. 128:1024) or exp:MEAN"
        if re.fullmatch(r"\d+", s):
            n = int(s)
            if n < 1:
                raise SpecError(f"{fix}, with N >= 1")
            return cls("const", n)
        m = re.fullmatch(r"(\d+):(\d+)", s)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if not 1 <= lo <= hi:
                raise SpecError(f"{fix}, with 1 <= LO <= HI")
            return cls("const", lo) if lo == hi else cls("uniform", lo, hi)
        m = re.fullmatch(r"exp:(\d+(?:\.\d+)?)", s)
        if m and float(m.group(1)) >= 1:
            return cls("exp", float(m.group(1)))
        raise SpecError(fix)

    def capped(self, cap: int) -> TokenDist:
        return TokenDist(self.kind, self.a, self.b, min(self.cap, max(1, cap)))

    def label(self) -> str:
        if self.kind == "const":
            return f"{int(self.a)}"
        if self.kind == "uniform":
            return f"U[{int(self.a)},{int(self.b)}]"
        return f"exp(mean {self.a:g})"

    @property
    def max(self) -> int:
        return int(min(self.cap, self.a if self.kind == "const" else self.b if self.kind == "uniform" else self.cap))

    def points(self) -> tuple[tuple[float, float], ...]:
        """(value, weight) pairs; weights sum to 1."""
        return _points(self.kind, self.a, self.b, self.cap)

    @property
    def mean(self) -> float:
        return sum(v * w for v, w in self.points())

    @property
    def second_moment(self) -> float:
        return sum(v * v * w for v, w in self.points())


@lru_cache(maxsize=256)
def _points(kind: str, a: float, b: float, cap: int) -> tuple[tuple[float, float], ...]:
    if kind == "const":
        return ((float(min(a, cap)), 1.0),)
    n = A.DIST_POINTS
    qs = [(i + 0.5) / n for i in range(n)]
    if kind == "uniform":
        vals = [round(a + (b - a) * u) for u in qs]
    else:
        vals = [max(1, round(-a * math.log(1 - u))) for u in qs]
    return tuple((float(min(v, cap)), 1.0 / n) for v in vals)


@dataclass(frozen=True)
class RequestMix:
    """Traffic and the latency bound it must meet."""

    qps: float
    input: TokenDist
    output: TokenDist
    metric: Metric = "ttft"
    percentile: float = 99.0
    threshold_s: float = 0.5

    def label(self) -> str:
        return f"in {self.input.label()} / out {self.output.label()}"


@dataclass(frozen=True)
class LoadPoint:
    """The steady state of a deployment at one arrival rate, and its latency percentiles."""

    qps: float
    stable: bool
    reason: str
    batch: float = 0.0  # decoding sequences per unit
    prefill_tokens_per_step: float = 0.0
    step_s: float = math.inf  # mean step time
    full_step_s: float = math.inf  # a step carrying a full prefill chunk
    prefill_utilization: float = 0.0
    mean_wait_s: float = math.inf
    ttft_s: float = math.inf  # at the mix's percentile
    e2e_s: float = math.inf
    itl_s: float = math.inf
    ttft_mean_s: float = math.inf
    e2e_mean_s: float = math.inf
    in_flight_per_replica: float = 0.0
    output_tok_s: float = 0.0  # whole deployment
    notes: list[str] = field(default_factory=list)
    tokens_per_step: float = 1.0  # per decoding sequence: above 1 with MTP speculative decoding

    @property
    def tpot_s(self) -> float:
        """Mean time per output token: the step time, shared by the tokens a step yields."""
        return self.step_s / self.tokens_per_step

    def value(self, metric: Metric) -> float:
        return {"ttft": self.ttft_s, "e2e": self.e2e_s, "itl": self.itl_s}[metric]


def _serve_overhead_s(perf: PerfModel) -> float:
    dep = perf.dep
    return A.PROXY_TTFT_S.get(dep.proxy, 0.0) + dep.stream_interval_s


def evaluate_load(perf: PerfModel, mix: RequestMix, qps: float | None = None) -> LoadPoint:
    """Solve the steady state at ``qps`` (default: the mix's) and compute its latency percentiles."""
    dep, mem = perf.dep, perf.mem
    qps = mix.qps if qps is None else qps
    if not mem.fits:
        return LoadPoint(qps, False, f"does not fit: {mem.reason}")
    lam = qps / dep.units
    # With MTP a sequence gains E tokens a step, so it decodes for E[O]/E steps.
    per_step = perf.tokens_per_step
    i_mean, o_mean = mix.input.mean, mix.output.mean
    o_steps = o_mean / per_step
    c_dec = i_mean + mix.output.second_moment / (2 * o_mean)  # context seen by a decode step
    c_pre = mix.input.second_moment / (2 * i_mean)  # causal context of a prefill token
    budget = dep.max_num_batched_tokens
    seq_cap = min(dep.max_num_seqs, mem.kv_tokens / max(c_dec, 1.0))

    def g(t: float) -> float:
        return perf.step_time_s(lam * o_steps * t, lam * i_mean * t, c_dec, c_pre) - t

    def limit(t: float) -> str:
        b, p = lam * o_steps * t, lam * i_mean * t
        if b > dep.max_num_seqs:
            return f"needs {b:.0f} running sequences per replica, above max_num_seqs {dep.max_num_seqs}"
        if b > seq_cap:
            return (
                f"needs {b:.0f} running sequences per replica but the KV cache holds ~{seq_cap:.0f} "
                f"at a mean context of {c_dec:.0f} tokens"
            )
        if b + p > budget:
            return f"needs {b + p:.0f} tokens per step, above max_num_batched_tokens {budget}: prefill cannot keep up"
        return ""

    t_lo = perf.step_time_s(0.0, 0.0, c_dec)
    if lam <= 0:
        t = t_lo
    else:
        t_hi = t_lo
        while g(t_hi) > 0:
            why = limit(t_hi)
            if why:
                return LoadPoint(qps, False, f"unsustainable at {qps:g} QPS: {why}")
            t_hi *= 2
            if t_hi > 3600:
                return LoadPoint(qps, False, f"unsustainable at {qps:g} QPS: step time diverges")
        for _ in range(60):
            mid = 0.5 * (t_lo + t_hi)
            if g(mid) > 0:
                t_lo = mid
            else:
                t_hi = mid
        t = t_hi
        why = limit(t)
        if why:
            return LoadPoint(qps, False, f"unsustainable at {qps:g} QPS: {why}")
    b, p = lam * o_steps * t, lam * i_mean * t

    # Prefill as an M/G/1 server of C tokens per full step.
    chunk = max(1.0, budget - b)
    t_full = perf.step_time_s(b, chunk, c_dec, min(chunk, 2 * c_pre) / 2)
    mu = chunk / t_full
    rho = lam * i_mean / mu
    if rho >= 1:
        return LoadPoint(
            qps, False, f"unsustainable at {qps:g} QPS: prefill needs {rho:.0%} of the engine's prefill budget"
        )
    ew = lam * (mix.input.second_moment / mu**2) / (2 * (1 - rho)) if lam > 0 else 0.0
    # Waiting for a running-sequence slot: M/M/c with c slots held E[O]*T seconds each.
    hold = o_steps * t
    slots = max(1, int(seq_cap))
    if b >= slots:
        return LoadPoint(qps, False, f"unsustainable at {qps:g} QPS: every one of the {slots} sequence slots is busy")
    p_slot = erlang_c(slots, b) if b > 0 else 0.0
    rate_slot = (slots - b) / hold if hold > 0 else math.inf
    waits = [(rho, rho / ew if ew > 0 else math.inf), (p_slot, rate_slot)]
    mean_wait = ew + (p_slot / rate_slot if rate_slot != math.inf else 0.0)

    overhead = _serve_overhead_s(perf)

    def first_token(n_in: float) -> float:
        chunks = max(1, math.ceil(n_in / chunk))
        rest = n_in - (chunks - 1) * chunk
        last = perf.step_time_s(b, min(chunk, rest + p), c_dec, min(n_in, 2 * c_pre) / 2)
        return overhead + t / 2 + (chunks - 1) * t_full + max(t, last)

    ttft_atoms = [(first_token(v), w) for v, w in mix.input.points()]
    e2e_atoms = _bucket(
        [(a + (o - 1) / per_step * t, wa * wo) for a, wa in ttft_atoms for o, wo in mix.output.points()]
    )
    q = 1 - mix.percentile / 100
    ttft_p = _percentile(ttft_atoms, waits, q)
    e2e_p = _percentile(e2e_atoms, waits, q)
    steps_with_prefill = min(1.0, lam * t * sum(math.ceil(v / chunk) * w for v, w in mix.input.points()))
    if steps_with_prefill >= q and steps_with_prefill > 0:
        itl_p = perf.step_time_s(b, min(chunk, p / steps_with_prefill), c_dec, c_pre)
    else:
        itl_p = perf.step_time_s(b, 0.0, c_dec)
    # Per output token (vLLM's TPOT). With MTP a step's tokens arrive together: clients see bursts.
    itl_p /= per_step
    ttft_mean = mean_wait + sum(a * w for a, w in ttft_atoms)
    e2e_mean = ttft_mean + (o_mean - 1) / per_step * t
    in_flight = qps / dep.replicas * e2e_mean
    point = LoadPoint(
        qps=qps,
        stable=True,
        reason="",
        batch=b,
        prefill_tokens_per_step=p,
        step_s=t,
        full_step_s=t_full,
        prefill_utilization=rho,
        mean_wait_s=mean_wait,
        ttft_s=ttft_p,
        e2e_s=e2e_p,
        itl_s=itl_p,
        ttft_mean_s=ttft_mean,
        e2e_mean_s=e2e_mean,
        in_flight_per_replica=in_flight,
        output_tok_s=qps * o_mean,
        tokens_per_step=per_step,
    )
    if in_flight > dep.max_ongoing_requests:
        return replace(
            point,
            stable=False,
            reason=(
                f"unsustainable at {qps:g} QPS: needs {in_flight:.0f} requests in flight per replica, above "
                f"serving.max_ongoing_requests {dep.max_ongoing_requests}"
            ),
        )
    return point


def _bucket(atoms: list[tuple[float, float]], buckets: int = 512) -> list[tuple[float, float]]:
    """Merge (value, weight) atoms into at most ``buckets`` equal-weight groups (keeps tails)."""
    if len(atoms) <= buckets:
        return atoms
    atoms = sorted(atoms)
    out: list[tuple[float, float]] = []
    step, acc_w, acc_v = 1.0 / buckets, 0.0, 0.0
    for v, w in atoms:
        acc_w += w
        acc_v += v * w
        if acc_w >= step:
            out.append((acc_v / acc_w, acc_w))
            acc_w = acc_v = 0.0
    if acc_w > 0:
        out.append((acc_v / acc_w, acc_w))
    return out


def erlang_c(c: int, a: float) -> float:
    """Probability an arrival waits in an M/M/c queue with offered load ``a`` (< c) erlangs."""
    if a <= 0:
        return 0.0
    if a >= c:
        return 1.0
    if c > 4096:  # Halfin-Whitt approximation; the exact recursion would cost O(c) per call
        beta = (c - a) / math.sqrt(a)
        phi = math.exp(-beta * beta / 2) / math.sqrt(2 * math.pi)
        big_phi = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
        return 1.0 / (1.0 + beta * big_phi / phi) if phi > 0 else 0.0
    b = 1.0  # Erlang B by recursion, then C from B
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1 - b))


def _wait_tail(y: float, waits: list[tuple[float, float]]) -> float:
    """P(W1 + W2 > y) for independent waits, each 0 with probability 1 - p, else exponential(rate)."""
    (p1, r1), (p2, r2) = waits
    if y < 0:
        return 1.0

    def one(p: float, r: float) -> float:
        return 0.0 if r == math.inf else p * math.exp(-r * y)

    if r1 == math.inf or p1 <= 0:
        return one(p2, r2)
    if r2 == math.inf or p2 <= 0:
        return one(p1, r1)
    if abs(r1 - r2) < 1e-9 * max(r1, r2):
        both = math.exp(-r1 * y) * (1 + r1 * y)  # Erlang-2 tail
    else:
        both = (r2 * math.exp(-r1 * y) - r1 * math.exp(-r2 * y)) / (r2 - r1)
    return p1 * (1 - p2) * math.exp(-r1 * y) + p2 * (1 - p1) * math.exp(-r2 * y) + p1 * p2 * both


def _percentile(atoms: list[tuple[float, float]], waits: list[tuple[float, float]], q: float) -> float:
    """x with P(W + a > x) = q: W the two queueing waits, a the deterministic part from ``atoms``."""

    def tail(x: float) -> float:
        return sum(w * _wait_tail(x - a, waits) for a, w in atoms)

    lo = min(a for a, _ in atoms)
    if tail(lo) <= q:
        return lo
    hi = max(a for a, _ in atoms) + 1.0
    while tail(hi) > q:
        hi = lo + 2 * (hi - lo)
        if hi > 1e7:
            return math.inf
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if tail(mid) > q:
            lo = mid
        else:
            hi = mid
    return hi


def meets(point: LoadPoint, mix: RequestMix, metric: Metric | None = None) -> bool:
    m = metric or mix.metric
    return point.stable and point.value(m) <= mix.threshold_s


def capacity_qps(perf: PerfModel, mix: RequestMix) -> float:
    """The largest arrival rate the deployment sustains at all (queues stay finite), any latency."""
    return largest_rate(lambda q: evaluate_load(perf, mix, q).stable, perf)


def max_qps_for_slo(perf: PerfModel, mix: RequestMix, metric: Metric | None = None) -> float:
    """The largest arrival rate whose percentile latency (``metric``, default the mix's) meets the bound."""
    return largest_rate(lambda q: meets(evaluate_load(perf, mix, q), mix, metric), perf)


def largest_rate(ok: Callable[[float], bool], perf: PerfModel) -> float:
    """Largest q with ok(q), assuming ok is true below a threshold and false above it."""
    if not perf.mem.fits:
        return 0.0
    lo = 1e-3
    if not ok(lo):
        return 0.0
    hi = 1.0
    while ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1e7:
            return hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-3 * hi:
            break
    return lo
