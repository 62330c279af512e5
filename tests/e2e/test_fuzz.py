"""Fuzz the live API from its own OpenAPI document: nothing a client sends may produce a 5xx.

The stack (the embedded default, ``local-cpu``) serves ``dsserve/openapi.yaml`` at ``GET /openapi.json``;
schemathesis generates requests from it for every operation, both valid ones (positive: they reach the
real vLLM engine) and schema-violating ones (negative: wrong types, out-of-range numbers, missing fields,
bodies that are not JSON at all). Every response must be below 500, and every error must be OpenAI-shaped.
Afterwards a plain chat request must still answer 200.

Bounded for two cores: generation only (no shrinking; failures are collected and printed with the request
that caused them), a fixed seed (``DSSERVE_FUZZ_SEED`` to vary it), ``DSSERVE_FUZZ_EXAMPLES`` cases per
operation and mode, and a wall-clock budget (``DSSERVE_FUZZ_BUDGET_S``, default 75 s) shared evenly by every
operation and mode, past which an operation's remaining cases are skipped. The fuzzing copy of the document
keeps generated requests cheap: ``max_tokens`` and ``n`` at most 4 and always sent, and valid token counts
above 4 are lowered to 4 before sending, so a request generates at most 16 tokens; out-of-range values (0,
negative, above ``max_model_len``) are sent as drawn.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack

schemathesis = pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.e2e]

MODEL = "tiny-deepseek-v2"
MAX_MODEL_LEN = 2048  # deploy/profiles/local-cpu.yaml
CHEAP = 4  # most output tokens and choices a fuzzed request may ask for
EXAMPLES = int(os.environ.get("DSSERVE_FUZZ_EXAMPLES", "150"))
BUDGET_S = float(os.environ.get("DSSERVE_FUZZ_BUDGET_S", "75"))
SEED = int(os.environ.get("DSSERVE_FUZZ_SEED", "20261128"))
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "ignore_eos": True}


def _fuzzing_copy(served: dict[str, Any]) -> dict[str, Any]:
    """The served document, narrowed so valid requests stay cheap and name the served model."""
    spec = copy.deepcopy(served)
    schemas = spec["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        props = schemas[name]["properties"]
        props["model"] = {"type": "string", "enum": [MODEL]}
        props["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": CHEAP}
        props["n"] = {"type": "integer", "minimum": 1, "maximum": CHEAP}
        props.pop("max_completion_tokens", None)
        schemas[name]["required"] = [*schemas[name]["required"], "max_tokens"]
    schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] = 4
    for name in ("TokenizeCompletionRequest", "TokenizeChatRequest", "DetokenizeRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    schemas["TokenizeChatRequest"]["properties"]["messages"]["maxItems"] = 4
    return spec


def _cheapen(body: Any) -> Any:
    """Lower valid token counts above CHEAP (a negative case may draw max_tokens=2000, which is valid
    server-side and would generate 2000 tokens); keep everything out of range as drawn."""
    if isinstance(body, dict):
        body = dict(body)
        if "max_tokens" not in body:
            body["max_tokens"] = CHEAP  # omitted = up to max_model_len tokens
        for key in ("max_tokens", "max_completion_tokens"):
            v = body.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and CHEAP < v <= MAX_MODEL_LEN:
                body[key] = CHEAP
        n = body.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and CHEAP < n <= 16:
            body["n"] = CHEAP
    return body


def _problem(resp: httpx.Response) -> str | None:
    """Why this response is wrong, or None: no 5xx, and every 4xx is an OpenAI error body."""
    if resp.status_code >= 500:
        return f"HTTP {resp.status_code}"
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"HTTP {resp.status_code} without an OpenAI error body"
        if not isinstance(err, dict) or set(err) != {"message", "type", "param", "code"}:
            return f"HTTP {resp.status_code} with error fields {sorted(err) if isinstance(err, dict) else err!r}"
    return None


def _send(client: httpx.Client, case: Any) -> tuple[httpx.Response, str]:
    """Send one generated case with httpx (the body as schemathesis drew it: JSON, or raw bytes)."""
    body = _cheapen(case.body) if case.body is not None and type(case.body).__name__ != "NotSet" else None
    path = case.formatted_path
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("content-length", "host")}
    if isinstance(body, (bytes, bytearray)):
        content = bytes(body)
    elif body is None:
        content = None
    else:
        content = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity are drawn too: sent as such
    if content is not None:
        headers.setdefault("content-type", case.media_type or "application/json")
    resp = client.request(case.method, path, content=content, headers=headers, params=case.query or None)
    shown = content[:300].decode("utf-8", "backslashreplace") if content else ""
    return resp, f"{case.method} {path} {shown}"


def test_fuzz_finds_no_5xx_then_a_chat_still_answers(stack: RunningStack, client: httpx.Client) -> None:
    """Keys off (the embedded default): every generated request reaches the pipeline's checks."""
    _fuzz(stack, client, {})


