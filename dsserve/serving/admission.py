"""Admission control: a bounded number of sequences in flight, and a fast "no" past it.

ray.serve.llm sets ``max_ongoing_requests`` to 1e9 on its ingress and its engine replicas, so by default
nothing stops a flood from piling up in Python queues until every client times out. The gate admits at
most ``limit`` sequences at once (a request costs its weight: prompts x ``n``, see
:mod:`dsserve.serving.body`) and the pipeline answers the rest at once with 503 and ``Retry-After``, so
clients back off and the accepted requests keep their latency. The pipeline holds a request's slots
until the app below returns: for a stream, when it ends or the client goes away.

The limit is this replica's share of the deployment's (:class:`dsserve.serving.shares.Limits`), so
it moves when replicas come and go; slots already taken are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdmissionGate"]


@dataclass
class AdmissionGate:
    """Counts sequences in flight; ``limit`` None means unbounded."""

    limit: int | None
    inflight: int = 0
    rejected_total: int = 0

    def try_acquire(self, weight: int = 1) -> bool:
        """Take ``weight`` slots if they are free; never waits."""
        if self.limit is not None and self.inflight + weight > self.limit:
            self.rejected_total += 1
            return False
        self.inflight += weight
        return True

    def release(self, weight: int = 1) -> None:
        if self.inflight < weight:
            raise RuntimeError("AdmissionGate.release() without a matching try_acquire()")
        self.inflight -= weight
