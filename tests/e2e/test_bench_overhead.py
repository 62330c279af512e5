"""bench.overhead (Benchmark A, dsserve versus bare vLLM) works end to end, at a tiny size.

It runs in --quick mode against the shared default e2e stack (the `stack` fixture's URL as --url-dsserve)
and a bare `vllm serve` the script starts and stops itself. Only that it works is checked: both servers'
rows and numbers in the JSON and the printed table, the comparisons, and no bare vLLM left running. No
timing is asserted; the real figures come from a full run (docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

LOADS = ("light", "moderate", "saturation")


def test_overhead_quick_measures_both_servers(stack: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.overhead",
        "--quick",
        "--light-fraction",
        "0.1",
        "--url-dsserve",
        stack.base_url,
        "--out",
        str(out),
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())

    assert set(report["servers"]) == {"vllm", "dsserve"}
    vllm, dsserve = report["servers"]["vllm"], report["servers"]["dsserve"]
    assert vllm["started_by_this_script"] and not dsserve["started_by_this_script"]
    assert "vllm serve" in vllm["command"] and "--served-model-name tiny-deepseek-v2" in vllm["command"]
    assert "--max-num-seqs 64" in vllm["command"] and "--enforce-eager" in vllm["command"]
    assert "VLLM_CPU_KVCACHE_SPACE=1" in vllm["command"]
    # bare vLLM runs at the nice value Ray gives every dsserve process, vLLM's engine included
    assert vllm["nice"] == dsserve["serving"]["ray_worker_niceness"]
    assert set(vllm["loads"]["light"]["server_nice_by_process"].values()) == {vllm["nice"]}
    assert dsserve["serving"]["proxy"] in ("python", "haproxy")
    assert "stream_batching_interval_ms" in dsserve["serving"]
    assert report["engine"]["kind"].startswith("real vLLM")
    assert report["machine"]["cores"] and len(report["loadavg_start"]) == 3 and len(report["loadavg_end"]) == 3
    assert report["calibration"]["ok"] == report["calibration"]["requests"] > 0
    assert [load["name"] for load in report["loads"]] == list(LOADS)
    assert 0 < report["loads"][0]["rate"] < report["loads"][1]["rate"] < report["loads"][2]["rate"]

    for name, srv in report["servers"].items():
        assert srv["warmup"]["completion_tokens"] == report["request"]["max_tokens"], name
        for load in LOADS:
            s = srv["loads"][load]
            assert s["sent"] > 0 and s["ok"] == s["sent"] and s["errors"] == 0, (name, load, s["error_kinds"])
            for key in ("ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "generator_late_p99_ms"):
                assert isinstance(s[key], float), (name, load, key, s[key])
            assert 0 < s["ttft_p50_ms"] <= s["e2e_p50_ms"], (name, load)
            assert s["busy_output_tok_s"] > 0 and s["completed_output_tok_s"] >= 0, (name, load)
    # CPU per process only for the server the script started
    assert vllm["loads"]["moderate"]["server_cpu_s_by_process"]
    assert "server_cpu_s" not in dsserve["loads"]["moderate"]

    rows = {(r["server"], r["load"]): r for r in report["comparison"]}
    assert set(rows) == {("dsserve", load) for load in LOADS}
    for load in LOADS:
        assert rows[("dsserve", load)]["verdict"] in ("PASS", "MISS"), rows[("dsserve", load)]
    assert isinstance(rows[("dsserve", "light")]["ttft_p50_delta_ms"], float)
    assert isinstance(rows[("dsserve", "moderate")]["ttft_p50_delta_ms"], float)
    assert isinstance(rows[("dsserve", "saturation")]["throughput_ratio"], float)

    for header in ("TTFT p50", "TTFT p99", "E2E p50", "E2E p99", "out tok/s", "busy tok/s", "errors", "gen late p99"):
        assert header in run.stdout
    table_rows = [line.split() for line in run.stdout.splitlines()]
    for load in LOADS:
        for name in ("vllm", "dsserve"):
            assert any(r[:2] == [load, name] for r in table_rows), (load, name, run.stdout[-2000:])
    assert "throughput ratio" in run.stdout and "TTFT p50 delta" in run.stdout

    port = vllm["url"].rsplit(":", 1)[1]
    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if any("vllm.entrypoints.cli.main" in c for c in cmdline) and port in cmdline:
            left.append(p.pid)
    assert not left, f"bare vLLM still running: {left}"
