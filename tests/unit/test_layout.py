"""GET /v1/models' live layout: read from the config a replica runs, real or simulated."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

from dsserve.app import llm_config
from dsserve.config import load_spec
from dsserve.serving.layout import layout_from_config, no_running_replica, waiting_in_router
from tests.conftest import REPO


def _running(profile: str) -> SimpleNamespace:
    cfg = llm_config(load_spec(REPO / "deploy/profiles" / f"{profile}.yaml"))
    return SimpleNamespace(engine_kwargs=cfg["engine_kwargs"], experimental_configs=cfg["experimental_configs"])


def test_a_real_engine_reports_its_engine_arguments() -> None:
    live = layout_from_config(_running("local-cpu-tp2-ep"))
    assert (live["engine"], live["tensor_parallel_size"], live["expert_parallel"]) == ("vllm", 2, True)


def test_a_simulated_engine_reports_the_layout_it_models_not_its_cpu_bundle() -> None:
    live = layout_from_config(_running("sim-h800x8-deepseek-v2"))
    assert (live["engine"], live["tensor_parallel_size"], live["expert_parallel"], live["modelled_accelerator"]) == (
        "simulated",
        8,
        True,
        "h800",
    )


def test_no_running_replica_reads_the_routers_replica_set_and_counts_unknown_as_up() -> None:
    """Down only when the router has had replicas and has none now; anything it cannot read counts as up."""

    def handle(populated: bool, replicas: dict[str, object] | None, pending: list[object] | None = None) -> Any:
        inner = SimpleNamespace(
            running_replicas_populated=lambda: populated,
            _running_replicas=pending,
            _request_router=None if replicas is None else SimpleNamespace(curr_replicas=replicas),
        )
        return SimpleNamespace(_router=SimpleNamespace(_asyncio_router=inner))

    assert no_running_replica(handle(True, {}))  # the only replica died: the controller pushed an empty set
    assert not no_running_replica(handle(True, {"r1": object()}))
    assert not no_running_replica(handle(False, {}))  # never had replicas yet: starting up, let Serve wait
    assert no_running_replica(handle(True, None, pending=[]))  # router class not built yet, empty push
    assert not no_running_replica(SimpleNamespace(_router=None))  # no request sent through this handle yet
    assert not no_running_replica(SimpleNamespace(_router=SimpleNamespace()))  # internals not as expected
    assert not no_running_replica(SimpleNamespace(_router=SimpleNamespace(_asyncio_router=object())))


def test_the_ray_router_internals_it_reads_are_still_there() -> None:
    """A Ray upgrade that renames these makes the check answer 'up' always; this test says so first."""
    from ray.serve._private import router
    from ray.serve._private.request_router.request_router import RequestRouter

    for wrapper in (router.CurrentLoopRouter, router.SingletonThreadRouter):
        assert "self._asyncio_router = AsyncioRouter(" in inspect.getsource(wrapper.__init__), wrapper
    init = inspect.getsource(router.AsyncioRouter.__init__)
    assert "self._request_router" in init and "self._running_replicas" in init
    assert callable(router.AsyncioRouter.running_replicas_populated)
    assert isinstance(inspect.getattr_static(RequestRouter, "curr_replicas"), property)
    assert "self._pending_requests_to_fulfill" in inspect.getsource(RequestRouter.__init__)
    from ray.serve._private.default_impl import get_request_metadata

    assert "internal_request_id=_request_context._internal_request_id" in inspect.getsource(get_request_metadata)
    from ray.serve._private.replica import Replica

    # the ingress's request context carries the id its handle calls are queued under
    assert "_internal_request_id=request_metadata.internal_request_id" in inspect.getsource(Replica._wrap_request)


def test_only_a_request_still_queued_in_the_router_counts_as_waiting() -> None:
    """Queued (future not set) -> waiting; assigned to a replica (future set) or unknown id -> not."""

    def pending(request_id: str, assigned: bool) -> SimpleNamespace:
        return SimpleNamespace(
            metadata=SimpleNamespace(internal_request_id=request_id), future=SimpleNamespace(done=lambda: assigned)
        )

    queue = [pending("on-a-draining-replica", True), pending("queued", False)]
    router = SimpleNamespace(_request_router=SimpleNamespace(_pending_requests_to_fulfill=queue))
    handle = SimpleNamespace(_router=SimpleNamespace(_asyncio_router=router))
    assert waiting_in_router(handle, "queued")
    assert not waiting_in_router(handle, "on-a-draining-replica")
    assert not waiting_in_router(handle, "someone-else")
    assert not waiting_in_router(handle, None)
    assert not waiting_in_router(SimpleNamespace(_router=None), "queued")
