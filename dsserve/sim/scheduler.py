"""vLLM v1's continuous-batching scheduler, as a clock-free state machine.

The rules are vLLM's (``vllm/v1/core/sched/scheduler.py``), reduced to what sets latency and capacity:

- every step has a token budget, ``max_num_batched_tokens``; running requests are scheduled first, in
  arrival order, each for the tokens it still needs (1 for a decode, the rest of its prompt - or a chunk
  of it, with chunked prefill - for a prefill), then waiting requests while the budget, the
  ``max_num_seqs`` limit and the KV cache allow;
- the KV cache is paged in blocks of ``block_tokens``; a request holds blocks for every token computed;
- when a running request needs a block and none is free, the newest running request is preempted: it
  frees its blocks, goes back to the front of the queue and later recomputes its prompt and output
  (vLLM v1's recompute preemption), and no waiting request is admitted in that step;
- a request samples one token when its computed tokens catch up with its length (end of its prompt,
  then every decode step) and finishes at ``max_tokens`` or when the engine stops it (a stop string,
  a client disconnect);
- a request whose prompt a remote prefill engine computed (disaggregation) is admitted with
  ``external_tokens`` of it already in cache, and computes the rest (the last prompt token, whose logits
  it samples from) like any prefill; preempted, it recomputes everything locally, as vLLM does;
- with MTP speculative decoding (``speculative_tokens`` k > 0) a decoding request is scheduled for 1 + k
  tokens (its own and k drafts, in the token budget and the KV cache, as vLLM's scheduler counts them);
  each draft is accepted with probability ``acceptance`` while the ones before it were, and the request
  gains 1 + the accepted drafts (vLLM's rejection sampler). The draws come from a seeded generator.

The caller owns time: :meth:`Scheduler.schedule` plans a step, the caller asks the timing model how long
it takes, waits, and calls :meth:`Scheduler.complete`. Unit tests drive it with a fake clock.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["SimRequest", "Scheduler", "SpecDecodeStats", "Step", "StepResult"]

Status = Literal["waiting", "running", "finished"]


@dataclass(eq=False)
class SimRequest:
    """One sequence in the simulated engine, with the timestamps vLLM's metrics are made of."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    arrival: float
    status: Status = "waiting"
    num_computed: int = 0  # tokens whose KV is in the cache
    output_tokens: int = 0
    blocks: int = 0
    preemptions: int = 0
    prefill_computed: int = 0  # prompt tokens computed in prefill, recomputation included
    external_tokens: int = 0  # prompt tokens whose KV a remote prefill engine computed (P/D decode side)
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished_at: float | None = None
    finished_reason: str | None = None
    token_gaps: list[float] = field(default_factory=list)  # inter-token latencies, seconds

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass(frozen=True)
class Step:
    """What one engine step computes: (request, new tokens) pairs and the shape the timing model needs."""

    work: tuple[tuple[SimRequest, int], ...]
    decodes: int
    prefill_tokens: int
    decode_context: float  # mean tokens in cache of the decoding sequences
    prefill_context: float  # mean causal context of the prefill tokens
    preempted: tuple[SimRequest, ...] = ()

    @property
    def tokens(self) -> int:
        """Tokens scheduled (vLLM's iteration tokens): drafts being verified count."""
        return sum(n for _, n in self.work)


@dataclass(frozen=True)
class SpecDecodeStats:
    """One step's speculative decoding, in vLLM's terms (vllm/v1/spec_decode/metrics.py SpecDecodingStats)."""

    num_drafts: int  # sequences that verified drafts
    num_draft_tokens: int
    num_accepted_tokens: int
    accepted_per_pos: tuple[int, ...]  # accepted drafts at each draft position


@dataclass(frozen=True)
class StepResult:
    """What a completed step changed: requests that got tokens (and how many each), and those that finished."""

    emitted: tuple[SimRequest, ...]
    finished: tuple[SimRequest, ...]
    gained: tuple[int, ...]  # tokens each emitted request gained (1 without speculation)
    spec: SpecDecodeStats | None = None

    @property
    def tokens(self) -> int:
        return sum(self.gained)


