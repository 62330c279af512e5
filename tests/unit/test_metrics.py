"""dsserve's ingress metrics: exported names (through Ray's own agent code), what each request records,
and the real ingress routes with the hook in, streams included (no Ray runtime: the engine call is faked).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest

from dsserve.serving.admission import AdmissionGate
from dsserve.serving.metrics import (
    ITL_BUCKETS_S,
    LATENCY_BUCKETS_S,
    METRICS,
    SLO_THRESHOLD_S,
    IngressMetrics,
    MetricSpec,
    _scan_sse,
    _usage_of_json,
    exported_names,
)
from tests.conftest import REPO

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


class Recorder:
    """Stands in for ray.util.metrics objects; keeps every call."""

    calls: dict[str, list[tuple[float, dict[str, str]]]]

    def __init__(self, spec: MetricSpec, sink: dict[str, list[tuple[float, dict[str, str]]]]) -> None:
        self.spec, self.sink = spec, sink

    def inc(self, value: float, tags: dict[str, str]) -> None:
        assert set(tags) == set(self.spec.tags), (self.spec.name, tags)
        self.sink[self.spec.name].append((value, dict(tags)))

    observe = inc

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.sink[self.spec.name].append((value, dict(tags or {})))


def _metrics(limit: int | None = 4) -> tuple[IngressMetrics, dict[str, list[tuple[float, dict[str, str]]]]]:
    sink: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
    return IngressMetrics(["m"], limit, factory=lambda spec: Recorder(spec, sink)), sink


# -- names ----------------------------------------------------------------------------------------------------

_AGENT_SCRIPT = r"""
import json, sys
import prometheus_client
from ray._private.telemetry.open_telemetry_metric_recorder import OpenTelemetryMetricRecorder
from dsserve.serving.metrics import METRICS

rec = OpenTelemetryMetricRecorder()
for spec in METRICS:
    tags = {t: "x" for t in spec.tags}
    if spec.kind == "counter":
        rec.register_counter_metric(spec.name, spec.help)
        rec.set_metric_value(spec.name, tags, 2.0)
    elif spec.kind == "gauge":
        rec.register_gauge_metric(spec.name, spec.help)
        rec.set_metric_value(spec.name, tags, 3.0)
    else:
        rec.register_histogram_metric(spec.name, spec.help, list(spec.buckets))
        counts = [0] * (len(spec.buckets) + 1)
        counts[list(spec.buckets).index(0.5)] = 1
        rec.record_histogram_aggregated_batch(spec.name, [{"tags": tags, "bucket_counts": counts}])
text = prometheus_client.generate_latest().decode()
names = sorted({line.split("{")[0].split(" ")[0] for line in text.splitlines()
                if line.startswith("ray_")})
