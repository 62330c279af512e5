"""Benchmark B - gateway capacity: the highest arrival rate the serving path holds within the SLO.

The engine is the simulated one (dsserve/sim), so the GPUs' work costs no CPU here and what is measured
is the serving path itself - proxy, ingress, router, the engine replica's Python, streaming - with the
load generator on the same machine. Short streamed chat (about 128 prompt tokens, 16 output tokens,
``ignore_eos``), Poisson arrivals, open loop (bench.openloop). A rate passes when p99 end-to-end
latency stays under the SLO (500 ms), nothing fails and the generator kept its schedule.

Configurations in one run, one after the other on the same machine:

- ``dsserve``: `dsserve up` on the sim twin of the production profile as shipped (direct mode: HAProxy to
  the engine replicas, each running the request pipeline with keys, limits, admission and metrics), and
  each ``--variant`` of it (e.g. ``ingress=serving.gateway=ingress``);
- ``stock-ingress`` and ``stock-direct``: plain ``ray.serve.llm.build_openai_app`` in its two modes
  (``OpenAiIngress`` in front of the replicas; direct streaming with its ``LLMRouter``), on HAProxy and
  throughput-optimized Serve as Ray's high-throughput guide sets them, with the same simulated engine,
  engine arguments and replica count (bench/stock.py).

    python -m bench.gateway                      # all, full sweep, writes bench/results/gateway.json
    python -m bench.gateway --only dsserve --rates 200,400
    python -m bench.gateway --url http://127.0.0.1:8000 --rates 50 --duration 3   # a running stack
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import start_server
from bench.openloop import chat_body, machine, run_load
from dsserve.devstack import ServerProcess, ServerStartError

#: stock ray.serve.llm, by its two modes (bench/stock.py)
STOCK = {"stock-ingress": "ingress", "stock-direct": "direct"}

PROFILE = REPO / "deploy/profiles/sim-h800x8-deepseek-v2-lite.yaml"
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)


def sweep(
    url: str,
    model: str,
    rates: list[float],
    *,
    duration_s: float,
    slo_ms: float,
    processes: int,
    prompt_tokens: int,
    output_tokens: int,
    label: str,
) -> dict[str, Any]:
    body = chat_body(model, prompt_tokens, output_tokens)
    run_load(f"{url}/v1/chat/completions", body, rate=min(rates[0], 50), duration_s=3, processes=1)  # warm up
    rows, best = [], 0.0
    for rate in rates:
        s = run_load(
            f"{url}/v1/chat/completions", body, rate=rate, duration_s=duration_s, processes=processes
        ).summary()
        s["passes"] = bool(s["valid"] and s["errors"] == 0 and s["e2e_p99_ms"] is not None and s["e2e_p99_ms"] < slo_ms)
        rows.append(s)
        print(
            f"  {label:8s} {rate:7.0f}/s  ok {s['ok']:6d}  err {s['errors']:5d}  TTFT p50/p99 "
            f"{s['ttft_p50_ms']}/{s['ttft_p99_ms']} ms  E2E p50/p99 {s['e2e_p50_ms']}/{s['e2e_p99_ms']} ms  "
            f"late p99 {s['generator_late_p99_ms']} ms  {'PASS' if s['passes'] else 'fail'}",
            flush=True,
        )
        if s["passes"]:
            best = rate
        elif not s["valid"] or s["errors"] or (s["e2e_p99_ms"] or 0) > 2 * slo_ms:
            break
    return {"max_rate_within_slo": best, "runs": rows}


def _table(results: dict[str, Any], slo_ms: float) -> str:
    lines = [
        f"{'config':8s} | max rate with p99 E2E < {slo_ms:g} ms, no errors | at that rate: TTFT p50/p99, "
        "E2E p50/p99 (ms)"
    ]
    for name, r in results.items():
        at = next((x for x in r["runs"] if x["passes"] and x["offered_rate"] == r["max_rate_within_slo"]), None)
        detail = f"{at['ttft_p50_ms']}/{at['ttft_p99_ms']}, {at['e2e_p50_ms']}/{at['e2e_p99_ms']}" if at else "-"
        lines.append(f"{name:8s} | {r['max_rate_within_slo']:>8.0f} req/s | {detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=Path, default=PROFILE, help="sim profile to serve (default: %(default)s)")
    ap.add_argument("--only", choices=("dsserve", *STOCK), help="run one configuration")
    ap.add_argument("--url", help="measure an already-running server instead of starting one")
    ap.add_argument(
        "--rates", default=",".join(str(r) for r in DEFAULT_RATES), help="arrival rates to try, ascending (req/s)"
    )
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per rate (default: %(default)s)")
    ap.add_argument("--processes", type=int, default=2, help="load generator processes (default: %(default)s)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--slo-ms", type=float, default=500.0)
    ap.add_argument(
        "--set", action="append", default=[], help="--set override for every configuration (dsserve and stock alike)"
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VAL[,KEY=VAL]",
        help="also measure dsserve with these --set overrides, e.g. p2=serving.router=power_of_two",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/gateway.json")
    args = ap.parse_args(argv)

    from dsserve.config import load_spec

    spec = load_spec(args.profile, args.set)
    rates = [float(r) for r in args.rates.split(",")]
    variants = {"dsserve": list(args.set)}
    for v in args.variant:
        name, _, sets = v.partition("=")
        variants[name] = list(args.set) + [x for x in sets.split(",") if x]
    configs = [*variants, *STOCK] if not (args.only or args.url) else [args.only or "dsserve"]
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    log_dir = Path(tempfile.mkdtemp(prefix="dsserve-bench-gateway-"))
    for name in configs:
        server: ServerProcess | None = None
        url = args.url
        try:
            if url is None:
                print(f"starting {name} ({args.profile.name}, SIMULATED engine)", flush=True)
                server = start_server(
                    args.profile,
                    list(args.set) if name in STOCK else variants[name],
                    stock=STOCK.get(name),
                    log_path=log_dir / f"{name}.log",
                )
                url = server.base_url
        except ServerStartError as exc:  # one configuration that cannot serve does not end the run
            print(f"  {name}: not measured: {exc}", flush=True)
            results[name] = {"max_rate_within_slo": 0.0, "runs": [], "error": str(exc)}
            continue
        try:
            results[name] = sweep(
                url,
                spec.model.id,
                rates,
                duration_s=args.duration,
                slo_ms=args.slo_ms,
                processes=args.processes,
                prompt_tokens=args.prompt_tokens,
                output_tokens=args.output_tokens,
                label=name,
            )
        finally:
            if server is not None:
                server.stop()
    out = {
        "benchmark": "B - gateway capacity",
        "engine": "SIMULATED (dsserve/sim); no GPU work, so the serving path is what is measured",
        "machine": machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "profile": str(args.profile.relative_to(REPO)) if args.profile.is_relative_to(REPO) else str(args.profile),
        "overrides": args.set,
        "variants": variants,
        "model": spec.model.id,
        "replicas": spec.serving.replicas,
        "dsserve_serving": {
            "proxy": spec.serving.proxy,
            "stream_batching_interval_ms": spec.serving.stream_batching_interval_ms,
        },
        "load": {
            "kind": "open loop, Poisson",
            "stream": True,
            "prompt_tokens": args.prompt_tokens,
            "output_tokens": args.output_tokens,
            "duration_s_per_rate": args.duration,
            "generator_processes": args.processes,
            "slo": f"p99 E2E < {args.slo_ms:g} ms, no errors",
        },
        "results": results,
    }
    for name in STOCK:
        if "dsserve" in results and name in results and results[name]["max_rate_within_slo"]:
            out[f"ratio_dsserve_over_{name.replace('-', '_')}"] = round(
                results["dsserve"]["max_rate_within_slo"] / results[name]["max_rate_within_slo"], 2
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("\nBenchmark B (SIMULATED engine; load generator on the same machine)")
    print(_table(results, args.slo_ms))
    for key in [k for k in out if k.startswith("ratio_dsserve_over_")]:
        print(f"dsserve / {key[len('ratio_dsserve_over_') :].replace('_', '-')}: {out[key]}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
