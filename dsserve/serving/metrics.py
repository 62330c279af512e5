"""dsserve's own request metrics, recorded by the OpenAI ingress through Ray's metrics API.

They appear on the same Prometheus endpoint as Ray's and vLLM's (each node's metrics export port, 8080 by
default), under these exported names (what PromQL sees):

- ``ray_dsserve_requests_total`` (counter; model_name, route, status): chat/completions responses.
- ``ray_dsserve_request_duration_seconds`` (histogram; model_name, route, status): arrival to last byte.
- ``ray_dsserve_time_to_first_token_seconds`` (histogram; model_name, route): arrival to first token.
- ``ray_dsserve_inter_token_latency_seconds`` (histogram; model_name, route): mean gap per streamed token.
- ``ray_dsserve_prompt_tokens_total``, ``ray_dsserve_output_tokens_total`` (counters; model_name, route).
- ``ray_dsserve_rejected_requests_total`` (counter; route, reason): admission-control refusals.
- ``ray_dsserve_inflight_requests``, ``ray_dsserve_admission_limit`` (gauges, per ingress replica).

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
  intervals, so the two gauges are re-set every few seconds by a daemon thread (:meth:`IngressMetrics.start`).

Label values are bounded: ``model_name`` is a model this server serves (its base id for a LoRA id) or
``unknown`` when the request never named a valid one; ``route`` is one of two paths; ``status`` is an
HTTP status; ``reason`` is one of :data:`REJECT_REASONS`. No request ids, prompts or keys.

``status`` is the HTTP status the client got, with two refinements for streams, whose 200 header is sent
before the body: a stream that breaks off with an exception or an in-stream ``error`` event is recorded
with that error's status (500 when it has none), and a client that hangs up before ``data: [DONE]`` is
recorded as 499 (nginx's "client closed request").

Time to first token: for a stream, arrival to the first event that carries generated text (content,
reasoning, tool calls or completion text), as the client sees it at the ingress; for a non-streamed
200 it is the whole response time, since that is when the client gets its first token. Inter-token
latency: per streamed request, (last token event - first token event) / (output tokens - 1), observed
once per request with at least two output tokens (the "TPOT" of most load testers; ray.serve.llm's
stream batching, ``serving.stream_batching_interval_ms``, makes single gaps meaningless at the ingress).
Token counts come from the response's ``usage``; a stream without a usage chunk (the client did not ask
for ``stream_options.include_usage``) counts one output token per token-carrying event and no prompt
tokens. vLLM's own ``ray_vllm_prompt_tokens_total``/``ray_vllm_generation_tokens_total`` are exact.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "IngressMetrics",
    "MetricSpec",
    "METRICS",
    "REJECT_REASONS",
    "ROUTES",
    "LATENCY_BUCKETS_S",
    "ITL_BUCKETS_S",
    "SLO_THRESHOLD_S",
    "exported_names",
]

#: Path label of each ingress call method.
ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}

#: Why admission control refused a request.
REJECT_REASONS = ("overloaded", "queue_full", "too_large", "unauthorized", "rate_limited", "engine_unavailable")

#: The SLO threshold the recording rules read from the histograms; it must be a bucket edge of both.
SLO_THRESHOLD_S = 0.5

#: E2E and TTFT buckets: 5 ms to 10 min, with 0.5 s exactly.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
                     2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Inter-token latency buckets: 1 ms to 5 s, with 0.5 s exactly.
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)

UNKNOWN_MODEL = "unknown"
GAUGE_REFRESH_S = 5.0  # below Ray's 10 s report interval, so each export sees a fresh value


@dataclass(frozen=True)
class MetricSpec:
    """One metric the ingress declares through ``ray.util.metrics``."""

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

REQUESTS = MetricSpec("dsserve_requests", "counter", _REQ_TAGS,
                      "Chat and completions responses by model, route and HTTP status (streams: see docs).")
DURATION = MetricSpec("dsserve_request_duration_seconds", "histogram", _REQ_TAGS,
                      "Seconds from arrival at the ingress to the last byte of the response (E2E).",
                      LATENCY_BUCKETS_S)
TTFT = MetricSpec("dsserve_time_to_first_token_seconds", "histogram", _TOK_TAGS,
                  "Seconds from arrival to the first generated token sent (non-streamed: the whole response).",
                  LATENCY_BUCKETS_S)
ITL = MetricSpec("dsserve_inter_token_latency_seconds", "histogram", _TOK_TAGS,
                 "Mean seconds between output tokens of one streamed response (first to last token).",
                 ITL_BUCKETS_S)
PROMPT_TOKENS = MetricSpec("dsserve_prompt_tokens", "counter", _TOK_TAGS,
                           "Prompt tokens of answered requests, from the response usage.")
OUTPUT_TOKENS = MetricSpec("dsserve_output_tokens", "counter", _TOK_TAGS,
                           "Output tokens sent: usage.completion_tokens, else token-carrying stream events.")
REJECTED = MetricSpec("dsserve_rejected_requests", "counter", ("route", "reason"),
                      "Requests refused by admission control: overloaded, queue_full, too_large, unauthorized, "
                      "rate_limited.")
INFLIGHT = MetricSpec("dsserve_inflight_requests", "gauge", (),
                      "Chat and completions requests this ingress replica holds now (streams until they end).")
LIMIT = MetricSpec("dsserve_admission_limit", "gauge", (),
                   "Requests this ingress replica admits at once before answering 503 (absent: unbounded).")

#: Every metric the ingress exports, in documentation order.
METRICS: tuple[MetricSpec, ...] = (REQUESTS, DURATION, TTFT, ITL, PROMPT_TOKENS, OUTPUT_TOKENS, REJECTED,
                                   INFLIGHT, LIMIT)


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


class IngressMetrics:
    """The ingress's metrics: create one in the ingress ``__init__``, then :meth:`request` per request.

    ``factory`` builds one metric object (``inc``/``observe``/``set``) per :class:`MetricSpec`; the default
    uses ``ray.util.metrics``. Tests pass a recorder.
    """

    def __init__(self, models: Iterable[str], admission_limit: int | None, *,
                 factory: Callable[[MetricSpec], Any] = _ray_metric) -> None:
        self._models = frozenset(models)
        self._limit = admission_limit
        self._m = {spec.name: factory(spec) for spec in METRICS}
        self.inflight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- gauges -------------------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        self._m[INFLIGHT.name].set(self.inflight)
        if self._limit is not None:
            self._m[LIMIT.name].set(self._limit)

    def start(self, interval_s: float = GAUGE_REFRESH_S) -> None:
        """Re-set the gauges every ``interval_s`` from a daemon thread (Ray forgets exported gauge values)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                try:
                    self.refresh_gauges()
                except Exception:  # metrics must never take the ingress down
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
    def request(self, call_method: str) -> _Request:
        """Track one chat/completions request from now: ``with metrics.request("chat") as m: ... m.done(r)``."""
        self.inflight += 1
        return _Request(self, ROUTES.get(call_method, call_method), time.perf_counter())

    def rejected(self, call_method: str, reason: str) -> None:
        """Count one admission-control refusal (``reason`` in :data:`REJECT_REASONS`)."""
        self._m[REJECTED.name].inc(1, {"route": ROUTES.get(call_method, call_method), "reason": reason})

    def model_label(self, model: str | None) -> str:
        """The served model a request names (LoRA ids count for their base model), else ``unknown``."""
        if not model:
            return UNKNOWN_MODEL
        if model in self._models:
            return model
        base = model.split(":", 1)[0]  # ray.serve.llm's get_base_model_id
        return base if base in self._models else UNKNOWN_MODEL

    def _finish(self, route: str, model: str, status: int, started: float, *, first: float | None = None,
                last: float | None = None, prompt: int = 0, output: int = 0) -> None:
        now = time.perf_counter()
        self.inflight -= 1
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

    async def _stream(self, body: AsyncIterator[Any], route: str, model: str,
                      started: float) -> AsyncIterator[Any]:
        """Pass a streamed body through, timing token events; record the request when it ends.

        It wraps the admission gate's ``hold_while_streaming`` iterator and closes it in ``finally``
        before recording, so the slot is released exactly when it was without this wrapper: when the
        stream ends, fails, or is closed (client gone).
        """
        status, done = 200, False
        first = last = None
        events = 0
        usage: dict[str, Any] | None = None
        try:
            async for chunk in body:
                tokens, chunk_usage, error, chunk_done = _scan_sse(chunk)
                if tokens:
                    last = time.perf_counter()
                    if first is None:
                        first = last
                    events += tokens
                if chunk_usage is not None:
                    usage = chunk_usage
                if error is not None:
                    status = error
                done = done or chunk_done
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # closed or cancelled: the client went away
            if not done:
                status = 499
            raise
        except BaseException:  # a failure upstream, after the 200 header went out
            if status == 200:
                status = 500
            raise
        finally:
            try:
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                try:
                    prompt, output = _usage_counts(usage)
                    self._finish(route, model, status, started, first=first, last=last, prompt=prompt,
                                 output=output if usage is not None else events)
                except Exception:
                    pass


