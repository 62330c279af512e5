"""The replica half of LoRA serving: ray.serve.llm's LLMServer, loading adapters from local directories.

Why this exists (ray 2.60.0). ray.serve.llm serves LoRA adapters through Ray Serve model multiplexing:
the ingress sends ``model: <base>:<adapter>`` with ``multiplexed_model_id`` set, and the replica's
``LLMServer._load_model`` (``ray/llm/_internal/serve/core/server/llm_server.py``,
``_init_multiplex_loader``) asks a ``LoraModelLoader`` (``ray/llm/_internal/serve/utils/
lora_serve_utils.py``) for the adapter's directory, then ``VLLMEngine.resolve_lora`` loads it into vLLM.
That loader only knows cloud storage:

- ``LoraConfig.dynamic_lora_loading_path`` (``core/configs/llm_config.py``) must pass ``is_remote_path``
  (s3://, gs://, abfss://, azure://, or a ``pyarrow-`` prefix of one of those);
- ``LoraModelLoader.load_model_from_config`` reads ``adapter_config.json`` through
  ``CloudFileSystem.get_file`` and copies the adapter with ``sync_files_with_lock``; both dispatch on
  ``CloudFileSystem._get_provider_fs`` (``common/utils/cloud_utils.py``), which raises
  ``Unsupported URI scheme`` for a local path. Its ``pyarrow-`` route does not help either:
  ``PyArrowFileSystem.get_fs_and_path`` (``common/utils/cloud_filesystem/pyarrow_filesystem.py``) strips
  the prefix and again accepts only s3/gs/abfss/azure, so ``pyarrow-file:///dir`` fails the same way;
- ``LoraMirrorConfig`` rejects a local ``bucket_uri`` outright.

So a local adapter directory, the only kind a machine without cloud credentials has, cannot be served.
The fix uses ray.serve.llm's own injection point, not a patch: ``LLMServer.__init__`` takes a
``model_downloader`` class, and ``LLMConfig.server_cls`` picks the server class. :class:`LLMServer`
below defaults that loader to :class:`LocalLoraModelLoader`, which resolves ``<base>:<adapter>`` to a
directory of the deployment's adapter table (:class:`dsserve.lora.AdapterTable`, carried in
``LLMConfig.experimental_configs["dsserve_lora"]``) and hands it to vLLM in place, with no copy.
Everything else, multiplexed routing, the per-replica LRU of adapters, ``resolve_lora``, is upstream's.
``lora_config`` is still set (without a ``dynamic_lora_loading_path``), since that is what turns
multiplexing on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import HTTPException
from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.common.utils.lora_utils import get_base_model_id, get_lora_id
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.core.server.llm_server import LLMServer as _UpstreamLLMServer
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader

from dsserve.lora import LORA_CONFIG_KEY, AdapterTable, adapter_problem
from dsserve.model_source import AdapterSource

__all__ = ["LLMServer", "LocalLoraModelLoader"]

logger = logging.getLogger("dsserve.lora")


def adapter_table(llm_config: Any) -> AdapterTable:
    return AdapterTable.from_config(llm_config.model_id, llm_config.experimental_configs.get(LORA_CONFIG_KEY))


class LocalLoraModelLoader(LoraModelLoader):
    """A ``LoraModelLoader`` whose adapters are local directories named by the deployment's adapter table."""

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> DiskMultiplexConfig:
        if lora_model_id in self.disk_cache:
            return self.disk_cache[lora_model_id]
        started = time.monotonic()
        table = adapter_table(llm_config)
        name = get_lora_id(lora_model_id)
        path = table.path(name) if get_base_model_id(lora_model_id) == llm_config.model_id else None
        if path is not None and not path.is_dir() and name in table.tiny_sources:
            # built where the application builder ran (the head); this node (another pod) builds its own copy
            source = AdapterSource.parse(table.tiny_sources[name])
            path = await asyncio.to_thread(source.resolve)
        if path is None:
            served = ", ".join(table.model_ids()) or "none"
            raise HTTPException(404, f"The model {lora_model_id!r} does not exist; adapters served: {served}.")
        problem = adapter_problem(path)
        if problem is not None:
            raise HTTPException(400, f"The LoRA adapter {lora_model_id!r} cannot be loaded: {problem}.")
        try:
            max_length = json.loads((path / "adapter_config.json").read_text()).get("max_length")
        except (OSError, ValueError, AttributeError):
            max_length = None
        disk = DiskMultiplexConfig.model_validate(
            {
                "model_id": lora_model_id,
                "max_total_tokens": max_length,
                "local_path": str(path),
                "lora_assigned_int_id": global_id_manager.next(),
            }
        )
        self.disk_cache[lora_model_id] = disk
        logger.info(
            "dsserve LoRA: multiplexed model %s -> %s (resolved in %.1f ms)",
            lora_model_id,
            path,
            (time.monotonic() - started) * 1e3,
        )
        return disk


class LLMServer(_UpstreamLLMServer):
    """ray.serve.llm's ``LLMServer`` whose LoRA loader reads local adapter directories.

    Named like its parent on purpose: ray.serve.llm names the deployment after the server class
    (``LLMServer:<model id>``, ``core/server/builder.py``), and the dashboards, alerts and runbook select
    on that name. Deployed through its subclass ``dsserve.serving.server:LLMServer`` (``LLMConfig.server_cls``).
    """

    def _init_multiplex_loader(self, model_downloader_cls: type[LoraModelLoader] | None = None) -> None:
        super()._init_multiplex_loader(model_downloader_cls or LocalLoraModelLoader)
