"""LoRA adapters served beside their base model, for real: vLLM CPU under Ray Serve, multiplexed routing.

The stack is deploy/profiles/local-cpu-lora.yaml (tiny-deepseek-llm plus two tiny random adapters built
offline) with a dynamic adapter directory added, so one stack shows named and dynamically loaded adapters.
Outputs are compared by teacher-forced prompt log-probabilities: a random tiny model's greedy text can
coincide by chance, its log-probabilities under a different adapter cannot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningStack, assert_clean_shutdown, prompt_logprobs

pytestmark = pytest.mark.e2e

BASE = "tiny-deepseek-llm"
ADAPTERS = ("sql-adapter", "chat-adapter")
METRICS_URL = "http://127.0.0.1:8080/metrics"  # observability.metrics_export_port of the profile
#: The stack's model.lora.dynamic_dir; it must exist before `dsserve up` validates the spec.
DYNAMIC_DIR = Path(tempfile.gettempdir()) / f"dsserve-e2e-lora-{os.getuid()}"
DYNAMIC_DIR.mkdir(exist_ok=True)


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b]
    return max(abs(x - y) for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True))


def _engine_log(stack: RunningStack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in stack.log_dir().glob("*") if p.is_file())


def _openai_404(r: httpx.Response) -> dict:
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert (err["type"], err["code"], err["param"]) == ("not_found_error", "model_not_found", "model"), err
    return err


@pytest.mark.profile("local-cpu-lora", f"model.lora.dynamic_dir={DYNAMIC_DIR}")
class TestLoraAdapters:
    def test_models_lists_base_and_adapters(self, client: httpx.Client) -> None:
        r = client.get("/v1/models")
        assert r.status_code == 200, r.text
        ids = [m["id"] for m in r.json()["data"]]
        assert ids[0] == BASE and set(ids) >= {f"{BASE}:{a}" for a in ADAPTERS}, ids
        card = client.get(f"/v1/models/{BASE}:sql-adapter")
        assert card.status_code == 200 and card.json()["metadata"]["base_model_id"] == BASE, card.text

    def test_base_and_adapters_answer_with_different_logprobs(self, client: httpx.Client) -> None:
        """Each adapter moves the log-probabilities far beyond bf16 noise (0.016 between layouts)."""
        base = prompt_logprobs(client, BASE)
        per_adapter = {a: prompt_logprobs(client, f"{BASE}:{a}") for a in ADAPTERS}
        assert _max_diff(prompt_logprobs(client, BASE), base) < 0.02, "adapters must not change the base model"
        for adapter, got in per_adapter.items():
            assert _max_diff(got, base) > 0.3, f"{adapter} did not change the model's log-probabilities"
        assert _max_diff(per_adapter["sql-adapter"], per_adapter["chat-adapter"]) > 0.3
        # The same adapter again gives the same numbers: it is the adapter, not noise.
        assert _max_diff(prompt_logprobs(client, f"{BASE}:sql-adapter"), per_adapter["sql-adapter"]) < 0.02

    def test_chat_and_stream_through_an_adapter(self, client: httpx.Client) -> None:
        body = {
            "model": f"{BASE}:chat-adapter",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8,
            "temperature": 0,
        }
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == f"{BASE}:chat-adapter" and r.json()["usage"]["completion_tokens"] > 0
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            assert s.status_code == 200
            events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[0])["model"] == f"{BASE}:chat-adapter"

    def test_adapter_requests_take_the_multiplexed_route(self, stack: RunningStack, client: httpx.Client) -> None:
        """Ray Serve registered the adapter as a multiplexed model on the LLMServer replica that loaded it."""
        r = client.post("/v1/completions", json={"model": f"{BASE}:sql-adapter", "prompt": "SELECT", "max_tokens": 2})
        assert r.status_code == 200, r.text
        pattern = re.compile(
            r'^ray_serve_registered_multiplexed_model_id\{[^}]*deployment="LLMServer:'
            + re.escape(BASE)
            + r'"[^}]*model_id="'
            + re.escape(f"{BASE}:sql-adapter")
            + r'"[^}]*\} 1(\.0)?$',
            re.M,
        )
        deadline, text = time.monotonic() + 90, ""
        while time.monotonic() < deadline:  # Ray exports replica metrics every few seconds
            text = httpx.get(METRICS_URL, timeout=10).text
            if pattern.search(text):
                break
            time.sleep(3)
        assert pattern.search(text), (
            "no ray_serve_registered_multiplexed_model_id for the adapter:\n"
            + "\n".join(line for line in text.splitlines() if "multiplexed" in line)[:3000]
        )
        log = _engine_log(stack)
        assert f"dsserve LoRA: multiplexed model {BASE}:sql-adapter -> " in log  # dsserve's local loader
        # vLLM's own "Loaded new LoRA adapter" INFO line is not asserted: under Serve's throughput-optimized
        # mode (the HAProxy fast path) replica log records are buffered 1000 at a time
        # (RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE), so it reaches the file late. That vLLM applied the
        # adapter is shown by the log-probability test below.

    def test_unknown_adapter_is_an_openai_404(self, client: httpx.Client) -> None:
        for path, body in (
            ("/v1/completions", {"prompt": "x", "max_tokens": 1}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ):
            err = _openai_404(client.post(path, json={"model": f"{BASE}:no-such-adapter", **body}))
            assert f"'{BASE}:no-such-adapter' does not exist" in err["message"]
            assert f"{BASE}:sql-adapter" in err["message"], "the error should list the adapters served"
        _openai_404(client.post("/v1/completions", json={"model": "other-model:sql-adapter", "prompt": "x"}))
        _openai_404(client.get(f"/v1/models/{BASE}:no-such-adapter"))

    def test_dynamic_dir_adapter_is_served_without_restart(self, client: httpx.Client) -> None:
        """An adapter dropped into model.lora.dynamic_dir is listed and served on its first request."""
        from dsserve.tiny_lora import build_tiny_lora

        name = f"hot-{uuid.uuid4().hex[:8]}"
        assert client.post("/v1/completions", json={"model": f"{BASE}:{name}", "prompt": "x"}).status_code == 404
        shutil.copytree(build_tiny_lora("tiny-deepseek-llm-chat")[0], DYNAMIC_DIR / name)
        try:
            ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
            assert f"{BASE}:{name}" in ids, ids
            got = prompt_logprobs(client, f"{BASE}:{name}")
            # the same weights as chat-adapter under another name: the same numbers
            assert _max_diff(got, prompt_logprobs(client, f"{BASE}:chat-adapter")) < 0.02
        finally:
            shutil.rmtree(DYNAMIC_DIR / name, ignore_errors=True)

    @pytest.mark.shutdown
    def test_ctrl_c_stops_everything(self, stack: RunningStack) -> None:
        assert_clean_shutdown(stack)
