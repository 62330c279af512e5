"""The prefix-affinity router's workaround (dsserve/serving/routing.py): upstream still blocks, ours awaits and
decides."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
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


def _router_with(tree: Any) -> tuple[NonBlockingPrefixCacheAffinityRouter, list[Any]]:
    dep = DeploymentID(name="LLMServer:m", app_name="app")
    router = NonBlockingPrefixCacheAffinityRouter(
        deployment_id=dep, handle_source=DeploymentHandleSource.REPLICA, use_replica_queue_len_cache=True
    )
    router.initialize_state(tree_actor=tree)
    replicas = [
        SimpleNamespace(replica_id=ReplicaID(unique_id=u, deployment_id=dep), max_ongoing_requests=8)
        for u in ("a", "b")
    ]
    for r in replicas:
        router._replicas[r.replica_id] = r
        router._replica_queue_len_cache.update(r.replica_id, 0)
    return router, replicas


def test_routes_to_the_replica_holding_the_prefix_and_otherwise_to_the_smallest() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str], list[str]]:
        tree = _Tree()
        router, replicas = _router_with(tree)
        tree.tree.add_tenants([r.replica_id.to_full_id_str() for r in replicas], 0.0)

        long_prompt = "You are a careful assistant. Answer in one line. " * 4
        router.on_request_routed(_request(long_prompt), replicas[1].replica_id, None)  # sent, not awaited
        await asyncio.sleep(0)
        same_prefix = await router._prefix_match_best_replicas(_request(long_prompt + "What is 2+2?"), replicas)
        tree.tree.insert("x" * 500, replicas[1].replica_id.to_full_id_str(), 1.0)
        unrelated = await router._prefix_match_best_replicas(_request("Translate 'cat' to French."), replicas)
        empty = await router._prefix_match_best_replicas(_request(""), replicas)
        return (
            [r.replica_id.unique_id for r in same_prefix[0]],
            [r.replica_id.unique_id for r in unrelated[0]],
            [r.replica_id.unique_id for r in empty[0]],
            tree.calls,
        )

    same_prefix, unrelated, empty, calls = asyncio.run(scenario())
    assert same_prefix == ["b"]  # b served the shared system prompt
    assert unrelated == ["a"]  # no match: the replica with the smallest tree
    assert empty == ["a"]  # upstream divides by the prompt's length here (ZeroDivisionError)
    assert calls[0] == "insert" and calls.count("prefix_match") == 3


def test_profiles_that_ask_for_prefix_affinity_get_the_non_blocking_router() -> None:
    cfg = llm_config(load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2.yaml"))
    assert cfg["deployment_config"]["request_router_config"]["request_router_class"] == ROUTER_CLASS


class _DeadTree:
    """A tree actor that died (every call fails) or hangs (no call ever answers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __getattr__(self, name: str) -> Any:
        def remote(*args: Any) -> asyncio.Future[Any]:
            from ray.exceptions import RayActorError

            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if self.mode == "dead":
                future.set_exception(RayActorError())
            return future

        return SimpleNamespace(remote=remote)


@pytest.mark.parametrize("mode", ["dead", "hung"])
def test_a_failed_tree_routes_by_load_instead(mode: str) -> None:
    """No choice from the tree (an empty list) is what makes upstream's choose_replicas use power of two."""
    from dsserve.serving.routing import TREE_TIMEOUT_S

    async def scenario() -> tuple[list[Any], float]:
        router, replicas = _router_with(_DeadTree(mode))
        t0 = asyncio.get_running_loop().time()
        chosen = await router._prefix_match_best_replicas(_request("hello"), replicas)
        return chosen, asyncio.get_running_loop().time() - t0

    chosen, took = asyncio.run(scenario())
    assert chosen == [[]]
    assert took < TREE_TIMEOUT_S + 0.5


def test_the_tree_stores_only_a_prompts_prefix() -> None:
    from dsserve.serving.tree_bounds import PREFIX_KEY_CHARS

    async def scenario() -> dict[str, int]:
        tree = _Tree()
        router, replicas = _router_with(tree)
        tree.tree.add_tenants([r.replica_id.to_full_id_str() for r in replicas], 0.0)
        router.on_request_routed(_request("y" * 50_000), replicas[0].replica_id, None)
        await asyncio.sleep(0)
        return dict(tree.tree.tenant_to_char_count)

    counts = asyncio.run(scenario())
    assert max(counts.values()) == PREFIX_KEY_CHARS


def _tree_bytes(tree: PrefixTree) -> tuple[int, int]:
    """(nodes, bytes) of the tree: each node's object, text and dicts, walked without recursion."""
    import sys

    nodes, size, stack = 0, 0, [tree.root]
    while stack:
        node = stack.pop()
        nodes += 1
        size += (
            sys.getsizeof(node)
            + sys.getsizeof(node.text)
            + sum(
                sys.getsizeof(d)
                for d in (
                    node.__dict__,
                    node.edge_label_to_child,
                    node.tenant_to_last_access_time,
                    node.tenant_to_older_node,
                    node.tenant_to_newer_node,
                )
            )
        )
        stack.extend(node.edge_label_to_child.values())
    return nodes, size


def test_10k_unique_prompts_leave_the_tree_within_its_bound() -> None:
    """Ray's own PrefixTree and eviction thread, with the kwargs dsserve renders: 10,000 unique prompts of 6,000
    characters over 8 replicas (60 M characters offered) leave at most the spec's bound; without eviction the
    tree would hold 41 M (10,000 x 4,096 stored characters)."""
    import random
    import time

    from dsserve.serving.tree_bounds import eviction_kwargs, prefix_key

    max_chars = 2_000_000
    kwargs = eviction_kwargs(max_chars, replicas=8)
    assert kwargs["do_eviction"] is True
    tree = PrefixTree()
    tenants = [f"replica-{i}" for i in range(8)]
    tree.add_tenants(tenants, 0.0)
    tree.start_eviction_loop(kwargs["eviction_threshold_chars"], kwargs["eviction_target_chars"], 0.05)
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz "
    try:
        for i in range(10_000):
            prompt = "".join(rng.choices(alphabet, k=48)) * 125  # 6,000 characters, unique from the first
            tree.insert(prefix_key(prompt), tenants[i % 8], float(i))
            if i % 500 == 499:
                time.sleep(0.06)  # let an eviction pass run, as the actor's thread does every second
        time.sleep(0.2)
    finally:
        tree.stop_eviction_loop()
    held = sum(tree.tenant_to_char_count.values())
    nodes, size = _tree_bytes(tree)
    assert held <= max_chars, held
    assert size < 2 * max_chars, f"{size / 2**20:.1f} MiB for {held:,} characters"
    print(
        f"\n[prefix tree] {held:,} characters held after 10,000 unique prompts, {nodes} nodes, "
        f"{size / 2**20:.1f} MiB ({size / max(held, 1):.2f} B per character)"
    )


def test_every_prefix_profile_renders_a_bounded_tree() -> None:
    from dsserve.app import engine_replicas
    from dsserve.serving.tree_bounds import eviction_kwargs

    for profile in sorted((REPO / "deploy/profiles").glob("*.yaml")):
        spec = load_spec(profile)
        if spec.serving.router != "prefix_cache_affinity":
            continue
        rc = llm_config(spec)["deployment_config"]["request_router_config"]
        assert rc["request_router_kwargs"] == eviction_kwargs(
            spec.serving.prefix_tree_max_chars, engine_replicas(spec, at_most=True)
        ), profile.name
