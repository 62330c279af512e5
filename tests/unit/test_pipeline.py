"""The request pipeline, built from its parts and run over raw ASGI, in front of a stand-in engine app.

The stand-in plays vLLM's OpenAI app (what the pipeline wraps in direct mode): it builds vLLM's own
request models from the body, answers JSON or server-sent events, and fails the ways vLLM's app does
(a vLLM-shaped 400, a 500 whose message carries a traceback, an exception). Everything of dsserve's is
real: the pipeline, its key store, rate limiter, admission gate, body checks, error mapper and metrics
(recorded into a dict instead of Ray's metrics agent).

What a body may hold (the fuzzer's contract, tests/e2e/test_fuzz.py), case by case: strict JSON of
well-formed Unicode nested at most 64 deep, one to ``api.max_messages`` chat messages, at most
``api.max_prompts`` prompts and ``api.max_n`` sequences (prompts x ``n``), ``max_tokens`` up to
``api.max_tokens``, a model name of at most 256 characters; any other text passes to the engine
unchanged; nothing a client sends produces a 5xx or a
traceback. Plus keys, 401, per-key 429 with Retry-After on every route, admission by weight, and the
limits split across replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dsserve.serving.auth import KeyStore
from dsserve.serving.metrics import MetricSpec, RequestMetrics
from dsserve.serving.pipeline import PipelineSettings, RequestPipeline
from dsserve.serving.shares import LiveReplicas

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MSG = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


# -- the stand-in engine app and the model directory -------------------------------------------------------------


class EngineApp:
    """vLLM's OpenAI app, as far as the pipeline can tell. ``mode`` picks the answer to generate requests."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.mode = "ok"
        self.tokens = 3
        self.gate: asyncio.Event | None = None  # a stream waits on it after its first token
        self.app = Starlette(
            routes=[
                Route(CHAT, self.generate, methods=["POST"]),
                Route(COMPLETIONS, self.generate, methods=["POST"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

    async def generate(self, request: Request) -> Response:
        from pydantic import ValidationError
        from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

        cls = ChatCompletionRequest if request.url.path == CHAT else CompletionRequest
        raw = await request.body()
        try:
            body = cls.model_validate_json(raw)
        except ValidationError as exc:  # vLLM's own 400
            e = exc.errors(include_url=False)[0]
            return JSONResponse(
                {
                    "error": {
                        "message": f"1 validation error: {e['msg']}",
                        "type": "BadRequestError",
                        "param": None,
                        "code": 400,
                    }
                },
                status_code=400,
            )
        except Exception as exc:  # a validator crashed: vLLM answers 500 with the exception text
            return JSONResponse(
                {
                    "error": {
                        "message": f'Traceback (most recent call last):\n  File "/opt/vllm/x.py"'
                        f", line 1\n{type(exc).__name__}: {exc}",
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                },
                status_code=500,
            )
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "hang":  # accepted, and never a first byte
            await asyncio.Event().wait()
        if self.mode == "raise":
            raise RuntimeError("engine bug at /opt/vllm/engine.py pid=42")
        if self.mode == "500":
            return JSONResponse(
                {
                    "error": {
                        "message": 'EngineCore died; Traceback ... File "/opt/x.py"',
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                },
                status_code=500,
            )
        if self.mode == "400":
            return JSONResponse(
                {
                    "error": {
                        "message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                        "type": "BadRequestError",
                        "param": None,
                        "code": 400,
                    }
                },
                status_code=400,
            )
        usage = {"prompt_tokens": 5, "completion_tokens": self.tokens, "total_tokens": 5 + self.tokens}
        if not getattr(body, "stream", False):
            return JSONResponse({"id": "x", "choices": [{"message": {"content": "abc"}}], "usage": usage})

        async def events() -> Any:
            yield 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
            for i in range(self.tokens):
                yield 'data: {"choices":[{"delta":{"content":"t%d"}}],"usage":null}\n\n' % i
                if i == 0 and self.gate is not None:
                    await self.gate.wait()
            yield f'data: {{"choices":[],"usage":{json.dumps(usage)}}}\n\n'
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def tokenize(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        return JSONResponse({"count": 2, "tokens": [1, 2]})

    async def metrics(self, request: Request) -> Response:
        return Response("vllm:secret_metric 1\n")


class Models:
    def __init__(self, ids: tuple[str, ...] = ("m",)) -> None:
        self.ids = ids

    def knows(self, model: str) -> bool:
        return model in self.ids

    def served_ids(self) -> list[str]:
        return list(self.ids)

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": i, "object": "model"} for i in self.ids]}

    async def model_card(self, model: str) -> dict[str, Any] | None:
        return {"id": model, "object": "model"} if model in self.ids else None


class Recorder:
    def __init__(self, spec: MetricSpec, sink: dict[str, list]) -> None:
        self.spec, self.sink = spec, sink

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert set(tags or {}) == set(self.spec.tags), (self.spec.name, tags)
        self.sink[self.spec.name].append((value, dict(tags or {})))

    observe = inc

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.sink[self.spec.name].append((value, dict(tags or {})))


class Stack:
    """A pipeline in front of the stand-in, and what it recorded."""

    def __init__(
        self,
        *,
        keys: KeyStore | None = None,
        replicas: int = 1,
        clock: Any = None,
        engine_down: Any = None,
        **settings: Any,
    ) -> None:
        self.engine = EngineApp()
        self.sink: dict[str, list] = defaultdict(list)
        self.settings = PipelineSettings(**{"max_body_bytes": 64 * 1024, **settings})
        models = Models()
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        if engine_down is not None:
            extra["engine_down"] = engine_down
        self.pipeline = RequestPipeline(
            self.engine.app,
            self.settings,
            models,
            replicas=LiveReplicas(replicas),
            keys=keys,
            metrics=RequestMetrics(
                models.served_ids(),
                factory=lambda spec: Recorder(spec, self.sink),
                inflight=lambda: self.pipeline.gate.inflight,
                limit=lambda: self.pipeline.gate.limit,
            ),
            openapi={"openapi": "3.0.3"},
            **extra,
        )

    async def call(
        self,
        path: str,
        body: Any = None,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        chunks: list[bytes] | None = None,
        disconnect_after: int | None = None,
    ) -> tuple[int, dict, bytes]:
        """One request over raw ASGI: (status, headers, body). ``disconnect_after`` body messages, the client leaves."""
        raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        parts = chunks if chunks is not None else [raw]
        hdrs = [(b"content-type", b"application/json")]
        if chunks is None:
            hdrs.append((b"content-length", str(len(raw)).encode()))
        hdrs += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "query_string": b"",
            "scheme": "http",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 1),
            "headers": hdrs,
            "http_version": "1.1",
            "asgi": {"version": "3.0"},
        }
        queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        gone = asyncio.Event()
        sent: list[dict] = []

        async def receive() -> dict:
            if queue:
                return queue.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict) -> None:
            if gone.is_set():
                return  # as uvicorn does once the client is gone
            sent.append(msg)
            bodies_sent = sum(m["type"] == "http.response.body" for m in sent)
            if disconnect_after is not None and bodies_sent >= disconnect_after:
                gone.set()
            await asyncio.sleep(0)  # a socket write lets other tasks run

        await self.pipeline(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start.get("headers", [])}, out

    def run(self, *a: Any, **kw: Any) -> tuple[int, dict, bytes]:
        return asyncio.run(self.call(*a, **kw))

    def statuses(self) -> list[str]:
        return [t["status"] for _, t in self.sink["dsserve_requests"]]

    def reasons(self) -> list[tuple[str, str]]:
        return [(t["route"], t["reason"]) for _, t in self.sink["dsserve_rejected_requests"]]


def error_of(result: tuple[int, dict, bytes], status: int) -> dict[str, Any]:
    got, _, body = result
    assert got == status, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    for leak in ("Traceback", "/opt/", "pid=", 'File "'):
        assert leak not in err["message"], err
    return err


def raw_chat(content_json: str) -> bytes:
    """A chat body whose user content is the given JSON string literal, escapes kept as sent."""
    return ('{"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": %s}]}' % content_json).encode()


# -- answers that pass ----------------------------------------------------------------------------------------------


def test_a_chat_reaches_the_engine_and_is_recorded() -> None:
    s = Stack()
    status, headers, body = s.run(CHAT, MSG)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 3
    assert len(s.engine.bodies) == 1 and s.pipeline.gate.inflight == 0
    assert s.statuses() == ["200"]
    assert [t for _, t in s.sink["dsserve_output_tokens"]] == [{"model_name": "m", "route": CHAT}]


def test_a_stream_records_ttft_itl_and_usage_and_holds_its_slot_until_the_end() -> None:
    s = Stack(max_inflight=1)
    s.engine.tokens = 4

    async def go() -> None:
        s.engine.gate = asyncio.Event()
        first = asyncio.ensure_future(s.call(CHAT, {**MSG, "stream": True, "stream_options": {"include_usage": True}}))
        while not s.engine.bodies:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert s.pipeline.gate.inflight == 1
        status, headers, _ = await s.call(CHAT, MSG)
        assert status == 503 and headers["retry-after"] == "1"
        s.engine.gate.set()
        status, _, body = await first
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")

    asyncio.run(go())
    assert s.pipeline.gate.inflight == 0
    assert s.statuses() == ["503", "200"] and s.reasons() == [(CHAT, "overloaded")]
    assert len(s.sink["dsserve_time_to_first_token_seconds"]) == 1
    assert len(s.sink["dsserve_inter_token_latency_seconds"]) == 1
    assert [v for v, _ in s.sink["dsserve_output_tokens"]] == [4]
    assert [v for v, _ in s.sink["dsserve_prompt_tokens"]] == [5]


def test_a_client_leaving_mid_stream_frees_the_slot_and_is_499() -> None:
    s = Stack(max_inflight=1)
    s.engine.tokens = 50
    status, _, _ = s.run(CHAT, {**MSG, "stream": True}, disconnect_after=2)
    assert status == 200 and s.pipeline.gate.inflight == 0
    assert s.statuses() == ["499"]
    assert s.run(CHAT, MSG)[0] == 200


@pytest.mark.parametrize(
    "content_json,expected",
    [
        ('"\\ud83d\\ude00 pair"', "\U0001f600 pair"),  # a surrogate *pair* is one astral character: fine
        ('""', ""),
        ('"a\\u0000b\\u0001\\u001b[31m\\u007f"', "a\x00b\x01\x1b[31m\x7f"),  # control characters are text
        (
            '"\\u202eevil\\u202c \\ufeff \\u200d \\u0301\\u0301 \\ufffe \\uffff"',
            "\u202eevil\u202c \ufeff \u200d \u0301\u0301 \ufffe \uffff",
        ),  # bidi, BOM, ZWJ, combining, nonchars
        (json.dumps("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية"), "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文 العربية"),
        ("[]", []),  # no content parts: an empty turn
    ],
    ids=["surrogate-pair", "empty", "control", "bidi-bom-zwj-combining", "scripts", "no-parts"],
)
def test_odd_but_valid_text_reaches_the_engine_unchanged(content_json: str, expected: Any) -> None:
    s = Stack()
    assert s.run(CHAT, raw_chat(content_json))[0] == 200
    (body,) = s.engine.bodies
    got = body.messages[0]["content"]
    assert (list(got) if isinstance(expected, list) else got) == expected


# -- bodies the pipeline refuses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,param",
    [
        (raw_chat('"\\ud800"'), "messages.0.content"),
        (raw_chat('"ok \\udfff tail"'), "messages.0.content"),
        (raw_chat('[{"type": "text", "text": "\\uDBFF"}]'), "messages.0.content.0.text"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "\\ud800": 1}', "\\ud800"),
    ],
    ids=["lone-high", "lone-low", "in-a-part", "in-a-key"],
)
def test_lone_surrogates_are_400_naming_the_field(raw: bytes, param: str) -> None:
    s = Stack()
    err = error_of(s.run(CHAT, raw), 400)
    assert err["code"] == "invalid_parameter" and "surrogate" in err["message"]
    if param.startswith("messages"):
        assert err["param"] == param
    assert not s.engine.bodies and s.pipeline.gate.inflight == 0


def test_lone_surrogate_in_a_completions_prompt() -> None:
    s = Stack()
    raw = b'{"model": "m", "prompt": ["fine", "bad \\ud834"], "max_tokens": 2}'
    assert error_of(s.run(COMPLETIONS, raw), 400)["param"] == "prompt.1"


def test_raw_invalid_utf8_is_400() -> None:
    err = error_of(Stack().run(CHAT, b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}'), 400)
    assert err["code"] == "invalid_json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    raw = ('{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": %s}' % constant).encode()
    err = error_of(Stack().run(CHAT, raw), 400)
    assert err["code"] == "invalid_json" and constant.lstrip("-") in err["message"]


@pytest.mark.parametrize("where", ["top", "field"])
def test_deeply_nested_json_is_400_not_500(where: str) -> None:
    deep = "[" * 5_000 + "]" * 5_000  # past Python's recursion limit, under max_body_bytes
    raw = deep if where == "top" else '{"model": "m", "messages": [], "user": %s}' % deep
    assert "nested too deeply" in error_of(Stack().run(CHAT, raw.encode()), 400)["message"]


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'"text"'], ids=["empty", "array", "string"])
def test_a_body_that_is_not_an_object_is_400(body: bytes) -> None:
    assert error_of(Stack().run(CHAT, body), 400)["code"] in ("invalid_body", "invalid_json")


def test_empty_messages_is_400_naming_messages() -> None:
    s = Stack()
    err = error_of(s.run(CHAT, {**MSG, "messages": []}), 400)
    assert err["param"] == "messages" and "at least one message" in err["message"] and not s.engine.bodies


@pytest.mark.parametrize("n,status", [(16, 200), (17, 400), (10**12, 400)])
def test_n_is_bounded_by_max_n(n: int, status: int) -> None:
    s = Stack(max_n=16, max_inflight=1000)
    result = s.run(CHAT, {**MSG, "n": n, "temperature": 1.0})
    assert result[0] == status, result
    if status == 400:
        err = error_of(result, 400)
        assert err["param"] == "n" and "api.max_n" in err["message"] and str(n) in err["message"]


def test_a_batch_of_prompts_is_bounded_and_weighs_prompts_times_n() -> None:
    s = Stack(max_prompts=4, max_n=8, max_inflight=8)
    err = error_of(s.run(COMPLETIONS, {"model": "m", "prompt": ["a"] * 5}), 400)
    assert err["param"] == "prompt" and "api.max_prompts" in err["message"]
    assert s.run(COMPLETIONS, {"model": "m", "prompt": ["a"] * 4, "n": 2, "max_tokens": 1})[0] == 200
    assert s.run(COMPLETIONS, {"model": "m", "prompt": [1, 2, 3], "n": 8, "max_tokens": 1})[0] == 200, (
        "a list of token ids is one prompt"
    )
    assert s.pipeline.gate.inflight == 0


@pytest.mark.parametrize("prompts,n,param", [(64, 16, "n"), (2, 9, "n"), (17, 1, "prompt")])
def test_sequences_past_max_n_are_400_naming_prompt_or_n(prompts: int, n: int, param: str) -> None:
    """Limits count sequences: 64 prompts x n=16 under max_n 16 is 1,024 sequences, refused before the engine."""
    s = Stack(max_n=16, max_prompts=64, max_inflight=10_000)
    err = error_of(s.run(COMPLETIONS, {"model": "m", "prompt": ["a"] * prompts, "n": n, "max_tokens": 1}), 400)
    assert err["param"] == param and "api.max_n" in err["message"] and str(prompts * n) in err["message"], err
    assert not s.engine.bodies and s.pipeline.gate.inflight == 0
    assert s.run(COMPLETIONS, {"model": "m", "prompt": ["a"] * 2, "n": 8, "max_tokens": 1})[0] == 200


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_past_api_max_tokens_is_400(field: str) -> None:
    s = Stack(max_tokens=100)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: 101}
    err = error_of(s.run(CHAT, body), 400)
    assert err["param"] == field and "api.max_tokens" in err["message"] and not s.engine.bodies
    assert s.run(CHAT, {**body, field: 100})[0] == 200
    assert Stack(max_tokens=None).run(CHAT, {**body, field: 10**6})[0] == 200, "null: no cap of the pipeline's"


