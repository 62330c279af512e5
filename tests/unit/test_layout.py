"""GET /v1/models' live layout: read from the config a replica runs, real or simulated."""

from __future__ import annotations

from types import SimpleNamespace

from dsserve.app import llm_config
from dsserve.config import load_spec
from dsserve.layout import layout_from_config
from tests.conftest import REPO


def _running(profile: str) -> SimpleNamespace:
    cfg = llm_config(load_spec(REPO / "deploy/profiles" / f"{profile}.yaml"))
    return SimpleNamespace(engine_kwargs=cfg["engine_kwargs"], experimental_configs=cfg["experimental_configs"])


def test_a_real_engine_reports_its_engine_arguments() -> None:
    live = layout_from_config(_running("local-cpu-tp2-ep"))
    assert (live["engine"], live["tensor_parallel_size"], live["expert_parallel"]) == ("vllm", 2, True)


def test_a_simulated_engine_reports_the_layout_it_models_not_its_cpu_bundle() -> None:
    live = layout_from_config(_running("sim-h800x8-deepseek-v2"))
    assert (live["engine"], live["tensor_parallel_size"], live["expert_parallel"],
            live["modelled_accelerator"]) == ("simulated", 8, True, "h800")
