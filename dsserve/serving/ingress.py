"""Ingress mode: dsserve's OpenAI ingress, ray.serve.llm's ``OpenAiIngress`` behind the request pipeline.

For deployments that need a separate ingress tier (several models, LoRA adapters routed by Serve's
model multiplexing): HAProxy reaches these ingress replicas, which run the request pipeline
(:mod:`dsserve.serving.pipeline`: keys, limits, admission, body checks, errors, metrics, on every route)
and hand each request to an engine replica over a Serve handle. Plugged in through ray.serve.llm's own
extension point, ``ingress_cls_config.ingress_cls``; the pipeline wraps the FastAPI app the moment
Serve hands it over (``_set_asgi_app``).

What the ingress itself still corrects in upstream's request handling (ray 2.60.0):

- The chat and completions routes build vLLM's request model from the body the pipeline parsed, and
  every way that can fail is a 400 naming the field (:func:`dsserve.serving.body.validate_request`).
  Upstream answered 500 for a body vLLM's validators crash on (``messages: true``), and put raw bytes in
  a JSON error for a non-JSON body (``core/ingress/middleware.py:_handle_validation_error``).
- Engine errors arrive as ``"Message: ... Internal exception: ..."`` with ``type: OpenAIHTTPException``
  (``utils/server_utils.py:get_response_for_error``), or as a RayTaskError carrying the replica's
  traceback; clients get the plain message, OpenAI's types, and no internals.
- A dead engine replica: 503 + Retry-After at once, also for a request already waiting in Serve's
  router for a replacement (:mod:`dsserve.serving.layout`), instead of a hang of a minute or more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

# OpenAIHTTPException has no public alias; it is what upstream raises for engine-reported errors.
from ray.llm._internal.common.errors import VLLM_CLIENT_ERRORS
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from ray.serve.exceptions import BackPressureError
from ray.serve.llm.ingress import OpenAiIngress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from starlette.responses import Response, StreamingResponse

from dsserve.lora import AdapterTable
from dsserve.serving.body import validate_request
from dsserve.serving.errors import (
    ClientError,
    InvalidRequest,
    Unavailable,
    clean_upstream_message,
    engine_down_error,
    error_body,
    overloaded,
    param_of,
)
from dsserve.serving.layout import LayoutCache, no_running_replica, waiting_in_router
from dsserve.serving.openapi import openapi_for
from dsserve.serving.pipeline import BODY_SCOPE_KEY, PipelineSettings, RequestPipeline
from dsserve.serving.shares import LiveReplicas

__all__ = ["DsserveIngress", "IngressModels", "engine_unavailable"]

log = logging.getLogger("ray.serve")

#: Errors the engine raises for a request it cannot take (vLLM maps them to 400 in its own server).
ENGINE_INPUT_ERRORS = (ValueError, OverflowError)
#: While a request waits for its first answer, how often to check that the engine still has a replica.
ENGINE_WAIT_CHECK_S = 1.0

#: Exceptions (by class name, anywhere in the cause chain) meaning the engine replica, not the request, failed:
#: vLLM's EngineDeadError, and Ray's errors for a dead, unreachable or unscheduled replica actor.
_ENGINE_DOWN = frozenset(
    {
        "EngineDeadError",
        "ActorDiedError",
        "ActorUnavailableError",
        "RayActorError",
        "ActorUnschedulableError",
        "DeploymentUnavailableError",
        "WorkerCrashedError",
    }
)


class _NoEngineReplica(Exception):
    """The engine lost its last running replica while a request waited in Serve's router."""


def engine_unavailable(exc: BaseException) -> bool:
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


def _engine_down(why: str) -> Unavailable:
    return engine_down_error(why)


def engine_error(exc: BaseException, model_fields: Any) -> ClientError:
    """What the client gets for an exception raised by (or on the way to) the engine replica."""
    if isinstance(exc, OpenAIHTTPException):
        code = int(exc.status_code)
        message = clean_upstream_message(exc.message)
        if code >= 500:
            return ClientError(
                "The server could not complete the request: " + message, status=code, code="engine_error"
            )
        return ClientError(message, status=code, param=param_of(message, model_fields))
    cause = getattr(exc, "cause", None) or exc
    if VLLM_CLIENT_ERRORS and isinstance(cause, VLLM_CLIENT_ERRORS):
        message = str(cause).strip() or cause.__class__.__name__
        return InvalidRequest(message, param=param_of(message, model_fields))
    if isinstance(cause, ENGINE_INPUT_ERRORS) and not engine_unavailable(exc):
        # vLLM's own server answers these 400 too (its serving layer maps ValueError to a BadRequestError):
        # e.g. a prompt token id outside the vocabulary, or one too large for int64.
        message = (str(cause).strip() or cause.__class__.__name__).splitlines()[0][:500]
        return InvalidRequest(f"Invalid request: {message}", param=param_of(message, model_fields))
    if engine_unavailable(exc):
        return _engine_down("its engine replica failed and Serve is replacing it")
    return ClientError(
        "The server could not complete the request (an internal error; the ingress log has the details).",
        status=500,
        code="internal_error",
    )