def test_too_many_chat_messages_is_400() -> None:
    s = Stack(max_messages=3)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}] * 4, "max_tokens": 1}
    err = error_of(s.run(CHAT, body), 400)
    assert err["param"] == "messages" and "api.max_messages" in err["message"] and not s.engine.bodies
    assert s.run(CHAT, {**body, "messages": body["messages"][:3]})[0] == 200


@pytest.mark.parametrize("depth,status", [(62, 200), (63, 400)])
def test_nesting_is_capped_below_any_recursion_limit(depth: int, status: int) -> None:
    """The body object and ``vllm_xargs`` are two levels: 62 more is 64, the cap; 65 levels is far under
    Python's recursion limit, so the cap itself (not a RecursionError) refuses it."""
    nested = "[" * depth + "]" * depth
    raw = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "user": "x", '
        '"vllm_xargs": {"a": %s}}' % nested
    ).encode()
    result = Stack().run(CHAT, raw)
    if status == 400:
        err = error_of(result, 400)
        assert err["code"] == "invalid_json" and "more than 64 deep" in err["message"]
    else:
        assert result[0] != 500 and "deep" not in result[2].decode()


def test_the_surrogate_walk_is_iterative() -> None:
    """A lone surrogate 3,000 levels down is found without recursion (Python 3.12's json parses that deep)."""
    from dsserve.serving.body import _first_bad_string

    data: Any = "\ud800"
    for _ in range(3_000):
        data = [data]
    assert _first_bad_string({"messages": data}) == "messages" + ".0" * 3_000
    assert _first_bad_string({"a": ["ok", {"b": "x", "c\udc00": 1}]}) == "a.1.c\udc00"


