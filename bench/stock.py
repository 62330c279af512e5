"""Stock ray.serve.llm as a server under test: no dsserve code in the request path, on dsserve's engine config.

``mode`` ``ingress``: ``build_openai_app`` (OpenAiIngress -> LLMServer over a handle). ``direct``: the same
with ``RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1`` (HAProxy -> ray.serve.llm's LLMRouter -> the LLMServer
replica's own HTTP port). Both with HAProxy and throughput-optimized Serve, as Ray's high-throughput guide
sets them. :func:`stock_server` runs it as its own process tree (``python -m bench.stock``), started and
stopped like any other server (:class:`dsserve.devstack.ServerProcess`).

    python -m bench.stock --mode direct --profile deploy/profiles/local-cpu.yaml --port 8000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from bench import REPO
from dsserve.devstack import ServerProcess, free_port

__all__ = ["MODES", "stock_env", "stock_llm_config", "stock_server"]

MODES = ("ingress", "direct")


def stock_env(mode: str) -> dict[str, str]:
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    if mode == "direct":
        env["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] = "1"
    return env


def stock_server(profile: Path, mode: str, sets: list[str], log_path: Path | None = None) -> ServerProcess:
    """Stock ray.serve.llm in ``mode`` on ``profile`` with ``sets``, as a server to start and stop."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.stock", "--mode", mode, "--profile", str(profile), "--port", str(port)]
    cmd += [a for s in sets for a in ("--set", s)]
    return ServerProcess(
        name=f"stock ray.serve.llm ({mode})",
        cmd=cmd,
        port=port,
        env=stock_env(mode),
        ready_line=lambda line: line.strip() == "READY",
        log_path=log_path,
        cwd=REPO,
    )


def stock_llm_config(spec: Any) -> dict[str, Any]:
    """The spec's engine under ray.serve.llm's own classes: dsserve's engine arguments, placement and
    replicas; no dsserve server class, ingress, router, limits or batching settings."""
    from dsserve.app import llm_config

    cfg = llm_config(spec)
    cfg.pop("server_cls", None)
    cfg["experimental_configs"] = {k: v for k, v in cfg["experimental_configs"].items() if k.startswith("dsserve_sim")}
    dep = cfg["deployment_config"]
    cfg["deployment_config"] = {k: v for k, v in dep.items() if k in ("num_replicas", "autoscaling_config")}
    return cfg


def serve_stock(mode: str, profile: str, port: int, sets: list[str]) -> None:
    """Run stock ray.serve.llm in this process until SIGINT/SIGTERM, printing READY once it serves."""
    import ray
    from ray import serve
    from ray.serve.llm import build_openai_app

    from dsserve.app import _resolve_tiny_sources, ray_cpus_needed
    from dsserve.config import load_spec

    spec = load_spec(profile, sets)
    cfg = stock_llm_config(spec)
    _resolve_tiny_sources([cfg])
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, ray_cpus_needed(spec)),
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=spec.observability.metrics_export_port,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_openai_app({"llm_configs": [cfg]}), name=spec.name, route_prefix="/")
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    serve.shutdown()
    ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE")
    a = ap.parse_args(argv)
    serve_stock(a.mode, a.profile, a.port, a.sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
