"""Benchmark C - open streams: how many concurrent streamed generations the stack holds on this machine.

Production deployments of this kind are quoted at up to 100,000 concurrent requests per node; this finds
what the serving path itself holds here, with the simulated engine (dsserve/sim) so that no GPU work is
needed. Streams are long generations at a slow token rate: the simulator's step time is stretched
(``engine.sim_time_scale``) so that each stream receives one token every ``--token-interval`` seconds,
which keeps the total token traffic modest while the streams stay open.

Phases, one run:

1. start `dsserve up` on the sim profile with engine limits raised so every stream is running in an
   engine (not queued): ``max_num_seqs`` and ``max_ongoing_requests`` per replica = streams / replicas;
2. baseline probes: a short streamed request every ``--probe-every`` seconds, measuring time to the first
   SSE chunk (the gateway's path: proxy, ingress, router, replica) and TTFT (first token, engine-paced);
3. open ``--streams`` streams at ``--open-rate`` per second and hold them ``--hold`` seconds while the
   probes continue;
4. report: streams opened and still open at the end of the hold, errors by kind, tokens received, the
   probes' first-chunk and TTFT percentiles before versus during the hold, and the resident memory of
   every process of the stack before and during the hold (total and per open stream).

    python -m bench.streams                         # 10,000 streams; bench/results/streams.json
    python -m bench.streams --streams 200 --hold 5  # a small run
    python -m bench.streams --stock direct          # the same against stock ray.serve.llm

``--stock ingress|direct`` runs plain ``ray.serve.llm.build_openai_app`` in that mode instead of dsserve
(bench/stock.py: the spec's engine, replicas and the overrides below; stock's own
``max_ongoing_requests`` default, 1e9, so it never refuses a stream), and writes
``bench/results/streams-stock-<mode>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import rss_by_process, start_server
from bench.openloop import chat_body, machine, ms, percentile
from dsserve.devstack import ServerProcess

PROFILE = REPO / "deploy/profiles/sim-h800x8-deepseek-v2-lite.yaml"


def _overrides(profile: Path, streams: int, token_interval_s: float, prompt: int, output: int) -> list[str]:
    """Engine limits that let every stream run, and the step-time scale that gives the wanted token rate."""
    from dsserve.config import load_spec
    from dsserve.sim.timing import timing_from_spec

    spec = load_spec(profile)
    replicas = spec.serving.replicas * spec.engine.data_parallel_size
    per = -(-streams // replicas) + 16  # room for the probes
    sets = [
        f"engine.max_num_seqs={per}",
        f"serving.max_ongoing_requests={per}",
        f"serving.max_queued_requests={max(256, streams // 10)}",
    ]
    t = timing_from_spec(load_spec(profile, sets))
    step = t.step_time_s(per, 0, prompt + output / 2, 0)
    sets.append(f"engine.sim_time_scale={max(1.0, token_interval_s / step):.3g}")
    return sets


class Counters:
    def __init__(self) -> None:
        self.opened = self.open_now = self.done = self.tokens = 0
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _stream(session: Any, url: str, payload: bytes, c: Counters, stop_at: float) -> None:
    import aiohttp

    try:
        async with session.post(
            url,
            data=payload,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as resp:
            if resp.status != 200:
                c.error(f"HTTP {resp.status}")
                await resp.read()
                return
            c.opened += 1
            c.open_now += 1
            try:
                async for line in resp.content:
                    if line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
                        c.tokens += 1
                    if line.startswith(b"data: [DONE]"):
                        c.done += 1
                        break
                    if time.monotonic() > stop_at:
                        break
            finally:
                c.open_now -= 1
    except Exception as exc:  # every failure kind is reported
        c.error(type(exc).__name__)


async def _probe(session: Any, url: str, payload: bytes) -> tuple[float | None, float | None]:
    t0 = time.monotonic()
    first_chunk = ttft = None
    try:
        async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as resp:
            async for line in resp.content:
                if line.startswith(b"data: ") and first_chunk is None:
                    first_chunk = time.monotonic() - t0
                if b'"content":"' in line and b'"content":""' not in line and ttft is None:
                    ttft = time.monotonic() - t0
                if line.startswith(b"data: [DONE]"):
                    break
    except Exception:
        pass
    return first_chunk, ttft


async def _run(
    url: str,
    model: str,
    *,
    streams: int,
    open_rate: float,
    hold_s: float,
    baseline_s: float,
    probe_every_s: float,
    prompt: int,
    output: int,
    on_phase: Any,
) -> dict[str, Any]:
    import aiohttp

    stream_body = json.dumps(chat_body(model, prompt, output, stream=True)).encode()
    probe_body = json.dumps(chat_body(model, prompt, 2, stream=True)).encode()
    c = Counters()
    probes: dict[str, list[tuple[float | None, float | None]]] = {"baseline": [], "held": []}
    phase = {"name": "baseline"}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def prober() -> None:
            while phase["name"] != "done":
                pb = probe_body.replace(b"@@request@@", f"probe-{time.monotonic()}".encode())
                res = await _probe(session, url, pb)
                if phase["name"] in probes:
                    probes[phase["name"]].append(res)
                await asyncio.sleep(probe_every_s)

        probe_task = asyncio.create_task(prober())
        await asyncio.sleep(baseline_s)
        on_phase("opening")
        phase["name"] = "opening"
        t_open = time.monotonic()
        stop_at = t_open + streams / open_rate + hold_s + 60
        tasks = []
        for i in range(streams):
            due = t_open + i / open_rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = stream_body.replace(b"@@request@@", f"s{i}".encode())
            tasks.append(asyncio.create_task(_stream(session, url, body, c, stop_at)))
        opened_in = time.monotonic() - t_open
        phase["name"] = "held"
        on_phase("held")
        await asyncio.sleep(hold_s / 2)
        mid = on_phase("mid-hold")
        await asyncio.sleep(hold_s / 2)
        held_at_end = c.open_now
        phase["name"] = "done"
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        probe_task.cancel()

    def probe_summary(phase_name: str, idx: int) -> dict[str, Any]:
        vals = [p[idx] for p in probes[phase_name] if p[idx] is not None]
        return {
            "n": len(vals),
            "p50_ms": ms(percentile(vals, 50)),
            "p99_ms": ms(percentile(vals, 99)),
            "max_ms": ms(max(vals) if vals else None),
        }

    return {
        "streams_requested": streams,
        "opened": c.opened,
        "open_at_end_of_hold": held_at_end,
        "finished_early": c.done,
        "errors": sum(c.errors.values()),
        "error_kinds": c.errors,
        "tokens_received": c.tokens,
        "seconds_to_open_all": round(opened_in, 1),
        "mid_hold": mid,
        "probe_first_chunk": {"baseline": probe_summary("baseline", 0), "held": probe_summary("held", 0)},
        "probe_ttft": {"baseline": probe_summary("baseline", 1), "held": probe_summary("held", 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=Path, default=PROFILE)
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--open-rate", type=float, default=250.0, help="streams opened per second")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds to hold all streams open")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of probes before opening")
    ap.add_argument("--probe-every", type=float, default=1.0)
    ap.add_argument(
        "--token-interval",
        type=float,
        default=10.0,
        help="seconds between two tokens of one held stream (sets engine.sim_time_scale)",
    )
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--url", help="an already running stack (its engine limits and time scale are yours to set)")
    ap.add_argument("--set", action="append", default=[], help="extra --set override for the stack")
    ap.add_argument(
        "--stock", choices=("ingress", "direct"), help="run stock ray.serve.llm in this mode instead of dsserve"
    )
    ap.add_argument("--out", type=Path, help="default bench/results/streams.json (streams-stock-<mode>.json)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = REPO / "bench/results" / (f"streams-stock-{args.stock}.json" if args.stock else "streams.json")

    from dsserve.config import load_spec

    duration = args.streams / args.open_rate + args.hold + 30
    output = max(4, int(duration / args.token_interval) + 4)  # still generating at the end of the hold
    sets = _overrides(args.profile, args.streams, args.token_interval, args.prompt_tokens, output) + args.set
    spec = load_spec(args.profile, sets)
    server: ServerProcess | None = None
    url = args.url
    server_name = "dsserve" if args.stock is None else f"stock ray.serve.llm ({args.stock})"
    if url is None:
        print(f"starting {server_name} ({args.profile.name}, SIMULATED engine) with {' '.join(sets)}", flush=True)
        log_path = Path(tempfile.mkdtemp()) / "server.log"
        server = start_server(args.profile, sets, stock=args.stock, log_path=log_path)
        url = server.base_url
    rss: dict[str, dict[str, int]] = {}

    def on_phase(phase: str) -> Any:
        print(f"  phase: {phase}", flush=True)
        if server is not None and server.proc is not None and phase in ("opening", "mid-hold"):
            rss["before" if phase == "opening" else "held"] = rss_by_process(server.proc.pid)
        return None

    load_before = os.getloadavg()
    try:
        res = asyncio.run(
            _run(
                f"{url}/v1/chat/completions",
                spec.model.id,
                streams=args.streams,
                open_rate=args.open_rate,
                hold_s=args.hold,
                baseline_s=args.baseline,
                probe_every_s=args.probe_every,
                prompt=args.prompt_tokens,
                output=output,
                on_phase=on_phase,
            )
        )
    finally:
        if server is not None:
            server.stop()
    memory = {}
    if "before" in rss and "held" in rss:
        held = max(res["open_at_end_of_hold"], 1)
        for name in sorted(set(rss["before"]) | set(rss["held"])):
            b, h = rss["before"].get(name, 0), rss["held"].get(name, 0)
            memory[name] = {
                "before_mib": round(b / 2**20, 1),
                "held_mib": round(h / 2**20, 1),
                "kib_per_open_stream": round((h - b) / 1024 / held, 1),
            }
    out = {
        "benchmark": "C - open streams",
        "server": server_name,
        "engine": "SIMULATED (dsserve/sim), steps stretched for a slow token rate",
        "machine": machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "profile": str(args.profile.relative_to(REPO)) if args.profile.is_relative_to(REPO) else str(args.profile),
        "overrides": sets,
        "load": {
            "streams": args.streams,
            "open_rate_per_s": args.open_rate,
            "hold_s": args.hold,
            "token_interval_s": args.token_interval,
            "prompt_tokens": args.prompt_tokens,
            "max_tokens": output,
        },
        "results": res,
        "memory_by_process": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    r = res
    print(
        f"\nBenchmark C ({server_name}, SIMULATED engine): {r['opened']}/{args.streams} streams opened in "
        f"{r['seconds_to_open_all']} s, {r['open_at_end_of_hold']} still open after {args.hold:g} s, "
        f"errors {r['errors']} {r['error_kinds'] or ''}, tokens received {r['tokens_received']}"
    )
    for what in ("probe_first_chunk", "probe_ttft"):
        b, h = r[what]["baseline"], r[what]["held"]
        print(
            f"  {what:18s} baseline p50/p99 {b['p50_ms']}/{b['p99_ms']} ms (n={b['n']})   while held "
            f"p50/p99 {h['p50_ms']}/{h['p99_ms']} ms (n={h['n']})"
        )
    for name, m in memory.items():
        print(
            f"  {name:40s} {m['before_mib']:8.1f} -> {m['held_mib']:8.1f} MiB  "
            f"{m['kib_per_open_stream']:7.1f} KiB/stream"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
