"""The admission gate and the limits it enforces: bounded by weight, never waits, split across replicas."""

from __future__ import annotations

import pytest

from dsserve.app import admission_limit, pipeline_settings
from dsserve.config import parse_spec
from dsserve.serving.admission import AdmissionGate
from dsserve.serving.shares import Limits


def test_gate_admits_up_to_the_limit_then_refuses() -> None:
    gate = AdmissionGate(limit=2)
    assert gate.try_acquire() and gate.try_acquire()
    assert not gate.try_acquire() and gate.rejected_total == 1
    gate.release()
    assert gate.try_acquire() and gate.inflight == 2


def test_a_request_takes_its_weight_or_nothing() -> None:
    gate = AdmissionGate(limit=8)
    assert gate.try_acquire(6)
    assert not gate.try_acquire(3) and gate.inflight == 6, "refused whole, nothing taken"
    assert gate.try_acquire(2) and gate.inflight == 8
    gate.release(6)
    assert gate.inflight == 2


def test_unbounded_gate() -> None:
    gate = AdmissionGate(limit=None)
    assert all(gate.try_acquire() for _ in range(10_000))


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        AdmissionGate(limit=1).release()
    gate = AdmissionGate(limit=4)
    gate.try_acquire(2)
    with pytest.raises(RuntimeError):
        gate.release(3)


def test_limit_is_engine_slots_plus_queue(local_cpu_data: dict) -> None:
    local_cpu_data["serving"].update(replicas=3, max_ongoing_requests=8, max_queued_requests=10)
    assert admission_limit(parse_spec(local_cpu_data)) == 34
    local_cpu_data["serving"]["max_queued_requests"] = -1
    assert admission_limit(parse_spec(local_cpu_data)) is None


@pytest.mark.parametrize(
    "replicas,admission,rate,burst", [(1, 34, 6.0, 5), (2, 17, 3.0, 3), (3, 12, 2.0, 2), (40, 1, 0.15, 1)]
)
def test_each_replica_takes_its_share_and_the_shares_cover_the_whole(
    replicas: int, admission: int, rate: float, burst: int
) -> None:
    share = Limits(admission=34, rate=6.0, burst=5).share(replicas)
    assert (share.admission, share.rate, share.burst) == (admission, rate, burst)
    assert share.admission * replicas >= min(34, replicas), "the parts never sum below the whole"
    assert Limits().share(replicas).admission is None


def test_direct_mode_splits_over_the_engine_replicas(local_cpu_data: dict) -> None:
    local_cpu_data["serving"].update(replicas=3, max_ongoing_requests=8, max_queued_requests=10)
    settings = pipeline_settings(parse_spec(local_cpu_data))
    assert settings["replicas"] == 3 and settings["max_inflight"] == 34
    local_cpu_data["serving"]["gateway"] = "ingress"
    local_cpu_data["serving"]["gateway_replicas"] = 2
    assert pipeline_settings(parse_spec(local_cpu_data))["replicas"] == 2
