"""Soak: a steady open-loop rate for a long time; errors, the p99 trend and every process's memory growth.

Starts `dsserve up` (default: the embedded local-cpu profile, real vLLM CPU engine) or measures a stack
already running (--url, with --pid of its `dsserve up` process for the memory samples), warms it up,
then offers a constant Poisson rate (default: the profile's slo.target_qps) of streamed chats for
--duration seconds. Every --window seconds it prints one row: requests, errors, TTFT and E2E p50/p99
of the requests sent in that window, and the resident memory (RSS) of each process in the stack's tree
(Ray's GCS, raylet, Serve controller, proxy or HAProxy, ingress and engine replicas, vLLM's EngineCore).
At the end: error kinds, the p99 trend (first versus last quarter, and a least-squares slope) and each
process's memory growth (MiB over the run and MiB/hour from a least-squares fit over the samples after
warm-up), printed as a table and written to bench/results/soak.json.

This is a benchmark, not a test: nothing here has a pass threshold except `--max-errors` for scripted use.

    python -m bench.soak                              # 30 minutes, local-cpu, its target rate
    python -m bench.soak --duration 120 --window 10   # a short look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import rss_by_process, start_server
from bench.openloop import UNIQUE_MARKER, Sample, arrivals, chat_body, machine, ms, percentile, timed_request
from dsserve.devstack import ServerProcess, wait_for_models

MIB = 1024 * 1024


def _slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour: a trend that one noisy sample cannot fake."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx * 3600.0


def window_rows(samples: list[Sample], duration_s: float, window_s: float) -> list[dict[str, Any]]:
    """Per window of *scheduled* send time: what the requests sent then saw."""
    rows = []
    start = 0.0
    while start < duration_s - 1e-9:
        end = min(duration_s, start + window_s)
        ws = [s for s in samples if start <= s.scheduled < end]
        ok = [s for s in ws if s.status == 200 and not s.error and s.e2e_s is not None]
        ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
        e2e = [s.e2e_s for s in ok if s.e2e_s is not None]
        rows.append(
            {
                "t0_s": round(start, 1),
                "t1_s": round(end, 1),
                "sent": len(ws),
                "ok": len(ok),
                "errors": len(ws) - len(ok),
                "ttft_p50_ms": ms(percentile(ttft, 50)),
                "ttft_p99_ms": ms(percentile(ttft, 99)),
                "e2e_p50_ms": ms(percentile(e2e, 50)),
                "e2e_p99_ms": ms(percentile(e2e, 99)),
                "generator_late_p99_ms": ms(percentile([s.late_s for s in ws], 99)),
            }
        )
        start = end
    return rows


def memory_summary(mem: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per process name: RSS at the first and last sample, the growth, its rate, and the peak."""
    names = sorted({n for m in mem for n in m["rss"]})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        pts = [(m["t_s"], m["rss"][name] / MIB) for m in mem if name in m["rss"]]
        if not pts:
            continue
        slope = _slope_per_hour(pts)
        # Warm-up growth (allocator pools, caches) levels off; a leak keeps going. The second half's growth
        # tells the two apart where the whole run's growth cannot.
        mid = min(pts, key=lambda p: abs(p[0] - (pts[0][0] + pts[-1][0]) / 2))
        out[name] = {
            "samples": len(pts),
            "first_mib": round(pts[0][1], 1),
            "last_mib": round(pts[-1][1], 1),
            "peak_mib": round(max(p[1] for p in pts), 1),
            "growth_mib": round(pts[-1][1] - pts[0][1], 1),
            "second_half_growth_mib": round(pts[-1][1] - mid[1], 1),
            "slope_mib_per_hour": None if slope is None else round(slope, 1),
        }
    return out


