"""The PromQL of dsserve's monitoring, in one place: recording rules, alerts and dashboards all read it.

Recording rules are named ``level:metric:operations`` (the Prometheus naming guide, as kubernetes-mixin
does): ``model_name:dsserve_requests:rate5m`` is the request rate summed by ``model_name`` over 5 minutes.
Alerts (:mod:`dsserve.render.prometheus_rules`) read only recorded series, and dashboard panels
(:mod:`dsserve.render.dashboards`) read a recorded series wherever one exists, so a query changed here
changes all three. Raw series names come from a real scrape of the local stack
(``deploy/prometheus/exported-metrics.txt``) or from :mod:`dsserve.serving.metrics`; tests check every name.

The latency SLO: **99 % of answered requests get their first token within 0.5 s** (TTFT, as measured at
the ingress; see :mod:`dsserve.serving.metrics`). 0.5 s is an exact bucket edge of the TTFT and E2E histograms,
so the share under it is exact, not interpolated. Burn-rate windows and factors follow the Google SRE
workbook, "Alerting on SLOs", multiwindow multi-burn-rate alerts: page on 14.4x (1h and 5m) or 6x (6h and
30m), ticket on 3x (1d and 2h) or 1x (3d and 6h).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dsserve.serving.metrics import SLO_THRESHOLD_S

__all__ = [
    "RecordingRule",
    "RECORDING_GROUPS",
    "recording_rules",
    "recorded_names",
    "metric_names",
    "SLO_OBJECTIVE",
    "ERROR_BUDGET",
    "SLO_LE",
    "BURN_WINDOWS",
    "PAGE_BURNS",
    "TICKET_BURNS",
]

#: Share of answered requests whose TTFT must be at most SLO_THRESHOLD_S.
SLO_OBJECTIVE = 0.99
ERROR_BUDGET = round(1 - SLO_OBJECTIVE, 6)
#: The ``le`` label value of the SLO bucket, as Ray exports it (prometheus_client float formatting).
SLO_LE = repr(float(SLO_THRESHOLD_S))
#: Windows of the burn-rate error ratios.
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
#: (long window, short window, burn-rate factor): page and ticket conditions of the SRE workbook.
PAGE_BURNS = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET_BURNS = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

# -- raw series: ours (dsserve.serving.metrics) and Ray's / vLLM's (deploy/prometheus/exported-metrics.txt) ---------
REQUESTS = "ray_dsserve_requests_total"
DURATION = "ray_dsserve_request_duration_seconds"
TTFT = "ray_dsserve_time_to_first_token_seconds"
ITL = "ray_dsserve_inter_token_latency_seconds"
PROMPT_TOKENS = "ray_dsserve_prompt_tokens_total"
OUTPUT_TOKENS = "ray_dsserve_output_tokens_total"
REJECTED = "ray_dsserve_rejected_requests_total"
INFLIGHT = "ray_dsserve_inflight_requests"
ADMISSION_LIMIT = "ray_dsserve_admission_limit"

#: The target label every dsserve scrape carries, and the selector of dsserve's targets. The chart's PodMonitors copy
#: it from the pods' app.kubernetes.io/part-of label (podTargetLabels), the local scrape configs
#: (prometheus.local.yml, dsserve.local_prometheus) set it on their static targets. Not the job name: the
#: PodMonitors' jobs are ``<namespace>/<fullname>-head``, which nameOverride or fullnameOverride can make anything.
PART_OF_LABEL = "app_kubernetes_io_part_of"
DSSERVE_JOBS = f'{PART_OF_LABEL}="dsserve"'

#: vLLM's speculative-decoding counters as Ray exports them (vllm/v1/spec_decode/metrics.py, SpecDecodingProm).
SPEC_DRAFTS = "ray_vllm_spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "ray_vllm_spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "ray_vllm_spec_decode_num_accepted_tokens_total"
SPEC_ACCEPTED_PER_POS = "ray_vllm_spec_decode_num_accepted_tokens_per_pos_total"
#: Series that exist only where engine.speculative (MTP) is on; the rules and panels on them stay empty elsewhere.
ONLY_WITH_SPECULATION = frozenset({SPEC_DRAFTS, SPEC_DRAFT_TOKENS, SPEC_ACCEPTED, SPEC_ACCEPTED_PER_POS})


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    help: str


def _ratio_under(hist: str, window: str, sel: str = "") -> str:
    """Share of a histogram's observations at or under the SLO threshold, by model_name."""
    bucket_sel = f'{sel},le="{SLO_LE}"' if sel else f'le="{SLO_LE}"'
    count = f"{hist}_count{{{sel}}}" if sel else f"{hist}_count"
    return (
        f"sum by (model_name) (rate({hist}_bucket{{{bucket_sel}}}[{window}]))\n"
        f"/\nsum by (model_name) (rate({count}[{window}]))"
    )


