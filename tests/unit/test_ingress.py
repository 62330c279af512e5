"""What ingress mode adds to the pipeline: vLLM's request models built from the body, and engine errors.

The pipeline's checks (keys, limits, JSON, model, n) are in tests/unit/test_pipeline.py; here the parts the
ingress uses after it, called directly: :func:`validate_request` (every way vLLM's request models fail on a
body is a 400 naming the field) and :func:`engine_error` (what the engine replica raises, as the client's
error, never with a traceback).
"""

from __future__ import annotations

from typing import Any

import pytest
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from dsserve.serving.body import validate_request
from dsserve.serving.errors import ClientError, InvalidRequest
from dsserve.serving.ingress import engine_error, engine_unavailable

MSG = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def invalid(cls: Any, body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_request(cls, body)
    err = info.value
    assert err.status == 400 and err.code == "invalid_parameter"
    return err


def test_a_valid_body_becomes_vllms_request_model() -> None:
    body = validate_request(ChatCompletionRequest, MSG)
    assert body.messages[0]["content"] == "hi" and body.stream is False


def test_null_content_names_the_field_not_pydantic_types() -> None:
    err = invalid(ChatCompletionRequest, {**MSG, "messages": [{"role": "user", "content": None}]})
    assert err.param == "messages.0.content", err.message
    assert "Param" not in err.message and ".str" not in err.message, err.message


def test_moderately_nested_extra_field_is_a_field_error() -> None:
    assert invalid(ChatCompletionRequest, {**MSG, "user": [[[["x"]]]]}).param == "user"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "m", "messages": True, "max_tokens": 1}, "messages"),
        ({"model": "m", "messages": None, "max_tokens": 1}, "messages"),
        ({"model": "m", "stream_options": -0.5, "temperature": 0.5}, "stream_options"),
        ({**MSG, "structured_outputs": 5}, "structured_outputs"),
        ({"stream_options": False, "messages": True, "model": "m", "max_tokens": 1, "top_p": True}, "stream_options"),
    ],
    ids=["messages-true", "messages-null", "no-messages-odd-options", "structured-outputs-int", "fuzzer-found"],
)
def test_wrong_types_that_crash_vllm_validators_are_400_naming_a_field(body: dict, param: str) -> None:
    """Found by the fuzzer: vLLM's "before" validators iterate ``messages`` and call ``.get`` on nested
    options without checking types, so a wrong type raised TypeError/AttributeError: upstream answered 500."""
    err = invalid(ChatCompletionRequest, body)
    assert err.param == param, err.message
    assert "iterable" not in err.message and "attribute" not in err.message, err.message


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", 1.5),
        ("max_tokens", "ten"),
        ("temperature", "hot"),
        ("n", 2.5),
        ("seed", 2**70),
        ("stop", ["a"] * 5),
    ],
)
def test_wrong_types_and_ranges_pydantic_catches_are_400_with_the_field(field: str, value: Any) -> None:
    err = invalid(ChatCompletionRequest, {**MSG, field: value})
    assert err.param == field or (err.param or "").startswith(field + "."), err.message


@pytest.mark.parametrize(
    "body,param",
    [
        ({**MSG, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**MSG, "cache_salt": ""}, "cache_salt"),
    ],
    ids=["stream-options-without-stream", "empty-cache-salt"],
)
def test_vllm_validators_raising_vllm_errors_are_400_with_the_field(body: dict, param: str) -> None:
    """vLLM's request models raise VLLMValidationError (not a ValueError) from validators: upstream's
    middleware turned it into a 400 with its wrapped "Message: ... Internal exception: ..." text."""
    err = invalid(ChatCompletionRequest, body)
    assert err.param == param and "Internal exception" not in err.message


def test_an_empty_completions_prompt_names_prompt() -> None:
    assert invalid(CompletionRequest, {"model": "m", "prompt": ""}).param == "prompt"


