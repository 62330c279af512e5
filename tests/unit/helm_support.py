"""What the chart tests share: the chart under test, rendered offline by Helm's own template engine
(helm-python-sdk), and every object it renders checked against the schema that the cluster would apply:

- built-in kinds against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown fields fail),
  at the oldest Kubernetes the chart supports and the newest the package knows;
- the RayService against KubeRay's CRD schema (``../shared/crds``; skipped where that folder is absent),
  made strict the way ``kubectl --validate=strict`` is, and its ``serveConfigV2`` against Ray Serve's
  ``ServeDeploySchema``;
- PodMonitor and PrometheusRule against the prometheus-operator models of cloudcoil, also strict.

No cluster is involved: what KubeRay, Prometheus and Grafana then do with these objects is not tested here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule

from dsserve.config import parse_spec
from dsserve.render.serve_config import render_serve_config
from tests.conftest import REPO

CHART = REPO / "helm" / "dsserve"
LOADTEST_CHART = CHART / "charts" / "loadtest"
VALUES_DIR = REPO / "helm" / "values"
CRDS = REPO.parent / "shared" / "crds"
GPU_PROFILES = sorted((REPO / "deploy" / "profiles").glob("h800x*.yaml"))
#: The profile whose values are the chart's defaults (values.yaml and files/serve-config.yaml); `make render`
#: writes files/serve-config.yaml from it.
DEFAULT_PROFILE = REPO / "deploy" / "profiles" / "h800x8-deepseek-v2-lite.yaml"
#: The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
RELEASE, NAMESPACE = "ds", "llm"


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


#: The image digest the tests install the rendered values with: the GPU profiles' values set image.requireDigest,
#: so the chart refuses them without one, as it would refuse an install.
IMAGE_DIGEST = "sha256:" + "d" * 64


def installable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (as `dsserve render helm-values` writes them) plus IMAGE_DIGEST where they require a digest."""
    if values.get("image", {}).get("requireDigest"):
        values = {**values, "image": {**values["image"], "digest": IMAGE_DIGEST}}
    return values


def profile_values(profile: Path) -> dict[str, Any]:
    """The rendered values of a profile (helm/values/), installable (see :func:`installable`)."""
    return installable(yaml.safe_load((VALUES_DIR / profile.name).read_text()))


# ---------------------------------------------------------------------------------------------- rendering


class ChartUnderTest:
    """A chart directory, loaded afresh for every call.

    NOTE: Helm's dependency processing removes a disabled subchart (``condition: loadtest.enabled``) from the
    loaded chart in place, so one ``helm_python.Chart`` rendered once without the load test renders it never
    again. Loading takes a few milliseconds; reusing a loaded chart would make the tests depend on their order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> helm_python.Chart:
        return helm_python.Chart.load(self.path)

    def render(self, values: dict[str, Any] | None = None, **options: Any) -> dict[str, str]:
        with self._load() as c:
            return c.render(values, **options)

    def validate_schema(self, values: dict[str, Any] | None = None) -> None:
        with self._load() as c:
            c.validate_schema(values)

    @property
    def values(self) -> dict[str, Any]:
        with self._load() as c:
            return c.values

    @property
    def metadata(self) -> dict[str, Any]:
        with self._load() as c:
            return c.metadata


def module_fixtures(path: Path) -> tuple[Any, Any]:
    """The ``chart`` (the chart at ``path``) and ``crd_validator`` fixtures of a test module, module-scoped:
    ``chart, crd_validator = module_fixtures(CHART)``."""

    def chart() -> ChartUnderTest:
        return ChartUnderTest(path)

    def crd_validator() -> jsonschema.Draft7Validator | None:
        return load_crd_validator()

    return pytest.fixture(scope="module", name="chart")(chart), pytest.fixture(scope="module", name="crd_validator")(
        crd_validator
    )


def render(chart: Any, values: dict[str, Any] | None = None, *, name: str = RELEASE) -> list[dict]:
    """Every object the chart renders for ``values`` (hooks included, NOTES.txt not)."""
    manifests = chart.render(values, name=name, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                objects.append(doc)
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def notes(chart: Any, values: dict[str, Any] | None = None) -> str:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)["dsserve/templates/NOTES.txt"]


def with_value(path: str, value: Any) -> dict[str, Any]:
    """Values setting one dotted path, e.g. with_value("image.tag", "x") == {"image": {"tag": "x"}}."""
    out: dict[str, Any] = {}
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return out


def no_auth_serve_config() -> str:
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["api"]["api_keys_env"] = data["api"]["api_keys_file"] = None
    return render_serve_config(parse_spec(data), source="x")


def refused(chart: Any, values: dict[str, Any]) -> str:
    """The error message of a render of ``values``, which must fail."""
    with pytest.raises(helm_python.HelmError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(err.value)


# ---------------------------------------------------------------------------------------------- validation


def _strict_crd_schema(node: Any) -> Any:
    """KubeRay's openAPIV3Schema as JSON Schema, with unknown fields rejected (as --validate=strict does)."""
    if isinstance(node, dict):
        out = {k: _strict_crd_schema(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict_crd_schema(v) for v in node]
    return node


def load_crd_validator() -> jsonschema.Draft7Validator | None:
    """KubeRay's RayService schema, or None where shared/crds is absent (then only that check is left out)."""
    crd_file = CRDS / "ray.io_rayservices.yaml"
    if not crd_file.is_file():
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict_crd_schema(version["schema"]["openAPIV3Schema"]))


