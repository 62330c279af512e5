"""What the ingress accepts and refuses, on the real chat/completions handlers with the engine faked (no Ray).

The behaviour the fuzzer (tests/e2e/test_fuzz.py) relies on, defined here case by case: strict JSON of
well-formed Unicode, at least one chat message, ``n`` up to ``api.max_n``; any other text (empty, control
characters, bidi overrides, combining marks, astral characters) passes to the engine unchanged; engine
client errors are 400 naming the field, and nothing a client sends produces a 5xx or leaks a traceback.
Plus the API key paths: key file, 401, per-key 429 with Retry-After, and the key on every other route.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dsserve.serving.admission import AdmissionGate
from dsserve.serving.auth import KeyStore, RateLimiter
from dsserve.serving.metrics import IngressMetrics

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MSG = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class _Recorder:
    def __init__(self, name: str, sink: dict[str, list]) -> None:
        self.name, self.sink = name, sink

    def inc(self, value: float, tags: dict | None = None) -> None:
        self.sink[self.name].append((value, tags or {}))

    observe = set = inc


class _Engine:
    """Stands in for ``_process_llm_request``: records each body, answers 200 or raises ``fail``."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.bodies: list[Any] = []
        self.fail = fail

    async def __call__(self, body: Any, call_method: str, raw_request: Any) -> Any:
        from starlette.responses import JSONResponse

        self.bodies.append(body)
        if self.fail is not None:
            raise self.fail
        return JSONResponse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


def _ingress(engine: _Engine | None = None, *, keys: KeyStore | None = None, limiter: RateLimiter | None = None,
             max_n: int = 16) -> tuple[Any, dict[str, list]]:
    from dsserve.serving.ingress import DsserveIngress

    sink: dict[str, list] = defaultdict(list)
    ing = DsserveIngress.__new__(DsserveIngress)  # no Ray: only what the handlers use
    ing._gate = AdmissionGate(None)
    ing._max_body_bytes = 64 * 1024
    ing._model_cards = {"m": object()}
    ing._metrics = IngressMetrics(["m"], None, factory=lambda spec: _Recorder(spec.name, sink))
    ing._process_llm_request = engine or _Engine()
    ing._max_n = max_n
    if keys is not None:
        ing._keys, ing._keys_seen = keys, keys.reloads
    ing._limiter = limiter
    return ing, sink


def _request(body: Any, path: str = CHAT, headers: dict[str, str] | None = None) -> Any:
    from starlette.requests import Request

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = [False]

    async def receive() -> dict[str, Any]:
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": raw, "more_body": False}

    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "scheme": "http",
             "server": ("127.0.0.1", 8000), "headers": hdrs}
    return Request(scope, receive)


def _call(ing: Any, body: Any, path: str = CHAT, headers: dict[str, str] | None = None) -> Any:
    handler = ing.chat if path == CHAT else ing.completions
    return asyncio.run(handler(_request(body, path, headers)))


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.body
    err = json.loads(resp.body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


def _raw_chat(content_json: str) -> bytes:
    """A chat body whose user content is the given JSON string literal, escapes kept as sent."""
    return ('{"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": %s}]}' % content_json).encode()


# -- Unicode and control characters ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw,param", [
    (_raw_chat('"\\ud800"'), "messages.0.content"),
    (_raw_chat('"ok \\udfff tail"'), "messages.0.content"),
    (_raw_chat('[{"type": "text", "text": "\\uDBFF"}]'), "messages.0.content.0.text"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "\\ud800": 1}', "\\ud800"),
], ids=["lone-high", "lone-low", "in-a-part", "in-a-key"])
def test_lone_surrogates_are_400_naming_the_field(raw: bytes, param: str) -> None:
    engine = _Engine()
    ing, _ = _ingress(engine)
    err = _error(_call(ing, raw), 400)
    assert err["code"] == "invalid_parameter" and "surrogate" in err["message"]
    if param.startswith("messages"):
        assert err["param"] == param
    assert not engine.bodies


