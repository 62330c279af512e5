"""Prompts of a measured token length: synthetic text or a ShareGPT file, counted with the model's tokenizer.

Prompt lengths are only as good as the counter. With a tokenizer (``--tokenizer PATH``: a
``tokenizer.json``, a model directory holding one, or ``tiny:<name>`` for a dsserve tiny model) every prompt
is cut to its target length by the tokenizer's own offsets and re-counted: the recorded length is the
tokenizer's count of the exact text sent (the chat template then adds a few tokens, which the server's
``usage.prompt_tokens`` includes). Without one, lengths are an estimate of ``chars_per_token`` characters
per token (4 by default, typical of English BPE vocabularies), and the results say "estimated".

Each request class gets a pool of ``pool_size`` prompts whose lengths are drawn from its distribution;
arrivals pick from the pool at random, so the lengths sent follow the pool's empirical distribution. The
pool is built once, before any load, from the scenario's seed: every process sends the same prompts.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsserve.loadgen.errors import ScenarioError
from dsserve.loadgen.scenario import Dist, RequestClass, Scenario

__all__ = ["PromptPool", "TokenCounter", "build_pools", "load_token_counter", "sample_length"]

# Words for synthetic text: plain English, so any BPE vocabulary tokenizes it the way it tokenizes prose.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we can their has been if more when will would who so no time "
    "model token latency request server answer question system memory cache layer expert attention batch "
    "stream value number first second after before under over between through during about against river "
    "mountain city window garden market paper music light water stone paper engine signal network vector "
    "matrix window table record result report figure window measure percent minute hour morning evening "
    "quickly slowly carefully simply really almost always never often again still already perhaps"
).split()


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens with a tokenizer, or estimates them from characters when there is none."""

    method: str  # "tokenizer" or "estimate"
    source: str  # the tokenizer's path, or "<n> chars/token"
    chars_per_token: float
    _tok: Any = None

    def count(self, text: str) -> int:
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return max(1, round(len(text) / self.chars_per_token))

    def encode_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token (tokenizer only)."""
        return list(self._tok.encode(text, add_special_tokens=False).offsets)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "source": self.source}
        if self.method == "estimate":
            out["chars_per_token"] = self.chars_per_token
            out["note"] = (
                "no tokenizer given: prompt lengths are estimated from characters, not measured; "
                "pass --tokenizer PATH for measured lengths"
            )
        return out


def load_token_counter(tokenizer: str | None, chars_per_token: float = 4.0) -> TokenCounter:
    """A counter for ``tokenizer`` (path, model directory or tiny:<name>), or the estimate when None."""
    if not tokenizer:
        return TokenCounter("estimate", f"{chars_per_token:g} chars/token", chars_per_token)
    path = _resolve_tokenizer(tokenizer)
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers ships with transformers and vLLM
        raise ScenarioError("--tokenizer needs the `tokenizers` package; pip install tokenizers") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a plain Exception for a bad file
        raise ScenarioError(
            f"--tokenizer {tokenizer}: {path} is not a tokenizers JSON file ({exc}); give a "
            "model directory holding tokenizer.json, or the file itself"
        ) from None
    return TokenCounter("tokenizer", str(path), chars_per_token, tok)


def _resolve_tokenizer(spec: str) -> Path:
    from dsserve.model_source import ModelSource, UnknownRecipeError

    try:
        source = ModelSource.parse(spec)
    except UnknownRecipeError as exc:
        raise ScenarioError(
            f"--tokenizer {spec}: no tiny model {exc.name!r}; choose one of: {', '.join(exc.known)}"
        ) from None
    except ValueError:  # blank: not a file either, said below
        source = None
    if source is not None and source.is_tiny:
        # built on first use, like a tiny:<name> model source (a no-op when already built)
        return source.resolve() / "tokenizer.json"
    p = Path(spec).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ScenarioError(
            f"--tokenizer {spec}: no such file (want tokenizer.json or a model directory "
            "holding it, e.g. the tiny model's: tiny:tiny-deepseek-v2)"
        )
    return p


def sample_length(
    d: Dist, rng: random.Random, context_window: int | None = None, dataset_value: int | None = None
) -> int:
    """One integer length (>= 1) drawn from ``d``; ``unit: context`` scales by the window."""
    scale = float(context_window) if d.unit == "context" and context_window is not None else 1.0
    lo = d.min * scale if d.min is not None else None
    hi = d.max * scale if d.max is not None else None
    if d.dist == "constant":
        x = float(d.value) * scale  # type: ignore[arg-type]  # Dist requires value for constant
    elif d.dist == "uniform":
        x = rng.uniform(lo, hi)  # type: ignore[arg-type]  # Dist requires min and max for uniform
    elif d.dist == "normal":
        x = rng.gauss(d.mean * scale, (d.stdev or 0) * scale)  # type: ignore[operator]  # mean required
    elif d.dist == "lognormal":
        m, s = d.mean * scale, (d.stdev or 0) * scale  # type: ignore[operator]  # mean required
        sigma2 = math.log(1 + (s / m) ** 2)
        x = rng.lognormvariate(math.log(m) - sigma2 / 2, math.sqrt(sigma2))
    elif d.dist == "exponential":
        x = rng.expovariate(1.0 / (d.mean * scale))  # type: ignore[operator]  # mean required
    else:  # dataset
        x = float(dataset_value or 1)
    if lo is not None:
        x = max(x, lo)
    if hi is not None:
        x = min(x, hi)
    return max(1, int(round(x)))


@dataclass
class PromptPool:
    """Prompts of one request class: the text and its length as counted (tokens), plus dataset reply lengths."""

    texts: list[str]
    tokens: list[int]
    reply_tokens: list[int | None]

    def to_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "tokens": self.tokens, "reply_tokens": self.reply_tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptPool:
        return cls(list(d["texts"]), [int(x) for x in d["tokens"]], list(d["reply_tokens"]))


class _Corpus:
    """A long deterministic text and its token offsets, to cut prompts of exact token lengths from."""

    def __init__(self, counter: TokenCounter, rng: random.Random, min_tokens: int) -> None:
        self.counter = counter
        words: list[str] = []
        text = ""
        # grow until the corpus holds comfortably more tokens than the longest prompt
        target_chars = int(max(2048, min_tokens) * counter.chars_per_token * 1.5) + 1024
        while True:
            while sum(len(w) + 1 for w in words) < target_chars:
                n = rng.randint(6, 18)
                sentence = " ".join(rng.choice(_WORDS) for _ in range(n))
                words.append(sentence[0].upper() + sentence[1:] + ".")
            text = " ".join(words)
            if counter.method == "estimate":
                break
            self.offsets = counter.encode_offsets(text)
            if len(self.offsets) >= min_tokens + 64:
                break
            target_chars *= 2
        self.text = text
        if counter.method == "estimate":
            self.offsets = []

    def cut(self, n_tokens: int, rng: random.Random) -> tuple[str, int]:
        """A slice of about ``n_tokens`` tokens starting at a random sentence; returns (text, counted)."""
        if self.counter.method == "estimate":
            n_chars = int(round(n_tokens * self.counter.chars_per_token))
            start = rng.randrange(0, max(1, len(self.text) - n_chars))
            start = self.text.find(" ", start) + 1 if start else 0
            text = self.text[start : start + n_chars]
            return text, self.counter.count(text)
        offs = self.offsets
        start = rng.randrange(0, max(1, len(offs) - n_tokens))
        want = n_tokens
        text, got = "", 0
        for _ in range(4):  # a cut can merge or split tokens at its edges: re-count and adjust
            end = min(len(offs), start + want)
            text = self.text[offs[start][0] : offs[end - 1][1]].strip()
            got = self.counter.count(text)
            if got == n_tokens or end == len(offs):
                break
            want += n_tokens - got
            want = max(1, want)
        return text, got


def build_pools(
    scenario: Scenario, counter: TokenCounter, *, context_window: int | None = None, sharegpt: str | None = None
) -> dict[str, PromptPool]:
    """One prompt pool per request class of the scenario, deterministic in the scenario's seed."""
    wl = scenario.workload
    window = (
        context_window
        if context_window is not None
        else (wl.context_window if isinstance(wl.context_window, int) else None)
    )
    size = wl.prompts.pool_size
    pools: dict[str, PromptPool] = {}
    if wl.prompts.source == "sharegpt":
        pairs = _read_sharegpt(sharegpt or wl.prompts.path or "", counter, size, scenario.load.seed, window)
        for rc in wl.requests:
            pools[rc.name] = PromptPool([p for p, _, _ in pairs], [t for _, t, _ in pairs], [r for _, _, r in pairs])
        return pools
    for rc in wl.requests:
        assert rc.prompt_tokens is not None  # checked by the scenario model
        rng = random.Random(f"dsserve-prompts:{scenario.load.seed}:{rc.name}")
        lengths = [sample_length(rc.prompt_tokens, rng, window) for _ in range(size)]
        corpus = _Corpus(counter, random.Random(f"dsserve-corpus:{scenario.load.seed}"), max(lengths))
        texts, counted = [], []
        for n in lengths:
            text, got = corpus.cut(n, rng)
            texts.append(text)
            counted.append(got)
        pools[rc.name] = PromptPool(texts, counted, [None] * size)
    return pools


