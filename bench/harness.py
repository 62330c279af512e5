"""Where a server's CPU and memory go, process by process, for the benchmarks.

- :class:`CpuMeter`: CPU seconds (user + system, from /proc through psutil) each process of a server's
  tree spent in a window, labelled by process title (:func:`proc_label`) and summed into groups
  (:func:`group_of`): the engine (EngineCore and its workers), the gateway hops (HAProxy, ingress and
  engine replicas, Serve's ingress router), Serve's control plane and Ray's background processes.
- :func:`rss_by_process`: the resident memory of every process of a tree, by a label that stays the same
  while the process runs (:func:`process_label`).
- :func:`start_server`: `dsserve up` or stock ray.serve.llm (bench/stock.py) on the simulated or real
  engine, started and waited for as dsserve/devstack.py does it for the e2e tests;
  :class:`Server`: one server under test, started by the script or reused (--url-*).

The load generator is never in the tree: it runs in the benchmark script's own process.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import REPO
from bench.stock import stock_server
from dsserve.devstack import ServerProcess, ServerStartError, wait_for_models

__all__ = [
    "CpuMeter",
    "GROUPS",
    "Server",
    "engine_cli_args",
    "group_of",
    "loadavg",
    "proc_label",
    "process_label",
    "rss_by_process",
    "start_server",
]


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
    """One server under test: started by the script (root_pid set) or reused (--url-*)."""

    name: str
    url: str
    started_by_us: bool
    root_pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


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
    ("driver", lambda label: label in ("dsserve", "dsserve.cli", "python -m dsserve.cli", "python -m bench.stock")),
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


def process_label(cmdline: list[str], name: str) -> str:
    """A name for a stack process that stays the same while it runs.

    Ray rewrites a worker's title with the task it is running (``ray::ServeController.listen_for_change``),
    and Python helpers all start with ``python``; series keyed by the raw title would break apart.
    """
    title = " ".join(cmdline) or name
    first = title.split()[0] if title.split() else name
    if "ServeReplica" in title:
        return "ray::ServeReplica:" + ("ingress" if "Ingress" in title else "LLMServer")
    if first.startswith("ray::"):
        return first.split(".")[0]
    if "EngineCore" in title:
        return "VLLM::EngineCore"
    base = os.path.basename(first)
    if base.startswith("python") and len(cmdline) > 1:
        if "dsserve.cli" in title or "/dsserve " in title:
            return "dsserve (driver)"
        if cmdline[1] == "-c":  # e.g. multiprocessing's resource tracker
            found = re.search(r"(?:from|import) ([\w.]+)", " ".join(cmdline[2:]))
            return f"python -c {found.group(1) if found else '...'}"
        script = next((a for a in cmdline[1:] if not a.startswith("-")), "")
        return f"python {os.path.basename(script)}" if script else base
    return base


def rss_by_process(root_pid: int) -> dict[str, int]:
    """Resident memory of every process in ``root_pid``'s tree, summed per :func:`process_label`."""
    import psutil

    out: dict[str, int] = {}
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            name = process_label(p.cmdline(), p.name())
            out[name] = out.get(name, 0) + p.memory_info().rss
        except psutil.Error:
            continue
    return out


def start_server(
    profile: Path,
    sets: list[str],
    *,
    stock: str | None = None,
    log_path: Path | None = None,
    startup_timeout_s: float = 600.0,
) -> ServerProcess:
    """`dsserve up profile --set ...` (or stock ray.serve.llm in mode ``stock``), started and serving.

    dsserve's output goes to stderr until READY and to ``log_path`` throughout; then ``/v1/models`` must
    answer within 120 s. Raises :class:`dsserve.devstack.ServerStartError`, with nothing left running.
    """
    if stock is not None:
        server = stock_server(profile, stock, sets, log_path)
    else:
        server = ServerProcess.dsserve_up(
            profile, sets, log_path=log_path, echo="  [dsserve] ", echo_after_ready=False, cwd=REPO
        )
    server.start(startup_timeout_s)
    try:
        wait_for_models(server.base_url, 120)
    except ServerStartError:
        server.stop()
        raise
    return server
