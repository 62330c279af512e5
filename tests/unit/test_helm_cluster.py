"""helm/dsserve on a real GPU cluster: the InfiniBand path between worker pods (worker.rdma), gang scheduling
through KubeRay's batch-scheduler plugins, model storage every worker pod can mount, the persistent compile
cache, the per-group placement knobs and the GPU product pin. Each test renders the real chart with the real
rendered values (helm/values/) and, where it says so, `--set` overrides parsed by Helm's own parser; every
rendered object is checked against its schema (tests/unit/helm_support.py), the RayService against KubeRay's CRD.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from dsserve.catalog import ACCELERATORS
from dsserve.config import load_spec, parse_spec
from dsserve.render.helm_values import GPU_PRODUCT_LABEL, helm_values
from tests.conftest import REPO
from tests.unit.helm_support import (
    CHART,
    GPU_PROFILES,
    RELEASE,
    assert_all_valid,
    by_kind,
    containers,
    module_fixtures,
    pod_specs,
    profile_values,
    refused,
    render,
)

chart, crd_validator = module_fixtures(CHART)

PROFILES = REPO / "deploy" / "profiles"
TWO_NODE = sorted(p for p in GPU_PROFILES if load_spec(p).hardware.nodes > 1)
ONE_NODE = sorted(p for p in GPU_PROFILES if load_spec(p).hardware.nodes == 1)
V3 = PROFILES / "h800x16-deepseek-v3.yaml"
NCCL_DEFAULTS = {"NCCL_IB_DISABLE", "NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "NCCL_DEBUG", "NCCL_DEBUG_SUBSYS"}
#: Where the engines' compile and JIT caches go when compileCache.enabled, relative to compileCache.mountPath.
CACHE_ENV = {
    "VLLM_CACHE_ROOT": "vllm",
    "DG_JIT_CACHE_DIR": "deep_gemm",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "FLASHINFER_WORKSPACE_BASE": "",
    "CUDA_CACHE_PATH": "nv",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
}


def layered(base: dict[str, Any], *sets: str) -> dict[str, Any]:
    """``-f base --set s1 --set s2 ...`` as Helm combines them: every expression parsed by Helm's own --set
    parser into one map, in order, and that map merged over the file (maps merge, anything else replaces; a
    null stays, and Helm then drops that key from the chart's defaults)."""

    def merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for key, value in src.items():
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                merge(dst[key], value)
            else:
                dst[key] = value

    out = copy.deepcopy(base)
    if sets:
        merge(out, helm_python.parse_set_string(",".join(sets)))
    return out


def v3(*sets: str) -> dict[str, Any]:
    """helm/values/h800x16-deepseek-v3.yaml with --set overrides."""
    return layered(profile_values(V3), *sets)


def rendered(chart: Any, crd_validator: Any, values: dict[str, Any]) -> dict:
    """The RayService of a schema-valid render whose every object is valid."""
    chart.validate_schema(values)
    objects = render(chart, values)
    assert_all_valid(objects, crd_validator)
    (rs,) = by_kind(objects, "RayService")
    return rs


def head_pod(rs: dict) -> dict:
    return rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]


def worker_pod(rs: dict) -> dict:
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return group["template"]


def env_values(container: dict) -> dict[str, str]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), f"duplicate variables: {sorted(n for n in names if names.count(n) > 1)}"
    return {e["name"]: e.get("value", "") for e in container["env"]}


