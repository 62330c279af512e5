"""Faults on the real stack: what users see when a replica or an engine dies, and when clients hang up.

Their own stacks (the embedded default under another key), because these tests kill parts of them, in
both gateway modes. Each fault is followed by a bounded wait for recovery (at most RECOVERY_S); what is
asserted is what a user sees, and the service answers again by itself:

- ingress mode: the ingress outlives the engine replica, so every failed request is answered at once
  with an OpenAI 503 + Retry-After;
- direct mode: the engine replica is the gateway. While its engine is dead the pipeline answers 503 +
  Retry-After; while no replica runs at all, HAProxy hands requests to Serve's proxy, which holds one
  until the replacement is up (it is then answered) and refuses the rest at once with 503 + Retry-After
  (Serve's own plain-text body); the request in flight on a killed replica process is lost with it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.e2e.conftest import RunningStack

FAULTS = ("local-cpu", "description=fault-injection stack")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize(
        "gateway",
        [
            pytest.param("direct", marks=pytest.mark.profile(*FAULTS, "serving.gateway=direct")),
            pytest.param("ingress", marks=pytest.mark.profile(*FAULTS, "serving.gateway=ingress")),
        ],
    ),
]

MODEL = "tiny-deepseek-v2"
RECOVERY_S = 240.0
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True}


def _procs(stack: RunningStack, pattern: str) -> list[psutil.Process]:
    out = []
    for p in stack.snapshot_descendants():
        try:
            if re.search(pattern, p.name()) or re.search(pattern, " ".join(p.cmdline()[:2])):
                out.append(p)
        except psutil.Error:
            continue
    return out


class _Traffic:
    """Sequential chat requests in a thread, recording each outcome, until stopped."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.results: list[tuple[float, int, str, str | None]] = []  # (sent at, status, body, Retry-After)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as c:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = c.post("/v1/chat/completions", json=CHAT)
                    self.results.append((t, r.status_code, r.text[:300], r.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    self.results.append((t, -1, f"{type(exc).__name__} after {time.monotonic() - t:.1f}s", None))
                time.sleep(0.2)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _wait_until_serving(client: httpx.Client, since: float) -> float:
    """Seconds from `since` until a chat request succeeds again (bounded by RECOVERY_S)."""
    while time.monotonic() - since < RECOVERY_S:
        try:
            if client.post("/v1/chat/completions", json=CHAT, timeout=30).status_code == 200:
                return time.monotonic() - since
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"the service did not answer a chat request within {RECOVERY_S:.0f}s of the fault")


def _traffic(stack: RunningStack, gateway: str) -> _Traffic:
    # direct mode holds one request while no replica runs: give it time to be answered after the replacement
    return _Traffic(stack.base_url, timeout_s=30.0 if gateway == "ingress" else RECOVERY_S)


def _report(
    name: str, traffic: _Traffic, killed_at: float, recovered_s: float, gateway: str, lost_in_flight: int = 0
) -> None:
    """Print what the clients saw after the kill, and assert it was a quick, clear refusal (module docstring).

    ``lost_in_flight``: how many requests may die with a killed process in direct mode (the one on it).
    """
    after = [r for r in traffic.results if r[0] >= killed_at]
    failed = [r for r in after if r[1] != 200]
    print(
        f"\n[fault {name}, {gateway}] recovered in {recovered_s:.1f}s; {len(failed)} of {len(after)} requests "
        f"after the kill failed; statuses {sorted({r[1] for r in failed})}"
    )
    for _, status, body, retry_after in failed[:5]:
        print(f"  {status} retry-after={retry_after} {body[:160]}")
    assert after, "no request was sent after the kill"
    refused = [r for r in failed if r[1] == 503]
    others = [r for r in failed if r[1] != 503]
    if gateway == "direct":
        assert len(others) <= lost_in_flight, f"requests failed other than with 503: {others[:3]}"
    else:
        assert not others, f"a request failed with {others[0][1]} instead of 503 + Retry-After: {others[0][2]}"
    for _, _status, body, retry_after in refused:
        assert retry_after and int(retry_after) > 0, f"a 503 without Retry-After: {body}"
        if gateway == "ingress" or "backpressure" not in body:  # Serve's own refusal (direct) is plain text
            assert '"error"' in body and "unavailable" in body, f"a 503 that is not an OpenAI error: {body}"


def test_killed_llm_replica_is_replaced(stack: RunningStack, client: httpx.Client, gateway: str) -> None:
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    victims = _procs(stack, r"ServeReplica:.*LLMServer")
    assert len(victims) == 1, [p.name() for p in stack.descendants]
    with _traffic(stack, gateway) as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        victims[0].send_signal(signal.SIGKILL)
        recovered_s = _wait_until_serving(client, killed_at)
    _report("replica SIGKILL", traffic, killed_at, recovered_s, gateway, lost_in_flight=1)
    assert client.get("/v1/models").status_code == 200
    assert _procs(stack, r"ServeReplica:.*LLMServer"), "no LLMServer replica after recovery"


def test_killed_engine_core_fails_health_and_is_replaced(
    stack: RunningStack, client: httpx.Client, gateway: str
) -> None:
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    engines = _procs(stack, r"VLLM::EngineCore|EngineCore")
    assert engines, [p.name() for p in stack.descendants]
    replica_before = {p.pid for p in _procs(stack, r"ServeReplica:.*LLMServer")}
    with _traffic(stack, gateway) as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        for p in engines:
            p.send_signal(signal.SIGKILL)
        recovered_s = _wait_until_serving(client, killed_at)
    _report("EngineCore SIGKILL", traffic, killed_at, recovered_s, gateway)
    replica_after = {p.pid for p in _procs(stack, r"ServeReplica:.*LLMServer")}
    assert replica_after and replica_after != replica_before, "the replica with a dead engine was not replaced"


def _running_requests(stack: RunningStack) -> float | None:
    """ray_vllm_num_requests_running summed over engines, from the stack's Prometheus endpoint."""
    try:
        text = httpx.get("http://127.0.0.1:8080/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    values = [float(m.group(1)) for m in re.finditer(r"^ray_vllm_num_requests_running\{[^}]*\} (\S+)$", text, re.M)]
    return sum(values) if values else None


async def _hang_up_mid_stream(base_url: str, n: int) -> None:
    body = {**CHAT, "max_tokens": 1500, "stream": True}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as c:

        async def one() -> None:
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        return  # leave mid-stream

        await asyncio.gather(*[one() for _ in range(n)])


def test_client_disconnect_aborts_the_request_in_the_engine(stack: RunningStack, gateway: str) -> None:
    asyncio.run(_hang_up_mid_stream(stack.base_url, 4))
    # 1500-token generations would keep the engine busy for many seconds; an abort frees it at once.
    # The gauge is exported every few seconds, so poll it (bounded) until it reads 0.
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline:
        seen = _running_requests(stack)
        if seen == 0:
            break
        time.sleep(2.0)
    assert seen == 0, f"ray_vllm_num_requests_running stayed at {seen} after the clients hung up"


@pytest.mark.shutdown
def test_sigterm_during_traffic_finishes_in_flight_requests(stack: RunningStack, gateway: str) -> None:
    """SIGTERM (what Kubernetes and `kill` send) while requests run: they complete, then everything stops."""
    results: list[int] = []

    def one() -> None:
        try:
            r = httpx.post(f"{stack.base_url}/v1/chat/completions", timeout=120, json={**CHAT, "max_tokens": 400})
            results.append(r.status_code)
        except httpx.HTTPError:
            results.append(-1)

    descendants = stack.snapshot_descendants()
    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # 400 tokens take several seconds on two cores: the requests are in the engine now
    stack.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=150)
    stack.stopped_rc = stack.proc.wait(timeout=150)
    print(f"\n[fault SIGTERM] in-flight request statuses: {results}")
    assert results == [200, 200, 200], f"in-flight requests did not all finish: {results}"
    assert stack.stopped_rc == 0
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, f"processes left after SIGTERM: {[p.pid for p in alive]}"