def test_a_long_model_name_is_400_and_the_404_echo_is_truncated() -> None:
    s = Stack()
    err = error_of(s.run(CHAT, {**MSG, "model": "x" * 257}), 400)
    assert err["param"] == "model" and "256 characters" in err["message"] and "xxxxx" * 20 not in err["message"]
    err = error_of(s.run(CHAT, {**MSG, "model": "y" * 200}), 404)
    assert "200 characters" in err["message"] and "y" * 81 not in err["message"] and len(err["message"]) < 300
    result = s.run("/v1/models/" + "z" * 5000, method="GET")
    assert result[0] == 404 and len(result[2]) < 600
    assert not s.engine.bodies


def test_the_engines_own_400_keeps_its_message_and_names_the_field() -> None:
    s = Stack()
    s.engine.mode = "400"
    err = error_of(s.run(CHAT, MSG), 400)
    assert err["type"] == "invalid_request_error" and err["param"] == "max_tokens"
    assert err["message"].startswith("max_tokens must be at least 1")


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "m", "messages": True, "max_tokens": 1}, "messages"),
        ({"model": "m", "messages": None, "max_tokens": 1}, "messages"),
        ({**MSG, "structured_outputs": 5}, "structured_outputs"),
        ({"stream_options": False, "messages": True, "model": "m", "max_tokens": 1, "top_p": True}, "stream_options"),
    ],
    ids=["messages-true", "messages-null", "structured-outputs-int", "fuzzer-found"],
)
def test_a_body_the_engine_app_crashes_on_is_400_naming_the_field(body: dict, param: str) -> None:
    """vLLM's "before" validators iterate ``messages`` and call ``.get`` on nested options without checking
    types; its app answers 500 with the exception text. The pipeline turns that into the 400 naming the field."""
    err = error_of(Stack().run(CHAT, body), 400)
    assert err["param"] == param and err["code"] == "invalid_parameter", err
    assert "iterable" not in err["message"] and "attribute" not in err["message"], err


