"""The gateway planner: CPU per request x target QPS -> cores, replicas, HAProxy threads, and a refusal
when the gateway cannot carry the target. Figures come from dsserve.planner.assumptions; the tests check
the arithmetic and every shipped profile, not the measured values themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsserve.cli import main
from dsserve.config import load_spec, parse_spec
from dsserve.errors import SpecError
from dsserve.planner import assumptions as A
from dsserve.planner.gateway import plan_gateway
from dsserve.render.serve_config import render_serve_config
from dsserve.serve_env import serve_env
from tests.conftest import REPO

PROFILES = sorted((REPO / "deploy/profiles").glob("*.yaml"))


def _data(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy/profiles" / name).read_text())


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, where="p.yaml")
    return str(info.value)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_carries_its_target(profile: Path) -> None:
    spec = load_spec(profile)
    g = plan_gateway(spec)
    assert g.carries_target, (profile.name, g)
    assert g.qps == spec.slo.target_qps and g.output_tokens == spec.slo.output_tokens
    assert g.busiest_process_share <= A.GATEWAY_UTILIZATION + 1e-9


def test_direct_mode_arithmetic() -> None:
    spec = load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml")
    g = plan_gateway(spec)
    extra = spec.slo.output_tokens - A.GATEWAY_REFERENCE_TOKENS
    hop = A.HOP_ENGINE_DIRECT
    engine = A.GATEWAY_CPU_MS["direct"][hop] + A.GATEWAY_CPU_MS_PER_TOKEN["direct"][hop] * extra
    assert g.mode == "direct" and g.replicas == 8 == g.engine_replicas
    assert g.hops[A.HOP_ENGINE_DIRECT] == pytest.approx(engine)
    assert g.hops[A.HOP_ROUTER] == A.GATEWAY_ROUTER_CPU_MS  # prefix affinity in direct mode asks Serve's router
    assert g.cpu_ms_per_request == pytest.approx(sum(g.hops.values()), abs=1e-3)
    assert g.cores == pytest.approx(g.qps * g.cpu_ms_per_request / 1000, abs=1e-3)
    assert g.carries_qps == pytest.approx(8 * A.GATEWAY_UTILIZATION * 1000 / engine, abs=0.1)
    assert g.router_replicas == math.ceil(g.qps / (A.GATEWAY_UTILIZATION * 1000 / A.GATEWAY_ROUTER_CPU_MS))


def test_longer_streams_cost_more_and_the_router_only_with_prefix_affinity() -> None:
    spec = load_spec(REPO / "deploy/profiles/local-cpu.yaml")
    short, long_ = plan_gateway(spec, output_tokens=16), plan_gateway(spec, output_tokens=1024)
    assert long_.cpu_ms_per_request > short.cpu_ms_per_request
    assert A.HOP_ROUTER not in short.hops and short.router_replicas == 0
    assert short.hops[A.HOP_ENGINE_DIRECT] == A.GATEWAY_CPU_MS["direct"][A.HOP_ENGINE_DIRECT]


def test_ingress_mode_sizes_its_replicas_from_the_target() -> None:
    data = _data("h800x8-deepseek-v2-lite.yaml")
    data["serving"]["gateway"] = "ingress"
    data["slo"]["target_qps"] = 200
    spec = parse_spec(data, where="p.yaml")
    g = plan_gateway(spec)
    ingress_ms = g.hops[A.HOP_INGRESS]
    assert A.HOP_ROUTER not in g.hops, "ingress mode routes inside the ingress replica"
    assert g.replicas == g.replicas_needed == math.ceil(200 / (A.GATEWAY_UTILIZATION * 1000 / ingress_ms))
    assert g.replicas > 1
    # the rendered Serve config runs that many ingress replicas
    text = render_serve_config(spec, source="p.yaml")
    ingress = yaml.safe_load(text)["applications"][0]["args"]["ingress_deployment_config"]
    assert ingress["num_replicas"] == g.replicas


def test_too_few_ingress_replicas_is_a_spec_error_naming_the_field() -> None:
    data = _data("h800x8-deepseek-v2-lite.yaml")
    data["serving"]["gateway"] = "ingress"
    data["serving"]["gateway_replicas"] = 1
    data["slo"]["target_qps"] = 400
    message = _error(data)
    assert "serving.gateway_replicas" in message and "400" in message and "raise it" in message


def test_a_target_the_engine_replicas_cannot_front_is_a_spec_error() -> None:
    data = _data("local-cpu.yaml")  # one engine replica: it is the only gateway process in direct mode
    data["slo"]["target_qps"] = 5000
    message = _error(data)
    assert "slo.target_qps" in message and "add engine replicas" in message


def test_haproxy_threads_follow_its_share_of_the_cores() -> None:
    data = _data("h800x8-deepseek-v2-lite.yaml")
    base = plan_gateway(parse_spec(data, where="p.yaml"))
    assert serve_env(parse_spec(data, where="p.yaml"))["RAY_SERVE_HAPROXY_NBTHREAD"] == str(base.haproxy_threads)
    data["serving"]["replicas"] = 8
    busy = plan_gateway(parse_spec(data, where="p.yaml"), qps=3000)
    assert busy.haproxy_threads >= base.haproxy_threads
    assert busy.haproxy_threads == min(8, math.ceil(3000 * busy.hops[A.HOP_HAPROXY] / 1000 / A.GATEWAY_UTILIZATION))


def test_plan_json_and_text_carry_the_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    profile = str(REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml")
    main(["plan", profile, "--json"])
    g = json.loads(capsys.readouterr().out)["gateway"]
    assert {"cpu_ms_per_request", "cores", "replicas", "hops", "carries_qps", "source"} <= set(g)
    assert g["carries_target"] is True and g["replicas"] == 8
    main(["plan", profile])
    text = capsys.readouterr().out
    assert "Gateway at 100 QPS" in text and "CARRIES the target" in text and A.GATEWAY_CPU_SOURCE in text


def test_rendered_serve_yaml_states_the_gateway_it_carries() -> None:
    header = (REPO / "serve/h800x8-deepseek-v2-lite.yaml").read_text().split("proxy_location:")[0]
    g = plan_gateway(load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml"))
    assert f"carries up to {g.carries_qps:g} req/s" in header and "(enough)" in header
    assert f"{g.cpu_ms_per_request:g} ms CPU per request" in header


def test_one_prefix_tree_actor_caps_prefix_affinity() -> None:
    data = _data("h800x8-deepseek-v2-lite.yaml")
    tree_qps = 1000 * A.GATEWAY_UTILIZATION / A.GATEWAY_PREFIX_TREE_CPU_MS["direct"]
    data["slo"]["target_qps"] = round(tree_qps * 1.5)
    data["slo"]["output_tokens"] = 16  # short streams: the eight engine replicas carry more than the tree actor
    message = _error(data)
    assert "serving.router" in message and "power_of_two" in message
    data["serving"]["router"] = "power_of_two"
    g = plan_gateway(parse_spec(data, where="p.yaml"))
    assert A.HOP_PREFIX_TREE not in g.hops and A.HOP_ROUTER not in g.hops
