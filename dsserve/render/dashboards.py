"""Grafana dashboards for dsserve, generated from the PromQL in :mod:`dsserve.render.queries`.

``dsserve render dashboards -o deploy/grafana/dashboards`` (run by ``make render``) writes three dashboards
with fixed uids: **Overview** (traffic, latency against the SLO, errors, saturation, replicas, per-replica
breakdown), **Engine** (vLLM per replica and engine: prefill/decode/queue time, batch, preemptions,
prefix-cache hits) and **SLO** (attainment, error budget, burn rates). Every panel reads the
``$datasource`` variable (never a fixed datasource uid), has a unit and a description, and reads a
recording rule where one exists. ``dsserve dashboards push`` uploads them through Grafana's HTTP API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dsserve.errors import DsserveError
from dsserve.render.queries import BURN_WINDOWS, ERROR_BUDGET, PAGE_BURNS, SLO_OBJECTIVE, TICKET_BURNS
from dsserve.serving.metrics import SLO_THRESHOLD_S

__all__ = [
    "DASHBOARDS",
    "DashboardPushError",
    "dashboards",
    "render_dashboard",
    "write_dashboards",
    "panel_queries",
    "variable_queries",
    "for_prometheus",
    "push_dashboards",
]

DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model_name=~"$model_name"'
_SCHEMA_VERSION = 39
_TAGS = ["dsserve"]


class DashboardPushError(DsserveError):
    """Grafana refused or could not be reached while pushing dashboards."""


# -- panel builders ---------------------------------------------------------------------------------------


def _t(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def _thresholds(steps: list[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


class _Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def timeseries(
        self,
        title: str,
        description: str,
        unit: str,
        targets: list[dict[str, Any]],
        *,
        w: int = 12,
        h: int = 8,
        line: float | None = None,
        steps: list[tuple[str, float | None]] | None = None,
        min_: float | None = 0,
        max_: float | None = None,
    ) -> None:
        custom: dict[str, Any] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
        }
        defaults: dict[str, Any] = {"unit": unit, "custom": custom}
        if line is not None or steps:
            # the SLO (or alert threshold) drawn as a dashed line across the graph
            custom["thresholdsStyle"] = {"mode": "dashed"}
            defaults["thresholds"] = _thresholds(steps or [("transparent", None), ("red", line)])
        if min_ is not None:
            defaults["min"] = min_
        if max_ is not None:
            defaults["max"] = max_
        self.add(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": DS,
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": _targets(targets),
            },
            w,
            h,
        )

    def stat(
        self,
        title: str,
        description: str,
        unit: str,
        expr: str,
        *,
        steps: list[tuple[str, float | None]],
        w: int = 6,
        h: int = 4,
        decimals: int | None = None,
    ) -> None:
        defaults: dict[str, Any] = {"unit": unit, "thresholds": _thresholds(steps), "color": {"mode": "thresholds"}}
        if decimals is not None:
            defaults["decimals"] = decimals
        self.add(
            {
                "type": "stat",
                "title": title,
                "description": description,
                "datasource": DS,
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "area",
                    "justifyMode": "auto",
                    "textMode": "auto",
                    "orientation": "auto",
                },
                "targets": _targets([_t(expr, "")]),
            },
            w,
            h,
        )


def _targets(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"datasource": DS, "refId": chr(ord("A") + i), "range": True, "instant": False, **t}
        for i, t in enumerate(targets)
    ]


def _quantile_targets(metric: str, legend: str) -> list[dict[str, Any]]:
    return [_t(f"{metric}:{p}_5m{{{M}}}", f"{p} {legend}") for p in ("p50", "p95", "p99")]


def _model_variable(metric: str = "ray_vllm_generation_tokens_total") -> dict[str, Any]:
    # a counter: Ray keeps it while the engine idles, unlike gauges
    return _query_variable("model_name", "Model", f"label_values({metric}, model_name)")


def _query_variable(name: str, label: str, q: str) -> dict[str, Any]:
    """A multi-value Prometheus query variable with All selected."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": q,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "regex": "",
        "options": [],
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def _dashboard(
    uid: str, title: str, description: str, layout: _Layout, variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": _TAGS,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": _SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [{"title": "dsserve dashboards", "type": "dashboards", "tags": _TAGS, "asDropdown": True}],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "current": {},
                },
                *variables,
            ]
        },
        "panels": layout.panels,
    }


