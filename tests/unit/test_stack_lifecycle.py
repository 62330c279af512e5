"""The local stack's process-wide effects, without Ray: one scoped environment override, and a `with`
block that leaves the environment and the signal handlers as it found them, however the start ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dsserve.config import load_spec
from dsserve.devstack import free_port
from dsserve.local_prometheus import LocalPrometheus, PrometheusError
from dsserve.serve_env import scoped_environ, serve_env
from dsserve.stack import LocalStack
from tests.conftest import REPO

A, B, C = "DSSERVE_TEST_SCOPED_A", "DSSERVE_TEST_SCOPED_B", "DSSERVE_TEST_SCOPED_C"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A set to "old", B and C absent; monkeypatch puts the real environment back whatever the test does."""
    monkeypatch.setenv(A, "old")
    monkeypatch.delenv(B, raising=False)
    monkeypatch.delenv(C, raising=False)


@pytest.mark.usefixtures("env")
def test_scoped_environ_sets_then_restores_old_values_and_unsets_new_ones() -> None:
    with scoped_environ({A: "new", B: "b"}):
        assert (os.environ[A], os.environ[B]) == ("new", "b")
        os.environ[C] = "set inside, by someone else"
    assert os.environ[A] == "old" and B not in os.environ
    assert os.environ[C] == "set inside, by someone else"  # only its own variables are put back


@pytest.mark.usefixtures("env")
def test_scoped_environ_restores_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), scoped_environ({A: "new", B: "b"}):
        raise RuntimeError("boom")
    assert os.environ[A] == "old" and B not in os.environ


@pytest.mark.usefixtures("env")
def test_scoped_environ_nests_and_restores_a_variable_removed_inside() -> None:
    with scoped_environ({A: "outer", B: "outer"}):
        with scoped_environ({B: "inner", A: "inner"}):
            assert os.environ[B] == "inner"
        assert os.environ[B] == "outer" and os.environ[A] == "outer"
        del os.environ[A]  # removed inside the block: the old value still comes back
    assert os.environ[A] == "old" and B not in os.environ


def test_a_failed_start_undoes_its_environment_and_signal_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start fails after the environment override and before Ray (a "Prometheus" that exits at once):
    the child saw the override, with the user's own value winning; afterwards nothing of it remains."""
    spec = load_spec(
        REPO / "deploy/profiles/sim-h800x8-deepseek-v2.yaml",  # a model path, so nothing is built
        [f"api.port={free_port()}", "serving.proxy=python", "serving.gateway=ingress"],
    )
    wanted = serve_env(spec)
    assert {"RAY_USAGE_STATS_ENABLED", "RAY_SERVE_CONTROL_LOOP_INTERVAL_S"} <= set(wanted)
    for name in wanted:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.25")  # the user's value wins
    fake = tmp_path / "prometheus"
    fake.write_text(
        '#!/bin/sh\necho "stats=$RAY_USAGE_STATS_ENABLED loop=$RAY_SERVE_CONTROL_LOOP_INTERVAL_S"\nexit 3\n'
    )
    fake.chmod(0o755)
    prometheus = LocalPrometheus({"t": ["127.0.0.1:1"]}, binary=str(fake), with_rules=False)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), dict(os.environ))
    lines: list[str] = []
    with pytest.raises(PrometheusError, match="exited with status 3") as info:
        with LocalStack(spec, progress=lines.append, prometheus=prometheus):
            pytest.fail("a stack whose start failed must not be entered")
    assert "stats=0 loop=0.25" in str(info.value)  # the override was in place while starting
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), dict(os.environ)) == before
    assert "interrupted" not in lines


def test_serve_forever_needs_the_with_block() -> None:
    spec = load_spec(REPO / "deploy/profiles/local-cpu.yaml")
    with pytest.raises(RuntimeError, match="needs `with LocalStack"):
        LocalStack(spec).serve_forever()
