"""helm/dsserve, the chart of a dsserve release: a KubeRay RayService, its monitoring, NetworkPolicy and the
`helm test` pod, rendered offline and checked against the schemas the cluster would apply (tests/unit/
helm_support.py says how). The load-test subchart (charts/loadtest) has its own tests in test_helm_loadtest.py,
and the generated README and values.schema.json theirs in test_helm_docs.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tomllib
from pathlib import Path

import helm_python
import jsonschema
import pytest
import yaml

from dsserve.config import load_spec, parse_spec
from dsserve.errors import SpecError
from dsserve.render.helm_values import helm_values, render_helm_values, worker_nodes_for
from dsserve.render.serve_config import haproxy_maxconn_wanted, render_serve_config
from tests.conftest import REPO
from tests.unit.helm_support import (
    CHART,
    DEFAULT_PROFILE,
    GPU_PROFILES,
    IMAGE_DIGEST,
    NAMESPACE,
    RELEASE,
    VALUES_DIR,
    ChartUnderTest,
    assert_all_valid,
    by_kind,
    containers,
    env_of,
    installable,
    lookup,
    module_fixtures,
    no_auth_serve_config,
    notes,
    pod_specs,
    profile_values,
    refused,
    rel,
    render,
    value_paths,
    with_value,
)

# Monitoring files: deploy/ (the source, written by the observability work) -> the chart's copies.
MONITORING_DIRS = (
    (REPO / "deploy" / "prometheus" / "rules", CHART / "files" / "prometheus" / "rules"),
    (REPO / "deploy" / "grafana" / "dashboards", CHART / "files" / "grafana" / "dashboards"),
)


chart, crd_validator = module_fixtures(CHART)


@pytest.fixture(scope="module")
def rayservice_validator(crd_validator) -> jsonschema.Draft7Validator:
    if crd_validator is None:
        pytest.skip(
            "KubeRay CRD schemas not found at ../shared/crds (beside the checkout, as in CI); "
            "the RayService cannot be checked against KubeRay's schema without them"
        )
    return crd_validator


# ---------------------------------------------------------------------------------------------- chart


def test_chart_metadata_matches_pyproject(chart) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), "Chart.yaml version must be SemVer"
    assert meta["appVersion"] == pyproject["project"]["version"], "appVersion must be dsserve's version"
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray[serve]=="))
    assert chart.values["rayVersion"] == ray_pin.split("==")[1], "rayVersion must match the ray[serve] pin"
    assert chart.values["image"]["tag"] == "", "image.tag must default to appVersion (empty), never latest"


def test_lint_is_clean() -> None:
    for values in [None, *(profile_values(p) for p in GPU_PROFILES), *HARDENING_CASES.values()]:
        report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not bad, json.dumps(report, indent=2)


def test_default_values_render_valid_objects(chart, crd_validator) -> None:
    objects = render(chart)
    assert_all_valid(objects, crd_validator)
    kinds = sorted(o["kind"] for o in objects)
    # The PrometheusRule and one ConfigMap per dashboard come from files/ (make render); the load test is
    # off by default.
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "NetworkPolicy",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "PodMonitor",
        "PodMonitor",
        "PrometheusRule",
        "RayService",
        "ServiceAccount",
    ]
    (rs,) = by_kind(objects, "RayService")
    assert (
        rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"]
        == f"dsserve:{chart.metadata['appVersion']}"
    )


def test_default_values_are_the_default_profile(chart) -> None:
    """values.yaml and files/serve-config.yaml are exactly what `render helm-values` gives the default profile,
    but for the digest that the rendered (production) values require and values.yaml does not, and the GPU product
    pin: the rendered values keep the workers on H800 nodes, while a bare install stays unpinned (Helm merges maps,
    so a default pin could only be removed with a null per key)."""
    values = profile_values(DEFAULT_PROFILE)
    assert values["worker"].pop("nodeSelector") == {"nvidia.com/gpu.product": "NVIDIA-H800"}
    assert chart.values["worker"]["nodeSelector"] == {}
    assert render(chart, with_value("image.digest", IMAGE_DIGEST)) == render(chart, values)


def test_chart_default_serve_config_is_in_sync() -> None:
    committed = CHART / "files" / "serve-config.yaml"
    assert committed.is_file(), "helm/dsserve/files/serve-config.yaml is missing; run `make render`"
    expected = render_serve_config(load_spec(DEFAULT_PROFILE), source=rel(DEFAULT_PROFILE))
    assert committed.read_text() == expected, "helm/dsserve/files/serve-config.yaml drifted; run `make render`"


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_profile_values_render_valid_objects(chart, crd_validator, profile: Path) -> None:
    values = profile_values(profile)
    chart.validate_schema(values)
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    spec = load_spec(profile)
    (rs,) = by_kind(objects, "RayService")
    # One YAML drives both: the RayService's serveConfigV2 is `dsserve render serve-config` of the profile.
    assert yaml.safe_load(rs["spec"]["serveConfigV2"]) == yaml.safe_load(render_serve_config(spec, source=rel(profile)))
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == spec.hardware.gpus_per_node
    assert container["resources"]["requests"]["nvidia.com/gpu"] == spec.hardware.gpus_per_node
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == spec.hardware.nodes
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"
    assert str(spec.model.source).startswith(mounts["models"] + "/"), "the model directory must be on the mount"
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in json.dumps(head["template"]["spec"]["containers"][0]["resources"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert ("RAY_SERVE_ENABLE_HA_PROXY" in env) == (spec.serving.proxy == "haproxy")
    if spec.serving.proxy == "haproxy":
        # Ray's default maxconn (4096) would leave admitted requests hanging in the accept queue
        assert env["RAY_SERVE_HAPROXY_MAXCONN"] == str(haproxy_maxconn_wanted(spec))
        # Serve holds a stopping ingress replica open 30 s behind HAProxy (+5 s): the pod must outlive it
        for pod in (group["template"]["spec"], head["template"]["spec"]):
            assert pod["terminationGracePeriodSeconds"] > 35
    if spec.api.api_keys_env:
        assert spec.api.api_keys_env in env


CRD_CASES = {
    "defaults": None,
    **{p.stem: p for p in GPU_PROFILES},  # read at run time: a missing values file fails one test, not collection
    "autoscaling-incremental": {
        "autoscaling": {"enabled": True},
        "worker": {"minReplicas": 0, "replicas": 0, "maxReplicas": 4},
        "upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade", "gatewayClassName": "istio"},
        "modelStorage": {"type": "hostPath"},
        "haproxy": {"enabled": False},
    },
}


@pytest.mark.parametrize("case", CRD_CASES)
def test_rayservice_matches_kuberay_crd(chart, rayservice_validator, case: str) -> None:
    """The RayService against KubeRay's own CRD schema, strict (skipped where ../shared/crds is absent)."""
    values = CRD_CASES[case]
    (rs,) = by_kind(render(chart, profile_values(values) if isinstance(values, Path) else values), "RayService")
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in rayservice_validator.iter_errors(rs)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_helm_values_dir_is_in_sync_with_profiles(profile: Path) -> None:
    committed = VALUES_DIR / profile.name
    assert committed.is_file(), f"helm/values/{profile.name} is missing; run `make render`"
    rendered = render_helm_values(load_spec(profile), source=rel(profile))
    assert committed.read_text() == rendered, f"helm/values/{profile.name} drifted from its profile; run `make render`"


