"""The real engine's ``vllm:*`` metrics, fed by the simulator.

Dashboards, alert rules and autoscaling read vLLM's metric names, so the simulator must export the
same ones with the same labels and buckets. It uses vLLM's own Ray metric wrappers
(``vllm/v1/metrics/ray_wrappers.py``: name sanitising, the ``ReplicaId`` tag) and bucket families
(``vllm/v1/metrics/buckets.py``) rather than copies, and the e2e parity test diffs the names it exports
against a real engine's scrape (``deploy/prometheus/exported-metrics.txt``).

Like vLLM, a counter or histogram series appears only once something is recorded (Ray exports a
series after its first observation), so the simulator records the same events the real engine does:
per step (scheduler state, iteration tokens), per first token and per finished request.
"""

from __future__ import annotations

from typing import Any

from dsserve.sim.scheduler import Scheduler, SimRequest, Step, StepResult

__all__ = ["SimMetrics"]

_LABELS = ["model_name", "engine"]
# vllm/v1/engine/__init__.py FinishReason: stop, length, abort, error, repetition (str() gives the name).
_FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


def _handed_over(req: SimRequest) -> bool:
    """A prompt whose KV a remote prefill engine computed, and which was not recomputed here since."""
    return req.external_tokens > 0 and req.preemptions == 0


