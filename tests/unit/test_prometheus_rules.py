"""Prometheus rules: generated in sync, valid for promtool, unit-tested by promtool, and in house style.

Needs Debian's ``promtool`` and ``prometheus`` (``scripts/install-system-deps.sh``; `make test` runs it).
The local-Prometheus tests start a real Prometheus on a free loopback port against a tiny fake exporter.
"""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dsserve.devstack import free_port
from dsserve.render import prometheus_rules as pr
from dsserve.render.queries import metric_names, recorded_names, recording_rules
from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus" / "rules"
TESTS = REPO / "deploy" / "prometheus" / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed; run scripts/install-system-deps.sh (make test does)")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _test_docs() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(TESTS.glob("*.yaml"))]


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load((RULES / pr.ALERTS_FILE).read_text())["groups"] for r in g["rules"]]


def _recording() -> list[dict]:
    return [r for g in yaml.safe_load((RULES / pr.RECORDING_FILE).read_text())["groups"] for r in g["rules"]]


# -- generated, valid ---------------------------------------------------------------------------------------


def test_rule_files_are_generated_from_code() -> None:
    assert sorted(p.name for p in RULES.iterdir()) == sorted([pr.RECORDING_FILE, pr.ALERTS_FILE])
    assert (RULES / pr.RECORDING_FILE).read_text() == pr.render_recording(), (
        "deploy/prometheus/rules/dsserve-recording.yaml drifted from dsserve/render/queries.py; run `make render`"
    )
    assert (RULES / pr.ALERTS_FILE).read_text() == pr.render_alerts(), (
        "deploy/prometheus/rules/dsserve-alerts.yaml drifted from dsserve/render/prometheus_rules.py; run `make render`"
    )


def test_rendered_yaml_is_the_intended_data() -> None:
    """The hand-rolled emitter (it writes comments) says exactly what the rule documents say."""
    assert yaml.safe_load(pr.render_recording()) == pr.recording_doc()
    assert yaml.safe_load(pr.render_alerts()) == pr.alerts_doc()
    other = yaml.safe_load(pr.render_alerts("https://example.org/rb.md"))
    assert other["groups"][0]["rules"][0]["annotations"]["runbook_url"].startswith("https://example.org/rb.md#")