@pytest.mark.parametrize("mode", ["500", "raise"])
def test_a_server_fault_is_a_bare_500_and_the_next_request_is_served(mode: str, caplog: Any) -> None:
    s = Stack()
    s.engine.mode = mode
    err = error_of(s.run(CHAT, MSG), 500)
    assert err["type"] == "server_error" and "EngineCore" not in err["message"]
    assert s.statuses() == ["500"] and s.pipeline.gate.inflight == 0
    s.engine.mode = "ok"
    assert s.run(CHAT, MSG)[0] == 200


def test_a_dead_engine_is_503_with_retry_after_until_the_replica_is_replaced() -> None:
    """Direct mode: the replica's engine died (vLLM's EngineDeadError answers 500); Serve will replace the replica."""
    bodies: list[Any] = []
    s = Stack(engine_down=lambda: len(bodies) >= 2)  # the engine dies while serving the second request
    bodies = s.engine.bodies
    assert s.run(CHAT, MSG)[0] == 200
    s.engine.mode = "500"
    result = s.run(CHAT, MSG)  # the app's 500 for it becomes a 503
    err = error_of(result, 503)
    assert err["code"] == "engine_unavailable" and result[1]["retry-after"] == "5"
    result = s.run(COMPLETIONS, {"model": "m", "prompt": "x"})  # and new requests are refused before the app
    assert error_of(result, 503)["code"] == "engine_unavailable" and len(s.engine.bodies) == 2
    assert s.run("/v1/models", method="GET")[0] == 200, "the model list still answers"
    assert s.reasons() == [(CHAT, "engine_unavailable"), (COMPLETIONS, "engine_unavailable")]


