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

- vLLM's request models *raise* from their validators: ``VLLMValidationError`` (not a ValueError) for
  ``stream_options`` without ``stream``, an empty ``prompt`` or ``cache_salt``, which came back in
  upstream's wrapped body; and TypeError/AttributeError for wrongly typed fields (``messages: true``),
  which answered 500. So did a lone UTF-16 surrogate reaching the tokenizer in the engine replica and JSON
  nested past Python's recursion limit, **with the replica's traceback** (paths, pids, addresses) in the
  message. Client errors are now 400 naming the field; a real server fault is a 500 without internals
  (logged at the ingress). Found by ``tests/e2e/test_fuzz.py`` and the probes behind it.
- Upstream's other routes (``/v1/embeddings``, ``/tokenize``, ``/v1/score``, ...) and FastAPI's
  ``/openapi.json`` and ``/docs`` ignored the API key; with keys configured every route requires it.

So the chat and completions routes read and validate the body themselves, and every client mistake
becomes ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status. What the body may hold
(the fuzzer's contract, ``tests/e2e/test_fuzz.py``): strict JSON (no ``NaN``/``Infinity``) of well-formed
Unicode (a lone surrogate escape is 400), at least one chat message, ``n`` up to ``api.max_n``; message
text may hold any other character, control characters included, which reach the tokenizer as text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request, status
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

# OpenAIHTTPException has no public alias; it is what upstream raises for engine-reported errors.
from ray.llm._internal.common.errors import VLLM_CLIENT_ERRORS
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from ray.serve.llm.ingress import OpenAiIngress
from ray.serve.exceptions import BackPressureError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from dsserve.serving.admission import AdmissionGate
from dsserve.serving.auth import KeyStore, RateLimiter, bearer_token, retry_after_seconds
from dsserve.serving.layout import LayoutCache, no_running_replica, waiting_in_router
from dsserve.lora import AdapterTable
from dsserve.serving.metrics import IngressMetrics

__all__ = ["DsserveIngress", "openai_error", "openapi_spec"]

log = logging.getLogger("ray.serve")

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"

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
    # messages may quote the client's input; a lone surrogate in it would fail the JSON encoding (a 500)
    message, param = _printable(message), (None if param is None else _printable(param))
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(status_code=status_code, content=body, headers=headers)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_upstream_message(message: str) -> str:
    m = _UPSTREAM_WRAPPED.match(message)
    return m.group("msg") if m else message


_PARAM_TAG = re.compile(r"\(parameter=(?P<p>[A-Za-z_]+)")
# vLLM's sampling-parameter checks start with the field's name: "n must be at least 1, got 0."
_LEADING_FIELD = re.compile(r"^(?P<p>[a-z_]+) (?:must|cannot|should|is|contains)\b")


def _param_of(message: str, fields: Any = ()) -> str | None:
    """The request field an engine error names: its ``(parameter=...)`` tag, else a leading field name."""
    m = _PARAM_TAG.search(message)
    if m:
        return m.group("p")
    m = _LEADING_FIELD.match(message)
    return m.group("p") if m and m.group("p") in fields else None


def _is_type_tag(part: str) -> bool:
    """pydantic names union members and validators in error locations; they are not request fields."""
    return ("[" in part or "-" in part or part[:1].isupper()
            or part in ("str", "int", "float", "bool", "list", "dict", "none", "function"))


def _validation_message(err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
    path = ".".join(p for p in loc if not _is_type_tag(p))
    msg = err.get("msg", "invalid value")
    return (f"{path}: {msg}" if path else msg), (path or None)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_bad_string(data: Any, path: str = "") -> str | None:
    """The path (``messages.0.content``) of the first key or string holding a lone UTF-16 surrogate."""
    if isinstance(data, str):
        return None if _is_unicode(data) else (path or "(body)")
    items: Any = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        here = f"{path}.{k}" if path else str(k)
        if isinstance(k, str) and not _is_unicode(k):
            return here
        found = _first_bad_string(v, here)
        if found is not None:
            return found
    return None


# a \uD800-\uDFFF escape: JSON can spell a lone surrogate that way, and Python decodes it
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON numbers are finite)")


@lru_cache(maxsize=1)
def _openapi_file() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text())


def openapi_spec(max_n: int | None = None) -> dict[str, Any]:
    """dsserve's OpenAPI document (``dsserve/openapi.yaml``), with this server's ``n`` limit filled in."""
    spec = json.loads(json.dumps(_openapi_file()))
    if max_n is not None:
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            n = spec["components"]["schemas"][name]["properties"]["n"]
            n["maximum"] = max_n
            n["description"] = f"At most api.max_n ({max_n} here)."
    return spec


