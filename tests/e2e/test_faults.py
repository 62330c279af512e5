"""Faults on the real stack: what users see when a replica or an engine dies, and when clients hang up.

Its own stack (the embedded default under another key), because these tests kill parts of it.
Each fault is followed by a bounded wait for recovery (at most RECOVERY_S); what is asserted is what a
user sees: errors are OpenAI-shaped, and the service answers again by itself.
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
pytestmark = [pytest.mark.e2e, pytest.mark.profile(*FAULTS)]

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

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.results: list[tuple[float, int, str, str | None]] = []  # (sent at, status, body, Retry-After)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as c:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = c.post("/v1/chat/completions", json=CHAT)
                    self.results.append((t, r.status_code, r.text[:300], r.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    self.results.append((t, -1, f"{type(exc).__name__} after {time.monotonic() - t:.1f}s", None))
                time.sleep(0.2)

    def __enter__(self) -> "_Traffic":
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


def _report(name: str, traffic: _Traffic, killed_at: float, recovered_s: float) -> None:
    """Print what the clients saw after the kill, and assert it was a quick, clear refusal.

    Every request that did not succeed must have been answered 503 with Retry-After and an OpenAI error
    body (the engine failed, or no engine replica was running): no 500, and no request left hanging until
    the client gave up (Ray Serve's router would hold it until a replacement replica is up).
    """
    after = [r for r in traffic.results if r[0] >= killed_at]
    failed = [r for r in after if r[1] != 200]
    print(f"\n[fault {name}] recovered in {recovered_s:.1f}s; {len(failed)} of {len(after)} requests after the "
          f"kill failed; statuses {sorted({r[1] for r in failed})}")
    for _, status, body, retry_after in failed[:5]:
        print(f"  {status} retry-after={retry_after} {body[:160]}")
    assert after, "no request was sent after the kill"
    for _, status, body, retry_after in failed:
        assert status == 503, f"a request failed with {status} instead of 503 + Retry-After: {body}"
        assert retry_after and int(retry_after) > 0, f"a 503 without Retry-After: {body}"
        assert '"error"' in body and "unavailable" in body, f"a 503 that is not an OpenAI error: {body}"


def test_killed_llm_replica_is_replaced(stack: RunningStack, client: httpx.Client) -> None:
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    victims = _procs(stack, r"ServeReplica:.*LLMServer")
    assert len(victims) == 1, [p.name() for p in stack.descendants]
    with _Traffic(stack.base_url) as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        victims[0].send_signal(signal.SIGKILL)
        recovered_s = _wait_until_serving(client, killed_at)
    _report("replica SIGKILL", traffic, killed_at, recovered_s)
    assert client.get("/v1/models").status_code == 200
    assert _procs(stack, r"ServeReplica:.*LLMServer"), "no LLMServer replica after recovery"


def test_killed_engine_core_fails_health_and_is_replaced(stack: RunningStack, client: httpx.Client) -> None:
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    engines = _procs(stack, r"VLLM::EngineCore|EngineCore")
    assert engines, [p.name() for p in stack.descendants]
    replica_before = {p.pid for p in _procs(stack, r"ServeReplica:.*LLMServer")}
    with _Traffic(stack.base_url) as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        for p in engines:
            p.send_signal(signal.SIGKILL)
        recovered_s = _wait_until_serving(client, killed_at)
    _report("EngineCore SIGKILL", traffic, killed_at, recovered_s)
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


def test_client_disconnect_aborts_the_request_in_the_engine(stack: RunningStack) -> None:
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
def test_sigterm_during_traffic_finishes_in_flight_requests(stack: RunningStack) -> None:
    """SIGTERM (what Kubernetes and `kill` send) while requests run: they complete, then everything stops."""
    results: list[int] = []

    def one() -> None:
        try:
            r = httpx.post(f"{stack.base_url}/v1/chat/completions", timeout=120,
                           json={**CHAT, "max_tokens": 400})
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
