"""Direct mode: HAProxy reaches the engine replicas themselves, and each runs the request pipeline.

This is ray.serve.llm's direct streaming (``core/ingress/builder.py``,
``_build_direct_streaming_llm_deployment``): the ``LLMServer`` deployment is the Serve application's
ingress, so HAProxy sends each HTTP request straight to an engine replica's own HTTP port, where the
engine's native OpenAI app (vLLM's ``build_app``, from ``VLLMEngine.build_asgi_app``) answers it. There
is no ingress replica and no replica-to-replica hop, and every engine replica is also a gateway: the
gateway scales with the engines.

What dsserve adds, through Serve's own hook for a late-bound ASGI app (``__serve_build_asgi_app__``,
``serve/api.py`` ``ingress``): the app each replica serves is vLLM's wrapped in the request pipeline
(:mod:`dsserve.serving.pipeline`), so keys, rate limits, admission, body and shape limits, OpenAI-shaped
errors and dsserve's metrics hold on every route, as in ingress mode. The limits are each replica's share
of the spec's (:mod:`dsserve.serving.shares`).

Routing: with ``serving.router: power_of_two`` HAProxy balances by least connections (its
``leastconn``, Ray's default ``RAY_SERVE_HAPROXY_BALANCE_ALGORITHM``): every request goes to the replica
with the fewest requests in flight, which is what power-of-two-choices approximates from two samples,
without the HTTP round trip to Serve's ingress request router (``LLMRouter``) that a Serve-side router
costs per request. With ``prefix_cache_affinity`` the choice needs the prompt: HAProxy asks the
``LLMRouter`` deployment (``/internal/route``, the body forwarded with
``RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY=1``), which runs dsserve's prefix-affinity router
(:mod:`dsserve.serving.routing`) on its handle, and HAProxy then sends the request to the chosen replica.

Serve itself must not queue or refuse before the pipeline sees a request (its refusal is a plain-text 503),
so the deployment's ``max_ongoing_requests`` is the replica's admission share plus headroom and its
``max_queued_requests`` is unbounded (:func:`dsserve.app.direct_deployment_config`); past the
pipeline's gate, requests wait in vLLM's scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
from ray.llm._internal.serve.serving_patterns.data_parallel.dp_server import DPServer as _UpstreamDPServer

from dsserve.serving.layout import LayoutCache
from dsserve.serving.openapi import openapi_for
from dsserve.serving.pipeline import PipelineSettings, RequestPipeline
from dsserve.serving.server import LLMServer as _DsserveLLMServer
from dsserve.serving.server import ensure_local_model
from dsserve.serving.shares import LiveReplicas

__all__ = ["DPServer", "LLMServer", "ReplicaModels", "PIPELINE_CONFIG_KEY", "SERVER_CLS"]

log = logging.getLogger("ray.serve")

#: Where the pipeline's settings travel to the replica: ``LLMConfig.experimental_configs[...]``.
PIPELINE_CONFIG_KEY = "dsserve_api"
#: The class rendered Serve YAML names for direct mode.
SERVER_CLS = "dsserve.serving.direct:LLMServer"


def pipeline_settings(llm_config: Any) -> PipelineSettings:
    return PipelineSettings.from_dict((llm_config.experimental_configs or {}).get(PIPELINE_CONFIG_KEY))


class ReplicaModels:
    """The pipeline's model directory inside an engine replica: the one model it serves."""

    def __init__(self, llm_config: Any, replicas: LiveReplicas) -> None:
        self._config = llm_config
        self._id = llm_config.model_id
        self._replicas = replicas
        self._layouts = LayoutCache()

    def knows(self, model: str) -> bool:
        return model == self._id

    def served_ids(self) -> list[str]:
        return [self._id]

    async def _card(self) -> dict[str, Any]:
        card = to_model_metadata(self._id, self._config).model_dump()

        async def config() -> Any:
            return self._config

        card["metadata"]["dsserve"] = await self._layouts.get(self._id, config=config)
        return card

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [await self._card()]}

    async def model_card(self, model: str) -> dict[str, Any] | None:
        return await self._card() if model == self._id else None


