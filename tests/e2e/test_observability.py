"""Observability on the real stack: a real Prometheus scrapes it, and every rule and panel query has data.

Against the default local-cpu stack (no profile marker): a local Prometheus (dsserve/local_prometheus.py,
Debian's binary, our rules) scrapes Ray's metrics port of the profile (observability.metrics_export_port),
traffic goes in (chat and completions, streamed and not, a few client errors and one refusal), and then:

- every series name a recording rule, alert or dashboard reads is one the stack exports (a missing one
  fails the test, naming it);
- every rule is loaded and evaluates without error;
- every recording-rule expression and every dashboard panel and variable query returns data, except the
  panels of ALLOWED_EMPTY, each with its reason;
- dsserve's own metrics count the requests this test sent.

A light request every 2 s runs throughout: Ray drops a gauge its source stops refreshing (two report
intervals, 20 s), and vLLM refreshes its gauges only while its engine steps.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from dsserve.app import admission_limit
from dsserve.config import load_spec
from dsserve.local_prometheus import LocalPrometheus
from dsserve.render.dashboards import dashboards, for_prometheus, panel_queries, variable_queries
from dsserve.render.prometheus_rules import ALERTS
from dsserve.render.queries import ONLY_WITH_SPECULATION, metric_names, recorded_names, recording_rules
from tests.e2e.conftest import PROFILE, RunningStack

pytestmark = pytest.mark.e2e

MODEL = "tiny-deepseek-v2"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 8, "ignore_eos": True}
COMPLETION = {"model": MODEL, "prompt": "One, two,", "max_tokens": 8, "ignore_eos": True}
DATA_DEADLINE_S = 180.0

#: (dashboard file, panel title) -> why the panel may legitimately show nothing on this stack.
ALLOWED_EMPTY = {
    (
        "dsserve-engine.json",
        "Prefix-cache hit rate",
    ): "vLLM turns prefix caching off for the MLA model on CPU (ray_vllm_cache_config_info "
    'enable_prefix_caching=False), so there is no source="local_cache_hit" series',
    ("dsserve-engine.json", "MTP draft acceptance"): "no engine.speculative here (the tiny model has no MTP module)",
    ("dsserve-engine.json", "MTP tokens per step"): "no engine.speculative here (the tiny model has no MTP module)",
}
#: Why series vLLM exports only with speculative decoding are absent here, and the rules on them are empty.
WITHOUT_SPECULATION = "no engine.speculative on this stack: vLLM exports its spec-decode counters only with it"


@dataclass
class Observed:
    prom: LocalPrometheus
    sent: dict[str, int]
    stop: threading.Event = field(default_factory=threading.Event)
    keepalive: threading.Thread | None = None

    def close(self) -> None:
        self.stop.set()
        if self.keepalive is not None:
            self.keepalive.join(timeout=30)
        self.prom.stop()


_OBSERVED: dict[tuple[Any, ...], Observed] = {}


@pytest.fixture(scope="module")
def _close_observed():
    yield
    while _OBSERVED:
        _OBSERVED.popitem()[1].close()


def _drive_traffic(client: httpx.Client) -> dict[str, int]:
    sent = {"ok": 0, "streamed": 0, "400": 0, "404": 0, "413": 0}
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)):
        for _ in range(3):
            r = client.post(path, json=body)
            assert r.status_code == 200, r.text
            sent["ok"] += 1
        for usage in (False, True):
            # 64 tokens span several of ray.serve.llm's 50 ms stream batches; an 8-token answer arrives in one
            # chunk, where the ingress cannot see a gap between tokens and records no inter-token latency.
            req = {
                **body,
                "max_tokens": 64,
                "stream": True,
                **({"stream_options": {"include_usage": True}} if usage else {}),
            }
            with client.stream("POST", path, json=req) as r:
                assert r.status_code == 200
                text = "".join(r.iter_text())
            assert text.rstrip().endswith("data: [DONE]"), text[-200:]
            sent["ok"] += 1
            sent["streamed"] += 1
    r = client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    sent["400"] += 1
    r = client.post("/v1/completions", json={**COMPLETION, "model": "no-such-model"})
    assert r.status_code == 404
    sent["404"] += 1
    # over api.max_body_bytes (8 MiB): refused from its Content-Length, before the body is read. The server
    # may close the connection while the client still uploads; the refusal is counted either way (checked
    # in test_dsserve_metrics_count_what_was_sent).
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (8 * 1024 * 1024 + 1024)}]}
    try:
        r = client.post("/v1/chat/completions", json=big)
        assert r.status_code == 413, r.text[:300]
    except httpx.TransportError:
        pass
    sent["413"] += 1
    return sent


def _keepalive(base_url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        while not stop.wait(2.0):
            try:
                c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
            except httpx.HTTPError:
                pass


def _wait_for(prom: LocalPrometheus, exprs: list[str], deadline_s: float) -> list[str]:
    """Poll until each expression returns data; return those that still do not."""
    deadline = time.monotonic() + deadline_s
    missing = list(exprs)
    while missing and time.monotonic() < deadline:
        missing = [e for e in missing if not prom.query(e)]
        if missing:
            time.sleep(2.0)
    return missing


@pytest.fixture
def observed(stack: RunningStack, client: httpx.Client, _close_observed: None) -> Observed:
    """Prometheus on the running stack, with this module's traffic scraped and the rules evaluated."""
    key = (stack.key, stack.proc.pid)
    if key in _OBSERVED:
        return _OBSERVED[key]
    spec = load_spec(PROFILE)
    prom = LocalPrometheus.for_spec(spec, scrape_interval_s=2.0)  # fails naming install-system-deps.sh if absent
    prom.start()
    obs = Observed(prom, {})
    _OBSERVED[key] = obs
    assert not _wait_for(prom, ['up{job="dsserve-ray"} == 1'], 60), (
        f"Prometheus cannot scrape 127.0.0.1:{spec.observability.metrics_export_port}:\n{prom.log_tail()}"
    )
    obs.sent = _drive_traffic(client)
    obs.keepalive = threading.Thread(target=_keepalive, args=(stack.base_url, obs.stop), daemon=True)
    obs.keepalive.start()
    needed = [
        'ray_dsserve_requests_total{status="404"}',
        "ray_dsserve_rejected_requests_total",
        "ray_dsserve_inter_token_latency_seconds_count",
        "ray_vllm_num_requests_running",
        "model_name:dsserve_requests:rate5m",
        "reason:dsserve_rejected_requests:rate5m",
        "model_name:dsserve_ttft_slo:error_budget_remaining_ratio30d",
        "model_name:dsserve_inter_token_latency_seconds:p99_5m",
    ]
    late = _wait_for(prom, needed, DATA_DEADLINE_S)
    assert not late, f"no data within {DATA_DEADLINE_S:.0f}s for {late}"
    return obs