@pytest.mark.parametrize("path", [CHAT, "/tokenize"])
def test_an_unknown_model_is_404_before_the_engine(path: str) -> None:
    s = Stack()
    for model in ("gpt-4", "m:some-adapter", 7):
        err = error_of(s.run(path, {**MSG, "model": model}), 404)
        assert err["param"] == "model" and err["code"] == "model_not_found" and "m" in err["message"]
    assert not s.engine.bodies


def test_body_over_the_limit_is_413_declared_or_streamed() -> None:
    s = Stack(max_body_bytes=1024)
    big = {**MSG, "messages": [{"role": "user", "content": "x" * 2000}]}
    assert error_of(s.run(CHAT, big), 413)["code"] == "request_too_large"
    raw = json.dumps(big).encode()
    assert error_of(s.run(CHAT, chunks=[raw[:600], raw[600:]]), 413)["code"] == "request_too_large"
    assert s.reasons() == [(CHAT, "too_large")] * 2 and s.pipeline.gate.inflight == 0
    assert s.statuses() == ["413", "413"]


# -- routes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/nothing", 404),
        ("GET", "/metrics", 404),
        ("POST", "/v1/responses", 404),
        ("GET", "/docs", 404),
        ("GET", CHAT, 405),
        ("DELETE", "/v1/models", 405),
    ],
)
def test_paths_the_api_does_not_serve_are_openai_errors(method: str, path: str, status: int) -> None:
    result = Stack().run(path, method=method)
    error_of(result, status)
    assert b"secret_metric" not in result[2]
    if status == 405:
        assert result[1]["allow"] in ("POST", "GET")


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/score", "/v1/audio/transcriptions"])
def test_routes_of_other_model_kinds_are_404_saying_so(path: str) -> None:
    err = error_of(Stack().run(path, {"model": "m", "input": "x"}), 404)
    assert err["code"] == "unsupported_route" and "chat" in err["message"]