def error_kinds(samples: list[Sample]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in samples:
        if s.status == 200 and not s.error and s.e2e_s is not None:
            continue
        key = f"HTTP {s.status}" if s.status and s.status != 200 else (s.error or "no response")[:80]
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def p99_trend(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The p99 of the first and last quarter of windows, and the slope over all of them."""
    vals = [(r["t0_s"], r[key]) for r in rows if r[key] is not None]
    if not vals:
        return {"first_quarter_ms": None, "last_quarter_ms": None, "slope_ms_per_hour": None}
    q = max(1, len(vals) // 4)
    first = sorted(v for _, v in vals[:q])
    last = sorted(v for _, v in vals[-q:])
    slope = _slope_per_hour(vals)
    return {
        "first_quarter_ms": first[len(first) // 2],
        "last_quarter_ms": last[len(last) // 2],
        "slope_ms_per_hour": None if slope is None else round(slope, 1),
    }


async def soak(
    url: str,
    body: dict[str, Any],
    *,
    rate: float,
    duration_s: float,
    window_s: float,
    mem_every_s: float,
    root_pid: int | None,
    seed: int,
    timeout_s: float,
    headers: dict[str, str],
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Poisson arrivals for ``duration_s``, a memory sample every ``mem_every_s``, a printed row per window."""
    import aiohttp

    rng = random.Random(seed)
    payload = json.dumps(body).encode()
    head, marker, tail = payload.partition(UNIQUE_MARKER.encode())
    hdrs = {"Content-Type": "application/json", **headers}
    samples: list[Sample] = []
    mem: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2

    async def sample_memory() -> None:
        while True:
            t = loop.time() - t0
            if root_pid is not None:
                rss = await loop.run_in_executor(None, rss_by_process, root_pid)
                mem.append({"t_s": round(t, 1), "rss": rss})
            if t >= duration_s:
                return
            await asyncio.sleep(mem_every_s)

    async def report_windows() -> None:
        done = 0
        while done * window_s < duration_s:
            await asyncio.sleep(max(0.0, t0 + (done + 1) * window_s + timeout_s / 10 - loop.time()))
            end = min(duration_s, (done + 1) * window_s)
            row = window_rows([s for s in samples if done * window_s <= s.scheduled < end], end, end)[-1]
            rss = mem[-1]["rss"] if mem else {}
            top = ", ".join(
                f"{k.replace('ray::', '')} {v / MIB:.0f}" for k, v in sorted(rss.items(), key=lambda kv: -kv[1])[:4]
            )
            print(
                f"  {done * window_s:6.0f}-{end:<6.0f}s sent {row['sent']:5d} err {row['errors']:3d}  TTFT p50/p99 "
                f"{row['ttft_p50_ms']}/{row['ttft_p99_ms']} ms  E2E p50/p99 {row['e2e_p50_ms']}/"
                f"{row['e2e_p99_ms']} ms  RSS MiB: {top}",
                flush=True,
            )
            done += 1

    async def run_one(session: Any, data: bytes, at: float) -> None:
        samples.append(await timed_request(session, url, data, hdrs, t0, at, timeout_s))

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        side = [asyncio.ensure_future(sample_memory()), asyncio.ensure_future(report_windows())]
        tasks = []
        async for i, at in arrivals(rate, duration_s, rng, t0):
            data = head + f"soak-{i}".encode() + tail if marker else payload
            tasks.append(asyncio.ensure_future(run_one(session, data, at)))
        await asyncio.gather(*tasks)
        await asyncio.gather(*side)
    return samples, mem


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=REPO / "deploy" / "profiles" / "local-cpu.yaml",
        help="profile `dsserve up` starts (ignored with --url)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="spec override passed to `dsserve up --set` (repeatable)",
    )
    ap.add_argument("--url", help="measure a running stack at this base URL instead of starting one")
    ap.add_argument("--pid", type=int, help="with --url: the `dsserve up` process whose tree's memory to sample")
    ap.add_argument("--rate", type=float, help="requests/s (default: the profile's slo.target_qps)")
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds of steady load")
    ap.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    ap.add_argument("--mem-every", type=float, default=15.0, help="seconds between memory samples")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds of the same load before measuring")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--max-errors", type=int, default=None, help="exit 1 when more requests than this failed (default: report only)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dsserve.config import load_spec
    from dsserve.sim.serving import engine_label

    spec = load_spec(args.profile, args.set)
    rate = args.rate or spec.slo.target_qps
    server: ServerProcess | None = None
    if args.url:
        url, root_pid = args.url.rstrip("/"), args.pid
    else:
        print(f"starting dsserve up {args.profile.name} ...", flush=True)
        server = start_server(args.profile, args.set)
        assert server.proc is not None
        url, root_pid = server.base_url, server.proc.pid
    report: dict[str, Any] = {
        "what": "soak: steady open-loop streamed chat, errors, p99 trend, memory per process",
        "command": " ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "loadavg_start": list(os.getloadavg()),
        "profile": spec.name,
        "engine": engine_label(spec),
        "model": spec.model.id,
        "proxy": spec.serving.proxy,
        "load": {
            "rate": rate,
            "arrivals": "poisson",
            "duration_s": args.duration,
            "window_s": args.window,
            "prompt_tokens": args.prompt_tokens,
            "max_tokens": args.max_tokens,
            "stream": True,
        },
        "started_by_this_script": server is not None,
        "complete": False,
    }
    body = chat_body(spec.model.id, args.prompt_tokens, args.max_tokens)
    headers = {}
    if spec.api.api_keys_env and os.environ.get(spec.api.api_keys_env):
        headers["Authorization"] = f"Bearer {os.environ[spec.api.api_keys_env].split(',')[0]}"
    try:
        wait_for_models(url, 600)
        print(
            f"{report['engine']}, {spec.model.id}, proxy {spec.serving.proxy}: warm-up {args.warmup:.0f} s, then "
            f"{rate:g} req/s for {args.duration:.0f} s",
            flush=True,
        )
        if args.warmup > 0:
            asyncio.run(
                soak(
                    f"{url}/v1/chat/completions",
                    body,
                    rate=rate,
                    duration_s=args.warmup,
                    window_s=args.warmup,
                    mem_every_s=args.warmup,
                    root_pid=None,
                    seed=args.seed + 1,
                    timeout_s=args.timeout,
                    headers=headers,
                )
            )
        samples, mem = asyncio.run(
            soak(
                f"{url}/v1/chat/completions",
                body,
                rate=rate,
                duration_s=args.duration,
                window_s=args.window,
                mem_every_s=args.mem_every,
                root_pid=root_pid,
                seed=args.seed,
                timeout_s=args.timeout,
                headers=headers,
            )
        )
    finally:
        if server is not None:
            server.stop()
    rows = window_rows(samples, args.duration, args.window)
    ok = [s for s in samples if s.status == 200 and not s.error and s.e2e_s is not None]
    kinds = error_kinds(samples)
    report.update(
        {
            "loadavg_end": list(os.getloadavg()),
            "totals": {
                "sent": len(samples),
                "ok": len(ok),
                "errors": sum(kinds.values()),
                "error_kinds": kinds,
                "achieved_rate": round(len(ok) / args.duration, 2),
                "ttft_p50_ms": ms(percentile([s.ttft_s for s in ok if s.ttft_s is not None], 50)),
                "ttft_p99_ms": ms(percentile([s.ttft_s for s in ok if s.ttft_s is not None], 99)),
                "e2e_p50_ms": ms(percentile([s.e2e_s for s in ok if s.e2e_s is not None], 50)),
                "e2e_p99_ms": ms(percentile([s.e2e_s for s in ok if s.e2e_s is not None], 99)),
                "generator_late_p99_ms": ms(percentile([s.late_s for s in samples], 99)),
            },
            "p99_trend": {"ttft": p99_trend(rows, "ttft_p99_ms"), "e2e": p99_trend(rows, "e2e_p99_ms")},
            "windows": rows,
            "memory": memory_summary(mem),
            "memory_samples": mem,
            "complete": True,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    t = report["totals"]
    print(
        f"\nSoak ({report['engine']}, {spec.model.id}, {rate:g} req/s x {args.duration:.0f} s, "
        f"{report['machine']['cores']}-core {report['machine']['cpu']}):"
    )
    print(f"  sent {t['sent']}, ok {t['ok']}, errors {t['errors']} {kinds or ''}")
    print(
        f"  TTFT p50/p99 {t['ttft_p50_ms']}/{t['ttft_p99_ms']} ms, E2E p50/p99 {t['e2e_p50_ms']}/{t['e2e_p99_ms']} ms"
    )
    for k, tr in report["p99_trend"].items():
        print(
            f"  {k} p99 by window: first quarter {tr['first_quarter_ms']} ms, last quarter "
            f"{tr['last_quarter_ms']} ms, slope {tr['slope_ms_per_hour']} ms/h"
        )
    print(
        f"\n  {'process':40s} {'first MiB':>10s} {'last MiB':>10s} {'peak MiB':>10s} {'growth':>8s} "
        f"{'2nd half':>8s} {'MiB/h':>8s}"
    )
    for name, m in sorted(report["memory"].items(), key=lambda kv: -kv[1]["last_mib"]):
        slope = m["slope_mib_per_hour"] if m["slope_mib_per_hour"] is not None else "-"
        print(
            f"  {name[:40]:40s} {m['first_mib']:10.1f} {m['last_mib']:10.1f} {m['peak_mib']:10.1f} "
            f"{m['growth_mib']:8.1f} {m['second_half_growth_mib']:8.1f} {slope:>8}"
        )
    print(f"\nwrote {args.out}")
    if args.max_errors is not None and t["errors"] > args.max_errors:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
