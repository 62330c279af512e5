"""The open-loop generator against a real local HTTP server: pacing accuracy, and the rate split (not
multiplied) across `--processes 2` and across a master with two workers on loopback.

The server is dsserve's null server (instant OpenAI-shaped answers, streamed over real HTTP on 127.0.0.1),
which records when each request arrived: the rates below are measured on the server's side, independent
of the generator's own bookkeeping. Runs are short and bounded (a few seconds each, 2-core machine).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsserve.cli import main
from dsserve.devstack import free_port
from dsserve.loadgen.null_server import NullServer
from tests.conftest import REPO

#: generous lag limit: the test box is shared; the rate assertions are the strict part
LOOSE = ["--set", "generator.max_lag_p99_ms=250", "--set", "load.max_in_flight=256"]


@pytest.fixture(scope="module")
def server() -> Iterator[NullServer]:
    with NullServer() as s:
        yield s


def _results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def _server_rate(server: NullServer, before: int, results: dict[str, Any]) -> float:
    """Requests per second the server received during the measured window."""
    t0 = results["load"]["t0_epoch_s"]
    w = results["figures"]["window"]
    arrivals = server.stats()["arrivals"][before:]
    inside = [a for a in arrivals if t0 + w["start_s"] <= a < t0 + w["end_s"]]
    return len(inside) / w["duration_s"]


def test_pacing_accuracy_at_500_rps(server: NullServer, tmp_path: Path) -> None:
    before = server.stats()["count"]
    rc = main(
        [
            "loadtest",
            "smoke",
            "--host",
            server.url,
            "--rate",
            "500",
            "--duration",
            "8",
            *LOOSE,
            "--tokenizer",
            "tiny:tiny-deepseek-v2",
            "--out",
            str(tmp_path),
            "-q",
            "--timeout-s",
            "120",
        ]
    )
    r = _results(tmp_path)
    f = r["figures"]
    served = _server_rate(server, before, r)
    lag = f["generator"]["pacing_lag_ms"]
    cpu = f["generator"]["cpu_percent"]["max_process_mean"]
    measured = (
        f"server saw {served:.1f} req/s, generator sent {f['rate']['achieved_rps']:.1f} req/s; pacing lag "
        f"p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms; CPU {cpu}%"
    )
    assert rc == 0, (measured, r["verdict"], r["checks"], r["invalid_reasons"])
    assert abs(served / 500 - 1) <= 0.05, measured
    assert abs(f["rate"]["achieved_rps"] / 500 - 1) <= 0.05, measured
    # membership is by send time: a request due at 7.999 s and sent a millisecond later is outside the window
    assert f["requests"]["ok"] == f["rate"]["sent"] and abs(f["rate"]["sent"] - 4000) <= 2
    assert f["requests"]["overflow"] == 0 and f["requests"]["failed"] == 0
    # streamed with usage and ignore_eos: every request reports its exact token counts
    assert f["tokens"]["output"]["min"] == f["tokens"]["output"]["max"] == 8
    n = f["rate"]["sent"]
    assert f["latency_ms"]["ttft"]["count"] == n and f["latency_ms"]["itl"]["count"] == n * 7
    assert r["prompts"]["lengths"]["method"] == "tokenizer"
    assert r["target"]["engine"] == {"kind": "null", "source": "server: GET /v1/models metadata.engine_kind"}
    _check_locust_rows(tmp_path, sent=f["whole_run"]["sent"])
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 7 and "PASS" in html and "<script" not in html and "src=" not in html


def _check_locust_rows(out: Path, sent: int) -> None:
    """Locust's own CSV: the Aggregated row counts real requests only; METRIC rows sit beside them."""
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader((out / "locust_stats.csv").open())}
    real = int(rows[("POST", "short-chat")]["Request Count"])
    assert real == sent
    assert int(rows[("", "Aggregated")]["Request Count"]) == real  # not inflated by the METRIC rows
    assert int(rows[("METRIC", "TTFT (ms)")]["Request Count"]) == sent
    assert int(rows[("METRIC", "ITL (ms)")]["Request Count"]) == sent * 7
    assert int(rows[("METRIC", "output tokens (count)")]["Request Count"]) == sent


