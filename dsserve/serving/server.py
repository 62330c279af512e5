"""dsserve's engine replica: ray.serve.llm's ``LLMServer`` with three fixes carried as a subclass.

ray.serve.llm picks the replica class from ``LLMConfig.server_cls`` (``core/server/builder.py``), so
these fixes ride on its own extension point instead of a patch:

- **first chunk flushed at once** (:class:`FirstChunkBatcher`). ``LLMServer._batch_output_stream``
  (``core/server/llm_server.py``) wraps every streamed response in ``Batcher``
  (``utils/batcher.py``), which waits the full ``stream_batching_interval_ms`` (50 ms by default)
  before its first flush, so every TTFT pays up to 50 ms (ray-project/ray#59681, open; the upstream
  fix is PR #64534, not in 2.60). Setting the interval to 0 removes the wait but sends one Ray message
  per token, which halves throughput on a small machine (docs/performance.md). Flushing the first
  chunk immediately and batching the rest keeps both: TTFT without the wait, and few messages per
  stream.
- **local LoRA adapters** (inherited from :class:`dsserve.serving.lora_server.LLMServer`).
- **tokenize and detokenize** (:func:`wire_tokenization`). ``VLLMEngine.start``
  (``engines/vllm/vllm_engine.py``) looks for vLLM's tokenization handler under
  ``state.openai_serving_tokenization``, but vLLM 0.32's ``init_app_state``
  (``vllm/entrypoints/launchers/api_server/app_state.py``) stores it as ``state.serving_tokenization``,
  so in ingress mode every ``/tokenize`` and ``/detokenize`` answered "This model does not support the
  'tokenization' task". (Direct mode serves vLLM's own app, which finds it.)

The class keeps the name ``LLMServer``: the deployment is named after it (``LLMServer:<model id>``), and
dashboards, alerts and the runbook select on that name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ray.llm._internal.serve.utils.batcher import Batcher

from dsserve.serving.lora_server import LLMServer as _LocalLoraLLMServer

__all__ = ["FirstChunkBatcher", "LLMServer", "ReplicaFixes", "SERVER_CLS"]

SERVER_CLS = "dsserve.serving.server:LLMServer"
T = TypeVar("T")


class FirstChunkBatcher(Batcher[T]):
    """``Batcher`` that yields the first item as soon as it exists, then batches every interval."""

    async def stream(self) -> AsyncGenerator[Iterable[T], None]:
        if not self.interval_s:  # 0: no batching at all; None: one batch at the end (non-streamed)
            async for batch in super().stream():
                yield batch
            return
        first = asyncio.ensure_future(self.queue.get())
        done = asyncio.ensure_future(self.done_event.wait())
        try:
            await asyncio.wait({first, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            if not first.done():
                first.cancel()
        if first.done() and not first.cancelled():
            yield self._merge_results([first.result(), *self.drain_queue()])
        async for batch in super().stream():
            yield batch


def wire_tokenization(engine: Any) -> bool:
    """Give ray.serve.llm's VLLMEngine the tokenization handler vLLM created under its 0.32 name.

    True when it was missing and is now set. ``tests/unit/test_server_batching.py`` fails once upstream
    reads the new name (then drop this).
    """
    state = getattr(engine, "_app_state", None)
    if getattr(engine, "_oai_serving_tokenization", True) is not None or state is None:
        return False
    handler = getattr(state, "serving_tokenization", None)
    if handler is None:
        return False
    engine._oai_serving_tokenization = handler
    return True


def ensure_local_model(llm_config: Any) -> bool:
    """Build this node's copy of a ``tiny:`` model before the engine loads it; True when one was built.

    The application builder resolved ``tiny:`` to a directory on the node it ran on. On a cluster whose
    nodes do not share a disk (Kubernetes pods) the replica's node has no such directory, and vLLM would
    take the path for a hub id. The build is deterministic, so this node's copy is the same model; its
    path is written back in case this node's cache lives elsewhere.
    """
    from dsserve.model_source import TINY_SOURCE_KEY, ModelSource

    source = (getattr(llm_config, "experimental_configs", None) or {}).get(TINY_SOURCE_KEY)
    loading = llm_config.model_loading_config
    if not source or Path(str(loading.model_source)).is_dir():
        return False
    loading.model_source = str(ModelSource.parse(source).resolve())
    return True


class ReplicaFixes:
    """The fixes above as a mixin, for every replica class dsserve deploys: :class:`LLMServer`, and Ray's
    prefill/decode servers (:mod:`dsserve.serving.pd`), whose builder does not read ``server_cls``."""

    _llm_config: Any
    engine: Any

    async def _start_engine(self) -> None:
        # the engine reads the model's path from this same LLMConfig when it starts
        await asyncio.to_thread(ensure_local_model, self._llm_config)
        await super()._start_engine()  # type: ignore[misc]
        wire_tokenization(self.engine)

    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        return FirstChunkBatcher(generator, interval_ms=self._get_batch_interval_ms()).stream()  # type: ignore[attr-defined]


class LLMServer(ReplicaFixes, _LocalLoraLLMServer):
    """The replica dsserve deploys for every (non-DP, non-P/D) model: upstream's, with the fixes above."""
