"""Admission control at the ingress: a bounded number of requests in flight, and a fast "no" past it.

ray.serve.llm sets ``max_ongoing_requests`` to 1e9 on its ingress, so by default nothing stops a flood
from piling up in Python queues until every client times out. The gate admits at most ``limit`` requests
at once per ingress replica (the deployment's engine slots plus its queue) and answers the rest at once
with 503 and ``Retry-After``, so clients back off and the accepted requests keep their latency.

A streamed response holds its slot until the stream ends or the client goes away; that is when the
engine slot frees too.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["AdmissionGate"]


@dataclass
class AdmissionGate:
    """Counts requests in flight; ``limit`` None means unbounded."""

    limit: int | None
    inflight: int = 0
    rejected_total: int = field(default=0)

    def try_acquire(self) -> bool:
        """Take a slot if one is free; never waits."""
        if self.limit is not None and self.inflight >= self.limit:
            self.rejected_total += 1
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        if self.inflight <= 0:
            raise RuntimeError("AdmissionGate.release() without a matching try_acquire()")
        self.inflight -= 1

    def hold_while_streaming(self, body: AsyncIterator[bytes | str]) -> AsyncIterator[bytes | str]:
        """Pass a streamed body through and release the slot when it ends, fails or is abandoned.

        Also when it is never iterated at all: if the client is gone before the server starts sending
        (Starlette then never starts the body), the generator's ``finally`` never runs, so the slot is
        also released when the generator object is dropped. Either way it is released exactly once.
        """
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                self.release()

        async def stream() -> AsyncIterator[bytes | str]:
            try:
                async for chunk in body:
                    yield chunk
            finally:
                release_once()

        held = stream()
        weakref.finalize(held, release_once)
        return held
