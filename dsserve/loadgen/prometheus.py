"""The server's own latency percentiles for the load test's window, from Prometheus's HTTP API.

For each (source, metric) it evaluates, ``lag_s`` after the end of the measured window (default 15 s: Ray
exports metrics every few seconds and Prometheus scrapes every few more; requests sent late in the window
also finish after it)::

    histogram_quantile(q, sum by (le) (increase(<histogram>_bucket{model_name="<model>"}[<W + lag>s])))

so the server-side figures cover the requests the client measured (sent in the window), plus the few that
completed in it after being sent during the ramp.

Sources: vLLM's engine histograms as Ray Serve exports them (``ray_vllm_time_to_first_token_seconds``,
``ray_vllm_e2e_request_latency_seconds``: arrival in the vLLM frontend to first token / finish, without
HTTP, SSE or the Serve proxy hop) and dsserve's ingress histograms
(``ray_dsserve_time_to_first_token_seconds``, ``ray_dsserve_request_duration_seconds``: at the OpenAI
ingress, see dsserve/serving/metrics.py). Quantiles interpolate inside buckets, so they are approximate between
bucket edges (0.5 s is an exact edge of all of them). A query that matches nothing is reported as such,
with the query, rather than as zero.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["QUERIES", "server_side"]

#: (source label, metric) -> histogram base name
QUERIES: dict[tuple[str, str], str] = {
    ("vLLM engine", "ttft"): "ray_vllm_time_to_first_token_seconds",
    ("vLLM engine", "e2e"): "ray_vllm_e2e_request_latency_seconds",
    ("dsserve ingress", "ttft"): "ray_dsserve_time_to_first_token_seconds",
    ("dsserve ingress", "e2e"): "ray_dsserve_request_duration_seconds",
}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def _query(name: str, q: float, model: str, range_s: int) -> str:
    sel = f'{{model_name="{model}"}}' if model else ""
    return f"histogram_quantile({q}, sum by (le) (increase({name}_bucket{sel}[{range_s}s])))"


def server_side(
    prom_url: str, *, start_epoch: float, end_epoch: float, model: str, lag_s: float = 0.0, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Server-side p50/p90/p99 (ms) per source and metric for [start, end + lag]; ``error`` when unreachable."""
    import httpx

    end_epoch += lag_s
    range_s = max(1, int(math.ceil(end_epoch - start_epoch)))
    base = prom_url.rstrip("/")
    out: dict[str, Any] = {
        "url": base,
        "range": f"{range_s}s",
        "at": end_epoch,
        "lag_s": lag_s,
        "model": model,
        "sources": sorted({s for s, _ in QUERIES}),
        "quantiles": {},
        "queries": {},
        "empty": [],
    }
    try:
        with httpx.Client(timeout=timeout_s) as client:
            for (source, metric), name in QUERIES.items():
                for key, q in QUANTILES.items():
                    expr = _query(name, q, model, range_s)
                    out["queries"][f"{source}/{metric}/{key}"] = expr
                    r = client.get(f"{base}/api/v1/query", params={"query": expr, "time": f"{end_epoch:.3f}"})
                    if r.status_code != 200:
                        return {**out, "error": f"{base}/api/v1/query answered HTTP {r.status_code}: {r.text[:200]}"}
                    body = r.json()
                    if body.get("status") != "success":
                        return {**out, "error": f"Prometheus error: {body.get('error', body)}"}
                    result = body.get("data", {}).get("result") or []
                    value = None
                    if result:
                        try:
                            v = float(result[0]["value"][1])
                            value = None if math.isnan(v) or math.isinf(v) else v * 1000.0
                        except (KeyError, IndexError, TypeError, ValueError):
                            value = None
                    if value is None:
                        out["empty"].append(f"{source}/{metric}/{key}")
                    out["quantiles"].setdefault(metric, {}).setdefault(source, {})[key] = value
    except httpx.HTTPError as exc:
        return {**out, "error": f"cannot reach Prometheus at {base}: {type(exc).__name__}: {exc}"}
    return out