def test_no_stray_helm_values() -> None:
    assert {p.name for p in VALUES_DIR.glob("*.yaml")} == {p.name for p in GPU_PROFILES}


def test_notes_give_port_forward_and_curl(chart) -> None:
    text = notes(chart)
    assert f"port-forward svc/{RELEASE}-dsserve-serve-svc 8000:8000" in text
    assert 'curl http://127.0.0.1:8000/v1/models -H "Authorization: Bearer $DSSERVE_API_KEY"' in text
    assert "helm test ds" in text
    open_text = notes(
        chart,
        {"apiKeys": {"envName": "", "existingSecret": "", "filePath": ""}, "serveConfigV2": no_auth_serve_config()},
    )
    assert "curl http://127.0.0.1:8000/v1/models\n" in open_text


def test_a_profile_without_keys_renders_without_keys(chart) -> None:
    """A profile with neither api.api_keys_env nor api.api_keys_file: its values turn the chart's default key
    file off, so the chart renders (the schema refused them when the default file path stayed) and mounts no
    key Secret. Found by running the load-test Job against local-cpu (tests/images)."""
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["api"].update(api_keys_env=None, api_keys_file=None)
    values = helm_values(parse_spec(data), source="x")
    assert values["apiKeys"] == {"envName": "", "existingSecret": "", "secretKey": "api-keys", "filePath": ""}
    (rs,) = by_kind(render(chart, installable(values)), "RayService")
    pod = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if v["name"] == "api-keys"]