SLO_LINE = SLO_THRESHOLD_S
_SLO_TEXT = f"SLO: {SLO_OBJECTIVE:.0%} of answered requests get their first token within {SLO_THRESHOLD_S:g} s"


# -- the three dashboards ---------------------------------------------------------------------------------


def overview() -> dict[str, Any]:
    lay = _Layout()
    lay.stat(
        "Requests per second",
        "Chat and completions requests per second over 5 minutes, every status "
        "(recording rule model_name:dsserve_requests:rate5m).",
        "reqps",
        f"sum(model_name:dsserve_requests:rate5m{{{M}}})",
        steps=[("blue", None)],
    )
    lay.stat(
        "5xx ratio",
        "Share of requests answered with a 5xx over 5 minutes, 503 overload refusals "
        "included; DsserveHighErrorRatio fires above 5 %.",
        "percentunit",
        f"max(model_name:dsserve_request_errors:ratio_rate5m{{{M}}})",
        steps=[("green", None), ("orange", 0.01), ("red", 0.05)],
        decimals=2,
    )
    lay.stat(
        "TTFT p99",
        f"99th percentile time to first token over 5 minutes, at the ingress. {_SLO_TEXT}.",
        "s",
        f"max(model_name:dsserve_time_to_first_token_seconds:p99_5m{{{M}}})",
        steps=[("green", None), ("red", SLO_LINE)],
    )
    lay.stat(
        "TTFT SLO attainment",
        f"Share of answered requests with TTFT at most {SLO_THRESHOLD_S:g} s over "
        f"5 minutes (exact: {SLO_THRESHOLD_S:g} s is a bucket edge). {_SLO_TEXT}.",
        "percentunit",
        f"min(model_name:dsserve_ttft_slo:attainment_ratio_rate5m{{{M}}})",
        steps=[("red", None), ("green", SLO_OBJECTIVE)],
        decimals=2,
    )

    lay.timeseries(
        "Requests per second by model",
        "Chat and completions requests per second over 5 "
        "minutes, every status. model_name=unknown: requests that named no served model (400/404).",
        "reqps",
        [_t(f"model_name:dsserve_requests:rate5m{{{M}}}", "{{model_name}}")],
    )
    lay.timeseries(
        "Responses by status, and refusals",
        "Responses per second by HTTP status (499: client "
        "hung up mid-stream), and admission-control refusals by reason (overloaded, queue_full: "
        "503; too_large: 413; unauthorized: 401; rate_limited: 429).",
        "reqps",
        [
            _t(f"sum by (status) (model_name_route_status:dsserve_requests:rate5m{{{M}}})", "{{status}}"),
            _t("sum by (reason) (reason:dsserve_rejected_requests:rate5m)", "refused: {{reason}}"),
        ],
    )

    lay.timeseries(
        "End-to-end latency (200 responses)",
        "p50/p95/p99 of arrival at the ingress to the last "
        f"byte, 200 responses, over 5 minutes. Dashed line: {SLO_THRESHOLD_S:g} s.",
        "s",
        _quantile_targets("model_name:dsserve_request_duration_seconds", "{{model_name}}"),
        line=SLO_LINE,
    )
    lay.timeseries(
        "Time to first token",
        "p50/p95/p99 of arrival to the first generated token sent (a "
        f"non-streamed response: the whole response) over 5 minutes. {_SLO_TEXT} (dashed line).",
        "s",
        _quantile_targets("model_name:dsserve_time_to_first_token_seconds", "{{model_name}}"),
        line=SLO_LINE,
    )

    lay.timeseries(
        "Inter-token latency (streams)",
        "p50/p95/p99 of the mean gap between output tokens of one streamed response, at the ingress, over 5 minutes.",
        "s",
        _quantile_targets("model_name:dsserve_inter_token_latency_seconds", "{{model_name}}"),
    )
    lay.timeseries(
        "Tokens per second",
        "Prompt and generated tokens per second processed by the vLLM "
        "engines (exact), and output tokens sent by the ingress.",
        "suffix: tok/s",
        [
            _t(f"model_name:vllm_prompt_tokens:rate5m{{{M}}}", "engine prompt {{model_name}}"),
            _t(f"model_name:vllm_generation_tokens:rate5m{{{M}}}", "engine generated {{model_name}}"),
            _t(f"model_name:dsserve_output_tokens:rate5m{{{M}}}", "ingress output {{model_name}}"),
        ],
    )

    lay.timeseries(
        "Engine batch and queues",
        "Requests running in the engines' batches, waiting inside "
        "the engines (DsserveQueueGrowing watches it), and waiting in Ray Serve for a replica.",
        "short",
        [
            _t(f"model_name:vllm_num_requests_running:sum{{{M}}}", "running {{model_name}}"),
            _t(f"model_name:vllm_num_requests_waiting:sum{{{M}}}", "waiting {{model_name}}"),
            _t(
                "sum by (deployment) (application_deployment:ray_serve_deployment_queued_queries:sum)",
                "Serve queue {{deployment}}",
            ),
        ],
        w=8,
    )
    lay.timeseries(
        "KV-cache usage",
        "KV-cache usage of the fullest engine of each model; DsserveKVCacheNearFull fires above 90 % for 10 minutes.",
        "percentunit",
        [_t(f"model_name:vllm_kv_cache_usage_perc:max{{{M}}}", "{{model_name}}")],
        w=8,
        line=0.9,
        max_=1,
    )
    lay.timeseries(
        "Ingress admission",
        "Chat/completions requests held by the ingress replicas (streams "
        "until they end) and how many they admit before answering 503 (replicas x "
        "max_ongoing_requests + max_queued_requests).",
        "short",
        [_t("sum(job:dsserve_inflight_requests:sum)", "in flight"), _t("sum(ray_dsserve_admission_limit)", "limit")],
        w=8,
    )

    lay.timeseries(
        "Replicas",
        "Healthy and unhealthy Ray Serve replicas per deployment (ingress and LLMServer).",
        "short",
        [
            _t("application_deployment:ray_serve_replicas_healthy:sum", "healthy {{deployment}}"),
            _t("application_deployment:ray_serve_replicas_unhealthy:count", "unhealthy {{deployment}}"),
        ],
    )
    lay.timeseries(
        "Replica replacements",
        "Replica starts beyond the replicas that exist now (failed "
        "replicas replaced, or scale-ups after scale-downs); DsserveReplicaRestarting fires on 2 "
        "within 30 minutes.",
        "short",
        [_t("application_deployment:ray_serve_replica_restarts:sum", "{{deployment}}")],
    )

    lay.timeseries(
        "KV-cache usage per replica",
        "KV-cache usage per engine replica (vLLM ReplicaId).",
        "percentunit",
        [_t(f"model_name_replica_id:vllm_kv_cache_usage_perc:max{{{M}}}", "{{model_name}} {{ReplicaId}}")],
        w=6,
        max_=1,
    )
    lay.timeseries(
        "Running requests per replica",
        "Requests in each engine replica's running batch.",
        "short",
        [_t(f"sum by (model_name, ReplicaId) (ray_vllm_num_requests_running{{{M}}})", "{{model_name}} {{ReplicaId}}")],
        w=6,
    )
    lay.timeseries(
        "Generated tokens per second per replica",
        "Tokens generated per second by each engine replica.",
        "suffix: tok/s",
        [
            _t(
                f"sum by (model_name, ReplicaId) (rate(ray_vllm_generation_tokens_total{{{M}}}[$__rate_interval]))",
                "{{model_name}} {{ReplicaId}}",
            )
        ],
        w=6,
    )
    lay.timeseries(
        "Requests per second per ingress replica",
        "Chat and completions requests per second handled by each ingress replica (Ray WorkerId of its process).",
        "reqps",
        [_t(f"sum by (WorkerId) (rate(ray_dsserve_requests_total{{{M}}}[$__rate_interval]))", "{{WorkerId}}")],
        w=6,
    )
    return _dashboard(
        "dsserve-overview",
        "dsserve / Overview",
        "Traffic, latency against the SLO, errors, saturation and replicas of a dsserve stack.",
        lay,
        [_model_variable()],
    )


