"""Where a model's or an adapter's weights come from, parsed once.

A spec names weights as text: ``model.source`` is ``tiny:<name>`` (a tiny model built offline on first use),
a local directory, or a Hugging Face repo id already in the local cache; each ``model.lora.adapters`` value
is ``tiny-lora:<recipe>`` (a tiny adapter built on first use) or an absolute directory. The spec parses that
text into a :class:`ModelSource` (an :class:`AdapterSource` for adapters) when it is loaded, so no other
module looks at prefixes; they ask the parsed value (``is_tiny``, ``recipe``, ``is_local``) and call
:meth:`ModelSource.resolve` for the directory, which builds a tiny artifact when it is not built yet.

In the spec both serialize back to the text as written, so rendered Ray Serve YAML keeps ``tiny:<name>``
and each replica resolves it on its own node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from dsserve.errors import ModelBuildError
from dsserve.validation import choices

__all__ = [
    "TINY_SOURCE_KEY",
    "TINY_LORA_SOURCE_PREFIX",
    "TINY_SOURCE_PREFIX",
    "AdapterSource",
    "ModelSource",
    "SourceKind",
    "UnknownRecipeError",
]

#: A model source of the form ``tiny:<name>`` is built locally (dsserve/tiny_models.py) on first use.
TINY_SOURCE_PREFIX = "tiny:"
#: An adapter source of the form ``tiny-lora:<recipe>`` is built locally (dsserve/tiny_lora.py) on first use.
TINY_LORA_SOURCE_PREFIX = "tiny-lora:"
#: LLMConfig.experimental_configs key that carries a model's ``tiny:`` source to its replicas, which build
#: their own copy where the builder's directory is not on their disk (dsserve.serving.server)
TINY_SOURCE_KEY = "dsserve_tiny_source"

SourceKind = Literal["tiny", "tiny-lora", "path", "hub"]
#: How a model.source written as a path starts; anything else that is not tiny:<name> is a hub repo id.
_PATH_STARTS = ("/", "./", "../", "~")


class UnknownRecipeError(ValueError):
    """A ``tiny:``/``tiny-lora:`` source names no recipe; ``name`` and ``known`` let callers reword it."""

    def __init__(self, message: str, name: str, known: Collection[str]) -> None:
        super().__init__(message)
        self.name, self.known = name, sorted(known)


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``model.source``: a tiny model recipe, a local directory or a Hugging Face repo id."""

    kind: SourceKind
    text: str  # as written in the spec; what it serializes back to

    _description: ClassVar[str] = "tiny:<name>, a local directory, or a Hugging Face repo id"

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        """Parse a model source; raise ValueError (the message is the fix) for an empty or unknown one."""
        if text.startswith(TINY_SOURCE_PREFIX):
            from dsserve.tiny_models import TINY_MODELS

            name = text[len(TINY_SOURCE_PREFIX) :]
            if name not in TINY_MODELS:
                raise UnknownRecipeError(
                    f"unknown tiny model {name!r}; {choices(name, TINY_MODELS)}", name, TINY_MODELS
                )
            return cls("tiny", text)
        if not text.strip():
            raise ValueError("must not be empty")
        return cls("path" if text.startswith(_PATH_STARTS) else "hub", text)

    def __str__(self) -> str:
        return self.text

    @property
    def is_tiny(self) -> bool:
        """Built offline by dsserve on first use (a ``tiny:`` model or a ``tiny-lora:`` adapter)."""
        return self.kind in ("tiny", "tiny-lora")

    @property
    def is_local(self) -> bool:
        """Read from this machine's disk (tiny or a path), so the engine needs no hub access."""
        return self.kind != "hub"

    @property
    def recipe(self) -> str:
        """The recipe name of a tiny source (``tiny-deepseek-v2`` for ``tiny:tiny-deepseek-v2``)."""
        if self.kind == "tiny":
            return self.text[len(TINY_SOURCE_PREFIX) :]
        if self.kind == "tiny-lora":
            return self.text[len(TINY_LORA_SOURCE_PREFIX) :]
        raise ValueError(f"{self.text!r} is a {self.kind} source, not a tiny one; it has no recipe")

    def resolve(self, root: Path | None = None, *, progress: Callable[[str], None] = lambda _m: None) -> Path:
        """The directory holding the weights, building a tiny artifact (under ``root``) if not built yet.

        A hub repo id has no directory of its own before vLLM resolves it, so it raises ModelBuildError.
        """
        return self.build(root, progress=progress)[0]

    def build(
        self, root: Path | None = None, *, progress: Callable[[str], None] = lambda _m: None
    ) -> tuple[Path, bool]:
        """Like :meth:`resolve`, and whether this call built the artifact (False: found or not a tiny one)."""
        if self.kind == "tiny":
            from dsserve.tiny_models import build_tiny_model

            return build_tiny_model(self.recipe, root, progress=progress)
        if self.kind == "tiny-lora":
            from dsserve.tiny_lora import build_tiny_lora

            return build_tiny_lora(self.recipe, root, progress=progress)
        if self.kind == "path":
            return Path(os.path.expanduser(self.text)), False
        raise ModelBuildError(
            f"{self.text!r} is a Hugging Face repo id, not a directory; vLLM resolves it from the local "
            "Hugging Face cache, so pass it to the engine as it is"
        )

    def engine_model(self) -> str:
        """What vLLM's ``model`` argument takes: the directory for a local source, else the repo id."""
        return str(self.resolve()) if self.is_local else self.text

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # Validated from a YAML string (an already parsed source is taken by its text, so a spec re-validates);
        # serialized back to the text as written.
        return core_schema.no_info_before_validator_function(
            lambda v: v.text if isinstance(v, ModelSource) else v,
            core_schema.no_info_after_validator_function(cls.parse, core_schema.str_schema()),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "description": cls._description}


@dataclass(frozen=True)
class AdapterSource(ModelSource):
    """A parsed ``model.lora.adapters`` value: a tiny LoRA recipe or an absolute adapter directory."""

    _description: ClassVar[str] = "tiny-lora:<recipe> or an absolute directory"

    @classmethod
    def parse(cls, text: str) -> AdapterSource:
        if not text.strip():
            raise ValueError("set it to an adapter directory or tiny-lora:<recipe>")
        if text.startswith(TINY_LORA_SOURCE_PREFIX):
            from dsserve.tiny_lora import TINY_LORAS

            name = text[len(TINY_LORA_SOURCE_PREFIX) :]
            if name not in TINY_LORAS:
                raise UnknownRecipeError(
                    f"unknown tiny LoRA adapter {name!r}; {choices(name, TINY_LORAS)}", name, TINY_LORAS
                )
            return cls("tiny-lora", text)
        if not os.path.isabs(os.path.expanduser(text)):
            raise ValueError(
                "must be an absolute path (or tiny-lora:<recipe>): the engine replica does not run in your "
                "working directory"
            )
        return cls("path", text)