def test_models_card_and_openapi_are_answered_by_the_pipeline() -> None:
    s = Stack()
    assert json.loads(s.run("/v1/models", method="GET")[2])["data"][0]["id"] == "m"
    assert json.loads(s.run("/v1/models/m", method="GET")[2])["id"] == "m"
    assert error_of(s.run("/v1/models/zz", method="GET"), 404)["code"] == "model_not_found"
    assert json.loads(s.run("/openapi.json", method="GET")[2]) == {"openapi": "3.0.3"}


def test_tokenize_goes_through_with_the_same_checks() -> None:
    s = Stack()
    assert s.run("/tokenize", {"model": "m", "prompt": "hello"})[0] == 200
    assert error_of(s.run("/tokenize", b"not json"), 400)["code"] == "invalid_json"
    assert s.statuses() == ["200", "400"] and s.reasons() == [], "a client mistake is not an admission refusal"


# -- keys and rate limits, on every route ------------------------------------------------------------------------------


def _key_file(tmp_path: Path, *keys: str) -> Path:
    f = tmp_path / "api-keys"
    f.write_text("# test keys\n" + "\n".join(keys) + "\n")
    return f


ALL_ROUTES = [
    ("POST", CHAT),
    ("POST", COMPLETIONS),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/score"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/m"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/metrics"),
    ("GET", "/nothing"),
]


@pytest.mark.parametrize("method,path", ALL_ROUTES)
def test_every_route_needs_the_key(tmp_path: Path, method: str, path: str) -> None:
    s = Stack(keys=KeyStore(path=str(_key_file(tmp_path, "sk-file-key"))))
    for headers in ({}, {"Authorization": "Bearer sk-file-ke"}, {"Authorization": "sk-file-key"}):
        result = s.run(path, MSG if method == "POST" else None, method=method, headers=headers)
        err = error_of(result, 401)
        assert err["code"] == "invalid_api_key" and result[1]["www-authenticate"] == "Bearer"
        assert b"sk-file-key" not in result[2]
    ok = s.run(path, MSG if method == "POST" else None, method=method, headers={"Authorization": "Bearer sk-file-key"})
    assert ok[0] != 401
    assert "sk-file-key" not in json.dumps(s.sink)
    known = path not in ("/docs", "/metrics", "/nothing")
    assert (s.run(path, method="OPTIONS")[0] != 401) == known, "CORS preflights of served routes carry no key"


@pytest.mark.parametrize("path", [CHAT, "/tokenize", "/v1/models"])
def test_rate_limit_is_per_key_with_retry_after_on_every_route(path: str) -> None:
    now = [100.0]
    s = Stack(
        keys=KeyStore(env="KEYS", environ={"KEYS": "key-a,key-b"}),
        clock=lambda: now[0],
        rate_limit={"requests_per_second": 0.4, "burst": 2},
    )
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    method = "GET" if path == "/v1/models" else "POST"
    body = None if method == "GET" else MSG
    assert [s.run(path, body, method=method, headers=a)[0] for _ in range(2)] == [200, 200]
    limited = s.run(path, body, method=method, headers=a)
    err = error_of(limited, 429)
    assert err["type"] == "rate_limit_error" and limited[1]["retry-after"] == "3", "2.5 s to a token, rounded up"
    assert s.run(path, body, method=method, headers=b)[0] == 200, "another key has its own bucket"
    now[0] += 2.5
    assert s.run(path, body, method=method, headers=a)[0] == 200
    assert s.reasons() == [(path, "rate_limited")]


def test_a_batch_takes_as_many_tokens_as_sequences() -> None:
    now = [0.0]
    s = Stack(
        keys=KeyStore(env="KEYS", environ={"KEYS": "k"}),
        clock=lambda: now[0],
        rate_limit={"requests_per_second": 1, "burst": 4},
    )
    k = {"Authorization": "Bearer k"}
    assert s.run(COMPLETIONS, {"model": "m", "prompt": ["a", "b", "c"], "max_tokens": 1}, headers=k)[0] == 200
    assert error_of(s.run(CHAT, {**MSG, "n": 2}, headers=k), 429)["code"] == "rate_limit_exceeded"
    err = error_of(s.run(CHAT, {**MSG, "n": 5}, headers=k), 400)
    assert "burst" in err["message"]


def test_a_wrong_key_is_401_before_any_rate_limit() -> None:
    s = Stack(
        keys=KeyStore(env="KEYS", environ={"KEYS": "key-a"}), rate_limit={"requests_per_second": 0.001, "burst": 1}
    )
    for _ in range(3):
        error_of(s.run(CHAT, MSG, headers={"Authorization": "Bearer nope"}), 401)
    assert s.run(CHAT, MSG, headers={"Authorization": "Bearer key-a"})[0] == 200


