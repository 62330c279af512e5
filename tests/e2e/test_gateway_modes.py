"""The request pipeline on the real stack, in both gateway modes: every route, every refusal.

Two stacks, the same checks on each: the embedded default with keys required, a per-key rate limit and a
deliberately small capacity (2 engine slots + 2 queued = 4 sequences admitted at once, so overload is cheap
to reach on two cores), served in direct mode (HAProxy -> the engine replica, which runs the pipeline in
front of vLLM's own app) and in ingress mode (HAProxy -> dsserve's ingress -> the engine replica).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import E2E_KEYS, RunningStack, assert_clean_shutdown

SECURE = (
    "local-cpu",
    "api.api_keys_env=DSSERVE_E2E_KEYS",
    "serving.max_ongoing_requests=2",
    "serving.max_queued_requests=2",
    "api.max_body_bytes=65536",
    "api.rate_limit={requests_per_second: 20, burst: 30}",
    "api.max_tokens=512",
    "api.http_request_timeout_s=2",
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize(
        "gateway",
        [
            pytest.param("direct", marks=pytest.mark.profile(*SECURE, "serving.gateway=direct")),
            pytest.param("ingress", marks=pytest.mark.profile(*SECURE, "serving.gateway=ingress")),
        ],
    ),
]

MODEL = "tiny-deepseek-v2"
AUTH = {"Authorization": f"Bearer {E2E_KEYS[0]}"}
#: the key the rate-limit test exhausts (the other tests use the first)
LIMITED = {"Authorization": f"Bearer {E2E_KEYS[1]}"}
#: every route the API serves, ray.serve.llm's extra ones included, and two it does not
ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/score"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{MODEL}"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
]
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "ignore_eos": True}


def _err(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": E2E_KEYS[0]}, {"Authorization": f"Basic {E2E_KEYS[0]}"}],
    ids=["missing", "wrong-key", "no-scheme", "basic-scheme"],
)
@pytest.mark.parametrize("method,path", ROUTES)
def test_requests_without_a_valid_key_get_401(
    client: httpx.Client, gateway: str, headers: dict, method: str, path: str
) -> None:
    r = client.request(method, path, headers=headers, json=CHAT if method == "POST" else None)
    err = _err(r, 401)
    assert err["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert E2E_KEYS[0] not in r.text


@pytest.mark.parametrize("key", E2E_KEYS)
def test_every_configured_key_is_accepted(client: httpx.Client, gateway: str, key: str) -> None:
    r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_oversized_body_is_413(client: httpx.Client, gateway: str) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    for path in ("/v1/chat/completions", "/tokenize"):
        err = _err(client.post(path, json=big, headers=AUTH), 413)
        assert err["code"] == "request_too_large" and "65536" in err["message"]


@pytest.mark.parametrize(
    "method,path,body,status,code",
    [
        ("POST", "/v1/chat/completions", b'{"model": ', 400, "invalid_json"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": f"{MODEL}:zz", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
        ),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": ["x"] * 65, "max_tokens": 1}, 400, "invalid_parameter"),
        ("POST", "/v1/chat/completions", {**CHAT, "n": 17}, 400, "invalid_parameter"),
        (
            "POST",
            "/v1/completions",
            {"model": MODEL, "prompt": ["x"] * 64, "n": 16, "max_tokens": 1},
            400,
            "invalid_parameter",
        ),
        (
            "POST",
            "/v1/completions",
            {"model": MODEL, "prompt": ["x"] * 4, "n": 8, "max_tokens": 1},
            400,
            "invalid_parameter",
        ),
        ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 513}, 400, "invalid_parameter"),
        ("POST", "/v1/chat/completions", {**CHAT, "model": "m" * 300}, 400, "invalid_parameter"),
        (
            "POST",
            "/v1/chat/completions",
            (
                '{"model": "%s", "messages": [{"role": "user", "content": "x"}], '
                '"vllm_xargs": {"a": %s}}' % (MODEL, "[" * 70 + "]" * 70)
            ).encode(),
            400,
            "invalid_json",
        ),
        ("POST", "/tokenize", b"[1, 2]", 400, "invalid_body"),
        ("POST", "/tokenize", {"model": "gpt-4", "prompt": "x"}, 404, "model_not_found"),
        ("POST", "/v1/embeddings", {"model": f"{MODEL}:zz", "input": "x"}, 404, "unsupported_route"),
        ("POST", "/v1/score", {"model": MODEL, "text_1": "a", "text_2": "b"}, 404, "unsupported_route"),
        ("GET", "/metrics", None, 404, "unknown_route"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ],
    ids=[
        "bad-json",
        "unknown-model",
        "unknown-adapter",
        "too-many-prompts",
        "n-over-max",
        "64-prompts-x-n16",
        "sequences-over-max-n",
        "max-tokens-over-cap",
        "model-name-too-long",
        "nested-too-deep",
        "tokenize-not-object",
        "tokenize-unknown-model",
        "embeddings",
        "score",
        "engine-metrics-route",
        "wrong-method",
    ],
)
def test_client_mistakes_are_openai_errors_never_5xx(
    client: httpx.Client, gateway: str, method: str, path: str, body: object, status: int, code: str
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.request(method, path, headers={**AUTH, "content-type": "application/json"}, **kwargs)
    err = _err(r, status)
    assert err["code"] == code, err
    for leak in ("Traceback", 'File "', "pid=", "/root/", "/work/", "site-packages"):
        assert leak not in r.text, r.text


def test_a_slow_header_client_is_cut_and_admin_listeners_keep_to_the_api_host(
    stack: RunningStack, gateway: str
) -> None:
    """api.http_request_timeout_s (2 s here) closes a connection whose headers never finish: a few thousand
    such clients cannot hold every maxconn slot. HAProxy's stats page and exporter listen on api.host."""
    import psutil

    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        t0 = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        held = time.monotonic() - t0
    assert 1.5 <= held < 20, f"the half-sent request was held {held:.1f} s"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    listening = {
        c.laddr.port: c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in (8404, 9101)
    }
    assert listening == {8404: "127.0.0.1", 9101: "127.0.0.1"}, listening
    assert httpx.post(f"{stack.base_url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=60).status_code == 200


def test_failed_keys_from_one_address_are_throttled(stack: RunningStack, gateway: str) -> None:
    """HAProxy appends the client's address (dsserve-haproxy's `option forwardfor`); past 60 failed keys from
    it the pipeline answers 429 without checking keys, and a second later the address may try again."""
    bad = {"Authorization": "Bearer not-a-valid-key-at-all"}
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        started = time.monotonic()
        statuses = [c.get("/v1/models", headers=bad).status_code for _ in range(75)]
        elapsed = time.monotonic() - started
        # once throttled, the address gets one more try a second: a 401 among the 429s now and then
        refused = next(r for r in (c.get("/v1/models", headers=bad) for _ in range(5)) if r.status_code == 429)
    # (earlier tests of this stack spent some of the address's 60, so where the 429s start varies)
    assert set(statuses) == {401, 429} and statuses[0] == 401, statuses
    throttled = statuses[statuses.index(429) :]
    assert throttled.count(401) <= elapsed + 1, (statuses, elapsed)
    assert _err(refused, 429)["code"] == "too_many_failed_keys"
    time.sleep(int(refused.headers["retry-after"]) + 1)
    assert httpx.get(f"{stack.base_url}/v1/models", headers=AUTH, timeout=30).status_code == 200


def test_streaming_tokenize_and_the_live_layout(client: httpx.Client, gateway: str) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        headers=AUTH,
        json={**CHAT, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] == 4
    tok = client.post("/tokenize", headers=AUTH, json={"model": MODEL, "prompt": "hello world"})
    assert tok.status_code == 200 and tok.json()["count"] == len(tok.json()["tokens"]) > 0
    text = client.post("/detokenize", headers=AUTH, json={"model": MODEL, "tokens": tok.json()["tokens"]})
    assert text.status_code == 200 and "hello" in text.json()["prompt"]
    card = client.get("/v1/models", headers=AUTH).json()["data"][0]
    layout = card["metadata"]["dsserve"]
    assert layout["engine"] == "vllm" and layout["tensor_parallel_size"] == 1
    assert layout["replicas_running"] == 1 and layout["source"].startswith("live")
    served = client.get("/openapi.json", headers=AUTH).json()
    assert "/tokenize" in served["paths"] and "/v1/responses" not in served["paths"]


async def _drain_the_limited_key(base_url: str) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """Tokenize requests on the limited key, three at a time, until the limiter answers 429; then three model
    lists at once. Three at a time stays under what admission takes at once (4 here), and outruns the bucket's
    refill (20 per second) while a request takes under 150 ms: one at a time, a request slower than 50 ms
    (ingress mode on a slow two-core machine) never empties it."""
    tokenized: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=LIMITED) as c:
        while len(tokenized) < 300 and not any(r.status_code == 429 for r in tokenized):
            tokenized += await asyncio.gather(
                *[c.post("/tokenize", json={"model": MODEL, "prompt": "x"}) for _ in range(3)]
            )
        models = await asyncio.gather(*[c.get("/v1/models") for _ in range(3)])
    return tokenized, models


