"""Reading and checking a request body: size cap, strict JSON, and the request's shape.

The pipeline reads the body itself so that every route gets the same answers whatever app is below
(vLLM's own in direct mode, ray.serve.llm's ingress otherwise), and parses it once, cheaply: ``json``
plus a few field lookups. Full validation of the request fields stays with vLLM's request models.

What a body may hold (the fuzzer's contract, tests/e2e/test_fuzz.py): strict JSON (no ``NaN``/
``Infinity``) of well-formed Unicode (a lone surrogate escape is 400), an object nested at most
:data:`MAX_NESTING` deep. On generate routes: one to ``api.max_messages`` chat messages; at most
``api.max_prompts`` prompts in a completions request; at most ``api.max_n`` *sequences* (prompts x
``n``); ``max_tokens``/``max_completion_tokens`` at most ``api.max_tokens``; tools and output grammars within
``api.max_tools``/``max_schema_bytes``/``max_schema_depth`` (grammar_limits.py). A request's *weight* is the
number of sequences it asks the engine for; the admission gate and the rate limiter charge it that many
slots and tokens, so a batch of 4 prompts with ``n: 4`` costs what 16 single requests cost, not one.

Every walk over a parsed body here is iterative: Python 3.12's ``json`` accepts nesting deeper than the
interpreter's recursion limit, so a recursive walk would fail (500) on a body the parser took.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from dsserve.serving.errors import BodyTooLarge, InvalidRequest
from dsserve.serving.grammar_limits import check_grammars, nests_deeper_than

__all__ = [
    "MAX_NESTING",
    "RequestShape",
    "ShapeLimits",
    "check_messages",
    "diagnose",
    "locate_bad_field",
    "parse_json",
    "read_body",
    "request_model",
    "request_shape",
    "validate_request",
    "validation_message",
]

Receive = Callable[[], Awaitable[dict[str, Any]]]

# a \uD800-\uDFFF escape: JSON can spell a lone surrogate that way, and Python decodes it
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_body(receive: Receive, declared_length: int | None, limit: int) -> bytes:
    """The whole body, refusing (413) past ``limit`` bytes before reading it when the length is declared."""
    if declared_length is not None and declared_length > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the client went away while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON numbers are finite)")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_bad_string(data: Any) -> str | None:
    """The path (``messages.0.content``) of the first key or string holding a lone UTF-16 surrogate."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if not _is_unicode(node):
                return path or "(body)"
            continue
        items: Any = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        children = []
        for k, v in items:
            here = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and not _is_unicode(k):
                return here
            children.append((here, v))
        stack.extend(reversed(children))  # depth first, in document order
    return None


#: The deepest nesting of arrays and objects a body may have (an object at the top is depth 1). Chat
#: bodies need 4-5 levels and tool schemas a few more; vLLM's own validators and pydantic recurse.
MAX_NESTING = 64


def parse_json(raw: bytes, *, what: str = "`model` and `messages` (chat) or `prompt` (completions)") -> dict[str, Any]:
    """The body as a JSON object, or InvalidRequest saying what is wrong with it."""
    if not raw:
        raise InvalidRequest(f"The request body is empty; send a JSON object with {what}.", code="invalid_body")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc.__class__.__name__}: {exc}); "
            "send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    except RecursionError:
        raise InvalidRequest(
            "The request body is not valid JSON here: it is nested too deeply.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The request body must be a JSON object, got {type(data).__name__}.", code="invalid_body")
    # fewer brackets than the limit cannot nest past it: the walk runs only for bodies with many (C-speed count)
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and nests_deeper_than(data, MAX_NESTING):
        raise InvalidRequest(
            f"Invalid request: the body nests arrays/objects more than {MAX_NESTING} deep; flatten it.",
            code="invalid_json",
        )
    if _SURROGATE_ESCAPE.search(raw):
        bad = _first_bad_string(data)
        if bad is not None:
            raise InvalidRequest(
                f"Invalid request: {bad}: holds a lone UTF-16 surrogate escape (\\ud800-\\udfff "
                "without its pair), which is not Unicode text; send well-formed UTF-8.",
                param=bad,
            )
    return data


