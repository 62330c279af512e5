"""Containers of the images `make images` built, started with podman the way the chart starts them.

Opt-in (`make test-images`, not `make test`): the images must exist (scripts/build-images.sh). The pod's
hardening is read from the chart as rendered (helm-python-sdk, the same engine as tests/unit), not
re-typed: the user and group, the read-only root filesystem, the dropped capabilities and the emptyDir
mounts of the head container become podman's --user, --read-only, --cap-drop and --tmpfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "images.json"


def _version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


def image_ref(name: str) -> str:
    """The image `make images` tagged, or DSSERVE_<NAME>_IMAGE."""
    return os.environ.get(f"DSSERVE_{name.upper()}_IMAGE", f"localhost/dsserve-{name}:{_version()}")


# podman on this kind of machine: crun fails on hybrid cgroups and setrlimit, runc with cgroupfs works.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout)


def render_chart(values: dict[str, Any] | None = None) -> list[dict]:
    import helm_python

    chart = helm_python.Chart.load(REPO / "helm" / "dsserve")
    try:
        manifests = chart.render(values, name="ds", namespace="llm")
    finally:
        chart.close()
    return [d for p, t in sorted(manifests.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]


@dataclass(frozen=True)
class PodHardening:
    """The head pod's security settings and writable paths, as podman arguments."""

    user: str
    read_only: bool
    cap_drop: list[str]
    no_new_privileges: bool
    scratch: list[str]  # the container's emptyDir mount paths
    shm_size: str = "2g"

    def podman_args(self, scratch_root: Path) -> list[str]:
        """Arguments for one container; each emptyDir becomes a fresh world-writable directory under
        ``scratch_root``, as the kubelet makes it (podman 4.3's --tmpfs ignores mode= over an image path)."""
        args = ["--user", self.user]
        if self.read_only:
            args += ["--read-only", "--read-only-tmpfs=false"]
        args += [f"--cap-drop={c}" for c in self.cap_drop]
        if self.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        for path in self.scratch:
            host = scratch_root / path.strip("/").replace("/", "_")
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o1777)
            args += ["-v", f"{host}:{path}:rw"]
        return [*args, "--shm-size", self.shm_size]


def head_hardening() -> PodHardening:
    """What the chart's RayService gives the head container (its default values)."""
    svc = next(o for o in render_chart() if o["kind"] == "RayService")
    return pod_hardening(svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"])


def pod_hardening(pod: dict) -> PodHardening:
    """The security settings and emptyDir mounts a rendered pod spec gives its first container."""
    ctr = pod["containers"][0]
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"}
    scratch = sorted(m["mountPath"] for m in ctr.get("volumeMounts", []) if m["name"] in empty)
    return PodHardening(
        user=f"{uid}:{gid}",
        read_only=bool(csc.get("readOnlyRootFilesystem")),
        cap_drop=list(csc.get("capabilities", {}).get("drop", [])),
        no_new_privileges=csc.get("allowPrivilegeEscalation") is False,
        scratch=scratch,
    )


@dataclass
class Container:
    """One podman container on the host network; its logs are kept for the failure message."""

    image: str
    args: list[str]
    run_args: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: f"dsserve-test-{uuid.uuid4().hex[:8]}")
    started_at: float = 0.0

    def start(self) -> Container:
        return self.start_on("host")

    def start_on(self, network: str) -> Container:
        # --no-healthcheck: podman's HEALTHCHECK timers need systemd, which this kind of machine lacks
        base = ["run", "-d", "--name", self.name, "--network", network, "--no-healthcheck"]
        base += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=8192:8192"]
        podman(*base, *self.run_args, self.image, *self.args)
        self.started_at = time.monotonic()
        return self

    def logs(self) -> str:
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def running(self) -> bool:
        r = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return r.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def wait_ready(self, url: str, timeout_s: float = 600, headers: dict[str, str] | None = None) -> float:
        """Seconds from start until ``url`` answers 200 (the models list: the application is up, not only
        the proxy)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"container {self.name} exited; logs:\n{self.logs()[-6000:]}")
            try:
                if httpx.get(url, timeout=5, headers=headers).status_code == 200:
                    return time.monotonic() - self.started_at
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise AssertionError(f"{url} not ready after {timeout_s:.0f} s; logs:\n{self.logs()[-6000:]}")

    def stop(self, grace_s: int) -> tuple[float, int]:
        """SIGTERM, then SIGKILL after ``grace_s`` (what the kubelet does): (seconds taken, exit code)."""
        t = time.monotonic()
        podman("stop", "-t", str(grace_s), self.name, timeout=grace_s + 60)
        return time.monotonic() - t, self.exit_code()

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)


def require_image(name: str) -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: apt-get install -y podman buildah runc (see make images)")
    ref = image_ref(name)
    if podman("image", "exists", ref, check=False).returncode != 0:
        pytest.fail(f"image {ref} does not exist: run `make images` first")
    return ref


def record(section: str, figures: dict[str, Any]) -> None:
    """Merge one test's figures into bench/results/images.json under ``section``."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[section] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test starts; removed afterwards whatever happened."""
    started: list[Container] = []
    yield started
    for c in started:
        c.remove()
