"""`dsserve loadtest` verdicts and exit codes against real local servers: a failing server fails the gate
(1), a saturated generator makes the run invalid (3), bad input sends nothing (2); API keys; the
Prometheus side-by-side; the results.json schema."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from dsserve.cli import main
from dsserve.devstack import free_port
from dsserve.loadgen.null_server import NullServer
from dsserve.loadgen.prometheus import server_side
from dsserve.loadgen.report import SCHEMA, render_html


def _run(args: list[str], out: Path) -> tuple[int, dict[str, Any] | None]:
    rc = main(["loadtest", *args, "--out", str(out), "-q", "--timeout-s", "120"])
    path = out / "results.json"
    return rc, (json.loads(path.read_text()) if path.is_file() else None)


def test_a_failing_server_fails_the_gate(tmp_path: Path) -> None:
    with NullServer("--fail-every", "10") as s:
        rc, r = _run(["smoke", "--host", s.url, "--rate", "40", "--duration", "3"], tmp_path)
    assert rc == 1 and r is not None and r["verdict"] == "fail"
    req = r["figures"]["requests"]
    # every 10th of the 120 requests answers 500 (one may slip out of the window by its send time)
    assert abs(req["arrivals"] - 120) <= 1 and 11 <= req["failed"] <= 12
    assert req["error_ratio"] == pytest.approx(0.1, abs=0.01)
    assert req["errors"] == {"HTTP 500": req["failed"]}
    failed = {c["name"] for c in r["checks"] if not c["passed"]}
    assert failed == {"error_ratio"}


def test_a_hung_server_times_out_into_failures(tmp_path: Path) -> None:
    with NullServer("--ttft-ms", "3000") as s:  # first token after 3 s; the scenario waits 0.5 s
        rc, r = _run(
            ["smoke", "--host", s.url, "--rate", "4", "--duration", "1", "--set", "load.request_timeout_s=0.5"],
            tmp_path,
        )
    assert rc == 1 and r is not None
    req = r["figures"]["requests"]
    assert req["failed"] == req["arrivals"] == 4 and req["ok"] == 0
    assert all("timeout" in k.lower() for k in req["errors"]), req["errors"]
    assert r["figures"]["whole_run"]["unfinished"] == 0  # timed out and recorded, not left hanging


def test_a_saturated_generator_is_invalid_not_a_server_failure(tmp_path: Path) -> None:
    # 10000 req/s from one Locust process on this machine (it manages ~2000): the generator is the limit
    with NullServer() as s:
        rc, r = _run(
            [
                "smoke",
                "--host",
                s.url,
                "--rate",
                "10000",
                "--duration",
                "1.5",
                "--set",
                "load.max_in_flight=512",
                "--set",
                "load.drain_timeout_s=3",
                "--set",
                "generator.max_lag_p99_ms=25",
            ],
            tmp_path,
        )
    assert r is not None
    assert rc == 3 and r["verdict"] == "invalid" and r["exit_code"] == 3
    assert any("fell behind its schedule" in x or "% CPU" in x for x in r["invalid_reasons"]), r["invalid_reasons"]
    html = (tmp_path / "report.html").read_text()
    assert "INVALID" in html and "nothing is concluded about the server" in html


def test_lora_mix_needs_a_lora_deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with NullServer() as s:
        rc, r = _run(["lora-mix", "--host", s.url, "--duration", "2"], tmp_path)
        sent = s.stats()["count"]
    err = capsys.readouterr().err
    assert rc == 2 and r is None and sent == 0
    assert "TargetError" in err and "'null-model:sql-adapter'" in err and "LoRA-enabled deployment" in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["nosuch", "--host", "http://127.0.0.1:9"], "ScenarioError: scenario 'nosuch'"),
        (["smoke", "--host", "http://127.0.0.1:9"], "TargetError: --host http://127.0.0.1:9: nothing answers"),
        (["smoke", "--host", "http://127.0.0.1:9", "--processes", "2", "--expect-workers", "2"], "exclude each other"),
        (["burst", "--host", "http://127.0.0.1:9", "--duration", "5"], "is made of rate stages"),
        (["smoke", "--host", "http://127.0.0.1:9", "--set", "load.rate_rps=fast"], "load.rate_rps: got 'fast'"),
        (["smoke", "--host", "http://127.0.0.1:9", "--rate", "0"], "--rate 0: must be above 0"),
        (["smoke", "--host", "http://127.0.0.1:9", "--tokenizer", "/no/such"], "--tokenizer /no/such: no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["loadtest", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert fragment in err and "Traceback" not in err
    assert err.strip().count("\n") == 0  # one line
    assert not (tmp_path / "results.json").exists()


class _FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus: a value per quantile; nothing for dsserve's ingress series."""

    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        q = parse_qs(urlparse(self.path).query)
        type(self).queries.append(q)
        expr = q["query"][0]
        if "ray_dsserve_" in expr:
            result: list[Any] = []
        else:
            quantile = float(expr.split("histogram_quantile(")[1].split(",")[0])
            value = "NaN" if "e2e" in expr and quantile == 0.9 else str(quantile / 10)  # seconds
            result = [{"metric": {}, "value": [float(q["time"][0]), value]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    _FakePrometheus.queries = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_prometheus_queries_and_parsing(prometheus: str) -> None:
    s = server_side(prometheus, start_epoch=1000.0, end_epoch=1060.4, model="m")
    assert "error" not in s
    exprs = [q["query"][0] for q in _FakePrometheus.queries]
    assert (
        "histogram_quantile(0.99, sum by (le) (increase(ray_vllm_time_to_first_token_seconds_bucket"
        '{model_name="m"}[61s])))'
    ) in exprs
    assert any("ray_vllm_e2e_request_latency_seconds_bucket" in e for e in exprs)
    assert all(q["time"] == ["1060.400"] for q in _FakePrometheus.queries)
    v = s["quantiles"]
    assert v["ttft"]["vLLM engine"]["p99"] == pytest.approx(99.0)  # 0.099 s -> ms
    assert v["e2e"]["vLLM engine"]["p90"] is None  # NaN is no data, not zero
    assert v["ttft"]["dsserve ingress"]["p50"] is None
    assert "dsserve ingress/ttft/p50" in s["empty"] and "vLLM engine/e2e/p90" in s["empty"]


def test_prometheus_unreachable_is_reported_not_fatal() -> None:
    s = server_side("http://127.0.0.1:9", start_epoch=0, end_epoch=10, model="m", timeout_s=2)
    assert "cannot reach Prometheus" in s["error"]


def test_api_key_results_schema_and_client_vs_server(
    tmp_path: Path, prometheus: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with NullServer("--api-key", "sekret") as s:
        rc, r = _run(["smoke", "--host", s.url, "--rate", "20", "--duration", "2"], tmp_path / "nokey")
        assert rc == 2 and r is None and "answered 401" in capsys.readouterr().err
        monkeypatch.setenv("LT_KEY", "sekret")
        rc, r = _run(
            [
                "smoke",
                "--host",
                s.url,
                "--rate",
                "20",
                "--duration",
                "2",
                "--api-key-env",
                "LT_KEY",
                "--engine",
                "real",
                "--prometheus",
                prometheus,
                "--prometheus-lag-s",
                "0",
            ],
            tmp_path / "key",
        )
    assert rc == 0 and r is not None
    assert r["schema"] == SCHEMA and r["verdict"] == "pass"
    for key in (
        "scenario",
        "target",
        "load",
        "prompts",
        "environment",
        "figures",
        "timeline",
        "distributions",
        "server_side",
        "checks",
        "invalid_reasons",
        "files",
        "command",
    ):
        assert key in r, key
    # the flag labels the engine, and what the server said is kept beside it
    assert r["target"]["engine"] == {"kind": "real", "source": "flag: --engine", "server_says": "null"}
    assert r["environment"]["server_on_generator_machine"] is True
    assert r["environment"]["generator_machine"]["logical_cpus"] >= 1
    assert r["server_side"]["quantiles"]["ttft"]["vLLM engine"]["p99"] == pytest.approx(99.0)
    assert "sekret" not in json.dumps(r) and "sekret" not in (tmp_path / "key/run-config.json").read_text()
    html = (tmp_path / "key" / "report.html").read_text()
    assert "Client vs server" in html and "vLLM engine" in html and "flag: --engine" in html
    assert html == render_html(r)  # the report is a pure function of results.json


def test_server_side_quantiles_from_a_real_prometheus(tmp_path: Path) -> None:
    """The PromQL runs on a real Prometheus scraping vLLM-named histograms (1 s scrapes), not a mock."""
    import shutil
    import subprocess
    import time

    import httpx
    import yaml
    from prometheus_client import CollectorRegistry, Histogram, start_http_server

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary (scripts/install-system-deps.sh installs it)")
    reg = CollectorRegistry()
    ttft = Histogram(
        "ray_vllm_time_to_first_token_seconds",
        "TTFT",
        ["model_name"],
        registry=reg,
        buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5),
    )
    series = ttft.labels(model_name="m")  # zero-valued buckets from the first scrape on
    exporter, thread = start_http_server(free_port(), addr="127.0.0.1", registry=reg)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": "fake-vllm", "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_port}"]}]}
                ],
            }
        )
    )
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the first scrape landed (Prometheus delays it a few s)
            try:
                r = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=1)
                if r.status_code == 200 and r.json()["data"]["result"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(2.2)  # a couple more scrapes of the zero-valued buckets
        start = time.time()
        for i in range(100):
            series.observe(0.05 if i < 80 else 0.3)  # p50 in the 0.04-0.06 bucket, p99 in 0.25-0.5
        time.sleep(3.5)
        s = server_side(url, start_epoch=start - 1, end_epoch=time.time(), model="m")
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        exporter.shutdown()
    assert "error" not in s, s
    engine = s["quantiles"]["ttft"]["vLLM engine"]
    assert 40.0 <= engine["p50"] <= 60.0 and 250.0 <= engine["p99"] <= 500.0, engine
    assert s["quantiles"]["e2e"]["vLLM engine"]["p50"] is None  # no such series here: no data, not zero
