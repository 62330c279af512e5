"""The OpenAI API users get from `dsserve up`, over real HTTP against the real stack."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import PROFILE, RunningStack, StackManager, assert_clean_shutdown, prompt_logprobs

pytestmark = pytest.mark.e2e

MODEL = "tiny-deepseek-v2"


def _sse_events(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE stream, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def _assert_openai_error(r: httpx.Response, status: int, *, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert err["message"] and "Internal exception" not in err["message"] and "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def test_startup_was_reported(stack: RunningStack) -> None:
    out = stack.output()
    assert "healthy after" in out and f"{stack.base_url}/v1/chat/completions" in out
    assert "sample chat request: HTTP 200" in out


def test_models_lists_the_tiny_model(client: httpx.Client) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == [MODEL]
    one = client.get(f"/v1/models/{MODEL}")
    assert one.status_code == 200 and one.json()["id"] == MODEL


def test_chat_completion_with_usage(client: httpx.Client, tokenizer) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": messages,
            "max_tokens": 8,
            "ignore_eos": True,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    expected_prompt = len(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    assert usage == {
        **usage,
        "prompt_tokens": expected_prompt,
        "completion_tokens": 8,
        "total_tokens": expected_prompt + 8,
    }


def test_chat_completion_streamed_ends_with_done(client: httpx.Client) -> None:
    req = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 6,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 6 and usage["total_tokens"] == usage["prompt_tokens"] + 6


def test_completion_with_usage(client: httpx.Client, tokenizer) -> None:
    prompt = "The quick brown fox"
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"]
    expected_prompt = len(tokenizer(prompt)["input_ids"])
    assert body["usage"]["prompt_tokens"] == expected_prompt
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == expected_prompt + 5


def test_completion_streamed_ends_with_done(client: httpx.Client) -> None:
    req = {
        "model": MODEL,
        "prompt": "Hello",
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/completions", json=req) as r:
        assert r.status_code == 200
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(ch["text"] for c in chunks for ch in c["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == 4


# --- client mistakes: OpenAI-shaped errors with the right status, never a 500 ------------------------

LONG = "hello world " * 3000  # ~6000 tokens against max_model_len 2048


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": LONG}], "max_tokens": 4}),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": LONG}], "max_tokens": 4, "stream": True},
        ),
        ("/v1/completions", {"model": MODEL, "prompt": LONG, "max_tokens": 4}),
        ("/v1/completions", {"model": MODEL, "prompt": LONG, "max_tokens": 4, "stream": True}),
    ],
    ids=["chat", "chat-stream", "completions", "completions-stream"],
)
def test_prompt_over_max_model_len_is_400(client: httpx.Client, path: str, body: dict) -> None:
    err = _assert_openai_error(client.post(path, json=body), 400)
    assert "maximum context length is 2048" in err["message"]
    assert err["type"] == "invalid_request_error"


def test_max_tokens_over_context_is_400(client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3000})  # > 2048 context
    assert "max_model_len" in _assert_openai_error(r, 400, param="max_tokens")["message"]
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 100000})  # > api.max_tokens
    assert "api.max_tokens" in _assert_openai_error(r, 400, param="max_tokens")["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404(client: httpx.Client, path: str, stream: bool) -> None:
    body = {
        "model": "no-such-model",
        "max_tokens": 4,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "prompt": "hi",
    }
    if path.endswith("/completions") and "chat" not in path:
        body.pop("messages")
    else:
        body.pop("prompt")
    err = _assert_openai_error(client.post(path, json=body), 404, param="model")
    assert err["code"] == "model_not_found" and MODEL in err["message"]


def test_unknown_model_card_is_404(client: httpx.Client) -> None:
    _assert_openai_error(client.get("/v1/models/no-such-model"), 404, param="model")


@pytest.mark.parametrize(
    "name,kwargs,fragment",
    [
        (
            "truncated-json",
            {"content": b'{"model":', "headers": {"content-type": "application/json"}},
            "not valid JSON",
        ),
        (
            "form-encoded-garbage",
            {"content": b"garbage", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            "not valid JSON",
        ),
        ("binary", {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ("empty", {"content": b""}, "body is empty"),
        ("array", {"json": [1, 2]}, "must be a JSON object"),
        ("missing-messages", {"json": {"model": MODEL}}, "messages: Field required"),
        ("wrong-types", {"json": {"model": MODEL, "messages": "hi", "max_tokens": "x"}}, "messages"),
        (
            "negative-max-tokens",
            {"json": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}},
            "max_tokens",
        ),
    ],
)
def test_malformed_chat_body_is_400(client: httpx.Client, name: str, kwargs: dict, fragment: str) -> None:
    err = _assert_openai_error(client.post("/v1/chat/completions", **kwargs), 400)
    assert fragment in err["message"], err


@pytest.mark.parametrize(
    "method,path,status",
    [("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405), ("DELETE", "/v1/models", 405)],
)
def test_routing_errors_are_openai_shaped(client: httpx.Client, method: str, path: str, status: int) -> None:
    _assert_openai_error(client.request(method, path), status)


def test_service_keeps_serving_after_errors(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    r = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "ignore_eos": True},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_second_start_on_a_busy_port_fails_fast(stack: RunningStack) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dsserve.cli", "up", str(PROFILE), "--port", str(stack.port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2  # bad input (dsserve.errors.PortInUseError): found before anything started
    assert f"PortInUseError: port {stack.port}" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.stderr


def test_reference_logprobs_for_other_layouts(client: httpx.Client, stacks: StackManager) -> None:
    """The single-rank layout's prompt log-probabilities: the TP2 + EP layout must reproduce them."""
    first = prompt_logprobs(client, MODEL)
    assert all(len(x) >= 3 for x in first)
    assert prompt_logprobs(client, MODEL) == first  # same layout, same numbers
    stacks.prompt_logprobs["local-cpu"] = first


@pytest.mark.shutdown
def test_ctrl_c_stops_everything(stack: RunningStack) -> None:
    assert_clean_shutdown(stack)
