"""The admission gate: bounded, never waits, and every slot comes back, streamed or not."""

from __future__ import annotations

import asyncio

import pytest

from dsserve.serving.admission import AdmissionGate
from dsserve.app import admission_limit
from dsserve.config import parse_spec


def test_gate_admits_up_to_the_limit_then_refuses() -> None:
    gate = AdmissionGate(limit=2)
    assert gate.try_acquire() and gate.try_acquire()
    assert not gate.try_acquire() and gate.rejected_total == 1
    gate.release()
    assert gate.try_acquire() and gate.inflight == 2


def test_unbounded_gate() -> None:
    gate = AdmissionGate(limit=None)
    assert all(gate.try_acquire() for _ in range(10_000))


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        AdmissionGate(limit=1).release()


async def _body(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ConnectionResetError("client went away")
        yield f"chunk {i}"


@pytest.mark.parametrize("fail_at,consume", [(None, 5), (2, 5), (None, 1)],
                         ids=["completed", "failed-midway", "abandoned"])
def test_stream_releases_its_slot(fail_at: int | None, consume: int) -> None:
    gate = AdmissionGate(limit=1)

    async def run() -> None:
        assert gate.try_acquire()
        stream = gate.hold_while_streaming(_body(5, fail_at))
        try:
            for _ in range(consume):
                await stream.__anext__()
        except (ConnectionResetError, StopAsyncIteration):
            pass
        await stream.aclose()  # what Starlette does when the client disconnects

    asyncio.run(run())
    assert gate.inflight == 0


def test_a_stream_never_started_releases_its_slot_once() -> None:
    """The client left before the first byte was sent: Starlette never iterates the body, then drops it."""
    gate = AdmissionGate(limit=2)
    assert gate.try_acquire() and gate.try_acquire()
    never_started = gate.hold_while_streaming(_body(5))
    del never_started  # no finally ran; dropping the generator must still free the slot
    assert gate.inflight == 1

    async def run() -> None:
        stream = gate.hold_while_streaming(_body(5))
        await stream.__anext__()
        await stream.aclose()
        del stream  # released by aclose already: must not be released twice

    asyncio.run(run())
    assert gate.inflight == 0


def test_limit_is_engine_slots_plus_queue(local_cpu_data: dict) -> None:
    local_cpu_data["serving"].update(replicas=3, max_ongoing_requests=8, max_queued_requests=10)
    assert admission_limit(parse_spec(local_cpu_data)) == 34
    local_cpu_data["serving"]["max_queued_requests"] = -1
    assert admission_limit(parse_spec(local_cpu_data)) is None
