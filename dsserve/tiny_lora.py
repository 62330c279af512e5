"""Tiny LoRA adapters for the tiny models, built offline and deterministically.

A deployment serves adapters as ``model.lora.adapters: {name: tiny-lora:<recipe>}``; like ``tiny:<name>``
model sources they are built on first use into the dsserve cache ($DSSERVE_CACHE_DIR, default
~/.cache/dsserve) under ``loras/<recipe>-<digest>``, and a second build with the same recipe does nothing.

An adapter is real PEFT output (``adapter_config.json`` + ``adapter_model.safetensors``, written by
``peft``'s own ``save_pretrained``), so vLLM loads it exactly as it loads a fine-tune from the hub. Its
weights are random with a fixed seed, drawn large on purpose: PEFT initialises ``lora_B`` to zero (an
adapter that changes nothing), and a small random one would hide inside bf16 noise of a random base
model. With A ~ N(0, 1/fan_in), B ~ N(0, 0.2^2) and alpha/r = 2, each adapted projection's delta is about
as large as the base projection's own output, so the adapter visibly moves every log-probability.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dsserve.build_once import build_once
from dsserve.errors import ModelBuildError
from dsserve.tiny_models import TINY_MODELS, cache_dir

__all__ = ["TINY_LORAS", "TinyLoraRecipe", "build_tiny_lora", "tiny_lora_path", "ADAPTER_FILES"]

#: Bump when the build procedure changes in a way the recipe fields do not capture.
_BUILD_VERSION = 1
_MARKER = "dsserve-tiny-lora.json"
#: The two files vLLM (``vllm/lora/lora_model.py``, ``LoRAModel.from_local_checkpoint``) and PEFT read.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: Every linear layer of a Llama decoder block; vLLM packs q/k/v and gate/up and accepts them by these names.
_LLAMA_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")


@dataclass(frozen=True)
class TinyLoraRecipe:
    """Everything that determines the bytes of one tiny adapter."""

    name: str
    base: str  # a TINY_MODELS key
    seed: int
    rank: int = 8
    alpha: int = 16
    b_std: float = 0.2
    target_modules: tuple[str, ...] = _LLAMA_TARGETS
    description: str = ""

    def digest(self) -> str:
        blob = json.dumps(
            {
                "v": _BUILD_VERSION,
                "base": TINY_MODELS[self.base].digest(),
                "seed": self.seed,
                "r": self.rank,
                "alpha": self.alpha,
                "b_std": self.b_std,
                "targets": list(self.target_modules),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


TINY_LORAS: dict[str, TinyLoraRecipe] = {
    r.name: r
    for r in (
        TinyLoraRecipe(
            name="tiny-deepseek-llm-sql",
            base="tiny-deepseek-llm",
            seed=1,
            description="rank-8 LoRA on every projection of tiny-deepseek-llm (seed 1)",
        ),
        TinyLoraRecipe(
            name="tiny-deepseek-llm-chat",
            base="tiny-deepseek-llm",
            seed=2,
            description="rank-8 LoRA on every projection of tiny-deepseek-llm (seed 2)",
        ),
    )
}


def _recipe(name: str) -> TinyLoraRecipe:
    try:
        return TINY_LORAS[name]
    except KeyError:
        raise ModelBuildError(
            f"unknown tiny LoRA adapter {name!r}; choose one of: {', '.join(sorted(TINY_LORAS))}"
        ) from None


def tiny_lora_path(name: str, root: Path | None = None) -> Path:
    recipe = _recipe(name)
    return (root or cache_dir()) / "loras" / f"{recipe.name}-{recipe.digest()}"


def build_tiny_lora(
    name: str,
    root: Path | None = None,
    *,
    progress: Callable[[str], None] = lambda _msg: None,
) -> tuple[Path, bool]:
    """Build the named tiny adapter unless it is already built; return (path, built_now)."""
    recipe = _recipe(name)

    def build(tmp: Path) -> None:
        progress(f"building {recipe.name} ({recipe.description}) for {recipe.base}")
        _build_adapter(recipe, tmp)

    return build_once(
        tiny_lora_path(name, root),
        build,
        marker=_MARKER,
        record={"name": recipe.name, "base": recipe.base, "digest": recipe.digest()},
        what=f"the LoRA adapter {recipe.name}",
        hint="check free disk space and that the cpu extra (with peft) is installed (make install)",
    )


def _build_adapter(recipe: TinyLoraRecipe, out: Path) -> None:
    try:
        import peft
    except ImportError as exc:
        raise ModelBuildError(
            "building a tiny LoRA adapter needs peft, which the cpu extra installs; run make install "
            f"(or pip install -e '.[cpu]') ({exc})"
        ) from None
    import torch
    import transformers

    base = TINY_MODELS[recipe.base]
    # The adapter's tensors depend only on the layer shapes, not on the base weights or vocabulary, so the
    # base is instantiated from its config alone (no need to build the tiny model first).
    config = getattr(transformers, base.config_class)(**base.config, vocab_size=base.vocab_size)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    lora_config = peft.LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        target_modules=list(recipe.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    model = peft.get_peft_model(model, lora_config)
    generator = torch.Generator().manual_seed(recipe.seed)
    state: dict[str, torch.Tensor] = {}
    # Draw every LoRA matrix explicitly, in name order, so the bytes depend on the recipe alone (not on
    # the order PEFT creates its layers or on torch's global RNG).
    for name, param in sorted(model.named_parameters()):
        if ".lora_A." in name:
            state[name] = torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1])
        elif ".lora_B." in name:
            state[name] = torch.randn(param.shape, generator=generator) * recipe.b_std
    if not state:
        raise ModelBuildError(f"{recipe.name}: none of {recipe.target_modules} is a layer of {recipe.base}")
    model.load_state_dict(state, strict=False, assign=True)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card template; nothing reads it
    # PEFT keeps target_modules in a set, so its JSON order changes between processes; sort it.
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = f"tiny:{recipe.base}"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
