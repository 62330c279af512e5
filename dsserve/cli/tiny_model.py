"""`dsserve tiny-model [NAME...]`: build the offline tiny models and LoRA adapters."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from dsserve.cli.base import Command, say_about
from dsserve.errors import UsageError

__all__ = ["TinyModelCommand"]


class TinyModelCommand(Command):
    name = "tiny-model"
    help = "build the offline tiny DeepSeek-architecture models and LoRA adapters"
    description = (
        "Build tiny models (random weights, local tokenizer) and tiny LoRA adapters (random, seeded, PEFT "
        "format) into the cache ($DSSERVE_CACHE_DIR, default ~/.cache/dsserve). Building again is a no-op."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help="tiny-deepseek-v2, tiny-deepseek-llm, or an adapter: tiny-deepseek-llm-sql, "
            "tiny-deepseek-llm-chat (default: all)",
        )
        parser.add_argument("--all", action="store_true", help="build every tiny model and adapter")
        parser.add_argument("--cache-dir", help="cache root instead of $DSSERVE_CACHE_DIR")

    def run(self, args: argparse.Namespace) -> int:
        from dsserve.tiny_lora import TINY_LORAS, build_tiny_lora
        from dsserve.tiny_models import TINY_MODELS, build_tiny_model

        known = sorted(TINY_MODELS) + sorted(TINY_LORAS)
        names = known if args.all or not args.names else args.names
        unknown = [n for n in names if n not in known]
        if unknown:  # before building any: a typo in the third name should not cost the first two builds
            raise UsageError(f"unknown tiny model or adapter {unknown[0]!r}; choose from: {', '.join(known)}")
        root = Path(args.cache_dir) if args.cache_dir else None
        for name in names:
            t0 = time.monotonic()
            build = build_tiny_lora if name in TINY_LORAS else build_tiny_model
            path, built = build(name, root, progress=functools.partial(say_about, name))
            state = f"built in {time.monotonic() - t0:.1f}s" if built else "already built, nothing to do"
            print(f"{name}: {path} ({state})")
        return 0