def test_promtool_check_rules() -> None:
    r = _run("check", "rules", str(RULES / pr.RECORDING_FILE), str(RULES / pr.ALERTS_FILE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(p) for p in TESTS.glob("*.yaml"))
    assert len(files) >= 3
    r = _run("test", "rules", *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation fails promtool (the harness is not vacuous)."""
    bad = yaml.safe_load((TESTS / "dsserve-recording_test.yaml").read_text())
    bad["rule_files"] = [str(RULES / pr.RECORDING_FILE)]
    bad["tests"][0]["promql_expr_test"][0]["exp_samples"][0]["value"] = 3
    (tmp_path / "bad_test.yaml").write_text(yaml.safe_dump(bad))
    r = _run("test", "rules", str(tmp_path / "bad_test.yaml"))
    assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr


# -- coverage of the promtool tests ------------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_silent_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for doc in _test_docs():
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = [a["alert"] for a in _alerts()]
    assert names, "no alerts in deploy/prometheus/rules/dsserve-alerts.yaml"
    no_firing = sorted(set(names) - firing)
    assert not no_firing, f"alerts with no firing test in deploy/prometheus/tests: {no_firing}"
    assert not set(names) - silent, f"alerts with no not-firing test: {sorted(set(names) - silent)}"
    assert not (firing | silent) - set(names), f"tests of unknown alerts: {sorted((firing | silent) - set(names))}"


def test_every_recording_rule_has_a_promql_expr_test() -> None:
    tested = {
        case["expr"].strip()
        for doc in _test_docs()
        for test in doc.get("tests", [])
        for case in test.get("promql_expr_test", []) or []
    }
    recorded = [r["record"] for r in _recording()]
    missing = [name for name in recorded if name not in tested]
    assert not missing, f"recording rules with no promql_expr_test in deploy/prometheus/tests: {missing}"


def _shift(duration: str, minutes: int) -> str:
    m = re.fullmatch(r"(\d+)m", duration)
    assert m, f"unexpected for: {duration}"
    return f"{int(m.group(1)) + minutes}m"


@pytest.mark.parametrize("alert", [a.name for a in pr.ALERTS])
def test_for_boundary_is_pinned(alert: str, tmp_path: Path) -> None:
    """Moving an alert's `for:` one evaluation (1m) either way makes dsserve-alerts_test.yaml fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS / "dsserve-alerts_test.yaml", tmp_path / "tests")
    for minutes in (-1, 1):
        doc = pr.alerts_doc()
        for rule in doc["groups"][0]["rules"]:
            if rule["alert"] == alert:
                rule["for"] = _shift(rule["for"], minutes)
        (tmp_path / "rules" / pr.ALERTS_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
        r = _run("test", "rules", str(tmp_path / "tests" / "dsserve-alerts_test.yaml"))
        assert r.returncode != 0, f"{alert} with for: shifted by {minutes}m still passes its promtool tests"
    # and unshifted it passes in this scratch layout
    (tmp_path / "rules" / pr.ALERTS_FILE).write_text(pr.render_alerts())
    r = _run("test", "rules", str(tmp_path / "tests" / "dsserve-alerts_test.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr


# -- house style --------------------------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_recording_rule_names_are_level_metric_operations() -> None:
    for r in _recording():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]
    assert len({r["record"] for r in _recording()}) == len(_recording()), "duplicate recording rule names"


def test_alerts_follow_house_style() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for a in _alerts():
        name = a["alert"]
        assert re.fullmatch(r"Dsserve[A-Z][A-Za-z0-9]+", name), name
        assert a["labels"]["severity"] in ("critical", "warning"), name
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in ann["summary"], f"{name}: the summary is static"
        assert "{{" in ann["description"], f"{name}: the description names what fired"
        assert re.fullmatch(r"\d+m", a["for"]), name
        anchor = ann["runbook_url"].split("#", 1)[1]
        assert ann["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        assert anchor in anchors, f"{name}: docs/runbook.md has no section #{anchor}"


def test_alerts_read_only_recorded_series() -> None:
    recorded = recorded_names()
    for a in _alerts():
        names = metric_names(a["expr"])
        assert names and names <= recorded, f"{a['alert']} reads raw series {sorted(names - recorded)}"


def test_slo_bucket_edge_is_exported() -> None:
    """The 0.5 s the SLO rules select (le="0.5") is a bucket edge of both histograms they read."""
    from dsserve.serving.metrics import ITL_BUCKETS_S, LATENCY_BUCKETS_S, SLO_THRESHOLD_S

    assert SLO_THRESHOLD_S in LATENCY_BUCKETS_S and SLO_THRESHOLD_S in ITL_BUCKETS_S
    text = (RULES / pr.RECORDING_FILE).read_text()
    assert 'le="0.5"' in text and 'le="0.50"' not in text


def test_metric_names_lexer() -> None:
    expr = (
        'sum by (model_name, le) (rate(ray_a_bucket{status=~"5..", le="0.5"}[5m])) / on (x) group_left '
        "count(b:c:d offset 1h) and histogram_quantile(0.99, rate(x_total[$__rate_interval])) > bool 2"
    )
    assert metric_names(expr) == {"ray_a_bucket", "b:c:d", "x_total"}
    assert metric_names('label_values(ray_x{model_name=~"$model_name"}, ReplicaId)') == {"ray_x"}
    assert {r.record for r in recording_rules()} == recorded_names()


# -- a real Prometheus, locally --------------------------------------------------------------------------------

_FAKE_METRICS = """\
# TYPE ray_dsserve_requests_total counter
ray_dsserve_requests_total{model_name="m",route="/v1/chat/completions",status="200",WorkerId="w"} %d
ray_dsserve_requests_total{model_name="m",route="/v1/chat/completions",status="503",WorkerId="w"} %d
# TYPE ray_dsserve_inflight_requests gauge
ray_dsserve_inflight_requests{WorkerId="w"} 3
# TYPE ray_dsserve_admission_limit gauge
ray_dsserve_admission_limit{WorkerId="w"} 12
"""


@pytest.fixture
def fake_exporter() -> Iterator[int]:
    """A metrics endpoint whose counters grow on every scrape."""
    scrapes = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scrapes[0] += 1
            body = (_FAKE_METRICS % (scrapes[0] * 9, scrapes[0])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_local_prometheus_scrapes_and_evaluates_the_rules(fake_exporter: int) -> None:
    import httpx
    import psutil

    from dsserve.local_prometheus import LocalPrometheus

    prom = LocalPrometheus({"dsserve-ray": [f"127.0.0.1:{fake_exporter}"]}, port=free_port(), scrape_interval_s=1.0)
    prom.start()
    pid, data_dir = prom._proc.pid, prom._dir
    try:
        assert "127.0.0.1" in prom.describe() and str(prom.port) in prom.url
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == len(recording_rules()) + len(pr.ALERTS)
        deadline = time.monotonic() + 60
        ratio: list = []
        while time.monotonic() < deadline:
            ratio = prom.query("model_name:dsserve_request_errors:ratio_rate5m")
            util = prom.query("job:dsserve_admission_utilization:ratio")
            if ratio and util:
                break
            time.sleep(0.5)
        assert ratio, "the error-ratio rule produced nothing from the fake exporter within 60 s"
        assert abs(float(ratio[0]["value"][1]) - 0.1) < 1e-9  # 1 of every 10 requests is a 503
        assert float(util[0]["value"][1]) == 0.25
        up = prom.query('job_instance:up:min{job="dsserve-ray"}')
        assert up and up[0]["value"][1] == "1"
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
        assert not unhealthy, unhealthy
    finally:
        prom.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert data_dir is not None and not data_dir.exists()
    prom.stop()  # twice is fine


def test_local_prometheus_scrapes_haproxy_only_behind_haproxy(local_cpu_data: dict) -> None:
    from dsserve.config import parse_spec
    from dsserve.local_prometheus import LocalPrometheus

    assert local_cpu_data["serving"]["proxy"] == "haproxy"  # the default
    assert LocalPrometheus.for_spec(parse_spec(local_cpu_data)).targets == {
        "dsserve-ray": ["127.0.0.1:8080"],
        "dsserve-haproxy": ["127.0.0.1:9101"],
    }
    local_cpu_data["serving"].update(proxy="python", gateway="ingress")
    local_cpu_data["observability"]["metrics_export_port"] = 8181
    assert LocalPrometheus.for_spec(parse_spec(local_cpu_data)).targets == {"dsserve-ray": ["127.0.0.1:8181"]}


def test_local_prometheus_missing_binary_says_how_to_install() -> None:
    from dsserve.errors import StackError
    from dsserve.local_prometheus import LocalPrometheus

    with pytest.raises(StackError, match="scripts/install-system-deps.sh"):
        LocalPrometheus({"dsserve-ray": ["127.0.0.1:1"]}, binary="prometheus-not-installed-here")


def test_local_prometheus_reports_a_bad_start(tmp_path: Path) -> None:
    """A binary that exits at once: the error carries its output, and nothing is left behind."""
    from dsserve.local_prometheus import LocalPrometheus, PrometheusError

    fake = tmp_path / "fake-prometheus"
    fake.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 3\n")
    fake.chmod(0o755)
    prom = LocalPrometheus({"dsserve-ray": ["127.0.0.1:1"]}, binary=str(fake), port=free_port())
    with pytest.raises(PrometheusError, match="status 3") as info:
        prom.start(timeout_s=10)
    assert "cannot open storage" in str(info.value)
    assert prom._dir is None and not prom.running


def test_shipped_local_config_scrapes_the_stack_and_loads_the_rules() -> None:
    path = REPO / "deploy" / "prometheus" / "prometheus.local.yml"
    r = _run("check", "config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["dsserve-ray"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    assert sorted(cfg["rule_files"]) == sorted(f"rules/{f}" for f in (pr.ALERTS_FILE, pr.RECORDING_FILE))


def test_observability_doc_covers_every_metric_rule_and_alert() -> None:
    from dsserve.render.dashboards import dashboards, panel_queries, variable_queries
    from dsserve.serving.metrics import METRICS

    doc = (REPO / "docs" / "observability.md").read_text()
    missing = [a.name for a in pr.ALERTS if f"`{a.name}`" not in doc]
    missing += [f"ray_{m.name}" for m in METRICS if f"ray_{m.name}" not in doc]
    for r in recording_rules():
        level_metric = r.record.rsplit(":", 1)[0]
        if level_metric + ":" not in doc:
            missing.append(r.record)
    used = set()
    for r in recording_rules():
        used |= metric_names(r.expr)
    for dash in dashboards().values():
        for _, expr in panel_queries(dash) + variable_queries(dash):
            used |= metric_names(expr)
    for name in sorted(used - recorded_names()):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if base not in doc:
            missing.append(name)
    assert not missing, f"docs/observability.md does not describe: {missing}"


def test_up_with_prometheus_fails_fast_without_the_binary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dsserve up --prometheus` checks for the binary before anything starts (no Ray is started here)."""
    import signal

    from dsserve.cli import main

    monkeypatch.setenv("PATH", "/nonexistent")
    before = signal.getsignal(signal.SIGINT)
    assert main(["up", "--prometheus", "--no-sample"]) == 2  # bad input: nothing was started
    err = capsys.readouterr().err
    assert err.startswith("PrometheusMissingError: ") and "scripts/install-system-deps.sh" in err
    assert signal.getsignal(signal.SIGINT) is before