class _Request:
    """One tracked request; :meth:`done` records it (or arranges for its stream to be recorded)."""

    __slots__ = ("_metrics", "_route", "_started", "_done")

    def __init__(self, metrics: IngressMetrics, route: str, started: float) -> None:
        self._metrics, self._route, self._started, self._done = metrics, route, started, False

    def __enter__(self) -> _Request:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if not self._done:  # the handler raised (or returned without done()): the client got a 500
            self._done = True
            try:
                self._metrics._finish(self._route, UNKNOWN_MODEL, 500, self._started)
            except Exception:
                pass
        return False

    def done(self, response: Any, model: str | None = None) -> Any:
        """Record ``response`` (``model`` is the request's ``model`` field once parsed) and return it.

        A streamed response is recorded when its body ends; its ``body_iterator`` is wrapped here.
        """
        if self._done:
            return response
        self._done = True
        m = self._metrics
        label, status = m.model_label(model), int(getattr(response, "status_code", 500))
        body_iterator = getattr(response, "body_iterator", None)
        if body_iterator is not None and status == 200:
            response.body_iterator = m._stream(body_iterator, self._route, label, self._started)
            return response
        first, prompt, output = None, 0, 0
        if status == 200:
            first = time.perf_counter()
            prompt, output = _usage_counts(_usage_of_json(getattr(response, "body", b"")))
        try:
            m._finish(self._route, label, status, self._started, first=first, prompt=prompt, output=output)
            if model is None and status in _REFUSALS:  # refused before the body was parsed
                m.rejected(self._route, _REFUSALS[status])
        except Exception:  # metrics must never break a response
            pass
        return response