def engine() -> dict[str, Any]:
    sel = f'{M}, ReplicaId=~"$replica"'
    by = "ReplicaId, engine"
    lay = _Layout()

    def phase(title: str, metric: str, what: str) -> None:
        lay.timeseries(
            title,
            f"p50 and p99 of {what} per engine replica, over the rate interval "
            "(vLLM, ray_vllm_*; per engine, not per tensor-parallel rank: a TP group is one engine).",
            "s",
            [
                _t(
                    f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))",
                    f"p{int(q * 100)} {{{{ReplicaId}}}}/{{{{engine}}}}",
                )
                for q in (0.5, 0.99)
            ],
        )

    phase("Prefill time", "ray_vllm_request_prefill_time_seconds", "the prefill phase (scheduled to first token)")
    phase("Decode time", "ray_vllm_request_decode_time_seconds", "the decode phase (first to last token)")
    phase("Queue time in the engine", "ray_vllm_request_queue_time_seconds", "the time waiting to be scheduled")
    phase(
        "Engine time to first token",
        "ray_vllm_time_to_first_token_seconds",
        "vLLM's own TTFT (frontend arrival to first token, without Serve's proxy hops)",
    )
    phase(
        "Engine inter-token latency",
        "ray_vllm_inter_token_latency_seconds",
        "the gap between engine steps of a request",
    )
    lay.timeseries(
        "Batch size (running requests)",
        "Requests in each engine's running batch.",
        "short",
        [_t(f"sum by ({by}) (ray_vllm_num_requests_running{{{sel}}})", "{{ReplicaId}}/{{engine}}")],
    )
    lay.timeseries(
        "Tokens per engine step",
        "Prompt plus generated tokens per engine step (from exact "
        "counters; the iteration-tokens histogram's sum is only approximate under Ray).",
        "short",
        [
            _t(
                f"(sum by ({by}) (rate(ray_vllm_prompt_tokens_total{{{sel}}}[$__rate_interval])) + "
                f"sum by ({by}) (rate(ray_vllm_generation_tokens_total{{{sel}}}[$__rate_interval])))"
                f" / sum by ({by}) (rate(ray_vllm_iteration_tokens_total_count{{{sel}}}"
                "[$__rate_interval]))",
                "{{ReplicaId}}/{{engine}}",
            )
        ],
    )
    lay.timeseries(
        "Waiting requests by reason",
        "Requests waiting in each engine: capacity (no KV-cache room or batch slot) or deferred.",
        "short",
        [
            _t(
                f"sum by ({by}, reason) (ray_vllm_num_requests_waiting_by_reason{{{sel}}})",
                "{{ReplicaId}}/{{engine}} {{reason}}",
            )
        ],
    )
    lay.timeseries(
        "Requests preempted more than once",
        "Finished requests per second that vLLM preempted "
        "at least twice (KV cache exhausted). vLLM's per-request preemption histogram puts 0 and 1 "
        "in its first bucket and Ray rebuilds its sum from bucket midpoints, so single preemptions "
        "cannot be counted; watch KV-cache usage for the early signal.",
        "reqps",
        [
            _t(
                f"sum by ({by}) (rate(ray_vllm_request_num_preemptions_count{{{sel}}}[$__rate_interval]))"
                f' - sum by ({by}) (rate(ray_vllm_request_num_preemptions_bucket{{{sel}, le="1.0"}}'
                "[$__rate_interval]))",
                "{{ReplicaId}}/{{engine}}",
            )
        ],
    )
    lay.timeseries(
        "Prefix-cache hit rate",
        "Share of prompt tokens served from the local prefix cache. Empty "
        "when prefix caching is off (vLLM turns it off for MLA models on CPU: see "
        "ray_vllm_cache_config_info's enable_prefix_caching label).",
        "percentunit",
        [
            _t(
                f"sum by ({by}) (rate(ray_vllm_prompt_tokens_by_source_total{{{sel}, "
                'source="local_cache_hit"}[$__rate_interval]))'
                f" / sum by ({by}) (rate(ray_vllm_prompt_tokens_total{{{sel}}}[$__rate_interval]))",
                "{{ReplicaId}}/{{engine}}",
            )
        ],
        max_=1,
    )
    lay.timeseries(
        "MTP draft acceptance",
        "Share of MTP draft tokens the engines accepted. Only with engine.speculative (empty without it); "
        "the planner assumed engine.speculative.acceptance_rate, so a lower figure means slower decoding than planned.",
        "percentunit",
        [_t(f"model_name:vllm_spec_decode_acceptance:ratio_rate5m{{{M}}}", "{{model_name}}")],
        max_=1,
    )
    lay.timeseries(
        "MTP tokens per step",
        "Tokens a decoding sequence gains per engine step with MTP: its own plus the accepted drafts "
        "(1 + acceptance for one draft token). Only with engine.speculative.",
        "short",
        [_t(f"model_name:vllm_spec_decode_tokens_per_step:ratio_rate5m{{{M}}}", "{{model_name}}")],
    )
    lay.timeseries(
        "KV-cache usage",
        "KV-cache usage per engine.",
        "percentunit",
        [_t(f"max by ({by}) (ray_vllm_kv_cache_usage_perc{{{sel}}})", "{{ReplicaId}}/{{engine}}")],
        line=0.9,
        max_=1,
    )
    lay.timeseries(
        "Finished requests by reason",
        "Requests per second each engine finished, by reason (stop, length, abort, error, ...).",
        "reqps",
        [
            _t(
                f"sum by ({by}, finished_reason) (rate(ray_vllm_request_success_total{{{sel}}}[$__rate_interval]))",
                "{{ReplicaId}}/{{engine}} {{finished_reason}}",
            )
        ],
    )
    q = 'label_values(ray_vllm_generation_tokens_total{model_name=~"$model_name"}, ReplicaId)'
    replica = _query_variable("replica", "Replica", q)
    return _dashboard(
        "dsserve-engine",
        "dsserve / Engine",
        "vLLM engines per replica: phase times, batch, queue, preemptions, prefix cache, KV cache.",
        lay,
        [_model_variable(), replica],
    )


