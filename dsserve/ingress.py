"""dsserve's OpenAI ingress: ray.serve.llm's ``OpenAiIngress`` with client errors made right.

Plugged in through ray.serve.llm's own extension point, ``ingress_cls_config.ingress_cls``; every route
other than the ones below is upstream's. What it changes, measured against ray 2.60.0:

- A request for an unknown model answered 404 with FastAPI's ``{"detail": ...}`` body instead of an
  OpenAI error (``OpenAiIngress._get_model_id`` raises ``fastapi.HTTPException``).
- A body that is not JSON sent without ``Content-Type: application/json`` answered **500**: upstream's
  validation handler (``core/ingress/middleware.py:_handle_validation_error``) puts the raw ``bytes``
  input into the JSON error, which cannot be serialised.
- Unknown paths and wrong methods answered FastAPI's ``{"detail": "Not Found"}``; they get OpenAI errors
  through a handler installed on the ingress's FastAPI app (see ``_set_asgi_app``).
- Engine errors (prompt over ``max_model_len``, ``max_tokens`` too large) arrive as
  ``"Message: ... Internal exception: ... original exception: "`` with ``type: OpenAIHTTPException``
  (``utils/server_utils.py:get_response_for_error``). Users get the plain message and OpenAI's types.

So the chat and completions routes read and validate the body themselves, and every client mistake
becomes ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from typing import Any

from fastapi import FastAPI, Request, status
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

# OpenAIHTTPException has no public alias; it is what upstream raises for engine-reported errors.
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from ray.serve.llm.ingress import OpenAiIngress
from ray.serve.exceptions import BackPressureError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from dsserve.admission import AdmissionGate
from dsserve.metrics import IngressMetrics

__all__ = ["DsserveIngress", "openai_error"]

#: OpenAI's error ``type`` for each status a client can cause.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}

# upstream wraps messages as "Message: <text> (Request ID: <id>), Internal exception: ..."
_UPSTREAM_WRAPPED = re.compile(r"^Message: (?P<msg>.*?)(?: \(Request ID: [^)]*\))?, Internal exception:", re.S)


def openai_error(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error response; the one place error bodies are made."""
    error_type = _ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(status_code=status_code, content=body, headers=headers)


def _clean_upstream_message(message: str) -> str:
    m = _UPSTREAM_WRAPPED.match(message)
    return m.group("msg") if m else message


def _param_of(exc: OpenAIHTTPException) -> str | None:
    m = re.search(r"\(parameter=(?P<p>[A-Za-z_]+)", exc.message)
    return m.group("p") if m else None


