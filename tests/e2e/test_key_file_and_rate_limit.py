"""API keys from a mounted key file (rotated while serving) and per-key rate limits, on the real stack.

One stack: the embedded default with ``api.api_keys_file`` (a file this module writes before the stack
starts, the way a Kubernetes Secret volume holds it) and ``api.rate_limit`` of 0.5 requests/s with bursts
of 3 per key.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningStack, assert_clean_shutdown

KEYS_FILE = Path(tempfile.gettempdir()) / f"dsserve-e2e-api-keys-{os.getpid()}" / "api-keys"
KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
# `dsserve up` uses the first key for its own health check and sample request; the tests use the others
KEYS_FILE.write_text("# e2e keys\nkey-for-dsserve-up\nkey-limited-7a41c9e0\nkey-rotated-out-5b2e\nkey-other-93c1d8f2\n")

LIMITED = ("local-cpu", f"api.api_keys_file={KEYS_FILE}", "api.rate_limit={requests_per_second: 0.5, burst: 3}")
pytestmark = [pytest.mark.e2e, pytest.mark.profile(*LIMITED)]

MODEL = "tiny-deepseek-v2"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_from_the_file_are_required(client: httpx.Client) -> None:
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
    r = client.post("/v1/chat/completions", json=CHAT, headers=_auth("not-a-key"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers=_auth("key-rotated-out-5b2e")).status_code == 200


def test_proxy_health_endpoints_stay_open(client: httpx.Client) -> None:
    """Serve's proxy answers these itself, before any application: probes and load balancers need no key."""
    assert client.get("/-/healthz").status_code == 200
    assert client.get("/-/routes").status_code == 200


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/tokenize"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/score"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/route"),
    ],
)
def test_every_other_route_needs_the_key_too(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, json={"model": MODEL, "prompt": "x", "input": "x"} if method == "POST" else None)
    assert r.status_code == 401, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = client.request(
        method,
        path,
        headers=_auth("key-rotated-out-5b2e"),
        json={"model": MODEL, "prompt": "x", "input": "x"} if method == "POST" else None,
    )
    assert ok.status_code != 401 and ok.status_code < 500, ok.text


def test_rate_limit_is_429_with_retry_after_then_recovers(client: httpx.Client) -> None:
    headers = _auth("key-limited-7a41c9e0")
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 200], statuses  # the burst
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1}, headers=headers)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert "key-limited-7a41c9e0" not in r.text
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2, retry  # one token every 2 s, rounded up
    # the key's bucket holds on every route; another key has its own
    for method, path, body in (("POST", "/tokenize", {"model": MODEL, "prompt": "x"}), ("GET", "/v1/models", None)):
        assert client.request(method, path, json=body, headers=headers).status_code == 429, path
    assert client.post("/v1/chat/completions", json=CHAT, headers=_auth("key-other-93c1d8f2")).status_code == 200
    time.sleep(retry)
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200


def test_rotating_the_key_file_takes_effect_without_restart(client: httpx.Client) -> None:
    tmp = KEYS_FILE.with_name("api-keys.new")
    tmp.write_text("# rotated\nkey-for-dsserve-up\nkey-limited-7a41c9e0\nkey-other-93c1d8f2\nkey-rotated-in-4e6a\n")
    os.replace(tmp, KEYS_FILE)  # atomic, like kubelet's symlink swap
    deadline = time.monotonic() + 15
    while True:
        new = client.get("/v1/models", headers=_auth("key-rotated-in-4e6a")).status_code
        old = client.get("/v1/models", headers=_auth("key-rotated-out-5b2e")).status_code
        if (new, old) == (200, 401) or time.monotonic() > deadline:
            break
        time.sleep(2.0)  # within the rate limit (0.5 req/s per key)
    assert (new, old) == (200, 401), "the ingress did not pick up the rotated key file"


@pytest.mark.shutdown
def test_ctrl_c_stops_everything(stack: RunningStack) -> None:
    assert_clean_shutdown(stack)
    KEYS_FILE.unlink(missing_ok=True)
    KEYS_FILE.parent.rmdir()
