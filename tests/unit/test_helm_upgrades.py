"""helm/dsserve on day two: upgrades that do not replace the cluster for nothing, a head that is not a silent single
point of failure, the API exposed for streaming, and production installs pinned by digest. Every case renders the
real chart (with the real values files where a profile matters) and validates what it renders as
tests/unit/helm_support.py says (the RayService strictly against KubeRay's CRD).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from dsserve.config import load_spec
from dsserve.planner.drain import graceful_shutdown_timeout_s
from dsserve.render.helm_values import helm_values, termination_grace_period_s
from dsserve.render.queries import PART_OF_LABEL
from tests.unit.helm_support import (
    CHART,
    DEFAULT_PROFILE,
    GPU_PROFILES,
    IMAGE_DIGEST,
    RELEASE,
    VALUES_DIR,
    ChartUnderTest,
    assert_all_valid,
    by_kind,
    containers,
    module_fixtures,
    profile_values,
    refused,
    render,
    validation_problems,
    with_value,
)

chart, crd_validator = module_fixtures(CHART)

#: The largest GPU layout: two worker pods, the case where a worker budget can be more than 0.
TWO_NODES = next(p for p in GPU_PROFILES if p.stem == "h800x16-deepseek-v3")


def _rayservice(objects: list[dict]) -> dict:
    (rs,) = by_kind(objects, "RayService")
    return rs


def _cluster(objects: list[dict]) -> dict:
    return _rayservice(objects)["spec"]["rayClusterConfig"]


def _head(objects: list[dict]) -> dict:
    return _cluster(objects)["headGroupSpec"]["template"]


def _worker(objects: list[dict]) -> dict:
    return _cluster(objects)["workerGroupSpecs"][0]["template"]


def _longest_request_s(rs: dict) -> float:
    """The largest graceful_shutdown_timeout_s anywhere in the RayService's Serve config."""
    found: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "graceful_shutdown_timeout_s":
                    found.append(float(value))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    assert found, "the Serve config sets no graceful_shutdown_timeout_s"
    return max(found)


def _bumped_chart(tmp_path: Path, version: str, app_version: str | None = None) -> ChartUnderTest:
    """A copy of the chart with Chart.yaml's version (and the load-test subchart's, as a release of the chart
    bumps both) and optionally appVersion changed."""
    scratch = tmp_path / "dsserve"
    shutil.copytree(CHART, scratch)
    meta_path = scratch / "Chart.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["version"] = version
    if app_version:
        meta["appVersion"] = app_version
    meta["dependencies"][0]["version"] = version
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    sub_path = scratch / "charts" / "loadtest" / "Chart.yaml"
    sub = yaml.safe_load(sub_path.read_text())
    sub["version"] = version
    if app_version:
        sub["appVersion"] = app_version
    sub_path.write_text(yaml.safe_dump(sub, sort_keys=False))
    return ChartUnderTest(scratch)


# ---------------------------------------------------------------------------------------------- upgrades (A2)


