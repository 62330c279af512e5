"""The request pipeline: one ASGI middleware that every request passes through, wherever it lands.

It wraps the app that does the work: vLLM's own OpenAI app inside each engine replica (direct mode,
:mod:`dsserve.serving.direct`) or ray.serve.llm's ingress app (ingress mode,
:mod:`dsserve.serving.ingress`). In order, for each HTTP request:

1. **API key** (:class:`~dsserve.serving.auth.KeyStore`): 401 without a valid one, on every route, before
   anything else is said (an unknown path is a 401, not a 404, to a client without a key); past
   :data:`FAILED_KEYS_BURST` failures from one client address, 429 with its keys unchecked.
2. **Route table** (:mod:`dsserve.serving.routes`): 404 for a path the API does not serve, 405 for a
   wrong method. The app's own extra routes (vLLM's ``/metrics``, ``/v1/responses``, ...) stay unreachable.
3. **Rate limit**: one token of the key's bucket; 429 + Retry-After.
4. Routes answered here: ``/v1/models``, ``/v1/models/{id}`` (the model directory, with the live
   layout), ``/openapi.json``, and a 404 for the routes of other model kinds (embeddings, score,
   transcriptions).
5. **Admission** (:class:`~dsserve.serving.admission.AdmissionGate`): one slot, before the body is read
   (an overloaded server refuses without parsing anything); 503 + Retry-After.
6. **Body**: 413 past ``api.max_body_bytes`` (before reading it, when the length is declared), strict JSON
   (:mod:`dsserve.serving.body`), the model must be one this server serves (404), ``n`` and the prompt
   count within limits (400). The request's weight (prompts x ``n``) then takes its remaining admission
   slots and rate-limit tokens.
7. The app runs with the body replayed. What it answers passes through: errors (status >= 400) are
   rewritten to the one OpenAI shape with no internals (:func:`~dsserve.serving.errors.normalize_error`),
   and a 5xx caused by the body is turned into the 400 that names the field; metrics observe the status,
   the first token and the usage as the bytes go out (:mod:`dsserve.serving.metrics`). The admission
   slots are released when the app returns: for a stream, when it ended or the client left.

Limits are this replica's share of the deployment's (:mod:`dsserve.serving.shares`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from dsserve.haproxy_launch import launcher_in_use
from dsserve.serving import routes as routing_table
from dsserve.serving.admission import AdmissionGate
from dsserve.serving.auth import (
    MIN_KEY_CHARS,
    KeyStore,
    RateLimiter,
    bearer_token,
    forwarded_client,
    retry_after_seconds,
)
from dsserve.serving.body import (
    RequestShape,
    ShapeLimits,
    check_messages,
    diagnose,
    parse_json,
    read_body,
    request_model,
    request_shape,
)
from dsserve.serving.errors import (
    INTERNAL_MESSAGE,
    AuthError,
    ClientError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    engine_down_error,
    normalize_error,
    overloaded,
)
from dsserve.serving.grammar_limits import check_grammars, name_grammar_field
from dsserve.serving.metrics import RequestMetrics
from dsserve.serving.shares import Limits, LiveReplicas

__all__ = ["ModelDirectory", "PipelineSettings", "RequestPipeline", "BODY_SCOPE_KEY"]

log = logging.getLogger("ray.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the pipeline leaves the parsed JSON body for the app below (ingress mode reads it, saving a parse).
BODY_SCOPE_KEY = "dsserve.body"


class ModelDirectory(Protocol):
    """The models a pipeline serves, and their OpenAI cards."""

    def knows(self, model: str) -> bool:
        """Whether ``model`` (a base id, or ``<base>:<adapter>``) is served here."""

    def served_ids(self) -> list[str]:
        """Every model id this server answers, for error messages."""

    async def list_models(self) -> dict[str, Any]:
        """The body of ``GET /v1/models``."""

    async def model_card(self, model: str) -> dict[str, Any] | None:
        """The body of ``GET /v1/models/{model}``, None for a model not served here."""


@dataclass(frozen=True)
class PipelineSettings:
    """What the spec says about requests (``api.*`` and the admission limit), as plain data.

    Rendered into the Serve YAML (ingress mode: ``ingress_extra_kwargs``; direct mode: the engine
    replica's ``experimental_configs``) by :func:`dsserve.app.pipeline_settings`.
    """

    api_keys_env: str | None = None
    api_keys_file: str | None = None
    rate_limit: dict[str, Any] | None = None  # {"requests_per_second", "burst"} per key, whole deployment
    max_inflight: int | None = None  # sequences admitted at once, whole deployment; None unbounded
    max_body_bytes: int = 8 * 1024 * 1024
    max_n: int = 16  # sequences (prompts x n) per request
    max_prompts: int = 16
    max_tokens: int | None = 8192  # per completion
    max_messages: int = 2048
    max_tools: int = 128
    max_schema_bytes: int = 32768
    max_schema_depth: int = 32
    # HAProxy appends the client's address (dsserve-haproxy sets `option forwardfor`): failed keys are then
    # throttled per address. Off where no such header can be trusted (a client could write it).
    trust_forwarded_for: bool = False
    replicas: int = 1  # replicas running the pipeline, as configured (until the live count is known)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PipelineSettings:
        """The settings a replica runs with, from the rendered ones. ``X-Forwarded-For`` is trusted only where
        this node's HAProxy is started by dsserve-haproxy, which appends it: elsewhere a client writes it."""
        settings = cls(**(data or {}))
        if settings.trust_forwarded_for and not launcher_in_use():
            settings = replace(settings, trust_forwarded_for=False)
        return settings

    def shape_limits(self) -> ShapeLimits:
        return ShapeLimits(
            max_n=self.max_n,
            max_prompts=self.max_prompts,
            max_tokens=self.max_tokens,
            max_messages=self.max_messages,
            max_tools=self.max_tools,
            max_schema_bytes=self.max_schema_bytes,
            max_schema_depth=self.max_schema_depth,
        )

    def limits(self) -> Limits:
        rl = self.rate_limit or {}
        return Limits(
            admission=self.max_inflight,
            rate=float(rl["requests_per_second"]) if rl else None,
            burst=int(rl["burst"]) if rl else None,
        )


#: Request headers vLLM's OpenAI app acts on that a client must not set (vllm/entrypoints/generate/base/serving.py,
#: vllm/entrypoints/openai/*/api_router.py): a DP rank to land on (skips the routing and load balancing), a
#: scheduling priority (jumps the queue under the priority policy), and the engine's load metrics echoed back.
ENGINE_CONTROL_HEADERS = frozenset({b"x-data-parallel-rank", b"x-vllm-priority", b"endpoint-load-metrics-format"})


#: Failed API keys one client address may send at once, then one a second (checked against its last
#: X-Forwarded-For, which HAProxy appends); addresses remembered at most.
FAILED_KEYS_BURST = 60
FAILED_KEYS_ADDRESSES = 10_000


class _Headers:
    """What the pipeline reads of a request's headers, in one pass over them."""

    __slots__ = ("auth", "length", "forwarded_for", "steers_engine")

    def __init__(self, scope: Scope) -> None:
        self.auth: bytes | None = None  # Authorization
        self.length: int | None = None  # the declared Content-Length
        self.forwarded_for: bytes | None = None  # the last X-Forwarded-For (HAProxy's, when it adds one)
        self.steers_engine = False  # one of ENGINE_CONTROL_HEADERS is present
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                self.auth = value
            elif name == b"content-length":
                try:
                    self.length = int(value)
                except ValueError:
                    self.length = None
            elif name == b"x-forwarded-for":
                self.forwarded_for = value
            elif name in ENGINE_CONTROL_HEADERS:  # ASGI header names are lowercase
                self.steers_engine = True


#: The longest model name a request may carry (OpenAI ids are short; adapters add ``:<name>``).
MAX_MODEL_NAME = 256


def shown_name(name: str, limit: int = 80) -> str:
    """A client-supplied name as an error message quotes it: repr'd, and cut past ``limit`` characters."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} characters)"


async def _send_json(send: Send, status: int, data: Any) -> None:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestPipeline:
    """The ASGI middleware of the module docstring, around ``app``.

    ``models`` answers the model routes and the model check; ``replicas`` counts the replicas that
    share the limits (default: the configured count); ``metrics`` records (default: Ray's metrics);
    ``openapi`` is the document served at ``/openapi.json``; ``where`` names this replica in logs;
    ``engine_down`` says the engine behind the app has died (direct mode: the replica's own engine), so
    requests get 503 + Retry-After while Serve replaces the replica instead of the app's 500s.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: PipelineSettings,
        models: ModelDirectory,
        *,
        replicas: LiveReplicas | None = None,
        metrics: RequestMetrics | None = None,
        openapi: dict[str, Any] | None = None,
        where: str = "replica",
        keys: KeyStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        engine_down: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self.engine_down = engine_down
        self.settings = settings
        self.models = models
        self.where = where
        self.openapi = openapi
        self._limits = settings.limits()
        self._shape_limits = settings.shape_limits()
        self._replicas = replicas or LiveReplicas(settings.replicas)
        # raises KeySourceError when a configured source has no keys: an unset secret must not open the API
        self.keys = (
            keys
            if keys is not None
            else KeyStore(env=settings.api_keys_env, path=settings.api_keys_file, min_key_chars=MIN_KEY_CHARS)
        )
        self._keys_seen = self.keys.reloads
        # failed keys per client address: FAILED_KEYS_BURST at once, then one a second
        self.failed_keys = (
            RateLimiter(1.0, FAILED_KEYS_BURST, clock=clock, max_keys=FAILED_KEYS_ADDRESSES)
            if settings.trust_forwarded_for and self.keys.enabled
            else None
        )
        share = self._limits.share(self._replicas.count())
        self._share_n = share.replicas
        self.gate = AdmissionGate(share.admission)
        self.limiter = (
            RateLimiter(share.rate, share.burst, clock=clock)
            if share.rate is not None and share.burst is not None
            else None
        )
        self.metrics = metrics or RequestMetrics(
            models.served_ids(), inflight=lambda: self.gate.inflight, limit=lambda: self.gate.limit
        )

    # -- the share of the limits ----------------------------------------------------------------------
    def _reshare(self) -> None:
        n = self._replicas.count()
        if n == self._share_n:
            return
        share = self._limits.share(n)
        self._share_n = n
        self.gate.limit = share.admission
        if self.limiter is not None and share.rate is not None and share.burst is not None:
            self.limiter.resize(share.rate, share.burst)
        log.info(
            "dsserve: %d replicas share the limits: this one admits %s sequences, %s req/s per key",
            n,
            share.admission,
            share.rate,
        )

    # -- checks ---------------------------------------------------------------------------------------
    def authenticate(self, auth_header: bytes | None) -> bytes | None:
        """The key's digest (None without auth), or AuthError."""
        if not self.keys.enabled:
            return None
        token = bearer_token(auth_header.decode("latin-1") if auth_header is not None else None)
        key_id = self.keys.match(token)
        if self.keys.reloads != self._keys_seen:  # keys rotated: drop the buckets of removed keys
            self._keys_seen = self.keys.reloads
            if self.limiter is not None:
                self.limiter.retain(self.keys.digests)
        if key_id is None:
            raise AuthError()
        return key_id

    def _authenticate_from(self, headers: _Headers) -> bytes | None:
        """:meth:`authenticate`, with failed attempts counted per client address (429 past the allowance)."""
        failed = self.failed_keys
        address = forwarded_client(headers.forwarded_for) if failed is not None and headers.forwarded_for else None
        if failed is None or address is None:
            return self.authenticate(headers.auth)
        wait = failed.check(address, take=False)
        if wait > 0:
            retry = retry_after_seconds(wait)
            raise ClientError(
                f"Too many requests with a missing or invalid API key from this address; retry after "
                f"{retry} s with a valid key.",
                status=429,
                code="too_many_failed_keys",
                headers={"Retry-After": str(retry)},
            )
        try:
            return self.authenticate(headers.auth)
        except AuthError:
            failed.check(address)
            raise

    def rate_limit(self, key_id: bytes | None, n: int = 1, *, take: bool = True) -> None:
        """Take ``n`` tokens of the key's bucket (only look, with ``take`` False), or RateLimited."""
        if self.limiter is None or key_id is None or n <= 0:
            return
        if n > self.limiter.burst:
            raise InvalidRequest(
                f"Invalid request: it asks for {n} sequences (prompts x n), more than this API "
                f"key may send at once ({self.limiter.burst:g}, the api.rate_limit burst "
                "split across replicas); lower n or split the prompts.",
                param="n",
            )
        wait = self.limiter.check(key_id, n, take=take)
        if wait > 0:
            retry = retry_after_seconds(wait)
            raise RateLimited(
                f"Rate limit reached for this API key ({self._limits.rate:g} requests/s, bursts of "
                f"{self._limits.burst}); retry after {retry} s.",
                retry,
            )

    def admit(self, n: int, *, held: int = 0) -> None:
        """Take slots for a request of ``n`` sequences that holds ``held`` already; 503 past the limit."""
        if self.gate.try_acquire(n - held):
            return
        if self.gate.limit is not None and n > self.gate.limit:
            raise InvalidRequest(
                f"Invalid request: it asks for {n} sequences (prompts x n) at once, more than "
                f"one replica admits ({self.gate.limit}); lower n or split the prompts.",
                param="n",
            )
        raise overloaded(f"{self.gate.inflight} sequences are in flight, the most this replica admits")

    def check_model(self, model: Any) -> None:
        if model is None:
            return  # missing or wrongly typed: the request model below names it
        if isinstance(model, str) and len(model) > MAX_MODEL_NAME:
            raise InvalidRequest(
                f"Invalid request: model: at most {MAX_MODEL_NAME} characters, got {len(model)}; "
                f"this server serves: {', '.join(self.models.served_ids())}.",
                param="model",
            )
        if not isinstance(model, str) or not self.models.knows(model):
            shown = shown_name(model) if isinstance(model, str) else repr(model)[:80]
            raise NotFound(
                f"The model {shown} does not exist; this server serves: "
                f"{', '.join(self.models.served_ids())} (see GET /v1/models).",
                param="model",
                code="model_not_found",
            )

    # -- ASGI -----------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (the app's startup/shutdown), websockets: not ours
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = scope.get("method", "GET")
        route = routing_table.match(path)
        if method == "OPTIONS" and route is not None:  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        label = routing_table.route_label(route)
        headers = _Headers(scope)
        held = 0  # admission slots this request holds; released once, however it ends (cancelled included)
        model: Any = None
        try:
            try:
                self._reshare()
                key_id = self._authenticate_from(headers)
                if route is None:
                    raise NotFound(
                        f"Unknown route {method} {path}; this server serves "
                        f"{', '.join(routing_table.SERVED_PATHS)} and /v1/models/{{model}}.",
                        code="unknown_route",
                    )
                if method != route.method:
                    raise MethodNotAllowed(
                        f"Method {method} is not allowed on {path}; use {route.method}.",
                        headers={"Allow": route.method},
                    )
                if route.kind in ("models", "model_card", "openapi", "unsupported"):
                    self.rate_limit(key_id)
                    await self._answer_here(route, path, send)
                    return
                if self.engine_down is not None and self.engine_down():
                    raise engine_down_error()
                self.rate_limit(key_id, take=False)  # refuse before reading the body; tokens are taken by weight
                self.admit(1)
                held = 1
                raw = await read_body(receive, headers.length, self.settings.max_body_bytes)
                data = parse_json(raw)
                model = data.get("model")
                if route.kind == "generate":
                    shape = request_shape(data, chat=path.endswith("chat/completions"), limits=self._shape_limits)
                else:  # /tokenize, /detokenize: a chat form carries messages and tools (rendered into the prompt)
                    check_messages(data, self._shape_limits)
                    check_grammars(data, self._shape_limits)
                    shape = RequestShape(model if isinstance(model, str) else None, 1, False)
                self.check_model(model)
                self.rate_limit(key_id, shape.weight)
                if shape.weight > held:
                    self.admit(shape.weight, held=held)
                    held = shape.weight
            except ClientError as err:
                self._record_refusal(route, label, err, model, started)
                await err.send(send)
                return
            except ConnectionAbortedError:  # the client left while sending its body
                return
            await self._run_app(
                scope,
                _Replay(raw, receive),
                send,
                path,
                data,
                shape,
                label,
                started,
                steers_engine=headers.steers_engine,
            )
        finally:
            if held:
                self.gate.release(held)

    def _record_refusal(
        self, route: routing_table.Route | None, label: str, err: ClientError, model: Any, started: float
    ) -> None:
        """A refusal counts as a response of its route (model routes) and, when it is one, as a refusal."""
        reason = _REFUSAL_REASONS.get(err.status)
        if reason is not None:
            self.metrics.rejected(label, "engine_unavailable" if err.code == "engine_unavailable" else reason)
        if route is not None and route.kind in ("generate", "model_json"):
            tracker = self.metrics.track(label, started)
            tracker.model = model if isinstance(model, str) else None
            tracker.start(err.status, False)
            tracker.finish()

    async def _answer_here(self, route: routing_table.Route, path: str, send: Send) -> None:
        if route.kind == "models":
            await _send_json(send, 200, await self.models.list_models())
        elif route.kind == "model_card":
            model = path[len(routing_table.MODEL_PREFIX) :]
            card = await self.models.model_card(model) if len(model) <= MAX_MODEL_NAME else None
            if card is None:
                raise NotFound(
                    f"The model {shown_name(model)} does not exist; this server serves: "
                    f"{', '.join(self.models.served_ids())}.",
                    param="model",
                    code="model_not_found",
                )
            await _send_json(send, 200, card)
        elif route.kind == "openapi":
            await _send_json(send, 200, self.openapi or {})
        else:
            raise NotFound(
                f"This server's models ({', '.join(self.models.served_ids())}) do not serve "
                f"{route.what} ({route.method} {route.path}); they serve chat and text completions "
                "(/v1/chat/completions, /v1/completions) and /tokenize, /detokenize.",
                code="unsupported_route",
            )

    async def _run_app(
        self,
        scope: Scope,
        replay: Receive,
        send: Send,
        path: str,
        data: dict[str, Any],
        shape: RequestShape,
        label: str,
        started: float,
        *,
        steers_engine: bool,
    ) -> None:
        tracker = self.metrics.track(label, started)
        tracker.model = shape.model
        scope[BODY_SCOPE_KEY] = data
        if steers_engine:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in ENGINE_CONTROL_HEADERS]
        out = _ResponseFilter(send, tracker, self, path, data)
        failed = False
        try:
            await self.app(scope, replay, out)
        except Exception:  # the app raised instead of answering: a 500 without internals
            failed = True
            log.exception("dsserve: %s %s failed in %s", scope.get("method"), path, self.where)
            if not out.started:
                await ClientError(INTERNAL_MESSAGE, status=500, code="internal_error").send(send)
                tracker.start(500, False)
        finally:
            await out.flush()
            tracker.finish(client_gone=not failed, failed=failed)


#: Refusals counted in ``dsserve_rejected_requests`` (admission control, in the dashboards' sense): by status.
_REFUSAL_REASONS = {401: "unauthorized", 413: "too_large", 429: "rate_limited", 503: "overloaded"}


class _Replay:
    """The ``receive`` the app below sees: the body already read, then the client's own messages."""

    __slots__ = ("_body", "_receive", "_sent")

    def __init__(self, body: bytes, receive: Receive | None = None) -> None:
        self._body, self._receive, self._sent = body, receive, False

    async def __call__(self) -> Message:
        if not self._sent:
            self._sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        if self._receive is None:
            return {"type": "http.disconnect"}
        return await self._receive()


class _ResponseFilter:
    """The ``send`` the app below sees: metrics on the way out, and errors rewritten to the one shape.

    A response with status >= 400 is held (error bodies are small) and sent once complete, in the OpenAI
    shape without internals; a 5xx whose cause is the request body becomes the 400 naming the field.
    """

    __slots__ = ("_send", "_tracker", "_pipeline", "_path", "_data", "started", "_held", "_chunks")

    def __init__(self, send: Send, tracker: Any, pipeline: RequestPipeline, path: str, data: dict[str, Any]) -> None:
        self._send, self._tracker, self._pipeline, self._path, self._data = send, tracker, pipeline, path, data
        self.started = False
        self._held: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            if status >= 400:
                self._held = message
                return
            self.started = True
            self._tracker.start(status, _is_event_stream(message.get("headers", ())))
            await self._send(message)
        elif kind == "http.response.body":
            if self._held is not None:
                chunk = message.get("body", b"")
                if chunk:
                    self._chunks.append(chunk)
                if not message.get("more_body", False):
                    await self.flush()
                return
            self._tracker.body(message.get("body", b""))
            await self._send(message)
        else:
            await self._send(message)

    async def flush(self) -> None:
        """Send a held error response (also when the app returned without finishing it)."""
        held, self._held = self._held, None
        if held is None:
            return
        status = held["status"]
        body = b"".join(self._chunks)
        fields = request_model(self._path).model_fields if self._path in _GENERATE_PATHS else ()
        body = normalize_error(status, body, where=f"{self._pipeline.where} {self._path}", fields=fields)
        down = self._pipeline.engine_down
        if status >= 500 and down is not None and down():  # the engine died under this request
            err = engine_down_error()
            status, body = err.status, err.body()
            held["headers"] = [(b"retry-after", str(err.headers["Retry-After"]).encode())]
        if self._path in _GENERATE_PATHS and (status >= 500 or status in (400, 422)):
            # a 5xx the body caused, or vLLM's own validation dump: vLLM's request model names the field in the
            # one wording both modes use (a body that validates keeps the engine's message: context length, ...)
            refused = diagnose(self._path, self._data)
            if refused is not None:
                status, body = refused.status, refused.body()
            elif status == 400:
                body = name_grammar_field(body, self._data)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k, v) for k, v in held.get("headers", ()) if k in _KEPT_ERROR_HEADERS]
        if status == 503:  # refused below the pipeline: the ingress (no engine replica, queue full) or Serve
            code = _code(body)
            self._pipeline.metrics.rejected(
                self._tracker.route, code if code in ("engine_unavailable", "queue_full") else "overloaded"
            )
        self.started = True
        self._tracker.start(status, False)
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


_GENERATE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


def _code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


#: Headers of an error response from below that the client keeps.
_KEPT_ERROR_HEADERS = frozenset({b"retry-after", b"www-authenticate", b"allow", b"x-request-id"})


def _is_event_stream(headers: Any) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"text/event-stream")
    return False