def test_rate_limit_is_429_with_retry_after_on_every_route(stack: RunningStack, gateway: str) -> None:
    """A key's burst (30, refilled at 20 per second) spent: 429 + Retry-After, on tokenize and the model list
    as on chat."""
    tokenized, models = asyncio.run(_drain_the_limited_key(stack.base_url))
    responses = tokenized + models
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in responses), [r.status_code for r in responses]
    assert len(tokenized) > 30, "the burst of 30 is granted first"
    # right behind an empty bucket at most a token or two refill: a model list that took no tokens would be 200 x 3
    assert any(r.status_code == 429 for r in models), "the model list takes the key's tokens too"
    for r in limited:
        err = _err(r, 429)
        assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1
    time.sleep(int(limited[0].headers["retry-after"]))
    ok = httpx.post(f"{stack.base_url}/v1/chat/completions", json=CHAT, headers=LIMITED, timeout=60)
    assert ok.status_code == 200


async def _burst(base_url: str, n: int, max_tokens: int) -> list[httpx.Response]:
    body = {**CHAT, "max_tokens": max_tokens}
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=AUTH) as c:
        return await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(n)])


def test_overload_is_refused_with_503_and_retry_after(stack: RunningStack, client: httpx.Client, gateway: str) -> None:
    responses = asyncio.run(_burst(stack.base_url, 16, max_tokens=48))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 4, statuses  # the admitted ones complete
    refused = [r for r in responses if r.status_code == 503]
    assert refused, f"16 concurrent requests against 4 admitted slots were all accepted: {statuses}"
    for r in refused:
        assert r.headers["retry-after"] == "1" and _err(r, 503)["code"] == "overloaded"
    for r in responses:
        if r.status_code == 200:
            assert r.json()["usage"]["completion_tokens"] == 48
    assert client.post("/v1/chat/completions", json=CHAT, headers=AUTH).status_code == 200


async def _abandon_streams(base_url: str, n: int) -> None:
    body = {**CHAT, "max_tokens": 400, "stream": True}
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=AUTH) as c:
        for _ in range(n):
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        break  # leave mid-stream: the client hangs up


def test_abandoned_streams_give_their_slots_back(stack: RunningStack, gateway: str) -> None:
    """Four clients hang up mid-stream; then four concurrent requests must all be admitted again.

    The engine aborts a disconnected request within a step or two, so this allows a bounded settling
    time (polling, at most 30 s) rather than asserting on timing.
    """
    asyncio.run(_abandon_streams(stack.base_url, 4))
    deadline = time.monotonic() + 30.0
    while True:
        statuses = [r.status_code for r in asyncio.run(_burst(stack.base_url, 4, max_tokens=2))]
        if statuses == [200] * 4 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert statuses == [200] * 4, f"slots leaked after abandoned streams: {statuses}"


@pytest.mark.shutdown
def test_ctrl_c_stops_everything(stack: RunningStack, gateway: str) -> None:
    assert_clean_shutdown(stack)