les = sorted({line.split('le="')[1].split('"')[0] for line in text.splitlines() if 'le="' in line})
print(json.dumps({"names": names, "les": les}))
"""


def test_exported_names_are_what_rays_metrics_agent_exports() -> None:
    """Ray's agent-side exporter (the code behind port 8080) turns our declared names into these.

    The worker-to-agent hop (OTLP, names unchanged) is not exercised here; the e2e test sees the names live.
    """
    out = subprocess.run([sys.executable, "-c", _AGENT_SCRIPT], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["names"] == sorted(exported_names())
    assert "0.5" in got["les"]  # the SLO bucket edge, exactly as the rules select it
    assert "ray_dsserve_requests_total" in got["names"] and "ray_dsserve_requests_total_total" not in got["names"]


def test_committed_exported_metrics_list_has_ours() -> None:
    lines = (REPO / "deploy/prometheus/exported-metrics.txt").read_text().splitlines()
    at = lines.index("# -- part 2: dsserve (dsserve/metrics.py) --")
    ours = [ln for ln in lines[at + 1:] if ln.strip() and not ln.startswith("#")]
    assert ours == exported_names(), "deploy/prometheus/exported-metrics.txt part 2 is stale"
    scraped = [ln for ln in lines[:at] if ln.strip() and not ln.startswith("#")]
    assert scraped == sorted(set(scraped)) and not set(scraped) & set(ours)
    assert "ray_vllm_time_to_first_token_seconds_bucket" in scraped


def test_buckets_include_the_slo_threshold_exactly() -> None:
    assert SLO_THRESHOLD_S == 0.5 and 0.5 in LATENCY_BUCKETS_S and 0.5 in ITL_BUCKETS_S
    for b in (LATENCY_BUCKETS_S, ITL_BUCKETS_S):
        assert list(b) == sorted(set(b)) and b[0] > 0


def test_labels_are_bounded() -> None:
    allowed = {"model_name", "route", "status", "reason"}
    for spec in METRICS:
        assert set(spec.tags) <= allowed, spec
    m, _ = _metrics()
    assert m.model_label("m") == "m" and m.model_label("m:my-lora") == "m"
    assert m.model_label("gpt-4-someone-typed") == "unknown" and m.model_label(None) == "unknown"


# -- what one request records ----------------------------------------------------------------------------------

def _names(sink: dict[str, list]) -> dict[str, int]:
    return {k: len(v) for k, v in sink.items() if v}


def test_non_streamed_200_records_status_latency_ttft_and_usage() -> None:
    from starlette.responses import JSONResponse

    m, sink = _metrics()
    body = {"id": "x", "choices": [{"message": {"content": 'say "usage":{"prompt_tokens": 999}'}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}
    with m.request("chat") as r:
        assert m.inflight == 1
        resp = r.done(JSONResponse(body), "m")
    assert m.inflight == 0
    assert sink["dsserve_requests"] == [(1, {"model_name": "m", "route": CHAT, "status": "200"})]
    assert len(sink["dsserve_request_duration_seconds"]) == 1 and len(sink["dsserve_time_to_first_token_seconds"]) == 1
    assert sink["dsserve_prompt_tokens"] == [(7, {"model_name": "m", "route": CHAT})]
    assert sink["dsserve_output_tokens"] == [(5, {"model_name": "m", "route": CHAT})]
    assert "dsserve_inter_token_latency_seconds" not in sink
    assert json.loads(resp.body) == body  # untouched


@pytest.mark.parametrize("status,reason", [(401, "unauthorized"), (413, "too_large"), (400, None), (404, None)])
def test_early_errors_record_unknown_model_and_admission_reasons(status: int, reason: str | None) -> None:
    from starlette.responses import JSONResponse

    m, sink = _metrics()
    with m.request("completions") as r:
        r.done(JSONResponse({"error": {}}, status_code=status))
    assert sink["dsserve_requests"] == [(1, {"model_name": "unknown", "route": COMPLETIONS, "status": str(status)})]
    assert "dsserve_time_to_first_token_seconds" not in sink and "dsserve_output_tokens" not in sink
    expected = [(1, {"route": COMPLETIONS, "reason": reason})] if reason else []
    assert sink.get("dsserve_rejected_requests", []) == expected


def test_a_handler_exception_is_recorded_as_500_and_reraised() -> None:
    m, sink = _metrics()
    with pytest.raises(ZeroDivisionError):
        with m.request("chat"):
            1 / 0  # noqa: B018
    assert sink["dsserve_requests"] == [(1, {"model_name": "unknown", "route": CHAT, "status": "500"})]
    assert m.inflight == 0


def _sse(*events: Any) -> list[str]:
    return ["".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in batch) for batch in events]


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
TOK = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
REASON = {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}


def test_scan_sse_counts_token_events_usage_errors_and_done() -> None:
    chunk = _sse([ROLE, TOK, REASON])[0]
    assert _scan_sse(chunk) == (2, None, None, False)
    assert _scan_sse(_sse([FINISH, USAGE, "[DONE]"])[0]) == (0, USAGE["usage"], None, True)
    assert _scan_sse(b'data: {"choices":[{"text":"x"}]}\n\n') == (1, None, None, False)
    assert _scan_sse('data: {"error": {"code": 400, "message": "bad"}}\n\n')[2] == 400
    assert _scan_sse('data: {"error": {"message": "boom"}}\n\n')[2] == 500
    assert _scan_sse("data: {not json\n\n: comment\n\n") == (0, None, None, False)


def test_usage_of_json_finds_the_top_level_usage() -> None:
    text = json.dumps({"choices": [{"text": '"usage":{"prompt_tokens": 1}'}], "usage": {"prompt_tokens": 3}})
    assert _usage_of_json(text.encode()) == {"prompt_tokens": 3}
    assert _usage_of_json(b'{"choices": []}') is None and _usage_of_json(b"not json") is None


async def _slow(chunks: list[str], gap_s: float = 0.01, fail_at: int | None = None):
    for i, c in enumerate(chunks):
        if i == fail_at:
            raise RuntimeError("engine died")
        await asyncio.sleep(gap_s)
        yield c


def _stream_through(m: IngressMetrics, gate: AdmissionGate, chunks: list[str], *, consume: int | None = None,
                    fail_at: int | None = None) -> list[str]:
    """What the ingress does: gate wraps the engine stream, metrics wrap the gate; then a client reads."""
    from starlette.responses import StreamingResponse

    async def run() -> list[str]:
        got: list[str] = []
        assert gate.try_acquire()
        resp = StreamingResponse(_slow(chunks, fail_at=fail_at), media_type="text/event-stream")
        resp.body_iterator = gate.hold_while_streaming(resp.body_iterator)
        with m.request("chat") as r:
            resp = r.done(resp, "m")
        it = resp.body_iterator
        try:
            async for c in it:
                got.append(c)
                if consume is not None and len(got) >= consume:
                    break
        finally:
            await it.aclose()  # what Starlette does when the client disconnects
            # released right then, as with the gate alone, not later when the event loop collects garbage
            assert gate.inflight == 0, "the admission slot was not released when the stream was closed"
        return got

    return asyncio.run(run())


def test_completed_stream_records_ttft_itl_and_usage_tokens() -> None:
    m, sink = _metrics()
    gate = AdmissionGate(1)
    chunks = _sse([ROLE], [TOK], [TOK, TOK], [TOK], [FINISH, USAGE], ["[DONE]"])
    t0 = time.perf_counter()
    assert _stream_through(m, gate, chunks) == chunks
    wall = time.perf_counter() - t0
    assert gate.inflight == 0 and m.inflight == 0
    assert sink["dsserve_requests"] == [(1, {"model_name": "m", "route": CHAT, "status": "200"})]
    (ttft, _), = sink["dsserve_time_to_first_token_seconds"]
    (e2e, _), = sink["dsserve_request_duration_seconds"]
    (itl, _), = sink["dsserve_inter_token_latency_seconds"]
    assert 0.015 < ttft < e2e <= wall  # the first token came with the second chunk, 2 gaps in
    assert 0 < itl < e2e / 2  # (last - first token event) / (4 usage tokens - 1)
    assert sink["dsserve_output_tokens"] == [(4, {"model_name": "m", "route": CHAT})]
    assert sink["dsserve_prompt_tokens"] == [(9, {"model_name": "m", "route": CHAT})]


def test_stream_without_usage_counts_token_events() -> None:
    m, sink = _metrics()
    _stream_through(m, AdmissionGate(1), _sse([ROLE, TOK], [TOK, REASON], [FINISH], ["[DONE]"]))
    assert sink["dsserve_output_tokens"] == [(3, {"model_name": "m", "route": CHAT})]
    assert "dsserve_prompt_tokens" not in sink


def test_client_hanging_up_mid_stream_is_499_and_frees_the_slot() -> None:
    m, sink = _metrics()
    gate = AdmissionGate(1)
    got = _stream_through(m, gate, _sse([ROLE], [TOK], [TOK], [TOK], ["[DONE]"]), consume=2)
    assert len(got) == 2
    assert gate.inflight == 0 and m.inflight == 0
    assert sink["dsserve_requests"][0][1]["status"] == "499"


def test_engine_failure_mid_stream_is_500_frees_the_slot_and_propagates() -> None:
    m, sink = _metrics()
    gate = AdmissionGate(1)
    with pytest.raises(RuntimeError, match="engine died"):
        _stream_through(m, gate, _sse([ROLE], [TOK], [TOK]), fail_at=2)
    assert gate.inflight == 0 and m.inflight == 0
    assert sink["dsserve_requests"][0][1]["status"] == "500"
    assert len(sink["dsserve_time_to_first_token_seconds"]) == 1  # the client did get a first token


def test_error_event_in_stream_records_its_status() -> None:
    m, sink = _metrics()
    _stream_through(m, AdmissionGate(1), _sse([ROLE], [{"error": {"code": 400, "message": "too long"}}],
                                               ["[DONE]"]))
    assert sink["dsserve_requests"][0][1]["status"] == "400"


def test_gauges_are_refreshed_periodically() -> None:
    m, sink = _metrics(limit=320)
    m.inflight = 3
    m.start(interval_s=0.05)
    try:
        time.sleep(0.3)
    finally:
        m.stop()
    sets = sink["dsserve_inflight_requests"]
    assert len(sets) >= 3 and sets[-1][0] == 3
    assert sink["dsserve_admission_limit"][-1][0] == 320
    unbounded, sink2 = _metrics(limit=None)
    unbounded.refresh_gauges()
    assert "dsserve_admission_limit" not in sink2 and sink2["dsserve_inflight_requests"] == [(0, {})]


# -- the real ingress routes, engine faked -----------------------------------------------------------------------

def _ingress(limit: int, engine: Any) -> tuple[Any, dict[str, list]]:
    from dsserve.serving.ingress import DsserveIngress

    ing = DsserveIngress.__new__(DsserveIngress)  # no Ray: only what chat/completions use
    ing._gate = AdmissionGate(limit)
    ing._max_body_bytes = 64 * 1024
    ing._api_keys = ()
    ing._model_cards = {"m": object()}
    ing._metrics, sink = _metrics(limit)
    ing._process_llm_request = engine
    return ing, sink


def _request(body: Any, path: str = CHAT) -> Any:
    from starlette.requests import Request

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = [False]

    async def receive() -> dict[str, Any]:
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "scheme": "http",
             "server": ("127.0.0.1", 8000), "headers": [(b"content-type", b"application/json"),
                                                      (b"content-length", str(len(raw)).encode())]}
    return Request(scope, receive)


CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_ingress_records_answered_refused_and_invalid_requests() -> None:
    from ray.serve.exceptions import BackPressureError
    from starlette.responses import JSONResponse

    calls = {"n": 0}

    async def engine(body: Any, call_method: str, raw_request: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
        return JSONResponse({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})

    ing, sink = _ingress(1, engine)

    async def run() -> list[Any]:
        out = [await ing.chat(_request(CHAT_BODY))]  # 200
        out.append(await ing.chat(_request(CHAT_BODY)))  # Serve's queue full: 503 queue_full
        ing._gate.try_acquire()  # hold the only slot: the next is overloaded
        out.append(await ing.completions(_request({"model": "m", "prompt": "x"}, COMPLETIONS)))
        ing._gate.release()
        out.append(await ing.chat(_request(b"{not json")))  # 400
        out.append(await ing.chat(_request({**CHAT_BODY, "model": "nope"})))  # 404
        return out

    ok, queue_full, overloaded, bad, unknown = asyncio.run(run())
    assert [r.status_code for r in (ok, queue_full, overloaded, bad, unknown)] == [200, 503, 503, 400, 404]
    # error bodies and headers are the ingress's own, unchanged
    assert json.loads(overloaded.body)["error"]["code"] == "overloaded" and overloaded.headers["retry-after"] == "1"
    assert json.loads(unknown.body)["error"]["code"] == "model_not_found"
    statuses = [(t["model_name"], t["route"], t["status"]) for _, t in sink["dsserve_requests"]]
    assert statuses == [("m", CHAT, "200"), ("m", CHAT, "503"), ("m", COMPLETIONS, "503"),
                        ("unknown", CHAT, "400"), ("unknown", CHAT, "404")]
    assert [t["reason"] for _, t in sink["dsserve_rejected_requests"]] == ["queue_full", "overloaded"]
    assert sink["dsserve_output_tokens"] == [(3, {"model_name": "m", "route": CHAT})]
    assert ing._gate.inflight == 0 and ing._metrics.inflight == 0


def test_ingress_stream_keeps_its_slot_until_the_end_then_records() -> None:
    from starlette.responses import StreamingResponse

    chunks = _sse([ROLE], [TOK], [TOK], [FINISH], ["[DONE]"])

    async def engine(body: Any, call_method: str, raw_request: Any) -> Any:
        return StreamingResponse(_slow(chunks), media_type="text/event-stream")

    ing, sink = _ingress(1, engine)

    async def run() -> None:
        resp = await ing.chat(_request({**CHAT_BODY, "stream": True}))
        assert ing._gate.inflight == 1 and "dsserve_requests" not in sink  # held while streaming
        assert [c async for c in resp.body_iterator] == chunks
        assert ing._gate.inflight == 0

    asyncio.run(run())
    assert sink["dsserve_requests"] == [(1, {"model_name": "m", "route": CHAT, "status": "200"})]
    assert sink["dsserve_output_tokens"] == [(2, {"model_name": "m", "route": CHAT})]
    assert len(sink["dsserve_inter_token_latency_seconds"]) == 1
