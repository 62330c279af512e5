"""The live parallel layout of each served model, for ``GET /v1/models`` (``metadata.dsserve``).

Read from the running system, not the YAML: the engine arguments come from the replica itself
(``LLMServer.llm_config()``, the config it was started with, ``core/server/llm_server.py``) and the
replica counts from the Serve controller (``serve.status()``). Operators use it to check that what runs
is what the profile meant (TP/PP/DP sizes, expert parallelism, how many replicas are up), and load-test
reports use it to label the engine real or simulated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["LayoutCache", "layout_from_config", "no_running_replica", "replica_counts", "waiting_in_router"]

CACHE_S = 5.0  # /v1/models is polled by dashboards and health checks; the layout changes on redeploys only


def layout_from_config(cfg: Any) -> dict[str, Any]:
    """TP/PP/DP/EP of one LLM config, real or simulated (the simulator carries the layout it models)."""
    from dsserve.sim import SIM_CONFIG_KEY

    experimental = dict(getattr(cfg, "experimental_configs", None) or {})
    sim = experimental.get(SIM_CONFIG_KEY)
    kwargs = dict(getattr(cfg, "engine_kwargs", None) or {})
    if sim:
        eng = sim.get("engine", {})
        hw = sim.get("hardware", {})
        return {
            "engine": "simulated",
            "tensor_parallel_size": eng.get("tensor_parallel_size", 1),
            "pipeline_parallel_size": eng.get("pipeline_parallel_size", 1),
            "data_parallel_size": eng.get("data_parallel_size", 1),
            "expert_parallel": bool(eng.get("enable_expert_parallel", False)),
            "modelled_accelerator": hw.get("accelerator", "cpu"),
        }
    return {
        "engine": "vllm",
        "tensor_parallel_size": kwargs.get("tensor_parallel_size", 1),
        "pipeline_parallel_size": kwargs.get("pipeline_parallel_size", 1),
        "data_parallel_size": kwargs.get("data_parallel_size", 1),
        "expert_parallel": bool(kwargs.get("enable_expert_parallel", False)),
        "max_model_len": kwargs.get("max_model_len"),
    }


def replica_counts(model_id: str) -> dict[str, int]:
    """Running and target replicas of the model's engine deployment, from the Serve controller."""
    from ray import serve

    running = total = 0
    for app in serve.status().applications.values():
        for name, dep in app.deployments.items():
            if name.endswith(f":{model_id}") or name == model_id:
                counts = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states or {}).items()}
                running += counts.get("RUNNING", 0)
                total += sum(v for k, v in counts.items() if k != "STOPPING")
    return {"replicas_running": running, "replicas_total": total}


class LayoutCache:
    """Per-model live layouts, refreshed at most every :data:`CACHE_S` seconds.

    ``config`` is an awaitable factory of the model's LLM config: the engine replica's own
    (``handle.llm_config.remote()`` from the ingress; the replica's attribute in direct mode).
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, model_id: str, handle: Any = None, *, config: Any = None) -> dict[str, Any]:
        hit = self._cache.get(model_id)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
        try:
            cfg = await (config() if config is not None else handle.llm_config.remote())
            info = layout_from_config(cfg)
            info.update(await asyncio.to_thread(replica_counts, model_id))
            info["source"] = "live: the replica's own LLM config and the Serve controller's replica states"
        except Exception as exc:  # the model listing must not fail because the layout could not be read
            info = {"error": f"layout unavailable: {type(exc).__name__}"}
        self._cache[model_id] = (time.monotonic(), info)
        return info


def no_running_replica(handle: Any) -> bool:
    """True when the handle's router, having had engine replicas, now has none to send a request to.

    When the only engine replica dies, Ray Serve's router holds new requests until a replacement is up
    (40-70 s for the tiny CPU model, minutes for a large checkpoint): clients see a hang, not an error.
    The ingress asks this before each request, and while one waits for its first answer (with
    :func:`waiting_in_router`), and answers 503 + Retry-After instead. The answer is the router's own
    replica set, which the Serve controller pushes to every handle (long poll) and the router prunes at
    once when a replica actor dies: no call on the request path, and no staleness. (An earlier version
    asked the controller through ``serve.status()`` once a second while requests flowed: it builds the
    whole instance description, about 10 ms of CPU per call on the development VM, in a thread of the
    ingress holding its GIL; 5 % of the ingress's py-spy samples in benchmark B's profile.)

    Unknown counts as up: no router yet (the handle has not sent a request), replicas never seen yet, or a
    Ray whose router internals differ (``tests/unit/test_layout.py`` pins the attributes read here to
    Ray's ``serve/_private/router.py`` and ``request_router/request_router.py``).
    """
    inner = _asyncio_router(handle)
    if inner is None:
        return False
    try:
        if not inner.running_replicas_populated():
            return False
        request_router = inner._request_router
        replicas = request_router.curr_replicas if request_router is not None else inner._running_replicas
        return len(replicas) == 0
    except Exception:  # a Ray upgrade must not turn this check into a 500
        return False


def waiting_in_router(handle: Any, internal_request_id: str | None) -> bool:
    """True while the request with this id is queued in the handle's router, not yet given to a replica.

    The router's empty replica set cannot tell a dead replica from a draining one (SIGTERM, an upgrade):
    both leave the set. A request queued in the router waits for a replacement (cancel it: 503), one
    already on a draining replica is being finished (leave it). Serve's router keeps unassigned requests
    as ``PendingRequest`` entries whose future is set on assignment; the id is the ingress request's own
    (Serve copies ``_internal_request_id`` from the request context into the handle call's metadata,
    ``serve/_private/default_impl.py`` ``get_request_metadata``). Unknown counts as not waiting.
    """
    inner = _asyncio_router(handle)
    if inner is None or not internal_request_id:
        return False
    try:
        request_router = inner._request_router
        if request_router is None:
            return False
        return any(
            pr.metadata.internal_request_id == internal_request_id and not pr.future.done()
            for pr in list(request_router._pending_requests_to_fulfill)
        )
    except Exception:  # as above
        return False


def _asyncio_router(handle: Any) -> Any:
    """The AsyncioRouter behind a handle (CurrentLoopRouter and SingletonThreadRouter both wrap one)."""
    return getattr(getattr(handle, "_router", None), "_asyncio_router", None)