# ---------------------------------------------------------------------------------------------- InfiniBand


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_rdma_is_on_exactly_for_the_two_node_profiles(chart, crd_validator, profile: Path) -> None:
    """The rendered values of a profile over several nodes turn the InfiniBand path on: the RDMA device on
    every worker container, IPC_LOCK there and nowhere else, NCCL's IB environment on the workers only."""
    rs = rendered(chart, crd_validator, profile_values(profile))
    two_node = load_spec(profile).hardware.nodes > 1
    assert (profile in TWO_NODE) == two_node
    worker, head = worker_pod(rs)["spec"]["containers"][0], head_pod(rs)["spec"]["containers"][0]
    for key in ("limits", "requests"):
        assert worker["resources"][key].get("rdma/rdma_shared_device_a") == (1 if two_node else None)
        assert not [r for r in head["resources"].get(key, {}) if r.startswith("rdma/")]
    assert worker["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        **({"add": ["IPC_LOCK"]} if two_node else {}),
    }
    assert head["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    worker_env, head_env = env_values(worker), env_values(head)
    assert (NCCL_DEFAULTS <= set(worker_env)) == two_node
    assert not [n for n in head_env if n.startswith("NCCL_")]
    if two_node:
        assert worker_env["NCCL_IB_HCA"] == "mlx5" and worker_env["NCCL_SOCKET_IFNAME"] == "eth0"
        assert worker_env["NCCL_DEBUG"] == "INFO" and "NET" in worker_env["NCCL_DEBUG_SUBSYS"].split(",")


def test_ipc_lock_is_the_only_capability_any_container_adds(chart) -> None:
    """With rdma on, the load test, the helm-test pod, the head and the autoscaler sidecar still drop ALL and
    add nothing; only the GPU worker container adds IPC_LOCK, once, even when containerSecurityContext asks too."""
    values = v3(
        "autoscaling.enabled=true",
        "worker.minReplicas=2,worker.maxReplicas=2",
        "loadtest.enabled=true,loadtest.workers=2",
    )
    objects = render(chart, values)
    adds = {
        f"{where}/{c['name']}": c["securityContext"]["capabilities"].get("add", [])
        for where, spec in pod_specs(objects)
        for c in containers(spec)
    }
    assert adds.pop("worker/gpu/ray-worker") == ["IPC_LOCK"]
    assert len(adds) >= 4 and not any(adds.values()), adds
    (rs,) = by_kind(objects, "RayService")
    assert "add" not in rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]["capabilities"]
    doubled = copy.deepcopy(chart.values["containerSecurityContext"])
    doubled["capabilities"]["add"] = ["IPC_LOCK"]
    (rs,) = by_kind(render(chart, {**values, "containerSecurityContext": doubled}), "RayService")
    assert worker_pod(rs)["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]


def test_rdma_values_are_overridable_with_set(chart, crd_validator) -> None:
    """The resource, the NCCL environment and the Multus network, each changed with --set; a null drops a
    default variable, and worker.extraEnv wins over worker.rdma.env."""
    rs = rendered(
        chart,
        crd_validator,
        v3(
            "worker.rdma.resourceName=nvidia.com/hostdev,worker.rdma.resourceCount=8",
            "worker.rdma.env.NCCL_IB_HCA=mlx5_0\\,mlx5_3",
            "worker.rdma.env.NCCL_IB_GID_INDEX=3",
            "worker.rdma.env.NCCL_DEBUG_SUBSYS=null",
            "worker.extraEnv.NCCL_SOCKET_IFNAME=bond0",
            "worker.rdma.networks=llm/ib-sriov-net",
        ),
    )
    pod = worker_pod(rs)
    worker = pod["spec"]["containers"][0]
    for key in ("limits", "requests"):
        assert worker["resources"][key]["nvidia.com/hostdev"] == 8
        assert "rdma/rdma_shared_device_a" not in worker["resources"][key]
        assert worker["resources"][key]["nvidia.com/gpu"] == 8
    env = env_values(worker)
    assert env["NCCL_IB_HCA"] == "mlx5_0,mlx5_3" and env["NCCL_IB_GID_INDEX"] == "3"
    assert env["NCCL_SOCKET_IFNAME"] == "bond0" and "NCCL_DEBUG_SUBSYS" not in env
    assert pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "llm/ib-sriov-net"
    assert "annotations" not in head_pod(rs)["metadata"]
    # no network by default (a shared RDMA device needs none); an explicit pod annotation wins over the value
    assert "annotations" not in worker_pod(rendered(chart, crd_validator, v3()))["metadata"]
    rs = rendered(
        chart,
        crd_validator,
        v3("worker.rdma.networks=a", "worker.podAnnotations.k8s\\.v1\\.cni\\.cncf\\.io/networks=b"),
    )
    assert worker_pod(rs)["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "b"}
    # an empty resource name requests no device but keeps the rest of the path
    worker = worker_pod(rendered(chart, crd_validator, v3("worker.rdma.resourceName=")))["spec"]["containers"][0]
    assert set(worker["resources"]["limits"]) == {"memory", "nvidia.com/gpu"}
    assert worker["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]


def test_rdma_off_leaves_no_trace(chart) -> None:
    (rs,) = by_kind(render(chart, v3("worker.rdma.enabled=false", "worker.rdma.networks=x")), "RayService")
    pod = worker_pod(rs)
    worker = pod["spec"]["containers"][0]
    assert "add" not in worker["securityContext"]["capabilities"]
    assert not [n for n in env_values(worker) if n.startswith("NCCL_")]
    assert not [r for r in worker["resources"]["limits"] if r.startswith("rdma/")]
    assert "annotations" not in pod["metadata"] and "podAffinity" not in pod["spec"].get("affinity", {})


def test_workers_stay_in_one_ib_domain(chart, crd_validator) -> None:
    """worker.rdma.ibDomainLabel: a required podAffinity on the release's worker pods over that node label,
    added to the user's own affinity rather than replacing it."""
    assert "affinity" not in worker_pod(rendered(chart, crd_validator, v3()))["spec"]
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "ib/block", "operator": "In", "values": ["b7"]}]}]
        }
    }
    own_term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"cache": "warm"}}}
    values = v3("worker.rdma.ibDomainLabel=network.example.com/ib-block")
    values["worker"]["affinity"] = {
        "nodeAffinity": node_affinity,
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [own_term]},
    }
    affinity = worker_pod(rendered(chart, crd_validator, values))["spec"]["affinity"]
    assert affinity["nodeAffinity"] == node_affinity
    own, ours = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert own == own_term
    assert ours == {
        "topologyKey": "network.example.com/ib-block",
        "labelSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "dsserve",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "worker",
            }
        },
    }
    # the rule selects the worker pods themselves (so the first one places the domain)
    labels = worker_pod(rendered(chart, crd_validator, values))["metadata"]["labels"]
    assert ours["labelSelector"]["matchLabels"].items() <= labels.items()
    assert "affinity" not in head_pod(rendered(chart, crd_validator, values))["spec"]


