"""dsserve's own request metrics, recorded by the request pipeline through Ray's metrics API.

They appear on the same Prometheus endpoint as Ray's and vLLM's (each node's metrics export port, 8080 by
default), under these exported names (what PromQL sees):

- ``ray_dsserve_requests_total`` (counter; model_name, route, status): responses of the routes that name a
  model (chat, completions, tokenize, detokenize).
- ``ray_dsserve_request_duration_seconds`` (histogram; model_name, route, status): arrival to last byte.
- ``ray_dsserve_time_to_first_token_seconds`` (histogram; model_name, route): arrival to first token.
- ``ray_dsserve_inter_token_latency_seconds`` (histogram; model_name, route): mean gap per streamed token.
- ``ray_dsserve_prompt_tokens_total``, ``ray_dsserve_output_tokens_total`` (counters; model_name, route).
- ``ray_dsserve_rejected_requests_total`` (counter; route, reason): refusals by the pipeline, every route.
- ``ray_dsserve_inflight_requests``, ``ray_dsserve_admission_limit`` (gauges, per replica running the
  pipeline: engine replicas in direct mode, ingress replicas in ingress mode; in sequences, see
  :mod:`dsserve.serving.body`).

How a declared name becomes the exported one (ray 2.60.0, read in its source): the ingress declares
``dsserve_requests`` with ``ray.util.metrics.Counter``; the replica's core worker ships it over OTLP to the
node's metrics agent, which re-registers it as ``f"{NAMESPACE}_{name}"`` with ``NAMESPACE = "ray"``
(``ray/_private/telemetry/open_telemetry_metric_recorder.py``); the agent's OpenTelemetry Prometheus reader
exports a monotonic counter through prometheus_client's ``CounterMetricFamily``, which appends ``_total``
(``opentelemetry/exporter/prometheus/__init__.py``; Ray's unit "1" maps to no suffix). Histograms get
``_bucket``/``_sum``/``_count``; gauges keep the name. ``tests/unit/test_metrics.py`` runs that agent-side
code on :data:`METRICS` and checks the result against ``deploy/prometheus/exported-metrics.txt``.
Every series also carries Ray's own labels (``WorkerId``, ``NodeAddress``, ``SessionName``, ...).

Two properties of Ray's pipeline the queries rely on:

- A histogram's ``_sum`` is approximate: the agent rebuilds each histogram from bucket counts, recording
  every observation at its bucket's midpoint. Bucket counts (hence quantiles and the share under 0.5 s,
  an exact bucket edge) are exact; means from ``_sum / _count`` are not.
- The core worker forgets a gauge value once exported, and the agent drops it after two report
  intervals, so the two gauges are re-set every few seconds by a daemon thread (:meth:`RequestMetrics.start`).

Label values are bounded: ``model_name`` is a model this server serves (its base id for a LoRA id) or
``unknown`` when the request never named a valid one; ``route`` is a path of the route table
(:mod:`dsserve.serving.routes`) or ``other``; ``status`` is an
HTTP status; ``reason`` is one of :data:`REJECT_REASONS`. No request ids, prompts or keys.

``status`` is the HTTP status the client got, with two refinements for streams, whose 200 header is sent
before the body: a stream that breaks off with an exception or an in-stream ``error`` event is recorded
with that error's status (500 when it has none), and a client that hangs up before ``data: [DONE]`` is
recorded as 499 (nginx's "client closed request").

Time to first token: for a stream, arrival to the first event that carries generated text (content,
reasoning, tool calls or completion text), as the client sees it where the pipeline runs; for a non-streamed
200 it is the whole response time, since that is when the client gets its first token. Inter-token
latency: per streamed request, (last token event - first token event) / (output tokens - 1), observed
once per request with at least two output tokens (the "TPOT" of most load testers; ray.serve.llm's
stream batching, ``serving.stream_batching_interval_ms``, makes single gaps meaningless in ingress mode).
Token counts come from the response's ``usage``; a stream without a usage chunk (the client did not ask
for ``stream_options.include_usage``) counts one output token per token-carrying event and no prompt
tokens. vLLM's own ``ray_vllm_prompt_tokens_total``/``ray_vllm_generation_tokens_total`` are exact.

Streams are watched at the byte level (:func:`scan_chunk`: a compiled pattern over each chunk, and a JSON
parse only of the chunk that carries ``usage`` or an ``error``), because parsing every event of every
stream was the largest single cost of the old ingress (18 % of its CPU in benchmark B's profile).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LATENCY_BUCKETS_S",
    "ITL_BUCKETS_S",
    "METRICS",
    "MetricSpec",
    "REJECT_REASONS",
    "RequestMetrics",
    "SLO_THRESHOLD_S",
    "exported_names",
    "scan_chunk",
    "usage_of_json",
]

#: Why the pipeline refused a request (admission control; client mistakes are counted by status only).
REJECT_REASONS = ("overloaded", "queue_full", "too_large", "unauthorized", "rate_limited", "engine_unavailable")

#: The SLO threshold the recording rules read from the histograms; it must be a bucket edge of both.
SLO_THRESHOLD_S = 0.5

#: E2E and TTFT buckets: 5 ms to 10 min, with 0.5 s exactly.
LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
#: Inter-token latency buckets: 1 ms to 5 s, with 0.5 s exactly.
ITL_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)

UNKNOWN_MODEL = "unknown"
GAUGE_REFRESH_S = 5.0  # below Ray's 10 s report interval, so each export sees a fresh value


@dataclass(frozen=True)
class MetricSpec:
    """One metric the pipeline declares through ``ray.util.metrics``."""

    name: str  # declared name; exported as ray_<name>[_total|_bucket|_sum|_count]
    kind: Literal["counter", "histogram", "gauge"]
    tags: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()

    def exported(self) -> tuple[str, ...]:
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return (f"{base}_total",)
        if self.kind == "histogram":
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


_REQ_TAGS = ("model_name", "route", "status")
_TOK_TAGS = ("model_name", "route")

REQUESTS = MetricSpec(
    "dsserve_requests",
    "counter",
    _REQ_TAGS,
    "Responses of the model routes (chat, completions, tokenize, detokenize) by model, route "
    "and HTTP status (streams: see docs).",
)
DURATION = MetricSpec(
    "dsserve_request_duration_seconds",
    "histogram",
    _REQ_TAGS,
    "Seconds from arrival at the pipeline to the last byte of the response (E2E).",
    LATENCY_BUCKETS_S,
)
TTFT = MetricSpec(
    "dsserve_time_to_first_token_seconds",
    "histogram",
    _TOK_TAGS,
    "Seconds from arrival to the first generated token sent (non-streamed: the whole response).",
    LATENCY_BUCKETS_S,
)
ITL = MetricSpec(
    "dsserve_inter_token_latency_seconds",
    "histogram",
    _TOK_TAGS,
    "Mean seconds between output tokens of one streamed response (first to last token).",
    ITL_BUCKETS_S,
)
PROMPT_TOKENS = MetricSpec(
    "dsserve_prompt_tokens", "counter", _TOK_TAGS, "Prompt tokens of answered requests, from the response usage."
)
OUTPUT_TOKENS = MetricSpec(
    "dsserve_output_tokens",
    "counter",
    _TOK_TAGS,
    "Output tokens sent: usage.completion_tokens, else token-carrying stream events.",
)
REJECTED = MetricSpec(
    "dsserve_rejected_requests",
    "counter",
    ("route", "reason"),
    "Requests refused by admission control: overloaded, queue_full, too_large, unauthorized, "
    "rate_limited, engine_unavailable.",
)
INFLIGHT = MetricSpec(
    "dsserve_inflight_requests",
    "gauge",
    (),
    "Sequences this replica's pipeline holds now (admitted, not finished; streams until they end).",
)
LIMIT = MetricSpec(
    "dsserve_admission_limit",
    "gauge",
    (),
    "Sequences this replica's pipeline admits at once before answering 503 (absent: unbounded).",
)

#: Every metric the pipeline exports, in documentation order.
METRICS: tuple[MetricSpec, ...] = (
    REQUESTS,
    DURATION,
    TTFT,
    ITL,
    PROMPT_TOKENS,
    OUTPUT_TOKENS,
    REJECTED,
    INFLIGHT,
    LIMIT,
)


def exported_names() -> list[str]:
    """The series names Prometheus scrapes for :data:`METRICS`."""
    return [n for spec in METRICS for n in spec.exported()]


def _ray_metric(spec: MetricSpec) -> Any:
    from ray.util import metrics

    if spec.kind == "counter":
        return metrics.Counter(spec.name, spec.help, tag_keys=spec.tags)
    if spec.kind == "histogram":
        return metrics.Histogram(spec.name, spec.help, boundaries=list(spec.buckets), tag_keys=spec.tags)
    return metrics.Gauge(spec.name, spec.help, tag_keys=spec.tags)


class RequestMetrics:
    """The pipeline's metrics: one per replica, then :meth:`track` per request.

    ``factory`` builds one metric object (``inc``/``observe``/``set``) per :class:`MetricSpec`; the default
    uses ``ray.util.metrics``. Tests pass a recorder. ``inflight`` and ``limit`` are read by the gauge
    thread: the pipeline's admission gate supplies them.
    """

    def __init__(
        self,
        models: Iterable[str],
        *,
        factory: Callable[[MetricSpec], Any] = _ray_metric,
        inflight: Callable[[], int] = lambda: 0,
        limit: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._models = frozenset(models)
        self._m = {spec.name: factory(spec) for spec in METRICS}
        self._inflight, self._limit = inflight, limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- gauges -------------------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        self._m[INFLIGHT.name].set(self._inflight())
        limit = self._limit()
        if limit is not None:
            self._m[LIMIT.name].set(limit)

    def start(self, interval_s: float = GAUGE_REFRESH_S) -> None:
        """Re-set the gauges every ``interval_s`` from a daemon thread (Ray forgets exported gauge values)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                try:
                    self.refresh_gauges()
                except Exception:  # metrics must never take the replica down
                    pass
                if self._stop.wait(interval_s):
                    return

        self._thread = threading.Thread(target=loop, name="dsserve-metrics-gauges", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- per request --------------------------------------------------------------------------------
    def track(self, route: str, started: float) -> Tracker:
        """Track one model-route request that arrived at ``started`` (``time.perf_counter()``)."""
        return Tracker(self, route, started)

    def rejected(self, route: str, reason: str) -> None:
        """Count one refusal (``reason`` in :data:`REJECT_REASONS`)."""
        try:
            self._m[REJECTED.name].inc(1, {"route": route, "reason": reason})
        except Exception:  # metrics must never break a response
            pass

    def model_label(self, model: str | None) -> str:
        """The served model a request names (LoRA ids count for their base model), else ``unknown``."""
        if not model:
            return UNKNOWN_MODEL
        if model in self._models:
            return model
        base = model.split(":", 1)[0]  # ray.serve.llm's get_base_model_id
        return base if base in self._models else UNKNOWN_MODEL

    def _finish(
        self,
        route: str,
        model: str,
        status: int,
        started: float,
        *,
        first: float | None = None,
        last: float | None = None,
        prompt: int = 0,
        output: int = 0,
    ) -> None:
        now = time.perf_counter()
        tags = {"model_name": model, "route": route, "status": str(status)}
        self._m[REQUESTS.name].inc(1, tags)
        self._m[DURATION.name].observe(now - started, tags)
        tok = {"model_name": model, "route": route}
        if first is not None:
            self._m[TTFT.name].observe(first - started, tok)
            if last is not None and output >= 2 and last > first:
                self._m[ITL.name].observe((last - first) / (output - 1), tok)
        if prompt > 0:
            self._m[PROMPT_TOKENS.name].inc(prompt, tok)
        if output > 0:
            self._m[OUTPUT_TOKENS.name].inc(output, tok)


class Tracker:
    """One request, fed the response as the pipeline sends it: :meth:`start`, :meth:`body`, :meth:`finish`."""

    __slots__ = (
        "_m",
        "route",
        "started",
        "model",
        "status",
        "streaming",
        "first",
        "last",
        "events",
        "usage",
        "done",
        "_finished",
    )

    def __init__(self, metrics: RequestMetrics, route: str, started: float) -> None:
        self._m, self.route, self.started = metrics, route, started
        self.model: str | None = None
        self.status = 0
        self.streaming = False
        self.first: float | None = None
        self.last: float | None = None
        self.events = 0
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._finished = False

    def start(self, status: int, streaming: bool) -> None:
        """The response header went out with ``status``; ``streaming`` for server-sent events."""
        self.status, self.streaming = status, streaming

    def body(self, chunk: bytes) -> None:
        """A piece of the response body went out."""
        if self.status != 200 or not chunk:
            return
        if self.streaming:
            tokens, usage, error, done = scan_chunk(chunk)
            if tokens:
                self.last = time.perf_counter()
                if self.first is None:
                    self.first = self.last
                self.events += tokens
            if usage is not None:
                self.usage = usage
            if error is not None:
                self.status = error
            self.done = self.done or done
        else:
            usage = usage_of_json(chunk)
            if usage is not None:
                self.usage = usage

    def finish(self, *, client_gone: bool = False, failed: bool = False) -> None:
        """Record the request once: the app below returned (or raised, ``failed``)."""
        if self._finished:
            return
        self._finished = True
        status = self.status or 500
        if self.streaming and status == 200:
            if failed:
                status = 500
            elif not self.done and client_gone:
                status = 499
        elif failed and not self.status:
            status = 500
        first = self.first
        if not self.streaming and status == 200:
            first = time.perf_counter()
        prompt, output = _usage_counts(self.usage)
        if self.usage is None:
            output = self.events
        try:
            self._m._finish(
                self.route,
                self._m.model_label(self.model),
                status,
                self.started,
                first=first,
                last=self.last,
                prompt=prompt,
                output=output,
            )
        except Exception:  # metrics must never break a response
            pass


def _usage_counts(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0), (output if isinstance(output, int) else 0)


_DECODER = json.JSONDecoder()


def usage_of_json(body: bytes | str) -> dict[str, Any] | None:
    """The top-level ``usage`` object of an OpenAI JSON response, without parsing the whole body.

    Inside JSON strings a quote is always escaped, so ``"usage":{`` can only be a key; the last one is
    the top-level one (vLLM and ray.serve.llm dump it after ``choices``). Falls back to a full parse.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    for key in ('"usage":{', '"usage": {'):
        at = text.rfind(key)
        if at >= 0:
            try:
                usage, _ = _DECODER.raw_decode(text, at + len(key) - 1)
                return usage if isinstance(usage, dict) else None
            except ValueError:
                break
    if '"usage"' not in text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


# A token-carrying event: a choice whose text, content, reasoning or tool calls are non-empty. vLLM and
# ray.serve.llm serialise with pydantic (compact) or json.dumps (", " and ": "), so both spacings match.
_TOKEN = re.compile(rb'"(?:text|content|reasoning_content|reasoning)": ?"[^"]|"tool_calls": ?\[\s*\{')


# An event worth parsing: one whose usage or error is an object (vLLM sends "usage":null on the others).
_OBJECT_OF = re.compile(rb'"(?:usage|error)": ?\{')


def scan_chunk(chunk: bytes | str) -> tuple[int, dict[str, Any] | None, int | None, bool]:
    """(token-carrying events, last usage, error status, saw [DONE]) of one chunk of server-sent events.

    A byte-level scan: one regular-expression pass; JSON is parsed only for an event that carries
    ``usage`` or ``error``. A chunk holds whole events (vLLM sends one per chunk, ray.serve.llm several).
    """
    if isinstance(chunk, str):
        chunk = chunk.encode("utf-8", "surrogatepass")
    tokens = len(_TOKEN.findall(chunk))
    usage = error = None
    if _OBJECT_OF.search(chunk):
        for event in chunk.split(b"\n\n"):
            event = event.strip()
            if not event.startswith(b"data:") or not _OBJECT_OF.search(event):
                continue
            try:
                obj = json.loads(event[5:])
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            err = obj.get("error")
            if err:
                code = err.get("code") if isinstance(err, dict) else None
                error = code if isinstance(code, int) and 400 <= code <= 599 else 500
            u = obj.get("usage")
            if isinstance(u, dict):
                usage = u
    return tokens, usage, error, b"data: [DONE]" in chunk