def test_a_chart_release_leaves_the_cluster_config_alone(chart, tmp_path: Path) -> None:
    """KubeRay hashes rayClusterConfig and replaces the whole cluster (twice the GPUs, every model reloaded) when
    it changes: a chart release with the image pinned must not change it. Only the RayService's own labels move."""
    bumped = _bumped_chart(tmp_path, "0.2.0", app_version="0.2.0")
    values = profile_values(DEFAULT_PROFILE)  # pinned by digest, as production values are
    old, new = _rayservice(render(chart, values)), _rayservice(render(bumped, values))
    assert old["spec"]["rayClusterConfig"] == new["spec"]["rayClusterConfig"]
    assert old["spec"]["serveConfigV2"] == new["spec"]["serveConfigV2"]
    assert old["metadata"]["labels"]["helm.sh/chart"] == "dsserve-0.1.0"
    assert new["metadata"]["labels"]["helm.sh/chart"] == "dsserve-0.2.0"
    assert new["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"
    for template in (_head([new]), _worker([new])):
        labels = template["metadata"]["labels"]
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/part-of"] == "dsserve"


def test_an_unpinned_image_is_the_only_thing_a_new_app_version_changes(chart, tmp_path: Path) -> None:
    """Without a digest the tag follows appVersion: a new dsserve release is a new cluster, through the image
    fields alone (the point of the release), not through labels."""
    bumped = _bumped_chart(tmp_path, "0.2.0", app_version="0.2.0")
    old, new = _cluster(render(chart)), _cluster(render(bumped))
    for cluster in (old, new):
        for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
            template["spec"]["containers"][0].pop("image")
    assert old == new


def test_common_labels_stay_out_of_the_cluster_config(chart) -> None:
    labelled = render(chart, {"commonLabels": {"team": "llm", "cost-center": "42"}})
    assert _cluster(labelled) == _cluster(render(chart))
    rs = _rayservice(labelled)
    assert rs["metadata"]["labels"]["team"] == "llm"
    assert all(o["metadata"]["labels"]["team"] == "llm" for o in labelled)
    assert "team" not in _head(labelled)["metadata"]["labels"]


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_the_old_cluster_outlives_its_longest_request(chart, profile: Path) -> None:
    """rayClusterDeletionDelaySeconds: after the switch, the old cluster finishes its generations first."""
    rs = _rayservice(render(chart, profile_values(profile)))
    delay = rs["spec"]["rayClusterDeletionDelaySeconds"]
    spec = load_spec(profile)
    assert delay == termination_grace_period_s(spec) == math.ceil(graceful_shutdown_timeout_s(spec)) + 60
    assert delay > _longest_request_s(rs) > 60  # KubeRay's default (60 s) would cut them


def test_a_deletion_delay_shorter_than_the_drain_is_refused(chart) -> None:
    error = refused(chart, with_value("upgradeStrategy.rayClusterDeletionDelaySeconds", 60))
    assert "upgradeStrategy.rayClusterDeletionDelaySeconds is 60 but the Serve config lets a request run 322 s" in error
    assert "set it to at least 322" in error
    # with type None there is no second cluster to delete
    render(chart, {"upgradeStrategy": {"type": "None", "rayClusterDeletionDelaySeconds": 0}})


def test_incremental_upgrade_needs_the_autoscaler(chart, crd_validator) -> None:
    """KubeRay's ValidateClusterUpgradeOptions rejects NewClusterWithIncrementalUpgrade without the in-tree
    autoscaler; the chart refuses to render it, and renders it valid with the autoscaler."""
    incremental = {"upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade", "gatewayClassName": "istio"}}
    chart.validate_schema(incremental)  # only the cross-field check can catch it
    error = refused(chart, incremental)
    assert "upgradeStrategy.type: NewClusterWithIncrementalUpgrade needs KubeRay's in-tree autoscaler" in error
    assert "set autoscaling.enabled=true" in error
    objects = render(chart, {**incremental, "autoscaling": {"enabled": True}})
    assert_all_valid(objects, crd_validator)
    rs = _rayservice(objects)
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    options = rs["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    # the rest of KubeRay's checks: the options it requires, in its ranges
    assert options["gatewayClassName"] == "istio" and options["intervalSeconds"] > 0
    assert 0 <= options["stepSizePercent"] <= 100 and 0 <= options["maxSurgePercent"] <= 100


def test_the_docs_say_which_changes_replace_the_cluster() -> None:
    """docs/kubernetes.md's upgrade table names every upgrade-relevant value, and no longer recommends the
    incremental strategy without the autoscaler."""
    text = (Path(__file__).parents[2] / "docs" / "kubernetes.md").read_text()
    section = text.split("### What a values change does", 1)[1].split("\n## ", 1)[0]
    for value in (
        "`serveConfigV2`",
        "`image.*`",
        "`head.*`",
        "`worker.*`",
        "`commonLabels`",
        "`serveEnv`",
        "`autoscaling.*`",
    ):
        assert value in section, f"the upgrade table does not mention {value}"
    upgrading = text.split("\n## Upgrading\n", 1)[1].split("\n## ", 1)[0]
    (bullet,) = [b for b in upgrading.split("\n- ") if b.startswith("`NewClusterWithIncrementalUpgrade`")]
    assert "autoscaling.enabled" in bullet and "refuses" in bullet


# ---------------------------------------------------------------------------------------------- the head (A1)


def test_the_head_is_out_of_the_serve_service(chart) -> None:
    objects = render(chart)
    assert _rayservice(objects)["spec"]["excludeHeadPodFromServeSvc"] is True
    assert (
        _rayservice(render(chart, with_value("serve.excludeHeadPod", False)))["spec"]["excludeHeadPodFromServeSvc"]
        is False
    )


def test_gcs_fault_tolerance_is_one_switch(chart, crd_validator) -> None:
    """Off by default; on, KubeRay's gcsFaultToleranceOptions with the Redis password from a Secret (never a
    value, never REDIS_PASSWORD in the head's environment, which KubeRay then rejects)."""
    assert "gcsFaultToleranceOptions" not in _cluster(render(chart))
    values = {
        "gcsFaultTolerance": {
            "enabled": True,
            "redisAddress": "redis.redis.svc:6379",
            "redisPassword": {"existingSecret": "ray-redis", "secretKey": "password"},
        }
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    cluster = _cluster(objects)
    assert cluster["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis.redis.svc:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "ray-redis", "key": "password"}}},
    }
    head = cluster["headGroupSpec"]
    env = {e["name"] for c in containers(head["template"]["spec"]) for e in c.get("env", [])}
    assert not env & {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "REDIS_USERNAME"}
    assert "redis-password" not in head["rayStartParams"]
    # without a password Secret, no redisPassword; the namespace when given
    values["gcsFaultTolerance"].update(redisPassword={"existingSecret": ""}, externalStorageNamespace="chat")
    options = _cluster(render(chart, values))["gcsFaultToleranceOptions"]
    assert options == {"redisAddress": "redis.redis.svc:6379", "externalStorageNamespace": "chat"}
    with pytest.raises(helm_python.HelmValuesError, match="at '/gcsFaultTolerance/redisAddress': minLength"):
        chart.validate_schema(with_value("gcsFaultTolerance.enabled", True))


def _kuberay_pod_labels(template: dict, node_type: str, group: str | None) -> dict[str, str]:
    """The labels KubeRay gives a pod it makes from a template (common/pod.go labelPod): the template's and its own."""
    labels = dict(template["metadata"]["labels"])
    labels.update({"ray.io/node-type": node_type, "ray.io/cluster": "ds-dsserve-x7k2p", "ray.io/is-ray-node": "yes"})
    labels["ray.io/group"] = group or "headgroup"
    return labels


def _selects(pdb: dict, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())


def test_disruption_budgets_cover_the_head_and_the_workers(chart, crd_validator) -> None:
    objects = render(chart, profile_values(TWO_NODES))
    assert_all_valid(objects, crd_validator)
    budgets = {p["metadata"]["name"]: p for p in by_kind(objects, "PodDisruptionBudget")}
    head_pdb, worker_pdb = budgets[f"{RELEASE}-dsserve-head"], budgets[f"{RELEASE}-dsserve-worker"]
    group = _cluster(objects)["workerGroupSpecs"][0]
    head_pod = _kuberay_pod_labels(_head(objects), "head", None)
    worker_pod = _kuberay_pod_labels(group["template"], "worker", group["groupName"])
    assert _selects(head_pdb, head_pod) and not _selects(head_pdb, worker_pod)
    assert _selects(worker_pdb, worker_pod) and not _selects(worker_pdb, head_pod)
    other_release = {**worker_pod, "app.kubernetes.io/instance": "other"}
    assert not _selects(worker_pdb, other_release)
    # RayCluster has no scale subresource: only an integer minAvailable is accepted for its pods
    assert head_pdb["spec"] == {"minAvailable": 1, "selector": head_pdb["spec"]["selector"]}
    assert worker_pdb["spec"]["minAvailable"] == group["replicas"] - 1 == 1
    for pdb in (head_pdb, worker_pdb):
        assert pdb["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # autoscaling: the budget counts from the fewest pods the autoscaler keeps
    scaled = render(
        chart, {"autoscaling": {"enabled": True}, "worker": {"minReplicas": 3, "replicas": 3, "maxReplicas": 6}}
    )
    (w,) = [p for p in by_kind(scaled, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-worker")]
    assert w["spec"]["minAvailable"] == 2
    assert not by_kind(render(chart, with_value("podDisruptionBudget.enabled", False)), "PodDisruptionBudget")


def test_priority_classes_reach_the_pods(chart, crd_validator) -> None:
    objects = render(chart)
    assert "priorityClassName" not in _head(objects)["spec"] and "priorityClassName" not in _worker(objects)["spec"]
    values = {"head": {"priorityClassName": "llm-critical"}, "worker": {"priorityClassName": "llm-serving"}}
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    assert _head(objects)["spec"]["priorityClassName"] == "llm-critical"
    assert _worker(objects)["spec"]["priorityClassName"] == "llm-serving"


def _qos_class(pod_containers: list[dict]) -> str:
    """Kubernetes' QoS class of a pod from its containers' cpu and memory (pkg/apis/core/v1/helper/qos)."""
    guaranteed = True
    for c in pod_containers:
        requests, limits = c.get("resources", {}).get("requests", {}), c.get("resources", {}).get("limits", {})
        for resource in ("cpu", "memory"):
            if resource not in limits or str(requests.get(resource, limits[resource])) != str(limits[resource]):
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable"


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaler-sidecar"])
def test_the_head_pod_is_guaranteed(chart, autoscaling: bool) -> None:
    """The last pod the kubelet evicts under node pressure. With the autoscaler, KubeRay adds its sidecar with
    autoscalerOptions.resources: it must be Guaranteed too, or the pod is not."""
    cluster = _cluster(render(chart, with_value("autoscaling.enabled", autoscaling)))
    pod = [c for c in containers(cluster["headGroupSpec"]["template"]["spec"])]
    if autoscaling:
        pod.append({"name": "autoscaler", "resources": cluster["autoscalerOptions"]["resources"]})
    assert _qos_class(pod) == "Guaranteed"
    # and the check would see a Burstable one
    assert _qos_class([{"resources": {"requests": {"cpu": "4", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}]) == (
        "Burstable"
    )


# ---------------------------------------------------------------------------------------------- exposure (A6)


def test_ingress_streams_and_outlasts_the_longest_generation(chart, crd_validator) -> None:
    assert not by_kind(render(chart), "Ingress")
    objects = render(
        chart, {"ingress": {"enabled": True, "host": "llm.example.com", "tls": {"existingSecret": "llm-tls"}}}
    )
    assert_all_valid(objects, crd_validator)  # against Kubernetes' own Ingress schema, strict
    (ing,) = by_kind(objects, "Ingress")
    notes = ing["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    longest = _longest_request_s(_rayservice(objects))
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) == math.ceil(longest) > 60  # nginx's default: 60
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{RELEASE}-dsserve-serve-svc",
        "port": {"number": 8000},
    }
    # an explicit timeout wins; another class gets no nginx annotations, the user's annotations win
    values = {"ingress": {"enabled": True, "timeoutSeconds": 3600, "annotations": {"a": "b"}}}
    (ing,) = by_kind(render(chart, values), "Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert "host" not in ing["spec"]["rules"][0] and "tls" not in ing["spec"]
    values = {"ingress": {"enabled": True, "className": "traefik", "annotations": {"a": "b"}}}
    (ing,) = by_kind(render(chart, values), "Ingress")
    assert ing["metadata"]["annotations"] == {"a": "b"}


def test_the_ingress_timeout_follows_each_profile(chart) -> None:
    for profile in GPU_PROFILES:
        values = profile_values(profile)
        values["ingress"] = {"enabled": True}
        objects = render(chart, values)
        (ing,) = by_kind(objects, "Ingress")
        timeout = int(ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        assert timeout == math.ceil(graceful_shutdown_timeout_s(load_spec(profile))), profile.stem


def test_httproute_streams_with_timeouts(chart, crd_validator) -> None:
    assert not by_kind(render(chart), "HTTPRoute")
    values = {
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["llm.example.com"],
        }
    }
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)  # the HTTPRoute against helm_support.HTTPROUTE_V1_SCHEMA
    (route,) = by_kind(objects, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == values["httpRoute"]["parentRefs"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": f"{RELEASE}-dsserve-serve-svc", "port": 8000}]
    longest = math.ceil(_longest_request_s(_rayservice(objects)))
    assert rule["timeouts"] == {"request": f"{longest}s", "backendRequest": f"{longest}s"}
    # the schema check is not vacuous: a misplaced field fails it
    broken = {**route, "spec": {**route["spec"], "timeouts": rule["timeouts"]}}
    assert validation_problems(broken, crd_validator)
    with pytest.raises(helm_python.HelmValuesError, match="at '/httpRoute/parentRefs': minItems"):
        chart.validate_schema(with_value("httpRoute.enabled", True))


# ---------------------------------------------------------------------------------------------- images (A6)


def test_production_values_require_a_digest(chart) -> None:
    assert chart.values["image"]["requireDigest"] is False
    for profile in GPU_PROFILES:
        rendered = yaml.safe_load((VALUES_DIR / profile.name).read_text())
        assert rendered["image"] == {"requireDigest": True}, profile.stem
        assert helm_values(load_spec(profile), source="x")["image"]["requireDigest"] is True
    bare = yaml.safe_load((VALUES_DIR / DEFAULT_PROFILE.name).read_text())
    error = refused(chart, bare)
    assert "image.digest: image.requireDigest is true but no digest is set" in error
    assert "set image.digest=sha256:<64 hex>" in error
    worker = _worker(render(chart, profile_values(DEFAULT_PROFILE)))
    assert worker["spec"]["containers"][0]["image"] == f"dsserve@{IMAGE_DIGEST}"


def test_the_load_test_job_survives_a_chart_release(tmp_path: Path) -> None:
    """The Job's name hashes the test (values, image), not the chart's version: a chart release reruns nothing,
    and its pod template (immutable) is unchanged, so `helm upgrade` does not fail on it."""
    values = {"loadtest": {"enabled": True}}

    def job(c: ChartUnderTest, values: dict[str, Any]) -> dict:
        (master,) = by_kind(render(c, values), "Job")  # job mode without worker pods: the one Job
        return master

    old, new = job(ChartUnderTest(CHART), values), job(_bumped_chart(tmp_path, "0.2.0"), values)
    assert old["metadata"]["name"] == new["metadata"]["name"]
    assert old["spec"] == new["spec"]
    assert old["metadata"]["labels"]["helm.sh/chart"] != new["metadata"]["labels"]["helm.sh/chart"]
    # a changed test is still a new run
    again = job(ChartUnderTest(CHART), {"loadtest": {"enabled": True, "runId": "again"}})
    assert again["metadata"]["name"] != old["metadata"]["name"]


# ---------------------------------------------------------------------------------------------- finding 10


def _quantity_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    number, suffix = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
    return float(number) * units.get(suffix, 1)


def test_ray_pods_request_the_disk_their_scratch_volumes_may_fill(chart) -> None:
    objects = render(chart)
    for template in (_head(objects), _worker(objects)):
        spec = template["spec"]
        disk = sum(
            _quantity_bytes(v["emptyDir"]["sizeLimit"])
            for v in spec["volumes"]
            if "emptyDir" in v and "medium" not in v["emptyDir"]
        )
        request = spec["containers"][0]["resources"]["requests"]["ephemeral-storage"]
        assert _quantity_bytes(request) == disk == 56 * 2**30
    mine = render(
        chart,
        {
            "head": {
                "resources": {
                    "requests": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "10Gi"},
                    "limits": {"cpu": "4", "memory": "16Gi"},
                }
            }
        },
    )
    assert _head(mine)["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "10Gi"


@pytest.mark.parametrize("profile", [DEFAULT_PROFILE, TWO_NODES], ids=lambda p: p.stem)
def test_the_object_store_fits_in_dev_shm(chart, profile: Path) -> None:
    """Ray puts the object store in /tmp (disk) when /dev/shm is smaller than it; its default for the head (30 %
    of 16Gi, 5.2 GB) would not fit the head's 4Gi. The chart states it, below each pod's /dev/shm."""
    cluster = _cluster(render(chart, profile_values(profile)))
    for group in (cluster["headGroupSpec"], cluster["workerGroupSpecs"][0]):
        (shm,) = [v for v in group["template"]["spec"]["volumes"] if v["name"] == "dshm"]
        store = int(group["rayStartParams"]["object-store-memory"])
        assert (
            0.85 * _quantity_bytes(shm["emptyDir"]["sizeLimit"]) < store < _quantity_bytes(shm["emptyDir"]["sizeLimit"])
        )
    assert 0.3 * 16 * 2**30 > _quantity_bytes("4Gi")  # what Ray would have picked for the head


def test_target_down_does_not_depend_on_the_release_name(chart) -> None:
    """DsserveTargetDown reads job_instance:up:min, which selects dsserve's targets by the pods' part-of label
    (PodMonitor podTargetLabels), so fullnameOverride cannot hide them."""
    objects = render(chart, {"fullnameOverride": "chat"})
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "rules" / "dsserve-recording.yaml").read_text())
    (up,) = [r for g in rules["groups"] for r in g["rules"] if r.get("record") == "job_instance:up:min"]
    assert f'{PART_OF_LABEL}="dsserve"' in up["expr"] and "job=~" not in up["expr"]
    for monitor in by_kind(objects, "PodMonitor"):
        assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/part-of"]
        assert "dsserve" not in monitor["metadata"]["name"]
    for template in (_head(objects), _worker(objects)):
        # Prometheus turns the pod label app.kubernetes.io/part-of into the target label PART_OF_LABEL
        assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dsserve"
        assert re.sub(r"[^a-zA-Z0-9_]", "_", "app.kubernetes.io/part-of") == PART_OF_LABEL


def test_runbook_urls_can_be_made_absolute(chart) -> None:
    base = "https://git.example.com/dsserve/blob/main/docs/runbook.md"
    (rule,) = by_kind(render(chart, with_value("prometheusRule.runbookBaseUrl", base)), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"{base}#{alert['alert'].lower()}"
    with pytest.raises(helm_python.HelmValuesError, match="runbookBaseUrl"):
        chart.validate_schema(with_value("prometheusRule.runbookBaseUrl", "docs/runbook.md"))


def test_runbook_urls_default_to_the_charts_home(tmp_path: Path) -> None:
    """Without runbookBaseUrl the links follow Chart.yaml's home (the project's repository) once it names one;
    until then they stay as the rule files have them."""
    scratch = tmp_path / "dsserve"
    shutil.copytree(CHART, scratch)
    meta = yaml.safe_load((scratch / "Chart.yaml").read_text())
    shipped = yaml.safe_load((CHART / "files" / "prometheus" / "rules" / "dsserve-alerts.yaml").read_text())
    first = shipped["groups"][0]["rules"][0]

    def first_url(c: ChartUnderTest) -> str:
        (rule,) = by_kind(render(c), "PrometheusRule")
        (alert,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == first["alert"]]
        return alert["annotations"]["runbook_url"]

    if "home" not in meta:
        assert first_url(ChartUnderTest(scratch)) == first["annotations"]["runbook_url"]
    meta["home"] = "https://git.example.com/dsserve/"
    (scratch / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    expected = f"https://git.example.com/dsserve/blob/main/docs/runbook.md#{first['alert'].lower()}"
    assert first_url(ChartUnderTest(scratch)) == expected


def test_idle_workers_are_kept_longer_than_a_reload(chart) -> None:
    """A worker pod removed after KubeRay's 300 s would cost a reload (pull, weights, warm-up) at the next burst;
    the chart's default keeps it 30 minutes."""
    assert chart.values["autoscaling"]["idleTimeoutSeconds"] >= 1800
    cluster = _cluster(render(chart, with_value("autoscaling.enabled", True)))
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == chart.values["autoscaling"]["idleTimeoutSeconds"]


def test_upgrade_values_keep_the_release_installable(chart, crd_validator) -> None:
    """Everything above together still renders valid objects for the two-node profile."""
    values = profile_values(TWO_NODES)
    values.update(
        ingress={"enabled": True},
        httpRoute={"enabled": True, "parentRefs": [{"name": "public"}]},
        gcsFaultTolerance={"enabled": True, "redisAddress": "redis:6379"},
        head={"priorityClassName": "llm-critical"},
    )
    chart.validate_schema(values)
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    assert {"Ingress", "HTTPRoute", "PodDisruptionBudget", "RayService"} <= {o["kind"] for o in objects}
