"""An open-loop HTTP load generator for the benchmarks: Poisson arrivals, streamed OpenAI requests.

Open loop means requests are sent when the arrival process says, whether or not earlier ones have
answered, so a slow server shows up as latency and errors rather than as a politely lower rate (the
closed-loop trap of wrk -c or Locust users). Each arrival is timed from its *scheduled* send time, and
the generator's own lateness is recorded: a run whose generator fell behind (p99 lateness above
``MAX_LATE_S``) is marked invalid rather than reported as the server's latency.

Several processes share the rate (``processes``) because one Python event loop tops out around a
thousand short streamed requests a second. The benchmark scripts (bench.overhead, bench.gateway,
bench.frontend_cpu) import :func:`run_load`, bench.soak the single :func:`timed_request`; it is not part of
the dsserve package. Percentiles are :func:`dsserve.stats.percentile`, the load tester's and its SLO gate's.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from dsserve.loadgen.measure import carries_a_token
from dsserve.stats import percentile

__all__ = [
    "UNIQUE_MARKER",
    "LoadResult",
    "Sample",
    "arrivals",
    "chat_body",
    "machine",
    "ms",
    "percentile",
    "run_load",
    "timed_request",
]

UNIQUE_MARKER = "@@request@@"  # replaced by a per-request id in every request body
MAX_LATE_S = 0.050  # generator lateness (p99) above which a run says nothing about the server


@dataclass
class Sample:
    scheduled: float  # seconds since the run's start
    late_s: float
    status: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int = 0
    error: str = ""


@dataclass
class LoadResult:
    rate: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200 and not s.error and s.e2e_s is not None]

    def summary(self) -> dict[str, Any]:
        ok = self.ok
        ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
        e2e = [s.e2e_s for s in ok if s.e2e_s is not None]
        late = [s.late_s for s in self.samples]
        errors: dict[str, int] = {}
        for s in self.samples:
            if s not in ok:
                key = f"HTTP {s.status}" if s.status and s.status != 200 else (s.error or "no response")[:60]
                errors[key] = errors.get(key, 0) + 1
        toks = sum(s.output_tokens for s in ok)
        return {
            "offered_rate": self.rate,
            "duration_s": self.duration_s,
            "sent": len(self.samples),
            "ok": len(ok),
            "errors": sum(errors.values()),
            "error_kinds": errors,
            "achieved_rate": round(len(ok) / self.duration_s, 1) if self.duration_s else 0.0,
            "ttft_p50_ms": ms(percentile(ttft, 50)),
            "ttft_p99_ms": ms(percentile(ttft, 99)),
            "e2e_p50_ms": ms(percentile(e2e, 50)),
            "e2e_p99_ms": ms(percentile(e2e, 99)),
            "output_tok_s": round(toks / self.duration_s, 1) if self.duration_s else 0.0,
            "generator_late_p99_ms": ms(percentile(late, 99)),
            "valid": (percentile(late, 99) or 0.0) <= MAX_LATE_S,
        }


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds to 0.1, as every benchmark JSON reports them; None stays None."""
    return None if seconds is None else round(seconds * 1000, 1)


