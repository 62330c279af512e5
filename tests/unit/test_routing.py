"""The prefix-affinity router's workaround (dsserve/serving/routing.py): upstream still blocks, ours awaits and decides."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import PrefixCacheAffinityRouter
from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import PrefixTree
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID

from dsserve.app import llm_config
from dsserve.config import load_spec
from dsserve.serving.routing import ROUTER_CLASS, NonBlockingPrefixCacheAffinityRouter
from tests.conftest import REPO


def test_upstream_still_blocks_on_the_prefix_tree_actor() -> None:
    """When this fails, Ray stopped calling ray.get in the router's coroutines: drop dsserve/serving/routing.py."""
    for method in ("_prefix_match_best_replicas", "on_request_routed"):
        assert "ray.get(" in inspect.getsource(getattr(PrefixCacheAffinityRouter, method)), method
    for method in ("_prefix_match_best_replicas", "on_request_routed"):
        assert "ray.get(" not in inspect.getsource(getattr(NonBlockingPrefixCacheAffinityRouter, method))


class _Tree:
    """Ray's own PrefixTree behind actor-style ``.method.remote()`` calls that return awaitables, as ObjectRefs are."""

    def __init__(self) -> None:
        self.tree = PrefixTree()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def remote(*args: Any) -> asyncio.Future[Any]:
            self.calls.append(name)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(getattr(self.tree, name)(*args))
            return done

        return SimpleNamespace(remote=remote)


def _request(text: str) -> SimpleNamespace:
    return SimpleNamespace(args=[SimpleNamespace(messages=[{"role": "user", "content": text}])])


def test_routes_to_the_replica_holding_the_prefix_and_otherwise_to_the_smallest() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str], list[str]]:
        dep = DeploymentID(name="LLMServer:m", app_name="app")
        router = NonBlockingPrefixCacheAffinityRouter(
            deployment_id=dep, handle_source=DeploymentHandleSource.REPLICA, use_replica_queue_len_cache=True)
        tree = _Tree()
        router.initialize_state(tree_actor=tree)
        replicas = [SimpleNamespace(replica_id=ReplicaID(unique_id=u, deployment_id=dep), max_ongoing_requests=8)
                    for u in ("a", "b")]
        for r in replicas:
            router._replicas[r.replica_id] = r
            router._replica_queue_len_cache.update(r.replica_id, 0)
        tree.tree.add_tenants([r.replica_id.to_full_id_str() for r in replicas], 0.0)

        long_prompt = "You are a careful assistant. Answer in one line. " * 4
        router.on_request_routed(_request(long_prompt), replicas[1].replica_id, None)  # sent, not awaited
        await asyncio.sleep(0)
        same_prefix = await router._prefix_match_best_replicas(_request(long_prompt + "What is 2+2?"), replicas)
        tree.tree.insert("x" * 500, replicas[1].replica_id.to_full_id_str(), 1.0)
        unrelated = await router._prefix_match_best_replicas(_request("Translate 'cat' to French."), replicas)
        empty = await router._prefix_match_best_replicas(_request(""), replicas)
        return ([r.replica_id.unique_id for r in same_prefix[0]], [r.replica_id.unique_id for r in unrelated[0]],
                [r.replica_id.unique_id for r in empty[0]], tree.calls)

    same_prefix, unrelated, empty, calls = asyncio.run(scenario())
    assert same_prefix == ["b"]  # b served the shared system prompt
    assert unrelated == ["a"]  # no match: the replica with the smallest tree
    assert empty == ["a"]  # upstream divides by the prompt's length here (ZeroDivisionError)
    assert calls[0] == "insert" and calls.count("prefix_match") == 3


def test_profiles_that_ask_for_prefix_affinity_get_the_non_blocking_router() -> None:
    cfg = llm_config(load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2.yaml"))
    assert cfg["deployment_config"]["request_router_config"]["request_router_class"] == ROUTER_CLASS