def test_api_key_file_is_a_mounted_secret_on_every_ray_pod(chart) -> None:
    """api.api_keys_file -> apiKeys.filePath: the key Secret as a directory volume (not subPath: rotations
    reach the pod, and the ingress re-reads the file), on the head and the workers, read-only."""
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["api"].update(api_keys_env=None, api_keys_file="/etc/dsserve/api-keys/keys")
    values = helm_values(parse_spec(data), source="x")
    assert values["apiKeys"] == {
        "envName": "",
        "existingSecret": "dsserve-api-keys",
        "secretKey": "api-keys",
        "filePath": "/etc/dsserve/api-keys/keys",
    }
    (rs,) = by_kind(render(chart, installable(values)), "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    for pod in (cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]):
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
        assert mount == {"name": "api-keys", "mountPath": "/etc/dsserve/api-keys", "readOnly": True}
        (vol,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
        assert vol["secret"]["secretName"] == "dsserve-api-keys" and vol["secret"]["defaultMode"] == 0o440
        assert vol["secret"]["items"] == [{"key": "api-keys", "path": "keys"}]
        assert not any(e["name"] == "DSSERVE_API_KEYS" for e in pod["containers"][0].get("env", []))
    # the shipped profiles read their keys from that file: no key in any environment variable
    (rs,) = by_kind(render(chart), "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    for pod in (cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]):
        assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys"] == [
            "/etc/dsserve/api-keys"
        ]
        assert not [
            e
            for e in pod["containers"][0].get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {}) and e["valueFrom"]["secretKeyRef"]["name"] == "dsserve-api-keys"
        ]
    # without a key file, no such volume
    (rs,) = by_kind(
        render(
            chart,
            {
                "apiKeys": {"envName": "", "existingSecret": "", "filePath": ""},
                "serveConfigV2": no_auth_serve_config(),
            },
        ),
        "RayService",
    )
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert not [v for v in head["volumes"] if v["name"] == "api-keys"]


# ---------------------------------------------------------------------------------------------- objects


def test_labels_follow_the_house_style(chart) -> None:
    values = {"loadtest": {"enabled": True, "scenarios": {"locustfile.py": "pass\n"}}}
    objects = render(chart, values)
    for o in objects:
        labels = o["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{o['kind']}/{o['metadata']['name']} lacks {key}"
        if o["kind"] in ("PodMonitor", "PrometheusRule"):
            assert labels["app.kubernetes.io/component"] == "monitoring"
    (rs,) = by_kind(objects, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "head"
    assert cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    for d in by_kind(objects, "Deployment"):
        assert d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "loadtest"


#: Every kind of pod the chart can create: autoscaler on, both load-test modes (job mode with worker pods).
HARDENING_CASES = {
    "locust-mode": {
        "autoscaling": {"enabled": True, "upscalingMode": "Conservative"},
        "worker": {"minReplicas": 0, "replicas": 1, "maxReplicas": 2},
        "loadtest": {"enabled": True, "mode": "locust", "workers": 2, "scenarios": {"locustfile.py": "pass\n"}},
    },
    "job-mode": {"loadtest": {"enabled": True, "workers": 2, "results": {"existingClaim": "lt-results"}}},
    # the InfiniBand path: the GPU workers' container is the only one that adds a capability (IPC_LOCK)
    "rdma-workers": {
        "worker": {"rdma": {"enabled": True}},
        "loadtest": {"enabled": True, "workers": 2},
    },
}


@pytest.mark.parametrize("case", HARDENING_CASES)
def test_every_container_runs_non_root_read_only_without_privileges(chart, case: str) -> None:
    """Every container of every pod (init containers and the autoscaler sidecar included): non-root, no
    privilege escalation, all capabilities dropped, a read-only root filesystem. The one exception: with
    worker.rdma.enabled the GPU worker container adds IPC_LOCK (RDMA pins NCCL's buffers), and nothing else."""
    values = HARDENING_CASES[case]
    rdma = values.get("worker", {}).get("rdma", {}).get("enabled", False)
    objects = render(chart, values)
    specs = pod_specs(objects)
    # head, worker group, the helm test pod, and Locust master + workers (Deployments or Jobs)
    assert len(specs) == 5, [w for w, _ in specs]
    for where, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(spec):
            sc, name = c["securityContext"], f"{where}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc["runAsNonRoot"]) is True, name
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc.get("privileged", False) is False, name
            added = ["IPC_LOCK"] if rdma and name == "worker/gpu/ray-worker" else []
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["capabilities"].get("add", []) == added, name
            assert sc["readOnlyRootFilesystem"] is True, name
    (rs,) = by_kind(objects, "RayService")
    autoscaler = rs["spec"]["rayClusterConfig"].get("autoscalerOptions")
    if autoscaler:
        sc = autoscaler["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True


def _policies(objects: list[dict]) -> tuple[dict, dict | None]:
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    main = policies.pop(f"{RELEASE}-dsserve")
    (head,) = policies.values() or (None,)
    return main, head


def _outside_peers_name_their_namespace(rule: dict) -> None:
    for peer in rule.get("from", []):
        if "namespaceSelector" in peer:
            ns = peer["namespaceSelector"]
            assert ns.get("matchLabels") or ns.get("matchExpressions"), f"a peer admits every namespace: {peer}"


def test_network_policy_opens_only_the_gateway_to_outside(chart) -> None:
    main, head = _policies(render(chart))
    selector = {"app.kubernetes.io/name": "dsserve", "app.kubernetes.io/instance": RELEASE}
    assert main["spec"]["podSelector"]["matchLabels"] == selector
    assert main["spec"]["policyTypes"] == ["Ingress"]
    rules = main["spec"]["ingress"]
    # 1. the release itself, every port
    assert rules[0] == {"from": [{"podSelector": {"matchLabels": selector}}]}
    # 2. anyone, the gateway port only
    open_rules = [r for r in rules if "from" not in r]
    assert open_rules == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    # 3. Prometheus, from the monitoring namespace only, to the metrics ports only: never GCS, client, dashboard
    (metrics,) = [r for r in rules[1:] if "from" in r]
    assert metrics["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    ports = {p["port"] for p in metrics["ports"]}
    assert ports == {8080, 44227, 44217, 9101} and not ports & {6379, 8265, 10001}
    # 4. the operator, from its namespace, to the head's dashboard only
    assert head is not None
    assert head["spec"]["podSelector"]["matchLabels"] == {**selector, "ray.io/node-type": "head"}
    (op,) = head["spec"]["ingress"]
    assert op["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert op["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
        }
    ]
    for rule in rules + head["spec"]["ingress"]:
        _outside_peers_name_their_namespace(rule)
    # With gatewayFrom set, nothing at all is open to every peer.
    narrowed = {"networkPolicy": {"gatewayFrom": [{"namespaceSelector": {"matchLabels": {"team": "llm"}}}]}}
    main, _ = _policies(render(chart, narrowed))
    assert all("from" in r for r in main["spec"]["ingress"])
    assert not by_kind(render(chart, {"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_ray_token_auth_is_on_through_kuberay(chart, crd_validator) -> None:
    """KubeRay's authOptions (mode token): the operator generates the Secret and injects RAY_AUTH_MODE and
    RAY_AUTH_TOKEN into every Ray container (kuberay ray-operator/controllers/ray/common/pod.go)."""
    (rs,) = by_kind(render(chart), "RayService")
    assert rs["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    objects = render(chart, {"rayAuth": {"secretName": "my-ray-token"}})
    assert_all_valid(objects, crd_validator)
    (rs,) = by_kind(objects, "RayService")
    assert rs["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token", "secretName": "my-ray-token"}
    (rs,) = by_kind(render(chart, {"rayAuth": {"enabled": False}}), "RayService")
    assert "authOptions" not in rs["spec"]["rayClusterConfig"]


def test_helm_test_pod_checks_the_model_through_the_gateway(chart) -> None:
    (pod,) = by_kind(render(chart), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["URL"]["value"] == f"http://{RELEASE}-dsserve-serve-svc:8000/v1/models"
    assert env["MODEL"]["value"] == load_spec(DEFAULT_PROFILE).model.id
    assert env["API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "dsserve-api-keys", "key": "api-keys"}
    assert "/v1/models" in env["URL"]["value"] and "Bearer" in pod["spec"]["containers"][0]["command"][2]


def test_podmonitors_select_head_and_workers(chart) -> None:
    monitors = {m["metadata"]["name"]: m for m in by_kind(render(chart), "PodMonitor")}
    head, worker = monitors[f"{RELEASE}-dsserve-head"], monitors[f"{RELEASE}-dsserve-worker"]
    assert head["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "head"
    assert worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert [e["port"] for e in worker["spec"]["podMetricsEndpoints"]] == ["metrics", "haproxy-metrics"]
    assert head["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(render(chart, {"podMonitor": {"enabled": False}}), "PodMonitor")


def test_autoscaling_and_incremental_upgrade_render_valid_objects(chart, crd_validator) -> None:
    values = {
        "autoscaling": {"enabled": True, "idleTimeoutSeconds": 600},
        "worker": {"replicas": 1, "minReplicas": 1, "maxReplicas": 3},
        "upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade", "gatewayClassName": "istio"},
        "image": {"digest": "sha256:" + "a" * 64},
        "modelStorage": {"type": "hostPath", "hostPath": "/data/models"},
        "head": {"rayStartParams": {"num-cpus": "2"}},
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    (rs,) = by_kind(objects, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 600
    group = cluster["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (1, 1, 3)
    assert rs["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["gatewayClassName"] == "istio"
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "2"  # the user's flag wins
    assert group["template"]["spec"]["containers"][0]["image"] == "dsserve@sha256:" + "a" * 64
    assert group["template"]["spec"]["volumes"][1]["hostPath"] == {"path": "/data/models", "type": "Directory"}


def test_rayservice_name_fits_kuberay(chart) -> None:
    long_release = "a" * 53  # Helm's longest release name
    (rs,) = by_kind(render(chart, name=long_release), "RayService")
    name = rs["metadata"]["name"]
    assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)


# ---------------------------------------------------------------------------------------------- monitoring files


def _dir_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def test_chart_monitoring_files_are_copies_of_deploy() -> None:
    """The chart's alert rules and dashboards are byte-identical copies of deploy/ (`make render` copies them).

    Until the observability issue adds deploy/prometheus/rules/*.yaml and deploy/grafana/dashboards/*.json,
    both sides are empty and this passes trivially, but honestly: it compares the file names both ways (a
    file on one side only fails it, whatever its extension) and then the bytes of each.
    """
    for source, copy_dir in MONITORING_DIRS:
        src, dst = _dir_files(source), _dir_files(copy_dir)
        assert sorted(src) == sorted(dst), (
            f"{rel(source)} has {sorted(src)} but {rel(copy_dir)} has {sorted(dst)}; run `make render` "
            "(only *.yaml rules and *.json dashboards are copied)"
        )
        for name in src:
            assert src[name] == dst[name], (
                f"{rel(copy_dir)}/{name} differs from {rel(source)}/{name}; run `make render`"
            )


def test_monitoring_templates_render_nothing_without_files(chart) -> None:
    objects = render(chart, {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}})
    has_rules = any(_dir_files(MONITORING_DIRS[0][1]))
    has_dashboards = any(_dir_files(MONITORING_DIRS[1][1]))
    assert bool(by_kind(objects, "PrometheusRule")) == has_rules
    assert (
        bool([c for c in by_kind(objects, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"])
        == has_dashboards
    )


_SAMPLE_RULES = """\
groups:
  - name: sample.rules
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: SampleTargetDown
        expr: up{job="x"} == 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: A target is down.
          description: "{{ $labels.instance }} has been down for 5 minutes."
"""
_SAMPLE_DASHBOARD = '{"uid": "sample", "title": "Sample <&>", "panels": []}\n'


def test_monitoring_templates_render_files_when_present(tmp_path: Path, crd_validator) -> None:
    """The PrometheusRule and dashboard templates, fed test files in a scratch copy of the chart (the real
    rules and dashboards belong to the observability issue)."""
    scratch = tmp_path / "dsserve"
    shutil.copytree(CHART, scratch)
    shutil.rmtree(scratch / "files/prometheus/rules", ignore_errors=True)  # the real ones: tested elsewhere
    shutil.rmtree(scratch / "files/grafana/dashboards", ignore_errors=True)
    (scratch / "files/prometheus/rules").mkdir(parents=True, exist_ok=True)
    (scratch / "files/grafana/dashboards").mkdir(parents=True, exist_ok=True)
    (scratch / "files/prometheus/rules/sample.yaml").write_text(_SAMPLE_RULES)
    (scratch / "files/grafana/dashboards/sample_overview.json").write_text(_SAMPLE_DASHBOARD)
    values = {
        "prometheusRule": {"additionalRuleLabels": {"team": "llm", "severity": "page"}},
        "dashboards": {"annotations": {"grafana_folder": "dsserve"}},
    }
    with helm_python.Chart.load(scratch) as c:
        objects = render(c, values)
        text = notes(c, values)
    assert_all_valid(objects, crd_validator)
    (rule,) = by_kind(objects, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    record, alert = group["rules"]
    assert record["labels"] == {"team": "llm", "severity": "page"}
    assert alert["labels"] == {"team": "llm", "severity": "warning"}  # a rule's own label wins
    # Alert templates pass through as data, neither escaped nor evaluated.
    assert alert["annotations"]["description"] == "{{ $labels.instance }} has been down for 5 minutes."
    assert alert["expr"] == 'up{job="x"} == 0'
    (dashboard,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["name"] == "ds-dsserve-dashboard-sample-overview"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "dsserve"}
    assert dashboard["data"] == {"sample_overview.json": _SAMPLE_DASHBOARD}
    assert "sample_overview" in text and "PrometheusRule ds-dsserve" in text
    with helm_python.Chart.load(scratch) as c:
        off = render(c, {"prometheusRule": {"enabled": False}, "dashboards": {"enabled": False}})
    assert not by_kind(off, "PrometheusRule") and not by_kind(off, "ConfigMap")


# ---------------------------------------------------------------------------------------------- values and schema


SCHEMA_REJECTS = {
    # id: (values, what the message must say); each message names the offending path
    "unknown-key": (with_value("imge", {"repository": "x"}), "at '': additional properties 'imge' not allowed"),
    "digest-format": (
        with_value("image.digest", "sha256:abc"),
        "at '/image/digest': 'sha256:abc' does not match pattern",
    ),
    "upgrade-strategy": (
        with_value("upgradeStrategy.type", "BlueGreen"),
        "at '/upgradeStrategy/type': value must be one of 'NewCluster', 'NewClusterWithIncrementalUpgrade', 'None'",
    ),
    "incremental-needs-gateway": (
        with_value("upgradeStrategy.type", "NewClusterWithIncrementalUpgrade"),
        "at '/upgradeStrategy/gatewayClassName': minLength: got 0, want 1",
    ),
    "gpus-type": (with_value("worker.gpusPerPod", "8"), "at '/worker/gpusPerPod': got string, want integer"),
    "gpus-range": (with_value("worker.gpusPerPod", 32), "at '/worker/gpusPerPod': maximum: got 32, want 16"),
    "port-range": (with_value("serve.port", 70000), "at '/serve/port': maximum: got 70,000, want 65,535"),
    "pvc-needs-claim": (
        with_value("modelStorage.existingClaim", ""),
        "at '/modelStorage/existingClaim': minLength: got 0, want 1",
    ),
    "storage-type": (
        with_value("modelStorage.type", "s3"),
        "at '/modelStorage/type': value must be one of 'pvc', 'hostPath', 'none'",
    ),
    "quantity": (with_value("worker.shmSizeLimit", "64GB"), "at '/worker/shmSizeLimit': '64GB' does not match pattern"),
    "env-name": (with_value("apiKeys.envName", "my-keys"), "at '/apiKeys/envName': 'my-keys' does not match pattern"),
    "keys-need-secret": (
        with_value("apiKeys.existingSecret", ""),
        "at '/apiKeys/existingSecret': minLength: got 0, want 1",
    ),
    "key-file-needs-secret": (
        {"apiKeys": {"envName": "", "existingSecret": "", "filePath": "/etc/keys/k"}},
        "at '/apiKeys/existingSecret': minLength: got 0, want 1",
    ),
    "key-file-absolute": (
        with_value("apiKeys.filePath", "keys.txt"),
        "at '/apiKeys/filePath': 'keys.txt' does not match",
    ),
    "serve-config-is-text": (
        with_value("serveConfigV2", {"applications": []}),
        "at '/serveConfigV2': got object, want string",
    ),
    "duration": (with_value("podMonitor.interval", "15"), "at '/podMonitor/interval': '15' does not match pattern"),
}


@pytest.mark.parametrize("case", SCHEMA_REJECTS)
def test_schema_rejects_bad_values(chart, case: str) -> None:
    values, message = SCHEMA_REJECTS[case]
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.validate_schema(values)
    assert message in str(err.value)
    with pytest.raises(helm_python.HelmValuesError):  # an install (render) refuses them too
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_accepts_every_profile_and_the_defaults(chart) -> None:
    chart.validate_schema(None)
    for profile in GPU_PROFILES:
        chart.validate_schema(profile_values(profile))


#: dsserve.validateValues: each check, broken alone -> what its message must say. Each message starts with the
#: value to change and ends with how.
VALIDATE_REFUSES = {
    "image-latest": (with_value("image.tag", "latest"), "image.tag: `latest` is not allowed"),
    "test-image-latest": (with_value("tests.image.tag", "latest"), "tests.image.tag: `latest` is not allowed"),
    "serve-port": (with_value("serve.port", 9000), "serve.port is 9000 but serveConfigV2's http_options.port is 8000"),
    "keys-env": (
        with_value("apiKeys.envName", "OTHER_KEYS"),
        'apiKeys.envName is "OTHER_KEYS" but the Serve config\'s request pipeline reads API keys from ""',
    ),
    "keys-file": (
        with_value("apiKeys.filePath", "/etc/dsserve/api-keys/keys"),
        'apiKeys.filePath is "/etc/dsserve/api-keys/keys" but the Serve config\'s request pipeline reads API keys from '
        'the file "/etc/dsserve/api-keys/api-keys"',
    ),
    "no-applications": (with_value("serveConfigV2", "applications: []\n"), "serveConfigV2 has no applications"),
    "not-yaml": (with_value("serveConfigV2", "applications: [\n"), "serveConfigV2 is not valid YAML"),
    "replicas-bounds": (
        {"autoscaling": {"enabled": True}, "worker": {"minReplicas": 3, "maxReplicas": 2, "replicas": 2}},
        "worker.replicas: worker.replicas (2) must lie between worker.minReplicas (3) and worker.maxReplicas (2)",
    ),
    **{
        f"peer-{which}": (
            with_value(
                f"networkPolicy.{which}", [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}]
            ),
            f"networkPolicy.{which}[0]: namespaceSelector without matchLabels or matchExpressions selects every "
            "namespace, so a pod in any namespace with the podSelector's labels would get in; name the namespace, "
            "e.g. namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}",
        )
        for which in ("gatewayFrom", "metricsFrom", "operatorFrom")
    },
}


@pytest.mark.parametrize("case", VALIDATE_REFUSES)
def test_validate_values_refuses_each_inconsistency(chart, case: str) -> None:
    values, message = VALIDATE_REFUSES[case]
    chart.validate_schema(values)  # the schema lets it through: only the cross-field check can catch it
    error = refused(chart, values)
    assert "VALUES VALIDATION:" in error and message in error


def test_validate_values_reports_every_problem_at_once(chart) -> None:
    """One render names all that is wrong, not the first thing a template trips over."""
    values = {**with_value("image.tag", "latest"), **with_value("serve.port", 9000)}
    values["worker"] = {"minReplicas": 3, "maxReplicas": 2, "replicas": 2}
    values["autoscaling"] = {"enabled": True}
    error = refused(chart, values)
    lines = error.split("VALUES VALIDATION:\n", 1)[1].splitlines()
    assert [re.split(r"[: ]", line, maxsplit=1)[0] for line in lines] == ["image.tag", "serve.port", "worker.replicas"]


def test_validate_values_needs_a_serve_config(tmp_path: Path) -> None:
    scratch = tmp_path / "dsserve"
    shutil.copytree(CHART, scratch)
    (scratch / "files" / "serve-config.yaml").unlink()
    error = refused(ChartUnderTest(scratch), {})
    assert "serveConfigV2 is empty and files/serve-config.yaml is missing" in error and "render helm-values" in error


def test_the_checks_live_in_validate_values() -> None:
    """No template fails or requires outside the validateValues helpers: one place holds every check."""
    checks = re.compile(r"\b(fail|required) [\"(]")
    for path in sorted(p for p in (CHART / "templates").rglob("*") if p.is_file()):
        text = path.read_text()
        if path.name == "_helpers.tpl":
            text = text.split('{{- define "dsserve.validateValues" -}}', 1)[0]
        if path.name == "prometheusrule.yaml":
            continue  # it refuses a rule file of the chart itself that is not YAML: a build defect, not a value
        assert not checks.search(text), f"{rel(path)}: a check outside dsserve.validateValues"


# ---------------------------------------------------------------------------------------------- helm-values


def test_helm_values_size_the_cluster_from_the_spec(local_cpu_data: dict) -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-llm-67b.yaml").read_text())
    spec = parse_spec(data)
    assert worker_nodes_for(spec, 2) == 1  # two TP4 replicas share one 8-GPU node
    assert worker_nodes_for(spec, 3) == 2
    data["serving"]["replicas"] = 3
    with pytest.raises(SpecError, match=r"serving.replicas: got 3; 3 replica\(s\) of 4 GPU\(s\) need 2 node"):
        helm_values(parse_spec(data), source="x")
    data["hardware"]["nodes"] = 2
    assert helm_values(parse_spec(data), source="x")["worker"]["replicas"] == 2
    # Autoscaling: from the nodes the fewest replicas need, up to every node of the spec.
    data["serving"]["autoscaling"] = {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 32}
    values = helm_values(parse_spec(data), source="x")
    assert values["autoscaling"] == {"enabled": True}
    assert (values["worker"]["minReplicas"], values["worker"]["replicas"], values["worker"]["maxReplicas"]) == (0, 0, 2)
    # A replica larger than one node (TP8 x PP2) spans two whole nodes.
    data.pop("serving")
    data["engine"].update(tensor_parallel_size=8, pipeline_parallel_size=2)
    assert worker_nodes_for(parse_spec(data), 1) == 2
    # CPU profiles listen on 127.0.0.1, which a Service cannot reach.
    with pytest.raises(SpecError, match="api.host: got '127.0.0.1'.*set api.host: 0.0.0.0"):
        helm_values(parse_spec(local_cpu_data), source="x")


def test_cli_render_helm_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsserve.cli import main

    out = tmp_path / "values.yaml"
    profile = "deploy/profiles/h800x8-deepseek-v2.yaml"
    assert main(["render", "helm-values", str(REPO / profile), "-o", str(out)]) == 0
    assert out.read_text() == render_helm_values(load_spec(REPO / profile), source=profile)
    assert main(["render", "helm-values", str(REPO / "deploy/profiles/local-cpu.yaml")]) == 2
    assert "SpecError: api.host" in capsys.readouterr().err


def test_helm_values_carry_the_serve_config_as_text() -> None:
    """Helm turns numbers in values into float64 and prints big ones as 2e+06; text passes untouched."""
    spec = load_spec(DEFAULT_PROFILE)
    values = yaml.safe_load(render_helm_values(spec, source=rel(DEFAULT_PROFILE)))
    assert values["serveConfigV2"] == render_serve_config(spec, source=rel(DEFAULT_PROFILE))
    data = copy.deepcopy(yaml.safe_load(DEFAULT_PROFILE.read_text()))
    data["engine"]["max_model_len"] = 32768
    data["engine"]["max_num_batched_tokens"] = 2_000_000
    spec = parse_spec(data)
    with helm_python.Chart.load(CHART) as c:
        (rs,) = by_kind(render(c, installable(helm_values(spec, source="x"))), "RayService")
    kwargs = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_config"]["engine_kwargs"]
    assert kwargs["max_num_batched_tokens"] == 2_000_000 and isinstance(kwargs["max_num_batched_tokens"], int)


# ---------------------------------------------------------------------------------------------- hardening


def _writable_paths_from_doc() -> dict[str, dict[str, str]]:
    """docs/kubernetes.md's "Writable paths" table: pod kind -> {path: volume name}."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    section = text.split("### Writable paths", 1)[1].split("\n#", 1)[0]
    out: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        path, volume = re.match(r"`([^`]+)`", cells[1]).group(1), re.match(r"`([^`]+)`", cells[2]).group(1)
        for kind in (k.strip() for k in cells[0].split(",")):
            out.setdefault(kind, {})[path] = volume
    return out


def _writable_mounts(container: dict, volumes: dict[str, dict]) -> dict[str, str]:
    """path -> volume of the container's writable scratch mounts (emptyDirs, and a results PVC)."""
    out = {}
    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        if not m.get("readOnly") and ("emptyDir" in v or "persistentVolumeClaim" in v):
            out[m["mountPath"]] = m["name"]
    return out


def test_every_writable_path_the_doc_lists_is_a_volume(chart) -> None:
    """The root filesystem is read-only; each path docs/kubernetes.md says must be writable is a writable
    volume in exactly the containers it names, and no container has a writable volume the doc leaves out."""
    doc = _writable_paths_from_doc()
    assert set(doc) == {"head", "worker", "autoscaler", "loadtest", "loadtest job", "test"}, sorted(doc)
    assert {"/tmp", "/tmp/ray", "/dev/shm", "/home/dsserve"} <= set(doc["head"]) == set(doc["worker"])
    seen = set()
    for case, values in HARDENING_CASES.items():
        objects = render(chart, values)
        (rs,) = by_kind(objects, "RayService")
        cluster = rs["spec"]["rayClusterConfig"]
        targets: list[tuple[str, dict, dict]] = []
        for kind, spec in (
            ("head", cluster["headGroupSpec"]["template"]["spec"]),
            *(("worker", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]),
        ):
            targets.append((kind, spec["containers"][0], {v["name"]: v for v in spec["volumes"]}))
            head_volumes = {v["name"]: v for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"]}
        if "autoscalerOptions" in cluster:
            targets.append(("autoscaler", cluster["autoscalerOptions"], head_volumes))
        for where, spec in pod_specs(objects):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            if where.startswith(f"{RELEASE}-dsserve-loadtest"):
                for c in containers(spec):
                    kind = "loadtest job" if c["name"] == "loadtest" else "loadtest"
                    targets.append((kind, c, volumes))
            elif where.startswith(f"{RELEASE}-dsserve-test"):
                targets.append(("test", spec["containers"][0], volumes))
        for kind, container, volumes in targets:
            want = dict(doc[kind]) if kind != "loadtest job" else {**doc["loadtest"], **doc["loadtest job"]}
            got = _writable_mounts(container, volumes)
            who = f"{kind}/{container.get('name', 'autoscaler')}"
            assert got == want, f"{case}: {who}: mounted {got}, the doc says {want}"
            seen.add(kind)
    assert seen == set(doc)


def test_ray_pods_keep_their_writers_on_the_scratch_volumes(chart) -> None:
    """HOME is the mounted one (as in the images); numba's cache leaves the read-only site-packages; the
    /tmp/ray volume has KubeRay's name for the log volume it shares with the autoscaler sidecar."""
    (rs,) = by_kind(render(chart, {"autoscaling": {"enabled": True}}), "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    for spec in (cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]):
        env = env_of(spec["containers"][0])
        assert env["HOME"]["value"] == "/home/dsserve"
        assert env["NUMBA_CACHE_DIR"]["value"].startswith("/tmp/")
        ray_tmp = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}["/tmp/ray"]
        assert ray_tmp == "ray-logs"
        sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in spec["volumes"] if "emptyDir" in v}
        assert (sizes["tmp"], sizes["ray-logs"], sizes["home"]) == ("8Gi", "32Gi", "16Gi")
    assert {m["mountPath"]: m["name"] for m in cluster["autoscalerOptions"]["volumeMounts"]}["/tmp/ray"] == "ray-logs"
    (rs,) = by_kind(render(chart, {"scratch": {"rayTmpSizeLimit": ""}}), "RayService")
    vols = {v["name"]: v for v in rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert vols["ray-logs"] == {"name": "ray-logs", "emptyDir": {}}


_SECRETISH = re.compile(r"(^|_)(API_?KEYS?|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)")
_LITERAL_KEY = re.compile(r"\b(sk-[A-Za-z0-9]{8,}|hf_[A-Za-z0-9]{8,})|Bearer [A-Za-z0-9]")


def test_secrets_are_only_referenced(chart) -> None:
    """No Secret is rendered and no value holds a key: every secret-named variable comes from a secretKeyRef,
    key files from Secret volumes, and the values have nowhere to put a key itself."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in value_paths(values):
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(lookup(values, path), dict):
            continue  # a group such as apiKeys or hfToken: its leaves are checked
        if re.search(r"(?i)(keys?|token|passw(or)?d|secrets?|credentials?)$", leaf):
            assert leaf in {"secretKey", "existingSecret", "pullSecrets"}, (
                f"values.yaml: {path} looks like it would hold a secret; take a Secret's name and key instead"
            )
    cases = [
        {
            "hfToken": {"existingSecret": "hf"},
            "autoscaling": {"enabled": True},
            "loadtest": {"enabled": True, "workers": 2},
        },
        {"loadtest": {"enabled": True, "mode": "locust", "workers": 1, "scenarios": {"locustfile.py": "pass\n"}}},
    ]
    for values in cases:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
        objects = render(chart, values)
        assert not by_kind(objects, "Secret")
        for where, spec in pod_specs(objects):
            for c in containers(spec):
                secret_mounts = [
                    m["mountPath"]
                    for m in c.get("volumeMounts", [])
                    if any(v["name"] == m["name"] and "secret" in v for v in spec.get("volumes", []))
                ]
                for name, e in env_of(c).items():
                    if name.endswith("_PATH") and "value" in e:  # a secret's file: must lie on a Secret mount
                        assert any(e["value"].startswith(mp + "/") for mp in secret_mounts), f"{where}: {name}"
                    elif _SECRETISH.search(name) or name == chart.values["apiKeys"]["envName"]:
                        assert "value" not in e and set(e["valueFrom"]) == {"secretKeyRef"}, (
                            f"{where}/{c['name']}: {name}"
                        )
            for v in spec.get("volumes", []):
                assert "secret" not in v or set(v["secret"]) <= {"secretName", "items", "defaultMode", "optional"}
        for path, text in manifests.items():
            assert not _LITERAL_KEY.search(text.replace("Bearer ${", "").replace("Bearer $", "")), path


def test_the_hugging_face_token_is_a_file_not_a_variable(chart) -> None:
    (rs,) = by_kind(render(chart, {"hfToken": {"existingSecret": "hf", "secretKey": "tok"}}), "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    for pod in (cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]):
        c = pod["containers"][0]
        env = env_of(c)
        assert "HF_TOKEN" not in env and env["HF_TOKEN_PATH"]["value"] == "/etc/dsserve/hf-token/token"
        assert {"name": "hf-token", "mountPath": "/etc/dsserve/hf-token", "readOnly": True} in c["volumeMounts"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "hf-token"]
        assert vol["secret"] == {"secretName": "hf", "defaultMode": 0o440, "items": [{"key": "tok", "path": "token"}]}
