"""API keys, body limits and admission control on the real stack.

One stack: the embedded default with keys required and a deliberately small capacity (2 engine slots + 2
queued = 4 admitted at once), so overload is cheap to reach on two cores.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.conftest import E2E_KEYS, RunningStack, assert_clean_shutdown

SECURE = ("local-cpu", "api.api_keys_env=DSSERVE_E2E_KEYS", "serving.max_ongoing_requests=2",
          "serving.max_queued_requests=2", "api.max_body_bytes=65536")
pytestmark = [pytest.mark.e2e, pytest.mark.profile(*SECURE)]

MODEL = "tiny-deepseek-v2"
AUTH = {"Authorization": f"Bearer {E2E_KEYS[0]}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "ignore_eos": True}


def _err(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": E2E_KEYS[0]},
                                     {"Authorization": f"Basic {E2E_KEYS[0]}"}],
                         ids=["missing", "wrong-key", "no-scheme", "basic-scheme"])
@pytest.mark.parametrize("method,path", [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                                         ("GET", "/v1/models"), ("GET", f"/v1/models/{MODEL}")])
def test_requests_without_a_valid_key_get_401(client: httpx.Client, headers: dict, method: str, path: str) -> None:
    r = client.request(method, path, headers=headers, json=CHAT if method == "POST" else None)
    err = _err(r, 401)
    assert err["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert E2E_KEYS[0] not in r.text


@pytest.mark.parametrize("key", E2E_KEYS)
def test_every_configured_key_is_accepted(client: httpx.Client, key: str) -> None:
    r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    err = _err(client.post("/v1/chat/completions", json=big, headers=AUTH), 413)
    assert err["code"] == "request_too_large" and "65536" in err["message"]


async def _burst(base_url: str, n: int, max_tokens: int) -> list[httpx.Response]:
    body = {**CHAT, "max_tokens": max_tokens}
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=AUTH) as c:
        return await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(n)])


def test_overload_is_refused_with_503_and_retry_after(stack: RunningStack, client: httpx.Client) -> None:
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


def test_abandoned_streams_give_their_slots_back(stack: RunningStack) -> None:
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
def test_ctrl_c_stops_everything(stack: RunningStack) -> None:
    assert_clean_shutdown(stack)