class RequestShape:
    """What the pipeline needs to know of a generate request before the engine sees it."""

    __slots__ = ("model", "weight", "stream")

    def __init__(self, model: str | None, weight: int, stream: bool) -> None:
        self.model, self.weight, self.stream = model, weight, stream


def _prompt_count(data: dict[str, Any]) -> int:
    prompt = data.get("prompt")
    count = 1
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        count = len(prompt)  # a list of strings or of token-id lists; a list of ints is one prompt
    embeds = data.get("prompt_embeds")
    if isinstance(embeds, list):
        count = max(count, len(embeds)) if prompt is not None else len(embeds)
    return max(1, count)


class ShapeLimits:
    """The ``api.*`` caps a generate request's shape is checked against (grammars: grammar_limits.py)."""

    __slots__ = (
        "max_n",
        "max_prompts",
        "max_tokens",
        "max_messages",
        "max_tools",
        "max_schema_bytes",
        "max_schema_depth",
    )

    def __init__(
        self,
        *,
        max_n: int,
        max_prompts: int,
        max_tokens: int | None,
        max_messages: int,
        max_tools: int,
        max_schema_bytes: int,
        max_schema_depth: int,
    ) -> None:
        self.max_n, self.max_prompts, self.max_tokens, self.max_messages = max_n, max_prompts, max_tokens, max_messages
        self.max_tools, self.max_schema_bytes, self.max_schema_depth = max_tools, max_schema_bytes, max_schema_depth


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def check_messages(data: dict[str, Any], limits: ShapeLimits) -> None:
    """400 past ``api.max_messages`` chat messages (chat completions, and /tokenize's chat form)."""
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequest(
            f"Invalid request: messages: at most {limits.max_messages} messages per request "
            f"(api.max_messages), got {len(messages)}; shorten the conversation.",
            param="messages",
        )


def request_shape(data: dict[str, Any], *, chat: bool, limits: ShapeLimits) -> RequestShape:
    """The model, weight (sequences asked for) and streaming of a generate request; 400 past the limits.

    Fields of the wrong type are left to vLLM's request model, which names them (only values this
    function can read are checked here).
    """
    model = data.get("model")
    if chat:
        if data.get("messages") == []:
            raise InvalidRequest("Invalid request: messages: send at least one message.", param="messages")
        check_messages(data, limits)
        prompts = 1
    else:
        prompts = _prompt_count(data)
        if prompts > limits.max_prompts:
            raise InvalidRequest(
                f"Invalid request: prompt: at most {limits.max_prompts} prompts per request "
                f"(api.max_prompts), got {prompts}; split the batch.",
                param="prompt",
            )
    n = _positive_int(data.get("n")) or 1
    if prompts * n > limits.max_n:
        if prompts == 1:
            raise InvalidRequest(
                f"Invalid request: n: at most {limits.max_n} choices per request (api.max_n), got {n}.", param="n"
            )
        raise InvalidRequest(
            f"Invalid request: prompt, n: {prompts} prompts x n={n} ask for {prompts * n} "
            f"sequences, more than one request may (api.max_n: {limits.max_n}); lower n or split "
            "the prompts.",
            param="n" if n > 1 else "prompt",
        )
    if limits.max_tokens is not None:
        for field in ("max_tokens", "max_completion_tokens"):
            asked = _positive_int(data.get(field))
            if asked is not None and asked > limits.max_tokens:
                raise InvalidRequest(
                    f"Invalid request: {field}: at most {limits.max_tokens} tokens per completion "
                    f"(api.max_tokens), got {asked}.",
                    param=field,
                )
    check_grammars(data, limits)
    stream = data.get("stream") is True
    return RequestShape(model if isinstance(model, str) else None, prompts * n, stream)


