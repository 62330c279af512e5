"""Ray's prefill/decode servers with dsserve's replica fixes, and the builder hook that deploys them.

``build_pd_openai_app`` (``ray/llm/_internal/serve/serving_patterns/prefill_decode/builder.py``) passes its
own ``PDPrefillServer``/``PDDecodeServer`` (``DPPDPrefillServer``/``DPPDDecodeServer`` with DP attention) as
``deployment_cls``, and ``build_llm_deployment`` takes ``deployment_cls or llm_config.server_cls``
(``core/server/builder.py``): the LLM config's ``server_cls``, Ray's extension point for the replica class,
never reaches a P/D replica. So dsserve's fixes (:class:`dsserve.serving.server.ReplicaFixes`: the first
streamed chunk at once, ``/tokenize`` and ``/detokenize`` under vLLM 0.32, a ``tiny:`` model built on the
replica's own node) would be lost on both pools.

The smallest carried fix: subclasses of Ray's four classes with the mixin in front, and
:func:`pd_server_classes`, which points the builder module's names at them while Ray's own builder runs.
Everything else (the orchestration, the connector backends, the DP gang, the deployment names
``Prefill:<model>``/``Decode:<model>``) is Ray's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ray.llm._internal.serve.serving_patterns.prefill_decode import builder as _builder
from ray.llm._internal.serve.serving_patterns.prefill_decode import pd_server as _pd

from dsserve.serving.server import ReplicaFixes

__all__ = ["DPPDDecodeServer", "DPPDPrefillServer", "PDDecodeServer", "PDPrefillServer", "pd_server_classes"]


class PDPrefillServer(ReplicaFixes, _pd.PDPrefillServer):
    """Ray's prefill server with dsserve's replica fixes."""


class PDDecodeServer(ReplicaFixes, _pd.PDDecodeServer):
    """Ray's decode server (it orchestrates the prefill call) with dsserve's replica fixes."""


class DPPDPrefillServer(ReplicaFixes, _pd.DPPDPrefillServer):
    """Ray's DP-attention prefill server with dsserve's replica fixes."""


class DPPDDecodeServer(ReplicaFixes, _pd.DPPDDecodeServer):
    """Ray's DP-attention decode server with dsserve's replica fixes."""


_OURS = {
    "PDPrefillServer": PDPrefillServer,
    "PDDecodeServer": PDDecodeServer,
    "DPPDPrefillServer": DPPDPrefillServer,
    "DPPDDecodeServer": DPPDDecodeServer,
}


@contextmanager
def pd_server_classes() -> Iterator[None]:
    """While Ray's P/D builder runs, its server class names are dsserve's subclasses; restored after."""
    saved = {name: getattr(_builder, name) for name in _OURS}
    try:
        for name, cls in _OURS.items():
            setattr(_builder, name, cls)
        yield
    finally:
        for name, cls in saved.items():
            setattr(_builder, name, cls)