def test_lone_surrogate_in_a_completions_prompt() -> None:
    ing, _ = _ingress()
    raw = b'{"model": "m", "prompt": ["fine", "bad \\ud834"], "max_tokens": 2}'
    assert _error(_call(ing, raw, COMPLETIONS), 400)["param"] == "prompt.1"


@pytest.mark.parametrize("content_json,expected", [
    ('"\\ud83d\\ude00 pair"', "\U0001F600 pair"),  # a surrogate *pair* is one astral character: fine
    ('""', ""),
    ('"a\\u0000b\\u0001\\u001b[31m\\u007f"', "a\x00b\x01\x1b[31m\x7f"),  # control characters are text
    ('"\\u202eevil\\u202c \\ufeff \\u200d \\u0301\\u0301 \\ufffe \\uffff"',
     "\u202eevil\u202c \ufeff \u200d \u0301\u0301 \ufffe \uffff"),  # bidi, BOM, ZWJ, combining, nonchars
    (json.dumps("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية"), "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية"),
    ("[]", []),  # no content parts: an empty turn
], ids=["surrogate-pair", "empty", "control", "bidi-bom-zwj-combining", "scripts", "no-parts"])
def test_odd_but_valid_text_reaches_the_engine_unchanged(content_json: str, expected: Any) -> None:
    engine = _Engine()
    ing, _ = _ingress(engine)
    assert _call(ing, _raw_chat(content_json)).status_code == 200
    (body,) = engine.bodies
    got = body.messages[0]["content"]
    assert (list(got) if isinstance(expected, list) else got) == expected


def test_raw_invalid_utf8_is_400() -> None:
    ing, _ = _ingress()
    err = _error(_call(ing, b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}'), 400)
    assert err["code"] == "invalid_json"


# -- JSON edge cases --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    ing, _ = _ingress()
    raw = ('{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": %s}' % constant).encode()
    err = _error(_call(ing, raw), 400)
    assert err["code"] == "invalid_json" and constant.lstrip("-") in err["message"]


@pytest.mark.parametrize("where", ["top", "field"])
def test_deeply_nested_json_is_400_not_500(where: str) -> None:
    ing, _ = _ingress()
    deep = "[" * 5_000 + "]" * 5_000  # past Python's recursion limit, under max_body_bytes
    raw = deep if where == "top" else '{"model": "m", "messages": [], "user": %s}' % deep
    err = _error(_call(ing, raw.encode()), 400)
    assert "nested too deeply" in err["message"]


def test_moderately_nested_extra_field_is_a_field_error() -> None:
    ing, _ = _ingress()
    err = _error(_call(ing, {**MSG, "user": [[[["x"]]]]}), 400)
    assert err["param"] == "user" and err["code"] == "invalid_parameter"


# -- messages, n and the other ranges ---------------------------------------------------------------------------

def test_empty_messages_is_400_naming_messages() -> None:
    engine = _Engine()
    ing, _ = _ingress(engine)
    err = _error(_call(ing, {**MSG, "messages": []}), 400)
    assert err["param"] == "messages" and "at least one message" in err["message"] and not engine.bodies


def test_null_content_error_names_the_field_not_pydantic_types() -> None:
    ing, _ = _ingress()
    err = _error(_call(ing, {**MSG, "messages": [{"role": "user", "content": None}]}), 400)
    assert err["param"] == "messages.0.content", err
    assert "Param" not in err["message"] and ".str" not in err["message"], err["message"]


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "messages": True, "max_tokens": 1}, "messages"),
    ({"model": "m", "messages": None, "max_tokens": 1}, "messages"),
    ({"model": "m", "stream_options": -0.5, "temperature": 0.5}, "stream_options"),
    ({**MSG, "structured_outputs": 5}, "structured_outputs"),
    ({"stream_options": False, "messages": True, "model": "m", "max_tokens": 1, "top_p": True}, "stream_options"),
], ids=["messages-true", "messages-null", "no-messages-odd-options", "structured-outputs-int", "fuzzer-found"])
def test_wrong_types_that_crash_vllm_validators_are_400_naming_a_field(body: dict, param: str) -> None:
    """Found by the fuzzer: vLLM's "before" validators iterate ``messages`` and call ``.get`` on nested
    options without checking types, so a wrong type raised TypeError/AttributeError: upstream answered 500."""
    engine = _Engine()
    ing, _ = _ingress(engine)
    err = _error(_call(ing, body), 400)
    assert err["param"] == param and err["code"] == "invalid_parameter", err
    assert "iterable" not in err["message"] and "attribute" not in err["message"], err
    assert not engine.bodies