def _used_names() -> dict[str, list[str]]:
    """Raw series name -> where it is used (rules, alerts, dashboard panels and variables)."""
    uses: dict[str, list[str]] = {}
    exprs = [(f"rule {r.record}", r.expr) for r in recording_rules()]
    exprs += [(f"alert {a.name}", a.expr) for a in ALERTS]
    for name, dash in dashboards().items():
        exprs += [(f"{name}: {t}", e) for t, e in panel_queries(dash) + variable_queries(dash)]
    recorded = recorded_names()
    for where, expr in exprs:
        for n in metric_names(expr) - recorded:
            uses.setdefault(n, []).append(where)
    return uses


def test_every_metric_the_rules_and_dashboards_use_is_exported(observed: Observed) -> None:
    missing = [
        f"{name} (used by {', '.join(sorted(set(where))[:3])})"
        for name, where in sorted(_used_names().items())
        if name not in ONLY_WITH_SPECULATION and not observed.prom.query(f'count({{__name__="{name}"}})')
    ]
    print(f"not checked ({WITHOUT_SPECULATION}): {sorted(ONLY_WITH_SPECULATION & set(_used_names()))}")
    assert not missing, "series the stack does not export:\n" + "\n".join(missing)


def test_every_rule_is_loaded_and_healthy(observed: Observed) -> None:
    data = httpx.get(f"{observed.prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in data for r in g["rules"]]
    assert len(rules) == len(recording_rules()) + len(ALERTS)
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    # other e2e tests may have stressed this stack, so only the scrape itself must look healthy
    target_down = [r for r in rules if r["name"] == "DsserveTargetDown" and r["state"] != "inactive"]
    assert not target_down, target_down


def test_every_recording_rule_returns_data(observed: Observed) -> None:
    rules = [r for r in recording_rules() if not metric_names(r.expr) & ONLY_WITH_SPECULATION]
    print(f"not checked ({WITHOUT_SPECULATION}): {[r.record for r in recording_rules() if r not in rules]}")
    empty = [r.record for r in rules if not observed.prom.query(r.expr)]
    assert not empty, f"recording-rule expressions with no data: {empty}"
    unrecorded = [r.record for r in rules if not observed.prom.query(r.record)]
    assert not unrecorded, f"recorded series Prometheus has not written: {unrecorded}"


def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    empty, allowed_and_empty = [], []
    for name, dash in dashboards().items():
        for title, expr in panel_queries(dash):
            if observed.prom.query(for_prometheus(expr)):
                continue
            (allowed_and_empty if (name, title) in ALLOWED_EMPTY else empty).append(f"{name}: {title}: {expr}")
        for var, query in variable_queries(dash):
            # label_values(metric{sel}, label) -> the series it reads from
            series = for_prometheus(query.strip()[len("label_values(") :].rsplit(",", 1)[0])
            if not observed.prom.query(series):
                empty.append(f"{name}: variable {var}: {query}")
    for line in allowed_and_empty:
        print(f"empty, allowed ({ALLOWED_EMPTY[tuple(line.split(': ', 2)[:2])]}): {line}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)


def _value(prom: LocalPrometheus, expr: str) -> float:
    result = prom.query(expr)
    assert result, f"no data for {expr}"
    return float(result[0]["value"][1])


def test_dsserve_metrics_count_what_was_sent(observed: Observed) -> None:
    p, sent = observed.prom, observed.sent
    # counters are cumulative over the stack's life (other e2e tests sent requests too): at least ours
    assert _value(p, f'sum(ray_dsserve_requests_total{{status="200",model_name="{MODEL}"}})') >= sent["ok"]
    assert _value(p, 'sum(ray_dsserve_requests_total{status="400",model_name="unknown"})') >= sent["400"]
    assert _value(p, 'sum(ray_dsserve_requests_total{status="404",model_name="unknown"})') >= sent["404"]
    assert _value(p, 'sum(ray_dsserve_rejected_requests_total{reason="too_large"})') >= sent["413"]
    assert _value(p, f'sum(ray_dsserve_time_to_first_token_seconds_count{{model_name="{MODEL}"}})') >= sent["ok"]
    assert _value(p, f'sum(ray_dsserve_inter_token_latency_seconds_count{{model_name="{MODEL}"}})') >= sent["streamed"]
    # the SLO bucket is exported with exactly le="0.5"
    assert p.query('ray_dsserve_time_to_first_token_seconds_bucket{le="0.5"}')
    # the tiny model answers in well under 0.5 s to the first token on two cores
    assert _value(p, f'model_name:dsserve_ttft_slo:attainment_ratio_rate5m{{model_name="{MODEL}"}}') > 0.5
    # each ingress replica's admission limit: replicas x max_ongoing_requests + max_queued_requests
    assert _value(p, "max(ray_dsserve_admission_limit)") == admission_limit(load_spec(PROFILE))
    # labels stay bounded: no request ids or prompts
    series = httpx.get(f"{p.url}/api/v1/series", params={"match[]": '{__name__=~"ray_dsserve_.*"}'}, timeout=10).json()[
        "data"
    ]
    labels = {k for s in series for k in s}
    ours = labels - {
        "__name__",
        "instance",
        "job",
        "le",
        "Component",
        "NodeAddress",
        "SessionName",
        "Version",
        "WorkerId",
        "otel_scope_name",
        "otel_scope_schema_url",
        "otel_scope_version",
        "app_kubernetes_io_part_of",  # the scrape config's target label the rules select dsserve by
    }
    assert ours <= {"model_name", "route", "status", "reason"}, ours
    assert {s["model_name"] for s in series if "model_name" in s} <= {MODEL, "unknown"}
    assert {s["status"] for s in series if "status" in s} <= {"200", "400", "401", "404", "413", "499", "500", "503"}


def test_engine_and_ingress_agree_roughly_on_output_tokens(observed: Observed) -> None:
    """The ingress counts output tokens it sent; the engine counts tokens it generated: same ballpark."""
    p = observed.prom
    ingress = _value(p, f'sum(ray_dsserve_output_tokens_total{{model_name="{MODEL}"}})')
    engine = _value(p, f'sum(ray_vllm_generation_tokens_total{{model_name="{MODEL}"}})')
    assert 0 < ingress <= engine * 1.05, json.dumps({"ingress": ingress, "engine": engine})
