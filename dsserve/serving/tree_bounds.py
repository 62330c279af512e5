"""The prefix-affinity router's tree, bounded: what it stores of a prompt, and when it evicts.

Kept apart from :mod:`dsserve.serving.routing` (which imports Ray) so that rendering a spec's Serve
config does not import Ray. Why the bounds exist: :mod:`dsserve.serving.routing`'s docstring.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVICTION_INTERVAL_S", "PREFIX_KEY_CHARS", "eviction_kwargs", "prefix_key"]

#: Characters of a prompt the tree stores and matches (about 1,000 tokens).
PREFIX_KEY_CHARS = 4096
#: Seconds between the tree actor's eviction passes (upstream's default is 10).
EVICTION_INTERVAL_S = 1


def prefix_key(text: str) -> str:
    """What the tree stores and matches for a prompt."""
    return text[:PREFIX_KEY_CHARS]


def eviction_kwargs(max_chars: int, replicas: int) -> dict[str, Any]:
    """``request_router_kwargs`` for a tree of at most about ``max_chars`` characters over ``replicas``.

    Upstream evicts per tenant (replica), least recently used first, down to the target, whenever a tenant
    holds more than the threshold; nodes shared by tenants count for each, so the tree's own size is at
    most the sum.
    """
    per_replica = max(PREFIX_KEY_CHARS, max_chars // max(1, replicas))
    return {
        "do_eviction": True,
        "eviction_threshold_chars": per_replica,
        "eviction_target_chars": per_replica * 9 // 10,
        "eviction_interval_secs": EVICTION_INTERVAL_S,
    }