def slo() -> dict[str, Any]:
    lay = _Layout()
    budget = f"{ERROR_BUDGET:g}"
    lay.stat(
        "TTFT SLO attainment (5m)",
        f"Share of answered requests with TTFT at most {SLO_THRESHOLD_S:g} s over 5 minutes. {_SLO_TEXT}.",
        "percentunit",
        f"min(model_name:dsserve_ttft_slo:attainment_ratio_rate5m{{{M}}})",
        steps=[("red", None), ("green", SLO_OBJECTIVE)],
        w=8,
        decimals=2,
    )
    lay.stat(
        "Error budget left (30 days)",
        f"Share of the {ERROR_BUDGET:.0%} error budget left, from the "
        "30-day mean of the 5-minute error ratio; negative once overspent.",
        "percentunit",
        f"min(model_name:dsserve_ttft_slo:error_budget_remaining_ratio30d{{{M}}})",
        steps=[("red", None), ("orange", 0), ("green", 0.25)],
        w=8,
        decimals=1,
    )
    lay.stat(
        "Fastest burn now (1h)",
        "Burn rate over the last hour: the error ratio divided by the "
        f"{ERROR_BUDGET:.0%} budget (1 = spending it exactly over 30 days; the page fires at "
        f"{PAGE_BURNS[0][2]:g}x over 1h and 5m).",
        "suffix: x",
        f"max(model_name:dsserve_ttft_slo:error_ratio_rate1h{{{M}}}) / {budget}",
        steps=[("green", None), ("orange", 1), ("red", PAGE_BURNS[0][2])],
        w=8,
        decimals=1,
    )
    lay.timeseries(
        "TTFT SLO attainment",
        f"Share of answered requests with TTFT at most {SLO_THRESHOLD_S:g} s "
        f"over 5 minutes, per model. Dashed line: the {SLO_OBJECTIVE:.0%} objective.",
        "percentunit",
        [_t(f"model_name:dsserve_ttft_slo:attainment_ratio_rate5m{{{M}}}", "TTFT {{model_name}}")],
        line=SLO_OBJECTIVE,
        min_=None,
        max_=1,
        steps=[("red", None), ("transparent", SLO_OBJECTIVE)],
    )
    lay.timeseries(
        "E2E attainment at the SLO threshold",
        f"Share of 200 responses completed within "
        f"{SLO_THRESHOLD_S:g} s over 5 minutes (not an alerting SLO: long streams cannot meet it).",
        "percentunit",
        [_t(f"model_name:dsserve_e2e_slo:attainment_ratio_rate5m{{{M}}}", "E2E {{model_name}}")],
        min_=None,
        max_=1,
    )
    lay.timeseries(
        "Burn rate by window",
        "Error ratio over each window divided by the error budget. Pages "
        f"when 1h and 5m both exceed {PAGE_BURNS[0][2]:g}x or 6h and 30m both exceed "
        f"{PAGE_BURNS[1][2]:g}x; tickets when 1d and 2h exceed {TICKET_BURNS[0][2]:g}x or 3d and 6h "
        f"exceed {TICKET_BURNS[1][2]:g}x (Google SRE workbook). Long windows cover only the history "
        "Prometheus has.",
        "suffix: x",
        [
            _t(f"model_name:dsserve_ttft_slo:error_ratio_rate{w}{{{M}}} / {budget}", f"{w} {{{{model_name}}}}")
            for w in BURN_WINDOWS
        ],
        w=24,
        steps=[
            ("transparent", None),
            ("yellow", TICKET_BURNS[1][2]),
            ("orange", PAGE_BURNS[1][2]),
            ("red", PAGE_BURNS[0][2]),
        ],
    )
    lay.timeseries(
        "5xx ratio (availability)",
        "Share of requests answered with a 5xx over 5 minutes "
        "(503 overload refusals included); DsserveHighErrorRatio fires above 5 % for 5 minutes.",
        "percentunit",
        [_t(f"model_name:dsserve_request_errors:ratio_rate5m{{{M}}}", "{{model_name}}")],
        line=0.05,
    )
    lay.timeseries(
        "30-day error ratio",
        f"Mean 5-minute TTFT error ratio over 30 days (what the budget is spent by); the budget is {ERROR_BUDGET:.0%}.",
        "percentunit",
        [_t(f"model_name:dsserve_ttft_slo:error_ratio_avg30d{{{M}}}", "{{model_name}}")],
        line=ERROR_BUDGET,
    )
    return _dashboard(
        "dsserve-slo",
        "dsserve / SLO",
        f"{_SLO_TEXT}: attainment, error budget and multi-window burn rates.",
        lay,
        [_model_variable("ray_dsserve_requests_total")],
    )