# ---------------------------------------------------------------------------------------------- gang scheduling


def test_gang_scheduling_labels_what_kuberay_reads(chart, crd_validator) -> None:
    """KubeRay copies the RayService's labels to its RayCluster; its plugins read them there
    (ray-operator/controllers/ray/batchscheduler/{volcano,yunikorn}; the operator runs with --batch-scheduler)."""
    gang_keys = {"ray.io/gang-scheduling-enabled", "volcano.sh/queue-name", "yunikorn.apache.org/app-id"}
    assert not gang_keys & set(rendered(chart, crd_validator, v3())["metadata"]["labels"])
    labels = rendered(chart, crd_validator, v3("gangScheduling.enabled=true"))["metadata"]["labels"]
    assert labels["ray.io/gang-scheduling-enabled"] == "true"
    assert not {k for k in labels if k.startswith(("volcano.sh/", "yunikorn.apache.org/"))}
    labels = rendered(chart, crd_validator, v3("gangScheduling.enabled=true,gangScheduling.queue=llm"))["metadata"][
        "labels"
    ]
    assert labels["volcano.sh/queue-name"] == "llm"
    rs = rendered(
        chart,
        crd_validator,
        v3("gangScheduling.enabled=true,gangScheduling.scheduler=yunikorn,gangScheduling.queue=root.llm"),
    )
    labels = rs["metadata"]["labels"]
    assert labels["ray.io/gang-scheduling-enabled"] == "true"
    assert labels["yunikorn.apache.org/app-id"] == rs["metadata"]["name"] == f"{RELEASE}-dsserve"
    assert labels["yunikorn.apache.org/queue"] == "root.llm" and "volcano.sh/queue-name" not in labels
    # KubeRay sets the pods' scheduler itself: a schedulerName of our own would fight it
    for group in ("head", "worker"):
        values = v3("gangScheduling.enabled=true", f"{group}.schedulerName=my-scheduler")
        chart.validate_schema(values)
        error = refused(chart, values)
        assert f'{group}.schedulerName: is "my-scheduler" but gangScheduling.enabled lets KubeRay set' in error