def _validation_message(err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
    # pydantic's union errors name the union member ("function-after[...]"); keep the field path only.
    path = ".".join(p for p in loc if not p.startswith(("function-", "tagged-union", "union[")) and "[" not in p)
    msg = err.get("msg", "invalid value")
    return (f"{path}: {msg}" if path else msg), (path or None)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Routing errors (unknown path, wrong method) in OpenAI's shape instead of FastAPI's ``detail``."""
    code = getattr(exc, "status_code", 500)
    if code == 404:
        message = f"Unknown route {request.method} {request.url.path}; this server serves /v1/models, " \
                  "/v1/chat/completions and /v1/completions."
    elif code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(getattr(exc, "detail", "")) or "Request failed."
    return openai_error(code, message, headers=getattr(exc, "headers", None))


def _overloaded(why: str) -> JSONResponse:
    return openai_error(
        503,
        f"The server is at capacity: {why}. Retry after 1 second.",
        code="overloaded",
        headers={"Retry-After": "1"},
    )


class DsserveIngress(OpenAiIngress):
    """OpenAiIngress whose chat and completions routes turn every client mistake into an OpenAI 4xx.

    Keyword arguments (``ingress_cls_config.ingress_extra_kwargs``, rendered from the spec):

    - ``api_keys_env``: every route requires ``Authorization: Bearer <key>`` for one of the
      comma-separated keys in that environment variable. A missing or empty variable fails the replica at
      start: an unset secret must not silently open the API.
    - ``max_inflight``: chat and completions requests held at once before 503 + Retry-After
      (:class:`AdmissionGate`); None for unbounded.
    - ``max_body_bytes``: larger request bodies get 413 before they are read.
    """

    def __init__(
        self,
        *args: Any,
        api_keys_env: str | None = None,
        max_inflight: int | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._gate = AdmissionGate(max_inflight)
        # dsserve_* request metrics (dsserve/metrics.py), exported on Ray's metrics port
        self._metrics = IngressMetrics(self._model_cards, max_inflight)
        self._metrics.start()
        self._max_body_bytes = max_body_bytes
        self._api_keys: tuple[bytes, ...] = ()
        if api_keys_env:
            keys = [k.strip() for k in os.environ.get(api_keys_env, "").split(",") if k.strip()]
            if not keys:
                raise RuntimeError(
                    f"api.api_keys_env names ${api_keys_env}, but it is unset or empty on this node; "
                    f"export {api_keys_env}=key1,key2 before starting Ray, or remove api.api_keys_env"
                )
            self._api_keys = tuple(k.encode() for k in keys)

    def _set_asgi_app(self, app: Any) -> None:
        """Install OpenAI-shaped routing errors on the FastAPI app before Serve starts serving it.

        Ray Serve's ``ASGIAppReplicaWrapper._set_asgi_app`` (ray 2.60.0, serve/_private/http_util.py) is the
        one moment this class sees its FastAPI app: ``make_fastapi_ingress`` creates the app itself and the
        ingress wrapper hands it over after ``__init__``. A Ray upgrade that renames it fails the e2e test
        for unknown routes, not users silently.
        """
        if isinstance(app, FastAPI):
            app.add_exception_handler(StarletteHTTPException, _http_exception)
        super()._set_asgi_app(app)  # type: ignore[misc]

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        if not self._api_keys:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            presented = token.strip().encode()
            # compare against every key so timing does not reveal which prefix matched
            if any([hmac.compare_digest(presented, k) for k in self._api_keys]):
                return None
        return openai_error(
            401,
            "Missing or invalid API key; send `Authorization: Bearer <key>`.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _read_body(self, request: Request, model_cls: type) -> Any | JSONResponse:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        too_big = openai_error(
            413,
            f"The request body is larger than this server accepts ({self._max_body_bytes} bytes, "
            "api.max_body_bytes); shorten the prompt or raise the limit.",
            code="request_too_large",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body_bytes:
                return too_big
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            return openai_error(400, "The request body is empty; send a JSON object with `model` and "
                                "`messages` (chat) or `prompt` (completions).", code="invalid_body")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return openai_error(
                400,
                f"The request body is not valid JSON ({exc.__class__.__name__}: {exc}); "
                "send a JSON object with Content-Type: application/json.",
                code="invalid_json",
            )
        if not isinstance(data, dict):
            return openai_error(400, f"The request body must be a JSON object, got {type(data).__name__}.",
                                code="invalid_body")
        try:
            body = model_cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            msgs = [_validation_message(e) for e in errors[:3]]
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            return openai_error(400, "Invalid request: " + "; ".join(m for m, _ in msgs) + more,
                                param=msgs[0][1] if msgs else None, code="invalid_parameter")
        model = getattr(body, "model", None)
        if model is not None and not self._knows_model(model):
            return openai_error(
                404,
                f"The model {model!r} does not exist; this server serves: "
                f"{', '.join(sorted(self._model_cards))} (see GET /v1/models).",
                param="model",
                code="model_not_found",
            )
        return body

    def _knows_model(self, model: str) -> bool:
        from ray.llm._internal.common.utils.lora_utils import get_base_model_id

        return get_base_model_id(model) in self._model_cards

    async def _serve(self, body: Any, call_method: str, request: Request) -> Response:
        if not self._gate.try_acquire():
            self._metrics.rejected(call_method, "overloaded")
            return _overloaded(f"{self._gate.inflight} requests are in flight, the most this server admits")
        streaming = False
        try:
            response = await self._process_llm_request(body, call_method=call_method, raw_request=request)
            if isinstance(response, StreamingResponse):
                response.body_iterator = self._gate.hold_while_streaming(response.body_iterator)
                streaming = True
            return response
        except BackPressureError:
            self._metrics.rejected(call_method, "queue_full")
            return _overloaded("the model's request queue is full (serving.max_queued_requests)")
        except OpenAIHTTPException as exc:
            code = int(exc.status_code)
            message = _clean_upstream_message(exc.message)
            if code >= 500:
                message = f"The server could not complete the request: {message}"
            return openai_error(code, message, param=_param_of(exc))
        finally:
            if not streaming:
                self._gate.release()

    async def chat(self, request: Request) -> Response:  # type: ignore[override]
        """POST /v1/chat/completions, with the body parsed here so bad input is a 400, never a 500."""
        with self._metrics.request("chat") as m:
            body = await self._read_body(request, ChatCompletionRequest)
            if isinstance(body, Response):
                return m.done(body)
            return m.done(await self._serve(body, "chat", request), body.model)

    async def completions(self, request: Request) -> Response:  # type: ignore[override]
        """POST /v1/completions, with the body parsed here so bad input is a 400, never a 500."""
        with self._metrics.request("completions") as m:
            body = await self._read_body(request, CompletionRequest)
            if isinstance(body, Response):
                return m.done(body)
            return m.done(await self._serve(body, "completions", request), body.model)

    async def models(self, request: Request) -> Any:  # type: ignore[override]
        """GET /v1/models, behind the API key when one is configured."""
        return self._unauthorized(request) or await super().models()

    async def model_data(self, model: str, request: Request) -> Any:  # type: ignore[override]
        """GET /v1/models/{model}: an OpenAI 404 for a model this server does not serve."""
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        card = await self.model(model)
        if card is None:
            return openai_error(
                status.HTTP_404_NOT_FOUND,
                f"The model {model!r} does not exist; this server serves: {', '.join(sorted(self._model_cards))}.",
                param="model",
                code="model_not_found",
            )
        return card
