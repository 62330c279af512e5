"""Benchmarks B (gateway capacity) and C (open streams) run end to end at a tiny size on the sim stack.

These prove the scripts work against the real serving path; the figures in docs/performance.md come from
full runs of the same scripts, not from here. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.profile("sim-h800x8-deepseek-v2")]


def _run(args: list[str]) -> str:
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_gateway_benchmark_runs_a_tiny_sweep(stack: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    text = _run(
        [
            "bench.gateway",
            "--url",
            stack.base_url,
            "--profile",
            "deploy/profiles/sim-h800x8-deepseek-v2.yaml",
            "--rates",
            "10,20",
            "--duration",
            "3",
            "--processes",
            "1",
            "--out",
            str(out),
        ]
    )
    assert "SIMULATED" in text
    data = json.loads(out.read_text())
    runs = data["results"]["dsserve"]["runs"]
    assert runs and runs[0]["sent"] > 0 and runs[0]["ok"] == runs[0]["sent"]
    assert runs[0]["e2e_p99_ms"] is not None and "SIMULATED" in data["engine"]


def test_open_streams_benchmark_holds_a_few_streams(stack: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "streams.json"
    text = _run(
        [
            "bench.streams",
            "--url",
            stack.base_url,
            "--profile",
            "deploy/profiles/sim-h800x8-deepseek-v2.yaml",
            "--streams",
            "40",
            "--open-rate",
            "40",
            "--hold",
            "2",
            "--baseline",
            "2",
            "--probe-every",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert "SIMULATED" in text
    res = json.loads(out.read_text())["results"]
    assert res["opened"] == 40 and res["errors"] == 0 and res["tokens_received"] > 0
    assert res["probe_first_chunk"]["baseline"]["n"] > 0