# ---------------------------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    ("sets", "pods", "why"),
    [
        (("modelStorage.accessMode=ReadWriteOnce",), 4, "2 worker pod(s), twice that while a NewCluster upgrade"),
        (("modelStorage.accessMode=ReadWriteOnce", "upgradeStrategy.type=None"), 2, "2 worker pod(s))"),
        (("modelStorage.accessMode=ReadWriteOncePod", "upgradeStrategy.type=None"), 2, "2 worker pod(s))"),
        (
            (
                "modelStorage.accessMode=ReadWriteOnce",
                "upgradeStrategy.type=None",
                "autoscaling.enabled=true",
                "worker.replicas=1,worker.minReplicas=1,worker.maxReplicas=2",
            ),
            2,
            "2 worker pod(s))",
        ),
    ],
)
def test_a_single_node_claim_is_refused_for_several_worker_pods(chart, sets: tuple[str, ...], pods: int, why: str):
    values = v3(*sets)
    chart.validate_schema(values)  # a valid mode: only the cross-field check knows it cannot work here
    error = refused(chart, values)
    mode = values["modelStorage"]["accessMode"]
    assert f'modelStorage.accessMode: the claim "models" is declared {mode}' in error
    assert f"up to {pods} worker pods mount it at once ({why}" in error
    assert "modelStorage.accessMode=ReadOnlyMany" in error and "modelStorage.type=hostPath" in error


def test_storage_every_worker_pod_can_mount_is_accepted(chart, crd_validator) -> None:
    for sets in (
        (),  # the default: ReadOnlyMany
        ("modelStorage.accessMode=ReadWriteMany",),
        ("modelStorage.accessMode=ReadWriteOnce", "modelStorage.type=hostPath"),  # node-local, pre-staged
    ):
        rendered(chart, crd_validator, v3(*sets))
    assert chart.values["modelStorage"]["accessMode"] == "ReadOnlyMany"
    # one worker pod and no second cluster: a single-node claim works
    one = layered(profile_values(ONE_NODE[0]), "modelStorage.accessMode=ReadWriteOnce", "upgradeStrategy.type=None")
    rendered(chart, crd_validator, one)
    # ...but a NewCluster upgrade would start a second worker pod beside the first
    error = refused(chart, layered(one, "upgradeStrategy.type=NewCluster"))
    assert "up to 2 worker pods mount it at once (1 worker pod(s), twice that while a NewCluster upgrade" in error
    with pytest.raises(helm_python.HelmValuesError, match="/modelStorage/accessMode"):
        chart.validate_schema(v3("modelStorage.accessMode=RWX"))


def test_local_prestaged_weights_through_extra_volumes(chart, crd_validator) -> None:
    """Node-local weights on a volume the chart has no type for (here a CSI inline volume), with
    modelStorage.type none and the volume mounted at the model's parent directory."""
    values = v3("modelStorage.type=none")
    values["worker"]["extraVolumes"] = [{"name": "local-models", "csi": {"driver": "local.csi.example.com"}}]
    values["worker"]["extraVolumeMounts"] = [{"name": "local-models", "mountPath": "/models", "readOnly": True}]
    spec = worker_pod(rendered(chart, crd_validator, values))["spec"]
    assert {"name": "local-models", "csi": {"driver": "local.csi.example.com"}} in spec["volumes"]
    assert {"name": "local-models", "mountPath": "/models", "readOnly": True} in spec["containers"][0]["volumeMounts"]
    assert not [v for v in spec["volumes"] if v["name"] == "models"]


# ---------------------------------------------------------------------------------------------- compile cache