def chat_body(model: str, prompt_tokens: int, max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
    """A chat request of about ``prompt_tokens`` (4 characters per token) that generates exactly max_tokens."""
    words = ("latency throughput replica engine token stream batch cache expert layer ").split()
    text = " ".join(words[i % len(words)] for i in range(max(1, prompt_tokens * 4 // 8)))
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"{UNIQUE_MARKER} {text}"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def timed_request(
    session: Any, url: str, payload: bytes, headers: dict[str, str], t0: float, at: float, timeout_s: float
) -> Sample:
    """One request scheduled ``at`` seconds after ``t0`` (loop clock), timed from its schedule's send time."""
    import aiohttp

    loop = asyncio.get_running_loop()
    now = loop.time()
    s = Sample(scheduled=at, late_s=max(0.0, now - (t0 + at)))
    start = now
    try:
        async with session.post(
            url, data=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            s.status = resp.status
            if resp.status != 200:
                await resp.read()
                s.error = f"HTTP {resp.status}"
                return s
            if resp.content_type == "text/event-stream":
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:]
                    if data == b"[DONE]":
                        break
                    obj = json.loads(data)
                    if "error" in obj:
                        s.error = str(obj["error"])[:80]
                        break
                    usage = obj.get("usage")
                    if usage:
                        s.output_tokens = usage.get("completion_tokens", s.output_tokens)
                    for ch in obj.get("choices") or ():
                        if s.ttft_s is None and carries_a_token(ch):  # the load tester's TTFT definition
                            s.ttft_s = loop.time() - start
            else:
                obj = json.loads(await resp.read())
                s.output_tokens = (obj.get("usage") or {}).get("completion_tokens", 0)
                s.ttft_s = loop.time() - start
            s.e2e_s = loop.time() - start
    except Exception as exc:  # the benchmark reports every failure kind; it must not stop on one
        s.error = type(exc).__name__
    return s


async def arrivals(
    rate: float, duration_s: float, rng: random.Random, t0: float, *, even: bool = False
) -> AsyncIterator[tuple[int, float]]:
    """Wake at each arrival of an open-loop schedule and yield (index, scheduled seconds after ``t0``).

    Poisson (exponential gaps) by default, evenly spaced with ``even``. ``t0`` is on the event loop's
    clock (``loop.time()``, i.e. ``time.monotonic()``). The caller starts its request and comes back at
    once, so a slow server never delays the schedule.
    """
    loop = asyncio.get_running_loop()
    at, i = 0.0, 0
    while True:
        at += 1.0 / rate if even else rng.expovariate(rate)
        if at >= duration_s:
            return
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i, at
        i += 1


async def _run_async(
    url: str,
    body: dict[str, Any],
    rate: float,
    duration_s: float,
    seed: int,
    headers: dict[str, str],
    timeout_s: float,
    hold: bool,
) -> list[Sample]:
    import aiohttp

    rng = random.Random(seed)
    payload = json.dumps(body).encode()
    # Every request gets its own prompt prefix: identical prompts would all hash to one replica under a
    # prefix-affinity router and hit the prefix cache, which real traffic does not.
    head, marker, tail = payload.partition(UNIQUE_MARKER.encode())
    hdrs = {"Content-Type": "application/json", **headers}
    conn = aiohttp.TCPConnector(limit=0, force_close=False, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=conn) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        tasks = []
        async for i, at in arrivals(rate, duration_s, rng, t0, even=hold):
            data = head + f"{seed}-{i}".encode() + tail if marker else payload
            tasks.append(asyncio.ensure_future(timed_request(session, url, data, hdrs, t0, at, timeout_s)))
        return list(await asyncio.gather(*tasks))


def _worker(args: tuple[Any, ...], out: Any) -> None:
    samples = asyncio.run(_run_async(*args))
    out.put([asdict(s) for s in samples])


def run_load(
    url: str,
    body: dict[str, Any],
    *,
    rate: float,
    duration_s: float,
    processes: int = 1,
    seed: int = 1,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    hold: bool = False,
) -> LoadResult:
    """Send ``rate`` requests/s (Poisson; evenly spaced with ``hold``) for ``duration_s`` and collect samples."""
    headers = headers or {}
    per = rate / processes
    if processes == 1:
        samples = asyncio.run(_run_async(url, body, per, duration_s, seed, headers, timeout_s, hold))
        return LoadResult(rate, duration_s, samples)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=((url, body, per, duration_s, seed + i, headers, timeout_s, hold), q))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    samples: list[Sample] = []
    for _ in procs:
        samples += [Sample(**d) for d in q.get()]
    for p in procs:
        p.join()
    return LoadResult(rate, duration_s, samples)


def machine() -> dict[str, Any]:
    """What produced the figures, for every JSON the benchmarks write."""
    import os
    import platform
    from pathlib import Path

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