@lru_cache(maxsize=256)
def _field_adapter(model_cls: type, name: str) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(model_cls.model_fields[name].annotation)


def _locate_bad_field(model_cls: type, data: dict[str, Any]) -> tuple[str | None, str]:
    """(field, what is wrong) for a body whose validation crashed instead of reporting a field.

    vLLM's request models run "before" validators that assume the right types (``messages: true`` ->
    TypeError "'bool' object is not iterable"); checking each field alone against its type finds the culprit.
    Runs only on that failure path.
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
            msg, path = _validation_message({**errors[0], "loc": (name, *errors[0].get("loc", ()))})
            return path, msg.split(": ", 1)[-1]
        except Exception:  # noqa: BLE001 - the field's own validator crashed: it is the culprit
            return name, "invalid value for this field"
    return None, "the body does not match the request schema"


#: Routes whose handlers check the key themselves (and count refusals in the metrics).
_SELF_CHECKED = ("/v1/chat/completions", "/v1/completions", "/v1/models")


class _KeyRequired:
    """ASGI middleware: the API key on every other route of the ingress app (upstream's embeddings,
    score, tokenize, transcriptions; FastAPI's openapi.json and docs; unknown paths)."""

    def __init__(self, app: Any, check: Any) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":  # CORS preflights carry no key
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):] or "/"
            if path not in _SELF_CHECKED and not path.startswith("/v1/models/"):
                denied = self.check(Headers(scope=scope))
                if denied is not None:
                    await denied(scope, receive, send)
                    return
        await self.app(scope, receive, send)


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


#: Errors the engine raises for a request it cannot take (vLLM maps them to 400 in its own server).
ENGINE_INPUT_ERRORS = (ValueError, OverflowError)
#: Seconds a client should wait when the engine replica died: Serve replaces it in about 40-70 s here.
ENGINE_RETRY_AFTER_S = 5
#: While a request waits for its first answer, how often to check that the engine still has a replica.
ENGINE_WAIT_CHECK_S = 1.0

#: Exceptions (by class name, anywhere in the cause chain) meaning the engine replica, not the request, failed:
#: vLLM's EngineDeadError, and Ray's errors for a dead, unreachable or unscheduled replica actor.
_ENGINE_DOWN = frozenset({"EngineDeadError", "ActorDiedError", "ActorUnavailableError", "RayActorError",
                          "ActorUnschedulableError", "DeploymentUnavailableError", "WorkerCrashedError"})


class _NoEngineReplica(Exception):
    """The engine lost its last running replica while a request waited in Serve's router."""


def _engine_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (a RayTaskError wrapping the replica's error, or Ray's own) says the engine is down."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if any(c.__name__ in _ENGINE_DOWN for c in type(e).__mro__):
            return True
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return False


def _unavailable(why: str, retry_after_s: int) -> JSONResponse:
    return openai_error(
        503,
        f"The model is temporarily unavailable: {why}. Retry after {retry_after_s} seconds.",
        code="engine_unavailable",
        headers={"Retry-After": str(retry_after_s)},
    )