def test_compile_caches_land_on_the_cache_volume(chart, crd_validator) -> None:
    """Off (the default), the caches stay in the pod's emptyDirs ($HOME, /tmp) and no variable moves them. On,
    every cache variable points below compileCache.mountPath on the workers (where the engines compile), and
    that path is the hostPath or the PVC; the head is untouched."""
    for values in (v3(), chart.values):
        rs = rendered(chart, crd_validator, values)
        for pod in (head_pod(rs), worker_pod(rs)):
            assert not set(CACHE_ENV) & set(env_values(pod["spec"]["containers"][0]))
            assert not [v for v in pod["spec"]["volumes"] if v["name"] == "compile-cache"]
    for sets, volume in (
        (("compileCache.enabled=true",), {"hostPath": {"path": "/var/cache/dsserve", "type": "Directory"}}),
        (
            ("compileCache.enabled=true,compileCache.type=pvc,compileCache.existingClaim=vllm-cache",),
            {"persistentVolumeClaim": {"claimName": "vllm-cache"}},
        ),
        (
            ("compileCache.enabled=true,compileCache.hostPath=/nvme/cache,compileCache.mountPath=/cache/",),
            {"hostPath": {"path": "/nvme/cache", "type": "Directory"}},
        ),
    ):
        values = v3(*sets)
        rs = rendered(chart, crd_validator, values)
        spec = worker_pod(rs)["spec"]
        (vol,) = [v for v in spec["volumes"] if v["name"] == "compile-cache"]
        assert vol == {"name": "compile-cache", **volume}
        root = values["compileCache"].get("mountPath", "/var/cache/dsserve").rstrip("/")
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "compile-cache"]
        assert mount["mountPath"].rstrip("/") == root and not mount.get("readOnly")
        env = env_values(spec["containers"][0])
        for name, sub in CACHE_ENV.items():
            assert env[name] == (f"{root}/{sub}" if sub else root), name
        head = head_pod(rs)["spec"]
        assert not set(CACHE_ENV) & set(env_values(head["containers"][0]))
        assert not [v for v in head["volumes"] if v["name"] == "compile-cache"]
    # extraEnv still wins over the chart's choice
    env = env_values(
        worker_pod(rendered(chart, crd_validator, v3("compileCache.enabled=true", "extraEnv.TRITON_CACHE_DIR=/x")))[
            "spec"
        ]["containers"][0]
    )
    assert env["TRITON_CACHE_DIR"] == "/x"
    with pytest.raises(helm_python.HelmValuesError, match="/compileCache/existingClaim"):
        chart.validate_schema(v3("compileCache.enabled=true,compileCache.type=pvc"))


# ---------------------------------------------------------------------------------------------- knobs

