"""bench.soak works end to end against the shared default stack, at a tiny size.

The real soak is 30 minutes (docs/reliability.md); here it runs 12 seconds at 2 requests/s. Only that it
works is checked: windows, totals, the p99 trend and a memory series for the stack's processes, vLLM's
engine among them. No timing or growth threshold is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e


def test_soak_reports_windows_trend_and_memory(stack: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.soak",
        "--url",
        stack.base_url,
        "--pid",
        str(stack.proc.pid),
        "--rate",
        "2",
        "--duration",
        "12",
        "--window",
        "4",
        "--mem-every",
        "3",
        "--warmup",
        "2",
        "--max-errors",
        "0",
        "--out",
        str(out),
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["complete"] and not report["started_by_this_script"]
    assert report["engine"] == "real vLLM on cpu" and report["model"] == "tiny-deepseek-v2"
    assert [(w["t0_s"], w["t1_s"]) for w in report["windows"]] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    totals = report["totals"]
    assert totals["sent"] == sum(w["sent"] for w in report["windows"]) > 0
    assert totals["ok"] == totals["sent"] and totals["errors"] == 0, totals["error_kinds"]
    assert 0 < totals["ttft_p50_ms"] <= totals["e2e_p50_ms"] <= totals["e2e_p99_ms"]
    assert set(report["p99_trend"]) == {"ttft", "e2e"}

    memory = report["memory"]
    assert any("EngineCore" in name for name in memory), sorted(memory)
    assert any("LLMServer" in name for name in memory) and any("gcs_server" in name for name in memory), sorted(memory)
    for name, m in memory.items():
        assert m["samples"] >= 3 and m["last_mib"] > 0 and m["peak_mib"] >= m["last_mib"], (name, m)
        assert isinstance(m["second_half_growth_mib"], float), (name, m)
    assert "process" in run.stdout and "MiB/h" in run.stdout and "Soak (real vLLM on cpu" in run.stdout
