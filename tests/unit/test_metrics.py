"""dsserve's request metrics: exported names (through Ray's own agent code), and what one request records
as its response goes out (the pipeline feeds a :class:`Tracker`; tests/unit/test_pipeline.py runs it live).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from dsserve.serving.metrics import (
    ITL_BUCKETS_S,
    LATENCY_BUCKETS_S,
    METRICS,
    SLO_THRESHOLD_S,
    MetricSpec,
    RequestMetrics,
    exported_names,
    scan_chunk,
    usage_of_json,
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


def _metrics(limit: int | None = 4, inflight: int = 0) -> tuple[RequestMetrics, dict[str, list]]:
    sink: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
    return RequestMetrics(
        ["m"], factory=lambda spec: Recorder(spec, sink), inflight=lambda: inflight, limit=lambda: limit
    ), sink


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
    out = subprocess.run([sys.executable, "-c", _AGENT_SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["names"] == sorted(exported_names())
    assert "0.5" in got["les"]  # the SLO bucket edge, exactly as the rules select it
    assert "ray_dsserve_requests_total" in got["names"] and "ray_dsserve_requests_total_total" not in got["names"]


def test_committed_exported_metrics_list_has_ours() -> None:
    lines = (REPO / "deploy/prometheus/exported-metrics.txt").read_text().splitlines()
    at = lines.index("# -- part 2: dsserve (dsserve/serving/metrics.py) --")
    ours = [ln for ln in lines[at + 1 :] if ln.strip() and not ln.startswith("#")]
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


def _sse(*events: Any) -> list[bytes]:
    return [
        "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in batch).encode() for batch in events
    ]


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
TOK = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
REASON = {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}


def test_scan_chunk_counts_token_events_usage_errors_and_done() -> None:
    assert scan_chunk(_sse([ROLE, TOK, REASON])[0]) == (2, None, None, False)
    assert scan_chunk(_sse([FINISH, USAGE, "[DONE]"])[0]) == (0, USAGE["usage"], None, True)
    assert scan_chunk(b'data: {"choices":[{"text":"x"}]}\n\n') == (1, None, None, False)
    assert scan_chunk(b'data: {"choices":[{"delta":{"tool_calls":[{"id":"1"}]}}]}\n\n')[0] == 1
    assert scan_chunk('data: {"error": {"code": 400, "message": "bad"}}\n\n')[2] == 400
    assert scan_chunk('data: {"error": {"message": "boom"}}\n\n')[2] == 500
    assert scan_chunk("data: {not json\n\n: comment\n\n") == (0, None, None, False)


def test_text_that_looks_like_json_keys_is_not_counted() -> None:
    tricky = {"choices": [{"index": 0, "delta": {"content": 'say "content":"x" and "usage":{"a":1}'}}]}
    assert scan_chunk(_sse([tricky])[0]) == (1, None, None, False)


def test_usage_of_json_finds_the_top_level_usage() -> None:
    text = json.dumps({"choices": [{"text": '"usage":{"prompt_tokens": 1}'}], "usage": {"prompt_tokens": 3}})
    assert usage_of_json(text.encode()) == {"prompt_tokens": 3}
    assert usage_of_json(b'{"choices":[],"usage":{"prompt_tokens":2}}') == {"prompt_tokens": 2}
    assert usage_of_json(b'{"choices": []}') is None and usage_of_json(b"not json") is None


def test_non_streamed_200_records_status_latency_ttft_and_usage() -> None:
    m, sink = _metrics()
    t = m.track(CHAT, time.perf_counter())
    t.model = "m"
    t.start(200, streaming=False)
    t.body(
        json.dumps(
            {
                "id": "x",
                "choices": [{"message": {"content": 'say "usage":{"prompt_tokens": 999}'}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5},
            }
        ).encode()
    )
    t.finish()
    t.finish()  # recorded once
    assert sink["dsserve_requests"] == [(1, {"model_name": "m", "route": CHAT, "status": "200"})]
    assert len(sink["dsserve_request_duration_seconds"]) == 1 and len(sink["dsserve_time_to_first_token_seconds"]) == 1
    assert sink["dsserve_prompt_tokens"] == [(7, {"model_name": "m", "route": CHAT})]
    assert sink["dsserve_output_tokens"] == [(5, {"model_name": "m", "route": CHAT})]
    assert "dsserve_inter_token_latency_seconds" not in sink


def test_an_error_records_its_status_and_no_tokens() -> None:
    m, sink = _metrics()
    t = m.track(COMPLETIONS, time.perf_counter())
    t.start(400, streaming=False)
    t.body(b'{"error": {}}')
    t.finish()
    assert sink["dsserve_requests"] == [(1, {"model_name": "unknown", "route": COMPLETIONS, "status": "400"})]
    assert "dsserve_time_to_first_token_seconds" not in sink and "dsserve_output_tokens" not in sink
    m.rejected(COMPLETIONS, "too_large")
    assert sink["dsserve_rejected_requests"] == [(1, {"route": COMPLETIONS, "reason": "too_large"})]


def _stream(m: RequestMetrics, chunks: list[bytes], *, gap_s: float = 0.01, **finish: Any) -> None:
    t = m.track(CHAT, time.perf_counter())
    t.model = "m"
    t.start(200, streaming=True)
    for c in chunks:
        time.sleep(gap_s)
        t.body(c)
    t.finish(**finish)


def test_completed_stream_records_ttft_itl_and_usage_tokens() -> None:
    m, sink = _metrics()
    chunks = _sse([ROLE], [TOK], [TOK, TOK], [TOK], [FINISH, USAGE], ["[DONE]"])
    t0 = time.perf_counter()
    _stream(m, chunks, client_gone=True)
    wall = time.perf_counter() - t0
    assert sink["dsserve_requests"] == [(1, {"model_name": "m", "route": CHAT, "status": "200"})]
    ((ttft, _),) = sink["dsserve_time_to_first_token_seconds"]
    ((e2e, _),) = sink["dsserve_request_duration_seconds"]
    ((itl, _),) = sink["dsserve_inter_token_latency_seconds"]
    assert 0.015 < ttft < e2e <= wall  # the first token came with the second chunk, 2 gaps in
    assert 0 < itl < e2e / 2  # (last - first token event) / (4 usage tokens - 1)
    assert sink["dsserve_output_tokens"] == [(4, {"model_name": "m", "route": CHAT})]
    assert sink["dsserve_prompt_tokens"] == [(9, {"model_name": "m", "route": CHAT})]


def test_stream_without_usage_counts_token_events() -> None:
    m, sink = _metrics()
    _stream(m, _sse([ROLE, TOK], [TOK, REASON], [FINISH], ["[DONE]"]), gap_s=0)
    assert sink["dsserve_output_tokens"] == [(3, {"model_name": "m", "route": CHAT})]
    assert "dsserve_prompt_tokens" not in sink


def test_client_hanging_up_mid_stream_is_499() -> None:
    m, sink = _metrics()
    _stream(m, _sse([ROLE], [TOK]), gap_s=0, client_gone=True)
    assert sink["dsserve_requests"][0][1]["status"] == "499"


def test_engine_failure_mid_stream_is_500() -> None:
    m, sink = _metrics()
    _stream(m, _sse([ROLE], [TOK]), gap_s=0, failed=True)
    assert sink["dsserve_requests"][0][1]["status"] == "500"
    assert len(sink["dsserve_time_to_first_token_seconds"]) == 1  # the client did get a first token


def test_error_event_in_stream_records_its_status() -> None:
    m, sink = _metrics()
    _stream(m, _sse([ROLE], [{"error": {"code": 400, "message": "too long"}}], ["[DONE]"]), gap_s=0)
    assert sink["dsserve_requests"][0][1]["status"] == "400"


def test_gauges_are_refreshed_periodically() -> None:
    m, sink = _metrics(limit=320, inflight=3)
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