#: Each knob as `--set` expressions for a group, and what the rendered pod (metadata + spec) must then hold.
KNOBS: dict[str, tuple[tuple[str, ...], Any]] = {
    "runtimeClassName": (("{g}.runtimeClassName=nvidia",), lambda pod, c: pod["spec"]["runtimeClassName"] == "nvidia"),
    "schedulerName": (("{g}.schedulerName=bin-packer",), lambda pod, c: pod["spec"]["schedulerName"] == "bin-packer"),
    "topologySpreadConstraints": (
        (
            "{g}.topologySpreadConstraints[0].maxSkew=1",
            "{g}.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "{g}.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        ),
        lambda pod, c: (
            pod["spec"]["topologySpreadConstraints"]
            == [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]
        ),
    ),
    "extraVolumes": (
        (
            "{g}.extraVolumes[0].name=scratch,{g}.extraVolumes[0].emptyDir.medium=Memory",
            "{g}.extraVolumeMounts[0].name=scratch,{g}.extraVolumeMounts[0].mountPath=/scratch",
        ),
        lambda pod, c: (
            {"name": "scratch", "emptyDir": {"medium": "Memory"}} in pod["spec"]["volumes"]
            and {"name": "scratch", "mountPath": "/scratch"} in c["volumeMounts"]
        ),
    ),
    "extraEnv": (("{g}.extraEnv.MY_SETTING=42",), lambda pod, c: env_values(c)["MY_SETTING"] == "42"),
    "podLabels": (("{g}.podLabels.team=llm",), lambda pod, c: pod["metadata"]["labels"]["team"] == "llm"),
    "podAnnotations": (
        ("{g}.podAnnotations.example\\.com/owner=llm",),
        lambda pod, c: pod["metadata"]["annotations"]["example.com/owner"] == "llm",
    ),
    "tolerations": (
        ("{g}.tolerations[0].key=dedicated,{g}.tolerations[0].operator=Exists,{g}.tolerations[0].effect=NoSchedule",),
        lambda pod, c: {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"],
    ),
    "nodeSelector": (
        ("{g}.nodeSelector.pool=llm",),
        lambda pod, c: pod["spec"]["nodeSelector"]["pool"] == "llm",
    ),
}


@pytest.mark.parametrize("group", ["head", "worker"])
@pytest.mark.parametrize("knob", KNOBS)
def test_each_knob_renders_with_set_for_its_group_only(chart, crd_validator, knob: str, group: str) -> None:
    sets, holds = KNOBS[knob]
    values = v3(*(s.format(g=group) for s in sets))
    rs = rendered(chart, crd_validator, values)
    pods = {"head": head_pod(rs), "worker": worker_pod(rs)}
    pod = pods.pop(group)
    assert holds(pod, pod["spec"]["containers"][0]), f"{group}.{knob}"
    (other,) = pods.values()
    with pytest.raises((KeyError, AssertionError)):
        assert holds(other, other["spec"]["containers"][0])


def test_knobs_are_schema_typed(chart) -> None:
    for group in ("head", "worker"):
        for expression, where in (
            (f"{group}.runtimeClassName=Not_A_Name", f"/{group}/runtimeClassName"),
            (f"{group}.extraVolumes[0].emptyDir.medium=Memory", f"/{group}/extraVolumes/0"),
            (f"{group}.extraVolumeMounts[0].name=x", f"/{group}/extraVolumeMounts/0"),
            (f"{group}.topologySpreadConstraints[0].maxSkew=1", f"/{group}/topologySpreadConstraints/0"),
            (f"{group}.podLabels.team[0]=x", f"/{group}/podLabels/team"),
            (f"{group}.extraEnv.1BAD=1", "invalid propertyName '1BAD'"),
            (f"{group}.unknownKnob=1", f"/{group}"),
        ):
            with pytest.raises(helm_python.HelmValuesError, match=where):
                chart.validate_schema(v3(expression))
    for expression, where in (
        ("worker.rdma.resourceCount=0", "/worker/rdma/resourceCount"),
        ("worker.rdma.resourceName=not a resource", "/worker/rdma/resourceName"),
        ("worker.rdma.ibDomainLabel=bad key!", "/worker/rdma/ibDomainLabel"),
        ("worker.rdma.env.NCCL_IB_HCA[0]=x", "/worker/rdma/env/NCCL_IB_HCA"),
        ("gangScheduling.scheduler=kube", "/gangScheduling/scheduler"),
        ("compileCache.mountPath=cache", "/compileCache/mountPath"),
    ):
        with pytest.raises(helm_python.HelmValuesError, match=where):
            chart.validate_schema(v3(expression))


def test_env_precedence_without_duplicates(chart) -> None:
    """<group>.extraEnv over extraEnv over worker.rdma.env over serveEnv, each name once per container."""
    values = v3(
        "extraEnv.RAY_SERVE_HAPROXY_NBTHREAD=4,extraEnv.NCCL_IB_HCA=mlx5_1,extraEnv.SHARED=global",
        "worker.extraEnv.SHARED=worker,head.extraEnv.SHARED=head",
    )
    (rs,) = by_kind(render(chart, values), "RayService")
    worker, head = (
        env_values(worker_pod(rs)["spec"]["containers"][0]),
        env_values(head_pod(rs)["spec"]["containers"][0]),
    )
    assert (worker["SHARED"], head["SHARED"]) == ("worker", "head")
    assert worker["RAY_SERVE_HAPROXY_NBTHREAD"] == head["RAY_SERVE_HAPROXY_NBTHREAD"] == "4"
    assert worker["NCCL_IB_HCA"] == "mlx5_1" and head["NCCL_IB_HCA"] == "mlx5_1"  # extraEnv is every Ray container's


def test_chart_labels_win_over_pod_labels(chart, crd_validator) -> None:
    """A podLabels key cannot move a pod out of the selectors of the PodMonitors and NetworkPolicies."""
    rs = rendered(
        chart, crd_validator, v3("worker.podLabels.app\\.kubernetes\\.io/component=other,worker.podLabels.x=y")
    )
    labels = worker_pod(rs)["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "worker" and labels["x"] == "y"


# ---------------------------------------------------------------------------------------------- GPU product


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.stem)
def test_gpu_workers_are_pinned_to_their_product(chart, crd_validator, profile: Path) -> None:
    spec = load_spec(profile)
    product = ACCELERATORS[spec.hardware.accelerator].gpu_product
    assert product == "NVIDIA-H800"
    assert profile_values(profile)["worker"]["nodeSelector"] == {GPU_PRODUCT_LABEL: product}
    rs = rendered(chart, crd_validator, profile_values(profile))
    assert worker_pod(rs)["spec"]["nodeSelector"] == {GPU_PRODUCT_LABEL: product}
    assert "nodeSelector" not in head_pod(rs)["spec"]  # the head has no GPU


def test_the_pin_follows_the_accelerator_and_cpu_stays_unpinned(local_cpu_data: dict) -> None:
    data = yaml.safe_load(V3.read_text())
    seen = {}
    for key, accelerator in ACCELERATORS.items():
        if not accelerator.is_gpu:
            continue
        assert accelerator.gpu_product, f"catalog accelerator {key} has no gpu_product (GFD's nvidia.com/gpu.product)"
        data["hardware"]["accelerator"] = key
        seen[key] = helm_values(parse_spec(data), source="x")["worker"]["nodeSelector"][GPU_PRODUCT_LABEL]
    assert seen == {
        "h800": "NVIDIA-H800",
        "h100": "NVIDIA-H100-80GB-HBM3",
        "h200": "NVIDIA-H200",
        "a100-80g": "NVIDIA-A100-SXM4-80GB",
    }
    cpu = copy.deepcopy(local_cpu_data)
    cpu.setdefault("api", {})["host"] = "0.0.0.0"
    worker = helm_values(parse_spec(cpu), source="x")["worker"]
    assert "nodeSelector" not in worker and "rdma" not in worker
    assert chart_default_worker_selector() == {}


def chart_default_worker_selector() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())["worker"]["nodeSelector"]