#: File name -> builder, for deploy/grafana/dashboards/.
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "dsserve-overview.json": overview,
    "dsserve-engine.json": engine,
    "dsserve-slo.json": slo,
}


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: build() for name, build in DASHBOARDS.items()}


def render_dashboard(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dash in dashboards().items():
        (d / name).write_text(render_dashboard(dash))
        paths.append(d / name)
    return paths


# -- queries, for tests and the live check ------------------------------------------------------------------


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk_panels(p.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [
        (p.get("title", ""), t["expr"])
        for p in _walk_panels(dashboard.get("panels", []))
        for t in p.get("targets", [])
        if "expr" in t
    ]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, query) of every query variable, e.g. ``label_values(metric, label)``."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            out.append((v["name"], q.get("query", "") if isinstance(q, dict) else str(q)))
    return out


def for_prometheus(expr: str, rate_interval: str = "1m") -> str:
    """A panel query as Prometheus can run it: Grafana's variables replaced (All for multi-selects)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    return re.sub(r"\$\{?(model_name|replica)\}?", ".*", expr)


# -- push ---------------------------------------------------------------------------------------------------


def push_dashboards(
    url: str,
    token: str,
    folder: str | None = "dsserve",
    *,
    timeout_s: float = 10.0,
    progress: Callable[[str], None] = print,
) -> list[str]:
    """Create or update every dashboard in Grafana (by uid; idempotent); return their URLs.

    Uses grafana-client against Grafana's HTTP API: the folder is looked up by title and created when
    missing, then each dashboard is saved with ``overwrite: true``, so pushing twice changes nothing but
    Grafana's version counter.
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    try:
        import niquests

        transport_errors: tuple[type[BaseException], ...] = (niquests.exceptions.RequestException, OSError)
    except ImportError:  # pragma: no cover - grafana-client 5 depends on niquests
        transport_errors = (OSError,)

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        folder_uid = _folder_uid(api, folder) if folder else None
        urls = []
        for name, dash in dashboards().items():
            body: dict[str, Any] = {
                "dashboard": {**dash, "id": None},
                "overwrite": True,
                "message": "dsserve dashboards push",
            }
            if folder_uid:
                body["folderUid"] = folder_uid
            result = api.dashboard.update_dashboard(body)
            link = url.rstrip("/") + str(result.get("url", f"/d/{dash['uid']}")) if isinstance(result, dict) else url
            progress(
                f"{name}: {result.get('status', 'saved') if isinstance(result, dict) else 'saved'} "
                f"as uid {dash['uid']} ({link})"
            )
            urls.append(link)
        return urls
    except GrafanaUnauthorizedError:
        raise DashboardPushError(
            f"Grafana at {url} answered 401 Unauthorized: the token was refused; create a "
            "service-account token with the Editor role and pass the variable holding "
            "it with --token-env"
        ) from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise DashboardPushError(
                f"Grafana at {url} answered 403 Forbidden: the token may not write "
                "dashboards or folders; give its service account the Editor role"
            ) from None
        raise DashboardPushError(f"Grafana at {url} refused the request: {exc.message}") from None
    except GrafanaException as exc:  # timeouts, 5xx
        raise DashboardPushError(f"Grafana at {url} failed: {exc.message}") from None
    except transport_errors as exc:
        raise DashboardPushError(
            f"cannot reach Grafana at {url}: {type(exc).__name__}: {exc}; check the URL and that Grafana is running"
        ) from None


def _folder_uid(api: Any, title: str) -> str:
    for f in api.folder.get_all_folders():
        if f.get("title") == title:
            return str(f["uid"])
    created = api.folder.create_folder(title)
    return str(created["uid"])