class IngressModels:
    """The pipeline's model directory in ingress mode: ray.serve.llm's model cards, LoRA adapters, live layouts.

    ``cards`` are the ingress's base-model cards (``ModelCard`` by model id), ``lora`` the adapter tables by
    base model id; ``layout`` (model id -> the live layout, ``metadata.dsserve``) is asked for base models
    when they are listed. Upstream lists adapters only from a cloud ``dynamic_lora_loading_path``; these
    are listed from the tables.
    """

    def __init__(
        self,
        cards: dict[str, Any],
        lora: dict[str, AdapterTable],
        layout: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._cards, self._lora, self._layout = cards, lora, layout

    def knows(self, model: str) -> bool:
        base, _, adapter = model.partition(":")  # ray.serve.llm's get_base_model_id splits at the first ':'
        if base not in self._cards:
            return False
        if model == base:
            return True
        table = self._lora.get(base)
        return table is not None and table.path(adapter) is not None

    def served_ids(self) -> list[str]:
        """Every model id this server answers: base models and their LoRA adapters (``<base>:<adapter>``)."""
        return sorted(self._cards) + [m for t in self._lora.values() for m in t.model_ids()]

    def card(self, model: str) -> Any:
        """The card of a base model, or of a served adapter (its base's card, renamed); None otherwise."""
        if model in self._cards:
            return self._cards[model]
        if not self.knows(model):
            return None
        base = model.split(":", 1)[0]
        base_card = self._cards[base]
        return base_card.model_copy(
            update={"id": model, "metadata": {**base_card.metadata, "model_id": model, "base_model_id": base}}
        )

    async def list_models(self) -> dict[str, Any]:
        data = []
        for model in self.served_ids():
            card = self.card(model).model_dump()
            if model in self._cards and self._layout is not None:
                card["metadata"]["dsserve"] = await self._layout(model)
            data.append(card)
        return {"object": "list", "data": data}

    async def model_card(self, model: str) -> dict[str, Any] | None:
        card = self.card(model)
        return None if card is None else card.model_dump()


class DsserveIngress(OpenAiIngress):
    """OpenAiIngress behind the request pipeline, with engine errors and dead replicas made right.

    Keyword arguments (``ingress_cls_config.ingress_extra_kwargs``, rendered from the spec): the fields
    of :class:`~dsserve.serving.pipeline.PipelineSettings` (API keys, rate limit, admission limit, body
    and shape limits, replica count), and ``lora_adapters``: ``{base model id: adapter table}``
    (:class:`dsserve.lora.AdapterTable`, set by ``dsserve.app.build_openai_app`` from ``model.lora``).
    ``<base>:<adapter>`` requests for an adapter in it are routed upstream's way (Serve multiplexing);
    any other adapter is an OpenAI 404 from the pipeline. Upstream lists adapters only from a cloud
    ``dynamic_lora_loading_path``; these are listed on ``GET /v1/models`` from the table.
    """

    def __init__(self, *args: Any, lora_adapters: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> None:
        fields = set(PipelineSettings.__dataclass_fields__)
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(*args, **kwargs)
        lora = {base: AdapterTable.from_config(base, table) for base, table in (lora_adapters or {}).items()}
        self._layouts = LayoutCache()
        self.model_directory = IngressModels(self._model_cards, lora, layout=self._layout)
        self._settings = PipelineSettings.from_dict(settings)
        self.pipeline: RequestPipeline | None = None
        # build the pipeline now, so a configured key source without keys fails the replica at start
        self._pipeline_for(None)

    def _pipeline_for(self, app: Any) -> RequestPipeline:
        if self.pipeline is None:
            self.pipeline = RequestPipeline(
                app,
                self._settings,
                self.model_directory,
                replicas=LiveReplicas.of_this_deployment(self._settings.replicas),
                openapi=openapi_for(self._settings),
                where="ingress",
            )
            self.pipeline.metrics.start()
        self.pipeline.app = app
        return self.pipeline

    def _set_asgi_app(self, app: Any) -> None:
        """Put the request pipeline in front of the FastAPI app before Serve starts serving it.

        Ray Serve's ``ASGIAppReplicaWrapper._set_asgi_app`` (ray 2.60.0, serve/_private/http_util.py) is the
        one moment this class sees its FastAPI app: ``make_fastapi_ingress`` creates the app itself and the
        ingress wrapper hands it over after ``__init__``. A Ray upgrade that renames it fails the e2e tests
        for auth and unknown routes, not users silently.
        """
        super()._set_asgi_app(self._pipeline_for(app))

    async def _layout(self, model_id: str) -> dict[str, Any]:
        handle = getattr(self, "_default_serve_handles", {}).get(model_id)
        if handle is None:
            return {"error": "layout unavailable: no handle for this model"}
        return await self._layouts.get(model_id, handle)

    async def model(self, model_id: str) -> Any:
        """Upstream's model lookup, answering adapters from the tables (upstream reads cloud storage)."""
        return self.model_directory.card(model_id)

    # -- chat and completions ------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        """POST /v1/chat/completions: the body the pipeline checked, as vLLM's request model, to the engine."""
        return await self._generate(request, ChatCompletionRequest, "chat")

    async def completions(self, request: Request) -> Response:
        """POST /v1/completions: as :meth:`chat`."""
        return await self._generate(request, CompletionRequest, "completions")

    async def _generate(self, request: Request, model_cls: Any, call_method: str) -> Response:
        data = request.scope.get(BODY_SCOPE_KEY)
        if data is None:  # not through the pipeline (cannot happen once Serve serves the app)
            return InvalidRequest("The request body is missing.").response()
        try:
            body = validate_request(model_cls, data)
            return await self._serve(body, call_method, request)
        except ClientError as err:
            return err.response()

    async def _serve(self, body: Any, call_method: str, request: Request) -> Response:
        if self._no_engine_replica(getattr(body, "model", None)):
            raise _engine_down("no engine replica is running (Serve is starting or replacing it)")
        try:
            return await self._first_answer(body, call_method, request)
        except _NoEngineReplica:
            raise _engine_down("no engine replica is running (Serve is starting or replacing it)") from None
        except BackPressureError:
            full = overloaded("the model's request queue is full (serving.max_queued_requests)")
            full.code = "queue_full"
            raise full from None
        except ClientError:
            raise
        except Exception as exc:  # raised by the engine replica (arrives as a RayTaskError) or on the way
            err = engine_error(exc, type(body).model_fields)
            if err.status == 500:
                log.exception("dsserve ingress: %s request failed", call_method)
            elif err.status == 503:
                log.warning(
                    "dsserve ingress: %s request failed, engine unavailable: %s",
                    call_method,
                    type(getattr(exc, "cause", None) or exc).__name__,
                )
            raise err from None

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
                    response = task.result()
                    if isinstance(response, StreamingResponse):
                        response.body_iterator = _errors_in_stream(response.body_iterator)
                    return response
                if self._queued_without_replica(model):
                    raise _NoEngineReplica()
        finally:
            if not task.done():
                task.cancel()

    def _no_engine_replica(self, model: str | None) -> bool:
        """True when the router of the model's handle has no running engine replica (dsserve/serving/layout.py)."""
        handle = self._handle_in_use(model)
        return handle is not None and no_running_replica(handle)

    def _queued_without_replica(self, model: str | None) -> bool:
        """This request (the one whose context this runs in) is still queued in a router with no replica."""
        from ray.serve.context import _get_serve_request_context

        handle = self._handle_in_use(model)
        return (
            handle is not None
            and no_running_replica(handle)
            and waiting_in_router(handle, _get_serve_request_context()._internal_request_id)
        )

    def _handle_in_use(self, model: str | None) -> Any:
        """The handle OpenAiIngress sends this model's requests through (its router holds the replica set)."""
        handles = getattr(self, "_configured_serve_handles", None)
        if not model or not handles:
            return None
        from ray.llm._internal.common.utils.lora_utils import get_base_model_id

        return handles.get(model) or handles.get(get_base_model_id(model))


async def _errors_in_stream(body: Any) -> Any:
    """A stream whose engine fails after the 200 went out ends with an OpenAI error event, not a traceback."""
    try:
        async for chunk in body:
            yield chunk
    except Exception as exc:  # the header is sent; the error can only travel in the stream
        err = engine_error(exc, ())
        if err.status >= 500:
            log.warning("dsserve ingress: stream failed: %s", type(getattr(exc, "cause", None) or exc).__name__)
        yield b"data: " + error_body(err.status, err.message, param=err.param, code=err.code) + b"\n\n"
