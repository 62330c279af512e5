"""LoRA adapters served beside their base model, from local directories.

A spec's ``model.lora`` names adapters (``name: /abs/dir`` or ``name: tiny-lora:<recipe>``) and/or a
``dynamic_dir`` whose subdirectories are adapters loaded on their first request. Clients address an
adapter the ray.serve.llm way, ``model: <base id>:<adapter>``; the ingress routes it with Ray Serve
model multiplexing (``multiplexed_model_id``) to a replica, which loads it into vLLM on first use.

This module is the plain-data half, imported by the spec, the renderer and the ingress without Ray:
the adapter table a deployment carries in ``LLMConfig.experimental_configs["dsserve_lora"]`` and the
checks on an adapter directory. The replica half (the loader ray.serve.llm calls) is
:mod:`dsserve.serving.lora_server`; why it exists at all is explained there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ADAPTER_NAME_RE",
    "LORA_CONFIG_KEY",
    "AdapterTable",
    "adapter_problem",
    "adapter_rank",
]

#: Where the adapter table travels inside ray.serve.llm's LLMConfig (a free-form dict upstream reserves for
#: such settings; dsserve's simulated engine keeps its settings there too).
LORA_CONFIG_KEY = "dsserve_lora"
#: Adapter names: the part after ``<base>:`` in a request's ``model``; also a directory name.
ADAPTER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONFIG = "adapter_config.json"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_rank(path: Path) -> int | None:
    """The largest LoRA rank in an adapter's ``adapter_config.json`` (``r`` and ``rank_pattern``), if readable."""
    try:
        cfg = json.loads((path / _CONFIG).read_text(encoding="utf-8"))
        ranks = [int(cfg.get("r", 0)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return max(ranks)


def adapter_problem(path: Path, max_lora_rank: int | None = None) -> str | None:
    """Why vLLM could not load ``path`` as a LoRA adapter, or None when it looks loadable.

    Mirrors what vLLM checks when it loads one (``vllm/lora/peft_helper.py``: ``PEFTHelper.validate_legal``
    and ``vllm/lora/lora_model.py``: ``LoRAModel.from_local_checkpoint``), so a bad adapter fails at
    `dsserve validate` instead of at its first request.
    """
    if not path.is_dir():
        return (
            f"{path} is not a directory; point it at a PEFT adapter directory (adapter_config.json + "
            "adapter_model.safetensors)"
        )
    if not (path / _CONFIG).is_file():
        return f"{path} has no {_CONFIG}; a PEFT adapter directory holds {_CONFIG} and adapter_model.safetensors"
    if not any((path / w).is_file() for w in _WEIGHTS):
        return f"{path} has no adapter_model.safetensors (or .bin); save the adapter with peft's save_pretrained"
    try:
        cfg = json.loads((path / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{path}/{_CONFIG} is not readable JSON ({exc}); re-save the adapter"
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        return f"{path} is not a LoRA adapter (peft_type {cfg.get('peft_type')!r}); vLLM serves LoRA adapters only"
    if cfg.get("use_dora"):
        return f"{path} is a DoRA adapter; vLLM 0.32 does not serve DoRA (merge it or retrain as plain LoRA)"
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        return f"{path} trains biases (bias {cfg.get('bias')!r}); vLLM serves LoRA adapters without bias only"
    rank = adapter_rank(path)
    if max_lora_rank is not None and rank is not None and rank > max_lora_rank:
        return (
            f"{path} has LoRA rank {rank}, above model.lora.max_lora_rank ({max_lora_rank}); raise "
            f"max_lora_rank to at least {rank}"
        )
    return None


@dataclass(frozen=True)
class AdapterTable:
    """The adapters one base model serves: named directories plus an optional dynamic directory.

    ``adapters`` maps a name to a directory (sources already resolved: no ``tiny-lora:`` left).
    A name absent from it is looked up as ``dynamic_dir/<name>`` at request time, so adapters dropped
    into that directory are served without a restart.
    """

    base_model_id: str
    adapters: dict[str, str] = field(default_factory=dict)
    dynamic_dir: str | None = None
    #: the ``tiny-lora:`` source of each built adapter, for a replica whose node lacks the builder's directory
    tiny_sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, base_model_id: str, data: dict[str, Any] | None) -> AdapterTable:
        data = data or {}
        return cls(
            base_model_id=base_model_id,
            adapters=dict(data.get("adapters") or {}),
            dynamic_dir=data.get("dynamic_dir"),
            tiny_sources=dict(data.get("tiny_sources") or {}),
        )

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adapters": dict(sorted(self.adapters.items())), "dynamic_dir": self.dynamic_dir}
        if self.tiny_sources:
            out["tiny_sources"] = dict(sorted(self.tiny_sources.items()))
        return out

    def path(self, name: str) -> Path | None:
        """The directory serving adapter ``name``, or None if this deployment has no such adapter."""
        if name in self.adapters:
            return Path(self.adapters[name])
        if self.dynamic_dir and ADAPTER_NAME_RE.fullmatch(name):  # no '/', no '..': stays inside the dir
            candidate = Path(self.dynamic_dir) / name
            if (candidate / _CONFIG).is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        """Every adapter name served now: the named ones and the dynamic directory's adapter subdirectories."""
        names = set(self.adapters)
        if self.dynamic_dir:
            try:
                for sub in Path(self.dynamic_dir).iterdir():
                    if ADAPTER_NAME_RE.fullmatch(sub.name) and (sub / _CONFIG).is_file():
                        names.add(sub.name)
            except OSError:
                pass
        return sorted(names)

    def model_ids(self) -> list[str]:
        return [f"{self.base_model_id}:{n}" for n in self.names()]
