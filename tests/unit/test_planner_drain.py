"""The drain: how long stopping replicas wait for their requests, from the profile's own limits and pace."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from dsserve.app import llm_configs_of, serving_args
from dsserve.config import load_spec
from dsserve.planner.drain import DRAIN_CAP_S, DRAIN_FLOOR_S, DRAIN_MARGIN, plan_drain
from dsserve.render.helm_values import TERMINATION_HEADROOM_S, render_helm_values

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "deploy/profiles").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_deployment_drains_for_the_longest_generation(profile: Path) -> None:
    spec = load_spec(profile)
    drain = plan_drain(spec)
    expected = min(DRAIN_CAP_S, max(DRAIN_FLOOR_S, math.ceil(drain.longest_generation_s * DRAIN_MARGIN)))
    assert drain.timeout_s == expected and drain.source == "modelled"
    engine = spec.pool("decode").engine if spec.disaggregation else spec.engine  # the pool that generates
    assert drain.tokens == min(spec.api.max_tokens or engine.max_model_len, engine.max_model_len)
    args = serving_args(spec)
    configs = llm_configs_of(args)
    assert all(c["deployment_config"]["graceful_shutdown_timeout_s"] == drain.timeout_s for c in configs)
    if "ingress_deployment_config" in args:
        assert args["ingress_deployment_config"]["graceful_shutdown_timeout_s"] == drain.timeout_s


def test_a_long_generation_outlasts_rays_default() -> None:
    """8,192 tokens at ~31 ms each: minutes, where Ray's 20 s default would cut the stream."""
    drain = plan_drain(load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml"))
    assert drain.longest_generation_s > 120 and drain.timeout_s > drain.longest_generation_s


def test_the_spec_field_wins_and_short_caps_shorten_the_drain() -> None:
    base = REPO / "deploy/profiles/sim-h800x8-deepseek-v2-lite.yaml"
    assert plan_drain(load_spec(base, ["serving.graceful_shutdown_timeout_s=45"])).timeout_s == 45
    assert plan_drain(load_spec(base, ["serving.graceful_shutdown_timeout_s=45"])).source == "spec"
    short = plan_drain(load_spec(base, ["api.max_tokens=64"]))
    assert short.tokens == 64 and short.timeout_s == DRAIN_FLOOR_S


@pytest.mark.parametrize("profile", sorted((REPO / "deploy/profiles").glob("h800x*.yaml")), ids=lambda p: p.stem)
def test_the_chart_grace_period_stays_above_the_drain(profile: Path) -> None:
    spec = load_spec(profile)
    values = yaml.safe_load(render_helm_values(spec, source=str(profile.relative_to(REPO))))
    assert values["terminationGracePeriodSeconds"] == math.ceil(plan_drain(spec).timeout_s) + TERMINATION_HEADROOM_S
    assert values["terminationGracePeriodSeconds"] > plan_drain(spec).timeout_s + 35
