"""Tiny DeepSeek-architecture checkpoints, built offline and deterministically.

No model hub is reachable where dsserve is developed and tested, yet the stack must run real vLLM on a
real DeepSeek architecture. These recipes build a few-MB checkpoint from a transformers config class with a
fixed seed and a byte-level BPE tokenizer trained on an embedded corpus. The output directory is named by a
hash of the recipe, so a second build with the same inputs finds the finished directory and does nothing.

- ``tiny-deepseek-v2``: DeepSeek-V2 architecture. MLA with the real latent dims (kv_lora_rank 512,
  qk_rope_head_dim 64; vLLM's CPU MLA kernel rejects smaller ones), MoE with 8 routed experts, 1 shared,
  top-2, first layer dense like the real model. Its tokenizer carries DeepSeek-V3's tool-call tokens and
  its chat template writes tool calls in V3's format, so vLLM's deepseek_v3 tool parser runs on it.
- ``tiny-deepseek-llm``: the Llama architecture of deepseek-llm-67b. GQA (4 heads, 2 KV heads, head_dim 64,
  the smallest the CPU attention kernel accepts), dense.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsserve.build_once import build_once
from dsserve.errors import ModelBuildError

__all__ = ["TINY_MODELS", "TinyModelRecipe", "build_tiny_model", "cache_dir", "tiny_model_path"]

#: Bump when the build procedure changes in a way the recipe fields do not capture.
_BUILD_VERSION = 1
_MARKER = "dsserve-tiny-model.json"
BOS, EOS, PAD = "<|begin_of_sentence|>", "<|end_of_sentence|>", "<|pad|>"

# DeepSeek-V2 chat format: "User: ...\n\nAssistant: ...<eos>", with the system prompt first.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

#: DeepSeek-V3's tool-call tokens, spelled as in its tokenizer_config.json: added tokens that are not
#: "special", so decoding keeps them and vLLM's deepseek_v3 tool parser (which looks them up in the vocabulary
#: and finds calls by them in the text, vllm/tool_parsers/deepseekv3_tool_parser.py) reads the model's calls.
TOOL_TOKENS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
)
_CALLS_BEGIN, _CALLS_END, _CALL_BEGIN, _CALL_END, _SEP, _OUTS_BEGIN, _OUTS_END, _OUT_BEGIN, _OUT_END = TOOL_TOKENS

# The V2 format above with DeepSeek-V3's tool calls: the tools listed after the system prompt, an assistant
# turn's calls as <calls begin><call begin>function<sep>NAME\n```json\nARGS\n```<call end><calls end> (the
# shape vLLM's deepseek_v3 parser and xgrammar's deepseek_r1 structural tag both use), and tool results in
# output tokens. vLLM hands the template a call's arguments as a dict (chat_utils parses the JSON string).
# Newlines right after a block tag are written as {{ '\\n' }}: HF renders templates with trim_blocks.
TOOLS_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if tools %}## Tools\nYou can call these functions:\n"
    "{% for tool in tools %}- {{ tool['function']['name'] }}: {{ tool['function']['parameters'] | tojson }}\n"
    "{% endfor %}{{ '\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] or '' }}"
    "{% if message.get('tool_calls') %}"
    + _CALLS_BEGIN
    + "{% for call in message['tool_calls'] %}"
    + _CALL_BEGIN
    + "function"
    + _SEP
    + "{{ call['function']['name'] }}\n```json\n"
    "{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}"
    "{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}{{ '\\n' }}```"
    + _CALL_END
    + "{% endfor %}"
    + _CALLS_END
    + "{% endif %}{{ eos_token }}"
    "{% elif message['role'] == 'tool' %}"
    + _OUTS_BEGIN
    + _OUT_BEGIN
    + "{{ message['content'] }}"
    + _OUT_END
    + _OUTS_END
    + "\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# The tokenizer's training text: varied enough that common English, code and digits tokenize sensibly.
_CORPUS = [
    "DeepSeek models use multi-head latent attention and a mixture of experts.",
    "Ray Serve orchestrates vLLM engines behind an OpenAI compatible API.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "User: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "User: Write a haiku about GPUs.\n\nAssistant: Silicon rivers, tensors flowing through the night, "
    "tokens come alive.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id;",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 100 1000 3.14159 2.71828",
    "Latency, throughput, p99, requests per second, tokens per second, time to first token.",
    "Kubernetes, Helm, Prometheus, Grafana, Locust: deploy, observe and load test the service.",
    "Hello! How can I help you today? Please explain the answer step by step.",
    "The mitochondria is the powerhouse of the cell; photosynthesis turns light into sugar.",
]


@dataclass(frozen=True)
class TinyModelRecipe:
    """Everything that determines the bytes of one tiny checkpoint."""

    name: str
    config_class: str
    config: dict[str, Any]
    vocab_size: int = 512
    seed: int = 0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # DeepSeek-V3's tool-call tokens and a chat template that writes calls with them (TOOLS_CHAT_TEMPLATE)
    tool_calls: bool = False

    @property
    def model_vocab_size(self) -> int:
        """The embedding rows: the trained BPE vocabulary plus the added tool-call tokens."""
        return self.vocab_size + (len(TOOL_TOKENS) if self.tool_calls else 0)

    @property
    def chat_template(self) -> str:
        return TOOLS_CHAT_TEMPLATE if self.tool_calls else CHAT_TEMPLATE

    def digest(self) -> str:
        inputs: dict[str, Any] = {
            "v": _BUILD_VERSION,
            "cls": self.config_class,
            "cfg": self.config,
            "vocab": self.vocab_size,
            "seed": self.seed,
            "corpus": _CORPUS,
            "template": self.chat_template,
        }
        if self.tool_calls:
            inputs["added"] = list(TOOL_TOKENS)
        blob = json.dumps(inputs, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


_COMMON = dict(
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

TINY_MODELS: dict[str, TinyModelRecipe] = {
    r.name: r
    for r in (
        TinyModelRecipe(
            name="tiny-deepseek-v2",
            config_class="DeepseekV2Config",
            description="DeepSeek-V2 architecture: MLA (512+64 latent) + MoE (8 routed, 1 shared, top-2), "
            "with DeepSeek-V3's tool-call tokens",
            tool_calls=True,
            config=dict(
                _COMMON,
                architectures=["DeepseekV2ForCausalLM"],
                num_key_value_heads=4,
                intermediate_size=512,
                moe_intermediate_size=128,
                kv_lora_rank=512,
                q_lora_rank=None,
                qk_nope_head_dim=128,
                qk_rope_head_dim=64,
                v_head_dim=128,
                n_routed_experts=8,
                n_shared_experts=1,
                num_experts_per_tok=2,
                first_k_dense_replace=1,
                topk_method="greedy",
                n_group=1,
                topk_group=1,
                norm_topk_prob=False,
                routed_scaling_factor=1.0,
            ),
        ),
        TinyModelRecipe(
            name="tiny-deepseek-llm",
            config_class="LlamaConfig",
            description="deepseek-llm-67b architecture (Llama): GQA 4 heads / 2 KV heads, dense",
            config=dict(
                _COMMON,
                architectures=["LlamaForCausalLM"],
                num_key_value_heads=2,
                head_dim=64,
                intermediate_size=512,
            ),
        ),
    )
}


def cache_dir() -> Path:
    """Root of dsserve's build cache: $DSSERVE_CACHE_DIR, else $XDG_CACHE_HOME/dsserve, else ~/.cache/dsserve."""
    env = os.environ.get("DSSERVE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dsserve"


def tiny_model_path(name: str, root: Path | None = None) -> Path:
    recipe = _recipe(name)
    return (root or cache_dir()) / "models" / f"{recipe.name}-{recipe.digest()}"


def _recipe(name: str) -> TinyModelRecipe:
    try:
        return TINY_MODELS[name]
    except KeyError:
        raise ModelBuildError(f"unknown tiny model {name!r}; choose one of: {', '.join(sorted(TINY_MODELS))}") from None


def build_tiny_model(
    name: str,
    root: Path | None = None,
    *,
    progress: Callable[[str], None] = lambda _msg: None,
) -> tuple[Path, bool]:
    """Build the named tiny model unless it is already built; return (path, built_now)."""
    recipe = _recipe(name)

    def build(tmp: Path) -> None:
        progress(f"training a {recipe.vocab_size}-token byte-level BPE tokenizer")
        tokenizer = _train_tokenizer(recipe)
        tokenizer.save_pretrained(tmp)
        progress(f"building {recipe.name} ({recipe.description}) with seed {recipe.seed}")
        _build_weights(recipe, tokenizer, tmp)

    return build_once(
        tiny_model_path(name, root),
        build,
        marker=_MARKER,
        record={"name": recipe.name, "digest": recipe.digest()},
        what=recipe.name,
        hint="check free disk space and that the cpu extra is installed (make install)",
    )


def _train_tokenizer(recipe: TinyModelRecipe) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=recipe.chat_template,
        model_max_length=4096,
    )
    if recipe.tool_calls:
        out.add_tokens(list(TOOL_TOKENS))  # not special: decoding keeps them, as DeepSeek-V3's tokenizer does
    return out


def _build_weights(recipe: TinyModelRecipe, tokenizer: Any, out: Path) -> None:
    import torch
    import transformers

    config_cls = getattr(transformers, recipe.config_class)
    config = config_cls(
        **recipe.config,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(out, safe_serialization=True)
