"""Real stacks for the e2e tests, started exactly as a user starts them: `dsserve up PROFILE`.

A stack is real Ray, real Serve, a real vLLM CPU engine and real HTTP, so it costs about a minute to
start on two cores. Each profile's stack therefore starts once per test session and is shared by every
test that asks for it, and only one runs at a time: tests are grouped by their ``profile`` marker
(default: the embedded default, ``local-cpu``), and asking for another profile stops the running stack
first. Tests marked ``shutdown`` run last within their group: they stop the stack with SIGINT, like
Ctrl-C, and check that every process it started is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO

DEFAULT_PROFILE = "local-cpu"
PROFILE = REPO / "deploy" / "profiles" / f"{DEFAULT_PROFILE}.yaml"
STARTUP_TIMEOUT_S = float(os.environ.get("DSSERVE_E2E_STARTUP_TIMEOUT_S", "600"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: API keys the e2e stacks that require auth read (api.api_keys_env=DSSERVE_E2E_KEYS)
E2E_KEYS = ("e2e-key-one-6f1c2a9d4b7e", "e2e-key-two-83d0e5b2c6a1")

StackKey = tuple[str, ...]  # (profile name, *--set overrides)


@dataclass
class RunningStack:
    """A `dsserve up` subprocess and what it printed."""

    key: StackKey
    proc: subprocess.Popen[str]
    base_url: str
    port: int
    lines: list[str] = field(default_factory=list)
    ready_after_s: float = 0.0
    descendants: list[psutil.Process] = field(default_factory=list)
    stopped_rc: int | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def log_dir(self) -> Path:
        """The Ray session's log directory, as `dsserve up` printed it."""
        for line in self.lines:
            if "Ray logs: " in line:
                return Path(line.split("Ray logs: ", 1)[1].strip())
        raise AssertionError("`dsserve up` did not print its Ray log directory")

    def snapshot_descendants(self) -> list[psutil.Process]:
        """Every process the stack started (raylet, GCS, workers, replicas, vLLM engines, proxies)."""
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        self.descendants = procs
        return procs

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGINT, like Ctrl-C in the terminal, then wait for a clean exit."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        self.snapshot_descendants()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.stopped_rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stopped_rc = self.proc.wait()
            raise
        psutil.wait_procs(self.descendants, timeout=30)
        return self.stopped_rc


def _start(key: StackKey) -> RunningStack:
    profile, *overrides = key
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", DSSERVE_E2E_KEYS=",".join(E2E_KEYS))
    path = REPO / "deploy" / "profiles" / f"{profile}.yaml"
    cmd = [sys.executable, "-m", "dsserve.cli", "up", str(path), "--port", str(port)]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    running = RunningStack(key=key, proc=proc, base_url=f"http://127.0.0.1:{port}", port=port)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.lines.append(line)
            sys.stderr.write(f"[dsserve up {profile}] {line}")
            if "READY" in line:
                ready.set()
        ready.set()

    started = time.monotonic()
    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(STARTUP_TIMEOUT_S) or proc.poll() is not None:
        proc.kill()
        pytest.fail(
            f"`dsserve up {' '.join(key)}` did not become ready in {STARTUP_TIMEOUT_S:.0f}s:\n"
            f"{running.output()[-4000:]}"
        )
    running.ready_after_s = time.monotonic() - started
    return running


class StackManager:
    """Starts at most one stack at a time and keeps it for every test of the same profile."""

    def __init__(self) -> None:
        self.current: RunningStack | None = None
        #: teacher-forced prompt logprobs per profile, so layouts can be compared across stacks
        self.prompt_logprobs: dict[str, list[list[float]]] = {}

    def get(self, key: StackKey) -> RunningStack:
        if self.current is not None and (self.current.key != key or self.current.stopped_rc is not None):
            self.current.stop()
            self.current = None
        if self.current is None:
            self.current = _start(key)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()


def _profile_of(item: pytest.Item) -> StackKey:
    """``@pytest.mark.profile(name, *overrides)``: which stack a test needs (default: local-cpu as shipped)."""
    marker = item.get_closest_marker("profile")
    return tuple(marker.args) if marker else (DEFAULT_PROFILE,)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group e2e tests by profile (the default first), and run `shutdown` tests last within a group."""
    order: dict[StackKey, int] = {(DEFAULT_PROFILE,): 0}
    for item in items:
        order.setdefault(_profile_of(item), len(order))
    items.sort(
        key=lambda it: (
            it.get_closest_marker("e2e") is not None,
            order[_profile_of(it)],
            it.get_closest_marker("shutdown") is not None,
        )
    )


@pytest.fixture(scope="session")
def stacks() -> Iterator[StackManager]:
    manager = StackManager()
    try:
        yield manager
    finally:
        manager.close()


@pytest.fixture
def stack(stacks: StackManager, request: pytest.FixtureRequest) -> RunningStack:
    return stacks.get(_profile_of(request.node))


@pytest.fixture
def client(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=120.0) as c:
        yield c


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny MoE model's own tokenizer, to check the server's token counts independently."""
    from transformers import AutoTokenizer

    from dsserve.tiny_models import tiny_model_path

    return AutoTokenizer.from_pretrained(Path(tiny_model_path("tiny-deepseek-v2")))


COMPARE_PROMPTS = ["The capital of France is", "def add(a, b):", "Latency, throughput, p99,"]


def prompt_logprobs(client: httpx.Client, model: str) -> list[list[float]]:
    """Each fixed prompt's tokens' log-probabilities, teacher-forced: the model's numbers, not sampled text.

    Greedy text is no way to compare layouts of a random-weight model: its logits are nearly flat, so
    bf16 noise from a different reduction order flips argmaxes. Log-probabilities compare with a tolerance.
    """
    out = []
    for prompt in COMPARE_PROMPTS:
        r = client.post(
            "/v1/completions",
            json={"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0},
        )
        assert r.status_code == 200, r.text
        entries = r.json()["choices"][0]["prompt_logprobs"]
        out.append([next(iter(e.values()))["logprob"] for e in entries if e])
    return out


def assert_clean_shutdown(stack: RunningStack) -> None:
    """Ctrl-C the stack and check that every process it started is gone."""
    procs = stack.snapshot_descendants()
    names = " ".join(p.name() for p in procs if p.is_running())
    assert "raylet" in names and "gcs_server" in names, names  # we are looking at the real tree
    assert any("VLLM" in p.name() for p in procs if p.is_running()), names
    rc = stack.stop()
    assert rc == 0, stack.output()[-2000:]
    _, alive = psutil.wait_procs(stack.descendants, timeout=30)
    leftover = [f"{p.pid} {p.name()}" for p in alive]
    assert not leftover, f"processes left after Ctrl-C: {leftover}"
    assert "stopped" in stack.output()
