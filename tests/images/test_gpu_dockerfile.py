"""docker/Dockerfile (GPU) cannot be built here (no CUDA base image, no registry). What can be checked
without it: its pip line resolves on PyPI for the base's platform and Python, and the Python it targets
is the one the project declares. Opt-in (`make test-images`): it asks PyPI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.images.conftest import REPO, record

DOCKERFILE = REPO / "docker" / "Dockerfile"
#: vllm/vllm-openai images are built with Python 3.12 (vLLM's docker/Dockerfile: ARG PYTHON_VERSION=3.12)
#: on Ubuntu 22.04 (glibc 2.35), x86_64.
BASE_PYTHON = "3.12"
BASE_PLATFORM = "manylinux_2_35_x86_64"


def _pip_requirements() -> list[str]:
    """The quoted requirements of the Dockerfile's `pip install` line, and the dsserve wheel's own."""
    text = DOCKERFILE.read_text()
    line = next(ln for ln in text.replace("\\\n", " ").splitlines() if "pip install" in ln and "vllm==" in ln)
    reqs = re.findall(r'"([^"]+)"', line)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return reqs + list(project["dependencies"])


def test_gpu_dockerfile_targets_the_python_the_project_declares() -> None:
    text = DOCKERFILE.read_text()
    assert "vllm/vllm-openai:v0.32.0" in text
    assert f"python:{BASE_PYTHON}-slim" in text  # the wheel stage builds on the same minor version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    low = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, BASE_PYTHON.split("."))) >= tuple(map(int, low.split(".")))


def test_gpu_dockerfile_pip_line_resolves_on_pypi(tmp_path: Path) -> None:
    reqs = _pip_requirements()
    assert any(r.startswith("vllm==") for r in reqs) and any(r.startswith("ray[serve]==") for r in reqs), reqs
    report = tmp_path / "report.json"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this machine's local indexes and caps do not apply
    cert = "/etc/ssl/certs/ca-certificates.crt"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)]
    cmd += ["--target", str(tmp_path / "target"), "--only-binary=:all:", "--index-url", "https://pypi.org/simple"]
    # pip does not widen --platform to older glibc tags: list every manylinux tag glibc 2.35 accepts
    glibc = int(BASE_PLATFORM.split("_")[2])
    for minor in range(glibc, 16, -1):
        cmd += ["--platform", f"manylinux_2_{minor}_x86_64"]
    cmd += ["--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"]
    cmd += ["--python-version", BASE_PYTHON, "--implementation", "cp"]
    for abi in ("cp" + BASE_PYTHON.replace(".", ""), "abi3", "none"):  # vLLM and torch ship abi3 wheels
        cmd += ["--abi", abi]
    cmd += ["--cert", cert] if Path(cert).exists() else []
    r = subprocess.run([*cmd, *reqs], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"pip could not resolve the GPU image's packages:\n{r.stderr[-4000:]}"
    installed = {
        i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert installed.get("vllm") == "0.32.0" and installed.get("ray") == "2.60.0", installed
    record(
        "gpu_dockerfile_resolution",
        {
            "command": "make test-images (tests/images/test_gpu_dockerfile.py): pip install --dry-run --report",
            "platform": BASE_PLATFORM,
            "python": BASE_PYTHON,
            "requirements": reqs,
            "packages_resolved": len(installed),
            "torch": installed.get("torch"),
        },
    )