def test_helm_values_turn_rdma_on_by_node_count() -> None:
    for profile in GPU_PROFILES:
        worker = helm_values(load_spec(profile), source="x")["worker"]
        assert worker.get("rdma") == ({"enabled": True} if profile in TWO_NODE else None), profile.name
    assert TWO_NODE and ONE_NODE
    assert {p.name for p in TWO_NODE} == {
        "h800x16-deepseek-v3.yaml",
        "h800x16-deepseek-v3-dp16-ep.yaml",
        "h800x32-deepseek-v3-pd.yaml",
    }


# ---------------------------------------------------------------------------------------------- docs


def test_storage_load_time_table_is_the_snippets_output(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/kubernetes.md's load-time table: its snippet runs, and each figure it prints is in the table."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    section = text.split("## Storage", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(snippet, "docs/kubernetes.md#storage", "exec"), {})
    rows = {
        cells[0].strip("`"): cells[1:]
        for line in section.splitlines()
        if line.startswith("| `") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(rows) == 4, (printed, rows)
    for line in printed:
        name, total, per_node = re.match(r"(\S+) (\d+) GB, (\d+) GB per node", line).groups()
        secs = [int(s) for s in re.findall(r"': (\d+)", line)]
        stored, read, *times = rows[name]
        assert stored.startswith(f"{total} GB") and read.startswith(f"{per_node} GB"), (line, rows[name])
        assert len(times) == len(secs), (line, rows[name])
        for cell, s in zip(times, secs, strict=True):
            if s < 300:
                assert cell == f"{s} s", (line, rows[name])
            else:  # minutes to one decimal, from the unrounded seconds the snippet rounds
                assert cell.endswith(" min") and abs(float(cell[:-4]) - s / 60) <= 0.06, (line, rows[name])