def _read_sharegpt(
    path: str, counter: TokenCounter, size: int, seed: int, window: int | None
) -> list[tuple[str, int, int]]:
    """(prompt, prompt tokens, reply tokens) for ``size`` conversations of a ShareGPT JSON file.

    The format vLLM bench serve reads: a list of ``{"conversations": [{"from": "human", "value": ...},
    {"from": "gpt", "value": ...}, ...]}``; the first turn is the prompt and the second the reply whose
    length is the ``dataset`` output length. Conversations shorter than two turns are skipped, and so are
    pairs that do not fit the context window.
    """
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"--sharegpt {path}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise ScenarioError(
            f"--sharegpt {path}: not JSON ({exc}); expected a ShareGPT list of "
            '{"conversations": [{"from": "human", "value": ...}, ...]}'
        ) from None
    if not isinstance(data, list):
        raise ScenarioError(f"--sharegpt {path}: the top level must be a list of conversations")
    convs = [c.get("conversations") for c in data if isinstance(c, dict)]
    pairs = [
        (c[0].get("value"), c[1].get("value"))
        for c in convs
        if isinstance(c, list) and len(c) >= 2 and isinstance(c[0], dict) and isinstance(c[1], dict)
    ]
    texts = [(a, b) for a, b in pairs if isinstance(a, str) and isinstance(b, str) and a.strip()]
    if not texts:
        raise ScenarioError(
            f"--sharegpt {path}: no conversation with a prompt and a reply; expected "
            '{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}'
        )
    rng = random.Random(f"dsserve-sharegpt:{seed}")
    rng.shuffle(texts)
    out: list[tuple[str, int, int]] = []
    for prompt, reply in texts:
        pt, rt = counter.count(prompt), max(1, counter.count(reply))
        if window is not None and pt + rt > window:
            continue
        out.append((prompt, pt, rt))
        if len(out) == size:
            break
    if not out:
        raise ScenarioError(f"--sharegpt {path}: no conversation fits the context window ({window} tokens)")
    return out


def request_model(rc: RequestClass, base_model: str) -> str:
    """The model id a request class sends: its own (with '{model}' expanded) or the scenario's."""
    return rc.model.replace("{model}", base_model) if rc.model else base_model