class SimMetrics:
    """One simulated engine's metric series (engine index 0, like a single-rank vLLM engine)."""

    def __init__(
        self,
        model_name: str,
        *,
        max_model_len: int,
        block_tokens: int,
        kv_blocks: int,
        description: str,
        prefix_caching: bool = True,
        speculative_tokens: int = 0,
    ) -> None:
        from vllm.v1.metrics.buckets import histogram_buckets
        from vllm.v1.metrics.ray_wrappers import RayCounterWrapper, RayGaugeWrapper, RayHistogramWrapper

        lv = [model_name, "0"]

        def gauge(name: str, doc: str, extra: list[str] | None = None) -> Any:
            return RayGaugeWrapper(name=name, documentation=doc, labelnames=_LABELS + (extra or []))

        def counter(name: str, doc: str, extra: list[str] | None = None) -> Any:
            return RayCounterWrapper(name=name, documentation=doc, labelnames=_LABELS + (extra or []))

        def hist(name: str, doc: str, family: str) -> Any:
            buckets = histogram_buckets(family, max_model_len=max_model_len)
            return RayHistogramWrapper(name=name, documentation=doc, labelnames=_LABELS, buckets=buckets).labels(*lv)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.").labels(*lv)
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.").labels(*lv)
        by_reason = gauge("vllm:num_requests_waiting_by_reason", "Number of waiting requests by reason.", ["reason"])
        self.waiting_capacity = by_reason.labels(*lv, "capacity")
        self.waiting_deferred = by_reason.labels(*lv, "deferred")
        self.waiting_deferred.set(0)
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.").labels(*lv)
        # Keep every metric object referenced: Ray stops exporting a metric once it is garbage-collected.
        sleep = gauge("vllm:engine_sleep_state", "Engine sleep state.", ["sleep_state"])
        self.sleep_state = {}
        for state, value in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):
            self.sleep_state[state] = sleep.labels(*lv, state)
            self.sleep_state[state].set(value)
        info = {
            "block_size": str(block_tokens),
            "num_gpu_blocks": str(kv_blocks),
            "cache_dtype": "auto",
            "simulated": "true",
            "simulated_hardware": description,
        }
        self.cache_config_info = RayGaugeWrapper(
            name="vllm:cache_config_info",
            documentation="Information of the LLMEngine CacheConfig",
            labelnames=[*info, "engine"],
        ).labels(**info, engine="0")
        self.cache_config_info.set(1)

        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.").labels(*lv)
        by_source = counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", ["source"])
        self.prompt_tokens_computed = by_source.labels(*lv, "local_compute")
        # prompt tokens a remote prefill engine computed (the decode pool of a disaggregated deployment)
        self.prompt_tokens_external = by_source.labels(*lv, "external_kv_transfer")
        # vLLM counts every prompt token its prefix cache looks up (queries) and the ones it finds (hits); the
        # simulator models no cache contents, so it counts the lookups and no hits, like vLLM with unique prompts
        self.prefix_cache_queries = (
            counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.").labels(
                *lv
            )
            if prefix_caching
            else None
        )
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.").labels(*lv)
        # speculative decoding, as vLLM exports it when speculative_config is set (vllm/v1/spec_decode/metrics.py)
        self.spec_drafts: Any = None  # with spec_draft_tokens and spec_accepted_tokens, set together or not at all
        self.spec_draft_tokens: Any = None
        self.spec_accepted_tokens: Any = None
        self.spec_accepted_per_pos: list[Any] = []
        if speculative_tokens:
            self.spec_drafts = counter("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.").labels(*lv)
            self.spec_draft_tokens = counter("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.").labels(*lv)
            self.spec_accepted_tokens = counter(
                "vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens."
            ).labels(*lv)
            per_pos = counter(
                "vllm:spec_decode_num_accepted_tokens_per_pos", "Accepted tokens per draft position.", ["position"]
            )
            self.spec_accepted_per_pos = [per_pos.labels(*lv, str(i)) for i in range(speculative_tokens)]
        self.num_preemptions = counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        ).labels(*lv)
        success = counter("vllm:request_success", "Count of successfully processed requests.", ["finished_reason"])
        self.success = {r: success.labels(*lv, r) for r in _FINISH_REASONS}

        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", "iteration_tokens"
        )
        self.req_prompt = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", "request_tokens")
        self.req_generation = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", "request_tokens"
        )
        self.req_max_gen = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            "request_tokens",
        )
        self.req_n = hist("vllm:request_params_n", "Histogram of the n request parameter.", "request_params_n")
        self.req_max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", "request_tokens"
        )
        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", "time_to_first_token"
        )
        self.itl = hist(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", "inter_token_latency"
        )
        self.tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            "inter_token_latency",
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", "request_latency"
        )
        self.queue = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            "request_latency",
        )
        self.inference = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            "request_latency",
        )
        self.prefill = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            "request_latency",
        )
        self.decode = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            "request_latency",
        )
        self.req_preemptions = hist(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            "request_num_preemptions",
        )
        self.req_prefill_kv = hist(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            "request_tokens",
        )
        self._preemptions_seen = 0

    def refresh_static(self) -> None:
        """Re-set the gauges that never change, so Ray keeps exporting them (it drops stale gauges)."""
        self.cache_config_info.set(1)
        self.waiting_deferred.set(0)
        for state, gauge in self.sleep_state.items():
            gauge.set(1 if state == "awake" else 0)

    def record_state(self, sched: Scheduler) -> None:
        """Scheduler gauges, as vLLM records them after every step."""
        self.running.set(len(sched.running))
        self.waiting.set(len(sched.waiting))
        self.waiting_capacity.set(len(sched.waiting))
        self.kv_usage.set(sched.kv_usage)
        if sched.total_preemptions > self._preemptions_seen:
            self.num_preemptions.inc(sched.total_preemptions - self._preemptions_seen)
            self._preemptions_seen = sched.total_preemptions

    def record_step(self, step: Step, result: StepResult) -> None:
        emitted = result.emitted
        self.iteration_tokens.observe(step.tokens)
        if result.spec is not None and self.spec_drafts is not None:
            self.spec_drafts.inc(result.spec.num_drafts)
            self.spec_draft_tokens.inc(result.spec.num_draft_tokens)
            self.spec_accepted_tokens.inc(result.spec.num_accepted_tokens)
            for counter, n in zip(self.spec_accepted_per_pos, result.spec.accepted_per_pos, strict=True):
                counter.inc(n)
        first = [r for r in emitted if r.output_tokens == 1]  # the prefill samples one token, drafts come later
        if first:
            prompt = sum(r.prompt_tokens for r in first)
            # vLLM counts a handed-over prompt as external whole, the recomputed last token included: its
            # PrefillStats are taken before the scheduler takes that token back (vllm/v1/core/sched/scheduler.py)
            external = sum(r.prompt_tokens for r in first if _handed_over(r))
            self.prompt_tokens.inc(prompt)
            self.prompt_tokens_computed.inc(prompt - external)
            if external:
                self.prompt_tokens_external.inc(external)
            if self.prefix_cache_queries is not None:
                self.prefix_cache_queries.inc(prompt)
        if emitted:
            self.generation_tokens.inc(result.tokens)
        for r in first:
            self.ttft.observe(r.first_token - r.arrival)  # type: ignore[operator]  # set when in `first`
        for r in emitted:
            if r.output_tokens > 1 and r.token_gaps:
                self.itl.observe(r.token_gaps[-1])

    def record_finished(self, req: SimRequest, *, n: int = 1) -> None:
        """Per-request histograms when a request leaves the engine (vLLM: FinishedRequestStats)."""
        end = req.finished_at if req.finished_at is not None else req.last_token
        if end is None:
            return
        reason = req.finished_reason or "abort"
        self.success.get(reason, self.success["abort"]).inc(1)
        self.e2e.observe(end - req.arrival)
        self.req_prompt.observe(req.prompt_tokens)
        self.req_generation.observe(req.output_tokens)
        self.req_max_gen.observe(req.max_tokens)
        self.req_max_tokens.observe(req.max_tokens)
        self.req_n.observe(n)
        self.req_preemptions.observe(req.preemptions)
        self.req_prefill_kv.observe(0 if _handed_over(req) else req.prefill_computed)
        if req.first_scheduled is not None:
            self.queue.observe(req.first_scheduled - req.arrival)
            self.inference.observe(end - req.first_scheduled)
            if req.first_token is not None:
                self.prefill.observe(req.first_token - req.first_scheduled)
                self.decode.observe(end - req.first_token)
        if req.first_token is not None and req.output_tokens > 1:
            self.tpot.observe((end - req.first_token) / (req.output_tokens - 1))