# -- naming the field when a request model's own validators crash ------------------------------------


def _is_type_tag(part: str) -> bool:
    """pydantic names union members and validators in error locations; they are not request fields."""
    return (
        "[" in part
        or "-" in part
        or part[:1].isupper()
        or part in ("str", "int", "float", "bool", "list", "dict", "none", "function")
    )


def validation_message(err: dict[str, Any]) -> tuple[str, str | None]:
    """("path: what is wrong", path) of one pydantic error, without pydantic's type tags in the path."""
    loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
    path = ".".join(p for p in loc if not _is_type_tag(p))
    msg = err.get("msg", "invalid value")
    return (f"{path}: {msg}" if path else msg), (path or None)


@lru_cache(maxsize=256)
def _field_adapter(model_cls: Any, name: str) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(model_cls.model_fields[name].annotation)


def locate_bad_field(model_cls: Any, data: dict[str, Any]) -> tuple[str | None, str]:
    """(field, what is wrong) for a body whose validation crashed instead of reporting a field.

    vLLM's request models run "before" validators that assume the right types (``messages: true`` ->
    TypeError "'bool' object is not iterable"); checking each field alone against its type finds the
    culprit. Runs only on that failure path.
    """
    fields = model_cls.model_fields
    for name, info in fields.items():
        if info.is_required() and name not in data:
            return name, "Field required"
    for name, value in data.items():
        if name not in fields:
            continue
        try:
            _field_adapter(model_cls, name).validate_python(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            msg, path = validation_message({**errors[0], "loc": (name, *errors[0].get("loc", ()))})
            return path, msg.split(": ", 1)[-1]
        except Exception:  # the field's own validator crashed: it is the culprit
            return name, "invalid value for this field"
    return None, "the body does not match the request schema"


def request_model(path: str) -> Any:
    """vLLM's request model of a generate route (ray.serve.llm re-exports them)."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    return ChatCompletionRequest if path.endswith("chat/completions") else CompletionRequest


def validate_request(model_cls: Any, data: dict[str, Any]) -> Any:
    """``model_cls`` built from ``data``, or InvalidRequest naming the field.

    vLLM's request models report bad fields as pydantic errors, raise vLLM's own errors from validators
    (``stream_options`` without ``stream``, an empty ``prompt``), and crash with TypeError/AttributeError on
    wrong types; all three become a 400 that names the field.
    """
    from ray.llm._internal.common.errors import VLLM_CLIENT_ERRORS

    from dsserve.serving.errors import param_of

    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        msgs = list(dict.fromkeys(validation_message(dict(e)) for e in errors))
        shown, more = msgs[:3], (f" (and {len(msgs) - 3} more)" if len(msgs) > 3 else "")
        raise InvalidRequest(
            "Invalid request: " + "; ".join(m for m, _ in shown) + more, param=shown[0][1] if shown else None
        ) from None
    except RecursionError:
        raise InvalidRequest("Invalid request: a field is nested too deeply.") from None
    except VLLM_CLIENT_ERRORS as exc:  # vLLM's own request checks raise these from pydantic validators
        message = str(exc).strip() or exc.__class__.__name__
        raise InvalidRequest(f"Invalid request: {message}", param=param_of(message, model_cls.model_fields)) from None
    except Exception:  # a "before" validator crashed on a wrong type
        param, why = locate_bad_field(model_cls, data)
        raise InvalidRequest(f"Invalid request: {param + ': ' if param else ''}{why}", param=param) from None


def diagnose(path: str, data: dict[str, Any]) -> InvalidRequest | None:
    """A 400 naming the field, for a body the engine's app failed on (5xx) although the fault is the body's.

    None when the body validates: then the failure was the server's.
    """
    try:
        validate_request(request_model(path), data)
    except InvalidRequest as exc:
        return exc
    return None
