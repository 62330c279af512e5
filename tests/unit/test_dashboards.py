"""Grafana dashboards: generated in sync, well-formed, every query on a known metric; and `dashboards push`
against an unreachable URL, a server answering 401, and a small fake of Grafana's API (no real Grafana here).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsserve.devstack import free_port
from dsserve.render.dashboards import (
    DASHBOARDS,
    DashboardPushError,
    dashboards,
    for_prometheus,
    panel_queries,
    push_dashboards,
    render_dashboard,
    variable_queries,
)
from dsserve.render.queries import ONLY_WITH_SPECULATION, metric_names, recorded_names, recording_rules
from tests.conftest import REPO

DASH_DIR = REPO / "deploy" / "grafana" / "dashboards"
EXPORTED = REPO / "deploy" / "prometheus" / "exported-metrics.txt"
#: Series Prometheus itself makes for every target.
PROMETHEUS_SYNTHETIC = {"up"}
DS = {"type": "prometheus", "uid": "${datasource}"}


def _exported() -> set[str]:
    return {ln.strip() for ln in EXPORTED.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def unknown_metrics(expressions: list[tuple[str, str]]) -> list[str]:
    """'where: name' for every series name that is neither exported by the stack nor a recording rule."""
    known = _exported() | recorded_names() | PROMETHEUS_SYNTHETIC | ONLY_WITH_SPECULATION
    return [f"{where}: {name}" for where, expr in expressions for name in sorted(metric_names(expr) - known)]


# -- generated ---------------------------------------------------------------------------------------------


def test_dashboards_are_generated_from_code() -> None:
    assert sorted(p.name for p in DASH_DIR.iterdir()) == sorted(DASHBOARDS)
    for name, dash in dashboards().items():
        assert (DASH_DIR / name).read_text() == render_dashboard(dash), (
            f"deploy/grafana/dashboards/{name} drifted from dsserve/render/dashboards.py; run `make render`"
        )


def test_stable_uids_and_titles() -> None:
    uids = {name: json.loads((DASH_DIR / name).read_text())["uid"] for name in DASHBOARDS}
    assert uids == {
        "dsserve-overview.json": "dsserve-overview",
        "dsserve-engine.json": "dsserve-engine",
        "dsserve-slo.json": "dsserve-slo",
    }


# -- well-formed ---------------------------------------------------------------------------------------------


def _committed() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASH_DIR / name).read_text()) for name in DASHBOARDS}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_has_unit_description_and_query(name: str) -> None:
    dash = _committed()[name]
    assert dash["panels"], name
    for p in dash["panels"]:
        where = f"{name}: panel {p.get('title')!r}"
        assert p.get("title"), where
        assert p.get("description", "").strip(), f"{where} has no description"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        assert p.get("targets") and all(t.get("expr", "").strip() for t in p["targets"]), f"{where} has no query"
        assert p["datasource"] == DS and all(t["datasource"] == DS for t in p["targets"]), (
            f"{where} does not use the $datasource variable"
        )
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), where


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variable_and_no_hard_coded_datasource(name: str) -> None:
    dash = _committed()[name]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "model_name" in variables
    text = (DASH_DIR / name).read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
    assert uids == {"${datasource}", dash["uid"]}, f"hard-coded uids in {name}: {uids}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_grid_layout_is_sane(name: str) -> None:
    cells: set[tuple[int, int]] = set()
    panels = _committed()[name]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{name}: {p['title']!r} overlaps another panel"
        cells |= mine


def test_slo_threshold_lines_are_drawn() -> None:
    overview = _committed()["dsserve-overview.json"]
    ttft = next(p for p in overview["panels"] if p["title"] == "Time to first token")
    steps = ttft["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.5]
    assert ttft["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


# -- every metric known ---------------------------------------------------------------------------------------


def test_every_dashboard_query_uses_known_metrics() -> None:
    exprs = [
        (f"{name}: {title}", expr)
        for name, dash in _committed().items()
        for title, expr in panel_queries(dash) + variable_queries(dash)
    ]
    assert len(exprs) > 40
    assert all(metric_names(e) for _, e in exprs), [w for w, e in exprs if not metric_names(e)]
    bad = unknown_metrics(exprs)
    assert not bad, (
        "metrics the stack does not export (deploy/prometheus/exported-metrics.txt) and no "
        "recording rule makes:\n" + "\n".join(bad)
    )


def test_every_rule_uses_known_metrics() -> None:
    from dsserve.render.prometheus_rules import ALERTS

    exprs = [(r.record, r.expr) for r in recording_rules()] + [(a.name, a.expr) for a in ALERTS]
    bad = unknown_metrics(exprs)
    assert not bad, "unknown metrics in rules:\n" + "\n".join(bad)


def test_the_unknown_metric_check_names_the_culprit() -> None:
    bad = unknown_metrics(
        [
            ("panel X", 'sum(rate(ray_vllm_gpu_cache_usage_perc{a="b"}[5m])) / up'),
            ("panel Y", "model_name:dsserve_requests:rate5m"),
        ]
    )
    assert bad == ["panel X: ray_vllm_gpu_cache_usage_perc"]


def test_panels_read_recording_rules_where_they_exist() -> None:
    """No panel repeats the expression of a recording rule instead of reading the recorded series."""

    def squash(s: str) -> str:
        return re.sub(r"\s+", "", s)

    rule_exprs = {squash(r.expr): r.record for r in recording_rules()}
    for name, dash in _committed().items():
        for title, expr in panel_queries(dash):
            for body, record in rule_exprs.items():
                assert body not in squash(for_prometheus(expr).replace('{model_name=~".*"}', "")), (
                    f"{name}: {title!r} recomputes {record}; read the recorded series"
                )


def test_grafana_variables_are_substituted_for_prometheus() -> None:
    expr = 'sum(rate(x{model_name=~"$model_name", ReplicaId=~"$replica"}[$__rate_interval]))'
    assert for_prometheus(expr) == 'sum(rate(x{model_name=~".*", ReplicaId=~".*"}[1m]))'


# -- provisioning ----------------------------------------------------------------------------------------------


def test_provisioning_files() -> None:
    prov = REPO / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "dsserve-prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    dp = yaml.safe_load((prov / "dashboards" / "dsserve.yaml").read_text())
    (provider,) = dp["providers"]
    assert provider["type"] == "file" and provider["folder"] == "dsserve"
    assert Path(provider["options"]["path"]).is_absolute()


# -- push --------------------------------------------------------------------------------------------------


class _FakeGrafana(http.server.BaseHTTPRequestHandler):
    """Just enough of Grafana's HTTP API (folders, /api/dashboards/db) to see what push sends."""

    state: dict[str, Any]

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state['token']}":
            self._reply(401, {"message": "Unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if self._authorized() and self.path.startswith("/api/folders"):
            self._reply(200, list(self.state["folders"].values()))

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/folders":
            folder = {
                "id": len(self.state["folders"]) + 1,
                "uid": f"f{len(self.state['folders']) + 1}",
                "title": body["title"],
            }
            self.state["folders"][folder["uid"]] = folder
            self._reply(200, folder)
        elif self.path == "/api/dashboards/db":
            dash = body["dashboard"]
            known = self.state["dashboards"].get(dash["uid"])
            if known and not body.get("overwrite"):
                self._reply(412, {"message": "version-mismatch", "status": "version-mismatch"})
                return
            version = (known["version"] + 1) if known else 1
            self.state["dashboards"][dash["uid"]] = {
                "version": version,
                "folderUid": body.get("folderUid"),
                "dashboard": dash,
            }
            self._reply(
                200, {"status": "success", "uid": dash["uid"], "version": version, "url": f"/d/{dash['uid']}/x"}
            )
        else:
            self._reply(404, {"message": "not found"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"token": "good-token", "folders": {}, "dashboards": {}}
    handler = type("Handler", (_FakeGrafana,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_push_unreachable_grafana_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(DashboardPushError, match="cannot reach Grafana at " + re.escape(url)):
        push_dashboards(url, "token", timeout_s=3, progress=lambda _: None)


def test_push_with_a_refused_token_is_a_clear_error(fake_grafana: tuple[str, dict[str, Any]]) -> None:
    url, state = fake_grafana
    with pytest.raises(DashboardPushError, match="401 Unauthorized: the token was refused"):
        push_dashboards(url, "wrong-token", progress=lambda _: None)
    assert not state["dashboards"]


def test_push_creates_then_updates_in_place(fake_grafana: tuple[str, dict[str, Any]]) -> None:
    """Against a fake of Grafana's API (not a real Grafana): the folder is made once, dashboards overwrite by uid."""
    url, state = fake_grafana
    lines: list[str] = []
    urls = push_dashboards(url, "good-token", "dsserve", progress=lines.append)
    assert urls == [f"{url}/d/{d['uid']}/x" for d in dashboards().values()]
    assert [f["title"] for f in state["folders"].values()] == ["dsserve"]
    push_dashboards(url, "good-token", "dsserve", progress=lines.append)
    assert len(state["folders"]) == 1
    assert {uid: d["version"] for uid, d in state["dashboards"].items()} == {
        "dsserve-overview": 2,
        "dsserve-engine": 2,
        "dsserve-slo": 2,
    }
    stored = state["dashboards"]["dsserve-slo"]
    assert stored["folderUid"] == "f1" and stored["dashboard"]["id"] is None
    assert stored["dashboard"]["panels"] == dashboards()["dsserve-slo.json"]["panels"]
    assert len(lines) == 6 and all("uid dsserve-" in ln for ln in lines)


def test_cli_push_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dsserve.cli import main

    monkeypatch.delenv("DSSERVE_TEST_GRAFANA_TOKEN", raising=False)
    args = [
        "dashboards",
        "push",
        "--grafana-url",
        f"http://127.0.0.1:{free_port()}",
        "--token-env",
        "DSSERVE_TEST_GRAFANA_TOKEN",
    ]
    assert main(args) == 2
    assert "$DSSERVE_TEST_GRAFANA_TOKEN is unset or empty" in capsys.readouterr().err
    monkeypatch.setenv("DSSERVE_TEST_GRAFANA_TOKEN", "t")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("DashboardPushError: cannot reach Grafana") and "Traceback" not in err


def test_cli_renders_rules_and_dashboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsserve.cli import main

    assert main(["render", "dashboards", "-o", str(tmp_path / "d")]) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(DASHBOARDS)
    assert main(["render", "prometheus-rules", "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "dsserve-alerts.yaml").read_text() == (
        REPO / "deploy/prometheus/rules/dsserve-alerts.yaml"
    ).read_text()
    capsys.readouterr()
    assert main(["render", "prometheus-rules"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["groups"][0]["name"] for d in docs] == ["dsserve-traffic", "dsserve-alerts"]


def test_every_query_is_valid_promql_for_prometheus() -> None:
    """A real Prometheus parses and evaluates every panel, variable and rule query (no data needed)."""
    from dsserve.local_prometheus import LocalPrometheus

    prom = LocalPrometheus({"dsserve-ray": [f"127.0.0.1:{free_port()}"]}, port=free_port(), with_rules=False)
    prom.start()
    try:
        exprs = [(f"{n}: {t}", for_prometheus(e)) for n, d in dashboards().items() for t, e in panel_queries(d)]
        exprs += [
            (f"{n}: variable {v}", for_prometheus(q[len("label_values(") :].rsplit(",", 1)[0]))
            for n, d in dashboards().items()
            for v, q in variable_queries(d)
        ]
        exprs += [(r.record, r.expr) for r in recording_rules()]
        errors = []
        for where, expr in exprs:
            try:
                prom.query(expr)
            except Exception as exc:  # PrometheusError with Prometheus's parse error
                errors.append(f"{where}: {exc}")
        assert not errors, "\n".join(errors)
    finally:
        prom.stop()