def test_rotation_drops_removed_keys_buckets(tmp_path: Path) -> None:
    f = _key_file(tmp_path, "old", "stay")
    s = Stack(keys=KeyStore(path=str(f), check_interval_s=0.0), rate_limit={"requests_per_second": 1, "burst": 5})
    for key in ("old", "stay"):
        assert s.run(CHAT, MSG, headers={"Authorization": f"Bearer {key}"})[0] == 200
    assert len(s.pipeline.limiter) == 2
    f.write_text("stay\nnew-key\n")
    error_of(s.run(CHAT, MSG, headers={"Authorization": "Bearer old"}), 401)
    assert len(s.pipeline.limiter) == 1
    assert s.run(CHAT, MSG, headers={"Authorization": "Bearer new-key"})[0] == 200


# -- the deployment's limits, shared across replicas ----------------------------------------------------------


def test_each_replica_enforces_its_share_of_the_limits() -> None:
    s = Stack(
        replicas=4,
        max_inflight=10,
        rate_limit={"requests_per_second": 8, "burst": 6},
        keys=KeyStore(env="KEYS", environ={"KEYS": "k"}),
    )
    assert s.pipeline.gate.limit == 3  # ceil(10 / 4)
    assert s.pipeline.limiter is not None
    assert (s.pipeline.limiter.rate, s.pipeline.limiter.burst) == (2.0, 2)  # 8/4 per second, ceil(6/4)


def test_the_share_follows_the_live_replica_count() -> None:
    class Handle:  # Serve's handle as far as LiveReplicas reads it: the router's running-replica set
        def __init__(self) -> None:
            self.replicas = {1: "a", 2: "b"}
            outer = self

            class Inner:
                _request_router = None

                @property
                def _running_replicas(self) -> dict:
                    return outer.replicas

                def running_replicas_populated(self) -> bool:
                    return True

            self._router = type("R", (), {"_asyncio_router": Inner()})()

    now = [0.0]
    handle = Handle()
    live = LiveReplicas(4, handle, clock=lambda: now[0])
    assert live.count() == 2
    handle.replicas = {1: "a"}
    assert live.count() == 2, "read at most once a second"
    now[0] += 1.0
    assert live.count() == 1
    handle.replicas = {}
    now[0] += 1.0
    assert live.count() == 4, "none known running: the configured count"


