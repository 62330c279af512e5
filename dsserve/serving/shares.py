"""The deployment's limits, split across the replicas that run the request pipeline.

The spec states its limits for the whole deployment: ``api.rate_limit`` per API key, and the admission
limit (every engine replica's ``serving.max_ongoing_requests`` plus ``serving.max_queued_requests``). The
pipeline runs in several processes at once (every engine replica in direct mode, every ingress replica
in ingress mode), and sharing one counter between them would cost a network round trip per request. So
each replica enforces its share: the deployment's limit divided by the number of replicas running now.
HAProxy spreads requests over the replicas (least connections, or the prefix-affinity router), so a
key's requests, and the load, divide the same way; the sum over the replicas is the spec's figure.

The replica count is the live one: the set of running replicas that Serve's controller pushes to every
handle of the deployment (read from the handle's router, refreshed at most once a second). When a
replica dies, the others' shares grow at once, so the deployment keeps its limits; while it is not
known yet (the first second, or a Ray whose internals moved), the configured count is used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Limits", "LiveReplicas", "Share"]

REFRESH_S = 1.0


@dataclass(frozen=True)
class Share:
    """One replica's part of the limits."""

    replicas: int
    admission: int | None  # sequences this replica admits at once; None unbounded
    rate: float | None  # per-key requests per second on this replica
    burst: int | None


@dataclass(frozen=True)
class Limits:
    """The spec's limits for the whole deployment."""

    admission: int | None = None  # sequences admitted at once, all replicas together; None unbounded
    rate: float | None = None  # per API key, requests (sequences) per second, all replicas together
    burst: int | None = None

    def share(self, replicas: int) -> Share:
        """Each of ``replicas`` replicas' part; ceilings, so the parts never sum below the whole."""
        n = max(1, replicas)
        admission = None if self.admission is None else max(1, math.ceil(self.admission / n))
        rate = None if self.rate is None else self.rate / n
        burst = None if self.burst is None else max(1, math.ceil(self.burst / n))
        return Share(n, admission, rate, burst)


class LiveReplicas:
    """How many replicas of a deployment run now, as the deployment's own handle sees them.

    ``handle`` is a DeploymentHandle of the deployment the calling replica belongs to (``None`` outside
    Serve). Reading it costs a dict length at most once per :data:`REFRESH_S`.
    """

    def __init__(self, configured: int, handle: Any = None, *, clock: Any = time.monotonic) -> None:
        self.configured = max(1, configured)
        self._handle = handle
        self._clock = clock
        self._count = self.configured
        self._next = 0.0

    @classmethod
    def of_this_deployment(cls, configured: int) -> LiveReplicas:
        """For the replica calling it: a handle on its own deployment, initialized so its router listens."""
        try:
            from ray import serve

            ctx = serve.get_replica_context()
            handle = serve.get_deployment_handle(ctx.deployment, ctx.app_name)
            handle._init()
        except Exception:  # not in a replica (tests, tools): the configured count
            handle = None
        return cls(configured, handle)

    def count(self) -> int:
        now = self._clock()
        if now >= self._next:
            self._next = now + REFRESH_S
            live = running_replicas(self._handle)
            self._count = live if live else self.configured
        return self._count


def running_replicas(handle: Any) -> int | None:
    """Running replicas in the handle's router, or None while unknown (not populated yet, other Ray)."""
    router = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    if router is None:
        return None
    try:
        if not router.running_replicas_populated():
            return None
        request_router = router._request_router
        replicas = request_router.curr_replicas if request_router is not None else router._running_replicas
        return len(replicas)
    except Exception:  # a Ray upgrade must not turn this into a 500
        return None
