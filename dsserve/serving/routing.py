"""Prefix-cache-affinity routing that answers every request and never blocks the ingress's event loop.

Two faults in ``ray.serve.llm``'s ``PrefixCacheAffinityRouter`` (Ray 2.60,
``ray/llm/_internal/serve/routing_policies/prefix_aware/prefix_aware_router.py``), the router the
production profiles choose with ``serving.router: prefix_cache_affinity``:

- **A prompt with no text hangs.** ``_prefix_match_best_replicas`` computes
  ``len(matched_text) / len(input_text)``; for an empty message (or content parts with no text) that
  raises ZeroDivisionError inside Serve's routing task, the request is never assigned, and the client
  waits until it gives up. Here an empty prompt has match rate 0 and goes to the least-loaded tree, like
  any prompt that matches nothing (tests/e2e/test_simulated_engine.py fails on upstream's router).
- **Blocking calls on the event loop.** The prefix tree lives in a separate actor, reached with blocking
  ``ray.get``: one or two per routing decision (``prefix_match``, then ``get_smallest_tenants`` when
  nothing matches) and one in ``on_request_routed`` (``insert``). The router runs on the loop of the
  process holding the handle - dsserve's ingress, which with ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` also serves
  every HTTP request and streams every chunk. Here the calls are awaited, and the insert is sent without
  waiting (the tree actor runs one caller's calls in order, so the next ``prefix_match`` still sees it).
  In benchmark B's profile the blocking gets were 14 % of the ingress's py-spy samples; an A/B at
  40 req/s (docs/performance.md) did not separate the two routers beyond this VM's run-to-run noise.

Bounded, and never in the way:

- **The tree is bounded.** Upstream keeps every prompt's full text and evicts nothing
  (``do_eviction=False``), so the tree actor grows with every unique prompt. dsserve turns eviction on
  through the router's own ``request_router_kwargs`` (``tree_bounds.eviction_kwargs``: the spec's
  ``serving.prefix_tree_max_chars`` shared over the replicas, checked every second), and keys the tree
  by the first ``tree_bounds.PREFIX_KEY_CHARS`` characters of a prompt only: affinity is for shared prefixes
  (system prompts, few-shot examples, earlier turns), and a prompt's tail would only fill the tree.
- **A failed tree falls back.** When the tree actor is gone or slow (a call past
  :data:`TREE_TIMEOUT_S`), the request goes where power-of-two choices send it (least loaded of two)
  instead of failing or waiting; replica-set updates survive a dead tree too.

Otherwise the method bodies are upstream's, so the routing decisions are the same. Plugged in through
Serve's own extension point, ``request_router_config.request_router_class``. ``tests/unit/test_routing.py``
fails once upstream stops blocking (then re-check the division and drop what is no longer needed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import PrefixCacheAffinityRouter

from dsserve.serving.tree_bounds import prefix_key

__all__ = ["ROUTER_CLASS", "TREE_TIMEOUT_S", "NonBlockingPrefixCacheAffinityRouter"]

log = logging.getLogger("ray.serve")

#: What ``request_router_config.request_router_class`` names for ``serving.router: prefix_cache_affinity``.
ROUTER_CLASS = "dsserve.serving.routing:NonBlockingPrefixCacheAffinityRouter"
#: Seconds a routing decision waits for the tree actor before routing by load alone.
TREE_TIMEOUT_S = 1.0


async def _tree_call(ref: Any) -> Any:
    """A tree actor call's result (an ObjectRef is awaitable), or TimeoutError past TREE_TIMEOUT_S."""
    return await asyncio.wait_for(ref, TREE_TIMEOUT_S)


class NonBlockingPrefixCacheAffinityRouter(PrefixCacheAffinityRouter):
    """``PrefixCacheAffinityRouter`` whose calls to the prefix-tree actor never block the event loop."""

    async def _prefix_match_best_replicas(self, pending_request: Any, candidate_replicas: list[Any]) -> list[Any]:
        # Upstream's body (Ray 2.60), each blocking get of an ObjectRef now awaited; comments trimmed.
        from ray.serve._private.common import ReplicaID

        chosen_replica_id_strings: list[str] = []
        if pending_request is not None and pending_request.args is not None and len(pending_request.args) > 0:
            input_text = self._extract_text_from_request(pending_request)
            if input_text is not None:
                highest_queue_len = 0
                lowest_queue_len = float("inf")
                not_in_cache: list[Any] = []
                if self._use_replica_queue_len_cache:
                    for r in candidate_replicas:
                        queue_len = self._replica_queue_len_cache.get(r.replica_id)
                        if queue_len is None or queue_len >= r.max_ongoing_requests:
                            not_in_cache.append(r)
                        else:
                            highest_queue_len = max(highest_queue_len, queue_len)
                            lowest_queue_len = min(lowest_queue_len, queue_len)
                else:
                    not_in_cache = candidate_replicas
                if len(not_in_cache) > 0:
                    for _r, queue_len in await self._probe_queue_lens(not_in_cache, 0):
                        if queue_len is None:
                            continue
                        highest_queue_len = max(highest_queue_len, queue_len)
                        lowest_queue_len = min(lowest_queue_len, queue_len)

                is_imbalanced = highest_queue_len - lowest_queue_len > self._imbalanced_threshold
                if not is_imbalanced:
                    input_text = prefix_key(input_text)
                    candidate_ids = [r.replica_id.to_full_id_str() for r in candidate_replicas]
                    try:
                        matched_text, matched_tenant_id_strings = await _tree_call(
                            self._tree_actor.prefix_match.remote(input_text, candidate_ids)
                        )
                        match_rate = len(matched_text) / len(input_text) if input_text else 0.0
                        if match_rate < self._match_rate_threshold:
                            smallest = await _tree_call(self._tree_actor.get_smallest_tenants.remote())
                            if smallest:
                                chosen_replica_id_strings = smallest
                        elif matched_tenant_id_strings:
                            chosen_replica_id_strings = matched_tenant_id_strings
                    except Exception as exc:  # the tree is gone or slow: route by load alone
                        self._tree_failed(exc)
                        chosen_replica_id_strings = []
        chosen = (self._replicas.get(ReplicaID.from_full_id_str(i)) for i in chosen_replica_id_strings)
        return [[r for r in chosen if r is not None]]  # upstream raises KeyError on a tenant it dropped

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        if pending_request is not None and pending_request.args is not None and len(pending_request.args) > 0:
            input_text = self._extract_text_from_request(pending_request)
            if input_text is not None:
                # Sent, not awaited: routing this request is done; the tree only informs the next ones.
                self._tree_actor.insert.remote(prefix_key(input_text), replica_id.to_full_id_str(), time.time())

    def update_replicas(self, replicas: list[Any]) -> None:
        try:
            super().update_replicas(replicas)
        except Exception as exc:  # the replica set is updated first; only the tree's copy failed
            self._tree_failed(exc)

    def on_replica_actor_died(self, replica_id: Any) -> None:
        try:
            super().on_replica_actor_died(replica_id)
        except Exception as exc:
            self._tree_failed(exc)

    def _tree_failed(self, exc: BaseException) -> None:
        """Log the first failure of a run of them (routing goes on by load meanwhile)."""
        now = time.monotonic()
        if now - getattr(self, "_tree_failed_logged_at", -60.0) >= 60.0:
            self._tree_failed_logged_at = now
            log.warning(
                "dsserve: the prefix tree actor did not answer (%s: %s); routing by load (power of two) until it does",
                type(exc).__name__,
                exc,
            )