@pytest.mark.parametrize("n,status", [(16, 200), (17, 400), (10**12, 400)])
def test_n_is_bounded_by_max_n(n: int, status: int) -> None:
    ing, _ = _ingress(max_n=16)
    resp = _call(ing, {**MSG, "n": n, "temperature": 1.0})
    assert resp.status_code == status
    if status == 400:
        err = _error(resp, 400)
        assert err["param"] == "n" and "api.max_n" in err["message"] and str(n) in err["message"]


@pytest.mark.parametrize("field,value", [("max_tokens", 1.5), ("max_tokens", "ten"), ("temperature", "hot"),
                                         ("n", 2.5), ("seed", 2**70), ("stop", ["a"] * 5)])
def test_wrong_types_and_ranges_pydantic_catches_are_400_with_the_field(field: str, value: Any) -> None:
    ing, _ = _ingress()
    err = _error(_call(ing, {**MSG, field: value}), 400)
    assert err["param"] == field or err["param"].startswith(field + "."), err


@pytest.mark.parametrize("message,param", [
    ("max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "max_tokens"),
    ("temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)", "temperature"),
    ("n must be at least 1, got 0.", "n"),
    ("presence_penalty must be in [-2, 2], got 5.0.", "presence_penalty"),
    ("top_k must be 0 (disable), or at least 1, got -5.", "top_k"),
    ("Cannot apply chat template to an empty conversation.", None),
    ("nothing must be named here", None),  # not a request field
])
def test_engine_reported_range_errors_name_the_field(message: str, param: str | None) -> None:
    """Range checks vLLM makes (max_tokens, temperature, n, ...) come back as OpenAIHTTPException."""
    from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException

    wrapped = f"Message: {message} (Request ID: abc), Internal exception: x, original exception: y"
    ing, _ = _ingress(_Engine(OpenAIHTTPException(message=wrapped, status_code=400, type="BadRequestError")))
    err = _error(_call(ing, MSG), 400)
    assert err["message"] == message and err["param"] == param and "Request ID" not in err["message"]


@pytest.mark.parametrize("body,param", [
    ({**MSG, "stream_options": {"include_usage": True}}, "stream_options"),
    ({**MSG, "cache_salt": ""}, "cache_salt"),
], ids=["stream-options-without-stream", "empty-cache-salt"])
def test_vllm_validators_raising_vllm_errors_are_400_with_the_field(body: dict, param: str) -> None:
    """vLLM's request models raise VLLMValidationError (not a ValueError) from validators: upstream's
    middleware turned it into a 400 with its wrapped "Message: ... Internal exception: ..." text."""
    engine = _Engine()
    ing, _ = _ingress(engine)
    err = _error(_call(ing, body), 400)
    assert err["param"] == param and err["code"] == "invalid_parameter", err
    assert "Internal exception" not in err["message"] and not engine.bodies


def test_client_errors_raised_in_the_engine_replica_are_400_with_the_field() -> None:
    """Checks the replica raises arrive as a RayTaskError carrying the cause (faked here: any valid body)."""
    from ray.exceptions import RayTaskError
    from vllm.exceptions import VLLMValidationError

    cause = VLLMValidationError("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")
    raised = RayTaskError("completions", "Traceback (most recent call last):\n  File \"/secret/path.py\"", cause)
    ing, _ = _ingress(_Engine(raised.as_instanceof_cause()))
    err = _error(_call(ing, {"model": "m", "prompt": "x"}, COMPLETIONS), 400)
    assert err["param"] == "prompt" and err["message"].startswith("Either prompt or prompt_embeds")
    assert "Traceback" not in err["message"] and "/secret" not in err["message"]
    assert ing._gate.inflight == 0


def test_an_internal_failure_is_a_bare_500_without_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from ray.exceptions import RayTaskError

    raised = RayTaskError("completions", "Traceback:\n  File \"/work/x.py\", pid=123, ip=10.0.0.1",
                          TypeError("TextEncodeInput must be Union[...]"))
    ing, sink = _ingress(_Engine(raised.as_instanceof_cause()))
    resp = _call(ing, {"model": "m", "prompt": "x"}, COMPLETIONS)
    err = _error(resp, 500)
    assert err["code"] == "internal_error" and err["type"] == "server_error"
    for leak in ("Traceback", "/work/", "pid=", "TextEncodeInput", "10.0.0.1"):
        assert leak not in err["message"]
    assert ing._gate.inflight == 0
    assert [t["status"] for _, t in sink["dsserve_requests"]] == ["500"]


# -- API keys and rate limits on the handlers ---------------------------------------------------------------------

def _key_file(tmp_path: Path, *keys: str) -> Path:
    f = tmp_path / "api-keys"
    f.write_text("# test keys\n" + "\n".join(keys) + "\n")
    return f


def test_key_file_auth_and_401_without_the_key_in_the_body(tmp_path: Path) -> None:
    keys = KeyStore(path=str(_key_file(tmp_path, "sk-file-key")))
    ing, sink = _ingress(keys=keys)
    ok = _call(ing, MSG, headers={"Authorization": "Bearer sk-file-key"})
    assert ok.status_code == 200
    for headers in ({}, {"Authorization": "Bearer sk-file-ke"}, {"Authorization": "Bearer sk-file-key2"},
                    {"Authorization": "sk-file-key"}):
        resp = _call(ing, MSG, headers=headers)
        err = _error(resp, 401)
        assert err["code"] == "invalid_api_key" and resp.headers["www-authenticate"] == "Bearer"
        assert b"sk-file-key" not in resp.body
    assert [t["reason"] for _, t in sink["dsserve_rejected_requests"]] == ["unauthorized"] * 4
    assert "sk-file-key" not in json.dumps(sink)  # metrics never carry the key


def test_rate_limit_is_per_key_with_retry_after_and_counted_without_the_key() -> None:
    keys = KeyStore(env="KEYS", environ={"KEYS": "key-a,key-b"})
    limiter = RateLimiter(0.4, 2)  # 2 at once, then one every 2.5 s
    ing, sink = _ingress(keys=keys, limiter=limiter)
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    assert [_call(ing, MSG, headers=a).status_code for _ in range(2)] == [200, 200]
    limited = _call(ing, MSG, headers=a)
    err = _error(limited, 429)
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "3", "2.5 s until a token: rounded up"
    assert "key-a" not in limited.body.decode()
    assert _call(ing, MSG, headers=b).status_code == 200, "another key is not limited by key-a's bucket"
    assert _call(ing, {"model": "m", "prompt": "x"}, COMPLETIONS, headers=a).status_code == 429
    reasons = [(t["route"], t["reason"]) for _, t in sink["dsserve_rejected_requests"]]
    assert reasons == [(CHAT, "rate_limited"), (COMPLETIONS, "rate_limited")]
    statuses = [t["status"] for _, t in sink["dsserve_requests"]]
    assert statuses == ["200", "200", "429", "200", "429"]
    assert "key-a" not in json.dumps(sink) and "key-b" not in json.dumps(sink)


def test_wrong_key_is_401_before_any_rate_limit() -> None:
    keys = KeyStore(env="KEYS", environ={"KEYS": "key-a"})
    ing, _ = _ingress(keys=keys, limiter=RateLimiter(0.001, 1))
    for _ in range(3):
        _error(_call(ing, MSG, headers={"Authorization": "Bearer nope"}), 401)
    assert _call(ing, MSG, headers={"Authorization": "Bearer key-a"}).status_code == 200


def test_rotation_drops_removed_keys_buckets(tmp_path: Path) -> None:
    f = _key_file(tmp_path, "old", "stay")
    keys = KeyStore(path=str(f), check_interval_s=0.0)
    limiter = RateLimiter(1.0, 5)
    ing, _ = _ingress(keys=keys, limiter=limiter)
    for key in ("old", "stay"):
        assert _call(ing, MSG, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert len(limiter) == 2
    f.write_text("stay\nnew-key\n")
    _error(_call(ing, MSG, headers={"Authorization": "Bearer old"}), 401)
    assert len(limiter) == 1
    assert _call(ing, MSG, headers={"Authorization": "Bearer new-key"}).status_code == 200


def test_other_routes_need_the_key_too() -> None:
    """Upstream's embeddings/tokenize/score and FastAPI's openapi.json/docs, through the ASGI middleware."""
    from dsserve.serving.ingress import _KeyRequired

    keys = KeyStore(env="KEYS", environ={"KEYS": "key-a"})
    ing, _ = _ingress(keys=keys)
    reached: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = _KeyRequired(app, check=ing._unauthorized)

    def status(path: str, method: str = "POST", key: str | None = None) -> int:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        sent: list[dict] = []

        async def send(msg: dict) -> None:
            sent.append(msg)

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
        asyncio.run(guarded(scope, receive, send))
        return sent[0]["status"]

    for path in ("/tokenize", "/detokenize", "/v1/embeddings", "/v1/score", "/v1/audio/transcriptions",
                 "/openapi.json", "/docs", "/nothing"):
        assert status(path, "GET" if path in ("/openapi.json", "/docs") else "POST") == 401, path
        assert status(path, key="key-a") == 200, path
    assert status("/tokenize", "OPTIONS") == 200, "CORS preflights carry no key"
    reached.clear()
    for path in (CHAT, COMPLETIONS, "/v1/models", "/v1/models/m"):  # their handlers check (and count) it
        assert status(path) == 200
    assert reached == [CHAT, COMPLETIONS, "/v1/models", "/v1/models/m"]


# -- the OpenAPI document -------------------------------------------------------------------------------------

def test_openapi_document_lists_our_routes_and_this_servers_n_limit() -> None:
    from dsserve.serving.ingress import openapi_spec

    spec = openapi_spec(max_n=4)
    assert set(spec["paths"]) == {"/v1/models", "/v1/models/{model}", CHAT, COMPLETIONS}
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        assert spec["components"]["schemas"][name]["properties"]["n"]["maximum"] == 4
    assert openapi_spec(max_n=4) == spec and openapi_spec(8) != spec  # a copy each time
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(spec)
    ops = [r.ok().label for r in schema.get_all_operations()]
    assert sorted(ops) == sorted(["GET /v1/models", "GET /v1/models/{model}", f"POST {CHAT}", f"POST {COMPLETIONS}"])


def test_openapi_file_ships_in_the_package() -> None:
    import tomllib

    from tests.conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "openapi.yaml" in data["tool"]["setuptools"]["package-data"]["dsserve"]


def test_an_engine_that_died_is_a_503_with_retry_after_not_a_500() -> None:
    """A dead engine replica (vLLM's EngineDeadError inside Ray's RayTaskError) is the server's state, not a bug."""
    from dsserve.serving.ingress import _engine_unavailable, _unavailable

    class EngineDeadError(Exception):
        pass

    class RayTaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("task failed")
            self.cause = cause

    assert _engine_unavailable(RayTaskError(EngineDeadError("EngineCore died")))
    assert not _engine_unavailable(RayTaskError(ValueError("a bug")))
    resp = _unavailable("its engine replica failed", 5)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