# -- engine errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message,param",
    [
        ("max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "max_tokens"),
        ("temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)", "temperature"),
        ("n must be at least 1, got 0.", "n"),
        ("presence_penalty must be in [-2, 2], got 5.0.", "presence_penalty"),
        ("top_k must be 0 (disable), or at least 1, got -5.", "top_k"),
        ("Cannot apply chat template to an empty conversation.", None),
        ("nothing must be named here", None),  # not a request field
    ],
)
def test_engine_reported_range_errors_name_the_field(message: str, param: str | None) -> None:
    """Range checks vLLM makes (max_tokens, temperature, n, ...) come back as OpenAIHTTPException."""
    from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException

    wrapped = f"Message: {message} (Request ID: abc), Internal exception: x, original exception: y"
    err = engine_error(
        OpenAIHTTPException(message=wrapped, status_code=400, type="BadRequestError"),
        ChatCompletionRequest.model_fields,
    )
    assert err.status == 400 and err.message == message and err.param == param


def test_client_errors_raised_in_the_engine_replica_are_400_with_the_field() -> None:
    """Checks the replica raises arrive as a RayTaskError carrying the cause."""
    from ray.exceptions import RayTaskError
    from vllm.exceptions import VLLMValidationError

    cause = VLLMValidationError("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")
    raised = RayTaskError("completions", 'Traceback (most recent call last):\n  File "/secret/path.py"', cause)
    err = engine_error(raised.as_instanceof_cause(), CompletionRequest.model_fields)
    assert err.status == 400 and err.param == "prompt" and err.message.startswith("Either prompt or prompt_embeds")
    assert "Traceback" not in err.message and "/secret" not in err.message


def test_an_internal_failure_is_a_bare_500_without_the_traceback() -> None:
    from ray.exceptions import RayTaskError

    raised = RayTaskError(
        "completions",
        'Traceback:\n  File "/work/x.py", pid=123, ip=10.0.0.1',
        TypeError("TextEncodeInput must be Union[...]"),
    )
    err = engine_error(raised.as_instanceof_cause(), CompletionRequest.model_fields)
    assert err.status == 500 and err.code == "internal_error"
    for leak in ("Traceback", "/work/", "pid=", "TextEncodeInput", "10.0.0.1"):
        assert leak not in err.message


def test_an_engine_that_died_is_a_503_with_retry_after_not_a_500() -> None:
    """A dead engine replica (vLLM's EngineDeadError inside Ray's RayTaskError) is the server's state, not a bug."""

    class EngineDeadError(Exception):
        pass

    class RayTaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("task failed")
            self.cause = cause

    assert engine_unavailable(RayTaskError(EngineDeadError("EngineCore died")))
    assert not engine_unavailable(RayTaskError(ValueError("a bug")))
    err = engine_error(RayTaskError(EngineDeadError("EngineCore died")), ())
    assert isinstance(err, ClientError) and err.status == 503 and err.headers["Retry-After"] == "5"
    assert err.code == "engine_unavailable"


# -- the OpenAPI document -----------------------------------------------------------------------------------------


def test_openapi_document_lists_our_routes_and_this_servers_n_limit() -> None:
    from dsserve.serving.openapi import openapi_spec

    spec = openapi_spec(max_n=4)
    assert {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/completions"} <= set(spec["paths"])
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        assert spec["components"]["schemas"][name]["properties"]["n"]["maximum"] == 4
    assert openapi_spec(max_n=4) == spec and openapi_spec(8) != spec  # a copy each time
    limited = openapi_spec(4, max_prompts=3, max_tokens=100, max_messages=7)["components"]["schemas"]
    assert limited["ChatCompletionRequest"]["properties"]["max_completion_tokens"]["maximum"] == 100
    assert limited["CompletionRequest"]["properties"]["max_tokens"]["maximum"] == 100
    assert limited["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] == 7
    assert [o.get("maxItems") for o in limited["CompletionRequest"]["properties"]["prompt"]["oneOf"]] == [None, 3, None]
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(spec)
    ops = sorted(r.ok().label for r in schema.get_all_operations())
    assert ops == sorted(f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item)


def test_every_route_of_the_route_table_is_in_the_openapi_document() -> None:
    from dsserve.serving.openapi import openapi_spec
    from dsserve.serving.routes import ROUTES

    spec = openapi_spec()
    for path, route in ROUTES.items():
        assert path in spec["paths"], path
        assert route.method.lower() in spec["paths"][path], path


def test_openapi_file_ships_in_the_package() -> None:
    import tomllib

    from tests.conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "openapi.yaml" in data["tool"]["setuptools"]["package-data"]["dsserve"]