def _strict_model_problems(model: Any, obj: dict) -> list[str]:
    """cloudcoil's models ignore unknown keys; a lossless round trip proves there were none."""
    try:
        dumped = model.model_validate(obj).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except Exception as exc:  # pydantic's ValidationError names the path and the allowed values
        return [str(exc)]
    return [] if dumped == obj else [f"unknown or altered fields: rendered {obj!r}, model kept {dumped!r}"]


_NAME = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_HOSTNAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


#: The fields of a Gateway API v1 HTTPRoute that the chart renders, with their types, patterns and limits as the
#: Gateway API v1.2 standard-channel CRD (gateway.networking.k8s.io_httproutes.yaml) states them; unknown fields
#: are refused. kubernetes-validate has no Gateway API schemas and no CRD of it is stored here, so this is written
#: from the spec: it catches a misspelt or misplaced field, not a field of the CRD left out of it.
#: the fields a Gateway API parentRef and backendRef share (an object reference with a port)
_OBJECT_REF = {
    "group": {"type": "string"},
    "kind": {"type": "string"},
    "namespace": _NAME,
    "name": _NAME,
    "port": _PORT,
}
HTTPROUTE_V1_SCHEMA: dict[str, Any] = _closed(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": _closed(
            {
                "name": _NAME,
                "namespace": _NAME,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            ("name",),
        ),
        "spec": _closed(
            {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": _closed({**_OBJECT_REF, "sectionName": _NAME}, ("name",)),
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": _closed(
                        {
                            "name": _NAME,
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": _closed(
                                    {
                                        "path": _closed(
                                            {
                                                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                                "value": {"type": "string", "maxLength": 1024, "pattern": "^/"},
                                            }
                                        )
                                    }
                                ),
                            },
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": _closed(
                                    {**_OBJECT_REF, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}},
                                    ("name",),
                                ),
                            },
                            "timeouts": _closed({"request": _DURATION, "backendRequest": _DURATION}),
                        }
                    ),
                },
            }
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def validation_problems(obj: dict, crd_validator: jsonschema.Draft7Validator | None) -> list[str]:
    kind, name = obj["kind"], obj["metadata"]["name"]
    where = f"{kind}/{name}"
    if kind == "HTTPRoute":
        return [
            f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(HTTPROUTE_V1_SCHEMA).iter_errors(obj)
        ]
    if kind == "RayService":
        problems = [
            f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in (crd_validator.iter_errors(obj) if crd_validator else ())
        ]
        from ray.serve.schema import ServeDeploySchema

        try:
            ServeDeploySchema.model_validate(yaml.safe_load(obj["spec"]["serveConfigV2"]))
        except Exception as exc:
            problems.append(f"{where}: serveConfigV2 rejected by Ray Serve: {exc}")
        return problems
    if kind == "PodMonitor":
        return [f"{where}: {p}" for p in _strict_model_problems(PodMonitor, obj)]
    if kind == "PrometheusRule":
        return [f"{where}: {p}" for p in _strict_model_problems(PrometheusRule, obj)]
    problems = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
    return problems


def assert_all_valid(objects: list[dict], crd_validator: jsonschema.Draft7Validator | None) -> None:
    problems = [p for o in objects for p in validation_problems(o, crd_validator)]
    assert not problems, "\n".join(problems)


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod spec) for every pod the release creates: Ray head and workers, Deployments, Jobs, hook pods."""
    out = []
    for o in objects:
        if o["kind"] == "RayService":
            cluster = o["spec"]["rayClusterConfig"]
            out.append(("head", cluster["headGroupSpec"]["template"]["spec"]))
            out += [(f"worker/{g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
        elif o["kind"] in ("Deployment", "Job"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["spec"]))
    return out


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# ---------------------------------------------------------------------------------------------- values files


def value_paths(node: Any, prefix: str = "") -> list[str]:
    paths = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.append(path)
            paths += value_paths(value, path)
    return paths


def lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data