class Scheduler:
    """Waiting and running queues, a paged KV cache and vLLM's scheduling order."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        kv_blocks: int,
        block_tokens: int,
        chunked_prefill: bool = True,
        speculative_tokens: int = 0,
        acceptance: float = 0.0,
        seed: int = 0,
    ) -> None:
        if min(max_num_seqs, max_num_batched_tokens, kv_blocks, block_tokens) < 1:
            raise ValueError("scheduler limits must all be at least 1")
        if speculative_tokens < 0 or not 0.0 <= acceptance < 1.0:
            raise ValueError("speculative_tokens must be >= 0 and acceptance in [0, 1)")
        self.speculative_tokens = speculative_tokens
        self.acceptance = acceptance
        self._rng = random.Random(seed)
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.kv_blocks = kv_blocks
        self.block_tokens = block_tokens
        self.chunked_prefill = chunked_prefill
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.free_blocks = kv_blocks
        self.total_preemptions = 0

    # -- queue management -------------------------------------------------------------------------

    def add(self, req: SimRequest) -> None:
        req.status = "waiting"
        self.waiting.append(req)

    def finish(self, req: SimRequest, reason: str, now: float) -> None:
        """Stop a request (stop string, client gone, length) and free its KV blocks at once."""
        if req.finished:
            return
        if req.status == "running":
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self._free(req)
        req.status = "finished"
        req.finished_reason = reason
        req.finished_at = now

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use, as vllm:kv_cache_usage_perc reports it (0..1)."""
        return 1.0 - self.free_blocks / self.kv_blocks

    # -- one step ---------------------------------------------------------------------------------

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_tokens)

    def _free(self, req: SimRequest) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0

    def _preempt(self, req: SimRequest) -> None:
        self.running.remove(req)
        self._free(req)
        req.num_computed = 0
        req.status = "waiting"
        req.preemptions += 1
        self.total_preemptions += 1
        self.waiting.appendleft(req)

    @staticmethod
    def _decoding(req: SimRequest) -> bool:
        """Past its prompt with one token to compute: the next step decodes it."""
        return req.output_tokens > 0 and req.num_computed + 1 == req.num_tokens

    def _new_tokens(self, req: SimRequest, budget: int) -> int:
        if self.speculative_tokens and self._decoding(req):
            # its token plus k drafts, as many as the budget and max_tokens leave room for
            room = req.max_tokens - req.output_tokens
            return min(1 + self.speculative_tokens, budget, max(1, room))
        need = req.num_tokens - req.num_computed
        if need > budget and not self.chunked_prefill:
            return 0
        return min(need, budget)

    def _accept(self, drafts: int, per_pos: list[int]) -> int:
        """Verify ``drafts`` draft tokens: accept while each draws under the acceptance rate (vLLM's rejection
        sampler stops at the first rejection); count the accepted ones by position. Returns how many."""
        accepted = 0
        while accepted < drafts and self._rng.random() < self.acceptance:
            per_pos[accepted] += 1
            accepted += 1
        return accepted

    def schedule(self, now: float) -> Step | None:
        """Plan the next step, or None when nothing can run (idle, or waiting for KV to free)."""
        budget = self.max_num_batched_tokens
        work: list[tuple[SimRequest, int]] = []
        preempted: list[SimRequest] = []
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = self._new_tokens(req, budget)
            if n <= 0:
                i += 1
                continue
            need = self._blocks_for(req.num_computed + n) - req.blocks
            while need > self.free_blocks:
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is req:
                    break
            if req.status != "running":
                break
            req.blocks += need
            self.free_blocks -= need
            work.append((req, n))
            budget -= n
            i += 1

        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
                req = self.waiting[0]
                if req.first_scheduled is None:  # remote KV counts once: a preempted request recomputes it
                    req.num_computed = req.external_tokens
                n = self._new_tokens(req, budget)
                if n <= 0:
                    break
                need = self._blocks_for(req.num_computed + n)
                if need > self.free_blocks:
                    break
                self.waiting.popleft()
                req.blocks, req.status = need, "running"
                self.free_blocks -= need
                if req.first_scheduled is None:
                    req.first_scheduled = now
                self.running.append(req)
                work.append((req, n))
                budget -= n

        if not work:
            return None
        decodes = [r for r, _ in work if self._decoding(r)]
        prefills = [(r, n) for r, n in work if not self._decoding(r)]
        prefill_tokens = sum(n for _, n in prefills)
        decode_ctx = sum(r.num_computed for r in decodes) / len(decodes) if decodes else 0.0
        prefill_ctx = sum(n * (r.num_computed + n / 2) for r, n in prefills) / prefill_tokens if prefill_tokens else 0.0
        return Step(tuple(work), len(decodes), prefill_tokens, decode_ctx, prefill_ctx, tuple(preempted))

    def complete(self, step: Step, now: float) -> StepResult:
        """Apply a finished step: advance computed tokens, sample, finish at max_tokens."""
        emitted: list[SimRequest] = []
        finished: list[SimRequest] = []
        gained: list[int] = []
        k = self.speculative_tokens
        drafts = draft_tokens = 0
        per_pos = [0] * k
        for req, n in step.work:
            if req.status != "running":  # finished or preempted while the step ran
                continue
            gain = 1
            if k and self._decoding(req) and n > 1:
                drafts, draft_tokens = drafts + 1, draft_tokens + n - 1
                gain = 1 + self._accept(n - 1, per_pos)
                n = gain  # rejected drafts' KV is discarded: computed tokens advance by what was kept
            was_prefill = req.num_computed < req.prompt_tokens
            req.num_computed += n
            if was_prefill:
                req.prefill_computed += min(n, req.prompt_tokens)
            if req.num_computed < req.num_tokens:
                continue  # a prefill chunk; no token yet
            req.output_tokens += gain
            gained.append(gain)
            if req.first_token is None:
                req.first_token = now
            elif req.last_token is not None:
                req.token_gaps.append(now - req.last_token)
            req.last_token = now
            emitted.append(req)
            if req.output_tokens >= req.max_tokens:
                self.finish(req, "length", now)
                finished.append(req)
        spec = SpecDecodeStats(drafts, draft_tokens, sum(per_pos), tuple(per_pos)) if k else None
        return StepResult(tuple(emitted), tuple(finished), tuple(gained), spec)