def test_a_request_cancelled_while_its_body_arrives_gives_its_slot_back() -> None:
    """Serve cancels a request whose client left; a slot taken before the body was read must come back."""
    s = Stack(max_inflight=1)

    async def go() -> None:
        never = asyncio.Event()

        async def receive() -> dict:
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict) -> None:
            pass

        scope = {
            "type": "http",
            "method": "POST",
            "path": CHAT,
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        task = asyncio.ensure_future(s.pipeline(scope, receive, send))
        await asyncio.sleep(0.05)
        assert s.pipeline.gate.inflight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert s.pipeline.gate.inflight == 0
    assert s.run(CHAT, MSG)[0] == 200


def test_a_stream_that_never_starts_gives_its_slot_and_gauge_back_when_the_client_goes() -> None:
    """Serve cancels a request's task when its client disconnects; the slot (and the in-flight gauge read
    from it) must come back even though the app never sent a byte."""
    s = Stack(max_inflight=2)
    s.engine.mode = "hang"

    async def go() -> None:
        task = asyncio.ensure_future(s.call(CHAT, {**MSG, "stream": True}))
        while not s.engine.bodies:
            await asyncio.sleep(0.01)
        s.pipeline.metrics.refresh_gauges()
        assert s.pipeline.gate.inflight == 1 and s.sink["dsserve_inflight_requests"][-1][0] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    s.pipeline.metrics.refresh_gauges()
    assert s.pipeline.gate.inflight == 0 and s.sink["dsserve_inflight_requests"][-1][0] == 0


def test_headers_that_steer_the_engine_do_not_reach_it() -> None:
    s = Stack()
    headers = {
        "X-data-parallel-rank": "3",
        "X-Vllm-Priority": "-100",
        "endpoint-load-metrics-format": "text",
        "X-Request-Id": "abc",
    }
    assert s.run(CHAT, MSG, headers=headers)[0] == 200
    seen = {k.lower() for k in s.engine.headers[-1]}
    assert not seen & {"x-data-parallel-rank", "x-vllm-priority", "endpoint-load-metrics-format"}
    assert "x-request-id" in seen


def test_failed_keys_are_throttled_per_client_address() -> None:
    """60 failed keys from one address (as HAProxy appends it), then 429 for that address only, its keys
    unchecked, until the allowance refills at one a second; a client's own X-Forwarded-For entries do not count."""
    now = [0.0]
    good = "a-valid-key-0123456789"
    s = Stack(keys=KeyStore(env="KEYS", environ={"KEYS": good}), clock=lambda: now[0], trust_forwarded_for=True)
    bad = {"Authorization": "Bearer wrong-key", "X-Forwarded-For": "10.0.0.9"}
    statuses = [s.run("/v1/models", method="GET", headers=bad)[0] for _ in range(61)]
    assert statuses == [401] * 60 + [429]
    status, headers, body = s.run(CHAT, MSG, headers={"Authorization": f"Bearer {good}", "X-Forwarded-For": "10.0.0.9"})
    assert status == 429 and headers["retry-after"] == "1" and b"too_many_failed_keys" in body
    spoofed = {"Authorization": f"Bearer {good}", "X-Forwarded-For": "10.0.0.10, 10.0.0.9"}  # HAProxy's entry last
    assert s.run(CHAT, MSG, headers=spoofed)[0] == 429
    assert s.run(CHAT, MSG, headers={"Authorization": f"Bearer {good}", "X-Forwarded-For": "10.0.0.10"})[0] == 200
    now[0] += 1.0
    assert s.run(CHAT, MSG, headers={"Authorization": f"Bearer {good}", "X-Forwarded-For": "10.0.0.9"})[0] == 200
    assert s.pipeline.failed_keys is not None and len(s.pipeline.failed_keys) == 1
    untrusted = Stack(keys=KeyStore(env="KEYS", environ={"KEYS": good}))
    assert {untrusted.run("/v1/models", method="GET", headers=bad)[0] for _ in range(70)} == {401}


def test_the_failed_key_table_is_bounded_and_keeps_the_address_that_keeps_failing() -> None:
    """100 addresses at most; one that fails every 30 of 1,000 new addresses is never dropped (its bucket
    is never refilled by being forgotten), while the rest come and go."""
    from dsserve.serving.auth import RateLimiter

    table = RateLimiter(1.0, 1000, clock=lambda: 0.0, max_keys=100)
    charges = 0
    for i in range(1_000):
        table.check(f"10.0.{i // 256}.{i % 256}")
        if i % 30 == 0:
            table.check("10.9.9.9")
            charges += 1
    assert len(table) == 100 and table.check("10.0.0.0", take=False) == 0.0
    assert table.check("10.9.9.9", 1000 - charges, take=False) == 0.0
    assert table.check("10.9.9.9", 1000 - charges + 1, take=False) > 0, "forgotten and refilled"


def test_peeking_at_a_key_stores_nothing() -> None:
    """A request with a good key from a new address looks at its failed-key bucket: it must not take a slot."""
    from dsserve.serving.auth import RateLimiter

    table = RateLimiter(1.0, 60, clock=lambda: 0.0, max_keys=10)
    assert [table.check(f"a{i}", take=False) for i in range(50)] == [0.0] * 50 and len(table) == 0
    assert table.check("x", 61, take=False) == 1.0


def test_forwarded_for_is_trusted_only_behind_dsserve_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the launcher HAProxy appends no X-Forwarded-For, so a client's own would be read: a replica's
    settings then drop the trust (and the per-address throttle) whatever was rendered."""
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    assert PipelineSettings.from_dict({"trust_forwarded_for": True}).trust_forwarded_for is False
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/opt/dsserve/bin/dsserve-haproxy")
    assert PipelineSettings.from_dict({"trust_forwarded_for": True}).trust_forwarded_for is True
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/usr/sbin/haproxy")
    assert PipelineSettings.from_dict({"trust_forwarded_for": True}).trust_forwarded_for is False


def test_the_message_cap_holds_on_tokenize_too() -> None:
    s = Stack(max_messages=3)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}] * 4}
    err = error_of(s.run("/tokenize", body), 400)
    assert err["param"] == "messages" and "api.max_messages" in err["message"] and not s.engine.bodies
    assert s.run("/tokenize", {**body, "messages": body["messages"][:3]})[0] == 200


def test_the_tool_caps_hold_on_tokenize_too() -> None:
    """/tokenize's chat form renders its tools into the prompt: the same api.max_tools and schema caps."""
    s = Stack(max_tools=2, max_schema_bytes=1024)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool] * 3}
    err = error_of(s.run("/tokenize", body), 400)
    assert err["param"] == "tools" and "api.max_tools" in err["message"] and not s.engine.bodies
    big = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "description": "x" * 2000}}}
    err = error_of(s.run("/tokenize", {**body, "tools": [big]}), 400)
    assert err["param"] == "tools.0.function.parameters" and "api.max_schema_bytes" in err["message"]
    assert s.run("/tokenize", {**body, "tools": [tool] * 2})[0] == 200