#: Statuses the ingress answers before parsing the body, and the ``reason`` each is counted under.
_REFUSALS = {401: "unauthorized", 413: "too_large", 429: "rate_limited"}


def _usage_counts(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0), (output if isinstance(output, int) else 0)


_DECODER = json.JSONDecoder()


def _usage_of_json(body: bytes | str) -> dict[str, Any] | None:
    """The top-level ``usage`` object of an OpenAI JSON response, without parsing the whole body.

    Inside JSON strings a quote is always escaped, so ``"usage":{`` can only be a key; the last one is
    the top-level one (ray.serve.llm dumps it after ``choices``). Falls back to a full parse.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    at = text.rfind('"usage":{')
    if at >= 0:
        try:
            usage, _ = _DECODER.raw_decode(text, at + len('"usage":'))
            return usage if isinstance(usage, dict) else None
        except ValueError:
            pass
    try:
        data = json.loads(text)
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def _scan_sse(chunk: Any) -> tuple[int, dict[str, Any] | None, int | None, bool]:
    """(token-carrying events, last usage, error status, saw [DONE]) of one body chunk of SSE events.

    ray.serve.llm yields whole events, several per chunk when it batches them.
    """
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        chunk = bytes(chunk).decode("utf-8", "replace")
    tokens, usage, error, done = 0, None, None, False
    for event in chunk.split("\n\n"):
        event = event.strip()
        if not event.startswith("data:"):
            continue
        payload = event[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            obj = json.loads(payload)
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
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("text"):
                tokens += 1
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
                tokens += 1
    return tokens, usage, error, done