@pytest.mark.profile("local-cpu", "api.api_keys_env=DSSERVE_E2E_KEYS")
def test_fuzz_with_a_key_finds_no_5xx_then_a_chat_still_answers(stack: RunningStack) -> None:
    """Keys on: the same run with a valid key on every request, so the cases pass auth and reach every check
    behind it (a schema-violating request without a key is a 401 before anything else)."""
    from tests.e2e.conftest import E2E_KEYS

    auth = {"Authorization": f"Bearer {E2E_KEYS[0]}"}
    with httpx.Client(base_url=stack.base_url, timeout=120.0, headers=auth) as client:
        assert httpx.get(f"{stack.base_url}/v1/models", timeout=30).status_code == 401
        _fuzz(stack, client, auth)


def _fuzz(stack: RunningStack, client: httpx.Client, auth: dict[str, str]) -> None:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    served = client.get("/openapi.json")
    assert served.status_code == 200, served.text
    from dsserve.serving.openapi import openapi_for
    from dsserve.serving.pipeline import PipelineSettings
    from dsserve.serving.routes import ROUTES

    assert served.json() == openapi_for(PipelineSettings()), (
        "the stack serves dsserve/openapi.yaml with its api.* limits"
    )
    schema = schemathesis.openapi.from_dict(_fuzzing_copy(served.json()))
    operations = [r.ok() for r in schema.get_all_operations()]
    # every route the pipeline serves, ray.serve.llm's extra ones included
    assert {op.label for op in operations} >= {f"{r.method} {p}" for p, r in ROUTES.items()}
    per_case_budget_s = BUDGET_S / (2 * len(operations))  # each operation and mode gets its share of the time

    started = time.monotonic()
    statuses: Counter[tuple[str, str, int]] = Counter()
    reasons: Counter[str] = Counter()  # the commonest 4xx messages, to see what the cases exercised
    failures: list[str] = []
    skipped = 0
    with httpx.Client(base_url=stack.base_url, timeout=60.0, headers=auth) as fuzz_client:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                deadline = time.monotonic() + per_case_budget_s

                @seed(SEED)
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=False,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=op.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:  # called within this iteration, so the loop variables are current
                    nonlocal skipped
                    if time.monotonic() > deadline:  # noqa: B023 - see run's comment
                        skipped += 1
                        return
                    resp, shown = _send(fuzz_client, case)
                    statuses[(op.label, mode.value, resp.status_code)] += 1  # noqa: B023 - see run's comment
                    problem = _problem(resp)
                    if problem is None and resp.status_code >= 400:
                        reasons[f"{resp.status_code} {resp.json()['error']['message'][:90]}"] += 1
                    if problem is not None:
                        failures.append(f"{problem}: {shown}\n    -> {resp.text[:400]}")

                try:
                    run()
                except Unsatisfiable:  # nothing to violate (GET /v1/models has no inputs)
                    pass
    elapsed = time.monotonic() - started
    summary = "\n".join(f"  {label} [{mode}] HTTP {code}: {n}" for (label, mode, code), n in sorted(statuses.items()))
    common = "\n".join(f"  {n:4d} x {why}" for why, n in reasons.most_common(12))
    print(
        f"\nfuzzed {sum(statuses.values())} requests in {elapsed:.1f}s (skipped past the budget: {skipped})\n"
        f"{summary}\ncommonest refusals:\n{common}"
    )
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:20])
    assert sum(statuses.values()) >= 100, "the budget let too few requests through to mean anything"
    assert any(code == 200 for (label, mode, code) in statuses if label.startswith("POST")), (
        "no generated request reached the engine"
    )
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2, r.text


