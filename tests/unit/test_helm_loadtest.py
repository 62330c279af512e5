"""The in-cluster load test: the loadtest subchart (helm/dsserve/charts/loadtest, values under the parent's
loadtest.*), rendered through the parent as `helm install --set loadtest.enabled=true` does, and alone. Its
objects are checked against Kubernetes' schemas (tests/unit/helm_support.py); the parent's checks that the
load test aims at its own release (dsserve.validateValues) and the subchart's own (loadtest.validateValues)
each get a failing case.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from dsserve.config import load_spec
from tests.conftest import REPO
from tests.unit.helm_support import (
    CHART,
    DEFAULT_PROFILE,
    LOADTEST_CHART,
    NAMESPACE,
    RELEASE,
    ChartUnderTest,
    arg,
    assert_all_valid,
    by_kind,
    env_of,
    module_fixtures,
    no_auth_serve_config,
    notes,
    refused,
    render,
    with_value,
)

SCENARIOS = sorted(p.stem for p in (REPO / "loadtest" / "scenarios").glob("*.yaml"))


chart, crd_validator = module_fixtures(CHART)


def _loadtest(**values: Any) -> dict[str, Any]:
    return {"loadtest": {"enabled": True, **values}}


LOCUST = {"mode": "locust", "workers": 1, "scenarios": {"locustfile.py": "pass\n"}}


# ---------------------------------------------------------------------------------------------- the subchart


def test_loadtest_is_a_subchart_enabled_by_loadtest_enabled() -> None:
    parent = yaml.safe_load((CHART / "Chart.yaml").read_text())
    sub = yaml.safe_load((LOADTEST_CHART / "Chart.yaml").read_text())
    assert parent["dependencies"] == [{"name": "loadtest", "version": sub["version"], "condition": "loadtest.enabled"}]
    assert sub["appVersion"] == parent["appVersion"], "the Locust image's tag defaults to the same dsserve release"
    assert [(d["name"], d["status"]) for d in helm_python.dependency_list(CHART)] == [("loadtest", "unpacked")]
    # off by default: the parent renders no load-test object, and none of the subchart's templates
    assert not [p for p in ChartUnderTest(CHART).render(None, name=RELEASE, namespace=NAMESPACE) if "/charts/" in p]


def test_subchart_lints_and_renders_alone() -> None:
    """The subchart stands on its own (no template of the parent): a platform team can lint and render it."""
    values = {"enabled": True, "target": {"model": "m"}}
    report = helm_python.lint(LOADTEST_CHART, values, strict=True, namespace=NAMESPACE)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    (job,) = by_kind(render(ChartUnderTest(LOADTEST_CHART), values), "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert arg(args, "--host") == f"http://{RELEASE}-dsserve-serve-svc:8000" and arg(args, "--model") == "m"


def test_subchart_home_is_the_images_and_the_parents() -> None:
    pattern = r'define "{}.home" -}}}}\s*(\S+)'
    parent = (CHART / "templates" / "_security.tpl").read_text()
    sub = (LOADTEST_CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(pattern.format("loadtest"), sub).group(1) == re.search(pattern.format("dsserve"), parent).group(1)


def test_loadtest_pods_count_as_the_releases_for_its_network_policy(chart) -> None:
    """The parent's NetworkPolicy admits the release's own pods by label: the load-test pods carry them."""
    objects = render(chart, {"loadtest": {"enabled": True, "workers": 2}})
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == f"{RELEASE}-dsserve"]
    inside = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    jobs = by_kind(objects, "Job")
    assert len(jobs) == 2
    for job in jobs:
        assert inside.items() <= job["spec"]["template"]["metadata"]["labels"].items(), job["metadata"]["name"]


def test_loadtest_renders_master_workers_and_scenario(chart, crd_validator) -> None:
    scenario = (
        "from locust import HttpUser, task\n\n\nclass U(HttpUser):\n    @task\n    def models(self):\n"
        "        self.client.get('/v1/models')\n"
    )
    values = {
        "loadtest": {
            "enabled": True,
            "mode": "locust",
            "workers": 3,
            "scenarios": {"locustfile.py": scenario},
            "masterArgs": ["--headless", "--users", "8"],
        }
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    master, worker = deployments["ds-dsserve-loadtest-master"], deployments["ds-dsserve-loadtest-worker"]
    assert worker["spec"]["replicas"] == 3
    menv = {e["name"]: e.get("value") for e in master["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert menv["LOCUST_HOST"] == "http://ds-dsserve-serve-svc:8000"
    assert menv["LOCUST_MODE_MASTER"] == "true" and menv["LOCUST_LOCUSTFILE"] == "/mnt/locust/locustfile.py"
    wenv = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert wenv["LOCUST_MASTER_NODE_HOST"] == "ds-dsserve-loadtest"
    (cm,) = [c for c in by_kind(objects, "ConfigMap") if "grafana_dashboard" not in c["metadata"]["labels"]]
    assert cm["data"]["locustfile.py"] == scenario
    (svc,) = by_kind(objects, "Service")
    assert {p["port"] for p in svc["spec"]["ports"]} == {8089, 5557}
    assert master["spec"]["template"]["spec"]["containers"][0]["args"] == ["--headless", "--users", "8"]


def _job(objects: list[dict], role: str) -> dict:
    (job,) = [o for o in by_kind(objects, "Job") if o["metadata"]["labels"]["dsserve.io/locust-role"] == role]
    return job


def test_loadtest_scenario_enum_is_the_shipped_scenarios(chart) -> None:
    """The subchart's values.schema.json lists exactly loadtest/scenarios/*.yaml: a new scenario cannot be
    forgotten there."""
    from dsserve.loadgen.scenario import shipped_scenarios

    schema = json.loads((LOADTEST_CHART / "values.schema.json").read_text())
    enum = schema["properties"]["scenario"]["enum"]
    assert enum == SCENARIOS == shipped_scenarios()
    defaults = ChartUnderTest(LOADTEST_CHART).values
    assert defaults["scenario"] in enum and defaults["mode"] == "job" and defaults["enabled"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_loadtest_job_runs_a_shipped_scenario_against_the_serve_service(chart, crd_validator, scenario: str) -> None:
    """job mode: one Job runs `dsserve loadtest <scenario> --host http://<the release's serve Service>:<port>`,
    a scenario that exists and validates, with the API key from the Secret; valid Kubernetes objects."""
    from dsserve.loadgen.scenario import load_scenario

    objects = render(chart, {"loadtest": {"enabled": True, "scenario": scenario}})
    assert_all_valid(objects, crd_validator)
    assert not by_kind(objects, "Deployment") and not by_kind(objects, "Service")  # no worker pods, no web UI
    assert not [
        c
        for c in by_kind(objects, "ConfigMap")
        if c["metadata"]["labels"].get("app.kubernetes.io/component") == "loadtest"
    ]
    (job,) = by_kind(objects, "Job")
    assert job["metadata"]["name"].startswith(f"{RELEASE}-dsserve-loadtest-{scenario}-")
    assert job["spec"]["backoffLimit"] == 0  # one run, one verdict
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    args = c["args"]
    assert args[:3] == ["dsserve", "loadtest", scenario]
    assert (REPO / "loadtest" / "scenarios" / f"{scenario}.yaml").is_file()
    assert load_scenario(scenario).name == scenario
    # The target is the Service KubeRay puts in front of the release's Serve proxies: <RayService>-serve-svc.
    (rs,) = by_kind(objects, "RayService")
    serve_svc = f"http://{rs['metadata']['name']}-serve-svc:{chart.values['serve']['port']}"
    assert arg(args, "--host") == serve_svc == f"http://{RELEASE}-dsserve-serve-svc:8000"
    assert arg(args, "--model") == load_spec(DEFAULT_PROFILE).model.id
    # The key comes by reference from the Secret; the flag names the variable, never a value.
    key_env = arg(args, "--api-key-env")
    assert env_of(c)[key_env]["valueFrom"]["secretKeyRef"] == {"name": "dsserve-api-keys", "key": "api-keys"}
    assert "value" not in env_of(c)[key_env]
    # The verdict: dsserve's exit status is the container's (the wrapper ends with `exit "$rc"`), the summary
    # goes to the termination message, the files to the results volume.
    assert c["command"][:2] == ["/bin/sh", "-c"] and 'exit "$rc"' in c["command"][2]
    assert "incluster.py summary" in c["command"][2] and "/dev/termination-log" in c["command"][2]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert arg(args, "--out") == "$(RESULTS_DIR)" and env_of(c)["RESULTS_DIR"]["value"] == "/results/$(POD_NAME)"
    assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/results"] == "results"
    # `dsserve loadtest NAME` finds loadtest/scenarios/NAME.yaml and loadtest/locustfile.py from the image's
    # /opt/dsserve (docker/Dockerfile.locust copies loadtest/ there; tests/unit/test_docker.py checks it).
    assert c["workingDir"] == "/opt/dsserve"
    assert c["image"] == f"dsserve-locust:{chart.metadata['appVersion']}"
    # It starts once the serve Service answers /v1/models with the key.
    (wait,) = pod["initContainers"]
    assert wait["args"][:2] == ["wait-http", f"{serve_svc}/v1/models"]
    assert arg(wait["args"], "--api-key-env") == key_env and key_env in env_of(wait)


def test_loadtest_job_with_worker_pods(chart, crd_validator) -> None:
    """workers: N makes the Job a Locust master beside a Job of N workers that reach it through a Service."""
    values = {
        "loadtest": {
            "enabled": True,
            "scenario": "slo-1200qps",
            "workers": 3,
            "prometheusUrl": "http://kube-prometheus-stack-prometheus.monitoring:9090",
            "args": ["--duration", "300", "--set", "load.max_in_flight=4096"],
            "apiKey": {"existingSecret": "loadtest-key", "secretKey": "key"},
            "activeDeadlineSeconds": 7200,
        }
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    master, workers = _job(objects, "master"), _job(objects, "worker")
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (arg(args, "--expect-workers"), arg(args, "--master-bind-host"), arg(args, "--master-bind-port")) == (
        "3",
        "0.0.0.0",
        "5557",
    )
    assert "--processes" not in args
    assert arg(args, "--prometheus") == "http://kube-prometheus-stack-prometheus.monitoring:9090"
    assert args[-4:] == ["--duration", "300", "--set", "load.max_in_flight=4096"]
    assert workers["spec"]["completions"] == workers["spec"]["parallelism"] == 3
    assert master["spec"]["activeDeadlineSeconds"] == workers["spec"]["activeDeadlineSeconds"] == 7200
    (svc,) = by_kind(objects, "Service")
    assert [p["port"] for p in svc["spec"]["ports"]] == [5557]
    selector = svc["spec"]["selector"].items()
    assert selector <= master["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= workers["spec"]["template"]["metadata"]["labels"].items()
    wpod = workers["spec"]["template"]["spec"]
    (w,) = wpod["containers"]
    assert w["args"][:4] == ["locust", "-f", "/opt/dsserve/loadtest/locustfile.py", "--worker"]
    assert arg(w["args"], "--master-host") == svc["metadata"]["name"] and arg(w["args"], "--master-port") == "5557"
    assert wpod["initContainers"][0]["args"][:3] == ["wait-tcp", svc["metadata"]["name"], "5557"]
    # Master and workers send the key of loadtest.apiKey, read from the Secret.
    key_env = arg(args, "--api-key-env")
    for c in (master["spec"]["template"]["spec"]["containers"][0], w):
        assert env_of(c)[key_env]["valueFrom"]["secretKeyRef"] == {"name": "loadtest-key", "key": "key"}
    # The same values give the same Job names (helm upgrade leaves a finished run alone); a new runId, a new run.
    again = render(chart, values)
    assert _job(again, "master")["metadata"]["name"] == master["metadata"]["name"]
    rerun = copy.deepcopy(values)
    rerun["loadtest"]["runId"] = "2"
    names = {_job(render(chart, rerun), r)["metadata"]["name"] for r in ("master", "worker")}
    assert not names & {master["metadata"]["name"], workers["metadata"]["name"]}
    for o in by_kind(render(chart, values, name="a" * 53), "Job"):
        name = o["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)


def test_loadtest_job_processes_and_no_key_without_auth(chart) -> None:
    values = {
        "loadtest": {"enabled": True, "processes": 4, "apiKey": {"existingSecret": ""}},
        "apiKeys": {"envName": "", "existingSecret": "", "filePath": ""},
        "serveConfigV2": no_auth_serve_config(),
    }
    (job,) = by_kind(render(chart, values), "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert arg(c["args"], "--processes") == "4"
    assert "--api-key-env" not in c["args"] and "DSSERVE_LOADTEST_API_KEY" not in env_of(c)


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_loadtest_job_exit_status_is_the_verdict(chart, tmp_path: Path, status: int) -> None:
    """The Job's container script, run here with a stand-in for `dsserve loadtest`: it sends the first key of
    the Secret (key-file format), writes the verdict summary to the termination message and exits with
    dsserve's status."""
    import subprocess
    import sys

    (job,) = by_kind(render(chart, {"loadtest": {"enabled": True}}), "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    term = tmp_path / "termination-log"
    script = c["command"][2].replace("/opt/dsserve/", f"{REPO}/").replace("/dev/termination-log", str(term))
    results = tmp_path / "results"
    verdict = {0: "pass", 1: "fail", 3: "invalid"}.get(status)
    stand_in = (
        f'echo "$DSSERVE_LOADTEST_API_KEY" > {tmp_path}/key-seen; mkdir -p "$RESULTS_DIR"; '
        + (
            f"""printf '{{"verdict": "{verdict}", "checks": [], "invalid_reasons": []}}' """
            f'> "$RESULTS_DIR/results.json"; '
            if verdict
            else ""
        )
        + f"exit {status}"
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "RESULTS_DIR": str(results),
        "DSSERVE_LOADTEST_API_KEY": "# ops keys\nk-first, k-second\nk-third\n",
        "HOLD_SECONDS": "0",
    }
    run = subprocess.run(
        [*c["command"][:2], script, c["command"][3], "sh", "-c", stand_in],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == status, run.stderr
    assert (tmp_path / "key-seen").read_text() == "k-first\n"
    summary = term.read_text()
    assert summary == run.stdout and summary.startswith(f"dsserve loadtest exit status {status} (")
    assert (f"verdict {verdict.upper()}" in summary) if verdict else "no readable" in summary
    assert "k-first" not in run.stdout + run.stderr


def test_loadtest_notes_say_where_the_verdict_is(chart) -> None:
    text = notes(chart, {"loadtest": {"enabled": True}})
    (job,) = by_kind(render(chart, {"loadtest": {"enabled": True}}), "Job")
    assert f"logs -f job/{job['metadata']['name']}" in text
    assert "0 pass, 1 fail, 2 bad input, 3 invalid" in text and "terminated.message" in text


# ---------------------------------------------------------------------------------------------- values checks


#: loadtest.validateValues (the subchart's own checks), each broken alone -> what its message must say.
SUBCHART_REFUSES = {
    "image-latest": (
        _loadtest(image={"tag": "latest"}, **LOCUST),
        "loadtest.image.tag: `latest` is not allowed",
    ),
    "locust-without-scenarios": (
        _loadtest(mode="locust", workers=1),
        "loadtest.scenarios: loadtest.mode is locust but loadtest.scenarios is empty",
    ),
    "locustfile-not-a-scenario": (
        _loadtest(mode="locust", workers=1, scenarios={"slo.py": "x"}),
        'loadtest.locustfile: loadtest.locustfile is "locustfile.py" but loadtest.scenarios has only slo.py',
    ),
    "locust-without-workers": (
        _loadtest(mode="locust", workers=0, scenarios={"locustfile.py": "x"}),
        "loadtest.workers: loadtest.mode locust needs loadtest.workers >= 1",
    ),
    "processes-and-workers": (
        _loadtest(workers=2, processes=4),
        "loadtest.processes: loadtest.processes (4) and loadtest.workers (2) exclude each other",
    ),
}

#: dsserve.validateValues' load-test part: the subchart must aim at this release.
PARENT_REFUSES = {
    "port": (
        {**_loadtest(target={"port": 9000})},
        "loadtest.target.port is 9000 but serve.port is 8000; set loadtest.target.port=8000",
    ),
    "model": (
        _loadtest(target={"model": "other"}),
        'loadtest.target.model is "other" but the Serve config serves "deepseek-v2-lite-chat"; '
        "set loadtest.target.model=deepseek-v2-lite-chat",
    ),
    "no-key": (
        _loadtest(apiKey={"existingSecret": ""}),
        "loadtest.apiKey.existingSecret is empty but the server requires API keys; name the Secret",
    ),
    "name-override": (
        {**_loadtest(), "nameOverride": "llm"},
        'loadtest.target.name is "dsserve" but this release\'s chart name is "llm"; set loadtest.target.name=llm',
    ),
    "fullname-override": (
        {**_loadtest(), "fullnameOverride": "chat"},
        'loadtest.target.fullname: the load test would target the release "ds-dsserve" but this release is "chat"; '
        "set loadtest.target.fullname=chat",
    ),
    "locust-key-variable": (
        {
            **_loadtest(**LOCUST),
            "apiKeys": {"envName": "MY_KEYS", "filePath": ""},
            "serveConfigV2": no_auth_serve_config().replace("api_keys_env: null", "api_keys_env: MY_KEYS"),
        },
        'loadtest.apiKey.envName is "" but the server reads its keys from "MY_KEYS"; '
        "set loadtest.apiKey.envName=MY_KEYS",
    ),
}


@pytest.mark.parametrize("case", [*SUBCHART_REFUSES, *PARENT_REFUSES])
def test_inconsistent_load_test_values_are_refused(chart, case: str) -> None:
    values, message = SUBCHART_REFUSES.get(case) or PARENT_REFUSES[case]
    chart.validate_schema(values)  # the schemas let it through: only the cross-field checks can catch it
    error = refused(chart, values)
    assert "VALUES VALIDATION:" in error and message in error


def test_the_locust_key_variable_case_is_a_real_serve_config() -> None:
    """PARENT_REFUSES["locust-key-variable"] edits the Serve config's text: the edit must have taken."""
    assert "api_keys_env: MY_KEYS" in PARENT_REFUSES["locust-key-variable"][0]["serveConfigV2"]


def test_overridden_names_reach_the_load_test(chart, crd_validator) -> None:
    """With nameOverride/fullnameOverride, loadtest.target.* names the release, and then the load test aims at
    its serve Service and its pods carry its labels."""
    values = {
        **_loadtest(target={"name": "llm", "fullname": "chat"}),
        "nameOverride": "llm",
        "fullnameOverride": "chat",
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    (job,) = by_kind(objects, "Job")
    assert job["metadata"]["name"].startswith("chat-loadtest-smoke-")
    assert arg(job["spec"]["template"]["spec"]["containers"][0]["args"], "--host") == "http://chat-serve-svc:8000"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "llm"


#: The subchart's schema (closed like the parent's): what a bad load-test value gets.
SCHEMA_REJECTS = {
    "scenario": (
        with_value("scenario", "slo"),
        "at '/scenario': value must be one of 'agent-tools', 'burst', ",
    ),
    "mode": (with_value("mode", "deployment"), "at '/mode': value must be one of 'job', 'locust'"),
    "prometheus-url": (
        with_value("prometheusUrl", "prom:9090"),
        "at '/prometheusUrl': 'prom:9090' does not match pattern",
    ),
    "unknown-key": (with_value("scenaro", "smoke"), "at '': additional properties 'scenaro' not allowed"),
    "target-port": (with_value("target.port", 0), "at '/target/port': minimum: got 0, want 1"),
    "processes": (with_value("processes", 0), "at '/processes': minimum: got 0, want 1"),
}


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("case", SCHEMA_REJECTS)
def test_schema_rejects_bad_load_test_values(chart, case: str, enabled: bool) -> None:
    """Refused by the subchart's schema, and by the parent's, which embeds it: also while the load test is off
    (Helm checks a disabled subchart's values against nothing)."""
    bad, message = SCHEMA_REJECTS[case]
    values = {"loadtest": {"enabled": enabled, **bad}}
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.validate_schema(values)
    assert message.replace("at '", "at '/loadtest", 1) in str(err.value)  # the parent's path to the value
    with pytest.raises(helm_python.HelmValuesError):  # an install (render) refuses them too
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm_python.HelmValuesError) as err:
        ChartUnderTest(LOADTEST_CHART).validate_schema(bad)
    assert message in str(err.value)