def _quantiles(hist: str, sel: str, what: str) -> list[RecordingRule]:
    selector = f"{{{sel}}}" if sel else ""
    return [
        RecordingRule(
            f"model_name:{hist.removeprefix('ray_')}:{name}_5m",
            f"histogram_quantile({q}, sum by (model_name, le) (rate({hist}_bucket{selector}[5m])))",
            f"{name} of {what} over 5 minutes, by model.",
        )
        for name, q in QUANTILES
    ]


def _groups() -> dict[str, list[RecordingRule]]:
    traffic = [
        RecordingRule(
            "model_name:dsserve_requests:rate5m",
            f"sum by (model_name) (rate({REQUESTS}[5m]))",
            "Chat and completions requests per second (QPS), every status, by model.",
        ),
        RecordingRule(
            "model_name_route_status:dsserve_requests:rate5m",
            f"sum by (model_name, route, status) (rate({REQUESTS}[5m]))",
            "Requests per second by model, route and HTTP status.",
        ),
        RecordingRule(
            "model_name:dsserve_request_errors:ratio_rate5m",
            f'(\n  sum by (model_name) (rate({REQUESTS}{{status=~"5.."}}[5m]))\n'
            f"  or\n  0 * sum by (model_name) (rate({REQUESTS}[5m]))\n)\n"
            f"/\nsum by (model_name) (rate({REQUESTS}[5m]))",
            "Share of requests answered with a 5xx (503 overload refusals included); 0, not "
            "absent, while there are none.",
        ),
        RecordingRule(
            "reason:dsserve_rejected_requests:rate5m",
            f"sum by (reason) (rate({REJECTED}[5m]))",
            "Admission-control refusals per second by reason.",
        ),
        RecordingRule(
            "model_name:dsserve_prompt_tokens:rate5m",
            f"sum by (model_name) (rate({PROMPT_TOKENS}[5m]))",
            "Prompt tokens per second from response usage (streams without usage not counted).",
        ),
        RecordingRule(
            "model_name:dsserve_output_tokens:rate5m",
            f"sum by (model_name) (rate({OUTPUT_TOKENS}[5m]))",
            "Output tokens per second sent by the ingress.",
        ),
        RecordingRule(
            "model_name:vllm_prompt_tokens:rate5m",
            "sum by (model_name) (rate(ray_vllm_prompt_tokens_total[5m]))",
            "Prompt tokens per second processed by the vLLM engines (exact).",
        ),
        RecordingRule(
            "model_name:vllm_generation_tokens:rate5m",
            "sum by (model_name) (rate(ray_vllm_generation_tokens_total[5m]))",
            "Tokens per second generated by the vLLM engines (exact).",
        ),
    ]
    latency = [
        *_quantiles(TTFT, "", "time to first token"),
        *_quantiles(DURATION, 'status="200"', "end-to-end latency of 200 responses"),
        *_quantiles(ITL, "", "inter-token latency of streamed responses"),
    ]
    slo = [
        RecordingRule(
            "model_name:dsserve_ttft_slo:attainment_ratio_rate5m",
            _ratio_under(TTFT, "5m"),
            f"Share of answered requests with TTFT at most {SLO_THRESHOLD_S:g} s (the SLO) over 5 minutes.",
        ),
        RecordingRule(
            "model_name:dsserve_e2e_slo:attainment_ratio_rate5m",
            _ratio_under(DURATION, "5m", 'status="200"'),
            f"Share of 200 responses completed within {SLO_THRESHOLD_S:g} s over 5 minutes.",
        ),
        *[
            RecordingRule(
                f"model_name:dsserve_ttft_slo:error_ratio_rate{w}",
                f"1 - (\n{_ratio_under(TTFT, w)}\n)",
                f"Share of answered requests over the TTFT SLO threshold in the last {w} "
                "(burn rate = this / error budget).",
            )
            for w in BURN_WINDOWS
        ],
        RecordingRule(
            "model_name:dsserve_ttft_slo:error_ratio_avg30d",
            "avg_over_time(model_name:dsserve_ttft_slo:error_ratio_rate5m[30d])",
            "Mean of the 5-minute SLO error ratio over 30 days (time-weighted, as sloth does).",
        ),
        RecordingRule(
            "model_name:dsserve_ttft_slo:error_budget_remaining_ratio30d",
            f"1 - model_name:dsserve_ttft_slo:error_ratio_avg30d / {ERROR_BUDGET:g}",
            "Share of the 30-day error budget left (negative once overspent).",
        ),
    ]
    saturation = [
        RecordingRule(
            "model_name:vllm_num_requests_running:sum",
            "sum by (model_name) (ray_vllm_num_requests_running)",
            "Requests in the engines' running batches.",
        ),
        RecordingRule(
            "model_name:vllm_num_requests_waiting:sum",
            "sum by (model_name) (ray_vllm_num_requests_waiting)",
            "Requests queued inside the engines (queue depth).",
        ),
        RecordingRule(
            "model_name:vllm_kv_cache_usage_perc:max",
            "max by (model_name) (ray_vllm_kv_cache_usage_perc)",
            "KV-cache usage (0-1) of the fullest engine.",
        ),
        RecordingRule(
            "model_name_replica_id:vllm_kv_cache_usage_perc:max",
            "max by (model_name, ReplicaId) (ray_vllm_kv_cache_usage_perc)",
            "KV-cache usage (0-1) per engine replica.",
        ),
        RecordingRule(
            "application_deployment:ray_serve_deployment_queued_queries:sum",
            "sum by (application, deployment) (ray_serve_deployment_queued_queries)",
            "Requests waiting in Ray Serve handles for a replica of each deployment.",
        ),
        RecordingRule(
            "job:dsserve_inflight_requests:sum",
            f"sum by (job) ({INFLIGHT})",
            "Requests held by the ingress replicas (admitted, not finished).",
        ),
        RecordingRule(
            "job:dsserve_admission_utilization:ratio",
            f"sum by (job) ({INFLIGHT})\n/\nsum by (job) ({ADMISSION_LIMIT})",
            "Share of the admission limit in use; at 1 new requests get 503.",
        ),
    ]
    replicas = [
        RecordingRule(
            "application_deployment:ray_serve_replicas_healthy:sum",
            "sum by (application, deployment) (ray_serve_deployment_replica_healthy)",
            "Healthy replicas per deployment.",
        ),
        RecordingRule(
            "application_deployment:ray_serve_replicas_unhealthy:count",
            "sum by (application, deployment) (ray_serve_deployment_replica_healthy == bool 0)",
            "Replicas the Serve controller reports unhealthy (0, not absent, when none).",
        ),
        RecordingRule(
            "application_deployment:ray_serve_replica_starts:sum",
            "sum by (application, deployment) (ray_serve_deployment_replica_starts_total)",
            "Replicas ever started per deployment (since the node's metrics agent started).",
        ),
        RecordingRule(
            "application_deployment:ray_serve_replica_restarts:sum",
            "application_deployment:ray_serve_replica_starts:sum\n"
            "- on (application, deployment)\n"
            "count by (application, deployment) (ray_serve_deployment_replica_healthy)",
            "Replica starts beyond the replicas that exist now: replacements of failed replicas "
            "(and replicas started after a scale-down).",
        ),
        RecordingRule(
            "application_deployment:ray_serve_deployment_status:min",
            "min by (application, deployment) (ray_serve_deployment_status)",
            "Serve deployment status: 1 DEPLOY_FAILED, 2 UNHEALTHY, 3 UPDATING, 4 UPSCALING, 5 DOWNSCALING, 6 HEALTHY.",
        ),
        RecordingRule(
            "job_instance:up:min",
            f"min by (job, instance) (up{{{DSSERVE_JOBS}}})",
            "1 when Prometheus could scrape the dsserve target, 0 when not.",
        ),
    ]
    speculative = [
        RecordingRule(
            "model_name:vllm_spec_decode_acceptance:ratio_rate5m",
            f"sum by (model_name) (rate({SPEC_ACCEPTED}[5m]))\n/\nsum by (model_name) (rate({SPEC_DRAFT_TOKENS}[5m]))",
            "Share of MTP draft tokens the engines accepted (engine.speculative; no series without it). "
            "The planner assumes engine.speculative.acceptance_rate.",
        ),
        RecordingRule(
            "model_name:vllm_spec_decode_tokens_per_step:ratio_rate5m",
            f"1 + sum by (model_name) (rate({SPEC_ACCEPTED}[5m]))\n/\nsum by (model_name) (rate({SPEC_DRAFTS}[5m]))",
            "Tokens a decoding sequence gains per engine step with MTP: its own plus the accepted drafts.",
        ),
    ]
    return {
        "dsserve-traffic": traffic,
        "dsserve-latency": latency,
        "dsserve-slo": slo,
        "dsserve-saturation": saturation,
        "dsserve-replicas": replicas,
        "dsserve-speculative": speculative,
    }


#: Recording rule groups, in evaluation order (a rule may read one recorded earlier in its group).
RECORDING_GROUPS: dict[str, list[RecordingRule]] = _groups()


def recording_rules() -> list[RecordingRule]:
    return [r for rules in RECORDING_GROUPS.values() for r in rules]


def recorded_names() -> set[str]:
    return {r.record for r in recording_rules()}


# -- names used by a PromQL expression -------------------------------------------------------------------

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    "start",
    "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w(])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric (series) names an expression selects; Grafana's ``label_values(metric, label)`` too.

    A small lexer, enough for the PromQL this project writes: string literals, label matchers
    (``{...}``), ranges and subqueries (``[...]``), grouping clauses and function names are dropped;
    what is left that looks like an identifier is a metric name. ``$variables`` are ignored.
    """
    lv = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*\w+\s*\)\s*", expr)
    if lv:
        return {lv.group(1)}
    text = _STRING.sub(" ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(1)
        if word.lower() in _KEYWORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names
