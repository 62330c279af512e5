"""One real stack per test session, started exactly as a user starts it: `dsserve up`.

The fixture runs `dsserve up deploy/profiles/local-cpu.yaml` as a subprocess (real Ray, real Serve, real
vLLM CPU engine, real HTTP), waits for its READY line, and shares the base URL with every e2e test.
Tests marked ``shutdown`` run last: they stop the stack with SIGINT, like Ctrl-C, and check that every
process it started is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

PROFILE = REPO / "deploy" / "profiles" / "local-cpu.yaml"
STARTUP_TIMEOUT_S = float(os.environ.get("DSSERVE_E2E_STARTUP_TIMEOUT_S", "600"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningStack:
    """A `dsserve up` subprocess and what it printed."""

    proc: subprocess.Popen[str]
    base_url: str
    port: int
    lines: list[str] = field(default_factory=list)
    ready_after_s: float = 0.0
    descendants: list[psutil.Process] = field(default_factory=list)
    stopped_rc: int | None = None

    def output(self) -> str:
        return "".join(self.lines)

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
        return self.stopped_rc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests marked `shutdown` after every other test: they stop the shared stack."""
    items.sort(key=lambda item: item.get_closest_marker("shutdown") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dsserve.cli", "up", str(PROFILE), "--port", str(port)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    running = RunningStack(proc=proc, base_url=f"http://127.0.0.1:{port}", port=port)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.lines.append(line)
            sys.stderr.write(f"[dsserve up] {line}")
            if "READY" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(STARTUP_TIMEOUT_S) or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"`dsserve up` did not become ready in {STARTUP_TIMEOUT_S:.0f}s:\n{running.output()[-4000:]}")
    running.ready_after_s = time.monotonic() - started
    try:
        yield running
    finally:
        if running.stopped_rc is None:
            running.stop()


@pytest.fixture(scope="session")
def client(stack: RunningStack) -> Iterator["httpx.Client"]:  # noqa: F821
    import httpx

    with httpx.Client(base_url=stack.base_url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny model's own tokenizer, to check the server's token counts independently."""
    from transformers import AutoTokenizer

    from dsserve.tiny_models import tiny_model_path

    return AutoTokenizer.from_pretrained(Path(tiny_model_path("tiny-deepseek-v2")))
