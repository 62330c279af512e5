"""The simulated engine speaks OpenAI like vLLM and paces tokens by the planner (no Ray Serve needed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from dsserve.app import llm_configs_of, serving_args
from dsserve.config import load_spec, parse_spec
from dsserve.sim import SIM_CONFIG_KEY, SIMULATED_ENGINE_CLS
from dsserve.sim.engine import SimulatedEngine, chat_prompt_tokens
from dsserve.sim.timing import sim_inputs, timing_from_spec

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml"


def _sim_spec(**engine: Any) -> Any:
    data = yaml.safe_load(TWIN.read_text())
    data["name"] = "sim-test"
    data["engine"].update({"backend": "simulated", **engine})
    return parse_spec(data)


def _engine(spec: Any) -> SimulatedEngine:
    cfg = SimpleNamespace(model_id=spec.model.id, log_engine_metrics=False,
                          experimental_configs={SIM_CONFIG_KEY: sim_inputs(spec)})
    return SimulatedEngine(cfg)


def _chat(**kw: Any) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    body = {"model": "deepseek-v2-lite-chat", "messages": [{"role": "user", "content": "hello " * 40}]}
    body.update(kw)
    return ChatCompletionRequest(**body)


async def _collect(gen: Any) -> list[Any]:
    return [x async for x in gen]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_rendered_app_selects_the_simulated_engine_and_carries_the_modelled_layout() -> None:
    spec = _sim_spec()
    cfg = llm_configs_of(serving_args(spec))[0]
    assert cfg["runtime_env"]["env_vars"]["RAYLLM_VLLM_ENGINE_CLS"] == SIMULATED_ENGINE_CLS
    assert cfg["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cfg
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}]
    assert parse_spec(cfg["experimental_configs"][SIM_CONFIG_KEY]).hardware.accelerator == "h800"


def test_dp_attention_is_simulated_as_one_replica_per_rank_on_the_plain_builder() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml").read_text())
    data["engine"]["backend"] = "simulated"
    spec = parse_spec(data)
    args = serving_args(spec)
    assert args["data_parallel"] is False, "simulated ranks are plain replicas, not ray.serve.llm's DPServer"
    dep = llm_configs_of(args)[0]["deployment_config"]
    assert dep["num_replicas"] == spec.serving.replicas * spec.engine.data_parallel_size


def test_a_streamed_chat_has_vllm_chunks_usage_and_done_and_takes_at_least_the_modelled_time() -> None:
    spec = _sim_spec()
    timing = timing_from_spec(spec)

    async def go() -> tuple[list[str], float, SimulatedEngine]:
        eng = _engine(spec)
        await eng.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await _collect(eng.chat(_chat(max_tokens=8, stream=True, stream_options={"include_usage": True})))
        return out, loop.time() - t0, eng

    chunks, elapsed, eng = _run(go())
    assert all(isinstance(c, str) and c.startswith("data: ") for c in chunks)
    assert chunks[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(c[6:]) for c in chunks[:-1]]
    assert bodies[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(b["system_fingerprint"] == "dsserve-simulated" for b in bodies)
    text = "".join(b["choices"][0]["delta"].get("content", "") for b in bodies if b["choices"])
    assert len(text.split()) == 8
    assert [b["choices"][0]["finish_reason"] for b in bodies if b["choices"]][-1] == "length"
    prompt = chat_prompt_tokens([{"role": "user", "content": "hello " * 40}])
    assert bodies[-1]["usage"] == {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8}
    # Never faster than the model: one prefill step, then 7 decode steps of one sequence.
    modelled = timing.step_time_s(0, prompt, 0, prompt / 2) + sum(
        timing.step_time_s(1, 0, prompt + i, 0) for i in range(7))
    assert elapsed >= modelled * 0.99
    assert eng.steps == 8


def test_a_plain_chat_returns_one_response_with_usage() -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(max_tokens=5)))

    (resp,) = _run(go())
    body = resp.model_dump()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["message"]["content"].split()) == 5


def test_a_stop_string_ends_the_answer_before_it() -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(max_tokens=50, stop=["engine"])))

    (resp,) = _run(go())
    choice = resp.model_dump()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "engine" not in choice["message"]["content"]
    assert choice["message"]["content"].strip().endswith("while the")


@pytest.mark.parametrize("kw, param", [({"max_tokens": 40_000}, "messages"), ({"n": 2}, "n")])
def test_requests_vllm_would_refuse_get_a_400_error_response(kw: dict[str, Any], param: str) -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(**kw)))

    (err,) = _run(go())
    assert err.error.code == 400 and err.error.param == param


def test_a_client_that_stops_reading_frees_its_engine_slot_and_kv() -> None:
    async def go() -> SimulatedEngine:
        eng = _engine(_sim_spec())
        await eng.start()
        gen = eng.chat(_chat(max_tokens=1000, stream=True))
        async for _ in gen:
            if eng.scheduler and eng.scheduler.running:
                break
        await gen.aclose()
        return eng

    eng = _run(go())
    assert eng.scheduler is not None
    assert not eng.scheduler.has_work() and eng.scheduler.free_blocks == eng.scheduler.kv_blocks


def test_a_layout_that_does_not_fit_is_refused_at_start_like_vllm() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2.yaml").read_text())
    data["engine"].update({"backend": "simulated", "quantization": None, "kv_cache_dtype": "auto"})
    data["model"]["architecture"] = "deepseek-v3"
    data["engine"]["max_model_len"] = 4096
    from dsserve.errors import SpecError

    with pytest.raises(SpecError, match="would not start"):
        timing_from_spec(parse_spec(data))


def test_every_sim_profile_mirrors_its_gpu_twin() -> None:
    """sim-<twin>.yaml differs from deploy/profiles/<twin>.yaml only in name, description, backend and local API (host, keys)."""
    sims = sorted((REPO / "deploy/profiles").glob("sim-*.yaml"))
    assert sims, "no sim-*.yaml profiles"
    allowed = {("name",), ("description",), ("engine", "backend"), ("api", "host"), ("api", "api_keys_env"),
               ("api", "api_keys_file")}
    for path in sims:
        twin = REPO / "deploy/profiles" / path.name.removeprefix("sim-")
        assert twin.is_file(), f"{path.name} has no GPU twin {twin.name}"
        a = load_spec(path).model_dump()
        b = load_spec(twin).model_dump()
        assert a["engine"]["backend"] == "simulated"
        diffs = {(sec, key) for sec in a if isinstance(a[sec], dict)
                 for key in set(a[sec]) | set(b[sec]) if a[sec].get(key) != b[sec].get(key)}
        diffs |= {(sec,) for sec in a if not isinstance(a[sec], dict) and a[sec] != b[sec]}
        assert diffs <= allowed, f"{path.name} differs from {twin.name} in {sorted(diffs - allowed)}"


def test_sim_time_scale_multiplies_every_step_and_is_refused_on_the_real_engine() -> None:
    base, slow = timing_from_spec(_sim_spec()), timing_from_spec(_sim_spec(sim_time_scale=20))
    assert slow.step_time_s(4, 0, 500, 0) == pytest.approx(20 * base.step_time_s(4, 0, 500, 0))
    data = yaml.safe_load(TWIN.read_text())
    data["engine"]["sim_time_scale"] = 20
    from dsserve.errors import SpecError

    with pytest.raises(SpecError, match="engine.sim_time_scale"):
        parse_spec(data)