#: Middleware of vLLM's app that does nothing a client or an operator can see in direct mode:
#: prometheus-fastapi-instrumentator times every request (and wraps every streamed chunk) into the replica
#: process's prometheus_client registry, which only vLLM's ``/metrics`` route serves, and the pipeline keeps
#: that route unreachable (the deployment's metrics are Ray's, on each node's metrics port).
UNREACHABLE_MIDDLEWARE = frozenset({"PrometheusInstrumentatorMiddleware"})


def without_unreachable_middleware(app: Any) -> Any:
    """vLLM's FastAPI app without :data:`UNREACHABLE_MIDDLEWARE` (its stack is rebuilt at the first request)."""
    kept = [
        m for m in getattr(app, "user_middleware", []) if getattr(m.cls, "__name__", "") not in UNREACHABLE_MIDDLEWARE
    ]
    if hasattr(app, "user_middleware") and len(kept) != len(app.user_middleware):
        app.user_middleware = kept
        app.middleware_stack = None
    return app


def engine_is_dead(engine: Any) -> bool:
    """Whether the replica's engine has died (vLLM: its AsyncLLM ``errored``; the simulator: its core task).

    Cheap (an attribute), so the pipeline asks it on every request; Serve's health check then replaces the
    replica. Unknown counts as alive.
    """
    client = getattr(engine, "_engine_client", None)
    if client is not None:
        try:
            return bool(client.errored)
        except Exception:  # an engine client of another vLLM: unknown is alive
            return False
    error = getattr(engine, "engine_error", None)
    return bool(error()) if callable(error) else False


class PipelineApp:
    """Mixin for an engine replica class: serve the engine's app behind the request pipeline."""

    _llm_config: Any
    engine: Any

    # Serve allows an async __init__ (ray.serve.llm's LLMServer has one); mypy does not, hence the ignore
    async def __init__(self, llm_config: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]
        from dsserve.serving.auth import MIN_KEY_CHARS, KeyStore

        settings = pipeline_settings(llm_config)
        # Fail before the engine loads (minutes for a large model) when a configured key source is empty or weak.
        KeyStore(env=settings.api_keys_env, path=settings.api_keys_file, min_key_chars=MIN_KEY_CHARS)
        # a mixin: the next class in the MRO is ray.serve.llm's LLMServer, whose __init__ is async
        await super().__init__(llm_config, *args, **kwargs)  # type: ignore[misc,call-arg]  # object.__init__ to mypy

    async def __serve_build_asgi_app__(self) -> Any:
        app = without_unreachable_middleware(await self.engine.build_asgi_app())
        settings = pipeline_settings(self._llm_config)
        replicas = LiveReplicas.of_this_deployment(settings.replicas)
        pipeline = RequestPipeline(
            app,
            settings,
            ReplicaModels(self._llm_config, replicas),
            replicas=replicas,
            openapi=openapi_for(settings),
            where="engine replica",
            engine_down=lambda: engine_is_dead(self.engine),
        )
        pipeline.metrics.start()
        self._pipeline = pipeline
        return pipeline


class LLMServer(PipelineApp, _DsserveLLMServer):
    """dsserve's engine replica in direct mode: vLLM's OpenAI app behind the request pipeline.

    Named ``LLMServer`` like its parents: the deployment is named after the class (``LLMServer:<model
    id>``), and the dashboards, alerts and runbook select on that name.
    """


class DPServer(PipelineApp, _UpstreamDPServer):
    """A data-parallel-attention rank in direct mode (ray.serve.llm's ``DPServer``, named like it)."""

    async def _start_engine(self) -> None:
        # upstream's DPServer does not derive from dsserve's LLMServer, which does this for the other replicas
        await asyncio.to_thread(ensure_local_model, self._llm_config)
        await super()._start_engine()
