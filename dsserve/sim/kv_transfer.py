"""The simulated KV handoff between the two pools of a disaggregated deployment.

Ray's P/D orchestrator (``PDDecodeServer``) sends each request first to a prefill replica with
``kv_transfer_params: {"do_remote_decode": true, ...}`` and ``max_tokens`` 1, then runs it on its own
engine with the ``kv_transfer_params`` the prefill engine returned. With vLLM's NixlConnector the decode
engine then pulls the prompt's KV blocks from the prefill engine's GPUs and computes only the last prompt
token (the one whose logits it samples from). The simulated engines play both parts:

- a prefill engine runs the prompt as usual and answers with parameters shaped like NixlConnector's
  (``request_finished`` in ``vllm/distributed/kv_transfer/kv_connector/v1/nixl/``): the decode side
  needs nothing from them but their presence, and a reader of a trace sees what vLLM would send;
- a decode engine waits the modelled transfer (the planner's :class:`~dsserve.planner.disagg.KvTransfer`:
  bytes per token over the link the spec's ``disaggregation.transport`` names, plus a fixed cost),
  then schedules the request with all but its last prompt token already in cache; its metrics count the
  whole prompt under ``vllm:prompt_tokens_by_source{source="external_kv_transfer"}``, as vLLM's do;
- the transfer is recorded in vLLM's own NIXL metric family (``NixlPromMetrics`` from
  ``vllm/distributed/kv_transfer/kv_connector/v1/nixl/stats.py`` on vLLM's Ray wrappers: the same names,
  buckets and labels a real NIXL engine exports), when the connector is NixlConnector.

Simplification, stated: the decode engine holds no KV blocks while the transfer runs (vLLM allocates
them first, in its ``WAITING_FOR_REMOTE_KVS`` state), so a decode pool at its KV limit admits a little
more here than it would.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "TransferMetrics",
    "is_decode_handoff",
    "is_prefill_handoff",
    "prefill_handoff_params",
]


def is_prefill_handoff(params: dict[str, Any] | None) -> bool:
    """A request the orchestrator sent to a prefill engine, whose KV a remote decode engine will read."""
    return bool(params) and bool(params.get("do_remote_decode"))  # type: ignore[union-attr]


def is_decode_handoff(params: dict[str, Any] | None) -> bool:
    """A request whose prompt a remote prefill engine has computed."""
    return bool(params) and bool(params.get("do_remote_prefill"))  # type: ignore[union-attr]


def prefill_handoff_params(
    *, engine_id: str, request_id: str, prompt_tokens: int, block_tokens: int, tp_size: int
) -> dict[str, Any]:
    """What a prefill engine returns for the decode engine, keyed as NixlConnector's scheduler keys it."""
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": list(range(math.ceil(prompt_tokens / block_tokens))),
        "remote_engine_id": engine_id,
        "remote_request_id": request_id,
        "remote_host": "simulated",
        "remote_port": 0,
        "tp_size": tp_size,
        "remote_num_tokens": prompt_tokens,
    }


class TransferMetrics:
    """vLLM's NIXL transfer metrics for one simulated decode engine (engine index 0)."""

    def __init__(
        self, model_name: str, kv_transfer_config: dict[str, Any], metric_types: dict[Any, Any] | None = None
    ) -> None:
        """``metric_types``: prometheus_client's metric types to the classes that export them; vLLM's Ray
        wrappers by default, as vLLM's Ray stat logger uses (a test passes registry-bound prometheus types)."""
        from types import SimpleNamespace

        from prometheus_client import Counter, Gauge, Histogram
        from vllm.distributed.kv_transfer.kv_connector.v1.nixl.stats import NixlKVConnectorStats, NixlPromMetrics
        from vllm.v1.metrics.ray_wrappers import RayCounterWrapper, RayGaugeWrapper, RayHistogramWrapper

        self._stats_cls = NixlKVConnectorStats
        # NixlPromMetrics reads only vllm_config.kv_transfer_config
        self._prom = NixlPromMetrics(
            SimpleNamespace(kv_transfer_config=kv_transfer_config),
            metric_types or {Gauge: RayGaugeWrapper, Counter: RayCounterWrapper, Histogram: RayHistogramWrapper},
            ["model_name", "engine"],
            {0: [model_name, "0"]},
        )

    def record(self, *, post_s: float, transfer_s: float, nbytes: float, descriptors: int) -> None:
        """One completed transfer, as NixlKVConnectorStats.record_transfer collects it: the fixed cost as
        the post time, the bytes over the link as the transfer time."""
        stats = self._stats_cls()
        stats.data["transfer_duration"].append(transfer_s)
        stats.data["post_duration"].append(post_s)
        stats.data["bytes_transferred"].append(nbytes)
        stats.data["num_descriptors"].append(descriptors)
        self._prom.observe(stats.data, 0)