# -- the odd inputs, stated one by one on the real engine ---------------------------------------------------------


def _post(client: httpx.Client, raw: bytes | dict, path: str = "/v1/chat/completions") -> httpx.Response:
    if isinstance(raw, dict):
        raw = json.dumps(raw, allow_nan=True).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def _chat(**fields: Any) -> dict[str, Any]:
    return {**CHAT, **fields}


def _content(text_json: str) -> bytes:
    return (
        '{"model": "%s", "max_tokens": 2, "messages": [{"role": "user", "content": %s}]}' % (MODEL, text_json)
    ).encode()


COMPLETIONS = "/v1/completions"
RANGE_CASES = {
    "max-tokens-0": (_chat(max_tokens=0), "max_tokens"),
    "max-tokens-neg": (_chat(max_tokens=-1), "max_tokens"),
    "max-tokens-over-len": (_chat(max_tokens=MAX_MODEL_LEN + 1), "max_tokens"),
    "max-tokens-2^64": (_chat(max_tokens=2**64), "max_tokens"),
    "max-tokens-float": (_chat(max_tokens=1.5), "max_tokens"),
    "temp-neg": (_chat(temperature=-0.1), "temperature"),
    "temp-high": (_chat(temperature=2.5), "temperature"),
    "temp-huge": (_chat(temperature=1e308), "temperature"),
    "temp-nan": (_chat(temperature=math.nan), None),  # not JSON: invalid_json
    "temp-inf": (_chat(temperature=math.inf), None),
    "n-0": (_chat(n=0), "n"),
    "n-neg": (_chat(n=-3), "n"),
    "n-over-max": (_chat(n=17, temperature=1.0), "n"),  # above api.max_n (16)
    "n-huge": (_chat(n=2**40), "n"),
    "top-p-0": (_chat(top_p=0), "top_p"),
    "no-messages": (_chat(messages=[]), "messages"),
    "null-content": (_chat(messages=[{"role": "user", "content": None}]), "messages.0.content"),
    "stream-options-alone": (_chat(stream_options={"include_usage": True}), "stream_options"),
    "lone-high-surrogate": (_content('"\\ud800"'), "messages.0.content"),
    "lone-low-surrogate": (_content('"tail \\udc00"'), "messages.0.content"),
    "empty-prompt": ({"model": MODEL, "prompt": "", "max_tokens": 2}, "prompt"),
    "prompt-surrogate": (('{"model": "%s", "prompt": "x\\udfff", "max_tokens": 2}' % MODEL).encode(), "prompt"),
}


@pytest.mark.parametrize("case", RANGE_CASES)
def test_out_of_range_and_malformed_fields_are_400_naming_the_field(client: httpx.Client, case: str) -> None:
    body, param = RANGE_CASES[case]
    path = COMPLETIONS if case.endswith("prompt") or "prompt-" in case else "/v1/chat/completions"
    r = _post(client, body, path)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error", err
    assert err["param"] == param, err
    for leak in ("Traceback", "Internal exception", "Request ID", 'File "'):
        assert leak not in err["message"], err["message"]


@pytest.mark.parametrize(
    "content_json",
    [
        '""',
        '"a\\u0000b\\u0001\\u001b[31mred\\u007f"',
        '"\\u202eevil\\u202c \\ufeff \\u200d \\u0301\\u0301 \\ufffe"',
        '"\\ud83d\\ude00 \\u4e2d\\u6587 \\u0627\\u0644\\u0639\\u0631\\u0628\\u064a\\u0629"',
        "[]",
    ],
    ids=["empty", "control-chars", "bidi-bom-zwj-combining", "astral-and-scripts", "no-parts"],
)
def test_odd_but_valid_text_is_answered(client: httpx.Client, content_json: str) -> None:
    r = _post(client, _content(content_json))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
