"""Benchmark A's second step: start each server, warm it up, run the loads on it, stop it.

Bare vLLM runs first: a calibration burst on it sets the loads' rates (unless --rates gives them), and
every other server then sees the same loads. The report fills as it goes and is saved after each load, so
a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import time
from typing import Any

import httpx

from bench import REPO
from bench.harness import CpuMeter, Server, engine_cli_args, loadavg
from bench.openloop import LoadResult, run_load
from bench.overhead.config import RAY_WORKER_NICENESS, Config, plan_loads, serving_settings
from bench.overhead.report import code_state, save
from bench.stock import stock_server
from dsserve.devstack import ServerProcess


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
    la = loadavg()
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


def _started(name: str, server: ServerProcess, startup_timeout_s: float, **info: Any) -> Server:
    """Start ``server`` and describe it for the report."""
    server.start(startup_timeout_s)
    print(f"  {name} ready after {server.ready_s:.1f}s", flush=True)
    root = server.proc.pid if server.proc else None
    info = {"command": server.shown_cmd, **info, "ready_s": round(server.ready_s, 1), "log": str(server.log_path)}
    return Server(name, server.base_url, True, root_pid=root, info=info)


def calibrate(config: Config, url: str, report: dict[str, Any]) -> float | None:
    """Bare vLLM's capacity (req/s) from a burst of requests sent at once; None when --rates gives the loads."""
    args = config.args
    if args.rates:
        report["calibration"] = {"skipped": "rates given with --rates"}
        return None
    n = config.calibration_requests
    _, cal = burst(f"{url}/v1/chat/completions", config.body, n, args.request_timeout_s)
    cap = cal["output_tok_s"] / args.max_tokens
    report["calibration"] = {
        **cal,
        "capacity_req_s": round(cap, 2),
        "how": f"burst of {n} requests at once on bare vLLM",
    }
    print(
        f"  calibration: {cal['ok']}/{cal['requests']} ok in {cal['makespan_s']:.2f}s -> "
        f"{cal['output_tok_s']:.0f} tok/s = {cap:.2f} req/s capacity",
        flush=True,
    )
    return cap


def run_bare_vllm(config: Config, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Bare vLLM (started here, or --url-vllm): warm-up, calibration, then every load. Returns the loads."""
    args = config.args
    vllm: ServerProcess | None = None
    try:
        if args.url_vllm:
            vsrv = Server("vllm", args.url_vllm.rstrip("/"), False, info={"command": "reused: " + args.url_vllm})
        else:
            vllm = ServerProcess.bare_vllm(
                config.model_path,
                config.model,
                [*engine_cli_args(config.engine_kwargs), *args.vllm_arg],
                env=config.env_vars,
                nice=args.vllm_nice,
                log_path=config.log_dir / "vllm-serve.log",
                cwd=REPO,
            )
            print(f"starting bare vLLM: {vllm.shown_cmd}", flush=True)
            vsrv = _started("vllm", vllm, args.startup_timeout_s, env_vars=config.env_vars, nice=args.vllm_nice)
        warm = warm_up(vsrv.url, config.model, config.body, args.warmup_burst)
        report["request"]["server_usage"] = warm
        loads = plan_loads(args, calibrate(config, vsrv.url, report))
        report["loads"] = loads
        report["servers"]["vllm"] = {}
        measure_server(
            vsrv,
            loads,
            config.body,
            config.model,
            args,
            warm=warm,
            out=report["servers"]["vllm"],
            after_load=lambda: save(config.out_path, report),
        )
    finally:
        if vllm is not None:
            vllm.stop()
    return loads


def server_runs(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, extra --set overrides, extra environment) of each server after bare vLLM, in order."""
    runs: list[tuple[str, list[str], dict[str, str]]] = [] if args.no_default_dsserve else [("dsserve", [], {})]
    runs += [(f"dsserve[{label}]", sets, env) for label, sets, env in args.variant]
    runs += [(f"stock-{mode}", [], {}) for mode in args.stock]
    return runs


def _server(config: Config, name: str, extra: list[str], extra_env: dict[str, str]) -> ServerProcess:
    args = config.args
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if name.startswith("stock-"):
        return stock_server(config.profile, name.removeprefix("stock-"), args.sets, config.log_dir / f"{safe}.log")
    sets = [*args.sets, *extra]
    return ServerProcess.dsserve_up(
        config.profile, sets, env=extra_env, log_path=config.log_dir / f"{safe}.log", cwd=REPO
    )


def run_dsserve(config: Config, loads: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """dsserve as given (or --url-dsserve), each --variant, then each --stock server, on the same loads."""
    from dsserve.config import load_spec

    args = config.args
    for name, extra, extra_env in server_runs(args):
        vspec = load_spec(config.profile, [*args.sets, *extra])
        up: ServerProcess | None = None
        try:
            if args.url_dsserve and not name.startswith("stock-"):
                dsrv = Server(
                    name, args.url_dsserve.rstrip("/"), False, info={"command": "reused: " + args.url_dsserve}
                )
            else:
                up = _server(config, name, extra, extra_env)
                print(f"starting {name}: {up.shown_cmd}", flush=True)
                dsrv = _started(name, up, args.startup_timeout_s)
            dsrv.info["sets"] = extra
            dsrv.info["env"] = extra_env
            dsrv.info["code"] = code_state()
            dsrv.info["serving"] = serving_settings(vspec)
            dsrv.info["serving"]["ray_worker_niceness"] = int(
                {**os.environ, **extra_env}.get("RAY_worker_niceness", RAY_WORKER_NICENESS)
            )
            report["servers"][name] = {}
            measure_server(
                dsrv,
                loads,
                config.body,
                config.model,
                args,
                out=report["servers"][name],
                after_load=lambda: save(config.out_path, report),
            )
        finally:
            if up is not None:
                up.stop()