def _shares(out: Path) -> Counter[str]:
    return Counter(r["share"] for r in csv.DictReader((out / "requests.csv").open()))


def test_processes_2_split_the_rate(server: NullServer, tmp_path: Path) -> None:
    before = server.stats()["count"]
    rc = main(
        [
            "loadtest",
            "smoke",
            "--host",
            server.url,
            "--rate",
            "500",
            "--duration",
            "5",
            "--processes",
            "2",
            *LOOSE,
            "--out",
            str(tmp_path),
            "-q",
            "--timeout-s",
            "120",
        ]
    )
    r = _results(tmp_path)
    served = _server_rate(server, before, r)
    measured = (
        f"server saw {served:.1f} req/s, shares {dict(_shares(tmp_path))}, pacing lag p99 "
        f"{r['figures']['generator']['pacing_lag_ms']['p99']:.2f} ms"
    )
    assert rc == 0, (measured, r["checks"], r["invalid_reasons"])
    assert r["load"]["generator_processes"] == 2
    assert abs(served / 500 - 1) <= 0.05, measured  # split, not 2 x 500
    shares = _shares(tmp_path)
    assert set(shares) == {"0", "1"} and all(abs(n - 1250) <= 2 for n in shares.values())


def test_master_and_two_workers_on_loopback_split_the_rate(server: NullServer, tmp_path: Path) -> None:
    port = free_port()
    before = server.stats()["count"]
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsserve.cli",
            "loadtest",
            "smoke",
            "--host",
            server.url,
            "--rate",
            "200",
            "--duration",
            "5",
            "--expect-workers",
            "2",
            "--master-bind-port",
            str(port),
            *LOOSE,
            "--out",
            str(tmp_path),
            "-q",
            "--timeout-s",
            "120",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(REPO / "loadtest/locustfile.py"),
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        out, _ = master.communicate(timeout=120)
        worker_rcs = [w.wait(timeout=30) for w in workers]
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    r = _results(tmp_path)
    served = _server_rate(server, before, r)
    assert master.returncode == 0, out[-3000:]
    assert worker_rcs == [0, 0]
    assert r["load"]["generator_processes"] == 2
    assert abs(served / 200 - 1) <= 0.05, f"server saw {served:.1f} req/s"
    shares = _shares(tmp_path)
    assert set(shares) == {"0", "1"} and all(abs(n - 500) <= 2 for n in shares.values())


def test_the_engine_kind_is_read_from_what_dsserve_publishes() -> None:
    """dsserve's model card carries its layout (metadata.dsserve, built by layout_from_config from the LLM
    config the server runs); the load tester labels the run from it, with no --engine flag."""
    from types import SimpleNamespace

    from dsserve.app import llm_config
    from dsserve.config import load_spec
    from dsserve.loadgen.target import server_info
    from dsserve.serving.layout import layout_from_config

    for profile, kind in (("local-cpu", "real"), ("sim-h800x8-deepseek-v2", "simulated")):
        cfg = llm_config(load_spec(REPO / "deploy/profiles" / f"{profile}.yaml"))
        card = {
            "id": cfg["model_loading_config"]["model_id"],
            "object": "model",
            "metadata": {"dsserve": layout_from_config(SimpleNamespace(**cfg))},
        }
        info = server_info([card])
        assert (info.engine_kind, info.engine_source) == (kind, "server: GET /v1/models metadata.dsserve.engine")
    assert server_info([{"id": "m", "metadata": {"engine_kind": "null"}}]).engine_kind == "null"
    assert server_info([{"id": "m"}]).engine_kind is None