class DsserveIngress(OpenAiIngress):
    """OpenAiIngress whose chat and completions routes turn every client mistake into an OpenAI 4xx.

    Keyword arguments (``ingress_cls_config.ingress_extra_kwargs``, rendered from the spec):

    - ``api_keys_env``, ``api_keys_file``: every route requires ``Authorization: Bearer <key>`` for one
      of the keys in that environment variable (comma-separated) or file (one per line, re-read when it
      changes), see :class:`dsserve.serving.auth.KeyStore`. A configured source without keys fails the replica
      at start: an unset secret must not silently open the API.
    - ``rate_limit``: ``{"requests_per_second", "burst"}``, a token bucket per key on chat and
      completions, in this replica's memory; past it 429 + Retry-After.
    - ``max_inflight``: chat and completions requests held at once before 503 + Retry-After
      (:class:`AdmissionGate`); None for unbounded.
    - ``max_body_bytes``: larger request bodies get 413 before they are read.
    - ``max_n``: the largest ``n`` (choices per request); more gets 400.
    - ``lora_adapters``: ``{base model id: adapter table}`` (:class:`dsserve.lora.AdapterTable`, set by
      ``dsserve.app.build_openai_app`` from ``model.lora``). ``<base>:<adapter>`` requests for an adapter
      in it are routed upstream's way (Serve multiplexing); any other adapter gets an OpenAI 404 here.
      Upstream lists adapters only from a cloud ``dynamic_lora_loading_path``; these are listed on
      ``GET /v1/models`` and ``GET /v1/models/{id}`` from the table.
    """

    # Defaults for the dsserve state __init__ sets (tests build the class without Ray's __init__).
    _keys: KeyStore = KeyStore()  # no sources: no auth
    _keys_seen = 0
    _limiter: RateLimiter | None = None
    _max_n = 16
    _lora: dict[str, AdapterTable] = {}
    _layouts: LayoutCache | None = None

    def __init__(
        self,
        *args: Any,
        api_keys_env: str | None = None,
        api_keys_file: str | None = None,
        rate_limit: dict[str, Any] | None = None,
        max_inflight: int | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        max_n: int = 16,
        lora_adapters: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._lora = {base: AdapterTable.from_config(base, table) for base, table in (lora_adapters or {}).items()}
        self._gate = AdmissionGate(max_inflight)
        # dsserve_* request metrics (dsserve/metrics.py), exported on Ray's metrics port
        self._metrics = IngressMetrics(self._model_cards, max_inflight)
        self._metrics.start()
        self._max_body_bytes = max_body_bytes
        self._max_n = max_n
        self._keys = KeyStore(env=api_keys_env, path=api_keys_file)  # raises when a source has no keys
        self._keys_seen = self._keys.reloads
        self._limiter = (RateLimiter(float(rate_limit["requests_per_second"]), int(rate_limit["burst"]))
                         if rate_limit else None)

    def _set_asgi_app(self, app: Any) -> None:
        """Install OpenAI-shaped routing errors on the FastAPI app before Serve starts serving it.

        Ray Serve's ``ASGIAppReplicaWrapper._set_asgi_app`` (ray 2.60.0, serve/_private/http_util.py) is the
        one moment this class sees its FastAPI app: ``make_fastapi_ingress`` creates the app itself and the
        ingress wrapper hands it over after ``__init__``. A Ray upgrade that renames it fails the e2e test
        for unknown routes, not users silently.
        """
        if isinstance(app, FastAPI):
            app.add_exception_handler(StarletteHTTPException, _http_exception)
            # GET /openapi.json: the routes and fields dsserve supports, not upstream's generated schema
            app.openapi_schema = openapi_spec(self._max_n)
            if self._keys.enabled:
                app.add_middleware(_KeyRequired, check=self._unauthorized)
        super()._set_asgi_app(app)  # type: ignore[misc]

    def _authenticate(self, headers: Headers) -> tuple[bytes | None, JSONResponse | None]:
        """(the key's digest, None) for an accepted key, (None, 401) otherwise; (None, None) without auth."""
        if not self._keys.enabled:
            return None, None
        token = bearer_token(headers.get("authorization"))
        # header values are latin-1 text in ASGI: encoding back gives the bytes the client sent
        key_id = self._keys.match(token.encode("latin-1") if token is not None else None)
        if self._keys.reloads != self._keys_seen:  # keys rotated: drop the buckets of removed keys
            self._keys_seen = self._keys.reloads
            if self._limiter is not None:
                self._limiter.retain(self._keys.digests)
        if key_id is not None:
            return key_id, None
        return None, openai_error(
            401,
            "Missing or invalid API key; send `Authorization: Bearer <key>`.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _unauthorized(self, headers: Headers) -> JSONResponse | None:
        return self._authenticate(headers)[1]

    def _rate_limited(self, key_id: bytes | None) -> JSONResponse | None:
        if self._limiter is None or key_id is None:
            return None
        wait = self._limiter.check(key_id)
        if wait <= 0:
            return None
        retry = retry_after_seconds(wait)
        return openai_error(
            429,
            f"Rate limit reached for this API key ({self._limiter.rate:g} requests/s, bursts of "
            f"{self._limiter.burst}); retry after {retry} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry)},
        )

    async def _read_body(self, request: Request, model_cls: type) -> Any | JSONResponse:
        key_id, denied = self._authenticate(request.headers)
        if denied is not None:
            return denied
        limited = self._rate_limited(key_id)
        if limited is not None:
            return limited
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
            data = json.loads(raw, parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            return openai_error(
                400,
                f"The request body is not valid JSON ({exc.__class__.__name__}: {exc}); "
                "send a JSON object with Content-Type: application/json.",
                code="invalid_json",
            )
        except RecursionError:
            return openai_error(400, "The request body is not valid JSON here: it is nested too deeply.",
                                code="invalid_json")
        if not isinstance(data, dict):
            return openai_error(400, f"The request body must be a JSON object, got {type(data).__name__}.",
                                code="invalid_body")
        if _SURROGATE_ESCAPE.search(raw):
            bad = _first_bad_string(data)
            if bad is not None:
                return openai_error(
                    400,
                    f"Invalid request: {bad}: holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                    "pair), which is not Unicode text; send well-formed UTF-8.",
                    param=bad, code="invalid_parameter",
                )
        try:
            body = model_cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            msgs = list(dict.fromkeys(_validation_message(e) for e in errors))
            shown, more = msgs[:3], (f" (and {len(msgs) - 3} more)" if len(msgs) > 3 else "")
            return openai_error(400, "Invalid request: " + "; ".join(m for m, _ in shown) + more,
                                param=shown[0][1] if shown else None, code="invalid_parameter")
        except RecursionError:
            return openai_error(400, "Invalid request: a field is nested too deeply.", code="invalid_parameter")
        except VLLM_CLIENT_ERRORS as exc:  # vLLM's own request checks raise these from pydantic validators
            message = str(exc).strip() or exc.__class__.__name__
            return openai_error(400, f"Invalid request: {message}", param=_param_of(message, model_cls.model_fields),
                                code="invalid_parameter")
        except Exception:  # noqa: BLE001 - vLLM's "before" validators crash on wrong types ('bool' is not iterable)
            param, why = _locate_bad_field(model_cls, data)
            return openai_error(400, f"Invalid request: {param + ': ' if param else ''}{why}", param=param,
                                code="invalid_parameter")
        if getattr(body, "messages", None) == []:
            return openai_error(400, "Invalid request: messages: send at least one message.",
                                param="messages", code="invalid_parameter")
        n = getattr(body, "n", None)
        if isinstance(n, int) and n > self._max_n:
            return openai_error(400, f"Invalid request: n: at most {self._max_n} choices per request "
                                f"(api.max_n), got {n}.", param="n", code="invalid_parameter")
        model = getattr(body, "model", None)
        if model is not None and not self._knows_model(model):
            return openai_error(
                404,
                f"The model {model!r} does not exist; this server serves: "
                f"{', '.join(self._served_ids())} (see GET /v1/models).",
                param="model",
                code="model_not_found",
            )
        return body

    def _knows_model(self, model: str) -> bool:
        from ray.llm._internal.common.utils.lora_utils import get_base_model_id

        base = get_base_model_id(model)
        if base not in self._model_cards:
            return False
        if model == base:
            return True
        table = self._lora.get(base)
        return table is not None and table.path(model[len(base) + 1:]) is not None

    def _served_ids(self) -> list[str]:
        """Every model id this server answers: base models and their LoRA adapters (``<base>:<adapter>``)."""
        return sorted(self._model_cards) + [m for t in self._lora.values() for m in t.model_ids()]

    async def model(self, model_id: str) -> Any:
        """The card of a base model or of a served LoRA adapter (its base's card, renamed); None otherwise."""
        card = await super().model(model_id)
        if card is not None or model_id in self._model_cards or not self._knows_model(model_id):
            return card
        base = model_id.split(":", 1)[0]
        base_card = self._model_cards[base]
        return base_card.model_copy(update={
            "id": model_id,
            "metadata": {**base_card.metadata, "model_id": model_id, "base_model_id": base},
        })

    async def _serve(self, body: Any, call_method: str, request: Request) -> Response:
        if self._no_engine_replica(getattr(body, "model", None)):
            return self._refuse_no_replica(call_method)
        if not self._gate.try_acquire():
            self._metrics.rejected(call_method, "overloaded")
            return _overloaded(f"{self._gate.inflight} requests are in flight, the most this server admits")
        streaming = False
        try:
            response = await self._first_answer(body, call_method, request)
            if isinstance(response, StreamingResponse):
                response.body_iterator = self._gate.hold_while_streaming(response.body_iterator)
                streaming = True
            return response
        except _NoEngineReplica:
            return self._refuse_no_replica(call_method)
        except BackPressureError:
            self._metrics.rejected(call_method, "queue_full")
            return _overloaded("the model's request queue is full (serving.max_queued_requests)")
        except OpenAIHTTPException as exc:
            code = int(exc.status_code)
            message = _clean_upstream_message(exc.message)
            param = _param_of(message, type(body).model_fields)
            if code >= 500:
                message = f"The server could not complete the request: {message}"
            return openai_error(code, message, param=param)
        except Exception as exc:  # raised by the engine replica (arrives as a RayTaskError) or on the way
            cause = getattr(exc, "cause", None) or exc
            if VLLM_CLIENT_ERRORS and isinstance(cause, VLLM_CLIENT_ERRORS):
                message = str(cause).strip() or cause.__class__.__name__
                return openai_error(400, message, param=_param_of(message, type(body).model_fields))
            if isinstance(cause, ENGINE_INPUT_ERRORS) and not _engine_unavailable(exc):
                # vLLM's own server answers these 400 too (its serving layer maps ValueError to a
                # BadRequestError): e.g. a prompt token id outside the vocabulary, or one too large for int64.
                message = (str(cause).strip() or cause.__class__.__name__).splitlines()[0][:500]
                return openai_error(400, f"Invalid request: {message}",
                                    param=_param_of(message, type(body).model_fields), code="invalid_parameter")
            if _engine_unavailable(exc):
                log.warning("dsserve ingress: %s request failed, engine unavailable: %s", call_method,
                            type(cause).__name__)
                self._metrics.rejected(call_method, "engine_unavailable")
                return _unavailable("its engine replica failed and Serve is replacing it", ENGINE_RETRY_AFTER_S)
            log.exception("dsserve ingress: %s request failed", call_method)
            return openai_error(500, "The server could not complete the request (an internal error; "
                                "the ingress log has the details).", code="internal_error")
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
        denied = self._unauthorized(request.headers)
        if denied is not None:
            return denied
        listing = await super().models()
        await self._add_live_layouts(listing.data)
        listed = {card.id for card in listing.data}
        for table in self._lora.values():
            for model_id in table.model_ids():
                if model_id not in listed:
                    listing.data.append(await self.model(model_id))
        return listing

    async def _first_answer(self, body: Any, call_method: str, request: Request) -> Any:
        """The engine's response (for a stream: once its first chunk is there), or _NoEngineReplica.

        A request routed just before the only engine replica died waits in Serve's router until a
        replacement is up, which is minutes for a large model. While it waits, the router's replica set is
        checked every ENGINE_WAIT_CHECK_S; once it is empty while this request is still queued in the
        router (not on a replica: one on a draining replica is let finish), the request is cancelled
        (Serve drops it from the router's queue) and answered 503 + Retry-After instead of hanging.
        """
        model = getattr(body, "model", None)
        task = asyncio.ensure_future(self._process_llm_request(body, call_method=call_method, raw_request=request))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=ENGINE_WAIT_CHECK_S)
                if done:
                    return task.result()
                if self._queued_without_replica(model):
                    raise _NoEngineReplica()
        finally:
            if not task.done():
                task.cancel()

    def _refuse_no_replica(self, call_method: str) -> JSONResponse:
        self._metrics.rejected(call_method, "engine_unavailable")
        return _unavailable("no engine replica is running (Serve is starting or replacing it)",
                            ENGINE_RETRY_AFTER_S)

    def _no_engine_replica(self, model: str | None) -> bool:
        """True when the router of the model's handle has no running engine replica (dsserve/layout.py)."""
        handle = self._handle_in_use(model)
        return handle is not None and no_running_replica(handle)

    def _queued_without_replica(self, model: str | None) -> bool:
        """This request (the one whose context this runs in) is still queued in a router with no replica."""
        from ray.serve.context import _get_serve_request_context

        handle = self._handle_in_use(model)
        return (handle is not None and no_running_replica(handle)
                and waiting_in_router(handle, _get_serve_request_context()._internal_request_id))

    def _handle_in_use(self, model: str | None) -> Any:
        """The handle OpenAiIngress sends this model's requests through (its router holds the replica set)."""
        handles = getattr(self, "_configured_serve_handles", None)
        if not model or not handles:
            return None
        from ray.llm._internal.common.utils.lora_utils import get_base_model_id

        return handles.get(model) or handles.get(get_base_model_id(model))

    async def _add_live_layouts(self, cards: list[Any]) -> None:
        """``metadata.dsserve`` of each base model: the parallel layout and replicas running now (dsserve/layout.py)."""
        handles = getattr(self, "_default_serve_handles", {})
        if not handles:
            return
        if self._layouts is None:
            self._layouts = LayoutCache()
        for card in cards:
            handle = handles.get(card.id)
            if handle is not None:
                card.metadata["dsserve"] = await self._layouts.get(card.id, handle)

    async def model_data(self, model: str, request: Request) -> Any:  # type: ignore[override]
        """GET /v1/models/{model}: an OpenAI 404 for a model this server does not serve."""
        denied = self._unauthorized(request.headers)
        if denied is not None:
            return denied
        card = await self.model(model)
        if card is None:
            return openai_error(
                status.HTTP_404_NOT_FOUND,
                f"The model {model!r} does not exist; this server serves: {', '.join(self._served_ids())}.",
                param="model",
                code="model_not_found",
            )
        return card
