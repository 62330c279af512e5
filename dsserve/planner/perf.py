"""Step-time model of one vLLM engine: prefill, decode and mixed steps as sums of rooflines.

One engine step of vLLM's continuous batching runs every decoding sequence for one token plus up to
``max_num_batched_tokens`` of prompt (chunked prefill). Its time is modelled per pipeline stage and
per GPU as a sum over kernel groups, each ``max(bytes / (HBM x eff), FLOPs / (peak x eff))``:

- linear layers (attention projections, dense FFN, shared experts, LM head): weights read once per
  step; 2 FLOPs per parameter per token;
- routed experts: only the experts some token in the step picked are read. With T tokens in the step
  (all DP ranks together) and uniform routing, an expert is untouched with probability (1 - k/E)^T,
  so E x (1 - (1 - k/E)^T) experts are read -- the reason MoE decode gets cheaper per token as the
  batch grows;
- attention: decode reads each sequence's KV (MLA: the full latent on every TP rank) and does
  2 x heads x context x (2 x kv_lora + rope) FLOPs per token (absorbed MLA) or 4 x heads x head_dim x
  context (GQA); prefill is compute-bound over the causal half of the prompt;
- communication: two all-reduces per layer over TP (ring: 2(n-1)/n x bytes / link + latency), or an
  all-gather/reduce-scatter over the expert group when DP attention is on; PP sends activations;
- fixed costs: a minimum time per kernel launched (kernels per layer x layers) and a per-step engine
  overhead.

Every constant is in :mod:`dsserve.planner.assumptions`. The model is deterministic: it gives the mean
step time; queueing lives in :mod:`dsserve.planner.slo`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsserve.planner import assumptions as A
from dsserve.planner.deployment import Deployment
from dsserve.planner.memory import MemoryPlan, StageShape

__all__ = ["PerfModel", "StepBreakdown"]


@dataclass(frozen=True)
class StepBreakdown:
    """Seconds per step by component, for the fullest stage (sums to :attr:`total_s`)."""

    weights_s: float
    experts_s: float
    attention_s: float
    comm_s: float
    kernels_s: float
    overhead_s: float
    pipeline_stages: int = 1

    @property
    def total_s(self) -> float:
        stage = self.weights_s + self.experts_s + self.attention_s + self.comm_s + self.kernels_s
        return self.pipeline_stages * stage + self.overhead_s


class PerfModel:
    """Step times of one scheduler unit (a replica, or one DP rank of a DP-attention engine)."""

    def __init__(self, dep: Deployment, mem: MemoryPlan) -> None:
        self.dep = dep
        self.mem = mem
        acc = dep.accel
        self._bw = acc.hbm_bandwidth * A.HBM_EFFICIENCY
        peak_gemm = acc.fp8_flops if (dep.weights.fp8_compute and acc.fp8_flops) else acc.bf16_flops
        self._gemm_flops = peak_gemm * A.GEMM_EFFICIENCY
        self._attn_flops = acc.bf16_flops * A.ATTENTION_EFFICIENCY
        lay = dep.layout
        self._attn_group_crosses_nodes = lay.tp > dep.gpus_per_node
        self._moe_group = lay.tp * lay.dp if dep.arch.is_moe else lay.tp
        self._moe_group_crosses_nodes = self._moe_group > dep.gpus_per_node
        self._pp_crosses_nodes = lay.tp * lay.pp > dep.gpus_per_node
        self._stages = list(mem.stages)
        self._spec_tokens = dep.speculative_tokens if dep.arch.mtp_layers else 0

    # -- collectives -----------------------------------------------------------------------------

    def _link(self, crosses_nodes: bool) -> tuple[float, float]:
        acc = self.dep.accel
        if crosses_nodes:
            return acc.scaleout_bandwidth or acc.link_bandwidth, A.ALLREDUCE_LATENCY_S + A.SCALEOUT_LATENCY_S
        return acc.link_bandwidth, A.ALLREDUCE_LATENCY_S

    def _allreduce_s(self, n: int, nbytes: float, crosses_nodes: bool) -> float:
        if n <= 1:
            return 0.0
        bw, lat = self._link(crosses_nodes)
        return lat + 2 * (n - 1) / n * nbytes / bw

    def _gather_scatter_s(self, n: int, nbytes_total: float, crosses_nodes: bool) -> float:
        """All-gather then reduce-scatter of ``nbytes_total`` across ``n`` ranks (vLLM's default EP
        all2all backend, ``allgather_reducescatter``); each rank moves (n-1)/n of it each way."""
        if n <= 1:
            return 0.0
        bw, _ = self._link(crosses_nodes)
        lat = A.ALL_TO_ALL_LATENCY_S + (A.SCALEOUT_LATENCY_S if crosses_nodes else 0.0)
        return 2 * lat + 2 * (n - 1) / n * nbytes_total / bw

    # -- one stage -------------------------------------------------------------------------------

    def _stage_breakdown(
        self,
        s: StageShape,
        decode: float,
        prefill: float,
        context: float,
        prompt_context: float,
        queries: float = 1.0,
        sampled: float | None = None,
    ) -> StepBreakdown:
        """One pass through stage ``s``: ``decode`` sequences with ``queries`` tokens each (1, or 1 + k
        when verifying k MTP drafts) plus ``prefill`` prompt tokens; ``sampled`` tokens go through the LM
        head (default: every decode query and one per prefilling prompt)."""
        dep, arch, lay = self.dep, self.dep.arch, self.dep.layout
        q, d = dep.weights.bytes_per_param, dep.weights.dense_bytes
        n_tok = decode * queries + prefill
        bw, gf = self._bw, self._gemm_flops

        def roof(nbytes: float, flops: float, flop_rate: float) -> float:
            return max(nbytes / bw, flops / flop_rate)

        # Linear layers that every token uses: attention projections, dense FFNs, shared experts,
        # plus the LM head for the tokens that are sampled (decodes, and one per finishing prompt).
        lin = s.layers * roof(s.attn_params * q, 2 * s.attn_params * n_tok, gf)
        lin += s.dense_ffn_layers * roof(s.dense_ffn_params * q, 2 * s.dense_ffn_params * n_tok, gf)
        lin += s.moe_layers * roof(
            s.shared_params * q + s.router_params * d, 2 * (s.shared_params + s.router_params) * n_tok, gf
        )
        if s.last:
            if sampled is None:
                sampled = decode * queries + (1.0 if prefill else 0.0)
            lin += roof(s.lm_head_params * d, 2 * s.lm_head_params * sampled, gf)

        # Routed experts: read those the step's tokens touch (across all DP ranks), spread over ranks.
        experts = 0.0
        if s.moe_layers:
            k, e = arch.experts_per_token, arch.routed_experts
            tokens_all = n_tok * lay.dp
            touched = e * (1.0 - (1.0 - k / e) ** tokens_all) if tokens_all > 0 else 0.0
            per_rank_bytes = touched * s.expert_params * q / s.experts_split
            per_rank_flops = 2 * s.expert_params * tokens_all * k / s.experts_split
            experts = s.moe_layers * roof(per_rank_bytes, per_rank_flops, gf)

        # Attention core. Heads are split over TP; the KV each decode reads is this rank's share.
        # A sequence's queries (its token and any drafts being verified) read its KV once, together.
        heads = arch.num_heads / lay.tp
        kv_read = decode * context * (s.kv_bytes_per_token / max(s.layers + s.mtp_layers, 1))
        if arch.attention == "mla":
            dec_flops = 2 * heads * context * (2 * arch.kv_lora_rank + arch.qk_rope_head_dim)
            pre_flops = 2 * heads * prompt_context * (arch.qk_nope_head_dim + arch.qk_rope_head_dim + arch.v_head_dim)
        else:
            dec_flops = 4 * heads * arch.head_dim * context
            pre_flops = 4 * heads * arch.head_dim * prompt_context
        attn = s.layers * max(kv_read / bw, (decode * queries * dec_flops + prefill * pre_flops) / self._attn_flops)

        # Communication: attention output all-reduce over TP; FFN output all-reduce over TP, or the
        # expert group's gather/scatter when DP attention spreads tokens over DP ranks.
        act = n_tok * arch.hidden_size * A.ACT_BYTES
        comm = s.layers * self._allreduce_s(lay.tp, act, self._attn_group_crosses_nodes)
        comm += s.dense_ffn_layers * self._allreduce_s(lay.tp, act, self._attn_group_crosses_nodes)
        if lay.dp > 1 and arch.is_moe:
            comm += s.moe_layers * self._gather_scatter_s(self._moe_group, act * lay.dp, self._moe_group_crosses_nodes)
        else:
            comm += s.moe_layers * self._allreduce_s(lay.tp, act, self._attn_group_crosses_nodes)
        if lay.pp > 1 and not s.last and n_tok:
            bw_pp, lat_pp = self._link(self._pp_crosses_nodes)
            comm += lat_pp + act / bw_pp

        k_attn = A.KERNELS_ATTN_MLA if arch.attention == "mla" else A.KERNELS_ATTN_GQA
        kernels = A.KERNEL_MIN_S * (
            s.layers * k_attn + s.dense_ffn_layers * A.KERNELS_FFN_DENSE + s.moe_layers * A.KERNELS_FFN_MOE
        )
        return StepBreakdown(lin, experts, attn, comm, kernels, 0.0)

    def _stage_with_drafts(
        self, s: StageShape, decode: float, prefill: float, context: float, prompt_context: float
    ) -> StepBreakdown:
        """A stage's share of one step, with MTP speculative decoding when the deployment runs it.

        The target model verifies ``1 + k`` tokens per decoding sequence. The last stage then runs the MTP
        module (one more layer, LM head shared) as vLLM's proposer does: a first pass over every token the
        step processed (keeping the module's KV cache complete), proposing one draft per sequence, then
        ``k - 1`` passes over one token per sequence.
        """
        k = self._spec_tokens
        main = self._stage_breakdown(s, decode, prefill, context, prompt_context, queries=1.0 + k)
        if not (k and s.mtp_layers):
            return main
        arch, d = self.dep.arch, self.dep.weights.dense_bytes
        m = s.mtp_layers
        module = replace(
            s,
            layers=m,
            dense_ffn_layers=0 if arch.is_moe else m,
            moe_layers=m if arch.is_moe else 0,
            last=True,
            kv_bytes_per_token=s.kv_bytes_per_token * m / (s.layers + m),
            mtp_layers=0,
        )
        one_each = decode + (1.0 if prefill else 0.0)
        passes = [
            (
                self._stage_breakdown(module, decode, prefill, context, prompt_context, 1.0 + k, one_each),
                decode * (1.0 + k) + prefill,
            )
        ]
        passes += [(self._stage_breakdown(module, decode, 0.0, context, 0.0), decode)] * (k - 1)
        parts = [main] + [b for b, _ in passes]
        proj = sum(
            m * max(s.mtp_proj_params * d / self._bw, 2 * s.mtp_proj_params * n / self._gemm_flops) for _, n in passes
        )
        return StepBreakdown(
            sum(b.weights_s for b in parts) + proj,
            sum(b.experts_s for b in parts),
            sum(b.attention_s for b in parts),
            sum(b.comm_s for b in parts),
            sum(b.kernels_s for b in parts),
            0.0,
        )

    # -- public API ------------------------------------------------------------------------------

    def step_breakdown(
        self, decode: float, prefill: float = 0.0, context: float = 0.0, prompt_context: float | None = None
    ) -> StepBreakdown:
        """One engine step with ``decode`` sequences at mean ``context`` and ``prefill`` prompt tokens.

        ``prompt_context`` is the mean causal context of the prefill tokens (half the prompt for a
        prompt processed in one go); it defaults to ``prefill / 2``. With pipeline parallelism vLLM
        keeps one micro-batch per stage in flight: each holds 1/pp of the sequences and a sequence
        waits ``pp`` stage times between tokens, which is what the breakdown's total reports.
        """
        if not self._stages:
            return StepBreakdown(0, 0, 0, 0, 0, A.STEP_OVERHEAD_S)
        pp = self.dep.layout.pp
        pc = prefill / 2 if prompt_context is None else prompt_context
        b = max(
            (self._stage_with_drafts(s, decode / pp, prefill / pp, context, pc) for s in self._stages),
            key=lambda x: x.total_s,
        )  # the slowest stage sets the pipeline's pace
        return StepBreakdown(b.weights_s, b.experts_s, b.attention_s, b.comm_s, b.kernels_s, A.STEP_OVERHEAD_S, pp)

    def step_time_s(
        self, decode: float, prefill: float = 0.0, context: float = 0.0, prompt_context: float | None = None
    ) -> float:
        """Seconds between two tokens of a decoding sequence in a step of this shape."""
        return self.step_breakdown(decode, prefill, context, prompt_context).total_s

    def decode_step_time_s(self, batch: float, context: float) -> float:
        """Decode-only step time with ``batch`` sequences at mean ``context`` tokens (the TPOT unless MTP
        yields more than one token a step: see :meth:`tpot_s`)."""
        return self.step_time_s(batch, 0.0, context)

    def prefill_time_s(self, tokens: int, context: int = 0) -> float:
        """Time to prefill one prompt of ``tokens`` alone (no decodes), after ``context`` cached tokens.

        The prompt is split into chunks of ``max_num_batched_tokens`` as vLLM's chunked prefill does;
        each chunk attends to everything before it.
        """
        if tokens <= 0:
            return 0.0
        chunk = max(1, self.dep.max_num_batched_tokens)
        total, done = 0.0, 0
        while done < tokens:
            n = min(chunk, tokens - done)
            total += self.step_time_s(0.0, n, 0.0, prompt_context=context + done + n / 2)
            done += n
        return total

    @property
    def tokens_per_step(self) -> float:
        """Output tokens a decoding sequence gains per step (above 1 only with MTP speculative decoding)."""
        return self.dep.tokens_per_step if self._spec_tokens else 1.0

    def tpot_s(self, batch: float, context: float) -> float:
        """Time per output token of a decode batch: the step time over the tokens a step yields."""
        return self.decode_step_time_s(batch, context) / self.tokens_per_step

    def decode_throughput_tok_s(self, batch: float, context: float) -> float:
        """Output tokens per second of one unit decoding ``batch`` sequences at ``context``."""
        return batch / self.tpot_s(batch, context) if batch > 0 else 0.0

    def max_decode_batch(self, context: float, max_num_seqs: int | None = None) -> int:
        """Most sequences one unit can decode at once at mean ``context``: KV cache and max_num_seqs."""
        cap = self.dep.max_num_seqs if max_num_seqs is None else max_num_seqs
        by_kv = int(self.mem.kv_tokens // max(context, 1.0))
        return max(0, min(cap, by_kv))

    def max_generation_throughput(self, context: float, max_num_seqs: int | None = None) -> tuple[float, int]:
        """(output tok/s of the whole deployment, batch per unit) at the best batch for ``context``.

        Decode only: prompts are assumed processed elsewhere or counted separately, which is how
        DeepSeek reports "generation throughput" next to "prompt input throughput".
        """
        top = self.max_decode_batch(context, max_num_seqs)
        if top < 1 or not self.mem.fits:
            return 0.0, 0
        best, best_b = 0.0, 0
        for b in _batch_grid(top):
            t = self.decode_throughput_tok_s(b, context)
            if t > best:
                best, best_b = t, b
        return best * self.dep.units, best_b

    def prefill_throughput_tok_s(self, prompt_tokens: int) -> float:
        """Prompt tokens per second of the whole deployment when it only prefills prompts of this size
        back to back in full ``max_num_batched_tokens`` steps."""
        chunk = self.dep.max_num_batched_tokens
        n = max(1, chunk // max(prompt_tokens, 1))  # prompts per step
        tokens = min(chunk, n * prompt_tokens) if prompt_tokens <= chunk else chunk
        pc = min(prompt_tokens, chunk) / 2 if prompt_tokens <= chunk else prompt_tokens / 2
        return tokens / self.step_time_s(0.0, tokens, 0.0, prompt_context=pc) * self.dep.units


def _batch_grid(top: int) -> list[int]:
    """Batch sizes to scan: all small ones, then geometric steps, always including ``top``."""
    out = set(range(1, min(top, 16) + 1))
    b = 16.0
    while b < top:
        out.add(int(b))
        b *= 1.25
    out.add(top)
    return sorted(out)
