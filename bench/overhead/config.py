"""Benchmark A's first step: the command line, and everything derived from it before a server starts.

:func:`load_config` parses the arguments, fills the ``--quick`` defaults, loads the spec and derives what
both servers share: the model (built if it is a tiny one), the engine arguments and environment dsserve
gives it (bare vLLM gets exactly these), the request body and the calibration burst size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench.overhead
from bench import REPO
from bench.openloop import chat_body

DEFAULT_PROFILE = REPO / "deploy/profiles/local-cpu.yaml"
TTFT_TARGET_MS = 5.0  # dsserve TTFT p50 (light, moderate loads) at most this much above bare vLLM's
#: Ray's raylet starts every worker process (Serve's proxy, replicas, and the vLLM engine processes they
#: spawn) at this nice value (ray_config_def.h worker_niceness; env RAY_worker_niceness overrides it)
RAY_WORKER_NICENESS = 15
THROUGHPUT_TARGET = 0.95  # dsserve output tok/s at saturation at least this fraction of bare vLLM's


@dataclass
class Config:
    """One run's settings: the parsed arguments (defaults filled) and what the spec gives both servers."""

    args: argparse.Namespace
    profile: Path
    spec: Any
    llm_config: dict[str, Any]
    model: str
    model_path: str
    engine_kwargs: dict[str, Any]
    env_vars: dict[str, str]
    body: dict[str, Any]
    calibration_requests: int
    out_path: Path
    log_dir: Path

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)


def parse_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
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
    ap = argparse.ArgumentParser(
        description=bench.overhead.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        type=parse_variant,
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
        "HAProxy and throughput-optimized Serve, the same engine config (bench/stock.py)",
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


def load_config(argv: list[str] | None = None) -> Config:
    """Parse ``argv``, check the combinations, fill the defaults and derive the servers' shared inputs."""
    ap = build_parser()
    args = ap.parse_args(argv)
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

    from dsserve.app import llm_config, uses_data_parallel
    from dsserve.config import load_spec

    profile = Path(args.profile)
    spec = load_spec(profile, args.sets)
    if uses_data_parallel(spec):
        ap.error(f"{profile}: the benchmark needs one plain engine (no data-parallel attention)")
    cfg = llm_config(spec)
    model_path = spec.model.source.engine_model()
    return Config(
        args=args,
        profile=profile,
        spec=spec,
        llm_config=cfg,
        model=spec.model.id,
        model_path=model_path,
        engine_kwargs=cfg["engine_kwargs"],
        env_vars=dict(cfg.get("runtime_env", {}).get("env_vars", {})),
        body=chat_body(spec.model.id, args.prompt_tokens, args.max_tokens),
        calibration_requests=args.calibration_requests or (16 if q else 2 * spec.engine.max_num_seqs),
        out_path=out_path,
        log_dir=log_dir,
    )


def serving_settings(spec: Any) -> dict[str, Any]:
    """dsserve's serving settings a run's figures depend on, for the JSON."""
    from dsserve.app import admission_limit

    return {
        "proxy": spec.serving.proxy,
        "stream_batching_interval_ms": spec.serving.stream_batching_interval_ms,
        "replicas": spec.serving.replicas,
        "max_ongoing_requests": spec.serving.max_ongoing_requests,
        "max_queued_requests": spec.serving.max_queued_requests,
        "router": spec.serving.router,
        "gateway": spec.serving.gateway,
        "admission_limit": admission_limit(spec),
    }


def plan_loads(args: argparse.Namespace, capacity_req_s: float | None) -> list[dict[str, Any]]:
    """The light, moderate and saturation loads: fractions of bare vLLM's capacity, or --rates as given."""
    if args.rates:
        light, moderate, saturation = args.rates if len(args.rates) == 3 else (0.0, *args.rates)
        what = ("given", "given", "given")
    else:
        assert capacity_req_s is not None
        light = args.light_fraction * capacity_req_s
        moderate, saturation = args.moderate_fraction * capacity_req_s, args.saturation_factor * capacity_req_s
        what = tuple(
            f"{x:g} x bare vLLM capacity" for x in (args.light_fraction, args.moderate_fraction, args.saturation_factor)
        )
    durations = (args.duration_s, args.duration_s, args.saturation_duration_s)
    loads = [
        {
            "name": name,
            "rate": round(rate, 2),
            "duration_s": duration,
            "ramp_s": args.ramp_s,
            "arrivals": "Poisson",
            "what": w,
        }
        for name, rate, duration, w in zip(
            ("light", "moderate", "saturation"), (light, moderate, saturation), durations, what, strict=True
        )
    ]
    return [ld for ld in loads if ld["rate"] > 0]
