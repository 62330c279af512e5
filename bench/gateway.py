"""Benchmark B - gateway capacity: the highest arrival rate the serving path holds within the SLO.

The engine is the simulated one (dsserve/sim), so the GPUs' work costs no CPU here and what is measured
is the serving path itself - proxy, ingress, router, the engine replica's Python, streaming - with the
load generator on the same machine. Short streamed chat (about 128 prompt tokens, 16 output tokens,
``ignore_eos``), Poisson arrivals, open loop (bench/openloop.py). A rate passes when p99 end-to-end
latency stays under the SLO (500 ms), nothing fails and the generator kept its schedule.

Configurations in one run, one after the other on the same machine:

- ``dsserve``: `dsserve up` on the sim twin of the production profile as shipped (direct mode: HAProxy to
  the engine replicas, each running the request pipeline with keys, limits, admission and metrics), and
  each ``--variant`` of it (e.g. ``ingress=serving.gateway=ingress``);
- ``stock-ingress`` and ``stock-direct``: plain ``ray.serve.llm.build_openai_app`` in its two modes
  (``OpenAiIngress`` in front of the replicas; direct streaming with its ``LLMRouter``), on HAProxy and
  throughput-optimized Serve as Ray's high-throughput guide sets them, with the same simulated engine,
  engine arguments and replica count (bench/harness.py ``StockServe``).

    .venv/bin/python bench/gateway.py                      # all, full sweep, writes bench/results/gateway.json
    .venv/bin/python bench/gateway.py --only dsserve --rates 200,400
    .venv/bin/python bench/gateway.py --url http://127.0.0.1:8000 --rates 50 --duration 3   # a running stack
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import StockServe  # noqa: E402
from bench.openloop import chat_body, machine, run_load  # noqa: E402

#: stock ray.serve.llm, by its two modes (bench/harness.py)
STOCK = {"stock-ingress": "ingress", "stock-direct": "direct"}

PROFILE = REPO / "deploy/profiles/sim-h800x8-deepseek-v2-lite.yaml"
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_models(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"{url} did not answer /v1/models within {timeout_s:.0f}s")


def start_dsserve(profile: Path, port: int, sets: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "dsserve.cli", "up", str(profile), "--port", str(port), "--no-sample"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(f"  [dsserve] {line}")
        if "READY" in line:
            break
    else:
        raise SystemExit("dsserve up exited before READY")
    _drain(proc)
    return proc


def _drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def pump() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    threading.Thread(target=pump, daemon=True).start()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    for name in configs:
        proc: Any = None
        stock: StockServe | None = None
        url = args.url
        try:
            if url is None:
                print(f"starting {name} ({args.profile.name}, SIMULATED engine)", flush=True)
                if name in STOCK:
                    stock = StockServe(
                        args.profile, STOCK[name], list(args.set), 600.0, Path(tempfile.mkdtemp()) / f"{name}.log"
                    )
                    url = stock.start()
                else:
                    port = _free_port()
                    proc = start_dsserve(args.profile, port, variants[name])
                    url = f"http://127.0.0.1:{port}"
                _wait_models(url, 120)
        except (SystemExit, RuntimeError) as exc:  # one configuration that cannot serve does not end the run
            print(f"  {name}: not measured: {exc}", flush=True)
            results[name] = {"max_rate_within_slo": 0.0, "runs": [], "error": str(exc)}
            if proc is not None:
                stop(proc)
            if stock is not None:
                stock.stop()
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
            if proc is not None:
                stop(proc)
            if stock is not None:
                stock.stop()
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
